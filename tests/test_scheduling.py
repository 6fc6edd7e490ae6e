"""The batch's schedule of attempts on fake time (looptime): exact request times, in milliseconds of
a loop clock that jumps ahead whenever nothing is runnable, against an in-process sender."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from shopline_async import (
    BatchExecutor,
    HTTPRequest,
    HTTPResponse,
    MockSender,
    RateLimit,
    RetryPolicy,
    ShoplineClient,
    UpdateProduct,
)

pytestmark = pytest.mark.usefixtures("fake_time")  # conftest: the loop on fake time


Answer = Callable[[str, str, int], HTTPResponse | None]
"""(store, product id, attempt number of that product) -> an answer other than 200, or None for 200."""


class Recorder:
    """A sender that notes when (loop time, in ms from the start) each request was sent."""

    def __init__(self, answer: Answer | None = None) -> None:
        self.sent: list[tuple[str, str, float]] = []
        self.answer = answer
        self.started = asyncio.get_running_loop().time()

    def __call__(self, request: HTTPRequest) -> HTTPResponse:
        store = request.url.host or ""
        product_id = request.url.path.rsplit("/", 1)[1].removesuffix(".json")
        at = round(1000 * (asyncio.get_running_loop().time() - self.started), 1)
        attempt = 1 + sum(1 for s, p, _ in self.sent if (s, p) == (store, product_id))
        self.sent.append((store, product_id, at))
        special = self.answer(store, product_id, attempt) if self.answer else None
        return special or HTTPResponse(
            200, {"traceId": f"t{len(self.sent)}"}, b'{"product": {"id": "%s"}}' % product_id.encode()
        )

    def times(self, store: str) -> list[float]:
        return [at for s, _, at in self.sent if s.startswith(store + ".")]


def client(recorder: Recorder, **options: object) -> ShoplineClient:
    return ShoplineClient(sender=MockSender(recorder), **options)  # type: ignore[arg-type]


def ops(store: str, n: int, prefix: str = "p") -> list[UpdateProduct]:
    return [UpdateProduct(store, f"{prefix}{i}", {"title": "x"}) for i in range(n)]


async def test_a_store_is_paced_at_exactly_its_rate() -> None:
    recorder = Recorder()
    async with client(recorder) as c:
        c.store("a", "t")
        report = await BatchExecutor(c).gather(ops("a", 8))
    assert report.summary.ok == 8
    interval = 1000 / RateLimit().paced_rate  # 4/s less the 1% headroom: 252.5 ms
    assert recorder.times("a") == [round(i * interval, 1) for i in range(8)]


async def test_a_store_sorted_first_in_the_input_holds_back_no_other() -> None:
    recorder = Recorder()
    async with client(recorder) as c:
        c.store("a", "t")
        c.store("b", "t")
        await BatchExecutor(c).gather(ops("a", 4) + ops("b", 4))
    interval = 1000 / RateLimit().paced_rate
    assert recorder.times("a") == recorder.times("b") == [round(i * interval, 1) for i in range(4)]


async def test_a_backoff_holds_back_none_of_its_stores_others_and_ends_on_time() -> None:
    def busy_once(store: str, product_id: str, attempt: int) -> HTTPResponse | None:
        return (
            HTTPResponse(503, {"traceId": "busy"}, b'{"errors": "busy"}')
            if product_id == "p0" and attempt == 1
            else None
        )

    recorder = Recorder(busy_once)
    policy = RetryPolicy(initial_delay=1.0, jitter=False)
    async with client(recorder, retry=policy, rate_limit=RateLimit(rate=10, headroom=0.0)) as c:
        c.store("a", "t")
        report = await BatchExecutor(c).gather(ops("a", 5))
    assert report.summary.ok == 5 and report.results[0].attempts == 2
    # p0 at 0 (503), p1..p4 every 100 ms without waiting for it, p0 again once its 1 s is over
    assert recorder.sent == [
        ("a.myshopline.com", "p0", 0.0),
        ("a.myshopline.com", "p1", 100.0),
        ("a.myshopline.com", "p2", 200.0),
        ("a.myshopline.com", "p3", 300.0),
        ("a.myshopline.com", "p4", 400.0),
        ("a.myshopline.com", "p0", 1000.0),
    ]


async def test_a_429_cools_its_store_down_for_retry_after_and_no_other() -> None:
    def full_once(store: str, product_id: str, attempt: int) -> HTTPResponse | None:
        if store.startswith("a.") and product_id == "p1" and attempt == 1:
            return HTTPResponse(429, {"traceId": "full", "Retry-After": "2"}, b'{"errors": "Too many request"}')
        return None

    recorder = Recorder(full_once)
    async with client(recorder, rate_limit=RateLimit(rate=10, headroom=0.0)) as c:
        c.store("a", "t")
        c.store("b", "t")
        report = await BatchExecutor(c).gather(
            [op for pair in zip(ops("a", 4), ops("b", 4), strict=True) for op in pair]
        )
    assert report.summary.ok == 8 and report.summary.rate_limited == 1
    # store a: p0 at 0, p1 at 100 answered 429 -> nothing before 2.1 s, then p1 again and the rest
    # at the pace, with no burst; store b goes on at its own pace throughout
    assert recorder.times("a") == [0.0, 100.0, 2100.0, 2200.0, 2300.0]
    assert recorder.times("b") == [0.0, 100.0, 200.0, 300.0]


async def test_stop_while_stores_wait_reports_the_rest_at_once() -> None:
    recorder = Recorder()
    async with client(recorder) as c:
        c.store("a", "t")
        executor = BatchExecutor(c)

        async def stop_soon() -> None:
            await asyncio.sleep(0.6)  # after the 3rd request (0, 252.5, 505 ms)
            executor.stop()

        stopper = asyncio.create_task(stop_soon())
        started = asyncio.get_running_loop().time()
        report = await executor.gather(ops("a", 100))
        took = asyncio.get_running_loop().time() - started
        await stopper
    assert report.summary.ok == 3 and report.summary.outcomes["not_attempted"] == 97
    assert took == pytest.approx(0.6)  # not when the store would have been due next


async def test_a_targets_next_update_goes_only_once_the_one_before_it_is_answered() -> None:
    async def slow(request: HTTPRequest) -> HTTPResponse:
        answer = recorder(request)  # noted when sent
        await asyncio.sleep(0.5)  # answered 500 ms later
        return answer

    recorder = Recorder()
    async with ShoplineClient(sender=MockSender(slow), rate_limit=RateLimit(rate=10, headroom=0.0)) as c:
        c.store("a", "t")
        operations = [
            UpdateProduct("a", pid, {"title": title})
            for pid, title in [("p0", "1"), ("p1", "1"), ("p0", "2"), ("p2", "1"), ("p0", "3")]
        ]
        report = await BatchExecutor(c).gather(operations)
    assert report.summary.ok == 5
    # p1 and p2 at the store's pace; p0's second and third body each leave once the one before is
    # answered (500 ms), the store's pace permitting: in input order, so the store ends with "3"
    assert recorder.sent == [
        ("a.myshopline.com", "p0", 0.0),
        ("a.myshopline.com", "p1", 100.0),
        ("a.myshopline.com", "p2", 200.0),
        ("a.myshopline.com", "p0", 500.0),
        ("a.myshopline.com", "p0", 1000.0),
    ]
    assert [r.trace_id for r in report.results] == ["t1", "t2", "t4", "t3", "t5"]


async def test_a_batch_cancelled_from_outside_accounts_for_every_operation() -> None:
    async def slow(request: HTTPRequest) -> HTTPResponse:
        answer = recorder(request)
        await asyncio.sleep(1.0)
        return answer

    recorder = Recorder()
    async with ShoplineClient(sender=MockSender(slow), rate_limit=RateLimit(rate=10, headroom=0.0)) as c:
        c.store("a", "t")
        executor = BatchExecutor(c, concurrency=2)
        seen = []

        async def consume() -> None:
            async with executor.stream(ops("a", 10)) as results:
                async for result in results:
                    seen.append(result)

        task = asyncio.create_task(consume())
        await asyncio.sleep(1.05)  # p0 (sent at 0) answered; p1 (sent at 100 ms) and p2 (at 1 s, p0's worker) under way
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        left = executor.unreported()
        assert asyncio.get_running_loop().time() == pytest.approx(1.05)  # at once, not after p1's answer
    assert [r.key for r in seen] == ["p0"]
    outcomes = {r.key: r.outcome for r in left}
    assert outcomes.pop("p1") == "cancelled" and outcomes.pop("p2") == "cancelled"  # under way: may be applied
    assert set(outcomes.values()) == {"not_attempted"}
    assert sorted(r.index for r in seen + left) == list(range(len(seen) + len(left)))  # each once
    assert not [s for s in recorder.sent if s[1] not in ("p0", "p1", "p2")]  # nothing else sent
