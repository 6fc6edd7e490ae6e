"""CPU per task: anyio's TaskGroup.start_soon against asyncio.create_task (why the batch's workers
are plain asyncio tasks). python benchmarks/tasks.py [N]"""

from __future__ import annotations

import asyncio
import sys
import time

import anyio


async def _nap() -> None:
    await asyncio.sleep(0.01)


async def main(n: int) -> None:
    started = time.process_time()
    async with anyio.create_task_group() as tg:
        for _ in range(n):
            tg.start_soon(_nap)
    anyio_us = (time.process_time() - started) / n * 1e6
    started = time.process_time()
    await asyncio.gather(*[asyncio.create_task(_nap()) for _ in range(n)])
    asyncio_us = (time.process_time() - started) / n * 1e6
    print(f"anyio start_soon {anyio_us:.1f} us/task, asyncio.create_task {asyncio_us:.1f} us/task")


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 20_000))
