"""OpenTelemetry traces and metrics: ``ShoplineClient(telemetry=OpenTelemetry())``.

Needs the ``[otel]`` extra (``opentelemetry-api``); this module is the only one that imports
OpenTelemetry, so a client without ``telemetry`` never does. Spans and metrics go to the global
tracer and meter providers unless others are given; with none configured, OpenTelemetry's own
no-op ones swallow them.

Traces follow OpenTelemetry's HTTP client semantic conventions: one ``PUT`` span per attempt
(``http.request.method``, ``server.address``, ``server.port``, ``url.full``,
``http.response.status_code``, ``error.type``, ``http.request.resend_count``) under one span per
operation (``shopline.update_product`` or ``shopline.update_image``, with ``shopline.store``,
``shopline.product_id``, ``shopline.image_id``, SHOPLINE's ``shopline.trace_id``,
``shopline.attempts`` and ``shopline.outcome``), under the caller's span, or under a
``shopline.batch`` span with the batch's counts. Time an attempt waited for its store's limiter
is an event on the operation's span (``shopline.limiter_wait``), as is each retry.

Metrics: ``http.client.request.duration`` (seconds, the advised buckets) by store, method and
status; ``http.client.active_requests``; ``shopline.operations`` by outcome;
``shopline.operations.pending``; ``shopline.retries``; ``shopline.rate_limited`` (429s);
``shopline.stores.stopped``; ``shopline.limiter.wait`` (seconds); for fleet workers
``shopline.fleet.chunks``. No access token is ever in an attribute: URLs carry none, and error
texts are scrubbed before they reach an exception.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from functools import cache
from typing import Any

from opentelemetry import metrics, trace
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from yarl import URL

from ._telemetry import Observer, RequestEvent, ResponseEvent, RetryEvent
from ._version import __version__

__all__ = ["OpenTelemetry", "otlp_export"]

_SCOPE = "shopline_async"
# the semantic conventions' advice for http.client.request.duration
_DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
# a store's limiter holds an attempt from nothing to a cool-down of seconds
_WAIT_BUCKETS = (0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
# outcomes where the store holds the update: the operation's span is not an error
_GOOD_OUTCOMES = frozenset({"ok", "unchanged", "applied_without_body"})


class _Handle:
    """An operation's or an attempt's span, and what its metrics are keyed by."""

    __slots__ = ("key", "span")

    def __init__(self, span: Span, key: Any) -> None:
        self.span = span
        self.key = key


@cache
def _server(base_url: str) -> tuple[str, int]:
    parsed = URL(base_url)
    return parsed.host or "", parsed.port or 0


def _counts(create: Callable[..., Any], name: str, unit: str, description: str, names: tuple[str, ...]) -> Counter[Any]:
    """A count per key (a tuple of the values of ``names``), reported by the instrument ``create``
    makes whenever the meter provider collects."""
    counts: Counter[Any] = Counter()

    def observe(options: CallbackOptions) -> list[Observation]:
        # the reader's thread: list() copies the items in one step, under the GIL
        return [Observation(count, dict(zip(names, key, strict=True))) for key, count in list(counts.items())]

    create(name, [observe], unit=unit, description=description)
    return counts


class OpenTelemetry(Observer):
    """Spans and metrics for every call of a client (see the module's docstring for what).

    >>> client = ShoplineClient(telemetry=OpenTelemetry())

    Only the two histograms are recorded per attempt; counts and gauges are kept in plain dicts
    and read by the meter provider when it collects, which costs a request almost nothing.
    """

    def __init__(self, *, tracer_provider: Any = None, meter_provider: Any = None) -> None:
        self._tracer = trace.get_tracer(_SCOPE, __version__, tracer_provider=tracer_provider)
        meter = metrics.get_meter(_SCOPE, __version__, meter_provider=meter_provider)
        self._duration = meter.create_histogram(
            "http.client.request.duration",
            unit="s",
            description="Duration of HTTP client requests.",
            explicit_bucket_boundaries_advisory=_DURATION_BUCKETS,
        )
        self._limiter_wait = meter.create_histogram(
            "shopline.limiter.wait",
            unit="s",
            description="Time an attempt waited for its store's limiter.",
            explicit_bucket_boundaries_advisory=_WAIT_BUCKETS,
        )
        store, outcome, error = "shopline.store", "shopline.outcome", "error.type"
        connection = ("http.request.method", "server.address", "server.port", store)
        gauge, counter = meter.create_observable_up_down_counter, meter.create_observable_counter
        self._active = _counts(gauge, "http.client.active_requests", "{request}", "Requests in flight.", connection)
        self._pending = _counts(
            gauge, "shopline.operations.pending", "{operation}", "Operations taken and not yet finished.", (store,)
        )
        self._operations = _counts(
            counter, "shopline.operations", "{operation}", "Operations finished, by outcome.", (store, outcome)
        )
        self._retries = _counts(counter, "shopline.retries", "{retry}", "Attempts retried.", (store, error))
        self._rate_limited = _counts(
            counter, "shopline.rate_limited", "{response}", "429 answers: the store's bucket was full.", (store,)
        )
        self._stopped = _counts(
            counter,
            "shopline.stores.stopped",
            "{store}",
            "Stores that answered they cannot be written (401, 402, 403, 423, 433-436).",
            (store, "http.response.status_code"),
        )
        self._chunks = _counts(counter, "shopline.fleet.chunks", "{chunk}", "Chunks a fleet worker drained.", (store,))

    def __repr__(self) -> str:
        return "OpenTelemetry()"

    # --- operations ------------------------------------------------------

    def operation_started(self, name: str, store: str, ids: Mapping[str, str], parent: Any) -> _Handle:
        attributes: dict[str, Any] = {"shopline.store": store}
        for key, value in ids.items():
            attributes[f"shopline.{key}"] = value
        context = trace.set_span_in_context(parent) if parent is not None else None
        span = self._tracer.start_span(name, context=context, kind=SpanKind.INTERNAL, attributes=attributes)
        self._pending[(store,)] += 1
        return _Handle(span, store)

    def operation_finished(
        self,
        operation: _Handle | None,
        outcome: str,
        trace_id: str | None,
        attempts: int,
        error: BaseException | None,
    ) -> None:
        if operation is None:
            return
        span, store = operation.span, operation.key
        ended: dict[str, Any] = {"shopline.outcome": outcome, "shopline.attempts": attempts}
        if trace_id:
            ended["shopline.trace_id"] = trace_id
        if outcome not in _GOOD_OUTCOMES:
            ended["error.type"] = type(error).__name__ if error is not None else outcome
            span.set_status(Status(StatusCode.ERROR, str(error) if error is not None else outcome))
        span.set_attributes(ended)
        span.end()
        self._pending[(store,)] -= 1
        self._operations[(store, outcome)] += 1

    # --- attempts --------------------------------------------------------

    def attempt_started(self, operation: _Handle | None, event: RequestEvent) -> _Handle:
        host, port = _server(event.base_url)
        key = (event.method, host, port, event.store)
        attributes: dict[str, Any] = {
            "http.request.method": event.method,
            "server.address": host,
            "server.port": port,
            "shopline.store": event.store,
            "url.full": event.base_url + event.path,
        }
        if event.attempt > 1:
            attributes["http.request.resend_count"] = event.attempt - 1
        parent = trace.set_span_in_context(operation.span) if operation is not None else None
        span = self._tracer.start_span(event.method, context=parent, kind=SpanKind.CLIENT, attributes=attributes)
        self._active[key] += 1
        self._limiter_wait.record(event.queued, {"shopline.store": event.store})
        if operation is not None and event.queued >= 0.001:
            operation.span.add_event(
                "shopline.limiter_wait", {"shopline.wait_seconds": event.queued, "shopline.attempt": event.attempt}
            )
        return _Handle(span, key)

    def attempt_finished(self, operation: _Handle | None, attempt: _Handle, event: ResponseEvent) -> None:
        span, key = attempt.span, attempt.key
        self._active[key] -= 1
        method, host, port, store = key
        measured: dict[str, Any] = {
            "http.request.method": method,
            "server.address": host,
            "server.port": port,
            "shopline.store": store,
        }
        ended: dict[str, Any] = {}
        if event.status is not None:
            ended["http.response.status_code"] = measured["http.response.status_code"] = event.status
        if event.trace_id:
            ended["shopline.trace_id"] = event.trace_id
        failed = event.error or (str(event.status) if event.status is not None and event.status >= 400 else None)
        if failed is not None:
            ended["error.type"] = measured["error.type"] = failed
            span.set_status(Status(StatusCode.ERROR))
        span.set_attributes(ended)
        span.end()
        self._duration.record(event.elapsed, measured)
        if event.status == 429:
            self._rate_limited[(store,)] += 1

    def retrying(self, operation: _Handle | None, event: RetryEvent) -> None:
        reason = event.error or str(event.status)
        self._retries[(event.store, reason)] += 1
        if operation is not None:
            operation.span.add_event(
                "shopline.retry",
                {
                    "shopline.attempt": event.attempt,
                    "error.type": reason,
                    "shopline.delay_seconds": event.delay,
                    "shopline.cool_down": event.cool_down,
                    **({"shopline.trace_id": event.trace_id} if event.trace_id else {}),
                },
            )

    def store_stopped(self, store: str, status: int, trace_id: str | None) -> None:
        self._stopped[(store, status)] += 1

    # --- batches ---------------------------------------------------------

    def batch_started(self) -> Span:
        return self._tracer.start_span("shopline.batch", kind=SpanKind.INTERNAL)

    def batch_finished(self, batch: Span, counts: Mapping[str, int], error: BaseException | None) -> None:
        batch.set_attribute("shopline.operations", sum(counts.values()))
        for outcome, count in counts.items():
            batch.set_attribute(f"shopline.operations.{outcome}", count)
        if error is not None:
            batch.set_attribute("error.type", type(error).__name__)
            batch.set_status(Status(StatusCode.ERROR))
        batch.end()

    def span(self, name: str, attributes: Mapping[str, str] | None = None) -> AbstractContextManager[Span]:
        """A span made current for the block: the parent of the operations' and batches' spans in it."""
        return self._tracer.start_as_current_span(name, attributes=attributes)

    def chunk_drained(self, store: str, operations: int) -> None:
        self._chunks[(store,)] += 1


@contextmanager
def otlp_export(service_name: str) -> Iterator[OpenTelemetry]:
    """Telemetry exported over OTLP/HTTP by the OpenTelemetry SDK, configured by the standard
    ``OTEL_*`` variables (``OTEL_EXPORTER_OTLP_ENDPOINT``, ``OTEL_EXPORTER_OTLP_HEADERS``,
    ``OTEL_SERVICE_NAME``, ``OTEL_RESOURCE_ATTRIBUTES`` ...): what ``--otel`` uses. What is left
    is exported when the block ends. Needs the ``[otlp]`` extra; ImportError says so otherwise."""
    try:
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError as exc:
        raise ImportError(
            f"exporting telemetry needs the OpenTelemetry SDK and its OTLP exporter: "
            f"pip install 'shopline-async[otlp]' ({exc})"
        ) from None
    resource = Resource.create({} if os.environ.get("OTEL_SERVICE_NAME") else {"service.name": service_name})
    tracer_provider = TracerProvider(resource=resource)
    tracer_provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    meter_provider = MeterProvider(
        resource=resource, metric_readers=[PeriodicExportingMetricReader(OTLPMetricExporter())]
    )
    try:
        yield OpenTelemetry(tracer_provider=tracer_provider, meter_provider=meter_provider)
    finally:
        tracer_provider.shutdown()
        meter_provider.shutdown()
