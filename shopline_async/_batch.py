"""Run many product and image updates concurrently, one result per operation.

Shape (after aiometer's run_on_each, without its fail-fast): a dispatcher pulls operations
lazily from any iterable or async iterable, prepares each through its store's resource
(``store.products.prepare()``: an invalid one becomes a result at once, costing no request)
and queues it in its store's lane. A lane whose store would admit a request now joins one
first-come queue of ready lanes; workers, each started with one of the ``concurrency`` places
for requests in flight, take lanes from it one operation at a time and send through the
resource's public ``send()``. A place is held only by an attempt its store's own limiter admits,
so a store waiting for its pacer or a cool-down holds none and never delays another store.
After a response that says a store cannot be written (401, 402, 403, 423, 433-436) the rest of
that store's operations are not sent.

Memory stays flat however long the input: at most ``max_pending`` operations, and about
``max_pending_bytes`` of encoded bodies, are taken from the input and not yet reported.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import Counter, deque
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    AsyncIterator,
    Callable,
    Coroutine,
    Hashable,
    Iterable,
    Mapping,
)
from contextlib import AbstractAsyncContextManager, aclosing, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, Literal, TypeVar, overload

import anyio
import msgspec
from msgspec.structs import replace

from ._channels import ByteBudget, Channel, Slots
from ._client import ShoplineClient, Store
from ._config import RetryPolicy
from ._constants import (
    DEFAULT_BATCH_CONCURRENCY,
    DEFAULT_MAX_PENDING,
    DEFAULT_MAX_PENDING_BYTES,
    LOGGER_NAME,
    STORE_STOPPING_STATUSES,
)
from ._errors import (
    APIError,
    APIStatusError,
    AppliedWithoutBodyError,
    ClientClosedError,
    ConfigError,
    FieldError,
    ShoplineError,
    StoreUnavailableError,
    ValidationError,
)
from ._ledger import Ledger, LedgerEntry, LedgerError, body_hash
from ._resources import Images, Products
from ._response import Response
from ._transport import PreparedRequest
from .models._image import ImageUpdate, ProductImage
from .models._product import Product, ProductUpdate

__all__ = [
    "BatchExecutor",
    "BatchReport",
    "BatchSummary",
    "Operation",
    "Progress",
    "Result",
    "UpdateImage",
    "UpdateProduct",
]

logger = logging.getLogger(LOGGER_NAME)

_DISPATCH_BATCH = 32
_READ_AHEAD = 256
# a lane whose store would hold its next request longer than this (seconds) waits on a timer, and
# is offered to the workers this long before its store admits
_WAKE_EARLY = 0.02

Outcome = Literal["ok", "applied_without_body", "unchanged", "failed", "invalid", "not_attempted", "cancelled"]


class UpdateProduct(msgspec.Struct, frozen=True):
    """Update (upsert) one product in one store. ``key`` comes back in the result (default: product_id)."""

    store: str | Store
    product_id: str
    product: ProductUpdate | Mapping[str, Any]
    key: Hashable = None

    kind: ClassVar[str] = "product"


class UpdateImage(msgspec.Struct, frozen=True):
    """Update one product image in one store. ``key`` comes back in the result (default: image_id)."""

    store: str | Store
    product_id: str
    image_id: str
    image: ImageUpdate | Mapping[str, Any]
    key: Hashable = None

    kind: ClassVar[str] = "image"


Operation = UpdateProduct | UpdateImage
# what a result's ``data`` is: the product for an UpdateProduct, the image for an UpdateImage
ModelT = TypeVar("ModelT", bound=Product | ProductImage, covariant=True)


class Result(msgspec.Struct, Generic[ModelT], frozen=True, kw_only=True):
    """What became of one operation.

    ``outcome``: ``ok``; ``applied_without_body`` (a 2xx, so written, but the answer was ``{}``
    or ``{"product": null}``: ``data`` is None, ``ok`` is true); ``unchanged`` (not sent: the
    executor's ledger shows this very body acknowledged for this target before; ``status`` and
    ``trace_id`` are that write's, and ``ok`` is true); ``failed`` (the API or the network said
    no; with ``attempts == 0`` it was not sent, because an earlier response showed that its
    store cannot be written: ``error`` is then a StoreUnavailableError carrying that response's status and trace id);
    ``invalid`` (refused before sending); ``not_attempted`` (the batch stopped first);
    ``cancelled`` (stopped mid-request: it may or may not have been applied). ``trace_id`` is
    the final attempt's, ``trace_ids`` every attempt's.
    """

    index: int
    key: Hashable
    store: str
    kind: str
    outcome: Outcome
    data: ModelT | None = None
    error: Exception | None = None
    status: int | None = None
    trace_id: str | None = None
    trace_ids: tuple[str, ...] = ()
    attempts: int = 0
    elapsed: float = 0.0
    network_time: float = 0.0

    @property
    def ok(self) -> bool:
        """The target holds this update: written now, or found unchanged in the ledger."""
        return self.outcome == "ok" or self.outcome == "unchanged" or self.outcome == "applied_without_body"


AnyResult = Result[Product | ProductImage]


@dataclass(frozen=True, slots=True)
class Progress:
    """Counts for a progress bar: taken from the input, finished ok, finished otherwise, in flight."""

    taken: int
    done: int
    failed: int
    in_flight: int


@dataclass
class BatchSummary:
    """Totals of a batch. Latency percentiles, in seconds, are of time on the network per attempted
    operation (all its attempts, not the waits for the rate limiter or between retries)."""

    total: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    statuses: Counter[int] = field(default_factory=Counter)
    retries: int = 0
    rate_limited: int = 0
    elapsed: float = 0.0
    p50: float = 0.0
    p95: float = 0.0
    p99: float = 0.0

    @property
    def throughput(self) -> float:
        """Operations finished per second of wall time."""
        return self.total / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def ok(self) -> int:
        """Written now: ``ok`` and ``applied_without_body``."""
        return self.outcomes["ok"] + self.outcomes["applied_without_body"]

    @property
    def unchanged(self) -> int:
        """Skipped: the ledger showed the same body already acknowledged."""
        return self.outcomes["unchanged"]

    @property
    def failed(self) -> int:
        return self.total - self.ok - self.unchanged


@dataclass
class BatchReport(Generic[ModelT]):
    """Every result in input order, and the summary."""

    results: list[Result[ModelT]]
    summary: BatchSummary


class _Histogram:
    """Latency percentiles in constant memory: 2% wide logarithmic buckets from 0.1 ms."""

    _BASE = 1.02
    _FLOOR = 1e-4
    _PER_LOG = 1 / math.log(_BASE)  # one log per sample instead of the two of math.log(x, base)

    def __init__(self) -> None:
        self._counts: Counter[int] = Counter()

    def add(self, seconds: float) -> None:
        bucket = int(math.log(seconds / self._FLOOR) * self._PER_LOG) + 1 if seconds > self._FLOOR else 0
        self._counts[bucket] += 1

    def quantile(self, q: float) -> float:
        rank = q * self._counts.total()
        seen = 0
        for bucket in sorted(self._counts):
            seen += self._counts[bucket]
            if seen >= rank:
                return self._FLOOR * self._BASE**bucket
        return 0.0  # no samples


async def _no_worker() -> None:  # pragma: no cover - replaced per batch
    raise RuntimeError("no batch is running")


class _Run:
    """One batch's scheduling: the lanes ready for a worker, the cap across stores, the workers.

    A worker is a plain asyncio task (anyio's ``start_soon`` cost about four times as much per task
    here, benchmarks/tasks.py) started holding a slot of ``concurrency``. It takes the first lane
    in ``ready`` (first come, first served across stores, whatever the order of the input), sends
    that lane's next operation, and goes on to the next ready lane if it can take a slot again, or
    ends: tasks in proportion to the work that can start now, never one per store. A worker crashed
    by a bug is re-raised by ``wait()`` once the others are done.
    """

    __slots__ = (
        "_all_done",
        "_crashed",
        "closed",
        "coming",
        "concurrency",
        "in_flight",
        "parked",
        "queued",
        "reader",
        "ready",
        "slots",
        "start_scheduled",
        "stopping",
        "tasks",
        "worker",
    )

    def __init__(self, concurrency: int) -> None:
        self.concurrency = concurrency
        self.slots = Slots(concurrency)
        """Requests in flight across stores. Taken by a worker for an operation its store admits now
        (before the request is built), else at the gate once its store has admitted it: a request
        waiting for its store's pacer or cool-down holds none, and never delays another store."""
        self.ready: deque[_Lane] = deque()
        """Lanes with an operation that could start now, waiting for a worker."""
        self.coming = 0
        """Workers on their way to take a lane from ``ready``: started and not yet running, or
        going on from their last operation, holding a slot."""
        self.queued = 0
        """Operations in the lanes' queues, not yet taken by a worker."""
        self.parked: set[_Lane] = set()
        """Lanes waiting on a timer for their store to admit."""
        self.reader: asyncio.Future[None] | None = None
        """Set while the dispatcher waits for ``ready`` to shorten."""
        self.in_flight = 0
        self.stopping = False
        self.closed = False
        self.worker: Callable[[], Coroutine[Any, Any, None]] = _no_worker
        self.tasks: set[asyncio.Task[None]] = set()
        self.start_scheduled = False
        self._crashed: BaseException | None = None
        self._all_done: asyncio.Future[None] | None = None

    def next_lane(self) -> _Lane | None:
        """For a worker that is ``coming``: the first ready lane, or None."""
        self.coming -= 1
        if not self.ready:
            return None
        lane = self.ready.popleft()
        lane.ready = False
        if self.reader is not None and len(self.ready) < self.concurrency and not self.reader.done():
            self.reader.set_result(None)
        return lane

    def start_workers(self) -> None:
        """A worker, holding a slot, for each ready lane that none is coming for, while slots are free."""
        while len(self.ready) > self.coming and not self.closed and self.slots.try_take():
            self.coming += 1
            task = asyncio.get_running_loop().create_task(self.worker())
            self.tasks.add(task)
            task.add_done_callback(self._finished)

    def give_slot(self) -> None:
        self.slots.give()
        # workers start once the loop comes round, not now: the worker that gave the slot usually
        # takes it back for the next ready lane a moment later, and no new task is needed
        if self.ready and self.slots.free and not self.start_scheduled:
            self.start_scheduled = True
            asyncio.get_running_loop().call_soon(self._start_later)

    def _start_later(self) -> None:
        self.start_scheduled = False
        self.start_workers()

    def read_ahead_full(self) -> bool:
        """Whether the dispatcher should stop reading input for now: a full round of work that could
        start now (``concurrency`` lanes) waits for a worker.

        Reading on then would only prepare operations that wait, their bodies gone cold by the time
        they are sent (benchmarks/README.md, many stores). But not while operations are queued
        behind others of their store (``queued`` beyond the ready lanes): in input sorted by store
        their pacers hold them, and reading on starts other stores' pacers sooner.
        """
        ready = len(self.ready)
        return ready >= self.concurrency and self.queued <= ready

    async def fewer_ready(self) -> None:
        """Until a worker has taken a ready lane and fewer than ``concurrency`` are left."""
        self.reader = asyncio.get_running_loop().create_future()
        try:
            await self.reader
        finally:
            self.reader = None

    def stop(self) -> None:
        self.stopping = True
        for lane in list(self.parked):  # their operations are turned away now, not when their store is due
            lane.cancel_wake(self)
            lane.offer(self)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None and self._crashed is None:
            self._crashed = task.exception()
        self.check_done()

    @property
    def busy(self) -> bool:
        """Workers running, or lanes that will want one: on a timer, or ready."""
        return bool(self.tasks or self.parked or self.ready)

    def check_done(self) -> None:
        if self._all_done is not None and not self.busy and not self._all_done.done():
            self._all_done.set_result(None)

    async def wait(self) -> None:
        """Until every operation queued has its result (the input has ended)."""
        if self.busy:
            self._all_done = asyncio.get_running_loop().create_future()
            await self._all_done
        if self._crashed is not None:
            raise self._crashed

    async def cancel(self) -> None:
        """Start nothing more; cancel the workers left (the batch was cancelled) and wait for them to end."""
        self.closed = True
        for lane in list(self.parked):
            lane.cancel_wake(self)
        if not self.tasks:
            return
        for task in self.tasks:
            task.cancel()
        with anyio.CancelScope(shield=True):  # the batch's own scope is cancelled: wait regardless
            await asyncio.gather(*self.tasks, return_exceptions=True)


class _Lane:
    """One store's queue of prepared operations.

    It is offered to the workers (``run.ready``) while it holds an operation that could start now:
    every one it has under way already admitted by its store's limiter (one still waiting goes
    first; a second would only wait behind it), fewer under way than its store's ``max_in_flight``,
    and its store would not hold another request longer than ``_WAKE_EARLY``. If it would (its
    pacer, a cool-down), the lane waits on a timer, costing no task, until ``_WAKE_EARLY`` before
    its store admits; the worker that then takes it waits the rest in the store's pacer, which so
    keeps its reservation and its exact rate.
    """

    __slots__ = ("active", "admitted", "blocked_by", "max_active", "queue", "ready", "store", "wake")

    def __init__(self, store: Store, max_active: int) -> None:
        self.store = store
        self.queue: deque[_Item] = deque()
        self.max_active = max_active
        self.active = 0
        """Operations taken by a worker and not yet finished."""
        self.admitted = 0
        """Of those, the ones whose current attempt passed the store's limiter and the batch's gate."""
        self.ready = False
        self.blocked_by: APIStatusError | None = None
        self.wake: asyncio.TimerHandle | None = None

    def offer(self, run: _Run) -> None:
        """Into ``run.ready`` if it holds an operation that could start now; else on a timer, or
        left to one of its operations under way, which offers it again once admitted or done."""
        if self.ready or self.wake is not None or not self.queue:
            return
        if not (run.stopping or self.blocked_by is not None):  # else its operations are turned away at once
            if self.active and (self.active != self.admitted or self.active >= self.max_active):
                return
            delay = self.store.admission_delay()
            if delay is None:  # the store's max_in_flight requests are all under way
                if self.active:
                    return  # its own: one ending offers the lane again
                delay = 0.0  # requests from outside the batch: the worker waits in the limiter for one to end
            if delay > _WAKE_EARLY:
                self.wake = asyncio.get_running_loop().call_later(delay - _WAKE_EARLY, self._woken, run)
                run.parked.add(self)
                return
        self.ready = True
        run.ready.append(self)
        if len(run.ready) > run.coming:  # no worker on its way for it
            run.start_workers()

    def block(self, error: APIStatusError) -> None:
        """The store answered that it cannot be written: its operations not yet sent never will be."""
        if self.blocked_by is None:
            self.blocked_by = error
            logger.warning(
                "store %s: HTTP %d (traceId=%s): it cannot be written, its other operations are not sent",
                self.store.handle,
                error.status,
                error.trace_id,
            )

    def cancel_wake(self, run: _Run) -> None:
        if self.wake is not None:
            self.wake.cancel()
            self.wake = None
        run.parked.discard(self)

    def _woken(self, run: _Run) -> None:
        self.wake = None
        run.parked.discard(self)
        self.offer(run)
        run.check_done()


class _Refused(Exception):
    """Raised by an item's gate: the batch is stopping, or the store cannot be written."""


class _Item(msgspec.Struct):
    """One operation taken from the input; also the Gate its attempts pass through."""

    index: int
    op: Any
    key: Hashable = None
    store_name: str = ""
    """The store as the operation named it: what every result reports, whatever its outcome."""
    store: Store | None = None
    run: _Run | None = None
    lane: _Lane | None = None
    resource: Products | Images | None = None
    prepared: PreparedRequest[Any] | None = None
    error: ShoplineError | None = None
    running: bool = False
    """Handed to the sender at least once: it may have been applied."""
    result: AnyResult | None = None
    charged: int = 0
    """Bytes of ``max_pending_bytes`` it holds until its result is handed over."""
    body_hash: bytes | None = None
    """With a ledger: the hash recorded for the body once its result is known."""
    intent: int = 0
    """With a ledger: the number of the intent recorded before it is sent (0: none, not to be sent)."""
    before: LedgerEntry | None = None
    """With a ledger: its target's entry before the intent, restored if it is not sent after all."""
    target: tuple[str, str, str] | None = None
    """(base URL, store, path) while it holds its target's turn: the next operation on the target waits for it."""
    holds_slot: bool = False
    """Its worker took a slot of the batch for its first attempt before building the request."""

    async def enter(self) -> None:
        run, lane = self.run, self.lane
        assert run is not None and lane is not None
        if not self.running and (run.stopping or lane.blocked_by is not None):
            if self.holds_slot:
                self.holds_slot = False
                run.give_slot()
            raise _Refused  # a retry of an operation already sent goes on
        if self.holds_slot:
            self.holds_slot = False  # taken by its worker before the request was built
        elif not run.slots.try_take():
            await run.slots.take()
        self.running = True
        run.in_flight += 1
        lane.admitted += 1
        lane.offer(run)  # its next operation may go now

    def exit(self) -> None:
        run, lane = self.run, self.lane
        assert run is not None and lane is not None
        run.in_flight -= 1
        lane.admitted -= 1
        run.give_slot()


class BatchExecutor:
    """Runs operations against a client's stores. Reusable; one batch at a time.

    ``concurrency`` caps requests in flight across all stores (each store's own
    ``RateLimit.max_in_flight`` and rate apply too). ``on_progress`` is called
    after every result. ``stop()`` ends a batch early: nothing new starts,
    queued operations are reported ``not_attempted``, requests in flight finish.

    Operations on one target (the same product, or the same image, in one store) are sent one
    after another in input order, so the last one's body is what the store ends with; other
    targets keep their concurrency.

    With a ``ledger``, every write is recorded there before it is sent (its target's state then
    unknown) and after its answer (``ok`` only after a 2xx), and an operation whose target's last
    acknowledged write had the very same body is not sent: its result is ``unchanged``. The ledger
    decides about an operation only once the one before it on its target is settled.
    ``skip_unchanged=False`` sends everything and still records it. If the ledger cannot be read
    or written, the batch stops (``ledger_error`` says why).
    """

    def __init__(
        self,
        client: ShoplineClient,
        *,
        concurrency: int = DEFAULT_BATCH_CONCURRENCY,
        max_pending: int = DEFAULT_MAX_PENDING,
        max_pending_bytes: int = DEFAULT_MAX_PENDING_BYTES,
        retry: RetryPolicy | None = None,
        on_progress: Callable[[Progress], None] | None = None,
        ledger: Ledger | None = None,
        skip_unchanged: bool = True,
    ) -> None:
        if concurrency < 1 or max_pending < 1 or max_pending_bytes < 1:
            raise ConfigError("concurrency, max_pending and max_pending_bytes must be >= 1")
        self._client = client
        self._concurrency = concurrency
        self._max_pending = max(max_pending, concurrency)
        self._max_pending_bytes = max_pending_bytes
        self._retry = retry
        self._ledger = ledger
        self._skip_unchanged = skip_unchanged
        self._on_progress = on_progress
        self._running = False
        self._reset()

    def _reset(self) -> None:
        self._run_state = _Run(self._concurrency)
        # by Store object: one per handle (client.store() hands out the same one), hashed by identity
        self._lanes: dict[Store, _Lane] = {}
        self._targets: dict[tuple[str, str, str], deque[_Item]] = {}
        """Targets with an operation under way, each with the later operations on it, in input order."""
        self._ledger_error: LedgerError | None = None
        self._taken = 0
        self._open: dict[int, _Item] = {}
        self._results: Channel[AnyResult | None] = Channel()
        self._summary = BatchSummary()
        self._histogram = _Histogram()
        self._started = time.monotonic()
        self._rate_limited_before = self._rate_limited_now()

    def _rate_limited_now(self) -> int:
        return sum(store.rate_limited for store in self._client.stores.values())

    # --- public ----------------------------------------------------------

    def stop(self) -> None:
        """Finish early: take no more input, start nothing new, let requests in flight end."""
        self._run_state.stop()

    @property
    def ledger_error(self) -> LedgerError | None:
        """Why the ledger could not be read or written, if it could not: the batch then stopped as
        ``stop()`` stops it, and sent nothing it could not record first."""
        return self._ledger_error

    @property
    def progress(self) -> Progress:
        outcomes = self._summary.outcomes
        done = outcomes["ok"] + outcomes["applied_without_body"] + outcomes["unchanged"]
        return Progress(self._taken, done, outcomes.total() - done, self._run_state.in_flight)

    def summary(self) -> BatchSummary:
        """Totals so far (final once the batch has ended)."""
        s = self._summary
        s.total = s.outcomes.total()
        s.elapsed = time.monotonic() - self._started
        s.rate_limited = self._rate_limited_now() - self._rate_limited_before
        s.p50, s.p95, s.p99 = (self._histogram.quantile(q) for q in (0.5, 0.95, 0.99))
        return s

    def check(self, operation: Operation) -> ShoplineError | None:
        """What would stop ``operation`` before it is sent (unknown store, invalid input), or None.
        Nothing is sent: this is the batch's own preparation step, for dry runs."""
        return self._prepare(-1, operation).error

    def unreported(self) -> list[AnyResult]:
        """After a batch was cancelled from outside: a result for every operation taken but not reported
        (``cancelled`` if its request was under way, else ``not_attempted``)."""
        return [
            item.result or _result(item, "cancelled" if item.running else "not_attempted")
            for item in sorted(self._open.values(), key=lambda item: item.index)
        ]

    # Typed by input: a batch of product updates gives Result[Product], of image updates
    # Result[ProductImage], of both Result[Product | ProductImage].
    @overload
    def stream(
        self, operations: Iterable[UpdateProduct] | AsyncIterable[UpdateProduct]
    ) -> AbstractAsyncContextManager[AsyncIterator[Result[Product]]]: ...
    @overload
    def stream(
        self, operations: Iterable[UpdateImage] | AsyncIterable[UpdateImage]
    ) -> AbstractAsyncContextManager[AsyncIterator[Result[ProductImage]]]: ...
    @overload
    def stream(
        self, operations: Iterable[Operation] | AsyncIterable[Operation]
    ) -> AbstractAsyncContextManager[AsyncIterator[AnyResult]]: ...
    @asynccontextmanager
    async def stream(
        self, operations: Iterable[Operation] | AsyncIterable[Operation]
    ) -> AsyncIterator[AsyncIterator[Result[Any]]]:
        """Run a batch; yields an async iterator of results in completion order.

        Leaving the block early cancels the batch; ``unreported()`` then lists what was left.
        """
        if self._running:
            raise ConfigError("this BatchExecutor is already running a batch; use one executor per batch")
        if self._client.closed:
            raise ClientClosedError("the client is closed; create a new ShoplineClient")
        self._running = True
        self._reset()
        # asyncio-level primitives (see _channels), not anyio streams: aiohttp ties us to asyncio
        # anyway, and on the per-operation path anyio's checkpoints and cancel scopes cost more.
        # Taken from the input and not yet handed to the caller: bounds memory however long the input
        pending = Slots(self._max_pending)
        pending_bytes = ByteBudget(self._max_pending_bytes)
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._run, operations, pending, pending_bytes)
            try:
                yield _Delivered(self._results, self._open, pending, pending_bytes)
            finally:
                tg.cancel_scope.cancel()
                self._running = False

    @overload
    async def gather(
        self, operations: Iterable[UpdateProduct] | AsyncIterable[UpdateProduct]
    ) -> BatchReport[Product]: ...
    @overload
    async def gather(
        self, operations: Iterable[UpdateImage] | AsyncIterable[UpdateImage]
    ) -> BatchReport[ProductImage]: ...
    @overload
    async def gather(
        self, operations: Iterable[Operation] | AsyncIterable[Operation]
    ) -> BatchReport[Product | ProductImage]: ...
    async def gather(self, operations: Iterable[Operation] | AsyncIterable[Operation]) -> BatchReport[Any]:
        """Run a batch to the end; every result in input order, and the summary."""
        results: list[AnyResult] = []
        async with self.stream(operations) as stream:
            async for result in stream:
                results.append(result)
        results.sort(key=lambda r: r.index)
        return BatchReport(results, self.summary())

    # --- running ---------------------------------------------------------

    async def _run(
        self,
        operations: Iterable[Operation] | AsyncIterable[Operation],
        pending: Slots,
        pending_bytes: ByteBudget,
    ) -> None:
        run = self._run_state
        targets = self._targets
        emit = self._emit

        async def worker() -> None:
            holding = True  # started with a slot, counted in run.coming
            try:
                while (lane := run.next_lane()) is not None:
                    if run.stopping or lane.blocked_by is not None:
                        self._turn_away(lane)
                        run.coming += 1  # on to the next ready lane, with the same slot
                        continue
                    item = lane.queue.popleft()
                    run.queued -= 1
                    if not self._intent_durable(item):  # it could not be recorded, so it is not sent
                        lane.queue.appendleft(item)
                        run.queued += 1
                        self._turn_away(lane)  # the batch is stopping now
                        run.coming += 1
                        continue
                    lane.active += 1
                    assert item.resource is not None and item.prepared is not None
                    # the slot goes with the request if its store admits it now (taken before the
                    # request is built: one waiting for a slot would keep its objects alive across
                    # garbage collections); one about to wait for its store holds none, and takes
                    # one at the gate once admitted
                    item.holds_slot = lane.store.admission_delay() == 0.0
                    if not item.holds_slot:
                        run.give_slot()
                    holding = False
                    started = time.monotonic()
                    # awaited here, not in a helper: each await level is re-entered on every
                    # resume of the request, several times per operation
                    try:
                        response = await item.resource.send(item.prepared, retry=self._retry, gate=item)
                    except _Refused:
                        result = _refused(item, lane)
                    except AppliedWithoutBodyError as exc:
                        result = _result(item, "applied_without_body", applied=exc)
                    except Exception as exc:  # one odd failure must not sink the batch
                        if isinstance(exc, APIStatusError) and exc.status in STORE_STOPPING_STATUSES:
                            lane.block(exc)
                        result = _result(item, "failed", error=exc, elapsed=time.monotonic() - started)
                    else:
                        result = _result(item, "ok", response=response)
                    lane.active -= 1
                    emit(item, result)  # first: it runs the caller's on_progress, which may raise
                    # a slot to go on with (the one given back at the gate, or the one the request
                    # never took there) before the lane is offered: offered first, it would start a
                    # new task for the very lane this worker can take on with
                    holding = item.holds_slot or run.slots.try_take()
                    item.holds_slot = False
                    if holding:
                        run.coming += 1  # and counted as on its way to the next ready lane
                    lane.offer(run)
                    if not holding:
                        break  # a request waiting at the gate was given the slot; its worker goes on
            finally:
                if holding:
                    run.give_slot()

        run.worker = worker

        try:
            index = settled = 0
            async with aclosing(_iterate(operations)) as source:
                async for op in source:
                    if not pending.try_take():
                        await pending.take()
                    item = self._prepare(index, op)
                    index += 1
                    self._taken += 1
                    self._open[item.index] = item
                    if run.stopping:
                        emit(item, _result(item, "not_attempted"))
                        break
                    if item.error is not None:
                        emit(item, _result(item, "invalid", error=item.error))
                        continue
                    assert item.prepared is not None and item.store is not None  # no error: prepared
                    item.charged = len(item.prepared.body)
                    if not pending_bytes.try_take(item.charged):
                        await pending_bytes.take(item.charged)
                    item.target = target = (item.store.base_url, item.store.handle, item.prepared.path)
                    waiting = targets.get(target)
                    if waiting is not None:  # an earlier operation on its target is under way: after it
                        waiting.append(item)
                        continue
                    targets[target] = deque()
                    if not self._admit(item):
                        self._release(target)
                        settled += 1
                        if settled % _DISPATCH_BATCH == 0:
                            # settled at once (unchanged): their results wait for the caller, and the
                            # requests in flight for their answers, until the loop comes round
                            await asyncio.sleep(0)
                        continue
                    if run.read_ahead_full():
                        await run.fewer_ready()
                    elif run.coming >= _DISPATCH_BATCH or index % _READ_AHEAD == 0:
                        # let the new workers start; yielding per item would cost a trip round the
                        # event loop for every operation
                        await asyncio.sleep(0)
            await run.wait()
        finally:
            await run.cancel()
            if self._ledger is not None and self._ledger_error is None:
                self._commit_ledger()
            self._results.put(None)

    def _admit(self, item: _Item) -> bool:
        """Queue ``item``, the first operation on its target not yet settled, for a worker: unless the
        ledger shows its very body acknowledged (it is then settled as ``unchanged``). With a ledger,
        its intent is recorded first. Returns whether it was queued."""
        store, prepared = item.store, item.prepared
        assert store is not None and prepared is not None
        ledger = self._ledger
        if ledger is not None:
            item.body_hash = body_hash(prepared.body)
            unchanged = None
            try:
                item.before = ledger.last(store.base_url, store.handle, prepared.path)
                if self._skip_unchanged and item.before is not None and item.before.ok:
                    unchanged = item.before if item.before.body_hash == item.body_hash else None
                if unchanged is None:
                    item.intent = ledger.intend(
                        store.base_url, store.handle, prepared.path, item.op.kind, item.body_hash
                    )
            except LedgerError as exc:
                self._ledger_failed(exc)
            if item.intent == 0:  # settled now: the caller releases its target
                item.target = None
                self._emit(item, _result(item, "not_attempted") if unchanged is None else _unchanged(item, unchanged))
                return False
        lane = self._lanes.get(store)
        if lane is None:
            lane = self._lanes[store] = _Lane(store, min(store.rate_limit.max_in_flight, self._concurrency))
        run = self._run_state
        item.run = run
        item.lane = lane
        lane.queue.append(item)
        run.queued += 1
        lane.offer(run)
        return True

    def _release(self, target: tuple[str, str, str]) -> None:
        """The operation under way on ``target`` is settled: queue the next one in input order."""
        waiting = self._targets[target]
        while waiting:
            if self._admit(waiting.popleft()):
                return  # its own result releases the next
        del self._targets[target]

    def _intent_durable(self, item: _Item) -> bool:
        """Whether ``item``'s intent is committed, committing now if not: a write leaves only once
        the ledger says its target's state is unknown."""
        ledger = self._ledger
        if ledger is None or item.intent <= ledger.committed_intents:
            return True
        return self._ledger_error is None and self._commit_ledger()

    def _commit_ledger(self) -> bool:
        assert self._ledger is not None
        try:
            self._ledger.commit()
        except LedgerError as exc:
            self._ledger_failed(exc)
            return False
        return True

    def _ledger_failed(self, error: LedgerError) -> None:
        """Storage refused: stop as ``stop()`` does, since what is sent from now on could not be recorded."""
        if self._ledger_error is None:
            self._ledger_error = error
            logger.error("the ledger failed, stopping the batch: %s", error)
        self._run_state.stop()

    def _turn_away(self, lane: _Lane) -> None:
        """Report ``lane``'s queued operations unsent: the batch is stopping, or its store cannot be written."""
        while lane.queue:
            item = lane.queue.popleft()
            self._run_state.queued -= 1
            self._emit(item, _refused(item, lane))

    def _prepare(self, index: int, op: Operation) -> _Item:
        key = getattr(op, "key", None)
        if key is None:  # the default key: what the operation updates
            key = op.image_id if isinstance(op, UpdateImage) else getattr(op, "product_id", None)
        named = getattr(op, "store", "")
        if isinstance(named, Store):
            store: Store | None = named
            item = _Item(index, op, key, named.handle, named)
        else:
            store = self._client.get_store(named) if isinstance(named, str) else None
            item = _Item(index, op, key, str(named), store)
        if store is None:
            item.error = ConfigError(
                f"unknown store {named!r}: no client.store(handle, token) for it (--store or --config in the CLI)"
            )
            return item
        try:
            if isinstance(op, UpdateProduct):
                item.resource = store.products
                item.prepared = store.products.prepare(op.product_id, op.product)
            elif isinstance(op, UpdateImage):
                item.resource = store.images
                item.prepared = store.images.prepare(op.product_id, op.image_id, op.image)
            else:
                raise ConfigError(f"not an operation: {type(op).__name__}")
        except ShoplineError as exc:
            item.error = exc
        except Exception as exc:  # whatever a caller's object does when read: that operation's result
            item.error = ValidationError([FieldError("$", f"cannot be prepared: {type(exc).__name__}: {exc}")])
        return item

    def _emit(self, item: _Item, result: AnyResult) -> None:
        """Settle ``item`` with ``result``: recorded in the ledger if sent, counted, handed over."""
        item.result = result
        if item.intent:
            store, prepared, ledger = item.store, item.prepared, self._ledger
            assert store is not None and prepared is not None and ledger is not None and item.body_hash is not None
            if result.attempts:
                ledger.record(
                    store.base_url,
                    store.handle,
                    prepared.path,
                    result.kind,
                    item.body_hash,
                    ok=result.ok,
                    status=result.status,
                    trace_id=result.trace_id,
                )
            else:  # turned away before it was sent: the store holds what it held
                ledger.withdraw(store.base_url, store.handle, prepared.path, result.kind, item.before)
            if ledger.due and self._ledger_error is None:
                self._commit_ledger()
        self._account(result)
        self._results.put(result)
        if item.target is not None:
            self._release(item.target)

    def _account(self, result: AnyResult) -> None:
        # the least per result: totals, done and failed are derived from the outcomes when asked
        s = self._summary
        s.outcomes[result.outcome] += 1
        if result.attempts:
            if result.status is not None:
                s.statuses[result.status] += 1
            s.retries += result.attempts - 1
            self._histogram.add(result.network_time)
        if self._on_progress is not None:
            self._on_progress(self.progress)


def _unchanged(item: _Item, last: LedgerEntry) -> AnyResult:
    return replace(_result(item, "unchanged"), status=last.status, trace_id=last.trace_id)


def _refused(item: _Item, lane: _Lane) -> AnyResult:
    """The result of an operation turned away before it was ever sent."""
    if lane.blocked_by is not None:
        return _result(item, "failed", error=StoreUnavailableError(item.store_name, lane.blocked_by))
    return _result(item, "not_attempted")  # the batch is stopping


def _result(
    item: _Item,
    outcome: Outcome,
    *,
    response: Response[Any] | None = None,
    error: Exception | None = None,
    applied: AppliedWithoutBodyError | None = None,
    elapsed: float = 0.0,
) -> AnyResult:
    """The one place a Result is made: from the response, from the error, or from neither."""
    status: int | None
    if response is not None:
        status, trace_id, trace_ids = response.status, response.trace_id, response.trace_ids
        attempts, elapsed, network_time = response.attempts, response.elapsed, response.network_time
    elif applied is not None:
        status, trace_id, trace_ids = applied.status, applied.trace_id, tuple(applied.trace_ids)
        attempts, network_time = applied.attempts, applied.network_time
    elif isinstance(error, APIError):
        status, trace_id, trace_ids = error.status, error.trace_id, tuple(error.trace_ids)
        attempts, network_time = error.attempts, error.network_time
    elif isinstance(error, StoreUnavailableError):  # not sent: the facts of the response that stopped the store
        status, trace_id, trace_ids, attempts, network_time = error.status, error.trace_id, (), 0, 0.0
    else:
        status, trace_id, trace_ids, network_time = None, None, (), 0.0
        attempts = 1 if outcome == "failed" else 0  # an unexpected exception from a request under way
    return Result(
        index=item.index,
        key=item.key,
        store=item.store_name,
        kind=getattr(item.op, "kind", "?"),
        outcome=outcome,
        data=response.data if response is not None else None,
        error=error,
        status=status,
        trace_id=trace_id,
        trace_ids=trace_ids,
        attempts=attempts,
        elapsed=elapsed,
        network_time=network_time,
    )


class _Delivered:
    """The results as the caller sees them. A result counts as reported once handed over, so one
    still queued when the batch is cancelled shows up in ``unreported()``; handing it over frees
    its place among the ``max_pending`` operations taken from the input."""

    def __init__(
        self,
        results: Channel[AnyResult | None],
        open_items: dict[int, _Item],
        pending: Slots,
        pending_bytes: ByteBudget,
    ) -> None:
        self._results = results
        self._open = open_items
        self._pending = pending
        self._pending_bytes = pending_bytes

    def __aiter__(self) -> _Delivered:
        return self

    async def __anext__(self) -> AnyResult:
        try:
            result = self._results.get_nowait()
        except IndexError:
            result = await self._results.get()
        if result is None:
            raise StopAsyncIteration
        item = self._open.pop(result.index)
        self._pending.give()
        self._pending_bytes.give(item.charged)
        return result


async def _iterate(operations: Iterable[Operation] | AsyncIterable[Operation]) -> AsyncGenerator[Operation, None]:
    if isinstance(operations, AsyncIterable):
        async for op in operations:
            yield op
    else:
        for op in operations:
            yield op
