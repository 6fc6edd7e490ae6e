"""The per-store pacer, on a fake clock: exact rate, bursts, FIFO, cancellation, cool-down."""

from __future__ import annotations

import asyncio

import pytest

from shopline_async import RateLimit
from shopline_async._ratelimit import Pacer, StoreLimiter


class FakeClock:
    """Time that moves only when a sleeper asks it to: pass ``clock`` and ``clock.sleep``."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, delay: float) -> None:
        self.now += delay
        await asyncio.sleep(0)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


async def admissions(pacer: Pacer, clock: FakeClock, n: int) -> list[float]:
    times = []
    for _ in range(n):
        await pacer.acquire()
        times.append(round(clock.now - 1000.0, 6))
    return times


async def test_burst_then_exact_rate(clock: FakeClock) -> None:
    pacer = Pacer(rate=4, burst=3, clock=clock, sleep=clock.sleep)
    times = await admissions(pacer, clock, 7)
    assert times == [0.0, 0.0, 0.0, 0.25, 0.5, 0.75, 1.0]


async def test_burst_one_paces_smoothly_without_drift(clock: FakeClock) -> None:
    pacer = Pacer(rate=200, burst=1, clock=clock, sleep=clock.sleep)
    times = await admissions(pacer, clock, 201)
    assert times[0] == 0.0 and times[-1] == pytest.approx(1.0)
    clock.now += 0.0007  # woken late: the next slot still comes on schedule, nothing is lost
    assert await admissions(pacer, clock, 2) == [1.005, 1.01]


async def test_quiet_spell_refills_the_burst(clock: FakeClock) -> None:
    pacer = Pacer(rate=10, burst=5, clock=clock, sleep=clock.sleep)
    await admissions(pacer, clock, 5)
    clock.now += 10
    times = await admissions(pacer, clock, 6)
    assert times == [10.0] * 5 + [10.1]


async def test_concurrent_callers_are_served_in_order(clock: FakeClock) -> None:
    pacer = Pacer(rate=10, burst=1, clock=clock, sleep=clock.sleep)
    order: list[int] = []

    async def call(n: int) -> None:
        await pacer.acquire()
        order.append(n)

    await asyncio.gather(*(call(n) for n in range(5)))
    assert order == [0, 1, 2, 3, 4]


async def test_a_cancelled_waiter_gives_its_slot_back(clock: FakeClock) -> None:
    pacer = Pacer(rate=1, burst=1, clock=clock, sleep=clock.sleep)
    await pacer.acquire()  # t=0
    waiter = asyncio.create_task(pacer.acquire())  # reserves t=1
    await asyncio.sleep(0)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    clock.now = 1000.0  # rewind what the patched sleep advanced
    await pacer.acquire()
    assert clock.now - 1000.0 == pytest.approx(1.0)  # t=1 again, not t=2


async def test_cool_down_holds_then_resumes_without_burst(clock: FakeClock) -> None:
    pacer = Pacer(rate=10, burst=5, clock=clock, sleep=clock.sleep)
    pacer.hold_until(1002.0)
    times = await admissions(pacer, clock, 3)
    assert times == [2.0, 2.1, 2.2]


# --- StoreLimiter: the in-flight cap and the shared cool-down, on the same fake clock -------------


def store_limiter(clock: FakeClock, **config: object) -> StoreLimiter:
    return StoreLimiter(RateLimit(**config), clock=clock, sleep=clock.sleep)  # type: ignore[arg-type]


async def test_in_flight_cap_admits_in_order_as_slots_come_back(clock: FakeClock) -> None:
    limiter = store_limiter(clock, rate=None, max_in_flight=2)
    await limiter.acquire()
    await limiter.acquire()
    order: list[str] = []

    async def wait(name: str) -> None:
        await limiter.acquire()
        order.append(name)

    waiters = [asyncio.create_task(wait(name)) for name in "ab"]
    await asyncio.sleep(0)
    assert order == [] and limiter.in_flight == 2
    limiter.release()
    await asyncio.sleep(0)
    assert order == ["a"] and limiter.in_flight == 2
    limiter.release()
    await asyncio.gather(*waiters)
    assert order == ["a", "b"] and clock.now == 1000.0  # no time passed: only slots were waited for


async def test_a_cancelled_wait_for_a_slot_takes_nothing(clock: FakeClock) -> None:
    limiter = store_limiter(clock, rate=None, max_in_flight=1)
    await limiter.acquire()
    waiter = asyncio.create_task(limiter.acquire())
    await asyncio.sleep(0)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    limiter.release()
    assert limiter.in_flight == 0
    await asyncio.wait_for(limiter.acquire(), 1)  # the one slot is there
    assert limiter.in_flight == 1


async def test_a_cool_down_holds_every_request_then_paces_without_a_burst(clock: FakeClock) -> None:
    limiter = store_limiter(clock, rate=10, burst=5, headroom=0.0)
    limiter.cool_down(2.0)
    assert limiter.cooling_down and limiter.rate_limited == 1
    admitted: list[float] = []

    async def one() -> None:
        await limiter.acquire()
        admitted.append(round(clock.now - 1000.0, 6))
        limiter.release()

    for _ in range(3):
        await one()
    # nothing before the cool-down ends, then one every 1/rate: the bucket is treated as full
    assert admitted == [2.0, 2.1, 2.2]
    assert not limiter.cooling_down


async def test_a_429_during_a_wait_for_the_pacer_is_honoured(clock: FakeClock) -> None:
    limiter = store_limiter(clock, rate=1, burst=1, headroom=0.0)
    await limiter.acquire()  # t=0
    limiter.release()
    waiting = asyncio.create_task(limiter.acquire())  # its turn is t=1
    await asyncio.sleep(0)
    limiter.cool_down(5.0)  # another task's 429, while this one sleeps towards t=1
    await waiting
    assert clock.now - 1000.0 >= 5.0


async def test_reserve_admits_without_waiting_and_says_when_the_request_may_start(clock: FakeClock) -> None:
    # what a scheduler does instead of awaiting acquire(): it takes the slot now and arms a timer
    limiter = store_limiter(clock, rate=2, burst=2, headroom=0.0, max_in_flight=2)
    t0 = clock.now
    assert [limiter.reserve(), limiter.reserve()] == [t0, t0]  # the burst
    assert limiter.reserve() is None  # both in-flight slots taken: nothing reserved
    released: list[int] = []
    limiter.notify_on_release(lambda: released.append(1))
    limiter.release()
    assert released == [1]
    limiter.release()
    assert released == [1]  # once
    assert limiter.reserve() == pytest.approx(t0 + 0.5)  # the pacer: 2/s, the burst spent
    assert limiter.reserve() == pytest.approx(t0 + 1.0)
    limiter.release()
    limiter.release()
    limiter.cool_down(3.0)  # a 429: nothing before it ends, then the rate again with no burst
    assert limiter.resume_at == pytest.approx(t0 + 3.0)
    assert limiter.reserve() == pytest.approx(t0 + 3.0)
    assert limiter.reserve() == pytest.approx(t0 + 3.5)
    assert limiter.in_flight == 2
