"""The per-store pacer, on a fake clock: exact rate, bursts, FIFO, cancellation, cool-down."""

from __future__ import annotations

import asyncio

import pytest

from shopline_async._ratelimit import Pacer


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
