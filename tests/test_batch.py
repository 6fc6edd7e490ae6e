"""The batch executor against the mock server: accounting, limits, streaming, cancellation."""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from collections import Counter
from collections.abc import AsyncIterator

import anyio
import pytest
from conftest import batch_worker, mock_answer, unlimited_stores

from shopline_async import (
    BatchExecutor,
    ConfigError,
    HTTPRequest,
    HTTPResponse,
    ImageInput,
    MockSender,
    ProductUpdate,
    Progress,
    RateLimit,
    Result,
    RetryPolicy,
    ServerError,
    ShoplineClient,
    UpdateImage,
    UpdateProduct,
    ValidationError,
    VariantInput,
)
from shopline_async.mock import Faults, MockShopline, MockStoreConfig

STORES = {"token-a": "store-a", "token-b": "store-b", "token-c": "store-c"}


def product_op(store: str, n: int, **fields: object) -> UpdateProduct:
    update = ProductUpdate(title=f"Product {n}", variants=[VariantInput(sku=f"S{n}", price="12.50")])
    return UpdateProduct(store=store, product_id=f"p{n}", product=fields or update, key=f"{store}:{n}")


def connect(client: ShoplineClient, server: MockShopline, rate_limit: RateLimit | None = None) -> None:
    for token, handle in server.tokens.items():
        client.store(handle, token, rate_limit=rate_limit)


async def test_thousand_operations_with_faults_each_get_exactly_one_result() -> None:
    faults = Faults(seed=7, error_rate=0.1, drop_rate=0.02, latency_rate=0.05, latency=(0.001, 0.01))
    doomed = MockStoreConfig(rate=None, faults=Faults(fail_first=100, fail_status=503))
    async with MockShopline(
        STORES,
        config=MockStoreConfig(rate=None, faults=faults),
        store_configs={"store-c": doomed},
        record_traces=True,
    ) as server:
        retry = RetryPolicy(max_attempts=6, initial_delay=0.002, max_delay=0.01)
        async with ShoplineClient(base_url=server.base_url, retry=retry) as client:
            connect(client, server, RateLimit.unlimited())
            ops = [product_op(("store-a", "store-b")[n % 2], n) for n in range(960)]
            ops += [product_op("store-c", n) for n in range(960, 1000)]
            report = await BatchExecutor(client, concurrency=64).gather(ops)

    assert [r.key for r in report.results] == [op.key for op in ops]  # input order
    assert [r.index for r in report.results] == list(range(1000))
    assert report.summary.total == 1000 and report.summary.outcomes == {"ok": 960, "failed": 40}
    assert report.summary.retries > 0
    for result, op in zip(report.results, ops, strict=True):
        stats = server.stats(result.store)
        path = f"/admin/openapi/v20260601/products/{op.product_id}.json"
        if result.ok:
            assert stats.writes[op.product_id] == 1  # written once, not lost, not twice
            assert result.data.title == op.product.title  # type: ignore[union-attr]
        else:
            assert stats.writes[op.product_id] == 0
            assert isinstance(result.error, ServerError) and result.status == 503
        # the trace ids reported are the ones the server sent, in order
        assert list(result.trace_ids) == stats.traces[path]
        assert result.trace_id == stats.traces[path][-1]
        assert result.attempts >= len(result.trace_ids)
    assert sum(server.stats(h).writes.total() for h in STORES.values()) == 960


async def test_invalid_items_fail_at_once_and_cost_no_request(mock_server: MockShopline) -> None:
    async with ShoplineClient(base_url=mock_server.base_url) as client:
        connect(client, mock_server, RateLimit.unlimited())
        ops = [
            product_op("alpha", 1),
            UpdateProduct("alpha", "p2", {"title": "x" * 256}, key="long"),
            UpdateProduct("alpha", "p3", ProductUpdate(variants=[VariantInput(price="-1")]), key="price"),
            UpdateImage("alpha", "p1", "..", {"alt": "a"}, key="bad-id"),
            UpdateProduct("nowhere", "p4", {"title": "x"}, key="no-store"),
            product_op("alpha", 5),
        ]
        report = await BatchExecutor(client).gather(ops)
    outcomes = {r.key: r.outcome for r in report.results}
    assert outcomes == {
        "alpha:1": "ok",
        "long": "invalid",
        "price": "invalid",
        "bad-id": "invalid",
        "no-store": "invalid",
        "alpha:5": "ok",
    }
    price = report.results[2]
    assert isinstance(price.error, ValidationError) and price.error.paths == ["$.product.variants[0].price"]
    assert "unknown store 'nowhere'" in str(report.results[4].error)
    assert mock_server.stats("alpha").requests == 2


async def test_results_name_the_store_as_the_operation_did_whatever_the_outcome(mock_server: MockShopline) -> None:
    async with ShoplineClient(base_url=mock_server.base_url) as client:
        connect(client, mock_server, RateLimit.unlimited())
        ops = [UpdateProduct("ALPHA", "p1", {"title": "x"}), UpdateProduct("ALPHA", "p2", {"title": 5})]
        report = await BatchExecutor(client).gather(ops)
    assert [(r.store, r.outcome) for r in report.results] == [("ALPHA", "ok"), ("ALPHA", "invalid")]


async def test_image_operations_and_default_keys(mock_server: MockShopline) -> None:
    async with ShoplineClient(base_url=mock_server.base_url) as client:
        store = client.store("alpha", "token-alpha")
        product = await store.products.update("p", ProductUpdate(images=[ImageInput(src="https://i/1.png")]))
        image_id = product.images[0].id  # type: ignore[index]
        ops = [UpdateImage(store, "p", image_id, {"alt": "new"}), UpdateImage("alpha", "p", "nope", {"alt": "x"})]
        report = await BatchExecutor(client).gather(ops)  # type: ignore[arg-type]
    ok, missing = report.results
    assert (ok.key, ok.kind, ok.outcome, ok.data.alt) == (image_id, "image", "ok", "new")  # type: ignore[union-attr]
    assert (missing.key, missing.status, missing.outcome) == ("nope", 404, "failed")
    assert missing.trace_id is not None


@pytest.mark.slow  # real pacing against the real mock, seconds of wall time
async def test_queue_mode_rate_limit_no_429_and_full_rate() -> None:
    rate, n = 100.0, 200
    async with MockShopline(STORES, config=MockStoreConfig(rate=rate, capacity=20, mode="queue")) as server:
        async with ShoplineClient(base_url=server.base_url) as client:
            connect(client, server, RateLimit(rate=rate, burst=20, max_in_flight=20))
            started = time.monotonic()
            report = await BatchExecutor(client).gather(product_op("store-a", i) for i in range(n))
            elapsed = time.monotonic() - started
    assert report.summary.outcomes == {"ok": n}
    assert server.stats("store-a").http_429 == 0 and report.summary.rate_limited == 0
    achieved = (n - 1) / elapsed  # the first request goes at once
    assert 0.95 * rate <= achieved <= 1.05 * rate


@pytest.mark.slow  # real pacing against the real mock, seconds of wall time
async def test_reject_mode_429s_are_retried_and_counted() -> None:
    async with MockShopline(STORES, config=MockStoreConfig(rate=50, capacity=5, mode="reject")) as server:
        retry = RetryPolicy(max_attempts=10, initial_delay=0.05, max_delay=0.2)
        async with ShoplineClient(base_url=server.base_url, retry=retry) as client:
            connect(client, server, RateLimit.unlimited(max_in_flight=20))  # deliberately not pacing
            report = await BatchExecutor(client).gather(product_op("store-a", i) for i in range(40))
    assert report.summary.outcomes == {"ok": 40}
    assert report.summary.rate_limited == server.stats("store-a").http_429 > 0
    assert report.summary.retries >= server.stats("store-a").http_429


@pytest.mark.slow  # real pacing against the real mock, seconds of wall time
async def test_a_slow_store_does_not_hold_back_the_others(mock_server: MockShopline) -> None:
    async with ShoplineClient(base_url=mock_server.base_url) as client:
        client.store("alpha", "token-alpha", rate_limit=RateLimit(rate=10, burst=1))
        client.store("beta", "token-beta", rate_limit=RateLimit.unlimited())
        ops = [product_op("alpha" if n % 10 == 0 else "beta", n) for n in range(200)]  # 20 slow, 180 fast
        finished: dict[str, float] = {}
        started = time.monotonic()
        async with BatchExecutor(client).stream(ops) as results:
            async for result in results:
                assert result.ok
                finished[result.store] = time.monotonic() - started
    assert finished["alpha"] >= 1.8  # 20 requests at 10/s
    assert finished["beta"] < 0.8


async def test_streaming_input_is_pulled_lazily(mock_server: MockShopline) -> None:
    pulled = 0
    reported = 0
    max_ahead = 0

    async def source() -> AsyncIterator[UpdateProduct]:
        nonlocal pulled, max_ahead
        for n in range(600):
            pulled += 1
            max_ahead = max(max_ahead, pulled - reported)
            yield product_op("alpha", n)

    async with ShoplineClient(base_url=mock_server.base_url) as client:
        connect(client, mock_server, RateLimit.unlimited(max_in_flight=10))
        async with BatchExecutor(client, concurrency=10, max_pending=50).stream(source()) as results:
            async for _ in results:
                reported += 1
    assert (pulled, reported) == (600, 600)
    assert max_ahead <= 51


async def test_progress_hook_and_summary(mock_server: MockShopline) -> None:
    seen: list[Progress] = []
    mock_server.configure("alpha", MockStoreConfig(rate=None, faults=Faults(fail_first=1, fail_status=500)))
    async with ShoplineClient(base_url=mock_server.base_url, retry=RetryPolicy(initial_delay=0.001)) as client:
        connect(client, mock_server, RateLimit.unlimited())
        ops = [product_op("alpha", n) for n in range(20)] + [UpdateProduct("alpha", "x", {"status": "gone"})]
        executor = BatchExecutor(client, on_progress=seen.append)
        report = await executor.gather(ops)
    assert len(seen) == 21
    assert seen[-1].taken == 21 and seen[-1].done == 20 and seen[-1].failed == 1 and seen[-1].in_flight == 0
    assert all(a.done + a.failed < b.done + b.failed for a, b in itertools.pairwise(seen))
    summary = report.summary
    assert summary.outcomes == {"ok": 20, "invalid": 1} and summary.statuses == {200: 20}
    assert summary.retries == 20
    assert 0 < summary.p50 <= summary.p95 <= summary.p99 and summary.throughput > 0


async def test_graceful_stop_reports_every_taken_operation(mock_server: MockShopline) -> None:
    mock_server.configure("alpha", MockStoreConfig(rate=None, faults=Faults(latency_rate=1.0, latency=0.01)))
    async with ShoplineClient(base_url=mock_server.base_url) as client:
        connect(client, mock_server, RateLimit.unlimited(max_in_flight=5))
        executor = BatchExecutor(client, concurrency=5, max_pending=40)
        results: list[Result] = []
        async with executor.stream(product_op("alpha", n) for n in range(10_000)) as stream:
            async for result in stream:
                results.append(result)
                if len(results) == 30:
                    executor.stop()
    taken = executor.progress.taken
    assert len(results) == taken < 10_000
    assert sorted(r.index for r in results) == list(range(taken))
    outcomes = Counter(r.outcome for r in results)
    assert outcomes["not_attempted"] > 0 and set(outcomes) <= {"ok", "not_attempted"}
    stats = mock_server.stats("alpha")
    assert stats.writes.total() == outcomes["ok"]  # nothing not reported ok was written
    assert executor.unreported() == []


@pytest.mark.parametrize("after", [0.0, 0.02, *(round(random.Random(7 + n).uniform(0, 0.2), 4) for n in range(10))])
async def test_cancellation_from_outside_accounts_for_every_taken_operation(
    mock_server: MockShopline, after: float
) -> None:
    mock_server.configure("alpha", MockStoreConfig(rate=None, faults=Faults(latency_rate=1.0, latency=0.02)))
    async with ShoplineClient(base_url=mock_server.base_url) as client:
        connect(client, mock_server, RateLimit.unlimited(max_in_flight=8))
        executor = BatchExecutor(client, concurrency=8, max_pending=30)
        received: list[Result] = []
        with anyio.move_on_after(after):
            async with executor.stream(product_op("alpha", n) for n in range(1000)) as stream:
                async for result in stream:
                    received.append(result)
        left = executor.unreported()
        taken = executor.progress.taken
        assert sorted(r.index for r in received + left) == list(range(taken))
        # finished but not yet handed over when cancelled: reported with their real outcome
        assert {r.outcome for r in left} <= {"cancelled", "not_attempted", "ok"}
        writes = mock_server.stats("alpha").writes
        assert all(writes[f"p{r.index}"] == 1 for r in received + left if r.ok)
        assert all(writes[f"p{r.index}"] == 0 for r in left if r.outcome == "not_attempted")
        await asyncio.sleep(0.05)
        leftovers = [t for t in asyncio.all_tasks() if t is not asyncio.current_task() and not mock_answer(t)]
        assert leftovers == []
        # the pool is intact: a following batch runs normally
        report = await BatchExecutor(client).gather([product_op("alpha", 5000)])
        assert report.results[0].ok


@pytest.mark.parametrize("after", [0.0, 0.01, 0.03, 0.07])
async def test_cancelled_while_stores_wait_for_a_slot_nothing_more_is_sent(after: float) -> None:
    # 20 stores, 2 slots: most lanes wait in the slots' queue (claims) when the batch is cancelled
    tokens = {f"t{n}": f"s{n}" for n in range(20)}
    slow = MockStoreConfig(rate=None, faults=Faults(latency_rate=1.0, latency=0.01))
    async with MockShopline(tokens, config=slow) as server, ShoplineClient(base_url=server.base_url) as client:
        for token, handle in tokens.items():
            client.store(handle, token, rate_limit=RateLimit.unlimited())
        executor = BatchExecutor(client, concurrency=2)
        received: list[Result] = []
        ops = (product_op(f"s{n % 20}", n) for n in range(200))
        with anyio.move_on_after(after):
            async with executor.stream(ops) as stream:
                async for result in stream:
                    received.append(result)
        left = executor.unreported()
        assert sorted(r.index for r in received + left) == list(range(executor.progress.taken))
        await asyncio.sleep(0.1)  # what was on the wire at the cancel lands by now
        written = sum(server.stats(h).writes.total() for h in tokens.values())
        # written: the operations reported ok, and at most the 2 requests in flight at the cancel
        assert sum(r.ok for r in received + left) <= written <= sum(r.ok for r in received + left) + 2
        leftovers = [t for t in asyncio.all_tasks() if t is not asyncio.current_task() and not mock_answer(t)]
        assert leftovers == []
        report = await executor.gather(product_op(f"s{n}", 1000 + n) for n in range(20))
        assert report.summary.ok == 20  # the slots all came back


async def test_stores_waiting_for_their_pacer_cost_no_task_and_every_operation_is_reported() -> None:
    # 200 stores x 3, sorted by store, SHOPLINE's pacing (4/s): each store's 2nd and 3rd requests
    # wait about 0.25 s for its pacer on a timer of its store, not as a task (a scheduling of old
    # kept a task per store sleeping in its pacer: about 200 here); the batch's tasks are its
    # `concurrency` workers, whatever the number of stores
    tokens = {f"t{n}": f"s{n}" for n in range(200)}
    async with MockShopline(tokens) as server, ShoplineClient(base_url=server.base_url) as client:
        for token, handle in tokens.items():
            client.store(handle, token)
        executor = BatchExecutor(client, concurrency=20)
        loop = asyncio.get_running_loop()
        workers: list[int] = []
        tasks: list[int] = []

        async def sample() -> None:
            started = loop.time()
            while True:
                await asyncio.sleep(0.01)
                # no store can be due before its first request + 0.25 s
                if 0.08 < loop.time() - started < 0.2:
                    workers.append(sum(batch_worker(t) for t in asyncio.all_tasks()))
                    tasks.append(sum(not mock_answer(t) for t in asyncio.all_tasks()))

        sampler = asyncio.create_task(sample())
        report = await executor.gather(product_op(f"s{n // 3}", n) for n in range(600))
        sampler.cancel()
    assert report.summary.ok == 600 and report.summary.rate_limited == 0
    assert workers and set(workers) == {20}, workers
    # the workers, this test and its sampler, the batch's dispatcher, and aiohttp's for connections
    # still opening on a loaded machine: far from a task per store
    assert max(tasks) <= 20 + 40, tasks


async def test_stop_while_a_store_waits_for_its_pacer_reports_the_rest() -> None:
    async with MockShopline({"t": "solo"}) as server, ShoplineClient(base_url=server.base_url) as client:
        client.store("solo", "t")
        executor = BatchExecutor(client)
        results: list[Result] = []
        started = time.monotonic()
        async with executor.stream(product_op("solo", n) for n in range(10)) as stream:
            async for result in stream:
                results.append(result)
                executor.stop()  # the lane is parked until the pacer's next slot
        assert time.monotonic() - started < 1.0
        assert [r.outcome for r in sorted(results, key=lambda r: r.index)] == ["ok"] + ["not_attempted"] * 9
        assert server.stats("solo").writes.total() == 1


async def test_one_batch_at_a_time_per_executor(mock_server: MockShopline) -> None:
    async with ShoplineClient(base_url=mock_server.base_url) as client:
        connect(client, mock_server, RateLimit.unlimited())
        executor = BatchExecutor(client)
        async with executor.stream([product_op("alpha", 1)]) as results:
            with pytest.raises(ConfigError, match="already running"):
                async with executor.stream([product_op("alpha", 2)]):
                    pass  # pragma: no cover
            assert [r.ok async for r in results] == [True]
        assert (await executor.gather([product_op("alpha", 3)])).summary.ok == 1  # reusable afterwards


async def test_a_progress_hook_that_raises_ends_the_batch_with_its_error() -> None:
    calls = 0

    def progress(_: Progress) -> None:
        nonlocal calls
        calls += 1
        if calls == 7:
            raise RuntimeError("the progress bar broke")

    async with unlimited_stores(30) as (_, client):
        executor = BatchExecutor(client, concurrency=4, on_progress=progress)
        ops = [product_op(f"s{n}", i) for i in range(3) for n in range(30)]
        with pytest.raises(Exception) as raised:  # an exception group, from the batch's task group
            await asyncio.wait_for(executor.gather(ops), 10)  # a hang would be a TimeoutError
        assert raised.group_contains(RuntimeError, match="the progress bar broke")
        await asyncio.sleep(0.05)
        leftovers = [t for t in asyncio.all_tasks() if t is not asyncio.current_task() and not mock_answer(t)]
        assert leftovers == []


async def test_an_operation_in_retry_backoff_holds_back_none_of_its_stores_others() -> None:
    # one store, 60 operations; the first is answered 503 once and backs off for 1 s: the other 59
    # are all done long before its retry (a scheduling of old kept the store's lane closed while an
    # operation of it slept in backoff: 98 of 99 waited for one 503)
    answered: list[tuple[str, float]] = []
    failed_once: set[str] = set()
    loop = asyncio.get_running_loop()

    def answer(request: HTTPRequest) -> HTTPResponse:
        product_id = request.url.path.rsplit("/", 1)[1].removesuffix(".json")
        if product_id == "p0" and product_id not in failed_once:
            failed_once.add(product_id)
            return HTTPResponse(503, {"traceId": "busy"}, b'{"errors": "busy"}')
        answered.append((product_id, loop.time()))
        return HTTPResponse(200, {"traceId": f"t-{product_id}"}, b'{"product": {"id": "%s"}}' % product_id.encode())

    policy = RetryPolicy(max_attempts=3, initial_delay=1.0, max_delay=1.0, jitter=False)
    async with ShoplineClient(sender=MockSender(answer), rate_limit=RateLimit.unlimited(), retry=policy) as client:
        client.store("solo", "t")
        started = loop.time()
        report = await BatchExecutor(client, concurrency=4).gather(
            UpdateProduct("solo", f"p{i}", {"title": "x"}) for i in range(60)
        )
    assert report.summary.ok == 60 and report.results[0].attempts == 2
    others = [at - started for product_id, at in answered if product_id != "p0"]
    retried = next(at - started for product_id, at in answered if product_id == "p0")
    assert len(others) == 59 and max(others) < 0.5 < 1.0 <= retried, (max(others), retried)


async def test_stop_turns_away_thousands_queued_behind_a_paced_store_at_once() -> None:
    # one store at SHOPLINE's pace holds nearly all of 3,000 operations (each product three times,
    # so settling one releases the next on its target); stop() after the first result reports them
    # all at once, and the store's limiter gets back every slot the batch reserved
    async with MockShopline({"t": "solo"}) as server, ShoplineClient(base_url=server.base_url) as client:
        store = client.store("solo", "t")

        def stop_at_first(progress: Progress) -> None:
            if progress.done:
                executor.stop()

        executor = BatchExecutor(client, on_progress=stop_at_first)
        started = asyncio.get_running_loop().time()
        report = await executor.gather(UpdateProduct("solo", f"p{i % 1000}", {"title": f"v{i}"}) for i in range(3000))
        took = asyncio.get_running_loop().time() - started
        assert report.summary.ok == 1 and report.summary.outcomes["not_attempted"] == 2999
        assert took < 1.0, took  # not 3,000 requests at 4/s
        assert store._transport.limiter.in_flight == 0
