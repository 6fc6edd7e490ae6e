"""What the client tells whoever watches it: event hooks, and the observer seam OpenTelemetry uses.

A client with neither hooks nor telemetry has no observer at all (``None``), so a request pays
one ``is None`` test per step and nothing else.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import msgspec

from ._constants import LOGGER_NAME
from ._errors import ConfigError

__all__ = ["EventHook", "Observer", "RequestEvent", "ResponseEvent", "RetryEvent", "build_observer", "describe"]

logger = logging.getLogger(LOGGER_NAME)


class RequestEvent(msgspec.Struct, frozen=True, gc=False):
    """An attempt about to go out (``on_request``)."""

    store: str
    base_url: str
    """The store's: ``base_url + path`` is the URL."""
    method: str
    path: str
    """Escaped, from ``/admin/openapi/...``: no query, no token."""
    attempt: int
    """1 for the first attempt of a call, 2 for its first retry, ..."""
    queued: float
    """Seconds this attempt waited for its store's limiter (pacing, a cool-down after a 429)."""


class ResponseEvent(msgspec.Struct, frozen=True, gc=False):
    """An attempt's answer, or the failure that came instead of one (``on_response``)."""

    store: str
    method: str
    path: str
    attempt: int
    status: int | None
    """The HTTP status; None if no answer came (``error`` says why)."""
    trace_id: str | None
    """SHOPLINE's ``traceId`` header: what their support asks for."""
    elapsed: float
    """Seconds on the network."""
    error: str | None = None
    """The failure's type (``APITimeoutError``, ``APIConnectionError``, ``CancelledError``), if no answer."""


class RetryEvent(msgspec.Struct, frozen=True, gc=False):
    """An attempt failed and the call goes on (``on_retry``)."""

    store: str
    method: str
    path: str
    attempt: int
    """The attempt that failed."""
    status: int | None
    trace_id: str | None
    error: str | None
    delay: float
    """Seconds before the next attempt."""
    cool_down: bool
    """A 429: the whole store waits ``delay``, not only this call."""


EventHook = Callable[[Any], object]
"""Called with a :class:`RequestEvent`, :class:`ResponseEvent` or :class:`RetryEvent`."""


class Observer:
    """Told each step of every call; each method here does nothing. ``operation_started`` and
    ``attempt_started`` return a handle the matching calls get back (a span, for OpenTelemetry)."""

    def operation_started(self, name: str, store: str, ids: Mapping[str, str], parent: Any) -> Any:
        return None

    def attempt_started(self, operation: Any, event: RequestEvent) -> Any:
        return None

    def attempt_finished(self, operation: Any, attempt: Any, event: ResponseEvent) -> None:
        pass

    def retrying(self, operation: Any, event: RetryEvent) -> None:
        pass

    def operation_finished(
        self, operation: Any, outcome: str, trace_id: str | None, attempts: int, error: BaseException | None
    ) -> None:
        pass

    def store_stopped(self, store: str, status: int, trace_id: str | None) -> None:
        pass

    def batch_started(self) -> Any:
        return None

    def batch_finished(self, batch: Any, counts: Mapping[str, int], error: BaseException | None) -> None:
        pass

    def chunk_drained(self, store: str, operations: int) -> None:
        pass


def describe(method: str, expect: tuple[tuple[str, str], ...]) -> tuple[str, dict[str, str]]:
    """An operation's name and the ids it is about, from what its answer must match."""
    ids = dict(expect)
    if "product_id" in ids:
        return "shopline.update_image", {"product_id": ids["product_id"], "image_id": ids.get("id", "")}
    if "id" in ids:
        return "shopline.update_product", {"product_id": ids["id"]}
    return f"shopline.{method.lower()}", {}


class _Hooks(Observer):
    """``event_hooks``: each called in turn; one that raises is logged, and the call goes on."""

    def __init__(self, hooks: Mapping[str, Sequence[EventHook]]) -> None:
        self.request = tuple(hooks.get("request", ()))
        self.response = tuple(hooks.get("response", ()))
        self.retry = tuple(hooks.get("retry", ()))

    @staticmethod
    def _call(hooks: tuple[EventHook, ...], event: Any) -> None:
        for hook in hooks:
            try:
                hook(event)
            except Exception:  # an observer's bug must not fail the update it watches
                logger.exception("event hook %r raised on %s; the request goes on", hook, type(event).__name__)

    def attempt_started(self, operation: Any, event: RequestEvent) -> None:
        if self.request:
            self._call(self.request, event)

    def attempt_finished(self, operation: Any, attempt: Any, event: ResponseEvent) -> None:
        if self.response:
            self._call(self.response, event)

    def retrying(self, operation: Any, event: RetryEvent) -> None:
        if self.retry:
            self._call(self.retry, event)


class _Both(Observer):
    """Hooks and telemetry together: the hooks first; the telemetry's handles are the ones kept."""

    def __init__(self, hooks: _Hooks, telemetry: Observer) -> None:
        self.hooks = hooks
        self.telemetry = telemetry

    def operation_started(self, name: str, store: str, ids: Mapping[str, str], parent: Any) -> Any:
        return self.telemetry.operation_started(name, store, ids, parent)

    def attempt_started(self, operation: Any, event: RequestEvent) -> Any:
        self.hooks.attempt_started(operation, event)
        return self.telemetry.attempt_started(operation, event)

    def attempt_finished(self, operation: Any, attempt: Any, event: ResponseEvent) -> None:
        self.hooks.attempt_finished(operation, attempt, event)
        self.telemetry.attempt_finished(operation, attempt, event)

    def retrying(self, operation: Any, event: RetryEvent) -> None:
        self.hooks.retrying(operation, event)
        self.telemetry.retrying(operation, event)

    def operation_finished(
        self, operation: Any, outcome: str, trace_id: str | None, attempts: int, error: BaseException | None
    ) -> None:
        self.telemetry.operation_finished(operation, outcome, trace_id, attempts, error)

    def store_stopped(self, store: str, status: int, trace_id: str | None) -> None:
        self.telemetry.store_stopped(store, status, trace_id)

    def batch_started(self) -> Any:
        return self.telemetry.batch_started()

    def batch_finished(self, batch: Any, counts: Mapping[str, int], error: BaseException | None) -> None:
        self.telemetry.batch_finished(batch, counts, error)

    def chunk_drained(self, store: str, operations: int) -> None:
        self.telemetry.chunk_drained(store, operations)


def build_observer(
    event_hooks: Mapping[str, Sequence[EventHook]] | None, telemetry: Observer | None
) -> Observer | None:
    """The one observer for a client's hooks and telemetry; None if it has neither."""
    hooks = None
    if event_hooks:
        unknown = set(event_hooks) - {"request", "response", "retry"}
        if unknown:
            raise ConfigError(
                f"event_hooks: unknown event {sorted(unknown)[0]!r}; the events are 'request', 'response', 'retry'"
            )
        for name, listed in event_hooks.items():
            if isinstance(listed, (str, bytes)) or not all(callable(hook) for hook in listed):
                raise ConfigError(f"event_hooks[{name!r}] must be a list of callables")
        if any(event_hooks.values()):
            hooks = _Hooks(event_hooks)
    if telemetry is not None and not isinstance(telemetry, Observer):
        raise ConfigError("telemetry must be a shopline_async.otel.OpenTelemetry")
    if hooks is None:
        return telemetry
    return hooks if telemetry is None else _Both(hooks, telemetry)
