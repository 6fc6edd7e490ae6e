"""What ``shopline-async fleet ...`` runs; the command line itself is in ``cli.py``."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import tempfile
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import IO

import msgspec
from temporalio.client import Client

from .._errors import ConfigError
from .._rows import open_input, read_operations
from .._sync import EXIT_FAILED, EXIT_OK, EXIT_USAGE, plural
from .._telemetry import Observer
from ._dev import DevServer
from ._model import StoreProgress, StoreSettings, StoreStopped, in_submission
from ._submit import Invalid, fetch_progress, fetch_results, submit
from ._worker import StoreConfig, run_worker

__all__ = ["dev_command", "results_command", "status_command", "submit_command", "worker_command"]

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
    telemetry: Observer | None = None,
    ledger: str | None = None,
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
            ledger=ledger,
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


class StoreStatus(msgspec.Struct):
    """One store's line of ``fleet status``: its state (draining, queued, idle, or unanswered when
    no worker answers for its workflow) and its counts for the submission asked about (or all)."""

    store: str
    state: str
    submitted: int = 0
    done: int = 0
    ok: int = 0
    failed: int = 0
    stopped: StoreStopped | None = None


def _store_status(progress: StoreProgress | str, submission: str | None) -> StoreStatus:
    if isinstance(progress, str):
        return StoreStatus(progress, "unanswered")
    totals = [t for name, t in progress.totals.items() if submission is None or in_submission(name, submission)]
    return StoreStatus(
        progress.store,
        "draining" if progress.draining else ("queued" if progress.queued_chunks else "idle"),
        sum(t.submitted for t in totals),
        sum(t.done for t in totals),
        sum(t.ok for t in totals),
        sum(t.failed for t in totals),
        next((t.stopped for t in totals if t.stopped is not None), None),
    )


def _status_line(status: StoreStatus) -> str:
    if status.state == "unanswered":
        return f"{status.store}: running, no worker answering"
    line = (
        f"{status.store}: {status.state}, {status.done:,}/{status.submitted:,} done, {status.ok:,} ok, "
        f"{status.failed:,} failed"
    )
    stopped = status.stopped
    if stopped is not None:
        line += f"; stopped: HTTP {stopped.status} (traceId={stopped.trace_id or '-'}), {stopped.message}"
    return line


async def status_command(
    *,
    address: str,
    namespace: str,
    app: str,
    submission: str | None,
    as_json: bool = False,
    wait: bool = False,
    timeout: float | None = None,
) -> int:
    """Print each store's status; with ``wait``, once all is done (or ``timeout`` has passed).
    Exit codes: 0 done and all ok (without ``wait``: printed), 1 done with failures, 2 a submission
    no store knows, 3 not done within ``timeout``."""
    temporal = await connect(address, namespace)
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        progress = await fetch_progress(temporal, app=app)
        unanswered = any(isinstance(p, str) for p in progress)
        if submission is not None:  # the stores that know it, and those that may (no answer)
            progress = [
                p for p in progress if isinstance(p, str) or any(in_submission(n, submission) for n in p.totals)
            ]
        known = submission is None or any(not isinstance(p, str) for p in progress)
        statuses = [_store_status(p, submission) for p in progress]
        done = known and not unanswered and all(s.done >= s.submitted for s in statuses)
        timed_out = deadline is not None and time.monotonic() > deadline
        if not wait or done or timed_out or (not known and not unanswered):
            break
        await asyncio.sleep(_WAIT_POLL)
    ok = sum(s.ok for s in statuses)
    failed = sum(s.failed for s in statuses)
    if as_json:
        document = {"submission": submission, "known": known, "done": done, "ok": ok, "failed": failed}
        sys.stdout.buffer.write(_encoder.encode({**document, "stores": statuses}) + b"\n")
        sys.stdout.flush()
    else:
        for status in statuses:
            print(_status_line(status))
        print(f"{plural(len(statuses), 'store')}: {ok:,} ok, {failed:,} failed" + ("" if done else ", not done"))
    if not known and not unanswered:
        print(f"no store knows submission {submission!r} (app {app!r})", file=sys.stderr)
        return EXIT_USAGE
    if not wait:
        return EXIT_OK
    if not done:
        print(f"not done within {timeout:g} s", file=sys.stderr)
        return EXIT_TIMEOUT
    return EXIT_OK if failed == 0 else EXIT_FAILED


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


async def dev_command(
    *, port: int, db_file: Path | None, namespace: str, postgres: bool = True, pg_dir: Path | None = None
) -> int:
    """Temporal's dev server and, unless ``postgres`` is False, a PostgreSQL for the workers' ledger
    (from the pgserver wheel, in ``pg_dir`` or a temporary directory), until Ctrl-C."""
    with contextlib.ExitStack() as stack:
        server = DevServer(port=port, db_file=db_file, namespace=namespace)
        await server.start()  # first: a port in use is refused before anything else starts
        try:
            pg_url = _start_postgres(stack, pg_dir) if postgres else None
            print(f"Temporal dev server on {server.address} (namespace {namespace}); Ctrl-C stops both", flush=True)
            if db_file is None:
                print("  in memory: pass --db-filename FILE to keep workflows and results across restarts", flush=True)
            if pg_url is not None:
                print(f"PostgreSQL for the workers' ledger: {pg_url}", flush=True)
                print(f"  fleet worker --ledger '{pg_url}'", flush=True)
                if pg_dir is None:
                    print(
                        "  in a temporary directory: pass --pg-dir DIR to keep the ledger across restarts", flush=True
                    )
            await _until_signalled(asyncio.create_task(_forever()))
        finally:
            await server.stop()
    return EXIT_OK


def _start_postgres(stack: contextlib.ExitStack, pg_dir: Path | None) -> str:
    try:
        with warnings.catch_warnings():  # platformdirs warns at import when XDG_RUNTIME_DIR is unset
            warnings.simplefilter("ignore")
            import pgserver
    except ImportError:
        raise ConfigError(
            "fleet dev starts PostgreSQL from the pgserver package: pip install 'shopline-async[fleet]', "
            "or pass --no-postgres"
        ) from None
    directory = pg_dir if pg_dir is not None else Path(stack.enter_context(tempfile.TemporaryDirectory()))
    try:
        server = pgserver.get_server(directory, cleanup_mode="stop")  # type: ignore[attr-defined]
    except Exception as exc:  # what initdb or pg_ctl said: a directory in use, not writable ...
        raise ConfigError(f"PostgreSQL did not start in {directory}: {exc}; or pass --no-postgres") from None
    stack.callback(server.cleanup)
    url: str = server.get_uri()
    return url
