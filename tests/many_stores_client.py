"""A client process for tests/test_many_stores.py: many stores, default settings, a low descriptor limit.

python many_stores_client.py BASE_URL STORES OPS_PER_STORE ORDER(by_store|round_robin) FD_LIMIT
Prints one JSON line: ok, total, peak_sockets, peak_fds, wall_s, outcomes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import resource
import sys
import time
from collections import Counter

from shopline_async import BatchExecutor, ShoplineClient, UpdateProduct


def descriptors() -> tuple[int, int]:
    """(sockets, all descriptors) this process has open now."""
    sockets = total = 0
    for fd in os.listdir("/proc/self/fd"):
        total += 1
        with contextlib.suppress(OSError):  # closed while we looked
            sockets += os.readlink(f"/proc/self/fd/{fd}").startswith("socket:")
    return sockets, total


async def main(base_url: str, stores: int, per_store: int, order: str) -> dict[str, object]:
    handles = [f"s{n}" for n in range(stores)]
    pairs = [(h, i) for h in handles for i in range(per_store)]
    if order == "round_robin":
        pairs = [(h, i) for i in range(per_store) for h in handles]
    peak = [0, 0]

    async def sample() -> None:
        while True:
            sockets, total = descriptors()
            peak[0], peak[1] = max(peak[0], sockets), max(peak[1], total)
            await asyncio.sleep(0.005)

    outcomes: Counter[str] = Counter()
    async with ShoplineClient(base_url=base_url) as client:
        for handle in handles:
            client.store(handle, f"token-{handle}")
        sampler = asyncio.create_task(sample())
        started = time.monotonic()
        ops = (UpdateProduct(h, f"p{i}", {"title": f"{h} {i}"}) for h, i in pairs)
        async with BatchExecutor(client).stream(ops) as results:
            async for result in results:
                outcomes[result.outcome if result.ok else f"{result.outcome} {result.status} {result.error}"] += 1
        wall = time.monotonic() - started
        sampler.cancel()
    return {
        "ok": outcomes["ok"],
        "total": sum(outcomes.values()),
        "peak_sockets": peak[0],
        "peak_fds": peak[1],
        "wall_s": round(wall, 3),
        "cpu_s": round(time.process_time(), 3),
        "outcomes": dict(outcomes.most_common(5)),
    }


if __name__ == "__main__":
    url, count, per, how, limit = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], int(sys.argv[5])
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (limit, hard))
    print(json.dumps(asyncio.run(main(url, count, per, how))))
