"""The catalog sync job behind ``shopline-async sync``: rows in, one results line per row out.

Input rows are read lazily (JSONL or CSV); a malformed row is recorded as
``invalid`` with its line number and skipped. Results go to a JSONL file, one
line per row, flushed as they come. The ledger (``_ledger``) remembers what
each target was last sent, so a rerun skips what is unchanged and sends again
what failed or never finished, whatever the input's order or name.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shlex
import signal
import sys
import time
from collections import Counter
from collections.abc import Hashable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import msgspec

from ._batch import BatchExecutor
from ._client import ShoplineClient
from ._config import RateLimit, RetryPolicy
from ._constants import DEFAULT_RATE, LOGGER_NAME
from ._errors import APIStatusError, StoreUnavailableError
from ._ledger import LedgerError, is_database_url, ledger_name, open_ledger, url_password
from ._operations import AnyResult, BatchSummary, Progress
from ._results import ResultRow, error_text
from ._rows import RowKey, SyncInputError, open_input, read_operations
from ._telemetry import Observer

__all__ = [
    "DEFAULT_LEDGER",
    "STDIN_RESULTS",
    "SyncJob",
    "cli_command",
    "plural",
    "run_sync",
    "store_rate_limit",
]

logger = logging.getLogger(LOGGER_NAME)

DEFAULT_LEDGER = "shopline-sync.ledger.sqlite3"
STDIN_RESULTS = "sync-results.jsonl"

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


_line_encoder = msgspec.json.Encoder()


@dataclass
class SyncJob:
    """One sync run's bookkeeping: the results file, rows to skip, counts for the summary, progress."""

    results: IO[bytes] | None = None
    invalid: int = 0
    unreported: int = 0
    """Results of an aborted batch (a second Ctrl-C): recorded, but not in the executor's summary."""
    stopped_stores: dict[str, tuple[int | None, str | None, int]] = field(default_factory=dict)
    """Store -> (status, trace id, rows not sent) for stores that could not be written."""
    reasons: Counter[str] = field(default_factory=Counter)
    write_error: str | None = None
    """Why the results file could not be written, if it could not: the run then stops."""
    per_store: dict[str | None, Counter[str]] = field(default_factory=dict)
    """Store -> outcomes, as the results file names them, for the log's summary per store."""
    progress_stream: IO[str] | None = None
    expected_rows: int | None = None
    _last_draw: float = 0.0
    _started: float = field(default_factory=time.monotonic)
    _drawn: int = 0

    def record_invalid(self, line: int, key: Hashable, message: str, store: str | None) -> None:
        self.invalid += 1
        self.reasons["invalid"] += 1
        self.per_store.setdefault(store, Counter())["invalid"] += 1
        self._write(ResultRow.refused(message, line=line, key=key, store=store))

    def record(self, result: AnyResult) -> None:
        row = result.key if isinstance(result.key, RowKey) else RowKey(0, result.key)
        if not result.ok:
            self.reasons[_reason(result)] += 1
        if isinstance(result.error, StoreUnavailableError):
            count = self.stopped_stores.get(result.store, (None, None, 0))[2]
            self.stopped_stores[result.store] = (result.error.status, result.error.trace_id, count + 1)
        line = ResultRow.of(result, line=row.line, key=row.key, product_id=row.product_id, image_id=row.image_id)
        self.per_store.setdefault(result.store, Counter())[line.outcome] += 1
        self._write(line)

    def log_summary(self, summary: BatchSummary, input_path: str, *, interrupted: bool) -> None:
        """The run's end at INFO: a line per store, then the totals."""
        for store, outcomes in sorted(self.per_store.items(), key=lambda item: item[0] or ""):
            counts = ", ".join(f"{outcome} {count}" for outcome, count in outcomes.most_common())
            logger.info("store %s: %s", store or "-", counts)
        rows = summary.total + self.invalid + self.unreported
        logger.info(
            "sync of %s %s: %d rows, %d ok, %d unchanged, %d not ok",
            input_path,
            "interrupted" if interrupted else "ended",
            rows,
            summary.ok,
            summary.unchanged,
            rows - summary.ok - summary.unchanged,
        )

    def _write(self, line: ResultRow) -> None:
        assert self.results is not None, "SyncJob.results must be open before the run"
        if self.write_error is not None:
            return
        try:
            self.results.write(_line_encoder.encode(line) + b"\n")
            # one flush per item: a crash or Ctrl-C never leaves a result half-said
            self.results.flush()
        except OSError as exc:  # a full disk, a file size limit: the run cannot say what it does, so it stops
            self.write_error = f"cannot write the results file {self.results.name}: {exc.strerror or exc}"

    def draw_progress(self, progress: Progress, *, final: bool = False) -> None:
        stream = self.progress_stream
        if stream is None:
            return
        now = time.monotonic()
        if not final and now - self._last_draw < 0.1:
            return
        self._last_draw = now
        finished = progress.done + progress.failed + self.invalid
        total = max(self.expected_rows or 0, progress.taken + self.invalid)
        width = 30
        filled = int(width * finished / total) if total else 0
        bar = "#" * filled + "-" * (width - filled)
        rate = finished / (now - self._started) if now > self._started else 0.0
        left = total - finished - progress.not_attempted
        eta = f"ETA {_duration(left / rate)}" if rate > 0 and left > 0 else ""
        text = (
            f"\r[{bar}] {finished}/{total} ok {progress.done} failed {progress.failed + self.invalid}"
            f" in flight {progress.in_flight}  {rate:,.1f}/s  {eta}"
        )
        stream.write(text.ljust(self._drawn) + ("\n" if final else ""))
        self._drawn = len(text)  # a shorter line next time must not leave the end of this one behind
        stream.flush()


def _duration(seconds: float) -> str:
    """``0:07``, ``12:30``, ``3:04:05``."""
    minutes, secs = divmod(int(seconds + 0.5), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def _reason(result: AnyResult) -> str:
    if result.outcome != "failed":
        return result.outcome
    if isinstance(result.error, APIStatusError):
        return f"HTTP {result.error.status}"
    return type(result.error).__name__ if result.error is not None else "failed"


def plural(n: int, noun: str) -> str:
    """``1 row``, ``2 rows``, ``1,000 rows``."""
    return f"{n:,} {noun}" + ("" if n == 1 else "s")


def format_summary(
    summary: BatchSummary, job: SyncJob, results_path: str, *, interrupted: bool, ledger: str | None
) -> str:
    total = summary.total + job.invalid + job.unreported
    ok = summary.ok
    unchanged = summary.unchanged
    not_attempted = job.reasons["not_attempted"]
    finished = total - not_attempted
    rate = finished / summary.elapsed if summary.elapsed > 0 else 0.0
    lines = [
        f"{'Interrupted' if interrupted else 'Done'}: {plural(finished, 'operation')} in {summary.elapsed:.1f} s "
        f"({rate:.1f}/s): {ok:,} ok, {finished - ok - unchanged:,} not ok"
        + (f", {unchanged:,} unchanged, skipped (`--full` sends everything)" if unchanged else ""),
    ]
    if not_attempted:
        lines.append(
            f"  {plural(not_attempted, 'row')} not attempted; the same command sends them "
            f"(the ledger skips what is done):\n    {rerun_command()}"
        )
    if applied := summary.outcomes["applied_without_body"]:
        lines.append(f"  {plural(applied, 'row')} applied (HTTP 2xx) with no product or image in the answer")
    if failed_reasons := [(reason, n) for reason, n in job.reasons.most_common() if reason != "not_attempted"]:
        reasons = ", ".join(f"{reason} {count}" for reason, count in failed_reasons)
        lines.append(f"  not ok by reason: {reasons}")
    for store, (status, trace_id, count) in sorted(job.stopped_stores.items()):
        lines.append(
            f"  store {store} answered HTTP {status} (traceId={trace_id or '-'}): {plural(count, 'row')} not sent to it"
        )
    lines.append(
        f"  retries {summary.retries}, 429s {summary.rate_limited}, latency p50 {summary.p50 * 1000:.0f} ms, "
        f"p95 {summary.p95 * 1000:.0f} ms, p99 {summary.p99 * 1000:.0f} ms"
    )
    lines.append(f"  results: {results_path}")
    lines.append(f"  ledger: {ledger}" if ledger is not None else "  ledger: none (--no-ledger)")
    return "\n".join(lines)


def count_rows(input_path: str, fmt: str) -> int | None:
    """Rows in a file, counted ahead for the progress bar (a CSV field with a line break makes it
    an overcount); None for standard input, which can only be read once."""
    if input_path == "-":
        return None
    try:
        with open(input_path, "rb") as f:
            lines = sum(1 for line in f if line.strip())
    except OSError:
        return None
    return max(lines - 1, 0) if fmt == "csv" else lines


def rerun_command() -> str:
    """This very command line, to run again; a ledger URL's password left out (libpq reads
    ``PGPASSWORD``): it must not be printed."""
    args = [ledger_name(arg) if is_database_url(arg) else arg for arg in sys.argv[1:]]
    command = " ".join([cli_command(), *(shlex.quote(arg) for arg in args)])
    if any(is_database_url(arg) and url_password(arg) for arg in sys.argv[1:]):
        command += "  # with the ledger's password in PGPASSWORD"
    return command


def cli_command() -> str:
    """How to run this CLI again from here, for hints: whether or not its virtualenv is activated."""
    beside = Path(sys.executable).with_name("shopline-async")
    return str(beside) if beside.exists() else f"{sys.executable} -m shopline_async.cli"


def default_results_path(input_path: str) -> Path:
    """Beside the input, its whole name kept (catalog.csv -> catalog.csv.results.jsonl), so no
    two inputs share one; for standard input, sync-results.jsonl in the current directory."""
    if input_path == "-":
        return Path(os.getcwd()) / STDIN_RESULTS
    source = Path(input_path)
    return source.with_name(source.name + ".results.jsonl")


async def run_sync(
    *,
    input_path: str,
    fmt: str,
    stores: dict[str, dict[str, Any]],
    default_store: str | None,
    base_url: str,
    rate_limit: RateLimit,
    concurrency: int,
    retry: RetryPolicy,
    results_path: Path,
    ledger_path: str | Path | None,
    full: bool,
    dry_run: bool,
    progress: bool,
    allow_insecure_http: bool = False,
    telemetry: Observer | None = None,
) -> int:
    if not dry_run:
        check_paths(input_path, results_path, ledger_path)
    with open_input(input_path) as source:
        async with ShoplineClient(
            base_url=base_url, retry=retry, allow_insecure_http=allow_insecure_http, telemetry=telemetry
        ) as client:
            for handle, entry in stores.items():
                client.store(handle, entry["token"], rate_limit=store_rate_limit(entry, rate_limit))
            if dry_run:
                return _dry_run(client, source, fmt, default_store, ledger_path, full)

            job = SyncJob(progress_stream=sys.stderr if progress else None)
            if progress:
                job.expected_rows = count_rows(input_path, fmt)
            # read first: a bad CSV header must fail before the results file is touched; so must a
            # ledger that cannot be opened
            rows = read_operations(source, fmt, default_store, job.record_invalid)
            ledger = open_ledger(ledger_path) if ledger_path is not None else None
            ledger_error: LedgerError | None = None
            try:
                job.results = _open_results(results_path)
                executor = BatchExecutor(
                    client,
                    concurrency=concurrency,
                    on_progress=job.draw_progress,
                    ledger=ledger,
                    skip_unchanged=not full,
                )
                logger.info(
                    "sync of %s started: %d stores, ledger %s",
                    input_path,
                    len(stores),
                    ledger.name if ledger is not None else "none",
                )
                stopped_by = await _run_with_interrupts(executor, job, rows)
                summary = executor.summary()
                job.log_summary(summary, input_path, interrupted=stopped_by is not None)
                ledger_error = executor.ledger_error
                if progress:
                    job.draw_progress(executor.progress, final=True)
            finally:
                if job.results is not None:
                    with contextlib.suppress(OSError):  # every line was flushed, or its failure said
                        job.results.close()
                if ledger is not None:
                    try:
                        ledger.close()
                    except LedgerError as exc:
                        ledger_error = ledger_error or exc
    named = ledger_name(ledger_path) if ledger_path is not None else None
    print(format_summary(summary, job, str(results_path), interrupted=stopped_by is not None, ledger=named))
    if ledger_error is not None or job.write_error is not None:
        print(f"shopline-async: error: {ledger_error or job.write_error}", file=sys.stderr)
        print("  the run stopped early: the rows it did not send are marked not_attempted", file=sys.stderr)
        return EXIT_USAGE
    if stopped_by is not None:
        return 128 + stopped_by
    return EXIT_OK if summary.failed == 0 and job.invalid == 0 else EXIT_FAILED


def check_paths(input_path: str, results_path: Path, ledger_path: str | Path | None) -> None:
    """Refuse, before anything is written, a results file that would overwrite the input or the
    ledger, and a results directory that does not exist (a typo must not create one)."""
    if not results_path.parent.is_dir():
        raise SyncInputError(f"--results {results_path}: the directory {results_path.parent} does not exist")
    if results_path.is_dir():
        raise SyncInputError(f"--results {results_path}: a directory; give a file name")
    if input_path != "-" and _same_file(results_path, Path(input_path)):
        raise SyncInputError(f"--results {results_path}: that is the input file; the results would overwrite it")
    if ledger_path is not None and not is_database_url(ledger_path):
        ledger_file = Path(ledger_path)
        for suffix in ("", "-wal", "-shm", "-journal"):
            if _same_file(results_path, ledger_file.with_name(ledger_file.name + suffix)):
                raise SyncInputError(
                    f"--results {results_path}: that is the ledger's file; the results would destroy it"
                )


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:  # one does not exist (yet): the same only if both names lead to one place
        return a.resolve() == b.resolve()


def _open_results(path: Path) -> IO[bytes]:
    try:
        return path.open("wb")
    except OSError as exc:
        raise SyncInputError(f"cannot write the results file {path}: {exc.strerror}") from None


def store_rate_limit(entry: dict[str, Any], default: RateLimit) -> RateLimit:
    """A store's own rate/burst from --config, else the command line's."""
    if "rate" not in entry and "burst" not in entry:
        return default
    return RateLimit(
        rate=float(entry.get("rate", default.rate or DEFAULT_RATE)),
        burst=int(entry.get("burst", default.burst)),
        max_in_flight=default.max_in_flight,
    )


async def _run_with_interrupts(executor: BatchExecutor, job: SyncJob, operations: Any) -> int | None:
    """Run the batch; the first Ctrl-C (or SIGTERM, as systemd and Kubernetes send) stops it gently:
    requests in flight finish, the rest is recorded not attempted. A second one aborts at once:
    requests in flight are recorded ``cancelled`` (their state unknown, as the ledger already says).
    Returns the first signal's number, or None if the batch ran to its end."""
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    received: list[int] = []

    def on_signal(signum: int) -> None:
        received.append(signum)
        if len(received) == 1:
            print("\nstopping: finishing requests in flight (Ctrl-C again to abort)", file=sys.stderr)
            executor.stop()
        elif task is not None and len(received) == 2:
            print("aborting: requests in flight are recorded as cancelled", file=sys.stderr)
            task.cancel()

    installed: list[int] = []
    for signum in (int(signal.SIGINT), int(signal.SIGTERM)):
        try:
            loop.add_signal_handler(signum, on_signal, signum)
            installed.append(signum)
        except (NotImplementedError, RuntimeError, ValueError):  # not the main thread, or Windows
            pass
    try:
        async with executor.stream(operations) as results:
            async for result in results:
                job.record(result)
                if job.write_error is not None:
                    executor.stop()
    except asyncio.CancelledError:
        if len(received) < 2:
            raise
        for result in executor.unreported():
            job.record(result)
            job.unreported += 1
        if task is not None and sys.version_info >= (3, 11):
            task.uncancel()  # handled: let the summary print
    finally:
        for signum in installed:
            loop.remove_signal_handler(signum)
    return received[0] if received else None


def _dry_run(
    client: ShoplineClient,
    source: Any,
    fmt: str,
    default_store: str | None,
    ledger_path: str | Path | None,
    full: bool,
) -> int:
    """Check every row as the real run would (parse, store, validate, encode) and say per store what
    it would send, skip as unchanged and refuse; send nothing, write nothing (a ledger that does not
    exist yet is not created: every row would be sent)."""
    plan: dict[str, Counter[str]] = {}

    def report(line: int, key: Any, message: str, store: str | None = None) -> None:
        plan.setdefault(store or "-", Counter())["invalid"] += 1
        print(f"line {line}: {message}")

    exists = ledger_path is not None and (is_database_url(ledger_path) or Path(ledger_path).exists())
    ledger = open_ledger(ledger_path, read_only=True) if ledger_path is not None and exists else None
    try:
        executor = BatchExecutor(client, ledger=ledger, skip_unchanged=not full)
        for op, verdict in executor.plan(read_operations(source, fmt, default_store, report)):
            store = op.store if isinstance(op.store, str) else op.store.handle
            if isinstance(verdict, str):
                plan.setdefault(store, Counter())[verdict] += 1
            else:
                report(op.key.line if isinstance(op.key, RowKey) else 0, op.key, error_text(verdict), store)
    finally:
        if ledger is not None:
            ledger.close()
    where = f"the ledger {ledger.name}" if ledger is not None else "no ledger yet: every valid row would be sent"
    print(f"dry run, nothing sent ({where}):")
    total: Counter[str] = Counter()
    for store, counts in sorted(plan.items()):
        total.update(counts)
        print(f"  store {store}: {_plan_line(counts)}")
    print(f"{plural(total.total(), 'row')} checked: {_plan_line(total)}")
    return EXIT_OK if total["invalid"] == 0 else EXIT_FAILED


def _plan_line(counts: Counter[str]) -> str:
    return f"would send {counts['send']:,}, unchanged {counts['unchanged']:,}, invalid {counts['invalid']:,}"
