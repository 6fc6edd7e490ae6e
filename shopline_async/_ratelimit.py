"""Per-store pacing: SHOPLINE's leaky bucket mirrored client-side, an in-flight cap, a shared 429 cool-down.

SHOPLINE limits each app per store with a leaky bucket of capacity 40 that
drains at 4 requests/s. ``Pacer`` is that bucket in its scheduling form (the
generic cell rate algorithm, GCRA): request *k* may start at its theoretical
time ``tat``, or up to ``(burst - 1) / rate`` seconds earlier, and each
admission moves ``tat`` on by ``1 / rate``. After a quiet spell ``burst``
requests go at once, then one every ``1 / rate`` seconds.

Why not aiolimiter's AsyncLimiter, the usual engine: its bucket level cannot
go below empty, so every late wake-up of the event loop is capacity lost for
good. At ``burst=1`` (smooth pacing) that measured 0.85 of the allowed rate
(see benchmarks/README.md). Here each caller reserves its slot up front and
sleeps until it, so lateness never accumulates and the long-run rate is exact.

One ``StoreLimiter`` belongs to one store handle and one event loop; the
client creates it lazily inside the loop that first uses the store.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from ._channels import Slots
from ._config import RateLimit

__all__ = ["Pacer", "StoreLimiter"]


class Pacer:
    """Admits calls at ``rate`` per second with bursts of up to ``burst``; first come, first served."""

    def __init__(self, rate: float, burst: int, clock: Callable[[], float]) -> None:
        self._interval = 1.0 / rate
        self._tolerance = (burst - 1) * self._interval
        self._clock = clock
        self._tat = 0.0  # theoretical time of the next admission

    async def acquire(self) -> None:
        now = self._clock()
        tat = max(self._tat, now)
        self._tat = tat + self._interval  # reserve the slot before sleeping: FIFO, no thundering herd
        delay = tat - self._tolerance - now
        if delay <= 0:
            return
        try:
            await asyncio.sleep(delay)
        except asyncio.CancelledError:
            if self._tat == tat + self._interval:  # nobody queued behind us: give the slot back
                self._tat = tat
            raise

    def hold_until(self, when: float) -> None:
        """Admit nothing before ``when`` (a 429 cool-down), then resume at ``rate`` with no burst:
        the server's bucket was full, so ours is treated as full too."""
        self._tat = max(self._tat, when + self._tolerance)


class StoreLimiter:
    """Admits one store's requests: an in-flight slot, the end of any cool-down, then the pacer."""

    def __init__(self, config: RateLimit) -> None:
        self._loop = asyncio.get_running_loop()
        rate = config.paced_rate
        self._pacer = Pacer(rate, config.burst, self._loop.time) if rate is not None else None
        self._slots = Slots(config.max_in_flight)
        self._resume_at = 0.0
        self.in_flight = 0
        self.rate_limited = 0

    def acquire_now(self) -> bool:
        """Admit at once when nothing is to be waited for (no pacing, no cool-down, a free slot),
        without the coroutine ``acquire()`` costs; False means call ``acquire()``."""
        if (
            self._pacer is None
            and (not self._resume_at or self._resume_at <= self._loop.time())
            and self._slots.take_now()
        ):
            self.in_flight += 1
            return True
        return False

    async def acquire(self) -> None:
        """Wait for a slot, the end of any cool-down and the pacer. Pair with ``release()``."""
        if not self._slots.take_now():
            await self._slots.take()
        try:
            if self._resume_at:  # zero until the first 429: no coroutine to run
                await self._wait_for_cool_down()
            if self._pacer is not None:
                await self._pacer.acquire()
                # a 429 may have arrived while this task waited for its turn
                await self._wait_for_cool_down()
        except BaseException:
            self._slots.give()
            raise
        self.in_flight += 1

    def release(self) -> None:
        self.in_flight -= 1
        self._slots.give()

    def cool_down(self, seconds: float) -> None:
        """Hold every request to this store for ``seconds`` (after a 429)."""
        self.rate_limited += 1
        self._resume_at = max(self._resume_at, self._loop.time() + seconds)
        if self._pacer is not None:
            self._pacer.hold_until(self._resume_at)

    @property
    def cooling_down(self) -> bool:
        return self._loop.time() < self._resume_at

    async def _wait_for_cool_down(self) -> None:
        # a loop, not an Event: another 429 can push the deadline out while we sleep
        while (remaining := self._resume_at - self._loop.time()) > 0:  # noqa: ASYNC110
            await asyncio.sleep(remaining)
