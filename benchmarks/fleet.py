"""The fleet on Temporal (run.py's section ``fleet``): 1, 2 and 4 worker processes.

This machine has 2 cores, so the bound must be the workers' sockets, not the CPU: every request
takes 50 ms at the mock (a WAN-like latency), each worker may open 10 connections, so a worker's
ceiling is 10 / 0.05 = 200 requests/s, and S stores at 4/s each allow 4·S, well above what 4
workers reach. Each worker count gets its own mock (in this process: its counters are read
directly) and its own app on one Temporal dev server. Measured: achieved requests/s against 4·S
and against the workers' ceiling, 429s, re-sent writes, client CPU-seconds per 1,000 requests
per worker and the Temporal server's CPU per chunk.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import cpu_seconds
from temporalio.client import Client

from shopline_async import UpdateProduct
from shopline_async.fleet import DevServer, StoreSettings, fetch_progress, submit
from shopline_async.fleet._worker import WORKER_HEADER
from shopline_async.mock import Faults, MockShopline, MockStoreConfig

LATENCY = 0.05
CONNECTIONS = 10
CEILING = CONNECTIONS / LATENCY  # per worker


async def _start_worker(address: str, config: Path, base_url: str, home: Path) -> asyncio.subprocess.Process:
    command = [sys.executable, "-m", "shopline_async.cli", "fleet", "worker", "--address", address]
    command += ["--config", str(config), "--base-url", base_url, "--send-identity"]
    command += ["--max-connections", str(CONNECTIONS), "--max-stores", "1000"]
    process = await asyncio.create_subprocess_exec(
        *command, env={**os.environ, "HOME": str(home)}, stdout=asyncio.subprocess.PIPE
    )
    assert process.stdout is not None
    line = await asyncio.wait_for(process.stdout.readline(), 60)
    assert b"fleet worker on" in line, line
    return process


async def _round(server: DevServer, temporal: Client, workers: int, stores: int, per_store: int, home: Path) -> dict:
    tokens = {f"bench-token-{i}": f"store{i}" for i in range(stores)}
    config = home / f"stores-{workers}.json"
    config.write_text(json.dumps({"stores": {handle: token for token, handle in tokens.items()}}))
    store_config = MockStoreConfig(rate=4, capacity=40, faults=Faults(latency_rate=1.0, latency=LATENCY))
    app = f"bench-{workers}-{int(time.time())}"
    async with MockShopline(tokens, config=store_config, validate_bodies=False, sender_header=WORKER_HEADER) as mock:
        processes = [await _start_worker(server.address, config, mock.base_url, home) for _ in range(workers)]
        cpu_before = {p.pid: cpu_seconds(p.pid) for p in processes}
        assert server.pid is not None
        server_before = cpu_seconds(server.pid)
        ops = [
            UpdateProduct(f"store{s}", f"p{n}", {"title": f"t{s}-{n}"}, key=f"{s}-{n}")
            for n in range(per_store)
            for s in range(stores)
        ]
        started = time.perf_counter()
        report = await submit(temporal, ops, app=app, settings=StoreSettings(heartbeat_timeout=30))
        total = len(ops)
        # watched at the mock, which costs nothing, then confirmed by Temporal once the writes are
        # in: a query per workflow is a workflow task on a worker, and polling them all every
        # fraction of a second costs more than the requests measured
        while sum(n for h in mock.handles for n in mock.stats(h).writes.values()) < total:
            await asyncio.sleep(0.05)
        while True:
            progress = await fetch_progress(temporal, app=app)
            if sum(p.totals[report.submission].done for p in progress if not isinstance(p, str)) >= total:
                break
            await asyncio.sleep(0.2)
        wall = time.perf_counter() - started
        cpu_after = {p.pid: cpu_seconds(p.pid) for p in processes}
        server_cpu = cpu_seconds(server.pid) - server_before
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            await process.wait()
        stats = [mock.stats(h) for h in mock.handles]
        by_worker: dict[int, int] = {}
        for s in stats:
            for identity, count in s.senders.items():
                pid = int(identity.split(":")[1])
                by_worker[pid] = by_worker.get(pid, 0) + count
        cpu_per_1000 = [1000 * (cpu_after[pid] - cpu_before[pid]) / by_worker[pid] for pid in by_worker]
    return {
        "workers": workers,
        "stores": stores,
        "operations": total,
        "chunks": report.chunks,
        "wall_s": round(wall, 2),
        "req_per_s": round(total / wall, 1),
        "allowed_req_per_s": 4 * stores,
        "ceiling_req_per_s": CEILING * workers,
        "of_ceiling": round(total / wall / (CEILING * workers), 3),
        "http_429": sum(s.http_429 for s in stats),
        "resent_writes": sum(n - 1 for s in stats for n in s.writes.values()),
        "sender_overlaps": sum(s.sender_overlaps for s in stats),
        "client_cpu_s_per_1000_req": [round(c, 3) for c in sorted(cpu_per_1000)],
        "server_cpu_ms_per_chunk": round(1000 * server_cpu / report.chunks, 1),
    }


async def _bench(quick: bool) -> dict[str, Any]:
    stores, per_store = (250, 24) if quick else (500, 60)
    with tempfile.TemporaryDirectory() as directory:
        home = Path(directory)
        async with DevServer(home=home) as server:
            temporal = await Client.connect(server.address)
            rounds = []
            for workers in (1, 2, 4):
                row = await _round(server, temporal, workers, stores, per_store, home)
                print(
                    f"  {workers} worker(s): {row['req_per_s']:,.0f} req/s ({row['of_ceiling']:.2f} of the workers' "
                    f"ceiling {row['ceiling_req_per_s']:,.0f}; stores allow {row['allowed_req_per_s']:,}), "
                    f"429s {row['http_429']}, re-sent {row['resent_writes']}, client CPU "
                    f"{row['client_cpu_s_per_1000_req']} s per 1,000 req, server {row['server_cpu_ms_per_chunk']} ms "
                    "CPU per chunk",
                    flush=True,
                )
                rounds.append(row)
    return {"latency_s": LATENCY, "connections_per_worker": CONNECTIONS, "rounds": rounds}


def bench_fleet(quick: bool) -> dict[str, Any]:
    return asyncio.run(_bench(quick))
