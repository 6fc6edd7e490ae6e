"""The sync ledger (run.py's section ``ledger``): what a nightly rerun costs when 1% changed.

Against the mock with rate limiting off, one store: a first run of ``rows`` product updates with
an empty ledger beside the same run without one (client CPU per row, alternating rounds), then
a rerun with nothing changed (wall time; nothing may be sent) and one with 1% of the rows changed
(exactly those must be sent).
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from common import STORE, mock_server_process, mock_token

from shopline_async import BatchExecutor, Ledger, RateLimit, ShoplineClient, UpdateProduct


def operations(rows: int, changed: set[int], generation: int) -> Iterator[UpdateProduct]:
    for i in range(rows):
        title = f"Shirt {i}" + (f" v{generation}" if i in changed else "")
        yield UpdateProduct(STORE, f"p{i}", {"title": title, "variants": [{"sku": f"S{i}", "price": "19.90"}]})


async def one_run(base_url: str, ops: Iterator[UpdateProduct], ledger: Ledger | None) -> dict[str, float]:
    async with ShoplineClient(base_url=base_url, rate_limit=RateLimit.unlimited()) as client:
        client.store(STORE, mock_token())
        cpu, wall = time.process_time(), time.perf_counter()
        sent = unchanged = 0
        latencies: list[float] = []
        async with BatchExecutor(client, ledger=ledger).stream(ops) as results:
            async for result in results:
                assert result.ok, result.error
                sent += result.outcome == "ok"
                unchanged += result.outcome == "unchanged"
                if result.outcome == "ok":
                    latencies.append(result.network_time)
        latencies.sort()
        return {
            "cpu_s": time.process_time() - cpu,
            "wall_s": time.perf_counter() - wall,
            "sent": sent,
            "unchanged": unchanged,
            # from the request's send to its answer read: an event loop kept busy elsewhere (skipping
            # unchanged rows without yielding, say) shows up here
            "latency_ms_p50": 1000 * latencies[len(latencies) // 2] if latencies else 0.0,
            "latency_ms_p99": 1000 * latencies[int(len(latencies) * 0.99)] if latencies else 0.0,
            "latency_ms_max": 1000 * latencies[-1] if latencies else 0.0,
        }


class TimedLedger(Ledger):
    """A Ledger that times each commit: how long it holds the event loop."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.commit_ms: list[float] = []

    def commit(self) -> None:
        started = time.perf_counter()
        super().commit()
        self.commit_ms.append(1000 * (time.perf_counter() - started))


def bench_ledger(quick: bool) -> dict[str, Any]:
    rows = 20_000 if quick else 100_000
    rounds = 1 if quick else 2
    changed = set(range(0, rows, 100))  # 1%
    with tempfile.TemporaryDirectory() as tmp, mock_server_process("--unlimited") as base_url:
        with_ledger: list[float] = []
        without: list[float] = []
        for n in range(rounds):
            without.append(asyncio.run(one_run(base_url, operations(rows, set(), 0), None))["cpu_s"])
            with TimedLedger(Path(tmp) / f"first-{n}.sqlite3") as ledger:
                first = asyncio.run(one_run(base_url, operations(rows, set(), 0), ledger))
                assert first["sent"] == rows
                with_ledger.append(first["cpu_s"])
                commits = sorted(ledger.commit_ms)
        with Ledger(Path(tmp) / "first-0.sqlite3") as ledger:
            unchanged = asyncio.run(one_run(base_url, operations(rows, set(), 0), ledger))
            nightly = asyncio.run(one_run(base_url, operations(rows, changed, 1), ledger))
    result: dict[str, Any] = {
        "rows": rows,
        "changed": len(changed),
        "sent": int(nightly["sent"]),
        "unchanged_rows_skipped": int(nightly["unchanged"]),
        "unchanged_run_sent": int(unchanged["sent"]),
        "cpu_ratio_first_run": round(statistics.median(w / o for w, o in zip(with_ledger, without, strict=True)), 3),
        "first_run_cpu_us_per_row": round(1e6 * statistics.median(with_ledger) / rows, 1),
        "no_ledger_cpu_us_per_row": round(1e6 * statistics.median(without) / rows, 1),
        "commits": len(commits),
        "commit_ms_p50": round(commits[len(commits) // 2], 2),
        "commit_ms_p99": round(commits[int(len(commits) * 0.99)], 2),
        "commit_ms_max": round(commits[-1], 2),
        "unchanged_run_s": round(unchanged["wall_s"], 2),
        "unchanged_run_us_per_row": round(1e6 * unchanged["wall_s"] / rows, 1),
        "changed_run_s": round(nightly["wall_s"], 2),
        "changed_run_latency_ms_p50": round(nightly["latency_ms_p50"], 1),
        "changed_run_latency_ms_p99": round(nightly["latency_ms_p99"], 1),
        "changed_run_latency_ms_max": round(nightly["latency_ms_max"], 1),
        "first_run_latency_ms_p99": round(first["latency_ms_p99"], 1),
        # what the rerun saves at SHOPLINE's 4 requests/s per store
        "hours_at_4_per_s_full": round(rows / 4 / 3600, 2),
        "hours_at_4_per_s_changed": round(nightly["sent"] / 4 / 3600, 2),
        "rounds": rounds,
    }
    print(
        f"  {rows:,} rows, {len(changed):,} changed: the rerun sent {result['sent']:,} "
        f"(an unchanged rerun sent {result['unchanged_run_sent']} in {result['unchanged_run_s']} s, "
        f"{result['unchanged_run_us_per_row']} us a row); first run with the ledger "
        f"{result['cpu_ratio_first_run']}x the CPU of one without ({result['first_run_cpu_us_per_row']} "
        f"vs {result['no_ledger_cpu_us_per_row']} us a row); at 4 req/s: {result['hours_at_4_per_s_full']} h "
        f"-> {result['hours_at_4_per_s_changed']} h; a commit held the loop {result['commit_ms_p50']} ms "
        f"(p50), {result['commit_ms_p99']} ms (p99), {result['commit_ms_max']} ms (max) of {result['commits']}; "
        f"the 1% rerun's requests took {result['changed_run_latency_ms_p50']} ms (p50), "
        f"{result['changed_run_latency_ms_p99']} ms (p99), {result['changed_run_latency_ms_max']} ms (max), "
        f"the first run's {result['first_run_latency_ms_p99']} ms (p99)",
        flush=True,
    )
    return result
