"""A fleet worker: runs store workflows and their drain activities through the SDK's own client.

Each worker process has one ``ShoplineClient`` holding the stores of its own configuration (the
tokens never leave the process), so a store's limiter, pool and retries are the SDK's. A drain
activity reads one chunk of one store from the fleet's database, sends it through a
``BatchExecutor`` whose ledger is that database's, and records the results there every second:
a retried activity (its worker died, or lost Temporal or the database) skips what its earlier
attempts recorded, so a crash re-sends about a second of idempotent PUTs.

A worker that did not send the store's last chunk cannot see SHOPLINE's bucket: the other worker
may have left it full. It waits what a full bucket takes to drain (capacity / rate, less the time
since that worker finished), and the SDK retries any 429 that still comes.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import msgspec
from temporalio import activity
from temporalio.client import Client
from temporalio.worker import Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from .._batch import BatchExecutor
from .._client import ShoplineClient
from .._config import RateLimit, RetryPolicy
from .._constants import (
    DEFAULT_BATCH_CONCURRENCY,
    DEFAULT_FLEET_MAX_STORES,
    DEFAULT_FLEET_TASK_QUEUE,
    STORE_STOPPING_STATUSES,
)
from .._errors import APIStatusError, StoreUnavailableError
from .._ledger import PostgresLedger
from .._operations import AnyResult, Operation, UpdateImage, UpdateProduct
from .._results import ResultRow
from .._telemetry import Observer
from ._database import FleetDatabase
from ._model import (
    ACTIVITY_NAME,
    GIVE_UP_ACTIVITY_NAME,
    DrainInput,
    DrainOutcome,
    FleetOperation,
    GiveUpInput,
    StoreStopped,
    decode_operations,
)
from ._workflow import StoreWorkflow

__all__ = ["DEFAULT_TASK_QUEUE", "WORKER_HEADER", "FleetWorker", "StoreConfig", "new_identity", "run_worker"]

DEFAULT_TASK_QUEUE = DEFAULT_FLEET_TASK_QUEUE
"""The task queue workers poll and submissions go to unless told otherwise."""
WORKER_HEADER = "X-Shopline-Fleet-Worker"
# Our own pace for recording results (a transaction each) and heartbeating, so not one per result.
_HEARTBEAT_EVERY = 1.0


@dataclass(frozen=True)
class StoreConfig:
    """A store as this worker knows it: its token (never sent to Temporal) and its rate limit."""

    token: str
    rate_limit: RateLimit | None = None

    def __repr__(self) -> str:
        return f"StoreConfig(token=<hidden>, rate_limit={self.rate_limit!r})"


def new_identity() -> str:
    """This process, uniquely: host, pid and a random part (a pid is reused after a restart)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class FleetWorker:
    """The drain activities, bound to this process's client and the fleet's database (a PostgreSQL
    URL). ``identity`` names the process to the store workflows, which pass on who drained a store last."""

    def __init__(
        self,
        client: ShoplineClient,
        database: str,
        *,
        identity: str | None = None,
        concurrency: int = DEFAULT_BATCH_CONCURRENCY,
        telemetry: Observer | None = None,
    ) -> None:
        self.client = client
        self.database = database
        self._connections: tuple[FleetDatabase, PostgresLedger] | None = None
        self._opening = asyncio.Lock()
        self.telemetry = telemetry
        self.concurrency = concurrency
        self.identity = identity or new_identity()

    async def open(self) -> tuple[FleetDatabase, PostgresLedger]:
        """This worker's connections to the database, made at the first call: one for results and
        one for the ledger, whatever the number of stores it drains (each made anew when dropped)."""
        async with self._opening:
            if self._connections is None:
                database = await FleetDatabase.connect(self.database)
                try:
                    self._connections = (database, PostgresLedger(self.database))
                except BaseException:
                    await database.close()
                    raise
            return self._connections

    async def close(self) -> None:
        if self._connections is not None:
            database, ledger = self._connections
            self._connections = None
            try:
                ledger.close()
            finally:
                await database.close()

    @activity.defn(name=ACTIVITY_NAME)
    async def drain(self, job: DrainInput) -> DrainOutcome:
        info = activity.info()
        database, ledger = await self.open()
        encoded = await database.chunk(job.app, job.submission, job.store, job.number)
        if encoded is None:  # forgotten (fleet forget) since it was queued
            return self._outcome(0, 0, info.attempt)
        operations = decode_operations(encoded)
        done = await database.drained(job.app, job.submission, job.store, job.drain, [op.seq for op in operations])
        todo = [op for op in operations if op.seq not in done]
        if not todo:
            return self._outcome(0, 0, info.attempt, len(done))
        record = _Recorder(database, job)
        if self.client.get_store(job.store) is None:
            message = f"store {job.store!r} has no token on worker {self.identity}: add it to the worker's --config"
            await record.rows([_not_sent(job, op, message) for op in todo])
            return self._outcome(0, len(todo), info.attempt, len(done))
        earlier = await database.stopped(job.app, job.submission, job.store)
        if earlier is not None:  # an earlier chunk of this submission learnt the store cannot be written
            message = (
                f"not sent: store {job.store!r} answered HTTP {earlier.status} earlier in this submission "
                f"({earlier.message}, traceId={earlier.trace_id or '-'})"
            )
            await record.rows([_not_sent(job, op, message) for op in todo])
            return self._outcome(0, len(todo), info.attempt, len(done), earlier)

        await self._wait_for_bucket(job, info.attempt)
        executor = BatchExecutor(self.client, concurrency=self.concurrency, ledger=ledger)
        # heartbeats say the process lives, whether or not a result came: a store's requests may
        # wait longer than the heartbeat timeout for the worker's sockets when it drains hundreds
        beating = asyncio.create_task(_heartbeats())
        try:
            async with executor.stream(_operations(job.store, todo)) as stream:
                async for result in stream:
                    if result.outcome == "not_attempted":  # the ledger failed: not sent, left to the retry
                        continue
                    await record.result(todo[result.index], result)  # index: position in todo
        finally:
            beating.cancel()
        await record.flush()
        if executor.ledger_error is not None:  # rows it could not record were not sent: try the chunk again
            raise executor.ledger_error
        if self.telemetry is not None:
            self.telemetry.chunk_drained(job.store, len(todo))
        return self._outcome(record.ok, record.failed, info.attempt, len(done), record.stopped)

    @activity.defn(name=GIVE_UP_ACTIVITY_NAME)
    async def give_up(self, job: GiveUpInput) -> DrainOutcome:
        """The chunk was not drained: each row without a result of its drain is reported failed, with
        the reason; as not confirmed if its drain may have sent it (so none is called not sent)."""
        if job.sent:
            message = (
                f"not confirmed: its chunk's drain failed for good ({job.reason}); it may or may not have been applied"
            )
        else:
            message = f"not sent: {job.reason}"
        database, _ = await self.open()
        encoded = await database.chunk(job.app, job.submission, job.store, job.number)
        try:
            operations = decode_operations(encoded) if encoded is not None else []
        except (msgspec.DecodeError, msgspec.ValidationError):  # what failed it: nothing to name the rows by
            return self._outcome(0, 0, activity.info().attempt)
        done = await database.drained(job.app, job.submission, job.store, job.drain, [op.seq for op in operations])
        rows = [_not_sent(job, op, message) for op in operations if op.seq not in done]
        await database.record(job.app, job.submission, job.store, job.drain, job.round, rows)
        return self._outcome(0, len(rows), activity.info().attempt, len(done))

    def _outcome(
        self, ok: int, failed: int, attempt: int, resumed: int = 0, stopped: StoreStopped | None = None
    ) -> DrainOutcome:
        return DrainOutcome(ok, failed, self.identity, time.time(), attempt, resumed, stopped)

    async def _wait_for_bucket(self, job: DrainInput, attempt: int) -> None:
        """Wait until SHOPLINE's bucket is surely empty, unless this process sent the store's last chunk."""
        full = job.settings.bucket_capacity / job.settings.bucket_rate
        if attempt > 1:  # the attempt before may have sent up to the moment it died
            wait = full
        elif job.last_drainer is None or job.last_drainer == self.identity or job.last_drain_end is None:
            return  # never drained, or by us: our own limiter knows what we sent
        else:
            wait = min(full, full - (time.time() - job.last_drain_end))  # min: a clock ahead of ours
        deadline = time.monotonic() + wait
        while (left := deadline - time.monotonic()) > 0:
            activity.heartbeat()
            await asyncio.sleep(min(left, _HEARTBEAT_EVERY))


async def _heartbeats() -> None:
    while True:
        activity.heartbeat()
        await asyncio.sleep(_HEARTBEAT_EVERY)


class _Recorder:
    """A drain's results on their way to the database: written every ``_HEARTBEAT_EVERY`` seconds."""

    def __init__(self, database: FleetDatabase, job: DrainInput) -> None:
        self._database, self._job = database, job
        self._pending: list[ResultRow] = []
        self._last_write = time.monotonic()
        self.ok = self.failed = 0
        self.stopped: StoreStopped | None = None
        self._stopped_unwritten = False

    async def result(self, op: FleetOperation, result: AnyResult) -> None:
        if self.stopped is None and (stopped := _stopped_by(result.error)) is not None:
            self.stopped, self._stopped_unwritten = stopped, True
        self.ok += result.ok
        self.failed += not result.ok
        row = ResultRow.of(
            result,
            line=op.line,
            key=op.key,
            product_id=op.product_id,
            image_id=op.image_id,
            submission=self._job.submission,
            seq=op.seq,
        )
        self._pending.append(row)
        if time.monotonic() - self._last_write >= _HEARTBEAT_EVERY:
            await self.flush()

    async def rows(self, rows: list[ResultRow]) -> None:
        self._pending += rows
        await self.flush()

    async def flush(self) -> None:
        job = self._job
        stopped = self.stopped if self._stopped_unwritten else None
        await self._database.record(job.app, job.submission, job.store, job.drain, job.round, self._pending, stopped)
        self._pending, self._stopped_unwritten = [], False
        self._last_write = time.monotonic()


def _stopped_by(error: Exception | None) -> StoreStopped | None:
    """The store's answer that it cannot be written, if ``error`` is or follows one."""
    if isinstance(error, StoreUnavailableError):
        error = error.cause
    if isinstance(error, APIStatusError) and error.status in STORE_STOPPING_STATUSES:
        return StoreStopped(error.status, error.trace_id, error.message)
    return None


def _operations(store: str, todo: list[FleetOperation]) -> list[Operation]:
    ops: list[Operation] = []
    for op in todo:
        if op.kind == "image":
            ops.append(UpdateImage(store, op.product_id, op.image_id or "", op.body, key=op.seq))
        else:
            ops.append(UpdateProduct(store, op.product_id, op.body, key=op.seq))
    return ops


def _not_sent(job: DrainInput | GiveUpInput, op: FleetOperation, message: str) -> ResultRow:
    return ResultRow.refused(
        message,
        line=op.line,
        key=op.key,
        store=job.store,
        outcome="failed",
        kind=op.kind,
        product_id=op.product_id,
        image_id=op.image_id,
        submission=job.submission,
        seq=op.seq,
    )


def workflow_runner() -> SandboxedWorkflowRunner:
    """How store workflows run, in a worker and when a history is replayed. The workflow's module is
    this package's: importing it anew in every run's sandbox costs the SDK's whole import (aiohttp
    and all) every run (benchmarks/README.md). It has no side effects at import, so it is shared
    with the sandbox instead."""
    return SandboxedWorkflowRunner(restrictions=SandboxRestrictions.default.with_passthrough_modules("shopline_async"))


async def run_worker(
    temporal: Client,
    stores: Mapping[str, StoreConfig],
    database: str,
    *,
    task_queue: str = DEFAULT_TASK_QUEUE,
    base_url: str | None = None,
    max_concurrent_stores: int = DEFAULT_FLEET_MAX_STORES,
    concurrency: int = DEFAULT_BATCH_CONCURRENCY,
    retry: RetryPolicy | None = None,
    allow_insecure_http: bool = False,
    send_identity: bool = False,
    max_connections: int | None = None,
    telemetry: Observer | None = None,
    ready: asyncio.Event | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    """Serve ``task_queue`` until ``stop`` is set (or cancelled): up to ``max_concurrent_stores`` stores at
    once, reading chunks from and recording results and the ledger in ``database`` (a PostgreSQL URL).

    ``send_identity``: every request carries ``X-Shopline-Fleet-Worker: host:pid:random``, which
    tells a server (our mock, a proxy's log) which worker sent it.
    """
    identity = new_identity()
    options: dict[str, Any] = {"allow_insecure_http": allow_insecure_http}
    if send_identity:
        options["extra_headers"] = {WORKER_HEADER: identity}
    if base_url is not None:
        options["base_url"] = base_url
    if retry is not None:
        options["retry"] = retry
    if max_connections is not None:
        options["max_connections"] = max_connections
    if telemetry is not None:
        options["telemetry"] = telemetry
    async with ShoplineClient(**options) as client:
        for handle, config in stores.items():
            client.store(handle, config.token, rate_limit=config.rate_limit)
        fleet = FleetWorker(client, database, identity=identity, concurrency=concurrency, telemetry=telemetry)
        await fleet.open()  # a database refused at start, not at the first drain
        worker = Worker(
            temporal,
            task_queue=task_queue,
            workflows=[StoreWorkflow],
            activities=[fleet.drain, fleet.give_up],
            workflow_runner=workflow_runner(),
            max_concurrent_activities=max_concurrent_stores,
            identity=fleet.identity,
        )
        try:
            async with worker:  # leaving it shuts the worker down: its activities end, their stores move on
                if ready is not None:
                    ready.set()
                await (stop or asyncio.Event()).wait()
        finally:
            await fleet.close()
