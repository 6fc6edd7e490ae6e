"""Event hooks and OpenTelemetry, against the mock server: what they are told, in what order,
with SHOPLINE's trace ids, and never a token."""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
from collections import Counter
from typing import Any

import pytest

from shopline_async import (
    BatchExecutor,
    ConfigError,
    ProductUpdate,
    RateLimit,
    RequestEvent,
    ResponseEvent,
    RetryEvent,
    RetryPolicy,
    ShoplineClient,
    UpdateProduct,
)
from shopline_async.mock import Faults, MockShopline, MockStoreConfig

otel_sdk = pytest.importorskip("opentelemetry.sdk", reason="the telemetry tests need opentelemetry-sdk ([test])")

from opentelemetry.sdk.metrics import MeterProvider  # noqa: E402
from opentelemetry.sdk.metrics.export import InMemoryMetricReader  # noqa: E402
from opentelemetry.sdk.trace import TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter  # noqa: E402

from shopline_async.otel import OpenTelemetry  # noqa: E402

FAST = RetryPolicy(initial_delay=0.01, max_delay=0.02, max_attempts=3, jitter=False)
TOKENS = {"token-okay-0001": "okay", "token-retry-0001": "retry", "token-limit-0001": "limited"}
DEAD_TOKEN = "token-revoked-0001"
CONFIGS = {
    "okay": MockStoreConfig(rate=None),
    "retry": MockStoreConfig(rate=None, faults=Faults(fail_first=1, fail_status=503)),
    "limited": MockStoreConfig(rate=None, faults=Faults(fail_first=1, fail_status=429)),
}


def _telemetry() -> tuple[OpenTelemetry, InMemorySpanExporter, InMemoryMetricReader]:
    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    reader = InMemoryMetricReader()
    return OpenTelemetry(tracer_provider=tracer_provider, meter_provider=MeterProvider([reader])), spans, reader


def _points(reader: InMemoryMetricReader) -> dict[str, list[Any]]:
    data = reader.get_metrics_data()
    assert data is not None
    return {
        metric.name: list(metric.data.data_points)
        for resource in data.resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
    }


async def test_a_batch_as_spans_and_metrics_and_hooks_told_the_same() -> None:
    telemetry, exporter, reader = _telemetry()
    answers: list[ResponseEvent] = []
    async with MockShopline(TOKENS, store_configs=CONFIGS, record_traces=True) as server:
        async with ShoplineClient(
            base_url=server.base_url,
            retry=FAST,
            rate_limit=RateLimit.unlimited(),
            telemetry=telemetry,
            event_hooks={"response": [answers.append]},
        ) as client:
            for token, handle in TOKENS.items():
                client.store(handle, token)
            client.store("dead", DEAD_TOKEN)
            operations = [
                UpdateProduct(handle, f"{handle}-1", ProductUpdate(title="t"))
                for handle in ("okay", "retry", "limited", "dead")
            ]
            report = await BatchExecutor(client, retry=FAST).gather(operations)
    outcomes = {r.store: r.outcome for r in report.results}
    assert outcomes == {"okay": "ok", "retry": "ok", "limited": "ok", "dead": "failed"}
    assert report.results[3].status == 401

    spans = exporter.get_finished_spans()
    (batch,) = [s for s in spans if s.name == "shopline.batch"]
    assert batch.attributes is not None
    assert batch.attributes["shopline.operations"] == 4
    assert batch.attributes["shopline.operations.ok"] == 3 and batch.attributes["shopline.operations.failed"] == 1
    operations_by_store = {s.attributes["shopline.store"]: s for s in spans if s.name == "shopline.update_product"}
    assert set(operations_by_store) == {"okay", "retry", "limited", "dead"}
    for store, span in operations_by_store.items():
        assert span.parent is not None and span.parent.span_id == batch.context.span_id
        assert span.attributes["shopline.product_id"] == f"{store}-1"
        result = next(r for r in report.results if r.store == store)
        assert span.attributes["shopline.trace_id"] == result.trace_id
        assert span.attributes["shopline.attempts"] == result.attempts
        assert span.attributes["shopline.outcome"] == result.outcome
        attempts = sorted(
            (s for s in spans if s.parent is not None and s.parent.span_id == span.context.span_id),
            key=lambda s: s.start_time or 0,
        )
        assert [s.name for s in attempts] == ["PUT"] * result.attempts
        # every attempt's trace id is the one the server sent, in order
        assert [s.attributes["shopline.trace_id"] for s in attempts] == list(result.trace_ids)
        if store != "dead":
            assert (
                list(result.trace_ids)
                == server.stats(store).traces[f"/admin/openapi/v20260601/products/{store}-1.json"]
            )
        first = attempts[0].attributes
        assert first["http.request.method"] == "PUT" and first["server.address"] == "127.0.0.1"
        assert first["url.full"] == f"{server.base_url}/admin/openapi/v20260601/products/{store}-1.json"
        assert "http.request.resend_count" not in first
        if len(attempts) > 1:
            assert attempts[1].attributes["http.request.resend_count"] == 1
    retried = operations_by_store["retry"]
    assert [a.attributes["http.response.status_code"] for a in _children(spans, retried)] == [503, 200]
    assert [e.name for e in retried.events if e.name == "shopline.retry"] == ["shopline.retry"]
    limited_events = operations_by_store["limited"].events
    assert any(e.name == "shopline.retry" and e.attributes["shopline.cool_down"] for e in limited_events)
    attempts_seen = {
        (s.attributes["shopline.store"], s.attributes["http.response.status_code"], s.attributes["shopline.trace_id"])
        for s in spans
        if s.name == "PUT"
    }
    assert {(a.store, a.status, a.trace_id) for a in answers} == attempts_seen and len(answers) == 6
    dead = operations_by_store["dead"]
    assert dead.status.status_code.name == "ERROR" and dead.attributes["error.type"] == "AuthenticationError"
    (dead_attempt,) = _children(spans, dead)
    assert dead_attempt.attributes["error.type"] == "401"

    points = _points(reader)
    durations = {
        (p.attributes["shopline.store"], p.attributes.get("http.response.status_code")): p.count
        for p in points["http.client.request.duration"]
    }
    assert durations == {
        ("okay", 200): 1,
        ("retry", 503): 1,
        ("retry", 200): 1,
        ("limited", 429): 1,
        ("limited", 200): 1,
        ("dead", 401): 1,
    }
    assert tuple(points["http.client.request.duration"][0].explicit_bounds)[:3] == (0.005, 0.01, 0.025)
    by_outcome: Counter[str] = Counter()
    for point in points["shopline.operations"]:
        by_outcome[point.attributes["shopline.outcome"]] += point.value
    assert by_outcome == Counter(ok=3, failed=1)
    assert {p.attributes["shopline.store"]: p.value for p in points["shopline.retries"]} == {"retry": 1, "limited": 1}
    assert [(p.attributes["shopline.store"], p.value) for p in points["shopline.rate_limited"]] == [("limited", 1)]
    assert [(p.attributes["shopline.store"], p.value) for p in points["shopline.stores.stopped"]] == [("dead", 1)]
    assert all(p.value == 0 for p in points["http.client.active_requests"])
    assert all(p.value == 0 for p in points["shopline.operations.pending"])
    assert sum(p.count for p in points["shopline.limiter.wait"]) == 6

    everything = "".join(s.to_json() for s in spans) + json.dumps(
        reader.get_metrics_data().to_json() if hasattr(reader, "get_metrics_data") else ""
    )
    for token in (*TOKENS, DEAD_TOKEN):
        assert token not in everything


def _children(spans: Any, parent: Any) -> list[Any]:
    found = [s for s in spans if s.parent is not None and s.parent.span_id == parent.context.span_id]
    return sorted(found, key=lambda s: s.start_time or 0)


async def test_a_single_call_is_one_operation_span_under_the_callers() -> None:
    telemetry, exporter, _ = _telemetry()
    tracer = telemetry._tracer
    async with MockShopline(TOKENS, store_configs=CONFIGS) as server:
        async with ShoplineClient(base_url=server.base_url, retry=FAST, telemetry=telemetry) as client:
            store = client.store("retry", "token-retry-0001")
            with tracer.start_as_current_span("nightly job") as caller:
                response = await store.products.update_with_response("p9", ProductUpdate(title="t"))
    spans = {s.name: s for s in exporter.get_finished_spans()}
    operation = spans["shopline.update_product"]
    assert operation.parent is not None and operation.parent.span_id == caller.get_span_context().span_id
    assert operation.attributes["shopline.trace_id"] == response.trace_id
    assert operation.attributes["shopline.attempts"] == 2 and operation.attributes["shopline.outcome"] == "ok"
    assert [a.attributes["http.response.status_code"] for a in _children(exporter.get_finished_spans(), operation)] == [
        503,
        200,
    ]


async def test_event_hooks_in_order_with_the_servers_trace_ids(caplog: pytest.LogCaptureFixture) -> None:
    seen: list[Any] = []

    def broken(event: object) -> None:
        raise RuntimeError("a bug in the user's hook")

    hooks = {"request": [seen.append, broken], "response": [seen.append], "retry": [seen.append]}
    async with MockShopline(TOKENS, store_configs=CONFIGS, record_traces=True) as server:
        async with ShoplineClient(base_url=server.base_url, retry=FAST, event_hooks=hooks) as client:
            store = client.store("retry", "token-retry-0001")
            with caplog.at_level(logging.ERROR, logger="shopline_async"):
                response = await store.products.update_with_response("p1", ProductUpdate(title="t"))
            sent = server.stats("retry").traces["/admin/openapi/v20260601/products/p1.json"]
    assert [type(e) for e in seen] == [RequestEvent, ResponseEvent, RetryEvent, RequestEvent, ResponseEvent]
    first, answered, retry, second, last = seen
    assert (first.store, first.method, first.attempt) == ("retry", "PUT", 1)
    assert first.base_url + first.path == f"{server.base_url}/admin/openapi/v20260601/products/p1.json"
    assert (answered.status, answered.trace_id) == (503, sent[0])
    assert (retry.attempt, retry.status, retry.cool_down, retry.delay) == (1, 503, False, 0.01)
    assert (second.attempt, last.status, last.trace_id) == (2, 200, sent[1]) and response.trace_id == sent[1]
    assert last.elapsed > 0 and last.error is None
    logged = [r for r in caplog.records if r.levelno == logging.ERROR and "raised on RequestEvent" in r.getMessage()]
    assert len(logged) == 2  # each time; the call went on
    assert "token-retry-0001" not in repr(seen)


def test_bad_event_hooks_are_refused() -> None:
    with pytest.raises(ConfigError, match="unknown event 'requests'"):
        ShoplineClient(event_hooks={"requests": [print]})
    with pytest.raises(ConfigError, match=r"event_hooks\['response'\] must be a list of callables"):
        ShoplineClient(event_hooks={"response": ["print"]})  # type: ignore[list-item]
    with pytest.raises(ConfigError, match="telemetry must be"):
        ShoplineClient(telemetry=object())  # type: ignore[arg-type]


def test_without_telemetry_opentelemetry_is_never_imported(tmp_path: Any) -> None:
    script = """
import asyncio, sys
from shopline_async import BatchExecutor, ProductUpdate, ShoplineClient, UpdateProduct
from shopline_async.mock import MockShopline
async def main():
    async with MockShopline() as server, ShoplineClient(base_url=server.base_url) as client:
        store = client.store("mock-store", "mock-token")
        await store.products.update("p1", ProductUpdate(title="t"))
        report = await BatchExecutor(client).gather([UpdateProduct(store, "p2", ProductUpdate(title="t"))])
        assert report.summary.ok == 1
asyncio.run(main())
assert not [m for m in sys.modules if m.startswith("opentelemetry")], "imported"
print("ok")
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "ok", done.stderr


async def test_a_cancelled_call_ends_its_spans_and_gauges() -> None:
    telemetry, exporter, reader = _telemetry()
    stalled = {"stall": MockStoreConfig(rate=None, faults=Faults(fail_first=1, fail_status="stall", stall_seconds=30))}
    async with MockShopline({"token-stall-0001": "stall"}, store_configs=stalled) as server:
        async with ShoplineClient(base_url=server.base_url, telemetry=telemetry) as client:
            store = client.store("stall", "token-stall-0001")
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(store.products.update("p1", ProductUpdate(title="t")), 0.2)
    spans = {s.name: s for s in exporter.get_finished_spans()}
    assert spans["shopline.update_product"].attributes["shopline.outcome"] == "cancelled"
    assert spans["PUT"].attributes["error.type"] == "CancelledError"
    points = _points(reader)
    assert all(p.value == 0 for p in points["http.client.active_requests"])
    assert all(p.value == 0 for p in points["shopline.operations.pending"])


async def test_an_invalid_operation_is_a_short_error_span() -> None:
    telemetry, exporter, reader = _telemetry()
    async with MockShopline(TOKENS, store_configs=CONFIGS) as server:
        async with ShoplineClient(base_url=server.base_url, telemetry=telemetry) as client:
            client.store("okay", "token-okay-0001")
            huge = "9" * 100_000
            report = await BatchExecutor(client).gather([UpdateProduct("okay", huge, ProductUpdate(title="t"))])
    assert report.results[0].outcome == "invalid"
    (span,) = exporter.get_finished_spans()[:-1]  # and the batch's
    assert span.attributes["shopline.outcome"] == "invalid" and span.status.status_code.name == "ERROR"
    assert span.attributes["shopline.product_id"] == "9" * 80 + "... (100,000 characters)"
    assert span.attributes["error.type"] == "ValidationError"
    assert [p.attributes["shopline.outcome"] for p in _points(reader)["shopline.operations"]] == ["invalid"]
