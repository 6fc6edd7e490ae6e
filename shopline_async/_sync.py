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
import csv
import io
import os
import signal
import sys
import time
from collections import Counter
from collections.abc import Callable, Hashable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, NamedTuple

import msgspec
from msgspec import UNSET, Struct, UnsetType

from ._batch import AnyResult, BatchExecutor, BatchSummary, Operation, Progress, UpdateImage, UpdateProduct
from ._client import ShoplineClient
from ._codec import mapping_errors, msgspec_error_to_field_error
from ._config import RateLimit, RetryPolicy
from ._constants import DEFAULT_RATE
from ._errors import APIStatusError, FieldError, StoreUnavailableError, ValidationError
from ._ledger import Ledger
from .models._image import ImageUpdate
from .models._product import ProductUpdate

__all__ = [
    "CSV_COLUMNS",
    "DEFAULT_LEDGER",
    "STDIN_RESULTS",
    "RowKey",
    "SyncInputError",
    "SyncJob",
    "cli_command",
    "error_text",
    "read_operations",
    "run_sync",
    "store_rate_limit",
]

DEFAULT_LEDGER = "shopline-sync.ledger.sqlite3"
STDIN_RESULTS = "sync-results.jsonl"

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


class SyncInputError(Exception):
    """The input cannot be read at all (exit code 2)."""


class RowKey(NamedTuple):
    line: int
    key: Hashable


class _Row(Struct, forbid_unknown_fields=True):
    product_id: str | int  # an integer id is taken as its decimal string
    product: ProductUpdate | UnsetType = UNSET
    image_id: str | int | UnsetType = UNSET
    image: ImageUpdate | UnsetType = UNSET
    store: str | UnsetType = UNSET
    key: str | int | UnsetType = UNSET


_row_decoder = msgspec.json.Decoder(_Row, strict=False)


class _Labels(Struct):
    """What a row that cannot be read names, so that its result still says which store it was for."""

    store: Any = None
    key: Any = None


class _Unreadable(NamedTuple):
    message: str
    store: str | None
    key: Hashable


_labels_decoder = msgspec.json.Decoder(_Labels)
_any_decoder = msgspec.json.Decoder()


def _unreadable(line: int, message: str, store: object, key: object) -> _Unreadable:
    return _Unreadable(
        message,
        store if isinstance(store, str) else None,
        key if isinstance(key, (str, int)) and not isinstance(key, bool) else str(line),
    )


_PRODUCT_COLUMNS = (
    "title",
    "status",
    "vendor",
    "body_html",
    "subtitle",
    "handle",
    "spu",
    "product_category",
    "published_scope",
    "template_path",
    "path",
)
_VARIANT_COLUMNS = {
    "variant_id": "id",
    "sku": "sku",
    "price": "price",
    "compare_at_price": "compare_at_price",
    "barcode": "barcode",
    "inventory_policy": "inventory_policy",
    "inventory_tracker": "inventory_tracker",
    "required_shipping": "required_shipping",
    "taxable": "taxable",
    "weight": "weight",
    "weight_unit": "weight_unit",
    "option1": "option1",
    "option2": "option2",
    "option3": "option3",
    "option4": "option4",
    "option5": "option5",
}
CSV_COLUMNS = ("product_id", "store", "key", "tags", *_PRODUCT_COLUMNS, *_VARIANT_COLUMNS)
_BOOL_COLUMNS = {"inventory_tracker", "required_shipping", "taxable"}
_TRUE = {"true", "1", "yes", "y"}
_FALSE = {"false", "0", "no", "n"}

InvalidRow = Callable[[int, Hashable, str, "str | None"], None]
"""``on_invalid(line, key, message, store)``; ``store`` as the row named it, if it did."""


def read_operations(
    source: IO[str], fmt: str, default_store: str | None, on_invalid: InvalidRow
) -> Iterator[Operation]:
    """Operations from JSONL or CSV text, lazily; ``on_invalid(line, key, message, store)`` for rows that fail.

    Raises SyncInputError at once (not when iterated) for a CSV header it cannot use.
    """
    rows = _jsonl_rows(source) if fmt == "jsonl" else _csv_rows(source)
    return _operations(rows, default_store, on_invalid)


def _operations(
    rows: Iterator[tuple[int, _Row | _Unreadable]], default_store: str | None, on_invalid: InvalidRow
) -> Iterator[Operation]:
    for line, row in rows:
        if isinstance(row, _Unreadable):
            on_invalid(line, row.key, row.message, row.store or default_store)
            continue
        key: Hashable = row.key if row.key is not UNSET else str(line)
        store = row.store if row.store is not UNSET else default_store
        if store is None:
            on_invalid(line, key, 'no store: add a "store" field or pass --store', None)
            continue
        if (row.product is UNSET) == (row.image is UNSET):
            on_invalid(line, key, 'expected exactly one of "product" or "image"', store)
            continue
        product_id = str(row.product_id)
        if row.image is not UNSET:
            if row.image_id is UNSET:
                on_invalid(line, key, '$.image_id: required with "image"', store)
                continue
            yield UpdateImage(store, product_id, str(row.image_id), row.image, key=RowKey(line, key))
        else:
            yield UpdateProduct(store, product_id, row.product, key=RowKey(line, key))  # type: ignore[arg-type]


def _jsonl_rows(source: IO[str]) -> Iterator[tuple[int, _Row | _Unreadable]]:
    for line, text in enumerate(source, start=1):
        if not text.strip():
            continue
        try:
            yield line, _row_decoder.decode(text)
        except msgspec.ValidationError as exc:
            try:
                labels = _labels_decoder.decode(text)
            except msgspec.MsgspecError:  # not an object: nothing to name
                labels = _Labels()
            yield line, _unreadable(line, _row_errors(text, exc), labels.store, labels.key)
        except msgspec.DecodeError as exc:
            yield line, _unreadable(line, f"not valid JSON: {exc}", None, None)


def _row_errors(text: str, exc: msgspec.ValidationError) -> str:
    """Every problem of a row's update, as a model would list them, after msgspec's first if that
    one is outside the update (``$.product_id``, say)."""
    first = msgspec_error_to_field_error(exc, "$")
    document = _any_decoder.decode(text)
    errors: list[FieldError] = []
    for key, cls in (("product", ProductUpdate), ("image", ImageUpdate)):
        body = document.get(key) if isinstance(document, dict) else None
        if isinstance(body, dict):
            errors += mapping_errors(body, cls, f"$.{key}")
    if not any(e.path == first.path for e in errors):
        errors.insert(0, first)
    return "; ".join(str(e) for e in errors)


def _csv_rows(source: IO[str]) -> Iterator[tuple[int, _Row | _Unreadable]]:
    reader = csv.DictReader(source)
    _check_csv_header(reader.fieldnames or [])
    return _csv_records(reader)


def _check_csv_header(header: Sequence[str]) -> None:
    unknown = [c for c in header if c not in CSV_COLUMNS]
    if unknown or "product_id" not in header:
        raise SyncInputError(
            f"CSV header: unknown columns {unknown} (known: {', '.join(CSV_COLUMNS)})"
            if unknown
            else "CSV header: a product_id column is required"
        )


def _csv_records(reader: csv.DictReader[str]) -> Iterator[tuple[int, _Row | _Unreadable]]:
    for record in reader:
        line = reader.line_num
        store, key = (record.get("store") or "").strip() or None, (record.get("key") or "").strip() or None
        try:
            yield line, msgspec.convert(_csv_document(record), _Row, strict=False)
        except msgspec.ValidationError as exc:
            yield line, _unreadable(line, str(msgspec_error_to_field_error(exc, "$")), store, key)
        except ValueError as exc:
            yield line, _unreadable(line, str(exc), store, key)


def _csv_document(record: dict[str, str | None]) -> dict[str, Any]:
    cells = {k: v.strip() for k, v in record.items() if k is not None and v is not None and v.strip()}
    product: dict[str, Any] = {c: cells[c] for c in _PRODUCT_COLUMNS if c in cells}
    if "tags" in cells:
        product["tags"] = [t.strip() for t in cells["tags"].split(",") if t.strip()]
    variant: dict[str, Any] = {}
    for column, name in _VARIANT_COLUMNS.items():
        if column in cells:
            value: Any = cells[column]
            if column in _BOOL_COLUMNS:
                if value.lower() not in _TRUE | _FALSE:
                    raise ValueError(f"$.product.variants[0].{name}: expected true or false, got {value!r}")
                value = value.lower() in _TRUE
            variant[name] = value
    if variant:
        product["variants"] = [variant]
    document: dict[str, Any] = {"product_id": cells.get("product_id", ""), "product": product}
    for extra in ("store", "key"):
        if extra in cells:
            document[extra] = cells[extra]
    return document


class _ResultLine(Struct, omit_defaults=True):
    key: Any
    line: int
    store: str | None
    kind: str | None
    ok: bool
    outcome: str
    reason: str | None = None
    status: int | None = None
    trace_id: str | None = None
    trace_ids: list[str] = []
    attempts: int = 0
    elapsed_ms: float = 0.0
    error: str | None = None


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
    progress_stream: IO[str] | None = None
    expected_rows: int | None = None
    _last_draw: float = 0.0

    def record_invalid(self, line: int, key: Hashable, message: str, store: str | None) -> None:
        self.invalid += 1
        self.reasons["invalid"] += 1
        self._write(_ResultLine(key=key, line=line, store=store, kind=None, ok=False, outcome="invalid", error=message))

    def record(self, result: AnyResult) -> None:
        line, key = result.key if isinstance(result.key, RowKey) else (0, result.key)
        if not result.ok:
            self.reasons[_reason(result)] += 1
        if isinstance(result.error, StoreUnavailableError):
            count = self.stopped_stores.get(result.store, (None, None, 0))[2]
            self.stopped_stores[result.store] = (result.error.status, result.error.trace_id, count + 1)
        unchanged = result.outcome == "unchanged"
        self._write(
            _ResultLine(
                key=key,
                line=line,
                store=result.store,
                kind=result.kind,
                ok=result.ok,
                outcome="skipped" if unchanged else result.outcome,
                reason="unchanged" if unchanged else None,
                status=result.status,
                trace_id=result.trace_id,
                trace_ids=list(result.trace_ids),
                attempts=result.attempts,
                elapsed_ms=round(result.elapsed * 1000, 1),
                error=error_text(result.error) if result.error is not None else None,
            )
        )

    def _write(self, line: _ResultLine) -> None:
        assert self.results is not None, "SyncJob.results must be open before the run"
        self.results.write(_line_encoder.encode(line) + b"\n")
        # one flush per item: a crash or Ctrl-C never leaves a result half-said
        self.results.flush()

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
        text = (
            f"\r[{bar}] {finished}/{total} ok {progress.done} failed {progress.failed + self.invalid}"
            f" in flight {progress.in_flight}"
        )
        stream.write(text + ("\n" if final else ""))
        stream.flush()


def _reason(result: AnyResult) -> str:
    if result.outcome != "failed":
        return result.outcome
    if isinstance(result.error, APIStatusError):
        return f"HTTP {result.error.status}"
    return type(result.error).__name__ if result.error is not None else "failed"


def error_text(error: Exception) -> str:
    """One line for the results file or the terminal: every field error of a ValidationError."""
    if isinstance(error, ValidationError):
        return "; ".join(str(e) for e in error.errors)
    return str(error)


def _count(n: int, noun: str) -> str:
    return f"{n:,} {noun}" + ("" if n == 1 else "s")


def format_summary(
    summary: BatchSummary, job: SyncJob, results_path: str, *, interrupted: bool, ledger: str | None
) -> str:
    total = summary.total + job.invalid + job.unreported
    ok = summary.ok
    unchanged = summary.unchanged
    lines = [
        f"{'Interrupted' if interrupted else 'Done'}: {_count(total, 'operation')} in {summary.elapsed:.1f} s "
        f"({summary.throughput:.1f}/s): {ok:,} ok, {total - ok - unchanged:,} not ok"
        + (f", {unchanged:,} unchanged, skipped (`--full` sends everything)" if unchanged else ""),
    ]
    if applied := summary.outcomes["applied_without_body"]:
        lines.append(f"  {_count(applied, 'row')} applied (HTTP 2xx) with no product or image in the answer")
    if job.reasons:
        reasons = ", ".join(f"{reason} {count}" for reason, count in job.reasons.most_common())
        lines.append(f"  not ok by reason: {reasons}")
    for store, (status, trace_id, count) in sorted(job.stopped_stores.items()):
        lines.append(
            f"  store {store} answered HTTP {status} (traceId={trace_id or '-'}): {_count(count, 'row')} not sent to it"
        )
    lines.append(
        f"  retries {summary.retries}, 429s {summary.rate_limited}, latency p50 {summary.p50 * 1000:.0f} ms, "
        f"p95 {summary.p95 * 1000:.0f} ms, p99 {summary.p99 * 1000:.0f} ms"
    )
    lines.append(f"  results: {results_path}")
    lines.append(f"  ledger: {ledger}" if ledger is not None else "  ledger: none (--no-ledger)")
    return "\n".join(lines)


def open_input(path: str) -> IO[str]:
    if path == "-":
        return io.TextIOWrapper(sys.stdin.buffer, encoding="utf-8-sig", newline="")
    try:
        return open(path, encoding="utf-8-sig", newline="")
    except OSError as exc:
        raise SyncInputError(f"cannot read {path}: {exc.strerror}") from None


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
    ledger_path: Path | None,
    full: bool,
    dry_run: bool,
    progress: bool,
    allow_insecure_http: bool = False,
) -> int:
    with open_input(input_path) as source:
        async with ShoplineClient(base_url=base_url, retry=retry, allow_insecure_http=allow_insecure_http) as client:
            for handle, entry in stores.items():
                client.store(handle, entry["token"], rate_limit=store_rate_limit(entry, rate_limit))
            if dry_run:
                return _dry_run(client, source, fmt, default_store)

            job = SyncJob(progress_stream=sys.stderr if progress else None)
            if progress:
                job.expected_rows = count_rows(input_path, fmt)
            # read first: a bad CSV header must fail before the results file is touched
            rows = read_operations(source, fmt, default_store, job.record_invalid)
            with contextlib.ExitStack() as stack:
                ledger = stack.enter_context(Ledger(ledger_path)) if ledger_path is not None else None
                results_path.parent.mkdir(parents=True, exist_ok=True)
                job.results = stack.enter_context(results_path.open("wb"))
                executor = BatchExecutor(
                    client,
                    concurrency=concurrency,
                    on_progress=job.draw_progress,
                    ledger=ledger,
                    skip_unchanged=not full,
                )
                interrupted = await _run_with_interrupts(executor, job, rows)
                summary = executor.summary()
                if progress:
                    job.draw_progress(executor.progress, final=True)
    ledger_name = str(ledger_path) if ledger_path is not None else None
    print(format_summary(summary, job, str(results_path), interrupted=interrupted, ledger=ledger_name))
    if interrupted:
        return EXIT_INTERRUPTED
    return EXIT_OK if summary.failed == 0 and job.invalid == 0 else EXIT_FAILED


def store_rate_limit(entry: dict[str, Any], default: RateLimit) -> RateLimit:
    """A store's own rate/burst from --config, else the command line's."""
    if "rate" not in entry and "burst" not in entry:
        return default
    return RateLimit(
        rate=float(entry.get("rate", default.rate or DEFAULT_RATE)),
        burst=int(entry.get("burst", default.burst)),
        max_in_flight=default.max_in_flight,
    )


async def _run_with_interrupts(executor: BatchExecutor, job: SyncJob, operations: Any) -> bool:
    """Run the batch; the first Ctrl-C stops it gently (requests in flight finish, the rest is
    recorded not attempted), a second one cancels at once. Returns whether it was interrupted."""
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    interrupts = 0

    def on_interrupt() -> None:
        nonlocal interrupts
        interrupts += 1
        if interrupts == 1:
            print("\nstopping: finishing requests in flight (Ctrl-C again to abort)", file=sys.stderr)
            executor.stop()
        elif task is not None:
            task.cancel()

    try:
        loop.add_signal_handler(signal.SIGINT, on_interrupt)
        installed = True
    except (NotImplementedError, RuntimeError):  # not the main thread, or Windows
        installed = False
    try:
        async with executor.stream(operations) as results:
            async for result in results:
                job.record(result)
    except asyncio.CancelledError:
        if interrupts < 2:
            raise
        for result in executor.unreported():
            job.record(result)
            job.unreported += 1
        if task is not None and sys.version_info >= (3, 11):
            task.uncancel()  # handled: let the summary print
    finally:
        if installed:
            loop.remove_signal_handler(signal.SIGINT)
    return interrupts > 0


def _dry_run(client: ShoplineClient, source: Any, fmt: str, default_store: str | None) -> int:
    """Check every row as the real run would (parse, store, validate, encode); send nothing."""
    rows = 0
    invalid = 0

    def report(line: int, key: Any, message: str, store: str | None = None) -> None:
        nonlocal rows, invalid
        rows += 1
        invalid += 1
        print(f"line {line}: {message}")

    executor = BatchExecutor(client)
    for op in read_operations(source, fmt, default_store, report):
        error = executor.check(op)
        if error is None:
            rows += 1
        else:
            report(op.key.line if isinstance(op.key, RowKey) else 0, op.key, error_text(error))
    print(f"dry run: {rows} rows checked, {invalid} invalid, nothing sent")
    return EXIT_OK if invalid == 0 else EXIT_FAILED
