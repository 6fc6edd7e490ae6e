"""Many stores in one process: 10,000 stores x 5 operations (run.py's section ``many_stores``).

Against the mock in a child process, every store with SHOPLINE's bucket (4/s, capacity 40,
queueing), the client on default settings: wall time against the pacing bound, peak descriptors
and RSS growth of this process; client CPU per request against one store sending as many
operations with limits off, in alternating rounds. Beside it, limits off everywhere, the same
10,000 stores through the SDK and through a minimal aiohttp loop sharing one session, in
alternating rounds. And the bytes a store handle keeps once its work is done, by tracemalloc.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import statistics
import time
import tracemalloc
from collections.abc import Iterator
from typing import Any, Literal

import aiohttp
import msgspec
from careful import careful_encode
from common import PRODUCT_PATH, mock_server_process, rss_mb, spec_product_update

from shopline_async import BatchExecutor, RateLimit, ShoplineClient, UpdateProduct
from shopline_async._codec import encode_product_update
from shopline_async._constants import DEFAULT_BATCH_CONCURRENCY, DEFAULT_RATE

_answer = msgspec.json.Decoder()


def open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


class Peaks:
    """Samples this process's descriptors and RSS every few milliseconds while it runs."""

    def __init__(self, sample: bool = True) -> None:
        self.fds = 0
        self.rss_mb = 0.0
        self._sample = sample
        self._task: asyncio.Task[None] | None = None

    async def _sample_peaks(self) -> None:
        while True:
            self.fds = max(self.fds, open_descriptors())
            self.rss_mb = max(self.rss_mb, rss_mb())
            await asyncio.sleep(0.01)

    def __enter__(self) -> Peaks:
        if self._sample:
            self._task = asyncio.create_task(self._sample_peaks())
        return self

    def __exit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()


def handles(stores: int) -> list[str]:
    return [f"s{n}" for n in range(stores)]


def operations(stores: list[str], per_store: int, *, as_dict: bool = False) -> Iterator[UpdateProduct]:
    """The example update to every store in turn; ``as_dict``: as the catalog's dict, not the model."""
    model = spec_product_update()
    update: Any = msgspec.to_builtins(model) if as_dict else model
    for i in range(per_store):  # round robin, as a catalog fanned out to every store would be
        for handle in stores:
            yield UpdateProduct(handle, product_id(handle, i), update)


def product_id(handle: str, i: int) -> str:
    # one id per store and product, as SHOPLINE's are: with the same few ids in every store (and
    # every store behind the mock's one host), the raw loop's URLs repeat and yarl's cache of
    # parsed URLs answers them, an advantage no real fleet of stores gives (benchmarks/README.md)
    return f"{handle}-p{i}"


async def sdk_run(
    base_url: str,
    stores: list[str],
    per_store: int,
    rate_limit: RateLimit | None,
    *,
    sample: bool = True,
    as_dict: bool = False,
    client_options: dict[str, Any] | None = None,
) -> dict[str, float]:
    """Default client and executor (or ``rate_limit``); wall, CPU and (``sample``) peaks of this process.
    Without ``sample`` nothing runs beside the batch, as nothing runs beside ``raw_run``'s loop."""
    gc.collect()
    rss_before = rss_mb()
    kwargs: dict[str, Any] = {} if rate_limit is None else {"rate_limit": rate_limit}
    kwargs |= client_options or {}
    async with ShoplineClient(base_url=base_url, **kwargs) as client:
        for handle in stores:
            client.store(handle, f"mock-token-{handle}")
        not_ok = 0
        with Peaks(sample) as peaks:
            cpu, wall = time.process_time(), time.perf_counter()
            async with BatchExecutor(client).stream(operations(stores, per_store, as_dict=as_dict)) as results:
                async for result in results:
                    not_ok += not result.ok
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    requests = len(stores) * per_store
    assert not_ok == 0, f"{not_ok} of {requests} operations failed"
    measured = {"wall_s": wall, "ops_per_s": requests / wall, "cpu_us_per_request": 1e6 * cpu / requests}
    if sample:  # else there are no peaks to report
        measured |= {"peak_fds": float(peaks.fds), "rss_growth_mb": peaks.rss_mb - rss_before}
    return measured


async def raw_run(
    base_url: str,
    stores: list[str],
    per_store: int,
    concurrency: int,
    *,
    validate_each: Literal["sdk", "careful"] | None = None,
) -> float:
    """A minimal aiohttp loop: one session for every store, pre-encoded body, msgspec decode; ops/s.
    ``validate_each``: every update is checked and encoded first, with the SDK's encoder (``sdk``)
    or as a careful user would with plain msgspec Structs from the catalog's dict (``careful``)."""
    update = spec_product_update()
    row = msgspec.to_builtins(update)
    body = encode_product_update(update)
    jobs = iter([(h, i) for i in range(per_store) for h in stores])
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:

        async def worker() -> None:
            for handle, i in jobs:
                headers = {
                    "Authorization": f"Bearer mock-token-{handle}",
                    "Content-Type": "application/json; charset=utf-8",
                }
                if validate_each == "sdk":
                    data = encode_product_update(update)
                elif validate_each == "careful":
                    data = careful_encode(row)
                else:
                    data = body
                async with session.put(
                    base_url + PRODUCT_PATH.format(product_id(handle, i)), data=data, headers=headers
                ) as resp:
                    assert resp.status == 200 and _answer.decode(await resp.read())["product"]["id"]

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return len(stores) * per_store / (time.perf_counter() - started)


async def bytes_per_idle_store(base_url: str, stores: list[str]) -> tuple[float, float]:
    """(bytes per handle never used, bytes per handle after one update), held while the client is open."""
    async with ShoplineClient(base_url=base_url, rate_limit=RateLimit.unlimited()) as client:
        warm = client.store("warm", "mock-token-s0")  # first-use costs (codecs, pools) are not a store's
        await warm.products.update("p0", {"title": "warm"})
        gc.collect()
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        for handle in stores:
            client.store(handle, f"mock-token-{handle}")
        gc.collect()
        created = tracemalloc.get_traced_memory()[0]
        async with BatchExecutor(client).stream(UpdateProduct(h, "p0", {"title": "x"}) for h in stores) as results:
            async for result in results:
                assert result.ok, result.error
        gc.collect()
        used = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
    return (created - before) / len(stores), (used - before) / len(stores)


def bench_many_stores(quick: bool) -> dict[str, Any]:
    stores = handles(2_000 if quick else 10_000)
    per_store = 5
    rounds = 3  # the median of three: a single round right after the paced run moved by 15%
    requests = len(stores) * per_store
    names = ",".join(stores)
    with contextlib.ExitStack() as stack:
        limited = stack.enter_context(mock_server_process("--stores", names))  # 4/s, 40, queue
        unlimited = stack.enter_context(mock_server_process("--stores", names, "--unlimited"))
        unpaced = RateLimit.unlimited()
        asyncio.run(sdk_run(unlimited, stores[:1], 2_000, unpaced))  # a warm-up: first-use costs
        many = asyncio.run(sdk_run(limited, stores, per_store, None))  # wall, peaks, RSS growth
        # CPU per request, paced at defaults, against one store sending as many updates with limits
        # off, at its default max_in_flight (40 in flight) and at the batch's concurrency (100, as
        # many as the paced run has in flight): rounds alternating, the median of their ratios. One
        # run of each moved by 25% between runs of the same code; the sampler runs in none of them.
        paced_cpu: list[float] = []
        single_cpu: list[float] = []
        single_cpu_at_100: list[float] = []
        at_100 = RateLimit.unlimited(DEFAULT_BATCH_CONCURRENCY)
        for _ in range(rounds):
            for cpu, url, targets, per, rate_limit in (
                (single_cpu, unlimited, stores[:1], requests, unpaced),
                (paced_cpu, limited, stores, per_store, None),
                (single_cpu_at_100, unlimited, stores[:1], requests, at_100),
            ):
                cpu.append(asyncio.run(sdk_run(url, targets, per, rate_limit, sample=False))["cpu_us_per_request"])
        cpu_ratios = [p / s for p, s in zip(paced_cpu, single_cpu, strict=True)]
        cpu_ratios_at_100 = [p / s for p, s in zip(paced_cpu, single_cpu_at_100, strict=True)]
        sdk_rates: list[float] = []
        raw_rates: list[float] = []
        validating_rates: list[float] = []  # the raw loop validating every update as the SDK does
        # two rounds not counted: the first ones after the paced run come out slower (benchmarks/README.md)
        for _ in range(2):
            asyncio.run(sdk_run(unlimited, stores, per_store, unpaced, sample=False))
            asyncio.run(raw_run(unlimited, stores, per_store, concurrency=100))
        for _ in range(rounds):
            sdk_rates.append(asyncio.run(sdk_run(unlimited, stores, per_store, unpaced, sample=False))["ops_per_s"])
            raw_rates.append(asyncio.run(raw_run(unlimited, stores, per_store, concurrency=100)))
            validating_rates.append(
                asyncio.run(raw_run(unlimited, stores, per_store, concurrency=100, validate_each="sdk"))
            )
        idle_new, idle_used = asyncio.run(bytes_per_idle_store(unlimited, handles(1_000 if quick else 10_000)))
    result: dict[str, Any] = {
        "stores": len(stores),
        "ops": requests,
        "wall_s": round(many["wall_s"], 2),
        # each store's 5 requests paced evenly at 4/s: the first at once, the last (ops-1)/rate later
        "bound_s": (per_store - 1) / DEFAULT_RATE,
        "ops_per_s": round(many["ops_per_s"]),
        "peak_fds": int(many["peak_fds"]),
        "rss_growth_mb": round(many["rss_growth_mb"], 1),
        "bytes_per_store": round(idle_used),
        "bytes_per_new_handle": round(idle_new),
        "cpu_us_per_request": round(statistics.median(paced_cpu), 1),
        "single_store_cpu_us_per_request": round(statistics.median(single_cpu), 1),
        "cpu_per_request_ratio": round(statistics.median(cpu_ratios), 3),
        "cpu_per_request_ratio_range": [round(min(cpu_ratios), 3), round(max(cpu_ratios), 3)],
        "single_store_at_100_cpu_us_per_request": round(statistics.median(single_cpu_at_100), 1),
        "cpu_per_request_ratio_at_100": round(statistics.median(cpu_ratios_at_100), 3),
        "cpu_per_request_ratio_at_100_range": [round(min(cpu_ratios_at_100), 3), round(max(cpu_ratios_at_100), 3)],
        "unlimited_sdk_ops_per_s": round(statistics.median(sdk_rates)),
        "unlimited_raw_ops_per_s": round(statistics.median(raw_rates)),
        "unlimited_vs_raw": round(statistics.median(s / r for s, r in zip(sdk_rates, raw_rates, strict=True)), 3),
        "unlimited_vs_raw_rounds": [round(s / r, 3) for s, r in zip(sdk_rates, raw_rates, strict=True)],
        "unlimited_raw_validating_vs_raw": round(
            statistics.median(v / r for v, r in zip(validating_rates, raw_rates, strict=True)), 3
        ),
        "unlimited_vs_raw_validating": round(
            statistics.median(s / v for s, v in zip(sdk_rates, validating_rates, strict=True)), 3
        ),
        "rounds": rounds,
    }
    print(
        f"  {result['stores']:,} stores x {per_store} (4/s, capacity 40, queue): {result['wall_s']} s "
        f"(pacing bound {result['bound_s']} s), {result['ops_per_s']:,} ops/s, peak {result['peak_fds']} descriptors, "
        f"RSS +{result['rss_growth_mb']} MB; CPU {result['cpu_us_per_request']} us/request, "
        f"{result['cpu_per_request_ratio']}x one store's {result['single_store_cpu_us_per_request']} us "
        f"(rounds {result['cpu_per_request_ratio_range'][0]}-{result['cpu_per_request_ratio_range'][1]}x); "
        f"{result['cpu_per_request_ratio_at_100']}x one store's at 100 in flight, "
        f"{result['single_store_at_100_cpu_us_per_request']} us (rounds {result['cpu_per_request_ratio_at_100_range'][0]}"
        f"-{result['cpu_per_request_ratio_at_100_range'][1]}x)\n"
        f"  limits off: SDK {result['unlimited_sdk_ops_per_s']:,} ops/s, raw aiohttp loop "
        f"{result['unlimited_raw_ops_per_s']:,} ops/s: {result['unlimited_vs_raw']}x; the raw loop validating every "
        f"update {result['unlimited_raw_validating_vs_raw']}x the raw loop, the SDK "
        f"{result['unlimited_vs_raw_validating']}x the validating loop\n"
        f"  an idle store handle: {result['bytes_per_new_handle']} bytes new, {result['bytes_per_store']} after one update",
        flush=True,
    )
    return result
