"""The batch's schedule of attempts: per store a queue and one timer, and the queue of operations
ready for a worker.

Each store's queue is a deque, not a task. Its store's limiter decides when the head may go and
reserves that moment at once (the pacer's slot and an in-flight slot): due now, the operation
joins the ready queue; due later, the store arms one timer (``loop.call_at``) for that moment; with
every in-flight slot taken, the next release pumps the queue again. A retry comes back to the front
of its store's queue. An operation not yet sent is turned away instead while the batch stops or
its store cannot be written. The executor (``_batch``) owns the workers, the input and the results.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Hashable
from typing import Any

import msgspec

from ._channels import Channel
from ._client import Store
from ._constants import LOGGER_NAME
from ._errors import APIStatusError, ShoplineError
from ._ledger import LedgerEntry
from ._operations import AnyResult
from ._resources import Images, Products
from ._transport import PreparedRequest, Tries

logger = logging.getLogger(LOGGER_NAME)


class Lane:
    """One store's operations waiting for admission, in order (a retry comes back at the front),
    and the one timer it arms for the moment its limiter reserved for the head. No task."""

    __slots__ = (
        "blocked_by",
        "limiter",
        "pumping",
        "queue",
        "schedule",
        "store",
        "timed",
        "timer",
        "transport",
        "waiting_release",
    )

    def __init__(self, schedule: Schedule, store: Store) -> None:
        self.schedule = schedule
        self.store = store
        self.transport = store._transport
        self.limiter = store._transport.limiter
        self.queue: deque[Item] = deque()
        self.timer: asyncio.TimerHandle | None = None
        self.timed: Item | None = None
        """The operation holding the reservation the timer is armed for."""
        self.blocked_by: APIStatusError | None = None
        self.waiting_release = False
        self.pumping = False

    def pump(self) -> None:
        """Reserve admission for the queued operations while the store admits at once; for the first
        one it admits later, arm the timer. An operation never sent is turned away instead while the
        batch stops or the store cannot be written."""
        if self.pumping:  # called again from a result it settles (the next operation on its target)
            return  # the loop below sees what was queued meanwhile
        self.pumping = True
        try:
            self._pump()
        finally:
            self.pumping = False

    def _pump(self) -> None:
        schedule, queue, limiter = self.schedule, self.queue, self.limiter
        while queue and self.timer is None and not schedule.closed:
            item = queue[0]
            if not item.tries.attempts and (schedule.stopping or self.blocked_by is not None):
                queue.popleft()
                schedule.waiting -= 1
                schedule.refuse(item)
                continue
            due = limiter.reserve()
            if due is None:  # every in-flight slot of the store taken: the next release pumps again
                if not self.waiting_release:
                    self.waiting_release = True
                    limiter.notify_on_release(self._released)
                return
            queue.popleft()
            item.reserved = True
            schedule.admitted(item)
            if due and due > limiter.now():
                self.timed = item
                self.timer = schedule.call_at(due, self._due)
            else:
                schedule.make_ready(item)

    def _released(self) -> None:
        self.waiting_release = False
        self.pump()

    def _due(self) -> None:
        item, self.timed, self.timer = self.timed, None, None
        assert item is not None
        if self.limiter.resume_at > self.limiter.now():
            # a 429 came since it was reserved: that reservation is void, and the store's pacer,
            # held until the cool-down ends, gives the next ones without a burst
            item.reserved = False
            self.limiter.release()
            self.queue.appendleft(item)
        else:
            self.schedule.make_ready(item)
        self.pump()

    def requeue(self, item: Item) -> None:
        """``item`` waits for admission again, ahead of the store's other operations (a retry)."""
        item.retry = None
        item.waiting_since = time.monotonic()
        self.queue.appendleft(item)
        self.schedule.waiting += 1
        self.pump()

    def block(self, error: APIStatusError) -> None:
        """The store answered that it cannot be written: its operations not yet sent never will be."""
        if self.blocked_by is None:
            self.blocked_by = error
            logger.warning(
                "store %s: HTTP %d (traceId=%s): it cannot be written, its other operations are not sent",
                self.store.handle,
                error.status,
                error.trace_id,
            )
        self.pump()

    def turn_away(self) -> None:
        """The batch stops: the operation on the timer, if never sent, and the queued ones are reported now."""
        item = self.timed
        if self.timer is not None and item is not None and not item.tries.attempts:
            self.timer.cancel()
            self.timer = self.timed = None
            item.reserved = False
            self.limiter.release()
            self.schedule.waiting -= 1
            self.schedule.refuse(item)
        self.pump()

    def close(self) -> None:
        """The batch is over: no timer fires into it, and the store's limiter keeps no callback to it."""
        if self.timer is not None:
            self.timer.cancel()
        self.timer = self.timed = None
        if self.waiting_release:
            self.limiter.forget_release(self._released)
            self.waiting_release = False


class Schedule:
    """One batch's attempts: its stores' lanes, the ready queue, the workers."""

    __slots__ = (
        "admitted",
        "closed",
        "in_flight",
        "lanes",
        "ready",
        "refuse",
        "retrying",
        "stopping",
        "unsettled",
        "waiting",
    )

    def __init__(self, admitted: Callable[[Item], None], refuse: Callable[[Item], None]) -> None:
        self.admitted = admitted
        """Called as a store admits an operation (reserves its attempt), before it is ready."""
        self.refuse = refuse
        """Settles an operation never sent that is not to be: the batch stops, or its store cannot be written."""
        self.lanes: dict[Store, Lane] = {}
        """By Store object: one per handle (client.store() hands out the same one), hashed by identity."""
        self.ready: Channel[Item | None] = Channel()
        """Operations their store admitted (reservation taken), waiting for a worker; None ends one."""
        self.retrying: dict[int, Item] = {}
        """Operations waiting on a timer to be tried again, by index."""
        self.in_flight = 0
        self.waiting = 0
        """Operations in the stores' queues or on their timers: held back by their store, not by a worker."""
        self.unsettled = 0
        """Operations taken from the input and not yet settled (given their result)."""
        self.stopping = False
        self.closed = False

    @staticmethod
    def call_at(when: float, callback: Callable[[], None]) -> asyncio.TimerHandle:
        # the loop's clock is the limiter's: its reservations are times on it
        return asyncio.get_running_loop().call_at(when, callback)

    def lane(self, store: Store) -> Lane:
        lane = self.lanes.get(store)
        if lane is None:
            lane = self.lanes[store] = Lane(self, store)
        return lane

    def make_ready(self, item: Item) -> None:
        self.waiting -= 1
        self.ready.put(item)

    def stop(self) -> None:
        self.stopping = True
        for lane in list(self.lanes.values()):
            lane.turn_away()


class Item(msgspec.Struct):
    """One operation taken from the input, and its attempts."""

    index: int
    op: Any
    key: Hashable = None
    store_name: str = ""
    """The store as the operation named it: what every result reports, whatever its outcome."""
    store: Store | None = None
    lane: Lane | None = None
    resource: Products | Images | None = None
    prepared: PreparedRequest[Any] | None = None
    error: ShoplineError | None = None
    tries: Tries = msgspec.field(default_factory=Tries)
    result: AnyResult | None = None
    charged: int = 0
    """Bytes of ``max_pending_bytes`` it holds until its result is handed over."""
    body_hash: bytes | None = None
    """With a ledger: the hash recorded for the body once its result is known."""
    intent: int = 0
    """With a ledger: the number of the intent recorded before it is sent (0: none, not to be sent)."""
    before: LedgerEntry | None = None
    """With a ledger: its target's entry before the intent, restored if it is not sent after all."""
    target: tuple[str, str, str] | None = None
    """(base URL, store, path) while it holds its target's turn: the next operation on the target waits for it."""
    reserved: bool = False
    """Its store's limiter admitted it (an in-flight slot and a pacer slot), and no attempt used that yet."""
    running: bool = False
    """An attempt of it is under way: cancelled now, it may or may not be applied."""
    waiting_since: float = 0.0
    """When it last began to wait for admission or a worker: time queued, which the retry budget does not count."""
    retry: asyncio.TimerHandle | None = None
    """The timer that puts it back in its store's queue for its next attempt."""
    trace: Any = None
    """The observer's handle for it (its span), if the client has an observer."""
