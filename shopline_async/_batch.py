"""Run many product and image updates concurrently, one result per operation.

A scheduler of attempts (after aiometer's run_on_each, without its fail-fast). A dispatcher pulls
operations lazily from any iterable or async iterable and prepares each through its store's
resource (an invalid one becomes a result at once, costing no request). An operation goes to its
store's queue (``_schedule``) once the operation before it on the same target (product or image)
is settled, and the store's limiter makes it ready for a worker when it may go.

Exactly ``concurrency`` workers take ready operations first come, first served across stores, send
one attempt each, and apply the retry policy's decision: done (its result), a retry at a later time
(a timer puts it back at the front of its store's queue: it holds no worker, and its store's other
operations go on meanwhile), or, after a 429, a cool-down of the store (its next reservation waits
for it). After an answer that says a store cannot be written (401, 402, 403, 423, 433-436) the rest
of its operations are not sent.

Memory stays flat however long the input: at most ``max_pending`` operations, and about
``max_pending_bytes`` of encoded bodies, are taken from the input and not yet reported.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Callable, Iterable, Iterator
from contextlib import AbstractAsyncContextManager, aclosing, asynccontextmanager
from functools import partial
from typing import Any, Literal, overload

import anyio
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
from ._operations import (
    AnyResult,
    BatchReport,
    BatchSummary,
    Histogram,
    Operation,
    Outcome,
    Progress,
    Result,
    UpdateImage,
    UpdateProduct,
)
from ._response import Response
from ._schedule import Item, Lane, Schedule
from ._transport import Outcome as TransportOutcome
from ._transport import decide
from .models._image import ProductImage
from .models._product import Product

__all__ = ["BatchExecutor"]

logger = logging.getLogger(LOGGER_NAME)

# the dispatcher yields to the event loop after this many operations settled at once (unchanged):
# their results, and the answers of requests in flight, wait for the loop to come round
_SETTLED_BEFORE_YIELD = 32
# operations kept ready for the next free workers while all are busy (benchmarks/README.md, 2026-12-07)
_READY_AHEAD = 4


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
        self._observer = client._settings.observer
        self._batch: Any = None
        """The observer's handle for the batch running (its span), the parent of its operations'."""
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
        self._run_state = Schedule(self._intend, self._refuse)
        self._targets: dict[tuple[str, str, str], deque[Item]] = {}
        """Targets with an operation under way, each with the later operations on it, in input order."""
        self._ledger_error: LedgerError | None = None
        self._settled: asyncio.Future[None] | None = None
        """Set while the input has ended and operations are still unsettled."""
        self._crashed: BaseException | None = None
        self._taken = 0
        self._open: dict[int, Item] = {}
        self._results: Channel[AnyResult | None] = Channel()
        self._summary = BatchSummary()
        self._histogram = Histogram()
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
        skipped = outcomes["not_attempted"]
        return Progress(self._taken, done, outcomes.total() - done - skipped, self._run_state.in_flight, skipped)

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

    def plan(
        self, operations: Iterable[Operation]
    ) -> Iterator[tuple[Operation, Literal["send", "unchanged"] | ShoplineError]]:
        """What a batch would do with each operation, sending nothing: ``send``, ``unchanged`` (its
        ledger entry, or an earlier operation of ``operations`` on its target, has its very body), or
        the error that would make it ``invalid``. The ledger is read, never written."""
        planned: dict[tuple[str, str, str], bytes] = {}
        for op in operations:
            item = self._prepare(-1, op)
            if item.error is not None:
                yield op, item.error
                continue
            assert item.store is not None and item.prepared is not None
            target = (item.store.base_url, item.store.handle, item.prepared.path)
            digest = body_hash(item.prepared.body)
            last = planned.get(target)
            if last is None and self._ledger is not None:
                entry = self._ledger.last(*target)
                last = entry.body_hash if entry is not None and entry.ok else None
            planned[target] = digest
            yield op, "unchanged" if self._skip_unchanged and last == digest else "send"

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
        observer = self._observer
        self._batch = observer.batch_started() if observer is not None else None
        error: BaseException | None = None
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._run, operations, pending, pending_bytes)
                try:
                    yield _Delivered(self._results, self._open, pending, pending_bytes)
                finally:
                    tg.cancel_scope.cancel()
                    self._running = False
        except BaseException as exc:
            error = exc
            raise
        finally:
            if observer is not None:
                for item in self._open.values():  # left unsettled by a batch cut short
                    if item.result is None:
                        observer.operation_finished(item.trace, "cancelled", None, item.tries.attempts, error)
                observer.batch_finished(self._batch, self._summary.outcomes, error)

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
        observer = self._observer
        ready = run.ready

        async def worker() -> None:
            # awaited here, not in helpers: each await level is re-entered on every resume of the
            # request, several times per operation
            while (item := ready.get_nowait() if ready else await ready.get()) is not None:
                lane = item.lane
                assert lane is not None and item.prepared is not None
                limiter, transport, tries = lane.limiter, lane.transport, item.tries
                item.reserved = False  # this attempt uses the reservation, and gives it back
                if not tries.attempts and self._turned_away(item, lane):
                    continue
                queued = time.monotonic() - item.waiting_since
                tries.queued += queued
                item.running = True
                run.in_flight += 1
                try:
                    outcome = await transport.attempt(
                        item.prepared, tries.attempts + 1, operation=item.trace, queued=queued
                    )
                finally:
                    run.in_flight -= 1
                    limiter.release()
                self._decide(item, lane, outcome)

        dispatcher = asyncio.current_task()
        workers = [asyncio.get_running_loop().create_task(worker()) for _ in range(self._concurrency)]
        for task in workers:
            task.add_done_callback(partial(self._worker_done, dispatcher))
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
                    run.unsettled += 1
                    if observer is not None:
                        name, ids = _described(op)
                        item.trace = observer.operation_started(name, item.store_name, ids, self._batch)
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
                        if settled % _SETTLED_BEFORE_YIELD == 0:
                            await asyncio.sleep(0)
                        continue
                    if len(ready) >= _READY_AHEAD and run.waiting <= len(ready):
                        # enough work could start now for the next workers to be free: reading on
                        # would only prepare operations that wait, and keep more objects alive for
                        # the garbage collector to walk. Not while more wait for their stores
                        # (input sorted by store, paced): reading on starts other stores' pacers sooner
                        await ready.drained(_READY_AHEAD)
            if run.unsettled:
                await self._all_settled()
        except asyncio.CancelledError:
            if self._crashed is None:
                raise
            if sys.version_info >= (3, 11) and dispatcher is not None:
                dispatcher.uncancel()
        finally:
            run.closed = True
            for _ in workers:
                ready.put(None)
            self._close(workers)
            with anyio.CancelScope(shield=True):  # the batch's own scope may be cancelled: wait regardless
                await asyncio.gather(*workers, return_exceptions=True)
            for item in self._open.values():  # reservations no attempt used: the store's, not the batch's
                if item.reserved and item.lane is not None:
                    item.reserved = False
                    item.lane.limiter.release()
            if self._ledger is not None and self._ledger_error is None:
                self._commit_ledger()
            self._results.put(None)
        if self._crashed is not None:
            raise self._crashed

    def _worker_done(self, dispatcher: asyncio.Task[Any] | None, task: asyncio.Task[None]) -> None:
        # a bug in a worker (a caller's on_progress that raised, say) ends the batch with it
        if not task.cancelled() and task.exception() is not None and self._crashed is None:
            self._crashed = task.exception()
            if dispatcher is not None:
                dispatcher.cancel()

    async def _all_settled(self) -> None:
        self._settled = asyncio.get_running_loop().create_future()
        try:
            await self._settled
        finally:
            self._settled = None

    def _close(self, workers: list[asyncio.Task[None]]) -> None:
        """No timer fires into the batch any more; workers still under way (cancelled batch) are cancelled."""
        run = self._run_state
        for lane in run.lanes.values():
            lane.close()
        for item in run.retrying.values():
            if item.retry is not None:
                item.retry.cancel()
        run.retrying.clear()
        if run.unsettled:  # cancelled from outside: requests under way are abandoned
            for task in workers:
                task.cancel()

    def _turned_away(self, item: Item, lane: Lane) -> bool:
        """Whether ``item``, never sent, is not to be: the batch stops, its store cannot be written,
        or its intent could not be recorded. If so, it is settled and its reservation given back."""
        if not (self._run_state.stopping or lane.blocked_by is not None or not self._intent_durable(item)):
            return False
        lane.limiter.release()
        self._refuse(item)
        lane.pump()
        return True

    def _decide(self, item: Item, lane: Lane, outcome: TransportOutcome) -> None:
        """After an attempt: the operation's result, or its next attempt scheduled."""
        assert item.prepared is not None
        transport, policy = lane.transport, self._retry or lane.transport.retry
        delay = decide(outcome, item.tries, policy)
        if delay is None:
            item.running = False
            self._emit(item, self._conclude(item, outcome))
        else:
            transport.retrying(item.prepared, outcome, item.tries, delay, policy, item.trace)
            if outcome.status == 429:  # the store cools down: its next reservation waits for it
                lane.limiter.cool_down(delay)
                lane.requeue(item)
            else:  # back in its store's queue once the backoff is over, holding nothing meanwhile
                self._run_state.retrying[item.index] = item
                item.retry = asyncio.get_running_loop().call_later(delay, self._retry_due, item)
        lane.pump()

    def _retry_due(self, item: Item) -> None:
        del self._run_state.retrying[item.index]
        assert item.lane is not None
        item.lane.requeue(item)

    def _conclude(self, item: Item, outcome: TransportOutcome) -> AnyResult:
        """The result of an operation's last attempt."""
        lane = item.lane
        assert lane is not None and item.prepared is not None
        try:
            response = lane.transport.conclude(item.prepared, outcome, item.tries)
        except AppliedWithoutBodyError as exc:
            return _result(item, "applied_without_body", applied=exc)
        except Exception as exc:  # one odd failure must not sink the batch
            if isinstance(exc, APIStatusError) and exc.status in STORE_STOPPING_STATUSES:
                if lane.blocked_by is None and self._observer is not None:
                    self._observer.store_stopped(lane.store.handle, exc.status, exc.trace_id)
                lane.block(exc)
            return _result(item, "failed", error=exc, elapsed=time.monotonic() - item.tries.started)
        return _result(item, "ok", response=response)

    def _admit(self, item: Item) -> bool:
        """Queue ``item``, the first operation on its target not yet settled, in its store's lane:
        unless the ledger shows its very body acknowledged (it is then settled as ``unchanged``).
        Returns whether it was queued."""
        store, prepared = item.store, item.prepared
        assert store is not None and prepared is not None
        ledger = self._ledger
        if ledger is not None:
            item.body_hash = body_hash(prepared.body)
            try:
                item.before = before = ledger.last(store.base_url, store.handle, prepared.path)
            except LedgerError as exc:
                self._ledger_failed(exc)
                before = None
                self._emit_at_once(item, _result(item, "not_attempted"))
                return False
            if self._skip_unchanged and before is not None and before.ok and before.body_hash == item.body_hash:
                self._emit_at_once(item, _unchanged(item, before))
                return False
        item.lane = lane = self._run_state.lane(store)
        # its call starts now: time spent behind an earlier operation on its target is not its own
        item.tries.started = item.waiting_since = time.monotonic()
        lane.queue.append(item)
        self._run_state.waiting += 1
        lane.pump()
        return True

    def _emit_at_once(self, item: Item, result: AnyResult) -> None:
        """Settle ``item`` where it is admitted: its caller releases its target, not ``_emit``."""
        item.target = None
        self._emit(item, result)

    def _refuse(self, item: Item) -> None:
        self._emit(item, _refused(item))

    def _intend(self, item: Item) -> None:
        """With a ledger: ``item``'s target is unknown from now on (its store admitted it), until its
        answer; the intent must be committed before the request leaves (``_intent_durable``)."""
        store, prepared, ledger = item.store, item.prepared, self._ledger
        if ledger is not None and store is not None and prepared is not None and item.body_hash is not None:
            item.intent = ledger.intend(store.base_url, store.handle, prepared.path, item.op.kind, item.body_hash)

    def _release(self, target: tuple[str, str, str]) -> None:
        """The operation under way on ``target`` is settled: queue the next one in input order."""
        waiting = self._targets[target]
        while waiting:
            if self._admit(waiting.popleft()):
                return  # its own result releases the next
        del self._targets[target]

    def _intent_durable(self, item: Item) -> bool:
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

    def _prepare(self, index: int, op: Operation) -> Item:
        key = getattr(op, "key", None)
        if key is None:  # the default key: what the operation updates
            key = op.image_id if isinstance(op, UpdateImage) else getattr(op, "product_id", None)
        named = getattr(op, "store", "")
        if isinstance(named, Store):
            store: Store | None = named
            item = Item(index, op, key, named.handle, named)
        else:
            store = self._client.get_store(named) if isinstance(named, str) else None
            item = Item(index, op, key, str(named), store)
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

    def _emit(self, item: Item, result: AnyResult) -> None:
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
        observer = self._observer
        if observer is not None:
            observer.operation_finished(item.trace, result.outcome, result.trace_id, result.attempts, result.error)
        self._results.put(result)
        if item.target is not None:
            self._release(item.target)
        run = self._run_state
        run.unsettled -= 1
        if not run.unsettled and self._settled is not None and not self._settled.done():
            self._settled.set_result(None)

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


def _unchanged(item: Item, last: LedgerEntry) -> AnyResult:
    return replace(_result(item, "unchanged"), status=last.status, trace_id=last.trace_id)


def _refused(item: Item) -> AnyResult:
    """The result of an operation turned away before it was ever sent."""
    blocked_by = item.lane.blocked_by if item.lane is not None else None
    if blocked_by is not None:
        return _result(item, "failed", error=StoreUnavailableError(item.store_name, blocked_by))
    return _result(item, "not_attempted")  # the batch is stopping


def _result(
    item: Item,
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
        open_items: dict[int, Item],
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


def _described(op: object) -> tuple[str, dict[str, str]]:
    """An operation's name and ids, for its span: an invalid id cut to what an id can be and a little
    (a hostile row's megabyte id must not travel in every exported span)."""
    if isinstance(op, UpdateImage):
        return "shopline.update_image", {"product_id": _shown(op.product_id), "image_id": _shown(op.image_id)}
    return "shopline.update_product", {"product_id": _shown(getattr(op, "product_id", ""))}


def _shown(value: object) -> str:
    text = str(value)
    return text if len(text) <= 80 else f"{text[:80]}... ({len(text):,} characters)"
