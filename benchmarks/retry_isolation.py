"""Retry isolation (run.py's section ``retry_isolation``): does one operation's backoff hold back its store?

Four stores paced at a high rate (200 requests/s each: 800/s for the batch, so a round lasts some
12 s and the last retry's backoff, 0.5 s at first, is a small part of it), against three mock
servers side by side that answer 0%, 1% and 5% of requests with a 5xx (``--error-rate``); the
client's default retry policy. The same batch of product updates runs against each, in
interleaved rounds; throughput with errors is reported against throughput without, as the median
of the rounds' ratios. A batch whose stores stall while one operation backs off loses most of its
throughput to a 1% error rate; one that isolates retries loses the retries' own requests and the
tail of the last backoff.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from contextlib import ExitStack
from typing import Any

from common import mock_server_process

from shopline_async import BatchExecutor, RateLimit, ShoplineClient, UpdateProduct

STORES = [f"s{n}" for n in range(4)]
RATE = 200.0  # requests/s per store
RATES = (0.0, 0.01, 0.05)


async def one_round(base_url: str, operations: int) -> tuple[float, int]:
    async with ShoplineClient(base_url=base_url, rate_limit=RateLimit(rate=RATE, burst=1)) as client:
        for handle in STORES:
            client.store(handle, f"mock-token-{handle}")
        ops = (UpdateProduct(STORES[i % 4], f"p{i}", {"title": f"T{i}"}) for i in range(operations))
        started = time.perf_counter()
        report = await BatchExecutor(client).gather(ops)
        elapsed = time.perf_counter() - started
    assert report.summary.ok == operations, report.summary
    return operations / elapsed, report.summary.retries


def bench_retry_isolation(quick: bool) -> dict[str, Any]:
    operations = 10_000
    rounds = 2 if quick else 4
    with ExitStack() as stack:
        urls = {
            rate: stack.enter_context(
                mock_server_process("--unlimited", "--error-rate", str(rate), "--stores", ",".join(STORES))
            )
            for rate in RATES
        }
        asyncio.run(one_round(urls[0.0], 500))  # warm-up
        throughput: dict[float, list[float]] = {rate: [] for rate in RATES}
        retries: dict[float, list[int]] = {rate: [] for rate in RATES}
        for n in range(rounds):
            for rate in RATES[n % 3 :] + RATES[: n % 3]:  # a rotating order
                per_s, retried = asyncio.run(one_round(urls[rate], operations))
                throughput[rate].append(per_s)
                retries[rate].append(retried)
    result: dict[str, Any] = {"operations": operations, "rounds": rounds, "stores": len(STORES)}
    for rate in RATES[1:]:
        ratios = sorted(e / c for e, c in zip(throughput[rate], throughput[0.0], strict=True))
        result[f"ratio_at_{rate:.0%}"] = round(statistics.median(ratios), 3)
        result[f"ratio_at_{rate:.0%}_range"] = [round(ratios[0], 3), round(ratios[-1], 3)]
        result[f"retries_at_{rate:.0%}"] = int(statistics.median(retries[rate]))
    result["ops_per_s_clean"] = round(statistics.median(throughput[0.0]))
    print(
        f"  {operations:,} updates over {len(STORES)} stores at {RATE:.0f}/s each: throughput with 1% 5xx "
        f"{result['ratio_at_1%']}x the clean run's (rounds {result['ratio_at_1%_range']}), with 5% "
        f"{result['ratio_at_5%']}x ({result['ratio_at_5%_range']}); clean {result['ops_per_s_clean']:,} ops/s",
        flush=True,
    )
    return result


if __name__ == "__main__":
    import sys

    bench_retry_isolation("--quick" in sys.argv)
