"""Instructions and cache misses per request, counted by valgrind: the ruler that holds still.

On this shared machine the clock moves by 30% between runs of the same code, more than most changes
to the request path. ``valgrind --tool=callgrind`` counts the client's instructions and, with its
cache simulator, its cache misses: the same on every run within about 0.5% (the mock answers in
real time, so how many answers one turn of the event loop finds still varies). Each loop runs in
a child process under valgrind, against the mock server in another process (valgrind does not
follow it), twice: after a short warm-up, once with 1 update per store and once with 3; the
difference of the two totals over the difference in requests is what one request costs, start-up
and first-use costs taken out (among them each store's first use: its limiter and its place in the
batch).
Limits off, 2,000 stores (500 with ``--quick``), concurrency 100:

- ``raw``: many_stores.py's minimal aiohttp loop (one session, one pre-encoded body);
- ``careful``: the same loop validating every update as a careful user would, from the catalog's
  dict: ``msgspec.convert`` into plain Structs carrying the reference page's limits, then
  ``msgspec.json.encode`` (``careful.py``): the issue's base for ``stream()``;
- ``validating``: the same loop validating and encoding every update with the SDK's encoder;
- ``stream``: many_stores.py's ``sdk_run``: ``BatchExecutor.stream()``, default settings, the
  update a ``ProductUpdate``; ``stream_dict``: the same with the update as the catalog's dict;
- ``paced``: ``stream`` at the default rate limit, against the mock with SHOPLINE's bucket per store
  (4/s, capacity 40, queueing): many_stores' paced run. Valgrind's pace leaves each store's next
  update far more than 0.25 s after its last, as the clock's run, CPU-bound, does too;
- ``one_store``: ``stream()`` to one store, limits off, as many updates as the store runs together
  (1 and 3 times the store count): many_stores' single-store run, the base of its CPU target. Its
  store's ``max_in_flight`` (40) caps it at 40 requests in flight, where the others have 100;
- ``one_store_at_100``: the same with ``max_in_flight=100``: in flight as many as the others, so
  what ``paced`` costs beyond it is what the number of stores costs;
- ``careful_one_store_50`` and ``stream_one_store_50``, ``stream_dict_one_store_50``: the careful
  loop and ``stream()`` (model and dict) to one store with 50 requests in flight.

The last-level cache is simulated at 2 MB (``--LL=2097152,16,64``), nearer what one tenant of a
shared machine gets than the host's own size, at which neither loop misses it (benchmarks/README.md,
2026-12-05). Skipped where valgrind is not installed (``apt-get install valgrind``). Minutes, not
seconds: valgrind runs the client some fifty times slower.

``python benchmarks/instructions.py [--quick] [--loops=stream,stream_otel]`` or ``run.py --only instructions``.
"""

from __future__ import annotations

import asyncio
import gc
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from common import mock_server_process, spec_product_update
from many_stores import handles, product_id, raw_run, sdk_run

from shopline_async import RateLimit, ShoplineClient

CONCURRENCY = 100
SIZES = (1, 3)  # updates per store in the two runs
LAST_LEVEL_CACHE = "--LL=2097152,16,64"
LOOPS = (
    "raw",
    "careful",
    "validating",
    "stream",
    "stream_dict",
    "paced",
    "one_store",
    "one_store_at_100",
    "careful_one_store_50",
    "stream_one_store_50",
    "stream_dict_one_store_50",
    "stream_hooks",
    "stream_otel",
    "stream_otel_unsampled",
    "update",
)


async def update_run(base_url: str, stores: list[str], per_store: int) -> None:
    """Single calls: ``CONCURRENCY`` tasks awaiting ``store.products.update()`` in turn, limits off."""
    update = spec_product_update()
    async with ShoplineClient(base_url=base_url, rate_limit=RateLimit.unlimited()) as client:
        by_handle = {handle: client.store(handle, f"mock-token-{handle}") for handle in stores}
        jobs = iter([(handle, i) for i in range(per_store) for handle in stores])

        async def worker() -> None:
            for handle, i in jobs:
                assert (await by_handle[handle].products.update(product_id(handle, i), update)).id

        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))


def telemetry_for(loop: str) -> dict[str, Any]:
    """The client options of a loop with hooks (one no-op hook per event) or OpenTelemetry on (the
    SDK's providers, every span batched to an exporter that drops it, metrics aggregated in memory;
    ``_unsampled``: no span sampled, so metrics only)."""
    if loop == "stream_hooks":
        return {"event_hooks": {"request": [id], "response": [id], "retry": [id]}}
    if not loop.startswith("stream_otel"):
        return {}
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

    from shopline_async.otel import OpenTelemetry

    class Dropped(SpanExporter):
        def export(self, spans: Any) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON

    tracer_provider = TracerProvider(sampler=ALWAYS_OFF if loop.endswith("_unsampled") else ALWAYS_ON)
    tracer_provider.add_span_processor(BatchSpanProcessor(Dropped()))
    meter_provider = MeterProvider([InMemoryMetricReader()])
    return {"telemetry": OpenTelemetry(tracer_provider=tracer_provider, meter_provider=meter_provider)}


def run_child(loop: str, url: str, stores: int, per_store: int) -> None:
    """What valgrind runs: a warm-up over the first stores, then ``per_store`` updates to each store."""
    names = handles(stores)
    warm = names[:300]
    as_dict = "dict" in loop
    options = telemetry_for(loop)

    def run(targets: list[str], per_target: int) -> None:
        if loop in ("raw", "careful", "validating"):
            validating = {"raw": None, "careful": "careful", "validating": "sdk"}[loop]
            asyncio.run(raw_run(url, targets, per_target, CONCURRENCY, validate_each=validating))  # type: ignore[arg-type]
        elif loop == "update":
            asyncio.run(update_run(url, targets, per_target))
        elif loop == "careful_one_store_50":
            asyncio.run(raw_run(url, targets, per_target, 50, validate_each="careful"))
        else:
            in_flight = {"one_store": None, "one_store_at_100": CONCURRENCY}.get(loop, 50)
            unpaced = RateLimit.unlimited(in_flight) if in_flight else RateLimit.unlimited()
            rate_limit = unpaced if "one_store" in loop else None if loop == "paced" else RateLimit.unlimited()
            asyncio.run(
                sdk_run(url, targets, per_target, rate_limit, sample=False, as_dict=as_dict, client_options=options)
            )

    if "one_store" in loop:  # one store, as many updates as the others send to all stores
        run(names[:1], len(warm))
        gc.freeze()
        run(names[:1], stores * per_store)
    else:
        run(warm, 1)
        # once warm, what the interpreter and its modules hold is left out of later collections: a
        # full collection walks what the measured run keeps, not the start-up heap, whose one walk
        # (some 25 million instructions) falls in one run of a pair and not the other by chance
        gc.freeze()
        run(names, per_store)


def counted(loop: str, url: str, stores: int, per_store: int, workdir: Path) -> dict[str, int]:
    """The child's totals by event (Ir: instructions; I1mr: L1 instruction misses; D1mr, D1mw: L1 data
    misses; ILmr, DLmr, DLmw: last level)."""
    out = workdir / f"callgrind.{loop}.{per_store}"
    command = [
        "valgrind",
        "--tool=callgrind",
        "--cache-sim=yes",
        LAST_LEVEL_CACHE,
        f"--callgrind-out-file={out}",
        sys.executable,
        __file__,
        "--child",
        loop,
        url,
        str(stores),
        str(per_store),
    ]
    subprocess.run(command, check=True, capture_output=True)
    events: list[str] = []
    totals: list[int] = []
    for line in out.read_text().splitlines():
        if line.startswith("events:"):
            events = line.split()[1:]
        elif line.startswith(("totals:", "summary:")):
            totals = [int(n) for n in line.split()[1:]]
    return dict(zip(events, totals, strict=True))


def bench_instructions(quick: bool, loops: tuple[str, ...] = LOOPS) -> dict[str, Any]:
    if shutil.which("valgrind") is None:
        print("  skipped: valgrind is not installed", flush=True)
        return {}
    stores = 500 if quick else 2_000
    requests = stores * (SIZES[1] - SIZES[0])
    per_request: dict[str, dict[str, int]] = {}
    names = ",".join(handles(stores))
    with (
        mock_server_process("--stores", names, "--unlimited") as unlimited,
        mock_server_process("--stores", names) as limited,  # 4/s, capacity 40, queue
        tempfile.TemporaryDirectory() as tmp,
        ThreadPoolExecutor(2) as pool,  # the two runs of a loop side by side: valgrind uses one core
    ):
        for loop in loops:
            url = limited if loop == "paced" else unlimited
            small, large = pool.map(counted, [loop] * 2, [url] * 2, [stores] * 2, SIZES, [Path(tmp)] * 2)
            per_request[loop] = {event: round((large[event] - small[event]) / requests) for event in small}
    result: dict[str, Any] = {"stores": stores, "concurrency": CONCURRENCY, "per_request": {}}
    for loop, costs in per_request.items():
        result["per_request"][loop] = {
            "instructions": costs["Ir"],
            "l1_instruction_misses": costs["I1mr"],
            "l1_data_misses": costs["D1mr"] + costs["D1mw"],
            "last_level_misses": costs["ILmr"] + costs["DLmr"] + costs["DLmw"],
        }
    ir = {loop: costs["instructions"] for loop, costs in result["per_request"].items()}
    wanted = {
        "stream / careful": ("stream", "careful"),
        "stream_dict / careful": ("stream_dict", "careful"),
        "stream / validating": ("stream", "validating"),
        "stream_dict / validating": ("stream_dict", "validating"),
        "stream / raw": ("stream", "raw"),
        "paced / one_store": ("paced", "one_store"),
        "paced / one_store_at_100": ("paced", "one_store_at_100"),
        "stream_one_store_50 / careful_one_store_50": ("stream_one_store_50", "careful_one_store_50"),
        "stream_dict_one_store_50 / careful_one_store_50": ("stream_dict_one_store_50", "careful_one_store_50"),
        "stream_hooks / stream": ("stream_hooks", "stream"),
        "stream_otel / stream": ("stream_otel", "stream"),
        "stream_otel_unsampled / stream": ("stream_otel_unsampled", "stream"),
        "update / stream": ("update", "stream"),
    }
    result["ratios"] = ratios = {
        name: round(ir[a] / ir[b], 3) for name, (a, b) in wanted.items() if a in ir and b in ir
    }
    print(
        f"  {stores:,} stores x {SIZES[0]} and x {SIZES[1]}, limits off, concurrency {CONCURRENCY}, per request: "
        + "; ".join(
            f"{loop} {c['instructions']:,} instructions, {c['l1_instruction_misses']:,} L1 instruction and "
            f"{c['l1_data_misses']:,} L1 data misses, "
            f"{c['last_level_misses']:,} last-level misses (2 MB)"
            for loop, c in result["per_request"].items()
        )
        + "\n  instructions per request, ratios: "
        + "; ".join(f"{name} {ratio}" for name, ratio in ratios.items()),
        flush=True,
    )
    return result


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        run_child(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]))
    else:
        chosen = next((arg.split("=", 1)[1] for arg in sys.argv if arg.startswith("--loops=")), None)
        bench_instructions("--quick" in sys.argv, tuple(chosen.split(",")) if chosen else LOOPS)
