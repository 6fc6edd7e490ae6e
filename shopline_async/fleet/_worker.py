"""A fleet worker: runs store workflows and their drain activities through the SDK's own client.

Each worker process has one ``ShoplineClient`` holding the stores of its own configuration (the
tokens never leave the process), so a store's limiter, pool and retries are the SDK's. A drain
activity sends one chunk of one store through a ``BatchExecutor`` and heartbeats the results it
has so far: a retried activity (its worker died, or lost Temporal) starts after the last
acknowledged heartbeat, so a crash re-sends at most one heartbeat window of idempotent PUTs.

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
from .._sync import error_text
from .._telemetry import Observer
from ._model import (
    ACTIVITY_NAME,
    GIVE_UP_ACTIVITY_NAME,
    DrainInput,
    DrainOutcome,
    FleetOperation,
    GiveUpInput,
    OperationResult,
    StoreStopped,
    decode_results,
    encode_results,
)
from ._workflow import StoreWorkflow

__all__ = ["DEFAULT_TASK_QUEUE", "WORKER_HEADER", "FleetWorker", "StoreConfig", "new_identity", "run_worker"]

DEFAULT_TASK_QUEUE = DEFAULT_FLEET_TASK_QUEUE
"""The task queue workers poll and submissions go to unless told otherwise."""
WORKER_HEADER = "X-Shopline-Fleet-Worker"
# Our own pace for heartbeats: each one encodes every result so far, so not one per result.
# Temporal's worker sends the newest at most every 0.8 x heartbeat timeout; that is the window.
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
    """The drain activity, bound to this process's client. ``identity`` names the process to the
    store workflows, which pass on who drained a store last."""

    def __init__(
        self,
        client: ShoplineClient,
        *,
        identity: str | None = None,
        concurrency: int = DEFAULT_BATCH_CONCURRENCY,
        telemetry: Observer | None = None,
        ledger: str | None = None,
    ) -> None:
        self.client = client
        self.telemetry = telemetry
        self.ledger = ledger
        """A PostgreSQL URL every drain records its writes in and skips unchanged rows by, or None."""
        self.concurrency = concurrency
        self.identity = identity or new_identity()

    @activity.defn(name=ACTIVITY_NAME)
    async def drain(self, job: DrainInput) -> DrainOutcome:
        info = activity.info()
        results = _checkpoint(info.heartbeat_details)
        resumed = len(results)
        done = {r.seq for r in results}
        store = self.client.get_store(job.store)
        todo = [op for op in job.chunk.decoded() if op.seq not in done]
        if store is None:
            message = f"store {job.store!r} has no token on worker {self.identity}: add it to the worker's --config"
            results += [_not_sent(job, op, message) for op in todo]
            return self._outcome(results, info.attempt, resumed)
        if job.stopped is not None:  # an earlier chunk of this submission learnt the store cannot be written
            earlier = job.stopped
            message = (
                f"not sent: store {job.store!r} answered HTTP {earlier.status} earlier in this submission "
                f"({earlier.message}, traceId={earlier.trace_id or '-'})"
            )
            results += [_not_sent(job, op, message) for op in todo]
            return self._outcome(results, info.attempt, resumed, earlier)

        await self._wait_for_bucket(job, info.attempt, results)
        # a connection per drain: a chunk takes minutes at SHOPLINE's pace, a connection milliseconds
        ledger = PostgresLedger(self.ledger) if self.ledger is not None else None
        try:
            executor = BatchExecutor(self.client, concurrency=self.concurrency, ledger=ledger)
            last_beat = time.monotonic()
            stopped = None
            async with executor.stream(_operations(job.store, todo)) as stream:
                async for result in stream:
                    if result.outcome == "not_attempted":  # the ledger failed: not sent, left to the retry
                        continue
                    results.append(_result(job, todo[result.index], result))  # index: position in todo
                    if stopped is None:
                        stopped = _stopped_by(result.error)
                    if time.monotonic() - last_beat >= _HEARTBEAT_EVERY:
                        activity.heartbeat(encode_results(results))
                        last_beat = time.monotonic()
        finally:
            if ledger is not None:
                ledger.close()
        if executor.ledger_error is not None:  # rows it could not record were not sent: try the chunk again
            raise executor.ledger_error
        activity.heartbeat(encode_results(results))
        if self.telemetry is not None:
            self.telemetry.chunk_drained(job.store, len(todo))
        return self._outcome(results, info.attempt, resumed, stopped)

    @activity.defn(name=GIVE_UP_ACTIVITY_NAME)
    async def give_up(self, job: GiveUpInput) -> DrainOutcome:
        """The chunk's drain failed for good: each row is reported failed, with the reason; the rows
        its attempts sent may have been applied, so none is called not sent."""
        message = (
            f"not confirmed: its chunk's drain failed for good ({job.reason}); it may or may not have been applied"
        )
        try:
            ops = job.chunk.decoded()
        except (msgspec.DecodeError, msgspec.ValidationError):  # what failed it: counted, with no row to name
            return DrainOutcome("", 0, job.chunk.count, self.identity, time.time())
        return self._outcome([_not_sent(job, op, message) for op in ops], activity.info().attempt, 0)

    def _outcome(
        self, results: list[OperationResult], attempt: int, resumed: int, stopped: StoreStopped | None = None
    ) -> DrainOutcome:
        ok = sum(r.ok for r in results)
        return DrainOutcome(
            encode_results(results), ok, len(results) - ok, self.identity, time.time(), attempt, resumed, stopped
        )

    async def _wait_for_bucket(self, job: DrainInput, attempt: int, results: list[OperationResult]) -> None:
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
            activity.heartbeat(encode_results(results))
            await asyncio.sleep(min(left, _HEARTBEAT_EVERY))


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


def _result(job: DrainInput, op: FleetOperation, result: AnyResult) -> OperationResult:
    return OperationResult(
        submission=job.chunk.submission,
        store=job.store,
        seq=op.seq,
        line=op.line,
        key=op.key,
        kind=op.kind,
        ok=result.ok,
        outcome=result.outcome,
        status=result.status,
        trace_id=result.trace_id,
        trace_ids=list(result.trace_ids),
        attempts=result.attempts,
        error=error_text(result.error) if result.error is not None else None,
        product_id=op.product_id,
        image_id=op.image_id,
    )


def _not_sent(job: DrainInput | GiveUpInput, op: FleetOperation, message: str) -> OperationResult:
    return OperationResult(
        submission=job.chunk.submission,
        store=job.store,
        seq=op.seq,
        line=op.line,
        key=op.key,
        kind=op.kind,
        ok=False,
        outcome="failed",
        error=message,
        product_id=op.product_id,
        image_id=op.image_id,
    )


def _checkpoint(details: Any) -> list[OperationResult]:
    """The results an earlier attempt heartbeated."""
    return decode_results(details[0]) if details else []


def workflow_runner() -> SandboxedWorkflowRunner:
    """How store workflows run, in a worker and when a history is replayed. The workflow's module is
    this package's: importing it anew in every run's sandbox costs the SDK's whole import (aiohttp
    and all) every run (benchmarks/README.md). It has no side effects at import, so it is shared
    with the sandbox instead."""
    return SandboxedWorkflowRunner(restrictions=SandboxRestrictions.default.with_passthrough_modules("shopline_async"))


async def run_worker(
    temporal: Client,
    stores: Mapping[str, StoreConfig],
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
    ledger: str | None = None,
    ready: asyncio.Event | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    """Serve ``task_queue`` until ``stop`` is set (or cancelled): up to ``max_concurrent_stores`` stores at once.

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
        if ledger is not None:
            PostgresLedger(ledger).close()  # refused at start, not at the first drain: a bad URL, no driver
        fleet = FleetWorker(client, identity=identity, concurrency=concurrency, telemetry=telemetry, ledger=ledger)
        worker = Worker(
            temporal,
            task_queue=task_queue,
            workflows=[StoreWorkflow],
            activities=[fleet.drain, fleet.give_up],
            workflow_runner=workflow_runner(),
            max_concurrent_activities=max_concurrent_stores,
            identity=fleet.identity,
        )
        async with worker:  # leaving it shuts the worker down: its activities end, their stores move on
            if ready is not None:
                ready.set()
            await (stop or asyncio.Event()).wait()
