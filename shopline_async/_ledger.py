"""The sync ledger: what each target was last sent, so a rerun sends only what changed.

A target is one resource in one store: base URL, store handle and request path (the endpoint
with its product id and image id). The ledger keeps, per target, a hash of the exact body last
sent, whether a 2xx acknowledged it, its status, trace id and time. ``BatchExecutor(ledger=...)``
then skips an operation whose target's last acknowledged write had the same body.

Write-ahead: before a write is sent, the ledger records the target's state as unknown (``ok``
false, the new body's hash) and commits that before the request leaves; only an acknowledged 2xx
makes it known again. Whatever moment a run is killed at, a target whose write may have been
applied is sent again by the next run, so rerunning any catalog leaves the store at exactly it.

Storage is SQLite (stdlib ``sqlite3``) in WAL mode with ``synchronous=NORMAL``: a committed
window survives the process being killed (not a power cut, which may lose the last windows; those
rows are then simply sent again). Commits are made when a write is about to leave with its intent
not yet committed, and for results every ``commit_every`` rows or ``commit_interval`` seconds, on
the event loop (benchmarks/README.md, section ledger, has the cost).

One process at a time: the database is opened in SQLite's exclusive locking mode and written
once at open, so a second ``Ledger`` on the same file, by any path to it (a symlink, a hard link),
is refused with ``LedgerBusyError``. Anything storage refuses (a missing directory, a corrupt,
read-only or full file) is a ``LedgerError`` naming the path and what to do.

``PostgresLedger`` keeps the same ledger in a PostgreSQL table, which several processes may share;
``open_ledger`` picks by what it is given (a ``postgresql://`` URL or a path). The window of
pending rows, the intents and their commits are this module's ``Ledger``; a storage supplies
``_fetch``, ``_store``, ``_count`` and ``_release``.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

from ._errors import ConfigError

__all__ = [
    "Ledger",
    "LedgerBusyError",
    "LedgerEntry",
    "LedgerError",
    "PostgresLedger",
    "is_database_url",
    "ledger_name",
    "open_ledger",
    "url_password",
]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS writes (
    base_url  TEXT NOT NULL,
    store     TEXT NOT NULL,
    path      TEXT NOT NULL,
    kind      TEXT NOT NULL,
    body_hash BLOB NOT NULL,
    ok        INTEGER NOT NULL,
    status    INTEGER,
    trace_id  TEXT,
    at        REAL NOT NULL,
    PRIMARY KEY (base_url, store, path)
) WITHOUT ROWID
"""


class LedgerError(ConfigError):
    """The ledger's file cannot be opened, read or written. The message names the path and what to do."""


class LedgerBusyError(LedgerError):
    """Another process has this ledger open."""


class LedgerEntry(NamedTuple):
    """A target's last recorded write."""

    body_hash: bytes
    ok: bool
    status: int | None
    trace_id: str | None
    at: float


def body_hash(body: bytes) -> bytes:
    return hashlib.blake2b(body, digest_size=16).digest()


_WHAT_TO_DO = "give the run another ledger (--ledger PATH) or none (--no-ledger)"


class Ledger:
    """A ledger file, open until ``close()`` (or the end of its ``with`` block)."""

    def __init__(self, path: str | os.PathLike[str], *, commit_every: int = 200, commit_interval: float = 0.5) -> None:
        self._open_window(commit_every, commit_interval)
        self.path = Path(path)
        if not self.path.parent.is_dir():
            raise LedgerError(
                f"ledger {self.path}: the directory {self.path.parent} does not exist; create it, or " + _WHAT_TO_DO
            )
        if self.path.is_dir():
            raise LedgerError(f"ledger {self.path}: a directory, not a file; " + _WHAT_TO_DO)
        try:
            self._db = sqlite3.connect(self.path, isolation_level=None, timeout=0)
        except sqlite3.Error as exc:
            raise self._error(exc) from None
        try:
            # held from the first write until close: SQLite's own lock, whatever path reached the file
            self._db.execute("PRAGMA locking_mode=EXCLUSIVE")
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            with self._transaction(immediate=True):  # takes the lock, and proves the file writable
                self._db.execute(_SCHEMA)
            checked = self._db.execute("PRAGMA quick_check").fetchone()
            if checked is None or checked[0] != "ok":
                raise sqlite3.DatabaseError(f"database disk image is malformed ({checked and checked[0]})")
        except sqlite3.Error as exc:
            self._db.close()
            raise self._error(exc) from None
        self.name = str(self.path)

    def _open_window(self, commit_every: int, commit_interval: float) -> None:
        """What every storage shares: the rows recorded and not yet committed, and when to commit."""
        if commit_every < 1 or commit_interval <= 0:
            raise ConfigError("commit_every must be >= 1 and commit_interval > 0")
        self.commit_every = commit_every
        self.commit_interval = commit_interval
        self._pending: dict[tuple[str, str, str], tuple[object, ...] | None] = {}
        """Rows recorded since the last commit, by target: newer than the table (None: deleted)."""
        self._last_commit = time.monotonic()
        self._intents = 0
        """Intents recorded so far; those up to ``committed_intents`` are durable."""
        self.committed_intents = 0
        self.closed = False

    def _error(self, exc: sqlite3.Error) -> LedgerError:
        """What storage said, as the error a user can act on."""
        message = str(exc)
        if "locked" in message or "busy" in message:
            return LedgerBusyError(
                f"ledger {self.path} is in use by another run; wait for it to finish, or give this run "
                "its own ledger (--ledger PATH)"
            )
        read_only = [p for p in (self.path, self.path.parent) if p.exists() and not os.access(p, os.W_OK)]
        if read_only:  # SQLite says "disk I/O error" when it cannot make the WAL beside a read-only file
            return LedgerError(
                f"ledger {self.path}: cannot be written ({read_only[0]} is read-only; SQLite said: {message}); "
                "check its permissions, or " + _WHAT_TO_DO
            )
        if isinstance(exc, sqlite3.DatabaseError) and ("not a database" in message or "malformed" in message):
            return LedgerError(
                f"ledger {self.path}: not a usable SQLite database ({message}); move it aside to start afresh "
                "(every row is then sent again), or " + _WHAT_TO_DO
            )
        if "readonly" in message or "unable to open" in message:
            return LedgerError(
                f"ledger {self.path}: cannot be written ({message}); check its permissions, or " + _WHAT_TO_DO
            )
        if "full" in message or "I/O" in message:
            return LedgerError(
                f"ledger {self.path}: storage refused a write ({message}: the disk is full, or a file size "
                "limit was reached); free some space, or " + _WHAT_TO_DO
            )
        return LedgerError(f"ledger {self.path}: {message}; " + _WHAT_TO_DO)

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"

    def last(self, base_url: str, store: str, path: str) -> LedgerEntry | None:
        """The target's last recorded write, committed or not; None if it was never recorded."""
        key = (base_url, store, path)
        if key in self._pending:
            row = self._pending[key]
            return None if row is None else LedgerEntry(row[4], bool(row[5]), row[6], row[7], row[8])  # type: ignore[arg-type]
        found = self._fetch(key)
        return None if found is None else LedgerEntry(bytes(found[0]), bool(found[1]), found[2], found[3], found[4])

    def _fetch(self, key: tuple[str, str, str]) -> tuple[Any, ...] | None:
        """The stored row of a target: body_hash, ok, status, trace_id, at."""
        try:
            found: tuple[Any, ...] | None = self._db.execute(
                "SELECT body_hash, ok, status, trace_id, at FROM writes WHERE base_url = ? AND store = ? AND path = ?",
                key,
            ).fetchone()
        except sqlite3.Error as exc:
            raise self._error(exc) from None
        return found

    def intend(self, base_url: str, store: str, path: str, kind: str, hashed: bytes) -> int:
        """Note that a write of ``hashed`` is about to be sent: the target's state is unknown until
        its answer. Returns the intent's number: it must be durable (``committed_intents`` at least
        that) before the request leaves."""
        self._pending[base_url, store, path] = (base_url, store, path, kind, hashed, 0, None, None, time.time())
        self._intents += 1
        return self._intents

    def withdraw(self, base_url: str, store: str, path: str, kind: str, before: LedgerEntry | None) -> None:
        """An intended write was not sent after all: the target is known to be as it was ``before``
        the intent (None: never recorded)."""
        self._pending[base_url, store, path] = None if before is None else (base_url, store, path, kind, *before)

    def record(
        self,
        base_url: str,
        store: str,
        path: str,
        kind: str,
        hashed: bytes,
        *,
        ok: bool,
        status: int | None,
        trace_id: str | None,
    ) -> None:
        """Note a write's answer (``ok`` only if a 2xx acknowledged it); committed in windows (``due``)."""
        self._pending[base_url, store, path] = (
            base_url,
            store,
            path,
            kind,
            hashed,
            int(ok),
            status,
            trace_id,
            time.time(),
        )

    @property
    def due(self) -> bool:
        """Whether enough was recorded, or long enough ago, to commit now."""
        return len(self._pending) >= self.commit_every or time.monotonic() - self._last_commit >= self.commit_interval

    def commit(self) -> None:
        """Make everything recorded durable. Raises LedgerError if storage refuses."""
        self._last_commit = time.monotonic()
        if not self._pending:
            return
        intents = self._intents
        self._store(
            [row for row in self._pending.values() if row is not None],
            [key for key, row in self._pending.items() if row is None],
        )
        self._pending.clear()
        self.committed_intents = intents

    def _store(self, rows: list[tuple[object, ...]], deleted: list[tuple[str, str, str]]) -> None:
        """Write ``rows`` and delete the ``deleted`` targets, in one transaction."""
        try:
            with self._transaction():
                self._db.executemany("INSERT OR REPLACE INTO writes VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
                self._db.executemany("DELETE FROM writes WHERE base_url = ? AND store = ? AND path = ?", deleted)
        except sqlite3.Error as exc:
            raise self._error(exc) from None

    @contextmanager
    def _transaction(self, *, immediate: bool = False) -> Iterator[None]:
        self._db.execute("BEGIN IMMEDIATE" if immediate else "BEGIN")
        try:
            yield
            self._db.execute("COMMIT")
        except BaseException:
            if self._db.in_transaction:  # a COMMIT that failed (disk full) leaves it open
                with suppress(sqlite3.Error):
                    self._db.execute("ROLLBACK")
            raise

    def __len__(self) -> int:
        self.commit()
        return self._count()

    def _count(self) -> int:
        count: int = self._db.execute("SELECT count(*) FROM writes").fetchone()[0]
        return count

    def close(self) -> None:
        """Commit what is pending and release the storage. Safe to call twice."""
        if self.closed:
            return
        try:
            self.commit()
        finally:
            self.closed = True
            self._release()

    def _release(self) -> None:
        self._db.close()


_PG_SCHEMA = """
CREATE TABLE IF NOT EXISTS shopline_ledger (
    base_url  TEXT NOT NULL,
    store     TEXT NOT NULL,
    path      TEXT NOT NULL,
    kind      TEXT NOT NULL,
    body_hash BYTEA NOT NULL,
    ok        BOOLEAN NOT NULL,
    status    INTEGER,
    trace_id  TEXT,
    at        DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (base_url, store, path)
)
"""
_PG_UPSERT = (
    "INSERT INTO shopline_ledger VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) "
    "ON CONFLICT (base_url, store, path) DO UPDATE SET kind = EXCLUDED.kind, body_hash = EXCLUDED.body_hash, "
    "ok = EXCLUDED.ok, status = EXCLUDED.status, trace_id = EXCLUDED.trace_id, at = EXCLUDED.at"
)
_PG_URL_SCHEMES = ("postgresql://", "postgres://")


def is_database_url(spec: object) -> bool:
    """Whether a ``--ledger`` names a PostgreSQL database rather than a SQLite file."""
    return isinstance(spec, str) and spec.startswith(_PG_URL_SCHEMES)


def open_ledger(spec: str | os.PathLike[str], *, read_only: bool = False) -> Ledger:
    """The ledger ``spec`` names: a ``postgresql://`` URL (:class:`PostgresLedger`) or a SQLite file.
    ``read_only``: a database's table is not created if missing (it reads as empty)."""
    if is_database_url(spec):
        return PostgresLedger(str(spec), create=not read_only)
    return Ledger(spec)


def ledger_name(spec: str | os.PathLike[str]) -> str:
    """How to name a ledger to a user: a file's path, or a database URL with its password left out
    (in the URL's user part or a ``password=`` parameter); libpq then takes it from ``PGPASSWORD``."""
    if not is_database_url(spec):
        return str(spec)
    parts = urlsplit(str(spec))
    netloc = parts.netloc
    if "@" in netloc:
        user, _, host = netloc.rpartition("@")
        netloc = f"{user.partition(':')[0]}@{host}"
    kept = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "password"]
    query = urlencode(kept, safe="/")
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


class PostgresLedger(Ledger):
    """The ledger in a PostgreSQL database (the ``[postgres]`` extra): the same write-ahead semantics
    as the SQLite file, in a table ``shopline_ledger`` created if missing. Several processes may use
    one database at once (each target's row is written whole, atomically); a target two of them
    write at the same moment holds whichever came last, as the store itself does.

    Every lookup is a query, so a run sees what other runs committed before it looked.
    """

    def __init__(self, url: str, *, commit_every: int = 200, commit_interval: float = 0.5, create: bool = True) -> None:
        self._open_window(commit_every, commit_interval)
        self.name = ledger_name(url)
        self._secret = url_password(url)
        try:
            import psycopg
        except ImportError:
            raise LedgerError(
                f"ledger {self.name}: PostgreSQL needs its driver: pip install 'shopline-async[postgres]'"
            ) from None
        self._psycopg_error: type[Exception] = psycopg.Error
        self._missing_table: type[Exception] = psycopg.errors.UndefinedTable
        self._url = url
        try:
            self._pg = psycopg.connect(url, autocommit=True, connect_timeout=10)
        except psycopg.Error as exc:
            raise self._pg_error(exc) from None
        if not create:
            return
        try:
            with self._pg.transaction():
                # two runs creating the table at once would collide in PostgreSQL's catalog
                self._pg.execute("SELECT pg_advisory_xact_lock(7403319651)")
                self._pg.execute(_PG_SCHEMA)
        except psycopg.Error as exc:
            self._pg.close()
            raise self._pg_error(exc) from None

    def _pg_error(self, exc: Exception) -> LedgerError:
        message = " ".join(str(exc).split())
        if self._secret:
            message = message.replace(self._secret, "[REDACTED]")
        return LedgerError(f"ledger {self.name}: {message}; " + _WHAT_TO_DO)

    def _connection(self) -> Any:
        """The connection, made anew if the server dropped it (a restart): what was pending is
        still pending, and is committed on the new one."""
        if self._pg.broken:
            import psycopg

            self._pg.close()
            self._pg = psycopg.connect(self._url, autocommit=True, connect_timeout=10)
        return self._pg

    def _fetch(self, key: tuple[str, str, str]) -> tuple[Any, ...] | None:
        try:
            cursor = self._connection().execute(
                "SELECT body_hash, ok, status, trace_id, at FROM shopline_ledger "
                "WHERE base_url = %s AND store = %s AND path = %s",
                key,
            )
            found: tuple[Any, ...] | None = cursor.fetchone()
        except self._missing_table:  # opened read-only on a database no run has written yet
            return None
        except self._psycopg_error as exc:
            raise self._pg_error(exc) from None
        return found

    def _store(self, rows: list[tuple[object, ...]], deleted: list[tuple[str, str, str]]) -> None:
        try:
            connection = self._connection()
            with connection.transaction(), connection.cursor() as cursor:
                if rows:
                    cursor.executemany(_PG_UPSERT, [(*row[:5], bool(row[5]), *row[6:]) for row in rows])
                if deleted:
                    cursor.executemany(
                        "DELETE FROM shopline_ledger WHERE base_url = %s AND store = %s AND path = %s", deleted
                    )
        except self._psycopg_error as exc:
            raise self._pg_error(exc) from None

    def _count(self) -> int:
        try:
            found = self._connection().execute("SELECT count(*) FROM shopline_ledger").fetchone()
        except self._missing_table:
            return 0
        except self._psycopg_error as exc:
            raise self._pg_error(exc) from None
        return int(found[0]) if found is not None else 0

    def _release(self) -> None:
        self._pg.close()


def url_password(url: str) -> str | None:
    """The password a database URL carries, in its user part or a ``password=`` parameter (to keep
    it out of what is said): read as :func:`ledger_name` reads the URL to leave it out."""
    parts = urlsplit(url)
    password = unquote(parts.password) if parts.password else dict(parse_qsl(parts.query)).get("password")
    return password or None
