"""The batch executor's waiting primitives: FIFO, and no wake-up lost to a cancellation."""

from __future__ import annotations

import asyncio

from shopline_async._channels import Channel, Slots


async def test_channel_is_fifo_for_items_and_for_waiting_consumers() -> None:
    channel: Channel[int] = Channel()
    got: list[tuple[str, int]] = []

    async def consume(name: str) -> None:
        got.append((name, await channel.get()))

    consumers = [asyncio.create_task(consume(name)) for name in "abc"]
    await asyncio.sleep(0)
    for n in range(3):
        channel.put(n)
    await asyncio.gather(*consumers)
    assert got == [("a", 0), ("b", 1), ("c", 2)]
    channel.put(7)
    channel.put(8)
    assert [await channel.get(), await channel.get()] == [7, 8] and len(channel) == 0


async def test_channel_passes_on_a_wake_up_its_cancelled_consumer_cannot_use() -> None:
    channel: Channel[int] = Channel()
    first = asyncio.create_task(channel.get())
    second = asyncio.create_task(channel.get())
    await asyncio.sleep(0)
    channel.put(1)  # wakes `first`...
    first.cancel()  # ...which is cancelled before it runs
    assert await asyncio.wait_for(second, 1) == 1
    assert first.cancelled()


async def test_slots_cap_and_queue_in_order() -> None:
    slots = Slots(2)
    await slots.take()
    await slots.take()
    assert slots.free == 0
    order: list[str] = []

    async def wait(name: str) -> None:
        await slots.take()
        order.append(name)

    waiters = [asyncio.create_task(wait(name)) for name in "ab"]
    await asyncio.sleep(0)
    slots.give()
    slots.give()
    await asyncio.gather(*waiters)
    assert order == ["a", "b"] and slots.free == 0
    slots.give()
    assert slots.free == 1


async def test_slots_hand_on_a_slot_given_to_a_cancelled_waiter() -> None:
    slots = Slots(1)
    await slots.take()
    first = asyncio.create_task(slots.take())
    second = asyncio.create_task(slots.take())
    await asyncio.sleep(0)
    slots.give()  # goes to `first`...
    first.cancel()  # ...cancelled before it runs: the slot must reach `second`
    await asyncio.wait_for(second, 1)
    assert first.cancelled() and slots.free == 0
    slots.give()
    assert slots.free == 1  # no slot was lost or made up
