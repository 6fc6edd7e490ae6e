"""The SDK's own CPU per request, with the network taken out: where the gap to a raw loop goes.

Every loop sends the reference example's product through an in-process sender that answers the
spec's example response after one trip round the event loop (what any answer costs at least), so
aiohttp, the kernel and the server are out of the picture and what is left is the SDK's work:

- ``raw``: what a minimal loop does besides aiohttp (send a pre-encoded body, decode the answer
  with msgspec into dicts, look at it): the baseline;
- ``encode``: the SDK's encode path alone (validate every documented limit, encode);
- ``send``: ``products.send()`` of one prepared request, again and again: the transport (limiter,
  retry loop, request and response objects, the typed decode);
- ``update``: ``products.update()``: prepare (validate, encode) and send;
- ``stream``, ``stream_dict``, ``gather``: ``BatchExecutor`` with a model, with the plain dict a
  JSONL row gives, and keeping every result.

Microseconds of CPU per request, the median of interleaved rounds, at concurrency 50.
``python benchmarks/overhead.py`` or ``benchmarks/run.py --only overhead``.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import msgspec
from common import STORE, mock_token, run_batch, spec_operations, spec_product_update, spec_response_bytes
from multidict import CIMultiDict, CIMultiDictProxy

from shopline_async import BatchExecutor, HTTPRequest, HTTPResponse, RateLimit, ShoplineClient
from shopline_async._codec import encode_product_update

CONCURRENCY = 50
_ANSWER = spec_response_bytes()
_HEADERS = CIMultiDictProxy(CIMultiDict({"traceId": "0a1b2c3d", "Content-Type": "application/json"}))
_dicts = msgspec.json.Decoder()


class InstantSender:
    """Answers every request with the spec's example product after one trip round the loop."""

    async def send(self, request: HTTPRequest) -> HTTPResponse:
        await asyncio.sleep(0)
        return HTTPResponse(200, _HEADERS, _ANSWER)

    async def aclose(self) -> None:
        pass


def _client() -> ShoplineClient:
    return ShoplineClient(
        base_url="http://127.0.0.1:9",  # never dialled: the sender answers
        sender=InstantSender(),
        rate_limit=RateLimit.unlimited(max_in_flight=CONCURRENCY),
    )


async def _in_workers(n: int, step: Callable[[int], Coroutine[Any, Any, None]]) -> None:
    counter = iter(range(n))

    async def worker() -> None:
        for i in counter:
            await step(i)

    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))


async def raw(n: int) -> None:
    sender = InstantSender()
    body = encode_product_update(spec_product_update())
    request = HTTPRequest("PUT", None, {}, body, None)  # type: ignore[arg-type]  # never read

    async def step(i: int) -> None:
        response = await sender.send(request)
        assert _dicts.decode(response.body)["product"]["id"]

    await _in_workers(n, step)


async def encode(n: int) -> None:
    update = spec_product_update()
    for _ in range(n):
        encode_product_update(update)


async def send(n: int) -> None:
    async with _client() as client:
        products = client.store(STORE, mock_token()).products
        prepared = products.prepare("p1", spec_product_update())

        async def step(i: int) -> None:
            assert (await products.send(prepared)).data.id

        await _in_workers(n, step)


async def update(n: int) -> None:
    model = spec_product_update()
    async with _client() as client:
        products = client.store(STORE, mock_token()).products

        async def step(i: int) -> None:
            assert (await products.update(f"p{i % 1000}", model)).id

        await _in_workers(n, step)


async def batch(n: int, *, as_dict: bool = False, keep: bool = False) -> None:
    async with _client() as client:
        client.store(STORE, mock_token())
        ok = await run_batch(BatchExecutor(client, concurrency=CONCURRENCY), spec_operations(n, as_dict), keep=keep)
    assert ok == n, ok


LOOPS: dict[str, Callable[[int], Coroutine[Any, Any, None]]] = {
    "raw": raw,
    "encode": encode,
    "send": send,
    "update": update,
    "stream": batch,
    "stream_dict": lambda n: batch(n, as_dict=True),
    "gather": lambda n: batch(n, keep=True),
}


def bench_overhead(quick: bool) -> dict[str, Any]:
    n = 10_000 if quick else 30_000
    rounds = 5 if quick else 9
    names = list(LOOPS)
    for loop in LOOPS.values():  # warm-up: compiled validators, first-use caches
        asyncio.run(loop(1_000))
    samples: dict[str, list[float]] = {name: [] for name in names}
    for round_number in range(rounds):
        order = names[round_number % len(names) :] + names[: round_number % len(names)]
        for name in order:
            started = time.process_time()
            asyncio.run(LOOPS[name](n))
            samples[name].append((time.process_time() - started) / n * 1e6)
    us = {name: round(statistics.median(values), 2) for name, values in samples.items()}
    base = us["raw"]
    over = {name: round(us[name] - base, 2) for name in ("send", "update", "stream", "stream_dict", "gather")}
    print("  CPU per request, us: " + ", ".join(f"{name} {value:.1f}" for name, value in us.items()), flush=True)
    print("  over the raw loop's own work, us: " + ", ".join(f"{k} {v:+.1f}" for k, v in over.items()), flush=True)
    return {"concurrency": CONCURRENCY, "requests_per_round": n, "rounds": rounds, "us": us, "over_raw_us": over}


if __name__ == "__main__":
    bench_overhead("--quick" in sys.argv)
