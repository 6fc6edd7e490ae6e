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
- ``validating``: the same loop validating and encoding every update with the SDK's encoder, as
  the SDK does: what any client that checks its input would do at the least;
- ``stream``: many_stores.py's ``sdk_run``: ``BatchExecutor.stream()``, default settings;
- ``paced``: the same at the default rate limit, against the mock with SHOPLINE's bucket per store
  (4/s, capacity 40, queueing): many_stores' paced run. Valgrind's pace leaves each store's next
  update far more than 0.25 s after its last, as the clock's run, CPU-bound, does too;
- ``one_store``: ``stream()`` to one store, limits off, as many updates as the store runs together
  (1 and 3 times the store count): many_stores' single-store run, the base of its CPU target. Its
  store's ``max_in_flight`` (40) caps it at 40 requests in flight, where the others have 100;
- ``one_store_at_100``: the same with ``max_in_flight=100``: in flight as many as the others, so
  what ``paced`` costs beyond it is what the number of stores costs.

The last-level cache is simulated at 2 MB (``--LL=2097152,16,64``), nearer what one tenant of a
shared machine gets than the host's own size, at which neither loop misses it (benchmarks/README.md,
2026-12-05). Skipped where valgrind is not installed (``apt-get install valgrind``). Minutes, not
seconds: valgrind runs the client some fifty times slower.

``python benchmarks/instructions.py [--quick]`` or ``run.py --only instructions``.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from common import mock_server_process
from many_stores import handles, raw_run, sdk_run

from shopline_async import RateLimit

CONCURRENCY = 100
SIZES = (1, 3)  # updates per store in the two runs
LAST_LEVEL_CACHE = "--LL=2097152,16,64"
LOOPS = ("raw", "validating", "stream", "paced", "one_store", "one_store_at_100")


def run_child(loop: str, url: str, stores: int, per_store: int) -> None:
    """What valgrind runs: a warm-up over the first stores, then ``per_store`` updates to each store."""
    names = handles(stores)
    warm = names[:300]
    if loop in ("raw", "validating"):
        validate_each = loop == "validating"
        asyncio.run(raw_run(url, warm, 1, CONCURRENCY, validate_each=validate_each))
        asyncio.run(raw_run(url, names, per_store, CONCURRENCY, validate_each=validate_each))
    elif loop.startswith("one_store"):
        unpaced = RateLimit.unlimited(CONCURRENCY) if loop == "one_store_at_100" else RateLimit.unlimited()
        asyncio.run(sdk_run(url, names[:1], len(warm), unpaced, sample=False))
        asyncio.run(sdk_run(url, names[:1], stores * per_store, unpaced, sample=False))
    else:
        rate_limit = None if loop == "paced" else RateLimit.unlimited()  # None: the client's default
        asyncio.run(sdk_run(url, warm, 1, rate_limit, sample=False))
        asyncio.run(sdk_run(url, names, per_store, rate_limit, sample=False))


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


def bench_instructions(quick: bool) -> dict[str, Any]:
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
        for loop in LOOPS:
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
    raw, stream = result["per_request"]["raw"], result["per_request"]["stream"]
    result["raw_over_stream_instructions"] = round(raw["instructions"] / stream["instructions"], 3)
    validating = result["per_request"]["validating"]["instructions"]
    result["validating_over_stream_instructions"] = round(validating / stream["instructions"], 3)
    result["stream_over_raw_last_level_misses"] = round(stream["last_level_misses"] / raw["last_level_misses"], 3)
    paced = result["per_request"]["paced"]["instructions"]
    for base in ("one_store", "one_store_at_100"):
        result[f"paced_over_{base}_instructions"] = round(paced / result["per_request"][base]["instructions"], 3)
    print(
        f"  {stores:,} stores x {SIZES[0]} and x {SIZES[1]}, limits off, concurrency {CONCURRENCY}, per request: "
        + "; ".join(
            f"{loop} {c['instructions']:,} instructions, {c['l1_instruction_misses']:,} L1 instruction and "
            f"{c['l1_data_misses']:,} L1 data misses, "
            f"{c['last_level_misses']:,} last-level misses (2 MB)"
            for loop, c in result["per_request"].items()
        )
        + f"\n  by instructions stream would run at {result['raw_over_stream_instructions']}x the raw loop and "
        f"{result['validating_over_stream_instructions']}x the validating loop; "
        f"it misses the last-level cache {result['stream_over_raw_last_level_misses']}x as often; "
        f"paced at defaults it costs {result['paced_over_one_store_instructions']}x the instructions of one "
        f"store's, {result['paced_over_one_store_at_100_instructions']}x one store's at 100 in flight",
        flush=True,
    )
    return result


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        run_child(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]))
    else:
        bench_instructions("--quick" in sys.argv)
