"""Per-store pacing: a leaky bucket, an in-flight cap and a shared 429 cool-down.

SHOPLINE limits each app per store with a leaky bucket of capacity 40 that
drains at 4 requests/s. ``aiolimiter.AsyncLimiter(max_rate, time_period)`` is
exactly such a bucket: capacity ``max_rate``, draining ``max_rate /
time_period`` per second. So ``RateLimit(rate, burst)`` becomes
``AsyncLimiter(burst, burst / rate)``: after a quiet spell up to ``burst``
requests go at once, then ``rate`` per second.

One ``StoreLimiter`` belongs to one store handle and one event loop; the
client creates it lazily inside the loop that first uses the store.
"""

from __future__ import annotations

import asyncio

from aiolimiter import AsyncLimiter

from ._config import RateLimit

__all__ = ["StoreLimiter"]


class StoreLimiter:
    """Admits one store's requests: in-flight slot, then cool-down, then a bucket token."""

    def __init__(self, config: RateLimit) -> None:
        self.config = config
        self._bucket = AsyncLimiter(config.burst, config.burst / config.rate) if config.rate is not None else None
        self._slots = asyncio.Semaphore(config.max_in_flight)
        self._loop = asyncio.get_running_loop()
        self._resume_at = 0.0
        self.in_flight = 0
        self.max_in_flight_seen = 0
        self.rate_limited = 0

    async def acquire(self) -> None:
        """Wait for a slot, the end of any cool-down and a bucket token. Pair with ``release()``."""
        await self._slots.acquire()
        try:
            await self._wait_for_cool_down()
            if self._bucket is not None:
                await self._bucket.acquire()
                # a 429 may have arrived while this task waited for its token
                await self._wait_for_cool_down()
        except BaseException:
            self._slots.release()
            raise
        self.in_flight += 1
        if self.in_flight > self.max_in_flight_seen:
            self.max_in_flight_seen = self.in_flight

    def release(self) -> None:
        self.in_flight -= 1
        self._slots.release()

    def cool_down(self, seconds: float) -> None:
        """Hold every request to this store for ``seconds`` (after a 429)."""
        self.rate_limited += 1
        self._resume_at = max(self._resume_at, self._loop.time() + seconds)

    @property
    def cooling_down(self) -> bool:
        return self._loop.time() < self._resume_at

    async def _wait_for_cool_down(self) -> None:
        # a loop, not an Event: another 429 can push the deadline out while we sleep
        while (remaining := self._resume_at - self._loop.time()) > 0:  # noqa: ASYNC110
            await asyncio.sleep(remaining)
