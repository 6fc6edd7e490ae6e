"""Per-store pacing: SHOPLINE's leaky bucket mirrored client-side, an in-flight cap, a shared 429 cool-down.

SHOPLINE limits each app per store with a leaky bucket of capacity 40 that
drains at 4 requests/s. ``Pacer`` is that bucket in its scheduling form (the
generic cell rate algorithm, GCRA): request *k* may start at its theoretical
time ``tat``, or up to ``(burst - 1) / rate`` seconds earlier, and each
admission moves ``tat`` on by ``1 / rate``. After a quiet spell ``burst``
requests go at once, then one every ``1 / rate`` seconds.

Why not aiolimiter's AsyncLimiter, the usual engine: its bucket level cannot
go below empty, so every late wake-up of the event loop is capacity lost for
good (benchmarks/run.py, section ratelimit, measures both side by side). Here
each caller reserves its slot up front and sleeps until it, so lateness never
accumulates and the long-run rate is exact.

One ``StoreLimiter`` belongs to one store handle and one event loop; the
client creates it lazily inside the loop that first uses the store.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from ._channels import Slots
from ._config import RateLimit

__all__ = ["Pacer", "StoreLimiter"]


Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]


class Pacer:
    """Admits calls at ``rate`` per second with bursts of up to ``burst``; first come, first served."""

    def __init__(self, rate: float, burst: int, clock: Clock, sleep: Sleep = asyncio.sleep) -> None:
        self._interval = 1.0 / rate
        self._tolerance = (burst - 1) * self._interval
        self._clock = clock
        self._sleep = sleep
        self._tat = 0.0  # theoretical time of the next admission

    async def acquire(self) -> None:
        now = self._clock()
        tat = max(self._tat, now)
        self._tat = tat + self._interval  # reserve the slot before sleeping: FIFO, no thundering herd
        delay = tat - self._tolerance - now
        if delay <= 0:
            return
        try:
            await self._sleep(delay)
        except asyncio.CancelledError:
            if self._tat == tat + self._interval:  # nobody queued behind us: give the slot back
                self._tat = tat
            raise

    def delay(self, now: float) -> float:
        """How long an ``acquire()`` at ``now`` would wait (<= 0: not at all)."""
        return max(self._tat, now) - self._tolerance - now

    def hold_until(self, when: float) -> None:
        """Admit nothing before ``when`` (a 429 cool-down), then resume at ``rate`` with no burst:
        the server's bucket was full, so ours is treated as full too."""
        self._tat = max(self._tat, when + self._tolerance)


class StoreLimiter:
    """Admits one store's requests: an in-flight slot, the end of any cool-down, then the pacer.

    ``clock`` and ``sleep`` default to the running loop's; tests pass a fake pair.
    """

    def __init__(self, config: RateLimit, *, clock: Clock | None = None, sleep: Sleep = asyncio.sleep) -> None:
        self._clock = clock or asyncio.get_running_loop().time
        self.rate_limit = config
        self.sleep = sleep
        rate = config.paced_rate
        self._pacer = Pacer(rate, config.burst, self._clock, sleep) if rate is not None else None
        self._slots = Slots(config.max_in_flight)
        self._resume_at = 0.0
        self.in_flight = 0
        self.rate_limited = 0

    async def acquire(self) -> None:
        """Wait for a slot, the end of any cool-down and the pacer. Pair with ``release()``."""
        if not self._slots.try_take():
            await self._slots.take()
        try:
            if self._resume_at:  # zero until the first 429
                await self._wait_for_cool_down()
            if self._pacer is not None:
                await self._pacer.acquire()
                if self._resume_at:  # a 429 may have arrived while this task waited for its turn
                    await self._wait_for_cool_down()
        except BaseException:
            self._slots.give()
            raise
        self.in_flight += 1

    def admission_delay(self) -> float | None:
        """Seconds an ``acquire()`` now would wait (0.0: none), or None while every in-flight slot
        is taken (it waits for a request to end, which no clock tells)."""
        if self._slots.free <= 0:
            return None
        if self._pacer is None and not self._resume_at:  # nothing that could hold it: no clock to read
            return 0.0
        now = self._clock()
        delay = self._resume_at - now
        if self._pacer is not None:
            delay = max(delay, self._pacer.delay(now))
        return max(delay, 0.0)

    def release(self) -> None:
        self.in_flight -= 1
        self._slots.give()

    def cool_down(self, seconds: float) -> None:
        """Hold every request to this store for ``seconds`` (after a 429)."""
        self.rate_limited += 1
        self._resume_at = max(self._resume_at, self._clock() + seconds)
        if self._pacer is not None:
            self._pacer.hold_until(self._resume_at)

    @property
    def cooling_down(self) -> bool:
        return self._clock() < self._resume_at

    async def _wait_for_cool_down(self) -> None:
        # a loop, not an Event: another 429 can push the deadline out while we sleep
        while (remaining := self._resume_at - self._clock()) > 0:
            await self.sleep(remaining)
