"""The fleet on Temporal and PostgreSQL (run.py's section ``fleet``).

The issue's scenario: S stores x N operations through 4 worker processes against the mock (4/s,
capacity 40 per store, 50 ms a request), PostgreSQL from the pgserver wheel, Temporal's dev server.
This machine has 2 cores, so the bound is the workers' sockets and CPU, not the stores: every
request takes 50 ms at the mock, each worker may open 10 connections, so a worker's ceiling is
10 / 0.05 = 200 requests/s, and S stores at 4/s allow 4·S. Measured: achieved requests/s against
both, 429s, re-sent writes, Temporal history bytes per operation, rows PostgreSQL wrote per
second (its own counters), ``fleet results`` for every row (a subprocess, to a file), and two
resubmissions: the unchanged catalog (requests: 0) and one with 1% of its rows changed.
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

import psycopg
from temporalio.client import Client

from shopline_async import UpdateProduct
from shopline_async.fleet import DevServer, FleetDatabase, StoreSettings, submit, workflow_id
from shopline_async.fleet._dev import local_postgres
from shopline_async.fleet._model import WORKFLOW_NAME
from shopline_async.fleet._worker import WORKER_HEADER
from shopline_async.mock import Faults, MockShopline, MockStoreConfig

LATENCY = 0.05
CONNECTIONS = 10
CEILING = CONNECTIONS / LATENCY  # per worker


async def _start_worker(
    address: str, config: Path, base_url: str, home: Path, database: str
) -> asyncio.subprocess.Process:
    command = [sys.executable, "-m", "shopline_async.cli", "fleet", "worker", "--address", address]
    command += ["--config", str(config), "--base-url", base_url, "--send-identity", "--database", database]
    command += ["--max-connections", str(CONNECTIONS), "--max-stores", "1000"]
    process = await asyncio.create_subprocess_exec(
        *command, env={**os.environ, "HOME": str(home)}, stdout=asyncio.subprocess.PIPE
    )
    assert process.stdout is not None
    line = await asyncio.wait_for(process.stdout.readline(), 60)
    assert b"fleet worker on" in line, line
    return process


def _rows_written(url: str) -> int:
    with psycopg.connect(url) as connection:
        found = connection.execute(
            "SELECT tup_inserted + tup_updated + tup_deleted FROM pg_stat_database WHERE datname = current_database()"
        ).fetchone()
    assert found is not None
    return int(found[0])


async def _drain(
    temporal: Client, database: FleetDatabase, mock: MockShopline, ops: list[UpdateProduct], app: str
) -> tuple[float, int]:
    """Submit ``ops``; wait until the database says every one is done: (seconds, requests sent)."""
    requests_before = sum(mock.stats(h).requests for h in mock.handles)
    started = time.perf_counter()
    report = await submit(temporal, database, ops, app=app, settings=StoreSettings(heartbeat_timeout=30))
    while sum(s.done for s in await database.status(app, report.submission)) < len(ops):
        await asyncio.sleep(0.25)
    wall = time.perf_counter() - started
    return wall, sum(mock.stats(h).requests for h in mock.handles) - requests_before


async def _history_bytes(temporal: Client, app: str) -> int:
    total = 0
    async for run in temporal.list_workflows(f'WorkflowType = "{WORKFLOW_NAME}"'):
        if run.id.startswith(workflow_id(app, "")):
            history = await temporal.get_workflow_handle(run.id, run_id=run.run_id).fetch_history()
            total += sum(event.ByteSize() for event in history.events)
    return total


async def _round(
    server: DevServer, temporal: Client, url: str, workers: int, stores: int, per_store: int, home: Path
) -> dict:
    tokens = {f"bench-token-{i}": f"store{i}" for i in range(stores)}
    config = home / f"stores-{workers}.json"
    config.write_text(json.dumps({"stores": {handle: token for token, handle in tokens.items()}}))
    store_config = MockStoreConfig(rate=4, capacity=40, faults=Faults(latency_rate=1.0, latency=LATENCY))
    app = f"bench-{workers}-{int(time.time())}"
    async with MockShopline(tokens, config=store_config, validate_bodies=False, sender_header=WORKER_HEADER) as mock:
        processes = [await _start_worker(server.address, config, mock.base_url, home, url) for _ in range(workers)]
        database = await FleetDatabase.connect(url)
        try:
            ops = [
                UpdateProduct(f"store{s}", f"p{n}", {"title": f"t{s}-{n}"}, key=f"{s}-{n}")
                for n in range(per_store)
                for s in range(stores)
            ]
            total = len(ops)
            rows_before = _rows_written(url)
            wall, requests = await _drain(temporal, database, mock, ops, app)
            rows_written = _rows_written(url) - rows_before
            stats = [mock.stats(h) for h in mock.handles]
            resent = sum(n - 1 for s in stats for n in s.writes.values())  # before the resubmissions write again
            history = await _history_bytes(temporal, app)

            results_file = home / "results.jsonl"
            started = time.perf_counter()
            command = [sys.executable, "-m", "shopline_async.cli", "fleet", "results", "--database", url]
            command += ["--app", app, "--output", str(results_file)]
            fetched = await asyncio.create_subprocess_exec(*command, stderr=asyncio.subprocess.DEVNULL)
            await fetched.wait()
            results_s = time.perf_counter() - started
            results_rows = sum(1 for _ in results_file.open("rb"))

            unchanged_wall, unchanged_requests = await _drain(temporal, database, mock, ops, app)
            changed = list(ops)
            for i in range(0, total, 100):  # 1%
                op = changed[i]
                changed[i] = UpdateProduct(op.store, op.product_id, {"title": "changed"}, key=op.key)
            changed_wall, changed_requests = await _drain(temporal, database, mock, changed, app)
        finally:
            await database.close()
            for process in processes:
                process.send_signal(signal.SIGTERM)
            for process in processes:
                await process.wait()
    return {
        "workers": workers,
        "stores": stores,
        "operations": total,
        "wall_s": round(wall, 2),
        "req_per_s": round(requests / wall, 1),
        "allowed_req_per_s": 4 * stores,
        "ceiling_req_per_s": CEILING * workers,
        "of_ceiling": round(requests / wall / (CEILING * workers), 3),
        "requests": requests,
        "http_429": sum(s.http_429 for s in stats),
        "resent_writes": resent,
        "sender_overlaps": sum(s.sender_overlaps for s in stats),
        "history_bytes_per_op": round(history / total, 1),
        "pg_rows_written": rows_written,
        "pg_rows_per_s": round(rows_written / wall),
        "results_rows": results_rows,
        "results_s": round(results_s, 2),
        "resubmitted_unchanged": {"requests": unchanged_requests, "wall_s": round(unchanged_wall, 2)},
        "resubmitted_1pct_changed": {
            "requests": changed_requests,
            "expected": len(range(0, total, 100)),
            "wall_s": round(changed_wall, 2),
        },
    }


async def _bench(quick: bool) -> dict[str, Any]:
    stores, per_store = (100, 50) if quick else (1000, 100)
    with tempfile.TemporaryDirectory() as directory:
        home = Path(directory)
        os.environ["HOME"] = str(home)  # pgserver's and temporal's state
        with local_postgres(home / "pg") as url:
            async with DevServer(home=home) as server:
                temporal = await Client.connect(server.address)
                row = await _round(server, temporal, url, 4, stores, per_store, home)
                print(
                    f"  4 workers, {stores:,} stores x {per_store}: {row['req_per_s']:,.0f} req/s "
                    f"({row['of_ceiling']:.2f} of the workers' ceiling {row['ceiling_req_per_s']:,.0f}; stores allow "
                    f"{row['allowed_req_per_s']:,}), 429s {row['http_429']}, re-sent {row['resent_writes']}, history "
                    f"{row['history_bytes_per_op']} B/op, PostgreSQL {row['pg_rows_per_s']:,} rows/s, results "
                    f"{row['results_rows']:,} rows in {row['results_s']} s, resubmitted: unchanged "
                    f"{row['resubmitted_unchanged']['requests']} requests, 1% changed "
                    f"{row['resubmitted_1pct_changed']['requests']} (of {row['resubmitted_1pct_changed']['expected']})",
                    flush=True,
                )
    return {"latency_s": LATENCY, "connections_per_worker": CONNECTIONS, "rounds": [row]}


def bench_fleet(quick: bool) -> dict[str, Any]:
    return asyncio.run(_bench(quick))
