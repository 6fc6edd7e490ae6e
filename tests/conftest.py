from __future__ import annotations

import asyncio
import gc
import json
import os
import uuid
import warnings
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import looptime
import pytest

from shopline_async import RateLimit, RetryPolicy, ShoplineClient
from shopline_async.mock import MockShopline, MockStoreConfig

SPEC = Path(__file__).resolve().parent / "data"

TOKENS = {"token-alpha": "alpha", "token-beta": "beta", "token-gamma": "gamma"}
FAST_RETRY = RetryPolicy(initial_delay=0.01, max_delay=0.05, max_attempts=4)


@asynccontextmanager
async def unlimited_stores(count: int) -> AsyncIterator[tuple[MockShopline, ShoplineClient]]:
    """``count`` stores (s0, s1, ...) at the mock and a client with a handle for each, every limit off."""
    tokens = {f"t{n}": f"s{n}" for n in range(count)}
    async with MockShopline(tokens, config=MockStoreConfig(rate=None)) as server:
        async with ShoplineClient(base_url=server.base_url, rate_limit=RateLimit.unlimited()) as client:
            for token, handle in tokens.items():
                client.store(handle, token)
            yield server, client


def spec_example(name: str) -> dict:
    return json.loads((SPEC / name).read_text())


def batch_worker(task: asyncio.Task[object]) -> bool:
    """One of a BatchExecutor's worker tasks."""
    return getattr(task.get_coro(), "__qualname__", "").endswith("_run.<locals>.worker")


def mock_answer(task: asyncio.Task[object]) -> bool:
    """A request the in-process mock server is still answering (e.g. one it was told to stall)."""
    return getattr(task.get_coro(), "__qualname__", "") == "MockShopline._answer_later"


@pytest.fixture
async def fake_time() -> AsyncIterator[None]:
    """The test's event loop on fake time: its clock starts at 0 and jumps ahead whenever nothing is
    runnable, so schedules are asserted to the millisecond and take no real time. (looptime's own
    pytest plugin is off, ``-p no:looptime_plugin`` in pyproject: it creates an event loop for
    every sync test and leaves it unclosed.)"""
    looptime.patch_event_loop(asyncio.get_running_loop(), start=0.0)  # on from here: the loop is the test's own
    yield


@pytest.fixture
async def mock_server() -> AsyncIterator[MockShopline]:
    """The mock SHOPLINE server on 127.0.0.1, port 0, three stores, no rate limit."""
    async with MockShopline(TOKENS, config=MockStoreConfig(rate=None)) as server:
        yield server


@pytest.fixture
async def client(mock_server: MockShopline) -> AsyncIterator[ShoplineClient]:
    async with ShoplineClient(base_url=mock_server.base_url, retry=FAST_RETRY, rate_limit=RateLimit.unlimited()) as c:
        yield c


@pytest.fixture(autouse=True)
def _collect_garbage() -> None:
    # an unclosed aiohttp session warns from __del__; collecting here makes the
    # warning (an error under our filterwarnings) land in the test that leaked it
    yield
    gc.collect()


@pytest.fixture(scope="session")
def pg_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A PostgreSQL 16 server from the pgserver wheel, its data and HOME in temporary directories."""
    with warnings.catch_warnings():  # platformdirs warns at import when XDG_RUNTIME_DIR is unset
        warnings.simplefilter("ignore")
        pgserver = pytest.importorskip(
            "pgserver", reason="these tests start PostgreSQL from the pgserver wheel ([test])"
        )
    data, home = tmp_path_factory.mktemp("pgdata"), tmp_path_factory.mktemp("pghome")
    previous = os.environ.get("HOME")
    os.environ["HOME"] = str(home)
    try:
        server = pgserver.get_server(data, cleanup_mode="stop")
        yield server
        server.cleanup()
    finally:
        if previous is not None:
            os.environ["HOME"] = previous


@pytest.fixture
def pg_database(pg_server: Any) -> str:
    """A fresh database on the server: its URL."""
    psycopg = pytest.importorskip("psycopg", reason="the PostgreSQL ledger needs psycopg ([postgres])")
    name = f"ledger_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_server.get_uri(), autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    uri: str = pg_server.get_uri()
    return uri.replace("/postgres?", f"/{name}?")
