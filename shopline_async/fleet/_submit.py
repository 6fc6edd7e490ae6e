"""Submitting work to the fleet, and reading back its progress and results.

A submission is validated here, where the rows are read (an invalid row is reported at once and
never reaches Temporal), cut into chunks per store, and each chunk is signalled to its store's
workflow with signal-with-start: the workflow starts if it is not running, and joins otherwise.
A store takes at most ``max_queued_chunks`` chunks ahead of its drain, so the queue a workflow
carries from run to run stays far below Temporal's 2 MB payload cap; past that the submitter
waits for the store's workers.

Results are durable in Temporal: every drained chunk's results are its activity's result, in
the store workflow's history (and its earlier runs'), so they are read back from there.
"""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from datetime import timedelta

import msgspec
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client
from temporalio.service import RPCError

from .._codec import encode_image_update, encode_product_update
from .._constants import DEFAULT_FLEET_CHUNK_SIZE
from .._errors import ConfigError, ValidationError
from .._operations import Operation, UpdateImage
from .._rows import RowKey
from .._transport import check_handle, path_segment
from ._model import (
    PROGRESS_QUERY,
    SUBMIT_SIGNAL,
    WORKFLOW_NAME,
    Chunk,
    DrainOutcome,
    FleetOperation,
    OperationResult,
    StoreProgress,
    StoreSettings,
    StoreState,
    decode_results,
    in_submission,
    workflow_id,
)
from ._worker import DEFAULT_TASK_QUEUE

__all__ = ["Invalid", "SubmitReport", "fetch_progress", "fetch_results", "submit"]

_QUERY_TIMEOUT = 5.0  # a workflow no worker answers for within this is reported as such
_QUERIES_AT_ONCE = 32
DEFAULT_CHUNK_BYTES = 256 * 1024
DEFAULT_MAX_QUEUED_CHUNKS = 4  # 4 x 256 KiB queued: what continue-as-new carries stays below 2 MB
_SIGNALS_AT_ONCE = 32


@dataclass(frozen=True)
class Invalid:
    """A row refused at submit: its line (None for an operation built in Python), key, store and why."""

    line: int | None
    key: str
    store: str | None
    message: str


@dataclass
class SubmitReport:
    """What ``submit()`` queued: the submission id, operations, chunks, stores, and the rows refused."""

    submission: str
    operations: int = 0
    chunks: int = 0
    stores: set[str] = field(default_factory=set)
    invalid: list[Invalid] = field(default_factory=list)


def _line_and_key(op: Operation, seq: int) -> tuple[int | None, str]:
    """The CLI's rows carry (line, key); an operation built in Python its own key, else its number."""
    if isinstance(op.key, RowKey):
        return op.key.line, str(op.key.key)
    return None, str(op.key) if op.key is not None else str(seq)


def _fleet_operation(op: Operation, seq: int) -> FleetOperation:
    """The operation as it travels: validated here as ``sync`` validates it (store handle, ids,
    body), its body exactly what the worker will send."""
    line, key = _line_and_key(op, seq)
    check_handle(op.store if isinstance(op.store, str) else op.store.handle)
    path_segment(op.product_id, "$.product_id")
    if isinstance(op, UpdateImage):
        path_segment(op.image_id, "$.image_id")
        body = msgspec.json.decode(encode_image_update(op.image))["image"]
        return FleetOperation(seq, line, key, "image", op.product_id, body, op.image_id)
    body = msgspec.json.decode(encode_product_update(op.product))["product"]
    return FleetOperation(seq, line, key, "product", op.product_id, body)


def _chunks(
    submission: str, ops: list[FleetOperation], size: int, max_bytes: int, settings: StoreSettings | None
) -> list[Chunk]:
    chunks: list[Chunk] = []
    current: list[FleetOperation] = []
    current_bytes = 0
    for op in ops:
        op_bytes = len(msgspec.json.encode(op.body)) + 100
        if current and (len(current) >= size or current_bytes + op_bytes > max_bytes):
            chunks.append(Chunk.of(submission, len(chunks), current, settings))
            current, current_bytes = [], 0
        current.append(op)
        current_bytes += op_bytes
    if current:
        chunks.append(Chunk.of(submission, len(chunks), current, settings))
    return chunks


async def submit(
    temporal: Client,
    operations: Iterable[Operation],
    *,
    app: str = "default",
    task_queue: str = DEFAULT_TASK_QUEUE,
    submission: str | None = None,
    settings: StoreSettings | None = None,
    chunk_size: int = DEFAULT_FLEET_CHUNK_SIZE,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    max_queued_chunks: int = DEFAULT_MAX_QUEUED_CHUNKS,
    on_invalid: Callable[[Invalid], None] | None = None,
    on_waiting: Callable[[str, int], None] | None = None,
) -> SubmitReport:
    """Validate ``operations`` and hand them to their stores' workflows; returns once all are queued.

    ``settings`` apply to the drains of this submission's chunks (and to a store workflow this call
    starts); without them a chunk drains as its store workflow was started.
    ``on_waiting(store, queued_chunks)`` is called when a store's queue is full and the
    submitter waits for its workers. ``submission`` names it: its id is then ``NAME@`` and a digest
    of its validated rows (``report.submission``), so the same content again is the same submission.
    """
    if submission is not None and (not submission or "@" in submission):
        raise ConfigError(
            f"a submission name must not be empty or contain '@', which parts the name from its content's "
            f"digest (got {submission!r})"
        )
    report = SubmitReport(submission or uuid.uuid4().hex[:12])
    by_store: dict[str, list[FleetOperation]] = {}
    for seq, op in enumerate(operations):
        store = op.store if isinstance(op.store, str) else op.store.handle
        try:
            fleet_op = _fleet_operation(op, seq)
        except (ValidationError, ConfigError) as exc:
            line, key = _line_and_key(op, seq)
            said = "; ".join(str(e) for e in exc.errors) if isinstance(exc, ValidationError) else str(exc)
            invalid = Invalid(line, key, store, said)
            report.invalid.append(invalid)
            if on_invalid is not None:
                on_invalid(invalid)
            continue
        by_store.setdefault(store, []).append(fleet_op)
    if submission is not None:
        # A name stands for its content: the same content again is the same submission (a retried
        # submit sends nothing twice); other content under the same name is a new one, not dropped
        # as chunks already seen
        report.submission = f"{submission}@{_content_digest(by_store)}"

    gate = asyncio.Semaphore(_SIGNALS_AT_ONCE)
    state_settings = settings or StoreSettings()

    async def send_store(store: str, ops: list[FleetOperation]) -> None:
        chunks = _chunks(report.submission, ops, chunk_size, chunk_bytes, settings)
        for number, chunk in enumerate(chunks):
            if number >= max_queued_chunks:
                await _wait_for_room(temporal, workflow_id(app, store), max_queued_chunks, store, on_waiting)
            async with gate:
                await temporal.start_workflow(
                    WORKFLOW_NAME,
                    StoreState(app, store, state_settings),
                    id=workflow_id(app, store),
                    task_queue=task_queue,
                    start_signal=SUBMIT_SIGNAL,
                    start_signal_args=[chunk],
                )
            report.chunks += 1
        report.operations += len(ops)
        report.stores.add(store)

    await asyncio.gather(*(send_store(store, ops) for store, ops in by_store.items()))
    return report


def _content_digest(by_store: dict[str, list[FleetOperation]]) -> str:
    digest = hashlib.blake2b(digest_size=4)
    for store in sorted(by_store):
        digest.update(msgspec.json.encode([store, by_store[store]]))
    return digest.hexdigest()


async def _wait_for_room(
    temporal: Client, wid: str, limit: int, store: str, on_waiting: Callable[[str, int], None] | None
) -> None:
    handle = temporal.get_workflow_handle(wid)
    told = False
    while True:
        try:
            progress = await handle.query(PROGRESS_QUERY, result_type=StoreProgress)
            if progress.queued_chunks < limit:
                return
            queued = progress.queued_chunks
        except RPCError:  # no worker answering queries yet: wait for one
            queued = -1
        if on_waiting is not None and not told:
            on_waiting(store, queued)
            told = True
        await asyncio.sleep(1.0)


def _app_prefix(app: str) -> str:
    return workflow_id(app, "")


async def fetch_progress(
    temporal: Client, *, app: str = "default", answer_within: float = _QUERY_TIMEOUT
) -> list[StoreProgress | str]:
    """Each running store workflow's progress; a store whose workflow no worker answers for within
    ``answer_within`` seconds, by name. The workflows are asked ``_QUERIES_AT_ONCE`` at a time."""
    prefix = _app_prefix(app)
    query = f'WorkflowType = "{WORKFLOW_NAME}" AND ExecutionStatus = "Running"'
    ids = [execution.id async for execution in temporal.list_workflows(query) if execution.id.startswith(prefix)]
    gate = asyncio.Semaphore(_QUERIES_AT_ONCE)

    async def ask(wid: str) -> StoreProgress | str:
        async with gate:
            try:
                handle = temporal.get_workflow_handle(wid)
                timeout = timedelta(seconds=answer_within)
                progress: StoreProgress = await handle.query(
                    PROGRESS_QUERY, result_type=StoreProgress, rpc_timeout=timeout
                )
                return progress
            except RPCError:
                return wid[len(prefix) :]

    found = await asyncio.gather(*(ask(wid) for wid in ids))
    return sorted(found, key=lambda p: p if isinstance(p, str) else p.store)


async def fetch_results(
    temporal: Client, *, app: str = "default", submission: str | None = None, store: str | None = None
) -> AsyncIterator[OperationResult]:
    """Every result recorded for ``app`` (one submission's, one store's), read from the histories of
    the store workflows and all their earlier runs."""
    prefix = _app_prefix(app)
    query = f'WorkflowType = "{WORKFLOW_NAME}"'
    if store is not None:
        query += f' AND WorkflowId = "{workflow_id(app, store)}"'
    async for execution in temporal.list_workflows(query):
        if not execution.id.startswith(prefix):
            continue
        handle = temporal.get_workflow_handle(execution.id, run_id=execution.run_id)
        async for event in handle.fetch_history_events():
            if event.event_type != EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
                continue
            payloads = event.activity_task_completed_event_attributes.result.payloads
            (outcome,) = await temporal.data_converter.decode(payloads, [DrainOutcome])
            for result in decode_results(outcome.results):
                if submission is None or in_submission(result.submission, submission):
                    yield result
