"""The two waiting primitives the batch executor passes every operation through.

Why not asyncio.Queue and asyncio.Semaphore: every operation crosses several of them, and they
do more than the batch needs (on Python 3.11 ``Semaphore.acquire`` scans its waiters with a
generator on every call; ``Queue`` keeps task accounting the batch never reads). Both here are
FIFO and cancellation-safe: a wake-up given to a task that is cancelled before it runs is passed
on, never lost.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Generic, TypeVar

__all__ = ["ByteBudget", "Channel", "Slots", "wake_one"]

T = TypeVar("T")


def wake_one(waiters: deque[asyncio.Future[None]]) -> bool:
    """Wake the first waiter not already done (cancelled); whether there was one."""
    while waiters:
        waiter = waiters.popleft()
        if not waiter.done():
            waiter.set_result(None)
            return True
    return False


class Channel(Generic[T]):
    """An unbounded FIFO from producers to consumers; ``await drained(n)`` waits for fewer than ``n``."""

    __slots__ = ("_drain", "_drain_below", "_items", "_waiters")

    def __init__(self) -> None:
        self._items: deque[T] = deque()
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._drain: asyncio.Future[None] | None = None
        self._drain_below = 0

    def __len__(self) -> int:
        return len(self._items)

    def put(self, item: T) -> None:
        self._items.append(item)
        if self._waiters:
            wake_one(self._waiters)

    def get_nowait(self) -> T:
        """The next item; IndexError if there is none yet."""
        item = self._items.popleft()
        if self._drain is not None and len(self._items) < self._drain_below and not self._drain.done():
            self._drain.set_result(None)
        return item

    async def drained(self, below: int) -> None:
        """Until fewer than ``below`` items are left (one waiter at a time: the producer)."""
        if len(self._items) < below:
            return
        self._drain_below = below
        self._drain = asyncio.get_running_loop().create_future()
        try:
            await self._drain
        finally:
            self._drain = None

    async def get(self) -> T:
        items = self._items
        while not items:
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled() and items:
                    wake_one(self._waiters)  # woken for an item we will not take: wake the next
                raise
        return self.get_nowait()


class Slots:
    """A counting semaphore: ``try_take()`` or ``await take()``, then ``give()``."""

    __slots__ = ("_waiters", "free")

    def __init__(self, count: int) -> None:
        self.free = count
        self._waiters: deque[asyncio.Future[None]] = deque()

    def try_take(self) -> bool:
        """Take a slot if one is free, without waiting: on the hot paths, where a slot is
        usually free, this spares creating and running the coroutine of ``take()``."""
        # a free slot means nobody is waiting: give() hands slots straight to waiters
        if self.free > 0:
            self.free -= 1
            return True
        return False

    async def take(self) -> None:
        if self.try_take():
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.give()  # the slot was handed to us as we were cancelled: hand it on
            raise

    def give(self) -> None:
        if not wake_one(self._waiters):  # else a waiter was handed it (one cancelled meanwhile is skipped)
            self.free += 1


class ByteBudget:
    """A budget of bytes for one taker at a time: ``await take(n)`` waits until ``n`` more fit (or
    nothing is taken, so one item larger than the budget still goes); ``give(n)`` returns them."""

    __slots__ = ("_waiter", "capacity", "used")

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.used = 0
        self._waiter: asyncio.Future[None] | None = None

    def try_take(self, n: int) -> bool:
        """Take ``n`` bytes if they fit now, without waiting."""
        if self.used and self.used + n > self.capacity:
            return False
        self.used += n
        return True

    async def take(self, n: int) -> None:
        while not self.try_take(n):
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None

    def give(self, n: int) -> None:
        self.used -= n
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)
