"""The exception tree. Every error the SDK raises is a ``ShoplineError``.

ShoplineError
├── ConfigError                 bad client configuration (also a ValueError)
├── ClientClosedError           a call on a client (or a store handle of one) that was closed
├── EventLoopError              a client used from an event loop other than the first it ran in
├── ValidationError             bad input caught before any request (also a ValueError)
├── StoreUnavailableError       not sent: an earlier answer showed the store cannot be written
├── AppliedWithoutBodyError     the write was applied (2xx) but the answer held no resource
└── APIError                    a request was attempted: method, url, trace_id, attempts
    ├── APIConnectionError      no HTTP response (refused, reset, dropped)
    │   └── APITimeoutError     an attempt timed out
    ├── ResponseDecodeError     a response we could not decode (not JSON, wrong shape, too big)
    └── APIStatusError          an HTTP error status; carries ``status`` and the API's ``errors``
        ├── AuthenticationError     401 token missing, invalid or expired
        ├── StoreFrozenError        402
        ├── PermissionDeniedError   403 missing access scope
        ├── NotFoundError           404
        ├── InvalidRequestError     400, 406, 412, 422
        ├── StoreLockedError        423
        ├── RateLimitError          429
        ├── SecurityBlockError      433-436
        └── ServerError             5xx

The access token is never part of any error: only method, URL (which holds
no secret), status, trace id and the API's own ``errors`` payload are.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = [
    "APICertificateError",
    "APIConnectionError",
    "APIError",
    "APIStatusError",
    "APITimeoutError",
    "AppliedWithoutBodyError",
    "AuthenticationError",
    "ClientClosedError",
    "ConfigError",
    "EventLoopError",
    "FieldError",
    "InvalidRequestError",
    "NotFoundError",
    "PermissionDeniedError",
    "RateLimitError",
    "ResponseDecodeError",
    "ResponseMismatchError",
    "SecurityBlockError",
    "ServerError",
    "ShoplineError",
    "StoreFrozenError",
    "StoreLockedError",
    "StoreUnavailableError",
    "ValidationError",
    "excerpt",
]


class ShoplineError(Exception):
    """Base class of every error raised by shopline_async."""


class ConfigError(ShoplineError, ValueError):
    """The client or a store handle was configured with an invalid value."""


class ClientClosedError(ShoplineError, RuntimeError):
    """The client was closed (its ``async with`` block ended, or ``aclose()``): nothing was sent.
    A store handle belongs to its client; create a new client to go on."""


class EventLoopError(ShoplineError, RuntimeError):
    """A client (or a store handle of one) was used from an event loop other than the one it
    first ran in: its connections and limiters belong to that loop."""


_EXCERPT = 40
_MESSAGE_LIMIT = 300
_QUOTED = re.compile(rf"'([^']{{{_EXCERPT + 1},}})'|\"([^\"]{{{_EXCERPT + 1},}})\"")


def excerpt(value: str) -> str:
    """``value`` quoted, or a short prefix of it and its size: an error never echoes a whole value
    (a 100 MB status would make a 100 MB results line)."""
    if len(value) <= _EXCERPT:
        return repr(value)
    return f"{value[:_EXCERPT]!r}... ({len(value):,} characters)"


def _shorten_message(message: str) -> str:
    short = _QUOTED.sub(lambda m: excerpt(m.group(1) or m.group(2)), message)
    return short if len(short) <= _MESSAGE_LIMIT else f"{short[:_MESSAGE_LIMIT]}... ({len(message):,} characters)"


class FieldError:
    """One invalid value: where it is (a JSON path such as ``$.product.title``) and what rule it broke."""

    __slots__ = ("message", "path")

    def __init__(self, path: str, message: str) -> None:
        self.path = path
        self.message = message if len(message) <= _MESSAGE_LIMIT else _shorten_message(message)

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"

    def __repr__(self) -> str:
        return f"FieldError({self.path!r}, {self.message!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, FieldError) and (self.path, self.message) == (other.path, other.message)

    def __hash__(self) -> int:
        return hash((self.path, self.message))


class ValidationError(ShoplineError, ValueError):
    """Input that breaks a documented rule. Raised before any request is sent.

    ``errors`` lists every problem found, each with its JSON path.
    """

    def __init__(self, errors: Sequence[FieldError]) -> None:
        self.errors: list[FieldError] = list(errors)
        shown = "; ".join(str(e) for e in self.errors[:5])
        more = f" (+{len(self.errors) - 5} more)" if len(self.errors) > 5 else ""
        noun = "value" if len(self.errors) == 1 else "values"
        super().__init__(f"{len(self.errors)} invalid {noun}: {shown}{more}")

    @property
    def paths(self) -> list[str]:
        return [e.path for e in self.errors]


class APIError(ShoplineError):
    """A request was attempted and did not succeed."""

    def __init__(
        self,
        message: str,
        *,
        method: str,
        url: str,
        trace_id: str | None = None,
        status: int | None = None,
        attempts: int = 1,
        trace_ids: Sequence[str] = (),
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.method = method
        self.url = url
        self.status = status
        self.trace_id = trace_id
        self.attempts = attempts
        # trace ids of every attempt that got a response, oldest first
        self.trace_ids: list[str] = list(trace_ids)
        # seconds the attempts spent on the wire (not waiting for the rate limiter or a retry)
        self.network_time = 0.0
        # the final response's headers (case-insensitive), empty if none arrived
        self.headers: Mapping[str, str] = headers if headers is not None else {}

    def __str__(self) -> str:
        status = f"HTTP {self.status} " if self.status is not None else ""
        attempts = f", {self.attempts} attempts" if self.attempts > 1 else ""
        return f"{status}{self.message} ({self.method} {self.url}, traceId={self.trace_id or '-'}{attempts})"


class AppliedWithoutBodyError(ShoplineError):
    """The API answered 2xx, so the write was applied, but with ``{}`` or ``{"product": null}``
    instead of the resource: there is no model to return. Not a failure of the write (a batch
    reports it as outcome ``applied_without_body``, ``ok`` true); it carries the call's facts.
    """

    def __init__(
        self,
        *,
        method: str,
        url: str,
        status: int,
        trace_id: str | None,
        trace_ids: Sequence[str],
        attempts: int,
        network_time: float,
        headers: Mapping[str, str],
    ) -> None:
        super().__init__(
            f"HTTP {status}: applied, but the answer held no resource ({method} {url}, traceId={trace_id or '-'})"
        )
        self.method = method
        self.url = url
        self.status = status
        self.trace_id = trace_id
        self.trace_ids = list(trace_ids)
        self.attempts = attempts
        self.network_time = network_time
        self.headers = headers


class APIConnectionError(APIError):
    """No HTTP response: connection refused, reset or dropped."""


class APICertificateError(APIConnectionError):
    """The server's TLS certificate failed verification (a private CA? pass ``ssl=`` a context
    that trusts it). Not retried: it would fail the same way again."""


class APITimeoutError(APIConnectionError):
    """An attempt exceeded its timeout."""


class ResponseDecodeError(APIError):
    """The response body was not the JSON shape the endpoint documents (or exceeded the size cap).

    For a 2xx response the update may have been applied; the body is in ``body`` (truncated).
    """

    def __init__(self, message: str, *, body: bytes = b"", **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.body = body[:2048]


class ResponseMismatchError(APIError):
    """A 2xx answer about another resource than the one requested (product 999 for a PUT to
    product 123): the update cannot be taken as done. Not retried. ``field`` is the field that
    differs (``id``, or an image's ``product_id``), ``expected`` what was asked, ``received`` what
    came back."""

    def __init__(self, message: str, *, field: str, expected: str, received: str, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.field = field
        self.expected = expected
        self.received = received


class APIStatusError(APIError):
    """The API answered with an error status. ``errors`` is the API's ``errors`` value (str, list or dict)."""

    status: int

    def __init__(self, message: str, *, status: int, errors: Any = None, **kwargs: Any) -> None:
        super().__init__(message, status=status, **kwargs)
        self.errors = errors


class AuthenticationError(APIStatusError):
    """401: the access token is missing, invalid or expired."""


class StoreFrozenError(APIStatusError):
    """402: the store is frozen."""


class PermissionDeniedError(APIStatusError):
    """403: the app lacks the access scope (``write_products``)."""


class NotFoundError(APIStatusError):
    """404: the product or image does not exist."""


class InvalidRequestError(APIStatusError):
    """400, 406, 412 (risky content) or 422: the request was refused as invalid."""


class StoreLockedError(APIStatusError):
    """423: the store is locked (for example after repeatedly exceeding the rate limit)."""


class RateLimitError(APIStatusError):
    """429: the store's request bucket is full."""


class SecurityBlockError(APIStatusError):
    """433-436: the request was blocked by SHOPLINE's security checks."""


class ServerError(APIStatusError):
    """5xx: SHOPLINE failed; 503/504 may mean the request should be split."""


_STATUS_ERRORS: dict[int, type[APIStatusError]] = {
    400: InvalidRequestError,
    401: AuthenticationError,
    402: StoreFrozenError,
    403: PermissionDeniedError,
    404: NotFoundError,
    406: InvalidRequestError,
    412: InvalidRequestError,
    422: InvalidRequestError,
    423: StoreLockedError,
    429: RateLimitError,
    433: SecurityBlockError,
    434: SecurityBlockError,
    435: SecurityBlockError,
    436: SecurityBlockError,
}


class StoreUnavailableError(ShoplineError):
    """Not sent: an earlier response in the batch showed that the store cannot be written.

    ``cause`` is that response's error (401, 402, 403, 423 or 433-436); ``status``, ``trace_id``
    and ``errors`` are its. ``BatchExecutor`` stops sending to such a store, other stores go on.
    """

    def __init__(self, store: str, cause: APIStatusError) -> None:
        self.store = store
        self.cause = cause
        self.status = cause.status
        self.trace_id = cause.trace_id
        self.errors = cause.errors
        super().__init__(
            f"not sent: store {store!r} answered HTTP {cause.status} to an earlier request "
            f"({cause.message}, traceId={cause.trace_id or '-'})"
        )


def error_class_for_status(status: int) -> type[APIStatusError]:
    if status >= 500:
        return ServerError
    return _STATUS_ERRORS.get(status, APIStatusError)


def describe_errors(errors: Any) -> str:
    """One line from the API's ``errors`` value, whatever its shape."""
    if errors is None:
        return ""
    if isinstance(errors, str):
        text = errors
    elif isinstance(errors, list):
        text = "; ".join(describe_errors(e) for e in errors)
    elif isinstance(errors, dict):
        text = "; ".join(f"{k}: {describe_errors(v)}" for k, v in errors.items())
    else:
        text = str(errors)
    return " ".join(text.split())[:500]
