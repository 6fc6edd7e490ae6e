"""Python bytecodes executed per request, by package: the noise-free view of the Python side.

Wall and CPU ratios on this shared machine move by several percent from run to run, more than
most single changes to the request path. Counting the bytecode instructions each request runs
(``sys.settrace`` with opcode events) does not move. It is not the whole cost: C code (msgspec's
decoding and validation, multidict, the kernel) and memory touched count nothing here, so beside
the counts each loop's throughput against the raw loop is measured too, untraced, at many more
stores. Limits off, against the mock, 5 updates per store, concurrency 100:

- ``raw``: many_stores.py's minimal aiohttp loop (one pre-encoded body);
- ``raw_validating``: the same, validating and encoding every update with the SDK's encoder;
- ``update``: a ``products.update()`` loop on the store handles (transport, no batch);
- ``floor``: a hand-written batch at its least: workers that prepare and send each operation
  and hand a ``Result`` to the caller through a channel, nothing else;
- ``stream``: ``BatchExecutor.stream()`` with default settings.

``python benchmarks/bytecodes.py [--quick]`` or ``run.py --only bytecodes``.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable, Coroutine
from pathlib import Path
from types import FrameType
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import mock_server_process, spec_product_update
from many_stores import handles, operations, product_id, raw_run

from shopline_async import BatchExecutor, RateLimit, Result, ShoplineClient, Store
from shopline_async._channels import Channel

PER_STORE = 5
CONCURRENCY = 100
_counting = [False]  # set by a loop once its setup (the client, its store handles) is done


def _package(filename: str) -> str:
    for name in ("shopline_async", "aiohttp", "yarl", "multidict", "asyncio"):
        if f"/{name}/" in filename:
            return name
    return "benchmark" if "benchmarks" in filename else "other"


Loop = Callable[[], Coroutine[Any, Any, float]]
"""One loop over every store's updates; returns its requests per second, timed as raw_run times
its own: from when its setup (session, client, store handles) is done."""


def count_bytecodes(run: Loop, *, from_start: bool) -> tuple[Counter[str], Counter[str]]:
    """(bytecodes by package, bytecodes by SDK function) while ``run()`` runs in a new loop:
    from its start, or from when it sets ``_counting``."""
    by_package: Counter[str] = Counter()
    by_function: Counter[str] = Counter()

    def on_call(frame: FrameType, event: str, arg: object) -> Any:
        frame.f_trace_opcodes = True
        code = frame.f_code
        package = _package(code.co_filename)
        function = (
            f"{Path(code.co_filename).name}:{getattr(code, 'co_qualname', code.co_name)}"
            if package == "shopline_async"
            else ""
        )

        def on_opcode(frame: FrameType, event: str, arg: object) -> Any:
            if event == "opcode" and _counting[0]:
                by_package[package] += 1
                if function:
                    by_function[function] += 1
            return on_opcode

        return on_opcode

    async def traced() -> None:
        _counting[0] = from_start
        sys.settrace(on_call)
        try:
            await run()
        finally:
            sys.settrace(None)
            _counting[0] = False

    asyncio.run(traced())
    return by_package, by_function


def loops_for(url: str, stores: list[str]) -> dict[str, Loop]:
    """The loops compared, over ``stores`` at the mock at ``url``, each run by ``asyncio.run(loop())``."""
    update = spec_product_update()

    async def with_client(body: Callable[[ShoplineClient, dict[str, Store]], Coroutine[Any, Any, None]]) -> float:
        # created before the count and the clock start: a handle's setup is not a request's
        async with ShoplineClient(base_url=url, rate_limit=RateLimit.unlimited()) as client:
            by_handle = {handle: client.store(handle, f"mock-token-{handle}") for handle in stores}
            _counting[0] = True
            started = time.perf_counter()
            await body(client, by_handle)
            return len(stores) * PER_STORE / (time.perf_counter() - started)

    async def update_loop(client: ShoplineClient, by_handle: dict[str, Store]) -> None:
        jobs = iter([(h, i) for i in range(PER_STORE) for h in stores])

        async def worker() -> None:
            for handle, i in jobs:
                assert (await by_handle[handle].products.update(product_id(handle, i), update)).id

        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))

    async def floor(client: ShoplineClient, by_handle: dict[str, Store]) -> None:
        """What a batch costs at the least: workers that prepare and send each operation and hand
        a Result to the caller through a channel, and nothing else (no cap across stores, no
        bound on pending work, no summary)."""
        taken = enumerate(operations(stores, PER_STORE))
        results: Channel[Result[Any] | None] = Channel()

        async def worker() -> None:
            for index, op in taken:
                products = by_handle[str(op.store)].products
                response = await products.send(products.prepare(op.product_id, op.product))
                results.put(
                    Result(
                        index=index,
                        key=op.product_id,
                        store=str(op.store),
                        kind="product",
                        outcome="ok",
                        data=response.data,
                        status=response.status,
                        trace_id=response.trace_id,
                        trace_ids=response.trace_ids,
                        attempts=response.attempts,
                        elapsed=response.elapsed,
                        network_time=response.network_time,
                    )
                )

        async def all_workers() -> None:
            await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
            results.put(None)

        workers = asyncio.create_task(all_workers())
        while (result := await results.get()) is not None:
            assert result.ok
        await workers

    async def stream(client: ShoplineClient, by_handle: dict[str, Store]) -> None:
        async with BatchExecutor(client).stream(operations(stores, PER_STORE)) as results:
            async for result in results:
                assert result.ok, result.error

    return {
        "raw": lambda: raw_run(url, stores, PER_STORE, CONCURRENCY),
        "raw_validating": lambda: raw_run(url, stores, PER_STORE, CONCURRENCY, validate_each="sdk"),
        "update": lambda: with_client(update_loop),
        "floor": lambda: with_client(floor),
        "stream": lambda: with_client(stream),
    }


def throughput_against_raw(stores: list[str], rounds: int) -> dict[str, float]:
    """ops/s of each loop over the raw loop's, median of interleaved rounds after a warm-up."""
    with mock_server_process("--stores", ",".join(stores), "--unlimited") as url:
        loops = loops_for(url, stores)
        for loop in loops.values():
            asyncio.run(loop())
        rates: dict[str, list[float]] = {name: [] for name in loops}
        for _ in range(rounds):
            for name, loop in loops.items():
                rates[name].append(asyncio.run(loop()))
    return {
        name: round(statistics.median(r / raw for r, raw in zip(values, rates["raw"], strict=True)), 3)
        for name, values in rates.items()
    }


def bench_bytecodes(quick: bool) -> dict[str, Any]:
    stores = handles(200 if quick else 1_000)
    requests = len(stores) * PER_STORE
    with mock_server_process("--stores", ",".join(stores), "--unlimited") as url:
        loops = loops_for(url, stores)
        for loop in loops.values():  # warm-up, not counted: first-use caches, compiled validators
            asyncio.run(loop())
        counted = {name: count_bytecodes(loop, from_start=name.startswith("raw")) for name, loop in loops.items()}
    # beside the counts, what each loop achieves: at many stores, and not traced
    timed_stores = handles(2_000 if quick else 10_000)
    against_raw = throughput_against_raw(timed_stores, rounds=3)
    per_request = {
        name: {package: round(n / requests) for package, n in packages.most_common()}
        for name, (packages, _) in counted.items()
    }
    totals = {name: round(sum(packages.values()) / requests) for name, (packages, _) in counted.items()}
    sdk_functions = {f: round(n / requests, 1) for f, n in counted["stream"][1].most_common(25)}
    result = {
        "stores": len(stores),
        "requests": requests,
        "per_request": totals,
        "by_package": per_request,
        "stream_vs_raw_validating": round(totals["stream"] / totals["raw_validating"], 3),
        "stream_sdk_functions": sdk_functions,
        "throughput_stores": len(timed_stores),
        "throughput_vs_raw": against_raw,
    }
    print(
        f"  bytecodes per request ({len(stores):,} stores x {PER_STORE}): "
        + ", ".join(f"{name} {n:,}" for name, n in totals.items())
        + f"; stream / raw_validating {result['stream_vs_raw_validating']}x\n"
        + "".join(f"  {name}: {packages}\n" for name, packages in per_request.items())
        + "  stream, the SDK's functions: "
        + ", ".join(f"{f} {n}" for f, n in list(sdk_functions.items())[:12])
        + f"\n  throughput against the raw loop, {len(timed_stores):,} stores x {PER_STORE}, not traced: "
        + ", ".join(f"{name} {ratio}x" for name, ratio in against_raw.items()),
        flush=True,
    )
    return result


if __name__ == "__main__":
    bench_bytecodes("--quick" in sys.argv)
