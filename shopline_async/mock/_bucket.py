"""SHOPLINE's leaky bucket, server side, in the two modes the mock offers."""

from __future__ import annotations

import asyncio

from ._config import BucketMode

__all__ = ["LeakyBucket"]


class LeakyBucket:
    """Admit or refuse one request; ``admit()`` returns False for a 429.

    queue:  what SHOPLINE documents. A request joins the bucket if fewer than
            ``capacity`` are waiting and is served when its turn comes, one
            every ``1/rate`` seconds; otherwise it is refused.
    reject: the bucket's level rises by one per request and drains at
            ``rate``; a request that finds it full is refused, others pass at
            once (no waiting).
    """

    def __init__(self, rate: float, capacity: int, mode: BucketMode) -> None:
        self.rate = rate
        self.capacity = capacity
        self.mode = mode
        self._interval = 1.0 / rate
        self._loop = asyncio.get_running_loop()
        self._waiting = 0
        self._next_slot = 0.0
        self._level = 0.0
        self._level_at = self._loop.time()

    async def admit(self) -> bool:
        now = self._loop.time()
        if self.mode == "reject":
            self._level = max(0.0, self._level - (now - self._level_at) * self.rate)
            self._level_at = now
            if self._level + 1 > self.capacity:
                return False
            self._level += 1
            return True
        if self._waiting >= self.capacity:
            return False
        slot = max(now, self._next_slot)
        self._next_slot = slot + self._interval
        if slot > now:
            self._waiting += 1
            try:
                await asyncio.sleep(slot - now)
            finally:
                self._waiting -= 1
        return True
