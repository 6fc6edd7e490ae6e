"""The fleet's store of record, in PostgreSQL: chunks, every operation's result, each store's progress.

Temporal carries references only (a submission's id and a chunk's number), so a workflow's
history grows by a few hundred bytes per chunk whatever the chunk holds, and results outlive
Temporal's retention: they are kept until ``fleet forget``. The sync ledger lives in the same
database (``shopline_ledger``).

Results are written as a drain goes (every second or so, before its heartbeat), keyed by
submission, store and operation number: an attempt that resumes after a lost worker overwrites
what the lost one wrote, never adds to it. Each write also refreshes the store's progress row
from the results, in one transaction holding that row's lock, so the counts are the results'
and ``fleet status`` reads one row per store.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from types import TracebackType
from typing import Any

import msgspec
import psycopg

from .._errors import ConfigError
from .._ledger import ledger_name, url_password
from .._results import ResultRow
from ._model import StoreStopped

__all__ = ["DatabaseError", "FleetDatabase", "StoreStatus"]

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS shopline_fleet_chunks (
        app        TEXT NOT NULL,
        submission TEXT NOT NULL,
        store      TEXT NOT NULL,
        number     INTEGER NOT NULL,
        count      INTEGER NOT NULL,
        operations BYTEA NOT NULL,
        PRIMARY KEY (app, submission, store, number)
    )""",
    """CREATE TABLE IF NOT EXISTS shopline_fleet_results (
        app        TEXT NOT NULL,
        submission TEXT NOT NULL,
        store      TEXT NOT NULL,
        seq        INTEGER NOT NULL,
        ok         BOOLEAN NOT NULL,
        outcome    TEXT NOT NULL,
        attempts   INTEGER NOT NULL,
        drain      TEXT,
        round      INTEGER NOT NULL,
        row        BYTEA NOT NULL,
        PRIMARY KEY (app, submission, store, seq)
    )""",
    """CREATE TABLE IF NOT EXISTS shopline_fleet_progress (
        app              TEXT NOT NULL,
        submission       TEXT NOT NULL,
        store            TEXT NOT NULL,
        submitted        INTEGER NOT NULL DEFAULT 0,
        done             INTEGER NOT NULL DEFAULT 0,
        ok               INTEGER NOT NULL DEFAULT 0,
        failed           INTEGER NOT NULL DEFAULT 0,
        sent             INTEGER NOT NULL DEFAULT 0,
        unchanged        INTEGER NOT NULL DEFAULT 0,
        invalid          INTEGER NOT NULL DEFAULT 0,
        round            INTEGER NOT NULL DEFAULT 1,
        stopped_status   INTEGER,
        stopped_trace_id TEXT,
        stopped_message  TEXT,
        submitted_at     DOUBLE PRECISION NOT NULL,
        updated_at       DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (app, submission, store)
    )""",
)
_MATCHING = "(submission = %(submission)s OR submission LIKE %(named)s)"
_RESULT_UPSERT = (
    "INSERT INTO shopline_fleet_results VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) "
    "ON CONFLICT (app, submission, store, seq) DO UPDATE SET ok = EXCLUDED.ok, outcome = EXCLUDED.outcome, "
    "attempts = EXCLUDED.attempts, drain = EXCLUDED.drain, round = EXCLUDED.round, row = EXCLUDED.row "
    "WHERE shopline_fleet_results.round <= EXCLUDED.round"  # a late attempt of a round before: not over a newer
)
_REFRESH = """
UPDATE shopline_fleet_progress p SET
    done = c.done, ok = c.ok, failed = c.failed, sent = c.sent, unchanged = c.unchanged,
    invalid = c.invalid, updated_at = %(now)s
FROM (
    SELECT count(*) FILTER (WHERE outcome <> 'invalid') AS done,
           count(*) FILTER (WHERE ok) AS ok,
           count(*) FILTER (WHERE NOT ok AND outcome <> 'invalid') AS failed,
           count(*) FILTER (WHERE attempts > 0) AS sent,
           count(*) FILTER (WHERE outcome = 'skipped') AS unchanged,
           count(*) FILTER (WHERE outcome = 'invalid') AS invalid
    FROM shopline_fleet_results r
    WHERE r.app = %(app)s AND r.submission = %(submission)s AND r.store = %(store)s AND r.round = (
        SELECT round FROM shopline_fleet_progress
        WHERE app = %(app)s AND submission = %(submission)s AND store = %(store)s
    )
) c
WHERE p.app = %(app)s AND p.submission = %(submission)s AND p.store = %(store)s
"""
_row_encoder = msgspec.json.Encoder()


class DatabaseError(ConfigError):
    """The fleet's database cannot be reached, or refused what was asked; the message names it,
    without its password."""


class StoreStatus(msgspec.Struct):
    """One store's line of ``fleet status``, for the submissions asked about: operations submitted,
    done (ok or failed), ok, failed, sent to SHOPLINE, unchanged (skipped by the ledger), refused
    at submit (``invalid``), and if the store answered that it cannot be written, that answer.
    ``state``: ``queued`` (nothing done yet), ``draining``, ``done``. Store ``""`` holds rows refused
    at submit that named no store."""

    store: str
    state: str
    submitted: int = 0
    done: int = 0
    ok: int = 0
    failed: int = 0
    sent: int = 0
    unchanged: int = 0
    invalid: int = 0
    stopped: StoreStopped | None = None


def _matching(submission: str) -> dict[str, str]:
    """A submission id, or a name standing for all its contents (``nightly`` is ``nightly@...``)."""
    escaped = submission.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return {"submission": submission, "named": escaped + "@%"}


class FleetDatabase:
    """A connection to the fleet's database; ``await FleetDatabase.connect(url)``, then ``close()``
    (or ``async with``). Tables are created when missing."""

    def __init__(self, connection: psycopg.AsyncConnection[Any], url: str) -> None:
        self._db = connection
        self._url = url
        self.name = ledger_name(url)
        self._secret = url_password(url)
        self._lock = asyncio.Lock()

    @classmethod
    async def connect(cls, url: str) -> FleetDatabase:
        try:
            connection = await psycopg.AsyncConnection.connect(url, autocommit=True, connect_timeout=10)
        except psycopg.Error as exc:
            raise _error(ledger_name(url), url_password(url), exc) from None
        database = cls(connection, url)
        try:
            async with database._transaction() as db:
                # two processes creating the tables at once would collide in PostgreSQL's catalog
                await db.execute("SELECT pg_advisory_xact_lock(7403319652)")
                for statement in _SCHEMA:
                    await db.execute(statement)
        except BaseException:
            await connection.close()
            raise
        return database

    async def close(self) -> None:
        await self._db.close()

    async def __aenter__(self) -> FleetDatabase:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        await self.close()

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        """The connection, in a transaction whose errors are ``DatabaseError`` (rolled back, the
        password left out). One at a time: a worker's drains share the connection. A connection
        the server dropped (a restart) is made anew."""
        async with self._lock:
            try:
                if self._db.broken:
                    await self._db.close()
                    self._db = await psycopg.AsyncConnection.connect(self._url, autocommit=True, connect_timeout=10)
                async with self._db.transaction():
                    yield self._db
            except psycopg.Error as exc:
                raise _error(self.name, self._secret, exc) from None

    async def _fetch(self, query: str, params: Any = None) -> list[tuple[Any, ...]]:
        async with self._transaction() as db:
            cursor = await db.execute(query, params)
            return await cursor.fetchall() if cursor.description is not None else []

    # --- submit

    async def add_submission(
        self,
        app: str,
        submission: str,
        chunks: dict[str, list[tuple[int, bytes]]],
        invalid: list[ResultRow],
    ) -> int:
        """Record a submission's chunks (per store: operation count and encoded operations) and the
        rows refused at submit, in one transaction; returns its round. A new submission is round 1;
        the same one again while not done is the same round (a submit retried); once done, the
        next round: its rows are drained again, and its counts start afresh (the results of the
        round before stay until the new round's replace them), and the stores' answers that they
        cannot be written are forgotten."""
        now = time.time()
        async with self._transaction() as db, db.cursor() as cursor:
            await cursor.execute(
                "SELECT max(round), bool_and(done >= submitted) FROM shopline_fleet_progress "
                "WHERE app = %s AND submission = %s",
                (app, submission),
            )
            found = await cursor.fetchone()
            last, done = found if found is not None else (None, None)
            round_ = 1 if last is None else last + 1 if done else last
            rows = [
                (app, submission, store, number, count, operations)
                for store, store_chunks in chunks.items()
                for number, (count, operations) in enumerate(store_chunks)
            ]
            await cursor.executemany(
                "INSERT INTO shopline_fleet_chunks VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING", rows
            )
            stores = {store: sum(count for count, _ in c) for store, c in chunks.items()}
            for row in invalid:
                stores.setdefault(row.store or "", 0)
            await cursor.executemany(
                "INSERT INTO shopline_fleet_progress (app, submission, store, submitted, round, submitted_at, "
                "updated_at) VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (app, submission, store) DO UPDATE SET "
                "round = EXCLUDED.round, submitted_at = EXCLUDED.submitted_at, stopped_status = NULL, "
                "stopped_trace_id = NULL, stopped_message = NULL "
                "WHERE shopline_fleet_progress.round <> EXCLUDED.round",
                [(app, submission, store, count, round_, now, now) for store, count in stores.items()],
            )
            await self._write_results(cursor, app, submission, None, round_, invalid)
            await cursor.executemany(
                _REFRESH, [{"app": app, "submission": submission, "store": store, "now": now} for store in stores]
            )
        return round_

    # --- a drain

    async def chunk(self, app: str, submission: str, store: str, number: int) -> bytes | None:
        """A chunk's operations as stored (None: forgotten since)."""
        found = await self._fetch(
            "SELECT operations FROM shopline_fleet_chunks WHERE app = %s AND submission = %s AND store = %s "
            "AND number = %s",
            (app, submission, store, number),
        )
        return bytes(found[0][0]) if found else None

    async def stopped(self, app: str, submission: str, store: str) -> StoreStopped | None:
        """What the store answered earlier in this submission if it cannot be written, else None."""
        found = await self._fetch(
            "SELECT stopped_status, stopped_trace_id, stopped_message FROM shopline_fleet_progress "
            "WHERE app = %s AND submission = %s AND store = %s AND stopped_status IS NOT NULL",
            (app, submission, store),
        )
        return StoreStopped(*found[0]) if found else None

    async def drained(self, app: str, submission: str, store: str, drain: str, seqs: list[int]) -> set[int]:
        """Of ``seqs``, those with a result from ``drain`` (an earlier attempt of it): not sent again."""
        found = await self._fetch(
            "SELECT seq FROM shopline_fleet_results WHERE app = %s AND submission = %s AND store = %s "
            "AND drain = %s AND seq = ANY(%s)",
            (app, submission, store, drain, seqs),
        )
        return {seq for (seq,) in found}

    async def record(
        self,
        app: str,
        submission: str,
        store: str,
        drain: str,
        round_: int,
        rows: list[ResultRow],
        stopped: StoreStopped | None = None,
    ) -> None:
        """Write ``rows`` (replacing earlier results of the same operations) and, if the store answered
        that it cannot be written, that answer; then refresh the store's progress from its results."""
        params = {"app": app, "submission": submission, "store": store, "now": time.time()}
        async with self._transaction() as db, db.cursor() as cursor:
            # the row's lock first: two attempts of one chunk (a worker thought lost, and its
            # successor) then count one after the other, each seeing what the other committed
            await cursor.execute(
                "SELECT 1 FROM shopline_fleet_progress WHERE app = %(app)s AND submission = %(submission)s "
                "AND store = %(store)s FOR UPDATE",
                params,
            )
            await self._write_results(cursor, app, submission, drain, round_, rows)
            if stopped is not None:
                await cursor.execute(
                    "UPDATE shopline_fleet_progress SET stopped_status = %s, stopped_trace_id = %s, "
                    "stopped_message = %s WHERE app = %s AND submission = %s AND store = %s",
                    (stopped.status, stopped.trace_id, stopped.message, app, submission, store),
                )
            await cursor.execute(_REFRESH, params)

    @staticmethod
    async def _write_results(
        cursor: Any, app: str, submission: str, drain: str | None, round_: int, rows: Iterable[ResultRow]
    ) -> None:
        await cursor.executemany(
            _RESULT_UPSERT,
            [
                (
                    app,
                    submission,
                    row.store or "",
                    row.seq,
                    row.ok,
                    row.outcome,
                    row.attempts,
                    drain,
                    round_,
                    _row_encoder.encode(row),
                )
                for row in rows
            ],
        )

    # --- what users ask

    async def status(self, app: str, submission: str | None = None) -> list[StoreStatus]:
        """Each store's counts for ``submission`` (an id, or a name for all its contents; None: all)."""
        where = "app = %(app)s" + ("" if submission is None else " AND " + _MATCHING)
        found = await self._fetch(
            "SELECT store, sum(submitted), sum(done), sum(ok), sum(failed), sum(sent), sum(unchanged), sum(invalid), "
            "(array_agg(stopped_status) FILTER (WHERE stopped_status IS NOT NULL))[1], "
            "(array_agg(stopped_trace_id) FILTER (WHERE stopped_status IS NOT NULL))[1], "
            "(array_agg(stopped_message) FILTER (WHERE stopped_status IS NOT NULL))[1] "
            f"FROM shopline_fleet_progress WHERE {where} GROUP BY store ORDER BY store",
            {"app": app, **(_matching(submission) if submission is not None else {})},
        )
        statuses = []
        for (
            store,
            submitted,
            done,
            ok,
            failed,
            sent,
            unchanged,
            invalid,
            status,
            trace_id,
            message,
        ) in found:
            state = "done" if done >= submitted else ("draining" if done else "queued")
            stopped = None if status is None else StoreStopped(status, trace_id, message)
            statuses.append(StoreStatus(store, state, submitted, done, ok, failed, sent, unchanged, invalid, stopped))
        return statuses

    async def results(
        self, app: str, *, submission: str | None = None, store: str | None = None
    ) -> AsyncIterator[bytes]:
        """Each result row as JSON, submission by submission, store by store, in submission order;
        streamed (a server-side cursor), so a million rows take no more memory than a few."""
        where = "app = %(app)s"
        params: dict[str, Any] = {"app": app}
        if submission is not None:
            where += " AND " + _MATCHING
            params.update(_matching(submission))
        if store is not None:
            where += " AND store = %(store)s"
            params["store"] = store
        async with self._transaction() as db, db.cursor(name="shopline_results") as cursor:
            await cursor.execute(
                f"SELECT row FROM shopline_fleet_results WHERE {where} ORDER BY submission, store, seq", params
            )
            async for (row,) in cursor:
                yield bytes(row)

    async def forget(self, app: str, submission: str) -> int:
        """Delete a submission's chunks, results and progress (an id, or a name for all its contents);
        returns the results deleted."""
        params = {"app": app, **_matching(submission)}
        async with self._transaction() as db, db.cursor() as cursor:
            await cursor.execute(f"DELETE FROM shopline_fleet_results WHERE app = %(app)s AND {_MATCHING}", params)
            deleted: int = cursor.rowcount
            await cursor.execute(f"DELETE FROM shopline_fleet_chunks WHERE app = %(app)s AND {_MATCHING}", params)
            await cursor.execute(f"DELETE FROM shopline_fleet_progress WHERE app = %(app)s AND {_MATCHING}", params)
        return deleted


def _error(name: str, secret: str | None, exc: Exception) -> DatabaseError:
    message = " ".join(str(exc).split())
    if secret:
        message = message.replace(secret, "[REDACTED]")
    return DatabaseError(f"database {name}: {message}")
