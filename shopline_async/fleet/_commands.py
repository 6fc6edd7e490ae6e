"""What ``shopline-async fleet ...`` runs; the command line itself is in ``cli.py``."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO

import msgspec
from temporalio.client import Client

from .._errors import ConfigError
from .._operations import Operation
from .._rows import open_input, read_operations
from .._sync import EXIT_FAILED, EXIT_OK, EXIT_USAGE, plural
from .._telemetry import Observer
from ._database import FleetDatabase, StoreStatus
from ._dev import DevServer, local_postgres
from ._model import StoreSettings
from ._submit import Invalid, stop, submit
from ._worker import StoreConfig, run_worker

__all__ = [
    "dev_command",
    "forget_command",
    "results_command",
    "status_command",
    "stop_command",
    "submit_command",
    "with_read_errors",
    "worker_command",
]

_encoder = msgspec.json.Encoder()
EXIT_TIMEOUT = 3
_WAIT_POLL = 1.0  # seconds between looks while status --wait waits


async def connect(address: str, namespace: str) -> Client:
    try:
        return await Client.connect(address, namespace=namespace)
    except RuntimeError as exc:  # what temporalio raises for a server it cannot reach
        raise ConfigError(f"cannot reach Temporal at {address} (namespace {namespace}): {exc}") from None


async def _until_signalled(main: asyncio.Task[None]) -> None:
    """Run ``main`` until it ends or SIGINT/SIGTERM arrives (then cancel it and return)."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, main.cancel)
    with contextlib.suppress(asyncio.CancelledError):
        await main


async def worker_command(
    *,
    address: str,
    namespace: str,
    task_queue: str,
    stores: Mapping[str, StoreConfig],
    base_url: str | None,
    max_concurrent_stores: int,
    concurrency: int,
    allow_insecure_http: bool,
    send_identity: bool,
    max_connections: int | None,
    database: str,
    telemetry: Observer | None = None,
) -> int:
    temporal = await connect(address, namespace)
    ready, stop = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(
        run_worker(
            temporal,
            stores,
            database,
            task_queue=task_queue,
            base_url=base_url,
            max_concurrent_stores=max_concurrent_stores,
            concurrency=concurrency,
            allow_insecure_http=allow_insecure_http,
            send_identity=send_identity,
            max_connections=max_connections,
            telemetry=telemetry,
            ready=ready,
            stop=stop,
        )
    )
    ready_wait = asyncio.create_task(ready.wait())
    await asyncio.wait([task, ready_wait], return_when=asyncio.FIRST_COMPLETED)
    ready_wait.cancel()
    if ready.is_set():
        print(
            f"fleet worker on {address} ({namespace}), task queue {task_queue}: {plural(len(stores), 'store')}",
            flush=True,
        )
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):  # a shutdown, not a cancellation, so that it completes
        loop.add_signal_handler(sig, stop.set)
    await task
    return EXIT_OK


def with_read_errors(source: IO[bytes], fmt: str, default_store: str | None) -> Iterator[Operation | Invalid]:
    """The file's operations and, in their place among them, the rows it could not read."""
    unreadable: list[Invalid] = []

    def row_invalid(line: int, key: object, message: str, store: str | None) -> None:
        unreadable.append(Invalid(line, str(key), store, message))

    for operation in read_operations(source, fmt, default_store, row_invalid):
        yield from unreadable
        unreadable.clear()
        yield operation
    yield from unreadable


async def submit_command(
    *,
    address: str,
    namespace: str,
    task_queue: str,
    app: str,
    input_path: str,
    fmt: str,
    default_store: str | None,
    submission: str | None,
    settings: StoreSettings,
    chunk_size: int,
    database: str,
) -> int:
    temporal = await connect(address, namespace)
    invalid: list[Invalid] = []

    def say_invalid(item: Invalid) -> None:
        invalid.append(item)

    async with await FleetDatabase.connect(database) as fleet_database:
        with open_input(input_path) as source:
            report = await submit(
                temporal,
                fleet_database,
                with_read_errors(source, fmt, default_store),
                app=app,
                task_queue=task_queue,
                submission=submission,
                settings=settings,
                chunk_size=chunk_size,
                on_invalid=say_invalid,
            )
    for item in sorted(invalid, key=lambda i: i.line or 0):
        print(f"line {item.line}: {item.message}", file=sys.stderr)
    print(
        f"submission {report.submission}: {plural(report.operations, 'operation')} for "
        f"{plural(len(report.stores), 'store')} in {plural(report.chunks, 'chunk')}; "
        f"{plural(len(invalid), 'invalid row')} not submitted",
        flush=True,
    )
    return EXIT_OK if not invalid else EXIT_FAILED


def _status_line(status: StoreStatus) -> str:
    line = (
        f"{status.store or '(no store)'}: {status.state}, {status.done:,}/{status.submitted:,} done, "
        f"{status.ok:,} ok ({status.unchanged:,} unchanged), {status.failed:,} failed, {status.sent:,} sent"
    )
    if status.invalid:
        line += f", {status.invalid:,} invalid"
    stopped = status.stopped
    if stopped is not None:
        line += f"; stopped: HTTP {stopped.status} (traceId={stopped.trace_id or '-'}), {stopped.message}"
    return line


async def status_command(
    *,
    database: str,
    app: str,
    submission: str | None,
    as_json: bool = False,
    wait: bool = False,
    timeout: float | None = None,
) -> int:
    """Print each store's status, from the fleet's database (no worker needed); with ``wait``, once
    all is done (or ``timeout`` has passed). Exit codes: 0 done and all ok (without ``wait``:
    printed), 1 done with failures or invalid rows, 2 a submission nobody made, 3 not done within
    ``timeout``."""
    deadline = None if timeout is None else time.monotonic() + timeout
    async with await FleetDatabase.connect(database) as fleet_database:
        while True:
            statuses = await fleet_database.status(app, submission)
            done = bool(statuses) and all(s.done >= s.submitted for s in statuses)
            timed_out = deadline is not None and time.monotonic() > deadline
            if not wait or done or timed_out or not statuses:
                break
            await asyncio.sleep(_WAIT_POLL)
    totals = {key: sum(getattr(s, key) for s in statuses) for key in _TOTALS}
    if as_json:
        document = {"submission": submission, "known": bool(statuses), "done": done, **totals}
        sys.stdout.buffer.write(_encoder.encode({**document, "stores": statuses}) + b"\n")
        sys.stdout.flush()
    else:
        for status in statuses:
            print(_status_line(status))
        stores = sum(1 for s in statuses if s.store)
        print(
            f"{plural(stores, 'store')}: {totals['done']:,}/{totals['submitted']:,} done, {totals['ok']:,} ok, "
            f"{totals['failed']:,} failed, {totals['invalid']:,} invalid" + ("" if done else ", not done")
        )
    if not statuses:
        if submission is not None:
            print(f"no submission {submission!r} in app {app!r} (database {fleet_database.name})", file=sys.stderr)
            return EXIT_USAGE
        return EXIT_OK
    if not wait:
        return EXIT_OK
    if not done:
        print(f"not done within {timeout:g} s", file=sys.stderr)
        return EXIT_TIMEOUT
    return EXIT_OK if totals["failed"] == 0 and totals["invalid"] == 0 else EXIT_FAILED


_TOTALS = ("submitted", "done", "ok", "failed", "sent", "unchanged", "invalid")


async def results_command(
    *, database: str, app: str, submission: str | None, store: str | None, output: Path | None
) -> int:
    """Stream the result rows (JSON lines) from the fleet's database to ``output`` or stdout."""
    out: IO[bytes] = output.open("wb") if output is not None else sys.stdout.buffer
    count = failed = 0
    try:
        async with await FleetDatabase.connect(database) as fleet_database:
            async for row in fleet_database.results(app, submission=submission, store=store):
                out.write(row + b"\n")
                count += 1
                failed += b'"ok":false' in row
    except BrokenPipeError:  # | head: the reader has what it wanted; no second error at exit
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    finally:
        if output is not None:
            out.close()
        else:
            out.flush()
    print(f"{plural(count, 'result')}, {failed:,} not ok", file=sys.stderr)
    return EXIT_OK if failed == 0 else EXIT_FAILED


async def forget_command(*, database: str, app: str, submission: str) -> int:
    """Delete a submission's chunks, results and counts; refused while any of its chunks is queued."""
    async with await FleetDatabase.connect(database) as fleet_database:
        statuses = await fleet_database.status(app, submission)
        if not statuses:
            print(f"no submission {submission!r} in app {app!r} (database {fleet_database.name})", file=sys.stderr)
            return EXIT_USAGE
        pending = sum(s.submitted - s.done for s in statuses)
        if pending:
            print(
                f"submission {submission!r} is not done ({plural(pending, 'operation')} to go): its workers would "
                "find its chunks gone. Wait for it, or end its stores' workflows first (fleet stop)",
                file=sys.stderr,
            )
            return EXIT_FAILED
        deleted = await fleet_database.forget(app, submission)
    print(f"submission {submission!r}: {plural(deleted, 'result')} forgotten")
    return EXIT_OK


async def stop_command(*, address: str, namespace: str, app: str, store: str | None) -> int:
    temporal = await connect(address, namespace)
    asked = await stop(temporal, app=app, store=store)
    if not asked:
        print(f"no store workflow of app {app!r} is running" + (f" for store {store!r}" if store else ""))
        return EXIT_OK
    print(
        f"asked {plural(len(asked), 'store workflow')} to stop after the chunk each drains; their queued chunks "
        "are reported not sent (fleet status shows when they are done)"
    )
    return EXIT_OK


async def _forever() -> None:
    await asyncio.Event().wait()


async def dev_command(
    *, port: int, db_file: Path | None, namespace: str, postgres: bool = True, pg_dir: Path | None = None
) -> int:
    """Temporal's dev server and, unless ``postgres`` is False, a PostgreSQL for the fleet's database
    (from the pgserver wheel, in ``pg_dir`` or a temporary directory), until Ctrl-C."""
    with contextlib.ExitStack() as stack:
        server = DevServer(port=port, db_file=db_file, namespace=namespace)
        await server.start()  # first: a port in use is refused before anything else starts
        try:
            pg_url = stack.enter_context(local_postgres(pg_dir)) if postgres else None
            print(f"Temporal dev server on {server.address} (namespace {namespace}); Ctrl-C stops both", flush=True)
            if db_file is None:
                print("  in memory: pass --db-filename FILE to keep workflows and results across restarts", flush=True)
            if pg_url is not None:
                print(f"PostgreSQL, the fleet's database: {pg_url}", flush=True)
                print(
                    f"  export SHOPLINE_FLEET_DATABASE='{pg_url}'   # or --database on each fleet command", flush=True
                )
                if pg_dir is None:
                    print(
                        "  in a temporary directory: pass --pg-dir DIR to keep results and the ledger across restarts",
                        flush=True,
                    )
            await _until_signalled(asyncio.create_task(_forever()))
        finally:
            await server.stop()
    return EXIT_OK
