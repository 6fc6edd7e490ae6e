"""Run many product and image updates concurrently, one result per operation.

Shape (after aiometer's run_on_each, without its fail-fast): a dispatcher
pulls operations lazily from any iterable or async iterable, validates and
encodes each (an invalid one becomes a failed result at once, costing no
request), and routes it to its store's lane. Each store has its own workers,
as many as its ``max_in_flight``, so a slow or rate-limited store never holds
back the others; a global limiter caps concurrency across all stores. The
store's transport applies its rate limit and retries.

Memory stays flat however long the input: at most ``max_pending`` operations
are taken from the input and not yet reported.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Callable, Hashable, Iterable, Mapping
from contextlib import aclosing, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import anyio
import msgspec

from ._channels import Channel, Slots
from ._client import ShoplineClient, Store
from ._codec import decode_image, decode_product
from ._config import RetryPolicy
from ._errors import APIError, ConfigError, ShoplineError
from ._response import Response
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

Outcome = Literal["ok", "failed", "invalid", "not_attempted", "cancelled"]


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


class Result(msgspec.Struct, frozen=True, kw_only=True):
    """What became of one operation.

    ``outcome``: ``ok``; ``failed`` (the API or the network said no);
    ``invalid`` (refused before sending); ``not_attempted`` (the batch stopped
    first); ``cancelled`` (stopped mid-request: it may or may not have been
    applied). ``trace_id`` is the final attempt's, ``trace_ids`` every attempt's.
    """

    index: int
    key: Hashable
    store: str
    kind: str
    outcome: Outcome
    data: Product | ProductImage | None = None
    error: Exception | None = None
    status: int | None = None
    trace_id: str | None = None
    trace_ids: tuple[str, ...] = ()
    attempts: int = 0
    elapsed: float = 0.0
    network_time: float = 0.0

    @property
    def ok(self) -> bool:
        return self.outcome == "ok"


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
        return self.outcomes["ok"]

    @property
    def failed(self) -> int:
        return self.total - self.outcomes["ok"]


@dataclass
class BatchReport:
    """Every result in input order, and the summary."""

    results: list[Result]
    summary: BatchSummary


class _Histogram:
    """Latency percentiles in constant memory: 2% wide logarithmic buckets from 0.1 ms."""

    _BASE = 1.02
    _FLOOR = 1e-4
    _PER_LOG = 1 / math.log(_BASE)  # one log per sample instead of the two of math.log(x, base)

    def __init__(self) -> None:
        self._counts: dict[int, int] = {}
        self.count = 0

    def add(self, seconds: float) -> None:
        bucket = int(math.log(seconds / self._FLOOR) * self._PER_LOG) + 1 if seconds > self._FLOOR else 0
        self._counts[bucket] = self._counts.get(bucket, 0) + 1
        self.count += 1

    def quantile(self, q: float) -> float:
        if not self.count:
            return 0.0
        rank = q * self.count
        seen = 0
        for bucket in sorted(self._counts):
            seen += self._counts[bucket]
            if seen >= rank:
                return self._FLOOR * self._BASE**bucket
        return 0.0  # pragma: no cover - rank <= count always stops the loop


class _Prepared(msgspec.Struct):
    index: int
    op: Operation
    store: Store | None
    key: Hashable = None
    store_name: str = ""
    """The store as the operation named it: what every result reports, whatever its outcome."""
    path: str = ""
    body: bytes = b""
    decode: Callable[[bytes], Any] | None = None
    error: ShoplineError | None = None
    running: bool = False
    result: Result | None = None


class BatchExecutor:
    """Runs operations against a client's stores. Reusable; one batch at a time.

    ``concurrency`` caps requests in flight across all stores (each store's own
    ``RateLimit.max_in_flight`` and rate apply too). ``on_progress`` is called
    after every result. ``stop()`` ends a batch early: nothing new starts,
    queued operations are reported ``not_attempted``, requests in flight finish.
    """

    def __init__(
        self,
        client: ShoplineClient,
        *,
        concurrency: int = 100,
        max_pending: int = 10_000,
        retry: RetryPolicy | None = None,
        on_progress: Callable[[Progress], None] | None = None,
    ) -> None:
        if concurrency < 1 or max_pending < 1:
            raise ConfigError("concurrency and max_pending must be >= 1")
        self._client = client
        self._concurrency = concurrency
        self._max_pending = max(max_pending, concurrency)
        self._retry = retry
        self._on_progress = on_progress
        self._running = False
        self._reset()

    def _reset(self) -> None:
        self._stopping = False
        self._taken = 0
        self._done = 0
        self._failed = 0
        self._in_flight = 0
        self._open: dict[int, _Prepared] = {}
        self._summary = BatchSummary()
        self._histogram = _Histogram()
        self._started = time.monotonic()
        self._rate_limited_before = self._rate_limited_now()

    def _rate_limited_now(self) -> int:
        return sum(s._transport.rate_limited for s in self._client.stores.values())

    # --- public ----------------------------------------------------------

    def stop(self) -> None:
        """Finish early: take no more input, start nothing new, let requests in flight end."""
        self._stopping = True

    @property
    def progress(self) -> Progress:
        return Progress(self._taken, self._done, self._failed, self._in_flight)

    def summary(self) -> BatchSummary:
        """Totals so far (final once the batch has ended)."""
        s = self._summary
        s.elapsed = time.monotonic() - self._started
        s.rate_limited = self._rate_limited_now() - self._rate_limited_before
        s.p50, s.p95, s.p99 = (self._histogram.quantile(q) for q in (0.5, 0.95, 0.99))
        return s

    def check(self, operation: Operation) -> ShoplineError | None:
        """What would stop ``operation`` before it is sent (unknown store, invalid input), or None.
        Nothing is sent: this is the batch's own preparation step, for dry runs."""
        return self._prepare(-1, operation).error

    def unreported(self) -> list[Result]:
        """After a batch was cancelled from outside: a result for every operation taken but not reported
        (``cancelled`` if its request was under way, else ``not_attempted``)."""
        return [
            p.result or self._result(p, "cancelled" if p.running else "not_attempted")
            for p in sorted(self._open.values(), key=lambda p: p.index)
        ]

    @asynccontextmanager
    async def stream(
        self, operations: Iterable[Operation] | AsyncIterable[Operation]
    ) -> AsyncIterator[AsyncIterator[Result]]:
        """Run a batch; yields an async iterator of results in completion order.

        Leaving the block early cancels the batch; ``unreported()`` then lists what was left.
        """
        if self._running:
            raise ConfigError("this BatchExecutor is already running a batch; use one executor per batch")
        self._running = True
        self._reset()
        # asyncio-level primitives (see _channels), not anyio streams: aiohttp ties us to asyncio
        # anyway, and on the per-operation path anyio's checkpoints and cancel scopes cost more
        results: Channel[Result | None] = Channel()
        # taken from the input and not yet handed to the caller: bounds memory however long the input
        pending = Slots(self._max_pending)
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._run, operations, results, pending)
            try:
                yield _Delivered(results, self._open, pending)
            finally:
                tg.cancel_scope.cancel()
                self._running = False

    async def gather(self, operations: Iterable[Operation] | AsyncIterable[Operation]) -> BatchReport:
        """Run a batch to the end; every result in input order, and the summary."""
        results: list[Result] = []
        async with self.stream(operations) as stream:
            async for result in stream:
                results.append(result)
        results.sort(key=lambda r: r.index)
        return BatchReport(results, self.summary())

    # --- running ---------------------------------------------------------

    async def _run(
        self,
        operations: Iterable[Operation] | AsyncIterable[Operation],
        results: Channel[Result | None],
        pending: Slots,
    ) -> None:
        limiter = Slots(self._concurrency)
        # by Store object: one per handle (client.store() hands out the same one), hashed by identity
        lanes: dict[Store, tuple[Channel[_Prepared | None], int]] = {}

        def emit(item: _Prepared, result: Result) -> None:
            item.result = result
            self._account(result)
            results.put(result)

        async def worker(lane: Channel[_Prepared | None]) -> None:
            while (item := await lane.get()) is not None:
                if self._stopping:
                    emit(item, self._result(item, "not_attempted"))
                    continue
                if not limiter.take_now():
                    await limiter.take()
                item.running = True
                self._in_flight += 1
                started = time.monotonic()
                assert item.store is not None and item.decode is not None  # _prepare set both
                try:
                    # the transport straight from here, not through helpers: each await level is
                    # re-entered on every resume, several times per request
                    response: Response[Any] = await item.store._transport.request(
                        "PUT", item.path, item.body, item.decode, retry=self._retry
                    )
                except Exception as exc:  # one odd failure must not sink the batch
                    result = self._failure(item, exc, time.monotonic() - started)
                else:
                    # built here rather than by _result(): its **facts dict and getattr cost 12,000
                    # instructions an operation (callgrind), on the path every success takes
                    result = Result(
                        index=item.index,
                        key=item.key,
                        store=item.store_name,
                        kind=item.op.kind,
                        outcome="ok",
                        data=response.data,
                        status=response.status,
                        trace_id=response.trace_id,
                        trace_ids=response.trace_ids,
                        attempts=response.attempts,
                        elapsed=response.elapsed,
                        network_time=response.network_time,
                    )
                finally:
                    self._in_flight -= 1
                    limiter.give()
                emit(item, result)

        try:
            async with anyio.create_task_group() as tg:
                try:
                    index = 0
                    async with aclosing(_iterate(operations)) as source:
                        async for op in source:
                            if not pending.take_now():
                                await pending.take()
                            item = self._prepare(index, op)
                            index += 1
                            self._taken += 1
                            self._open[item.index] = item
                            if self._stopping:
                                emit(item, self._result(item, "not_attempted"))
                                break
                            if item.error is not None or item.store is None:
                                emit(item, self._result(item, "invalid", error=item.error))
                                continue
                            store = item.store
                            if store not in lanes:
                                workers = min(store.rate_limit.max_in_flight, self._concurrency)
                                lane: Channel[_Prepared | None] = Channel()
                                lanes[store] = (lane, workers)
                                for _ in range(workers):
                                    tg.start_soon(worker, lane)
                            lane, workers = lanes[store]
                            lane.put(item)
                            if index % _DISPATCH_BATCH == 0:
                                # let the workers start on what is queued; yielding per item would
                                # cost a trip round the event loop for every operation
                                await asyncio.sleep(0)
                finally:
                    for lane, workers in lanes.values():
                        for _ in range(workers):
                            lane.put(None)
        finally:
            results.put(None)

    def _prepare(self, index: int, op: Operation) -> _Prepared:
        store = self._resolve_store(op)
        key = getattr(op, "key", None)
        if key is None:  # the default key: what the operation updates
            key = op.image_id if isinstance(op, UpdateImage) else getattr(op, "product_id", None)
        named = getattr(op, "store", "")
        item = _Prepared(index, op, store, key, named.handle if isinstance(named, Store) else str(named))
        if store is None:
            item.error = ConfigError(
                f"unknown store {op.store!r}: no client.store(handle, token) for it (--store or --config in the CLI)"
            )
            return item
        try:
            if isinstance(op, UpdateProduct):
                item.path, item.body = store.products.prepare(op.product_id, op.product)
                item.decode = decode_product
            elif isinstance(op, UpdateImage):
                item.path, item.body = store.images.prepare(op.product_id, op.image_id, op.image)
                item.decode = decode_image
            else:
                raise ConfigError(f"not an operation: {type(op).__name__}")
        except ShoplineError as exc:
            item.error = exc
        return item

    def _resolve_store(self, op: Operation) -> Store | None:
        store = getattr(op, "store", None)
        if isinstance(store, Store):
            return store
        if isinstance(store, str):
            return self._client.get_store(store)
        return None

    def _failure(self, item: _Prepared, exc: Exception, elapsed: float) -> Result:
        if isinstance(exc, APIError):
            return self._result(
                item,
                "failed",
                error=exc,
                status=exc.status,
                trace_id=exc.trace_id,
                trace_ids=tuple(exc.trace_ids),
                attempts=exc.attempts,
                elapsed=elapsed,
                network_time=exc.network_time,
            )
        return self._result(item, "failed", error=exc, elapsed=elapsed, attempts=1)

    def _result(self, item: _Prepared, outcome: Outcome, **facts: Any) -> Result:
        return Result(
            index=item.index,
            key=item.key,
            store=item.store_name,
            kind=getattr(item.op, "kind", "?"),
            outcome=outcome,
            **facts,
        )

    def _account(self, result: Result) -> None:
        s = self._summary
        s.total += 1
        s.outcomes[result.outcome] += 1
        if result.status is not None:
            s.statuses[result.status] += 1
        if result.attempts > 1:
            s.retries += result.attempts - 1
        if result.attempts:
            self._histogram.add(result.network_time)
        if result.outcome == "ok":
            self._done += 1
        else:
            self._failed += 1
        if self._on_progress is not None:
            self._on_progress(self.progress)


class _Delivered:
    """The results as the caller sees them. A result counts as reported once handed over, so one
    still queued when the batch is cancelled shows up in ``unreported()``; handing it over frees
    its place among the ``max_pending`` operations taken from the input."""

    def __init__(self, results: Channel[Result | None], open_items: dict[int, _Prepared], pending: Slots) -> None:
        self._results = results
        self._open = open_items
        self._pending = pending

    def __aiter__(self) -> _Delivered:
        return self

    async def __anext__(self) -> Result:
        result = await self._results.get()
        if result is None:
            raise StopAsyncIteration
        del self._open[result.index]
        self._pending.give()
        return result


async def _iterate(operations: Iterable[Operation] | AsyncIterable[Operation]) -> AsyncGenerator[Operation, None]:
    if isinstance(operations, AsyncIterable):
        async for op in operations:
            yield op
    else:
        for op in operations:
            yield op
