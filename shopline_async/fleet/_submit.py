"""Submitting work to the fleet.

A submission is validated here, where the rows are read (an invalid row is recorded as such, with
its line and why, and never reaches a worker), cut into chunks per store, and recorded in the
fleet's database in one transaction; then each store's workflow is told the submission's id and
its number of chunks by signal-with-start: the workflow starts if it is not running, and joins
otherwise. Temporal never carries the operations themselves.
"""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import msgspec
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from .._codec import encode_image_update, encode_product_update
from .._constants import DEFAULT_FLEET_CHUNK_SIZE
from .._errors import ConfigError, ValidationError
from .._operations import Operation, UpdateImage
from .._results import ResultRow, error_text
from .._rows import RowKey
from .._transport import check_handle, path_segment
from ._database import FleetDatabase
from ._model import (
    STOP_SIGNAL,
    SUBMIT_SIGNAL,
    WORKFLOW_NAME,
    FleetOperation,
    StoreSettings,
    StoreState,
    Submitted,
    encode_operations,
    workflow_id,
)
from ._worker import DEFAULT_TASK_QUEUE

__all__ = ["Invalid", "SubmitReport", "stop", "submit"]

DEFAULT_CHUNK_BYTES = 256 * 1024  # a drain holds one chunk in memory, and re-reads it per attempt
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


def _chunks(ops: list[FleetOperation], size: int, max_bytes: int) -> list[tuple[int, bytes]]:
    """The operations cut into chunks of at most ``size`` operations and about ``max_bytes``: each as
    its count and its operations encoded."""
    chunks: list[tuple[int, bytes]] = []
    current: list[FleetOperation] = []
    current_bytes = 0
    for op in ops:
        op_bytes = len(msgspec.json.encode(op.body)) + 100
        if current and (len(current) >= size or current_bytes + op_bytes > max_bytes):
            chunks.append((len(current), encode_operations(current)))
            current, current_bytes = [], 0
        current.append(op)
        current_bytes += op_bytes
    if current:
        chunks.append((len(current), encode_operations(current)))
    return chunks


async def submit(
    temporal: Client,
    database: FleetDatabase,
    operations: Iterable[Operation | Invalid],
    *,
    app: str = "default",
    task_queue: str = DEFAULT_TASK_QUEUE,
    submission: str | None = None,
    settings: StoreSettings | None = None,
    chunk_size: int = DEFAULT_FLEET_CHUNK_SIZE,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    on_invalid: Callable[[Invalid], None] | None = None,
) -> SubmitReport:
    """Validate ``operations``, record them in ``database`` and hand them to their stores' workflows;
    returns once all are queued. Rows refused here, and the ``Invalid`` rows among ``operations`` (a
    reader's), are recorded as results (outcome ``invalid``), numbered in the order they came.

    ``settings`` apply to the drains of this submission's chunks (and to a store workflow this call
    starts); without them a chunk drains as its store workflow was started. ``submission`` names
    it: its id is then ``NAME@`` and a digest of its validated rows (``report.submission``), so the
    same content again is the same submission (submitted again once done, it sends again what is
    not ok, the ledger skipping what the store holds), and other content is another submission.
    """
    if submission is not None and (not submission or "@" in submission):
        raise ConfigError(
            f"a submission name must not be empty or contain '@', which parts the name from its content's "
            f"digest (got {submission!r})"
        )
    report = SubmitReport(submission or uuid.uuid4().hex[:12])
    by_store: dict[str, list[FleetOperation]] = {}
    refused: list[tuple[int, Invalid]] = []
    for seq, op in enumerate(operations):
        if isinstance(op, Invalid):
            invalid = op
        else:
            store = op.store if isinstance(op.store, str) else op.store.handle
            try:
                fleet_op = _fleet_operation(op, seq)
                by_store.setdefault(store, []).append(fleet_op)
                continue
            except (ValidationError, ConfigError) as exc:
                line, key = _line_and_key(op, seq)
                invalid = Invalid(line, key, store, error_text(exc))
        refused.append((seq, invalid))
        report.invalid.append(invalid)
        if on_invalid is not None:
            on_invalid(invalid)
    if submission is not None:
        # A name stands for its content: the same content again is the same submission (a retried
        # submit sends nothing twice); other content under the same name is a new one
        report.submission = f"{submission}@{_content_digest(by_store)}"

    chunks = {store: _chunks(ops, chunk_size, chunk_bytes) for store, ops in by_store.items()}
    invalid_rows = [
        ResultRow.refused(i.message, line=i.line, key=i.key, store=i.store, submission=report.submission, seq=seq)
        for seq, i in refused
    ]
    round_ = await database.add_submission(app, report.submission, chunks, invalid_rows)

    gate = asyncio.Semaphore(_SIGNALS_AT_ONCE)
    state_settings = settings or StoreSettings()

    async def signal_store(store: str) -> None:
        async with gate:
            await temporal.start_workflow(
                WORKFLOW_NAME,
                StoreState(app, store, state_settings),
                id=workflow_id(app, store),
                task_queue=task_queue,
                start_signal=SUBMIT_SIGNAL,
                start_signal_args=[Submitted(report.submission, len(chunks[store]), settings, round_)],
            )

    await asyncio.gather(*(signal_store(store) for store in chunks))
    report.operations = sum(len(ops) for ops in by_store.values())
    report.chunks = sum(len(c) for c in chunks.values())
    report.stores = set(chunks)
    return report


def _content_digest(by_store: dict[str, list[FleetOperation]]) -> str:
    digest = hashlib.blake2b(digest_size=4)
    for store in sorted(by_store):
        digest.update(msgspec.json.encode([store, by_store[store]]))
    return digest.hexdigest()


async def stop(temporal: Client, *, app: str = "default", store: str | None = None) -> list[str]:
    """Ask ``app``'s running store workflows (or ``store``'s only) to end once the chunk they drain
    is done; their queued chunks are reported not sent. Returns the stores asked. The next submit
    to a store starts its workflow again."""
    prefix = workflow_id(app, "")
    if store is not None:
        ids = [workflow_id(app, store)]
    else:
        query = f'WorkflowType = "{WORKFLOW_NAME}" AND ExecutionStatus = "Running"'
        ids = [e.id async for e in temporal.list_workflows(query) if e.id.startswith(prefix)]
    gate = asyncio.Semaphore(_SIGNALS_AT_ONCE)

    async def ask(wid: str) -> str | None:
        async with gate:
            try:
                await temporal.get_workflow_handle(wid).signal(STOP_SIGNAL)
            except RPCError as exc:
                if exc.status == RPCStatusCode.NOT_FOUND:  # not running: nothing to stop
                    return None
                raise
            return wid[len(prefix) :]

    return sorted(s for s in await asyncio.gather(*(ask(wid) for wid in ids)) if s is not None)
