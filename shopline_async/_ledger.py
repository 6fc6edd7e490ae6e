"""The sync ledger: what each target was last sent, so a rerun sends only what changed.

A target is one resource in one store: base URL, store handle and request path (the endpoint
with its product id and image id). The ledger keeps, per target, a hash of the exact body last
sent, whether a 2xx acknowledged it, its status, trace id and time. ``BatchExecutor(ledger=...)``
then skips an operation whose target's last acknowledged write had the same body.

Storage is SQLite (stdlib ``sqlite3``) in WAL mode with ``synchronous=NORMAL``: a committed
window survives the process being killed (not a power cut, which may lose the last windows; those
rows are then simply sent again). Results are committed every ``commit_every`` rows or
``commit_interval`` seconds, on the event loop: a lookup is one primary-key read and a commit
writes to the WAL without an fsync (benchmarks/README.md, section ledger, has the cost).

One process at a time: ``PATH.lock`` beside the database is locked (``flock``, POSIX only)
while a ``Ledger`` is open, and a second one is refused with ``LedgerBusyError``.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, NamedTuple

from ._errors import ConfigError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no advisory lock, documented
    fcntl = None  # type: ignore[assignment]

__all__ = ["Ledger", "LedgerBusyError", "LedgerEntry"]

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


class LedgerBusyError(ConfigError):
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


class Ledger:
    """A ledger file, open until ``close()`` (or the end of its ``with`` block)."""

    def __init__(self, path: str | os.PathLike[str], *, commit_every: int = 200, commit_interval: float = 0.5) -> None:
        if commit_every < 1 or commit_interval <= 0:
            raise ConfigError("commit_every must be >= 1 and commit_interval > 0")
        self.path = Path(path)
        self.commit_every = commit_every
        self.commit_interval = commit_interval
        self._lock = self._take_lock(self.path)
        self._db = sqlite3.connect(self.path, isolation_level=None)
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute(_SCHEMA)
        except sqlite3.DatabaseError as exc:
            self._db.close()
            self._lock.close()
            raise ConfigError(f"ledger {self.path}: not a usable SQLite database ({exc})") from None
        self._pending: dict[tuple[str, str, str], tuple[object, ...]] = {}
        """Rows recorded since the last commit, by target: newer than the table."""
        self._last_commit = time.monotonic()
        self.closed = False

    @staticmethod
    def _take_lock(path: Path) -> IO[bytes]:
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = open(path.with_name(path.name + ".lock"), "ab")  # noqa: SIM115 - held while open
        if fcntl is not None:
            try:
                fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                lock.close()
                raise LedgerBusyError(
                    f"ledger {path} is in use by another run; wait for it to finish, or give this run "
                    "its own ledger (--ledger PATH)"
                ) from None
        return lock

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Ledger({str(self.path)!r})"

    def last(self, base_url: str, store: str, path: str) -> LedgerEntry | None:
        """The target's last recorded write, committed or not; None if it was never recorded."""
        row = self._pending.get((base_url, store, path))
        if row is not None:
            return LedgerEntry(row[4], bool(row[5]), row[6], row[7], row[8])  # type: ignore[arg-type]
        found = self._db.execute(
            "SELECT body_hash, ok, status, trace_id, at FROM writes WHERE base_url = ? AND store = ? AND path = ?",
            (base_url, store, path),
        ).fetchone()
        return None if found is None else LedgerEntry(found[0], bool(found[1]), found[2], found[3], found[4])

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
        """Note a write that was sent (``ok`` only if a 2xx acknowledged it); committed in windows."""
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
        if len(self._pending) >= self.commit_every or time.monotonic() - self._last_commit >= self.commit_interval:
            self.commit()

    def commit(self) -> None:
        self._last_commit = time.monotonic()
        if not self._pending:
            return
        with self._transaction():
            self._db.executemany(
                "INSERT OR REPLACE INTO writes VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", self._pending.values()
            )
        self._pending.clear()

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        self._db.execute("BEGIN")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def __len__(self) -> int:
        self.commit()
        count: int = self._db.execute("SELECT count(*) FROM writes").fetchone()[0]
        return count

    def close(self) -> None:
        """Commit what is pending and release the file. Safe to call twice."""
        if self.closed:
            return
        try:
            self.commit()
        finally:
            self.closed = True
            self._db.close()
            self._lock.close()
