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
        start = self.reserve(now)  # the slot is taken before sleeping: FIFO, no thundering herd
        if start <= now:
            return
        reserved = self._tat
        try:
            await self._sleep(start - now)
        except asyncio.CancelledError:
            if self._tat == reserved:  # nobody queued behind us: give the slot back
                self._tat -= self._interval
            raise

    def reserve(self, now: float) -> float:
        """Take the next slot now, without waiting for it: the time it starts (not before ``now``)."""
        tat = max(self._tat, now)
        self._tat = tat + self._interval
        return max(tat - self._tolerance, now)

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
        self._on_release: list[Callable[[], None]] = []
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

    def reserve(self) -> float | None:
        """For a scheduler: admit one request without waiting, as ``acquire()`` would have, and say
        when it may start (a clock time; not later than now: at once). None while every in-flight
        slot is taken: nothing is reserved, and ``notify_on_release`` says when to ask again.
        Pair with ``release()``."""
        if not self._slots.try_take():
            return None
        self.in_flight += 1
        if self._pacer is None and not self._resume_at:  # nothing that could hold it: no clock to read
            return 0.0
        start = max(self._clock(), self._resume_at)
        return self._pacer.reserve(start) if self._pacer is not None else start

    def notify_on_release(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once, at the next ``release()``."""
        self._on_release.append(callback)

    def forget_release(self, callback: Callable[[], None]) -> None:
        """Undo ``notify_on_release(callback)`` if it has not been called yet."""
        if callback in self._on_release:
            self._on_release.remove(callback)

    def release(self) -> None:
        self.in_flight -= 1
        self._slots.give()
        if self._on_release:
            callbacks, self._on_release = self._on_release, []
            for callback in callbacks:
                callback()

    def cool_down(self, seconds: float) -> None:
        """Hold every request to this store for ``seconds`` (after a 429)."""
        self.rate_limited += 1
        self._resume_at = max(self._resume_at, self._clock() + seconds)
        if self._pacer is not None:
            self._pacer.hold_until(self._resume_at)

    @property
    def cooling_down(self) -> bool:
        return self._clock() < self._resume_at

    @property
    def resume_at(self) -> float:
        """When the last 429's cool-down ends (a clock time; 0.0 if there was none)."""
        return self._resume_at

    def now(self) -> float:
        return self._clock()

    async def _wait_for_cool_down(self) -> None:
        # a loop, not an Event: another 429 can push the deadline out while we sleep
        while (remaining := self._resume_at - self._clock()) > 0:
            await self.sleep(remaining)
