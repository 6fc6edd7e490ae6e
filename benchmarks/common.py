"""Shared pieces: the mock server in a child process, the spec's example bodies, RSS."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import msgspec

from shopline_async import BatchExecutor, ProductUpdate, UpdateProduct
from shopline_async.models import validate

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data"
TOKEN = "bench-token"
PRODUCT_PATH = "/admin/openapi/v20260601/products/{}.json"
STORE = "bench"


def spec_request() -> dict[str, Any]:
    """The reference page's "Update a product" request example."""
    example: dict[str, Any] = json.loads((DATA / "product_request_example.json").read_text())
    return example


def spec_response_bytes() -> bytes:
    return (DATA / "product_response_example.json").read_bytes()


def spec_product_update() -> ProductUpdate:
    """The example request as a ProductUpdate: its writable fields (``validate`` drops the read-only ones).

    What a user builds to send, and what every measurement here compared before read-only fields
    were accepted; ``spec_round_trip_update`` is the example as given.
    """
    return validate(spec_round_trip_update())


def spec_round_trip_update() -> ProductUpdate:
    """The example request as given, read-only fields and all: a product fetched and sent back."""
    return msgspec.convert(spec_request()["product"], ProductUpdate)


def spec_operations(n: int, as_dict: bool = False) -> Iterator[UpdateProduct]:
    """``n`` updates of the example product to the benchmark's store, over 1,000 product ids; as a
    dict: the documented request fields only, as a catalog row would carry them."""
    model = spec_product_update()
    update: Any = msgspec.to_builtins(model) if as_dict else model
    return (UpdateProduct(STORE, f"p{i % 1000}", update) for i in range(n))


async def run_batch(executor: BatchExecutor, operations: Iterator[UpdateProduct], *, keep: bool) -> int:
    """How many operations came back ok and with their product: through ``gather()`` (``keep``:
    every result kept, in input order) or ``stream()`` (each looked at and let go, as the CLI does)."""
    if keep:
        return (await executor.gather(operations)).summary.ok
    ok = 0
    async with executor.stream(operations) as results:
        async for result in results:
            ok += result.ok and result.data is not None
    return ok


@contextmanager
def server_process(command: list[str]) -> Iterator[tuple[str, int]]:
    """A server in a child process that prints its URL on its first line; yields (URL, pid)."""
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        match = re.search(r"(http://\S+)", first)
        if not match:
            raise RuntimeError(f"server did not start: {first!r}")
        yield match.group(1), proc.pid
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def mock_server_command(*args: str) -> list[str]:
    """``shopline-async mock-server`` on a free port, serving the benchmark's store."""
    return [sys.executable, "-m", "shopline_async.cli", "mock-server", "--port", "0", "--stores", STORE, *args]


@contextmanager
def mock_server_process(*args: str) -> Iterator[str]:
    """The mock server in a child process; yields its base URL."""
    with server_process(mock_server_command(*args)) as (url, _):
        yield url


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far (Linux /proc)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def mock_token() -> str:
    return f"mock-token-{STORE}"


def rss_mb() -> float:
    """Resident set size of this process in MB (Linux /proc)."""
    with open(f"/proc/{os.getpid()}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0
