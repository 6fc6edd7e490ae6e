"""Benchmarks, side by side in one run: python benchmarks/run.py [--quick] [--json OUT] [--plot PNG]

1. throughput, rate limiting off: the SDK's BatchExecutor vs a minimal aiohttp loop vs a minimal
   httpx loop, same mock server (a child process), same concurrency, interleaved rounds;
   overhead: the SDK's own CPU per request with the network taken out, part by part (overhead.py);
   bytecodes: Python bytecodes run per request, by package, SDK and raw loops (bytecodes.py);
   instructions: instructions and cache misses per request under valgrind, SDK and raw loop
   (instructions.py; skipped without valgrind);
2. rate-limit efficiency: the mock in queue and in reject mode at a scaled rate;
3. memory: RSS growth while streaming many operations through the executor;
4. codec: encode a ProductUpdate, decode a Product (the spec's examples), msgspec vs pydantic v2
   vs json + dicts;
5. mock_server: the mock under wrk, beside a minimal aiohttp app;
6. many_stores: 10,000 stores x 5 operations in one process (many_stores.py);
7. ledger: a rerun of 100,000 rows with 1% changed (ledger.py);
   retry_isolation: throughput with 1% and 5% of answers 5xx against none (retry_isolation.py);
8. fleet: 1, 2 and 4 worker processes on Temporal's dev server, bound by their sockets (fleet.py).
Ratios are what to compare: the machine is shared and absolute numbers move.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import platform
import re
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from datetime import date
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import aiohttp
import msgspec
from bytecodes import bench_bytecodes
from common import (
    PRODUCT_PATH,
    STORE,
    cpu_seconds,
    mock_server_command,
    mock_server_process,
    mock_token,
    rss_mb,
    run_batch,
    server_process,
    spec_operations,
    spec_product_update,
    spec_request,
    spec_response_bytes,
    spec_round_trip_update,
)
from fleet import bench_fleet
from instructions import bench_instructions
from ledger import bench_ledger
from many_stores import bench_many_stores
from overhead import bench_overhead
from retry_isolation import bench_retry_isolation

from shopline_async import (
    BatchExecutor,
    RateLimit,
    ShoplineClient,
    UpdateProduct,
)
from shopline_async._codec import decode_product, encode_product_update

HEADERS = {"Authorization": f"Bearer {mock_token()}", "Content-Type": "application/json; charset=utf-8"}


# --- 1. throughput ---------------------------------------------------------------------------
# Like for like: every loop sends the reference example's product, decodes each answer with
# msgspec and looks at it. The raw loops send one pre-encoded body; the SDK validates and encodes
# every update (given as a model, or as the plain dict a JSONL row gives) and decodes into models.


async def batch_loop(base_url: str, n: int, concurrency: int, *, keep: bool, as_dict: bool = False) -> float:
    """BatchExecutor: ``gather()`` (``keep``: every result kept, in input order) or ``stream()``
    (each result looked at and let go, as the CLI does with its results file)."""
    async with ShoplineClient(base_url=base_url, rate_limit=RateLimit.unlimited(max_in_flight=concurrency)) as client:
        client.store(STORE, mock_token())
        executor = BatchExecutor(client, concurrency=concurrency)
        ops = spec_operations(n, as_dict)
        started = time.perf_counter()
        ok = await run_batch(executor, ops, keep=keep)
        elapsed = time.perf_counter() - started
    assert ok == n, ok
    return n / elapsed


async def update_loop(base_url: str, n: int, concurrency: int) -> float:
    """``concurrency`` tasks awaiting ``store.products.update()`` in turn, as an app would."""
    update = spec_product_update()
    async with ShoplineClient(base_url=base_url, rate_limit=RateLimit.unlimited(max_in_flight=concurrency)) as client:
        store = client.store(STORE, mock_token())
        counter = iter(range(n))

        async def worker() -> None:
            for i in counter:
                product = await store.products.update(f"p{i % 1000}", update)
                assert product.id

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return n / (time.perf_counter() - started)


_answer = msgspec.json.Decoder()


async def aiohttp_loop(
    base_url: str, n: int, concurrency: int, *, keep: bool = False, validate_each: bool = False
) -> float:
    """A minimal hand-written loop: pre-encoded bytes out, each answer decoded with msgspec and looked
    at; with ``keep``, every answer kept in input order, as ``gather()`` keeps every result; with
    ``validate_each``, every update checked and encoded with the SDK's encoder first, as the SDK
    does (what is left between this loop and the SDK is everything but validation)."""
    update = spec_product_update()
    body = encode_product_update(update)
    connector = aiohttp.TCPConnector(limit=concurrency)
    kept: list[Any] = [None] * n if keep else []
    async with aiohttp.ClientSession(connector=connector, headers=HEADERS) as session:
        counter = iter(range(n))

        async def worker() -> None:
            for i in counter:
                data = encode_product_update(update) if validate_each else body
                async with session.put(base_url + PRODUCT_PATH.format(f"p{i % 1000}"), data=data) as resp:
                    product = _answer.decode(await resp.read())["product"]
                    assert resp.status == 200 and product["id"]
                    if keep:
                        kept[i] = product

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return n / (time.perf_counter() - started)


async def httpx_loop(base_url: str, n: int, concurrency: int) -> float:
    import httpx

    body = encode_product_update(spec_product_update())
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, headers=HEADERS) as client:
        counter = iter(range(n))

        async def worker() -> None:
            for i in counter:
                resp = await client.put(base_url + PRODUCT_PATH.format(f"p{i % 1000}"), content=body)
                assert resp.status_code == 200 and _answer.decode(resp.content)["product"]["id"]

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return n / (time.perf_counter() - started)


CLIENTS: dict[str, Callable[[str, int, int], Any]] = {
    "stream": lambda url, n, c: batch_loop(url, n, c, keep=False),
    "stream_dict": lambda url, n, c: batch_loop(url, n, c, keep=False, as_dict=True),
    "gather": lambda url, n, c: batch_loop(url, n, c, keep=True),
    "gather_dict": lambda url, n, c: batch_loop(url, n, c, keep=True, as_dict=True),
    "update": update_loop,
    "aiohttp": aiohttp_loop,
    "aiohttp_keep": lambda url, n, c: aiohttp_loop(url, n, c, keep=True),
    "aiohttp_validate": lambda url, n, c: aiohttp_loop(url, n, c, validate_each=True),
    "httpx": httpx_loop,
}
# each SDK mode against the raw loop that keeps what it keeps
PAIRS = {
    "stream": ("stream", "aiohttp"),
    "stream_dict": ("stream_dict", "aiohttp"),
    "gather": ("gather", "aiohttp_keep"),
    "gather_dict": ("gather_dict", "aiohttp_keep"),
    "update": ("update", "aiohttp"),
    # the share of the gap that validating every update costs any loop, and what is left beside it
    "aiohttp_validate": ("aiohttp_validate", "aiohttp"),
    "stream_vs_validate": ("stream", "aiohttp_validate"),
}
HEADLINE = 50


def bench_throughput(quick: bool) -> dict[str, Any]:
    n = 2_000 if quick else 3_000
    n_httpx = 150 if quick else 500  # httpx is an order slower; fewer requests keep the run short
    # Single rounds scatter by +-20% and more on a shared machine: many short interleaved rounds at
    # every level, the median of per-round ratios, with quartiles to show the spread.
    rounds = 6 if quick else 12
    levels = [10, HEADLINE] if quick else [1, 10, HEADLINE, 200]
    names = list(CLIENTS)
    result: dict[str, Any] = {"rounds": rounds, "requests_per_round": n, "levels": {}, "cpu_us_per_request": {}}
    curve: dict[str, dict[str, float]] = {name: {} for name in CLIENTS}
    with mock_server_process("--unlimited") as base_url:
        for loop in CLIENTS.values():  # warm-up: imports, compiled validators, the server's catalog
            asyncio.run(loop(base_url, 300 if quick else 1000, 10))
        for concurrency in levels:
            samples: dict[str, list[float]] = {name: [] for name in CLIENTS}
            cpu: dict[str, list[float]] = {name: [] for name in CLIENTS}
            for round_number in range(rounds):
                # interleaved, in a rotating order, so drift and noise hit every client alike
                order = names[round_number % len(names) :] + names[: round_number % len(names)]
                for name in order:
                    if name == "httpx" and (round_number >= 2 or concurrency != HEADLINE):
                        continue
                    count = n_httpx if name == "httpx" else n
                    cpu_before = time.process_time()
                    samples[name].append(asyncio.run(CLIENTS[name](base_url, count, concurrency)))
                    cpu[name].append((time.process_time() - cpu_before) / count)
            level: dict[str, Any] = {}
            for name in CLIENTS:
                if samples[name]:
                    curve[name][str(concurrency)] = statistics.median(samples[name])
            for pair, (sdk, raw) in PAIRS.items():
                # each round's SDK run against the raw run beside it: neighbours share the noise
                ratios = [s / r for s, r in zip(samples[sdk], samples[raw], strict=True)]
                cpu_ratios = [r / s for s, r in zip(cpu[sdk], cpu[raw], strict=True)]  # above 1: the SDK spends less
                level[pair] = {
                    "vs": raw,
                    "ratio": round(statistics.median(ratios), 3),
                    "per_round_quartiles": _quartiles(ratios),
                    "cpu_ratio": round(statistics.median(cpu_ratios), 3),
                }
            # client CPU per request: what a ratio's gap is in microseconds (see overhead.py)
            cpu_us = {name: round(statistics.median(cpu[name]) * 1e6, 1) for name in CLIENTS if cpu[name]}
            result["levels"][str(concurrency)] = level
            result["cpu_us_per_request"][str(concurrency)] = cpu_us
            print(
                f"  concurrency {concurrency:>3}: "
                + ", ".join(f"{name} {curve[name][str(concurrency)]:,.0f}" for name in CLIENTS if samples[name])
                + " req/s",
                flush=True,
            )
            print("    client CPU per request, us: " + ", ".join(f"{k} {v}" for k, v in cpu_us.items()), flush=True)
            for pair, facts in level.items():
                print(
                    f"    {pair} / {facts['vs']} = {facts['ratio']:.2f}x (rounds' quartiles "
                    f"{facts['per_round_quartiles']}; client CPU {facts['cpu_ratio']:.2f}x)",
                    flush=True,
                )
    result["sdk_vs_httpx"] = round(curve["stream"][str(HEADLINE)] / curve["httpx"][str(HEADLINE)], 1)
    result["curve"] = curve
    return result


def _quartiles(values: list[float]) -> list[float]:
    q1, _, q3 = statistics.quantiles(values, n=4)
    return [round(q1, 3), round(q3, 3)]


# --- 2. rate-limit efficiency ----------------------------------------------------------------


async def paced_run(base_url: str, n: int, rate: float, burst: int) -> dict[str, float]:
    update = spec_product_update()
    async with ShoplineClient(
        base_url=base_url, rate_limit=RateLimit(rate=rate, burst=burst, max_in_flight=40)
    ) as client:
        client.store(STORE, mock_token())
        started = time.perf_counter()
        report = await BatchExecutor(client).gather(UpdateProduct(STORE, f"p{i}", update) for i in range(n))
        elapsed = time.perf_counter() - started
    summary = report.summary
    return {
        "efficiency": (n / elapsed) / rate,
        "http_429": float(summary.rate_limited),
        "ok": float(summary.ok),
        "p50_ms": summary.p50 * 1000,
        "p99_ms": summary.p99 * 1000,
    }


def bench_ratelimit(quick: bool) -> dict[str, Any]:
    rate, capacity = 200.0, 40
    n = 300 if quick else 2_000
    out: dict[str, Any] = {"rate": rate, "capacity": capacity, "n": n}
    # the client paces itself (burst 1) instead of parking a backlog in the server's queue
    with mock_server_process("--unlimited") as base_url:
        out["unlimited"] = asyncio.run(paced_run(base_url, n, rate, burst=1))
    for mode in ("queue", "reject"):
        with mock_server_process("--rate", str(rate), "--burst", str(capacity), "--mode", mode) as base_url:
            out[mode] = asyncio.run(paced_run(base_url, n, rate, burst=1))
    out["queue"]["p99_vs_unlimited"] = out["queue"]["p99_ms"] / out["unlimited"]["p99_ms"]
    modes = ["unlimited", "queue", "reject"]
    if not quick:  # for contrast: the default burst parks a backlog in the server's queue
        with mock_server_process("--rate", str(rate), "--burst", str(capacity), "--mode", "queue") as base_url:
            out["queue_burst40"] = asyncio.run(paced_run(base_url, n, rate, burst=capacity))
        modes.append("queue_burst40")
    for name in modes:
        r = out[name]
        print(
            f"  {name:<13} efficiency {r['efficiency']:.3f}, 429s {r['http_429']:.0f}, "
            f"p50 {r['p50_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms",
            flush=True,
        )
    return out


# --- 3. memory -------------------------------------------------------------------------------


async def stream_many(base_url: str, n: int) -> dict[str, float]:
    update = spec_product_update()
    samples: list[float] = []
    async with ShoplineClient(base_url=base_url, rate_limit=RateLimit.unlimited(max_in_flight=100)) as client:
        client.store(STORE, mock_token())

        def operations() -> Iterator[UpdateProduct]:
            for i in range(n):
                yield UpdateProduct(STORE, f"p{i % 5000}", update, key=i)

        warmup = 5_000
        baseline = 0.0
        executor = BatchExecutor(client, concurrency=100)
        started = time.perf_counter()
        async with executor.stream(operations()) as results:
            count = 0
            async for _ in results:
                count += 1
                if count == warmup:
                    gc.collect()
                    baseline = rss_mb()
                elif count > warmup and count % 5_000 == 0:
                    samples.append(rss_mb())
        elapsed = time.perf_counter() - started
    peak = max(samples, default=baseline)
    return {
        "ops": float(n),
        "rss_baseline_mb": baseline,
        "rss_peak_mb": peak,
        "rss_growth_mb": peak - baseline,
        "ops_per_s": n / elapsed,
    }


def bench_memory(quick: bool) -> dict[str, float]:
    n = 50_000 if quick else 1_000_000
    with mock_server_process("--unlimited", "--no-validation") as base_url:
        result = asyncio.run(stream_many(base_url, n))
    print(
        f"  {n:,} operations streamed at {result['ops_per_s']:,.0f}/s: RSS {result['rss_baseline_mb']:.1f} MB "
        f"after warm-up, peak {result['rss_peak_mb']:.1f} MB, growth {result['rss_growth_mb']:.1f} MB",
        flush=True,
    )
    return result


# --- 5. the mock server alone -------------------------------------------------------------------


WRK_SCRIPT = """
wrk.method = "PUT"
wrk.headers["Content-Type"] = "application/json; charset=utf-8"
wrk.headers["Authorization"] = "Bearer %s"
wrk.body = [==[%s]==]
counter = 0
request = function()
  counter = counter + 1
  return wrk.format(nil, "/admin/openapi/v20260601/products/p" .. (counter %% 1000) .. ".json")
end
"""


def bench_mock_server(quick: bool) -> dict[str, float]:
    """Requests/s the mock server answers (unlimited, bodies validated), loaded by wrk, a C client,
    so the client is not what is measured; beside it, in alternate rounds, a minimal aiohttp app
    answering fixed bytes (the ceiling for a Python server here). Also the server's CPU time per
    request, steadier than requests/s on a shared machine. Skipped where wrk is not installed
    (apt-get install wrk)."""
    import shutil
    import subprocess
    import tempfile
    from contextlib import ExitStack

    if shutil.which("wrk") is None:
        print("  skipped: wrk is not installed", flush=True)
        return {}
    body = encode_product_update(spec_product_update()).decode()
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(WRK_SCRIPT % (mock_token(), body))
    seconds = 3 if quick else 10
    mock = mock_server_command("--unlimited")
    reference = [sys.executable, str(Path(__file__).resolve().parent / "reference_server.py")]
    rates: dict[str, list[float]] = {"mock": [], "reference": []}
    cpu_us: dict[str, list[float]] = {"mock": [], "reference": []}

    def load(url: str, duration: int) -> str:
        args = ["wrk", "-t1", "-c50", f"-d{duration}s", "-s", script.name, url]
        return subprocess.run(args, capture_output=True, text=True, check=True).stdout

    with ExitStack() as stack:
        servers = {
            "mock": stack.enter_context(server_process(mock)),
            "reference": stack.enter_context(server_process(reference)),
        }
        for url, _ in servers.values():
            load(url, 1)  # warm-up
        for _ in range(2 if quick else 4):
            for name, (url, pid) in servers.items():
                before = cpu_seconds(pid)
                out = load(url, seconds)
                used = cpu_seconds(pid) - before
                assert "Non-2xx" not in out, out
                requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
                rates[name].append(float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)))  # type: ignore[union-attr]
                cpu_us[name].append(1e6 * used / requests)
    Path(script.name).unlink()
    result = {
        "put_rps": statistics.median(rates["mock"]),
        "put_rps_min": min(rates["mock"]),
        "cpu_us_per_put": statistics.median(cpu_us["mock"]),
        "reference_rps": statistics.median(rates["reference"]),
        "reference_cpu_us": statistics.median(cpu_us["reference"]),
        "vs_reference": statistics.median(m / r for m, r in zip(rates["mock"], rates["reference"], strict=True)),
        "rounds": float(len(rates["mock"])),
    }
    print(
        f"  mock: {result['put_rps']:,.0f} product PUTs/s (lowest round {result['put_rps_min']:,.0f}), "
        f"{result['cpu_us_per_put']:.0f} us CPU each; minimal aiohttp app with a fixed answer: "
        f"{result['reference_rps']:,.0f}/s, {result['reference_cpu_us']:.0f} us; mock/reference "
        f"{result['vs_reference']:.2f}x (wrk -c50, median of {len(rates['mock'])} alternating rounds)",
        flush=True,
    )
    return result


# --- 4. codec --------------------------------------------------------------------------------


def per_op_us(fn: Callable[[], object], seconds: float) -> float:
    fn()
    loops = 0
    started = time.perf_counter()
    while (elapsed := time.perf_counter() - started) < seconds:
        for _ in range(200):
            fn()
        loops += 200
    return elapsed / loops * 1e6


def bench_codec(quick: bool) -> dict[str, float]:
    from codec_models import PProductBody, PProductUpdateBody

    seconds = 0.3 if quick else 1.5
    update = spec_product_update()
    round_trip = spec_round_trip_update()
    update_dict = {"product": msgspec.to_builtins(update)}
    pydantic_update = PProductUpdateBody.model_validate(update_dict)
    response = spec_response_bytes()
    raw_encoder = msgspec.json.Encoder()
    results = {
        # the SDK's real path: validate every documented limit, normalise money, encode with the envelope
        "msgspec_encode_us": per_op_us(lambda: encode_product_update(update), seconds),
        # the same for the example as given, read-only fields and all (a product sent back): dropped
        "msgspec_encode_round_trip_us": per_op_us(lambda: encode_product_update(round_trip), seconds),
        "msgspec_encode_only_us": per_op_us(lambda: raw_encoder.encode(update), seconds),
        "pydantic_encode_us": per_op_us(lambda: pydantic_update.model_dump_json(exclude_unset=True), seconds),
        "json_encode_us": per_op_us(lambda: json.dumps(update_dict, separators=(",", ":")).encode(), seconds),
        "msgspec_decode_us": per_op_us(lambda: decode_product(response), seconds),
        "pydantic_decode_us": per_op_us(lambda: PProductBody.model_validate_json(response), seconds),
        "json_decode_us": per_op_us(lambda: json.loads(response), seconds),
    }
    assert spec_request()  # the bodies really are the reference page's examples
    for name, value in results.items():
        print(f"  {name:<28} {value:7.2f} us", flush=True)
    return results


# --- output ----------------------------------------------------------------------------------


def plot(curve: dict[str, dict[str, float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for name, values in curve.items():
        xs = [int(c) for c in values]
        ax.plot(xs, list(values.values()), marker="o", label=name)
    ax.set_xscale("log")
    ax.set_xlabel("concurrency (requests in flight)")
    ax.set_ylabel("product PUTs per second")
    ax.set_title("Throughput against the mock server (rate limiting off)")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes: about a minute")
    parser.add_argument("--json", type=Path, metavar="OUT", help="write the numbers as JSON")
    parser.add_argument("--plot", type=Path, metavar="PNG", help="throughput against concurrency")
    names = [
        "throughput",
        "overhead",
        "bytecodes",
        "instructions",
        "ratelimit",
        "memory",
        "codec",
        "mock_server",
        "many_stores",
        "ledger",
        "retry_isolation",
        "fleet",
    ]
    parser.add_argument("--only", choices=names, action="append")
    args = parser.parse_args()
    chosen = args.only or names
    started = time.perf_counter()
    results: dict[str, Any] = {
        "machine": {
            "python": platform.python_version(),
            "cpus": __import__("os").cpu_count(),
            "platform": platform.platform(),
            "aiohttp": aiohttp.__version__,
        },
        "date": date.today().isoformat(),
        "quick": args.quick,
    }
    runners = {
        "throughput": bench_throughput,
        "overhead": bench_overhead,
        "bytecodes": bench_bytecodes,
        "instructions": bench_instructions,
        "ratelimit": bench_ratelimit,
        "memory": bench_memory,
        "mock_server": bench_mock_server,
        "codec": bench_codec,
        "many_stores": bench_many_stores,
        "ledger": bench_ledger,
        "retry_isolation": bench_retry_isolation,
        "fleet": bench_fleet,
    }
    for name in chosen:
        print(f"{name}:", flush=True)
        results[name] = runners[name](args.quick)
    if "throughput" in results:
        t = results["throughput"]
        for level, pairs in t["levels"].items():
            print(
                f"throughput at concurrency {level}: "
                + ", ".join(f"{pair} {facts['ratio']:.2f}x {facts['vs']}" for pair, facts in pairs.items())
            )
        if args.plot:
            plot(t["curve"], args.plot)
    print(f"total {time.perf_counter() - started:.0f} s")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
