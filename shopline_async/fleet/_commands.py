"""What ``shopline-async fleet ...`` runs; the command line itself is in ``cli.py``."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import IO

import msgspec
from temporalio.client import Client

from .._errors import ConfigError
from .._rows import open_input, read_operations
from .._sync import EXIT_FAILED, EXIT_OK, plural
from .._telemetry import Observer
from ._dev import DevServer
from ._model import StoreProgress, StoreSettings
from ._submit import Invalid, fetch_progress, fetch_results, submit
from ._worker import StoreConfig, run_worker

__all__ = ["dev_command", "results_command", "status_command", "submit_command", "worker_command"]

_encoder = msgspec.json.Encoder()


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
    telemetry: Observer | None = None,
) -> int:
    temporal = await connect(address, namespace)
    ready, stop = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(
        run_worker(
            temporal,
            stores,
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
) -> int:
    temporal = await connect(address, namespace)
    invalid: list[Invalid] = []

    def row_invalid(line: int, key: object, message: str, store: str | None) -> None:
        invalid.append(Invalid(line, str(key), store, message))

    def say_invalid(item: Invalid) -> None:
        invalid.append(item)

    def say_waiting(store: str, queued: int) -> None:
        why = "no worker answers yet" if queued < 0 else f"{plural(queued, 'chunk')} queued"
        print(f"store {store}: waiting for its workers ({why})", file=sys.stderr, flush=True)

    with open_input(input_path) as source:
        operations = read_operations(source, fmt, default_store, row_invalid)
        report = await submit(
            temporal,
            operations,
            app=app,
            task_queue=task_queue,
            submission=submission,
            settings=settings,
            chunk_size=chunk_size,
            on_invalid=say_invalid,
            on_waiting=say_waiting,
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


def _progress_line(progress: StoreProgress | str, submission: str | None) -> str:
    if isinstance(progress, str):
        return f"{progress}: running, no worker answering"
    totals = progress.totals if submission is None else {k: v for k, v in progress.totals.items() if k == submission}
    submitted = sum(t.submitted for t in totals.values())
    done = sum(t.done for t in totals.values())
    ok = sum(t.ok for t in totals.values())
    state = "draining" if progress.draining else ("queued" if progress.queued_chunks else "idle")
    line = f"{progress.store}: {state}, {done:,}/{submitted:,} done, {ok:,} ok, {done - ok:,} failed"
    stopped = next((t.stopped for t in totals.values() if t.stopped is not None), None)
    if stopped is not None:
        line += f"; stopped: HTTP {stopped.status} (traceId={stopped.trace_id or '-'}), {stopped.message}"
    return line


async def status_command(*, address: str, namespace: str, app: str, submission: str | None) -> int:
    temporal = await connect(address, namespace)
    progress = await fetch_progress(temporal, app=app)
    for item in progress:
        print(_progress_line(item, submission))
    print(plural(len(progress), "store"))
    return EXIT_OK


async def results_command(
    *, address: str, namespace: str, app: str, submission: str | None, store: str | None, output: Path | None
) -> int:
    temporal = await connect(address, namespace)
    out: IO[bytes] = output.open("wb") if output is not None else sys.stdout.buffer
    count = failed = 0
    try:
        async for result in fetch_results(temporal, app=app, submission=submission, store=store):
            out.write(_encoder.encode(result) + b"\n")
            count += 1
            failed += not result.ok
    except BrokenPipeError:  # | head: the reader has what it wanted; no second error at exit
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    finally:
        if output is not None:
            out.close()
        else:
            out.flush()
    print(f"{plural(count, 'result')}, {failed:,} failed", file=sys.stderr)
    return EXIT_OK if failed == 0 else EXIT_FAILED


async def _forever() -> None:
    await asyncio.Event().wait()


async def dev_command(*, port: int, db_file: Path | None, namespace: str) -> int:
    server = DevServer(port=port, db_file=db_file, namespace=namespace)
    await server.start()
    try:
        print(f"Temporal dev server on {server.address} (namespace {namespace}); Ctrl-C stops it", flush=True)
        if db_file is None:
            print("  in memory: pass --db-filename FILE to keep workflows and results across restarts", flush=True)
        await _until_signalled(asyncio.create_task(_forever()))
    finally:
        await server.stop()
    return EXIT_OK
