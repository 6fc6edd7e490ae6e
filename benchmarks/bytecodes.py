"""Python bytecodes executed per request, by package: the noise-free view of where the CPU goes.

Wall and CPU ratios on this shared machine move by several percent from run to run, more than
most single changes to the request path. Counting the bytecode instructions each request runs
(``sys.settrace`` with opcode events) does not move, and tracks CPU closely here: the SDK's
``stream()`` runs about 1.26x the bytecodes of the validating raw loop and measures about
1.2x its CPU. Limits off, against the mock, many stores x 5 updates each, concurrency 100:

- ``raw``: many_stores.py's minimal aiohttp loop (one pre-encoded body);
- ``raw_validating``: the same, validating and encoding every update with the SDK's encoder;
- ``update``: a ``products.update()`` loop on the store handles (transport, no batch);
- ``stream``: ``BatchExecutor.stream()`` with default settings.

C code (msgspec, multidict, the kernel) counts nothing here: this says how much Python runs,
not how long. ``python benchmarks/bytecodes.py [--quick]`` or ``run.py --only bytecodes``.
"""

from __future__ import annotations

import asyncio
import sys
from collections import Counter
from collections.abc import Callable, Coroutine
from pathlib import Path
from types import FrameType
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import mock_server_process, spec_product_update
from many_stores import handles, operations, product_id, raw_run

from shopline_async import BatchExecutor, RateLimit, ShoplineClient, Store

PER_STORE = 5
CONCURRENCY = 100
_counting = [False]  # set by a loop once its setup (the client, its store handles) is done


def _package(filename: str) -> str:
    for name in ("shopline_async", "aiohttp", "yarl", "multidict", "asyncio"):
        if f"/{name}/" in filename:
            return name
    return "benchmark" if "benchmarks" in filename else "other"


def count_bytecodes(
    run: Callable[[], Coroutine[Any, Any, Any]], *, from_start: bool
) -> tuple[Counter[str], Counter[str]]:
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


def bench_bytecodes(quick: bool) -> dict[str, Any]:
    stores = handles(200 if quick else 1_000)
    requests = len(stores) * PER_STORE
    update = spec_product_update()
    with mock_server_process("--stores", ",".join(stores), "--unlimited") as url:

        async def with_client(body: Callable[[ShoplineClient, dict[str, Store]], Coroutine[Any, Any, None]]) -> None:
            # created before the count starts: a handle's setup is not a request's
            async with ShoplineClient(base_url=url, rate_limit=RateLimit.unlimited()) as client:
                by_handle = {handle: client.store(handle, f"mock-token-{handle}") for handle in stores}
                _counting[0] = True
                await body(client, by_handle)

        async def update_loop(client: ShoplineClient, by_handle: dict[str, Store]) -> None:
            jobs = iter([(h, i) for i in range(PER_STORE) for h in stores])

            async def worker() -> None:
                for handle, i in jobs:
                    assert (await by_handle[handle].products.update(product_id(handle, i), update)).id

            await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))

        async def stream(client: ShoplineClient, by_handle: dict[str, Store]) -> None:
            async with BatchExecutor(client).stream(operations(stores, PER_STORE)) as results:
                async for result in results:
                    assert result.ok, result.error

        loops: dict[str, Callable[[], Coroutine[Any, Any, Any]]] = {
            "raw": lambda: raw_run(url, stores, PER_STORE, CONCURRENCY),
            "raw_validating": lambda: raw_run(url, stores, PER_STORE, CONCURRENCY, validate_each=True),
            "update": lambda: with_client(update_loop),
            "stream": lambda: with_client(stream),
        }
        for loop in loops.values():  # warm-up, not counted: first-use caches, compiled validators
            asyncio.run(loop())
        counted = {name: count_bytecodes(loop, from_start=name.startswith("raw")) for name, loop in loops.items()}
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
    }
    print(
        f"  bytecodes per request ({len(stores):,} stores x {PER_STORE}): "
        + ", ".join(f"{name} {n:,}" for name, n in totals.items())
        + f"; stream / raw_validating {result['stream_vs_raw_validating']}x\n"
        + "".join(f"  {name}: {packages}\n" for name, packages in per_request.items())
        + "  stream, the SDK's functions: "
        + ", ".join(f"{f} {n}" for f, n in list(sdk_functions.items())[:12]),
        flush=True,
    )
    return result


if __name__ == "__main__":
    bench_bytecodes("--quick" in sys.argv)
