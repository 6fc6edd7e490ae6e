"""Run many product and image updates concurrently, one result per operation.

Shape (after aiometer's run_on_each, without its fail-fast): a dispatcher pulls operations
lazily from any iterable or async iterable, prepares each through its store's resource
(``store.products.prepare()``: an invalid one becomes a result at once, costing no request)
and queues it in its store's lane. A lane runs as many workers as it has queued operations, up
to the store's ``max_in_flight``, and each sends through the resource's public ``send()``. The
cap on requests in flight across stores (``concurrency``) is taken only once the store's own
limiter has admitted an attempt, so a store waiting for its pacer or a cool-down holds no slot
and never delays another store. After a response that says a store cannot be written (401,
402, 403, 423, 433-436) the rest of that store's operations are not sent.

Memory stays flat however long the input: at most ``max_pending`` operations, and about
``max_pending_bytes`` of encoded bodies, are taken from the input and not yet reported.
"""

from __future__ import annotations

import asyncio
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
    STORE_STOPPING_STATUSES,
)
from ._errors import (
    APIError,
    APIStatusError,
    AppliedWithoutBodyError,
    ClientClosedError,
    ConfigError,
    ShoplineError,
    StoreUnavailableError,
)
from ._ledger import Ledger, LedgerEntry, body_hash
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

_DISPATCH_BATCH = 32
_READ_AHEAD = 256
# a worker leaves a lane whose store would hold its next request longer than this (seconds); the
# lane's timer starts the next worker this long before the store admits
_PARK_AFTER = 0.05
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


async def _no_worker(lane: _Lane | None, holding: bool) -> None:  # pragma: no cover - replaced per batch
    raise RuntimeError("no batch is running")


class _Run:
    """One batch's shared state: the cap across stores and the counts the workers keep."""

    __slots__ = ("concurrency", "granted", "in_flight", "queued", "slots", "spawn_scheduled", "stopping", "workers")

    def __init__(self, concurrency: int) -> None:
        self.concurrency = concurrency
        self.queued = 0
        """Operations in the lanes' queues, not yet taken by a worker."""
        self.workers = _Workers(_no_worker)
        """The batch's worker tasks (and the lanes parked without one)."""
        self.slots = Slots(concurrency)
        """The batch's ``concurrency``, first come first served: workers waiting for a slot and
        lanes waiting for a worker (a claim, no task) share one queue, so a store that was
        waiting first goes first, whatever the order of the input."""
        self.stopping = False
        self.in_flight = 0
        self.granted: deque[_Lane] = deque()
        """Lanes whose claim was given a slot, waiting for a worker: one that runs out of work
        takes the next (one task for many short lanes), else a new one starts."""
        self.spawn_scheduled = False

    def slot_now(self, holding: bool, delay: float | None) -> bool | None:
        """Whether a worker's next request goes holding a slot of the batch for its first attempt
        (``holding``: the worker has one already; ``delay``: its store's ``admission_delay()``
        now), or None: it must first ``await wait_for_slot()``.

        Taken here, before the request is built, not at the gate after: a request waiting for a
        slot keeps its objects alive across garbage collections, which then promote and walk them
        again and again (benchmarks/README.md, many stores). But a request about to wait for its
        store's pacer or cool-down must not hold one: it goes without, and takes one at the gate
        once its store has admitted it.
        """
        if delay != 0.0:
            if holding:
                self.slots.give()
            return False
        return True if holding or self.slots.try_take() else None

    async def wait_for_slot(self, store: Store) -> bool:
        """Wait for a slot (``slot_now`` said None); whether the request goes holding it."""
        await self.slots.take()
        if store.admission_delay() != 0.0:  # the wait may have let its store fill up
            self.slots.give()
            return False
        return True

    async def read_on(self) -> None:
        """Let the workers just started run before the dispatcher reads more input; and while a
        full round of work that could start now (``concurrency``) is queued for a slot, wait.

        Reading on then would only prepare operations that wait, their bodies gone cold by the time
        they are sent (benchmarks/README.md, many stores). But not while operations are queued
        behind others of their store (``queued`` beyond the lanes queued for a slot): in input
        sorted by store their pacers hold them, and reading on starts other stores' pacers sooner.
        """
        if self.slots.waiting >= self.concurrency and self.queued <= self.slots.waiting:
            await self.slots.fewer_waiting(self.concurrency)
        else:
            await asyncio.sleep(0)

    def grant(self, lane: _Lane) -> None:
        self.granted.append(lane)
        # looked at once the loop comes round, not now: the worker that gave the slot usually runs
        # out of work on its own lane a moment later, and takes this one instead of a new task
        if not self.spawn_scheduled:
            self.spawn_scheduled = True
            asyncio.get_running_loop().call_soon(self._spawn_granted)

    def _spawn_granted(self) -> None:
        self.spawn_scheduled = False
        while self.granted:
            self.workers.start(self.granted.popleft(), True)


class _Lane:
    """One store's queue of prepared operations and the workers draining it.

    A lane grows a worker only when every one it has is admitted (its request passed the store's
    limiter and the batch's cap): a worker still waiting will take the next item itself. Nor while
    its store would hold another request (its pacer, a cool-down): the lane looks again when the
    pacer is due. A worker whose store would hold its next request for longer than ``_PARK_AFTER``
    leaves the lane (for another lane, or to end) and the lane waits on a timer, costing no task,
    until ``_WAKE_EARLY`` before its store admits; the worker it then starts waits the rest in the
    store's pacer, which so keeps its reservation and its exact rate. A new worker starts holding a
    slot: while none is free the lane waits for one in the batch's queue as a claim, costing no task.
    """

    __slots__ = ("admitted", "blocked_by", "max_workers", "queue", "store", "wake", "workers")

    def __init__(self, store: Store, max_workers: int) -> None:
        self.store = store
        self.queue: deque[_Item] = deque()
        self.max_workers = max_workers
        self.workers = 0
        self.admitted = 0
        self.blocked_by: APIStatusError | None = None
        self.wake: asyncio.TimerHandle | None = None
        """While set, the lane starts no worker: it looks again when the timer fires."""

    def grow(self, run: _Run) -> None:
        if self.wake is not None or not (
            self.queue and self.workers == self.admitted and self.workers < self.max_workers
        ):
            return
        delay = self.store.admission_delay() if self.workers else 0.0
        if delay != 0.0:
            # Its store would hold another request now (the pacer, a cool-down, its in-flight
            # cap) and a worker of its own will take the next item anyway: a second one would
            # only wait, a task per store. Look again when the store admits, if it is still busy.
            if delay is not None:
                self._look_again(run, delay)
            return
        self.workers += 1  # counted from the claim on, so that one claim is made at a time
        if run.slots.claim(lambda: self._slot_given(run)):
            run.workers.start(self, True)

    def park(self, run: _Run, delay: float | None) -> bool:
        """Whether a worker about to take the next item should leave the lane instead: its store
        would hold the request ``delay`` seconds, longer than ``_PARK_AFTER``. The lane comes back
        on a timer."""
        if delay is None or delay <= _PARK_AFTER:
            return False
        self.cancel_wake(run)  # a look for a second worker, later than this one
        self._look_again(run, delay - _WAKE_EARLY)
        run.workers.parked.add(self)
        return True

    def cancel_wake(self, run: _Run) -> None:
        if self.wake is not None:
            self.wake.cancel()
            self.wake = None
        run.workers.parked.discard(self)

    def _look_again(self, run: _Run, delay: float) -> None:
        if self.wake is None:
            self.wake = asyncio.get_running_loop().call_later(delay, self._woken, run)

    def _woken(self, run: _Run) -> None:
        self.wake = None
        self.grow(run)  # a parked lane starts its worker (or claims a slot for it) here
        run.workers.unpark(self)

    def _slot_given(self, run: _Run) -> bool:
        if not self.queue or self.wake is not None:  # its workers took the queue, or left it parked
            self.workers -= 1
            return False
        if self.store.admission_delay() != 0.0:
            run.workers.start(self, False)  # it would only wait for its store: the slot goes on
            return False
        run.grant(self)
        return True


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
    holds_slot: bool = False
    """Its worker took a slot of the batch for its first attempt before building the request."""

    async def enter(self) -> None:
        run, lane = self.run, self.lane
        assert run is not None and lane is not None
        if not self.running and (run.stopping or lane.blocked_by is not None):
            if self.holds_slot:
                self.holds_slot = False
                run.slots.give()
            raise _Refused  # a retry of an operation already sent goes on
        if self.holds_slot:
            self.holds_slot = False  # taken by its worker before the request was built
        elif not run.slots.try_take():
            await run.slots.take()
        self.running = True
        run.in_flight += 1
        lane.admitted += 1
        lane.grow(run)

    def exit(self) -> None:
        run, lane = self.run, self.lane
        assert run is not None and lane is not None
        run.in_flight -= 1
        lane.admitted -= 1
        run.slots.give()


class BatchExecutor:
    """Runs operations against a client's stores. Reusable; one batch at a time.

    ``concurrency`` caps requests in flight across all stores (each store's own
    ``RateLimit.max_in_flight`` and rate apply too). ``on_progress`` is called
    after every result. ``stop()`` ends a batch early: nothing new starts,
    queued operations are reported ``not_attempted``, requests in flight finish.

    With a ``ledger``, every write sent is recorded there (``ok`` only after a 2xx), and an
    operation whose target's last acknowledged write had the very same body is not sent: its
    result is ``unchanged``. ``skip_unchanged=False`` sends everything and still records it.
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
        self._run_state.stopping = True

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
        # by Store object: one per handle (client.store() hands out the same one), hashed by identity
        lanes: dict[Store, _Lane] = {}

        ledger = self._ledger
        emit = self._emit

        async def worker(lane: _Lane | None, holds_slot: bool) -> None:
            while lane is not None:
                queue, admission_delay = lane.queue, lane.store.admission_delay
                try:
                    while queue:
                        if run.stopping or lane.blocked_by is not None:
                            item = queue.popleft()
                            run.queued -= 1
                            result = _refused(item, lane)
                        else:
                            delay = admission_delay()  # once per item: for parking and for its slot
                            if delay != 0.0 and lane.park(run, delay):
                                break  # the lane waits on its timer: this worker is free for another
                            item = queue.popleft()
                            run.queued -= 1
                            assert item.resource is not None and item.prepared is not None
                            holding = run.slot_now(holds_slot, delay)
                            item.holds_slot = holding if holding is not None else await run.wait_for_slot(lane.store)
                            holds_slot = False
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
                                    lane.blocked_by = lane.blocked_by or exc
                                result = _result(item, "failed", error=exc, elapsed=time.monotonic() - started)
                            else:
                                result = _result(item, "ok", response=response)
                            if item.holds_slot:  # the request never reached the gate
                                item.holds_slot = False
                                run.slots.give()
                        emit(item, result)
                finally:
                    lane.workers -= 1
                    if holds_slot:
                        run.slots.give()
                lane = run.granted.popleft() if run.granted else None  # one task for many short lanes
                holds_slot = True

        workers = run.workers = _Workers(worker)

        try:
            index = new_workers = 0
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
                    if ledger is not None:
                        item.body_hash = body_hash(item.prepared.body)
                        if self._skip_unchanged:
                            last = ledger.last(item.store.base_url, item.store.handle, item.prepared.path)
                            if last is not None and last.ok and last.body_hash == item.body_hash:
                                emit(item, _unchanged(item, last))
                                continue
                    item.charged = len(item.prepared.body)
                    if not pending_bytes.try_take(item.charged):
                        await pending_bytes.take(item.charged)
                    store = item.store
                    lane = lanes.get(store)
                    if lane is None:
                        lane = lanes[store] = _Lane(store, min(store.rate_limit.max_in_flight, self._concurrency))
                    item.run = run
                    item.lane = lane
                    lane.queue.append(item)
                    run.queued += 1
                    had = lane.workers
                    lane.grow(run)
                    new_workers += lane.workers - had
                    if new_workers >= _DISPATCH_BATCH or index % _READ_AHEAD == 0:
                        # let the new workers start; yielding per item would cost a trip round
                        # the event loop for every operation. Counted in workers, not items: in
                        # input sorted by store, a store's later items start none (they wait for
                        # its pacer), and counting them would reach the last stores late
                        new_workers = 0
                        await run.read_on()
            await workers.wait()
        finally:
            await workers.cancel()
            for lane in lanes.values():
                lane.cancel_wake(run)
            if ledger is not None:
                ledger.commit()
            self._results.put(None)

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
        return item

    def _emit(self, item: _Item, result: AnyResult) -> None:
        """Settle ``item`` with ``result``: recorded in the ledger if sent, counted, handed over."""
        item.result = result
        if item.body_hash is not None and result.attempts and item.store is not None and item.prepared is not None:
            assert self._ledger is not None  # body_hash is set only with one
            store = item.store
            self._ledger.record(
                store.base_url,
                store.handle,
                item.prepared.path,
                result.kind,
                item.body_hash,
                ok=result.ok,
                status=result.status,
                trace_id=result.trace_id,
            )
        self._account(result)
        self._results.put(result)

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


class _Workers:
    """The batch's workers, as plain asyncio tasks: anyio's ``start_soon`` cost about four times
    as much per task here (benchmarks/tasks.py), and a batch over 10,000 stores
    starts tens of thousands. A worker catches every failure of its operations; one that crashes
    anyway is re-raised by ``wait()`` once the others are done. ``wait()`` also waits for the
    lanes ``parked`` on a timer with work queued: each will start a worker when it fires."""

    def __init__(self, worker: Callable[[_Lane | None, bool], Coroutine[Any, Any, None]]) -> None:
        self._worker = worker
        self._tasks: set[asyncio.Task[None]] = set()
        self.parked: set[_Lane] = set()
        self._all_done: asyncio.Future[None] | None = None
        self._crashed: BaseException | None = None
        self._closed = False

    def start(self, lane: _Lane, holding: bool) -> None:
        """A worker task for ``lane`` (already counted in its ``workers``), holding a slot or not."""
        if self._closed:  # a slot given, or a lane's timer due, once the batch has ended: start nothing
            return
        task = asyncio.get_running_loop().create_task(self._worker(lane, holding))
        self._tasks.add(task)
        task.add_done_callback(self._finished)

    def unpark(self, lane: _Lane) -> None:
        self.parked.discard(lane)
        self._check_done()

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None and self._crashed is None:
            self._crashed = task.exception()
        self._check_done()

    def _check_done(self) -> None:
        if not self._tasks and not self.parked and self._all_done is not None and not self._all_done.done():
            self._all_done.set_result(None)

    async def wait(self) -> None:
        if self._tasks or self.parked:
            self._all_done = asyncio.get_running_loop().create_future()
            await self._all_done
        if self._crashed is not None:
            raise self._crashed

    async def cancel(self) -> None:
        """Cancel the workers left (the batch was cancelled) and wait for them to end."""
        self._closed = True
        if not self._tasks:
            return
        for task in self._tasks:
            task.cancel()
        with anyio.CancelScope(shield=True):  # the batch's own scope is cancelled: wait regardless
            await asyncio.gather(*self._tasks, return_exceptions=True)


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
