"""Soak: thousands of operations through faults and 429 storms; nothing lost, nothing leaked."""

from __future__ import annotations

import asyncio
import time

import pytest

from shopline_async import (
    APIError,
    BatchExecutor,
    ProductUpdate,
    RateLimit,
    RetryPolicy,
    ShoplineClient,
    Timeout,
    UpdateProduct,
)
from shopline_async.mock import Faults, MockShopline, MockStoreConfig

STORES = {f"token-{h}": h for h in ("north", "south", "east", "west")}


@pytest.mark.slow
async def test_soak_with_faults_and_a_429_storm(caplog: pytest.LogCaptureFixture) -> None:
    faults = Faults(seed=11, error_rate=0.10, drop_rate=0.02, stall_rate=0.02, stall_seconds=0.6)
    stormy = MockStoreConfig(rate=400, capacity=20, mode="reject", faults=faults)
    async with MockShopline(
        STORES, config=MockStoreConfig(rate=None, faults=faults), store_configs={"west": stormy}
    ) as server:
        retry = RetryPolicy(max_attempts=10, initial_delay=0.01, max_delay=0.05, deadline=30)
        async with (
            ShoplineClient(
                base_url=server.base_url, retry=retry, timeout=Timeout(total=0.3), rate_limit=RateLimit.unlimited(50)
            ) as client,
            ShoplineClient(base_url=server.base_url, retry=RetryPolicy.disabled()) as storm_client,
        ):
            for token, handle in STORES.items():
                client.store(handle, token, rate_limit=RateLimit(rate=300, burst=5) if handle == "west" else None)
            storm_store = storm_client.store("west", "token-west", rate_limit=RateLimit.unlimited(30))

            async def storm() -> None:  # another app sharing west's bucket, ignoring its 429s
                while True:
                    await asyncio.gather(
                        *(storm_store.products.update(f"storm{i}", {"title": "s"}) for i in range(30)),
                        return_exceptions=True,
                    )

            storm_task = asyncio.create_task(storm())
            names = list(STORES.values())
            ops = [UpdateProduct(names[n % 4], f"p{n}", ProductUpdate(title=f"T{n}"), key=n) for n in range(10_000)]
            started = time.monotonic()
            report = await BatchExecutor(client, concurrency=120).gather(ops)
            elapsed = time.monotonic() - started
            storm_task.cancel()
            await asyncio.gather(storm_task, return_exceptions=True)

            # a following batch runs at full speed: nothing is stuck in the pools or the limiters
            for handle in names:
                server.configure(handle, MockStoreConfig(rate=None))
            follow_started = time.monotonic()
            follow = await BatchExecutor(client).gather(
                UpdateProduct(names[n % 4], f"f{n}", {"title": "f"}) for n in range(400)
            )
            follow_elapsed = time.monotonic() - follow_started

    summary = report.summary
    assert [r.key for r in report.results] == list(range(10_000))  # exactly one result each
    # The storm client resends the moment its 429s come back, so it takes nearly every slot west's bucket
    # frees; now and then an operation loses all its attempts to it, near the batch's end when few of
    # ours are left (README, Reliability). Such a failure must be honest: every attempt spent, on west.
    gave_up = [r for r in report.results if not r.ok]
    for result in gave_up:
        assert (result.store, result.outcome, result.attempts) == ("west", "failed", retry.max_attempts), result
        assert isinstance(result.error, APIError) and result.error.attempts == retry.max_attempts
    assert len(gave_up) <= 10, summary
    assert summary.retries > 1_000 and summary.rate_limited > 0
    for result in report.results:  # no lost write; a stalled attempt may land late, a second time
        writes = server.stats(result.store).writes[f"p{result.key}"]
        assert (1 if result.ok else 0) <= writes <= result.attempts
    assert server.stats("west").http_429 > 0
    assert follow.summary.ok == 400 and follow_elapsed < 5
    await asyncio.sleep(0.05)
    leftovers = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    assert leftovers == []
    for complaint in ("Unclosed", "Task was destroyed", "never retrieved"):
        assert complaint not in caplog.text
    print(
        f"soak: 10,000 ops in {elapsed:.1f} s, {summary.retries} retries, {summary.rate_limited} 429s, {len(gave_up)} gave up"
    )
