"""The one path every request takes: one attempt, the retry decision, the answer or the error.

``StoreTransport`` is one store's: its limiter, its credentials. ``attempt()`` sends a
:class:`PreparedRequest` (method, escaped path, encoded body, decoder) once through the client's
:class:`~shopline_async.Sender` and says what came of it (an :class:`Outcome`); ``decide()`` is
the retry policy's verdict on it (done, or wait this long); ``conclude()`` turns the final outcome
into the decoded response or the documented exception (statuses and send errors become
exceptions here, nowhere else). ``request()`` is the loop of one call (``acquire -> attempt ->
decide``); a batch runs the same steps, scheduling the waits itself.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import re
import time
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, Generic, TypeVar
from urllib.parse import quote

import msgspec
from multidict import CIMultiDict
from yarl import URL

from ._codec import BodyMissing, decode_error_body
from ._config import RateLimit, RetryPolicy, Timeout
from ._constants import LOGGER_NAME
from ._errors import (
    APICertificateError,
    APIConnectionError,
    APIError,
    APITimeoutError,
    AppliedWithoutBodyError,
    ClientClosedError,
    ConfigError,
    EventLoopError,
    FieldError,
    ResponseDecodeError,
    ResponseMismatchError,
    ValidationError,
    describe_errors,
    error_class_for_status,
    excerpt,
)
from ._ratelimit import StoreLimiter
from ._response import Response
from ._retry import parse_retry_after, retry_delay, should_retry_status
from ._sender import CertificateRefused, ConnectFailed, HTTPRequest, ResponseTooLarge, Sender, SendError, SendTimeout
from ._telemetry import Observer, RequestEvent, ResponseEvent, RetryEvent, describe

__all__ = [
    "ClientState",
    "PreparedRequest",
    "StoreTransport",
    "TransportSettings",
    "check_extra_headers",
    "path_segment",
    "resolve_base_url",
]

T = TypeVar("T")

logger = logging.getLogger(LOGGER_NAME)

_HANDLE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
_API_VERSION = re.compile(r"v\d{8}")
# characters a path segment carries as they are (RFC 3986 "unreserved")
_UNRESERVED = re.compile(r"[A-Za-z0-9._~-]+")
# visible ASCII only: nothing that could end or split a header line
_TOKEN = re.compile(r"[\x21-\x7e]+")


@dataclass(frozen=True)
class TransportSettings:
    """One client's settings, which its stores' transports read (a copy from ``with_options`` has its own)."""

    base_url: str
    timeout: Timeout
    retry: RetryPolicy
    user_agent: str
    allow_insecure_http: bool
    extra_headers: Mapping[str, str] = field(default_factory=dict)
    observer: Observer | None = None
    """The client's event hooks and telemetry, or None: nothing watches."""


# a token shorter than this is no credential SHOPLINE issues (theirs are JWTs of hundreds of
# characters): a test's "t" scrubbed from an answer would garble every word holding a t
_SHORTEST_SCRUBBED = 8


class ClientState:
    """What a client, its copies and their stores share: the sender, each store's limiter (one
    per store handle, however many copies send to it: SHOPLINE's bucket is one), the event loop
    they run in, and whether they are closed."""

    __slots__ = ("closed", "limiters", "loop", "secrets", "sender", "transports")

    def __init__(self, sender: Sender) -> None:
        self.sender = sender
        self.limiters: dict[str, StoreLimiter] = {}
        self.transports: dict[str, weakref.WeakSet[StoreTransport]] = {}
        """Every transport of a store handle, in this client and its copies: a new token reaches all."""
        self.secrets: dict[str, set[str]] = {}
        """Every access token each store handle has had, scrubbed from whatever its answers say."""
        self.loop: asyncio.AbstractEventLoop | None = None
        self.closed = False

    def scrub(self, handle: str, text: str) -> str:
        """``text`` from the network with every token the store has had replaced by ``[REDACTED]``:
        an error body, an HTML page or a header that echoes the Authorization header must not carry
        the token into an exception, a log record or a results file. (A request carries its own
        store's token only, so that is all an answer can echo.)"""
        for secret in self.secrets.get(handle, ()):
            if len(secret) < _SHORTEST_SCRUBBED:
                continue
            for form in (secret, secret.replace("/", "\\/")):  # as sent, and as JSON may escape it
                if form in text:
                    text = text.replace(form, "[REDACTED]")
        return text

    def check_loop(self) -> None:
        """Refuse a second event loop: the sender's connections and the limiters belong to the first
        (even once it has ended: they cannot move)."""
        loop = asyncio.get_running_loop()
        if self.loop is None:
            self.loop = loop
        elif loop is not self.loop:
            raise EventLoopError(
                "this client was first used in another event loop; its connections and rate limiters "
                "belong to that loop. Create the ShoplineClient inside the loop that uses it (one per loop)"
            )


class PreparedRequest(msgspec.Struct, Generic[T], frozen=True, gc=False):
    """A validated, encoded request, ready to send: what ``store.products.prepare()`` returns.

    It names no store, so one prepared update can be sent to several stores.
    """

    method: str
    path: str
    """Escaped, from ``/admin/openapi/...``."""
    body: bytes
    decode: Callable[[bytes], T]
    """Turns a 2xx body into the endpoint's model."""
    expect: tuple[tuple[str, str], ...] = ()
    """(field, value) pairs the answer's model must have, where it has the field: an answer about
    another product or image than the one requested is an error, not a success."""


def check_handle(handle: str) -> str:
    if not isinstance(handle, str) or not _HANDLE.fullmatch(handle):
        raise ConfigError(
            f"invalid store handle {handle!r}: expected a DNS label (letters, digits, hyphens; 1-63 characters)"
        )
    return handle.lower()


def check_token(token: str) -> str:
    if not isinstance(token, str) or not _TOKEN.fullmatch(token):
        # never echo the token, not even a bad one
        raise ConfigError("invalid access token: expected a non-empty string of visible ASCII characters")
    return token


# set by the SDK from what it sends; a caller's header must not change what the body or the token mean
_RESERVED_HEADERS = frozenset({"authorization", "content-type", "content-length", "host", "transfer-encoding"})
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


def check_extra_headers(headers: Mapping[str, str] | None, where: str) -> dict[str, str]:
    """``headers`` as a plain dict, or ConfigError naming the header that may not be sent."""
    if not headers:
        return {}
    checked: dict[str, str] = {}
    for name, value in headers.items():
        if not isinstance(name, str) or not _HEADER_NAME.fullmatch(name):
            raise ConfigError(f"{where}: invalid header name {name!r}")
        if name.lower() in _RESERVED_HEADERS:
            raise ConfigError(f"{where}: {name} is set by the SDK and cannot be overridden")
        if not isinstance(value, str) or any(c in value for c in "\r\n\0"):
            raise ConfigError(f"{where}: the value of {name} must be a string without line breaks or NUL")
        checked[name] = value
    return checked


def check_api_version(version: str) -> str:
    if not isinstance(version, str) or not _API_VERSION.fullmatch(version):
        raise ConfigError(f"invalid API version {version!r}: expected the form v20260601")
    return version


def _is_loopback(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def resolve_base_url(template: str, handle: str, *, allow_insecure_http: bool) -> str:
    """The store's base URL from the template (``{handle}`` is replaced); refuses plain http off loopback."""
    url = URL(template.replace("{handle}", handle))
    if url.scheme not in ("http", "https") or not url.host:
        raise ConfigError(f"invalid base URL {template!r}: expected http(s)://host[:port][/prefix]")
    if url.user or url.password or url.query_string or url.fragment:
        raise ConfigError(f"invalid base URL {template!r}: credentials, query and fragment are not allowed")
    if url.scheme == "http" and not allow_insecure_http and not _is_loopback(url.host):
        raise ConfigError(
            f"refusing plain http to {url.host}: the access token would travel unencrypted; "
            "use https, a loopback address, or allow_insecure_http=True"
        )
    return str(url).rstrip("/")


class Outcome(msgspec.Struct, gc=False):
    """What one attempt came to: the answer (status, body, headers), or the failure that came
    instead of one (``failure``; ``status`` set if an answer had begun to arrive)."""

    status: int | None
    payload: bytes
    headers: Mapping[str, str]
    trace_id: str | None
    network_time: float
    failure: APIError | None = None


class Tries:
    """A call's attempts so far: their number, trace ids, time on the network, backoff waited, and
    time queued in the client (its store's limiter), which the retry deadline does not count."""

    __slots__ = ("attempts", "backoff", "network_time", "queued", "started", "trace_ids")

    def __init__(self) -> None:
        self.attempts = 0
        self.trace_ids: list[str] = []
        self.network_time = 0.0
        self.backoff = 0.0
        self.queued = 0.0
        self.started = time.monotonic()

    def finish(self, error: APIError) -> APIError:
        """``error`` carrying the facts of every attempt."""
        error.attempts = self.attempts
        error.trace_ids = list(self.trace_ids)
        error.network_time = self.network_time
        return error


def decide(outcome: Outcome, tries: Tries, policy: RetryPolicy) -> float | None:
    """After an attempt: None if the call is done (its outcome is the answer), else the seconds to
    wait before the next attempt (after a 429, the store's cool-down). Counts the attempt in
    ``tries``. Pure but for that: no clock but the one ``tries`` was started with, no I/O."""
    tries.attempts += 1
    tries.network_time += outcome.network_time
    if outcome.trace_id:
        tries.trace_ids.append(outcome.trace_id)
    status, failure = outcome.status, outcome.failure
    if failure is not None:
        retryable = isinstance(failure, APIConnectionError) and not isinstance(failure, APICertificateError)
    else:
        assert status is not None
        retryable = not 200 <= status < 300 and should_retry_status(policy, status)
    if not retryable or tries.attempts >= policy.max_attempts:
        return None
    retry_after = (
        parse_retry_after(outcome.headers.get("Retry-After")) if status == 429 or (status or 0) >= 500 else None
    )
    delay = retry_delay(policy, tries.attempts, retry_after)
    # the budget is the network's and the backoff's: time queued behind the store's other calls is not
    spent = time.monotonic() - tries.started - tries.queued
    if policy.deadline is not None and spent + delay > policy.deadline:
        return None
    tries.backoff += delay
    return delay


def _check_proxy_route(sender: Sender, base: URL) -> None:
    """Refuse plain http through a proxy that is not on this machine: the request, token and all,
    would cross the network in clear to it (the base URL itself was checked already)."""
    proxy_for = getattr(sender, "proxy_for", None)
    proxy = proxy_for(base) if base.scheme == "http" and proxy_for is not None else None
    if proxy is not None and proxy.scheme == "http" and not _is_loopback(proxy.host or ""):
        raise ConfigError(
            f"refusing plain http through the proxy {proxy.host}: the access token would travel unencrypted to "
            "it; use https, a proxy on this machine, or allow_insecure_http=True"
        )


def path_segment(value: object, path: str, *, max_length: int = 64) -> str:
    """``value`` percent-escaped as one URL path segment; ValidationError if it cannot be an id."""
    if not isinstance(value, str):
        raise ValidationError([FieldError(path, f"expected a string, got {type(value).__name__}")])
    if not value:
        raise ValidationError([FieldError(path, "must not be empty")])
    if len(value) > max_length:
        raise ValidationError([FieldError(path, f"must be at most {max_length} characters, got {len(value)}")])
    if value in (".", ".."):
        raise ValidationError([FieldError(path, "must not be '.' or '..'")])
    # ids are digits: no need for quote(), which costs more than the rest of this function
    return value if _UNRESERVED.fullmatch(value) else quote(value, safe="")


def _with_headers(headers: CIMultiDict[str], more: Mapping[str, str]) -> CIMultiDict[str]:
    """A copy of ``headers`` with ``more`` in place of any header of the same name, whatever its case
    (merged as dicts, ``accept`` beside ``Accept`` would send both, or lose one)."""
    merged = CIMultiDict(headers)
    merged.update(more)
    return merged


def _safe_excerpt(body: bytes) -> str:
    return " ".join(body[:200].decode("utf-8", "replace").split())


class StoreTransport:
    """One store: its limiter, its credentials and the retry loop; the client's sender does the I/O."""

    __slots__ = (
        "__weakref__",
        "_base",
        "_base_path",
        "_headers",
        "_limiter",
        "_settings",
        "_state",
        "_token",
        "base_url",
        "handle",
        "rate_limit",
    )

    def __init__(
        self, handle: str, access_token: str, state: ClientState, settings: TransportSettings, rate_limit: RateLimit
    ) -> None:
        self.handle = handle
        self.base_url = resolve_base_url(settings.base_url, handle, allow_insecure_http=settings.allow_insecure_http)
        self._base = URL(self.base_url)
        if not settings.allow_insecure_http:
            _check_proxy_route(state.sender, self._base)
        self._base_path = self._base.raw_path.rstrip("/")
        self._state = state
        self._settings = settings
        self.rate_limit = rate_limit
        self._limiter: StoreLimiter | None = None
        self._headers: CIMultiDict[str] = CIMultiDict()
        self._token = ""
        state.transports.setdefault(handle, weakref.WeakSet()).add(self)
        self.set_access_token(access_token)

    def with_settings(self, settings: TransportSettings) -> StoreTransport:
        """The same store (token, limiter) under another client copy's settings."""
        return StoreTransport(self.handle, self._token, self._state, settings, self.rate_limit)

    def __repr__(self) -> str:
        return f"StoreTransport(handle={self.handle!r}, base_url={self.base_url!r})"

    def set_access_token(self, access_token: str) -> None:
        """Use a new token from the next attempt on (OAuth tokens last about 10 hours), in this
        client and every copy of it (``with_options``): they are one store."""
        token = check_token(access_token)
        self._state.secrets.setdefault(self.handle, set()).add(token)
        for transport in self._state.transports[self.handle]:
            transport._use_token(token)

    def _use_token(self, token: str) -> None:
        self._token = token
        # a new mapping, not an update: an attempt already handed to the sender keeps what it had.
        # aiohttp's own type, which it takes as it is; a plain dict it would convert every request
        defaults = CIMultiDict({"User-Agent": self._settings.user_agent, "Accept": "application/json"})
        self._headers = _with_headers(
            _with_headers(defaults, self._settings.extra_headers),
            {"Content-Type": "application/json; charset=utf-8", "Authorization": f"Bearer {self._token}"},
        )

    @property
    def limiter(self) -> StoreLimiter:
        if self._limiter is None:
            # one per handle across the client's copies: they all draw on the store's one bucket
            limiters = self._state.limiters
            limiter = limiters.get(self.handle)
            if limiter is None:
                limiter = limiters[self.handle] = StoreLimiter(self.rate_limit)
            self._limiter = limiter
        return self._limiter

    @property
    def retry(self) -> RetryPolicy:
        """The retry policy of the client (copy) this store belongs to."""
        return self._settings.retry

    @property
    def rate_limited(self) -> int:
        """429s this store has answered so far."""
        limiter = self._limiter or self._state.limiters.get(self.handle)
        return limiter.rate_limited if limiter is not None else 0

    async def request(
        self,
        prepared: PreparedRequest[T],
        *,
        timeout: Timeout | None = None,
        retry: RetryPolicy | None = None,
        extra_headers: Mapping[str, str] | None = None,
    ) -> Response[T]:
        """Send with retries; return the decoded response or raise an APIError subclass: the loop
        ``acquire -> attempt -> decide`` of a single call (a batch runs the same two steps itself).

        ``extra_headers`` must have been checked (:func:`check_extra_headers`).
        """
        self.check_usable()
        observer = self._settings.observer
        operation = None
        if observer is not None:
            name, ids = describe(prepared.method, prepared.expect)
            operation = observer.operation_started(name, self.handle, ids, None)
        policy = retry or self._settings.retry
        limiter = self.limiter
        tries = Tries()
        try:
            while True:
                waiting_since = time.monotonic()
                await limiter.acquire()
                queued = time.monotonic() - waiting_since
                tries.queued += queued
                try:
                    outcome = await self.attempt(
                        prepared, tries.attempts + 1, timeout, extra_headers, operation, queued
                    )
                finally:
                    limiter.release()
                delay = decide(outcome, tries, policy)
                if delay is None:
                    response = self.conclude(prepared, outcome, tries)
                    break
                self.retrying(prepared, outcome, tries, delay, policy, operation)
                if outcome.status == 429:
                    limiter.cool_down(delay)  # the bucket is shared by every call to this store: all wait
                else:
                    await limiter.sleep(delay)
        except BaseException as exc:
            if observer is not None:
                if isinstance(exc, AppliedWithoutBodyError):
                    said = "applied_without_body"
                else:
                    said = "failed" if isinstance(exc, Exception) else "cancelled"
                observer.operation_finished(operation, said, getattr(exc, "trace_id", None), tries.attempts, exc)
            raise
        if observer is not None:
            observer.operation_finished(operation, "ok", response.trace_id, response.attempts, None)
        return response

    def check_usable(self) -> None:
        state = self._state
        if state.closed:
            raise ClientClosedError("the client is closed; create a new ShoplineClient")
        if state.loop is not asyncio.get_running_loop():
            state.check_loop()

    async def attempt(
        self,
        prepared: PreparedRequest[Any],
        number: int,
        timeout: Timeout | None = None,
        extra_headers: Mapping[str, str] | None = None,
        operation: Any = None,
        queued: float = 0.0,
    ) -> Outcome:
        """Send ``prepared`` once (its attempt ``number``), admitted already by the store's limiter
        after ``queued`` seconds: what came back, or the failure that came instead. Never raises for
        what the network or the server did. ``operation``: the observer's handle for the call."""
        # the path is already escaped: no re-quoting, no dot-segment folding; and with_path on the
        # parsed base skips parsing the whole URL again
        url = self._base.with_path(self._base_path + prepared.path, encoded=True)
        # headers read from the store now: a refreshed token applies to retries
        headers = self._headers if not extra_headers else _with_headers(self._headers, extra_headers)
        request = HTTPRequest(prepared.method, url, headers, prepared.body, timeout or self._settings.timeout)
        observer = self._settings.observer
        if observer is not None:
            event = RequestEvent(self.handle, self.base_url, prepared.method, prepared.path, number, queued)
            attempt = observer.attempt_started(operation, event)
        started = time.monotonic()
        try:
            response = await self._state.sender.send(request)
        except SendError as exc:
            failure = self._send_failure(exc, prepared.method, self.base_url + prepared.path)
            outcome = Outcome(exc.status, b"", failure.headers, failure.trace_id, time.monotonic() - started, failure)
        except BaseException as exc:  # cancelled: the attempt's span and gauge must still end
            if observer is not None:
                elapsed = time.monotonic() - started
                cut = ResponseEvent(
                    self.handle, prepared.method, prepared.path, number, None, None, elapsed, type(exc).__name__
                )
                observer.attempt_finished(operation, attempt, cut)
            raise
        else:
            status, payload, answer_headers = response.status, response.body, response.headers
            if not 200 <= status < 300:  # an error: what it says is kept, so scrubbed first
                payload, answer_headers = self._scrubbed(payload, answer_headers)
            trace_id = answer_headers.get("traceId")
            outcome = Outcome(status, payload, answer_headers, trace_id, time.monotonic() - started)
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug(
                "store %s: %s %s -> %s traceId=%s attempt=%d elapsed=%.3fs",
                self.handle,
                prepared.method,
                prepared.path,
                outcome.status if outcome.failure is None else type(outcome.failure).__name__,
                outcome.trace_id,
                number,
                outcome.network_time,
            )
        if observer is not None:
            error = None if outcome.failure is None else type(outcome.failure).__name__
            observer.attempt_finished(
                operation,
                attempt,
                ResponseEvent(
                    self.handle,
                    prepared.method,
                    prepared.path,
                    number,
                    outcome.status,
                    outcome.trace_id,
                    outcome.network_time,
                    error,
                ),
            )
        return outcome

    def conclude(self, prepared: PreparedRequest[T], outcome: Outcome, tries: Tries) -> Response[T]:
        """The final attempt's outcome as the call's answer: the decoded response, or the error raised."""
        method, url, status, trace_id = prepared.method, self.base_url + prepared.path, outcome.status, outcome.trace_id
        if outcome.failure is not None:
            raise tries.finish(outcome.failure)
        assert status is not None
        if not 200 <= status < 300:
            failure = self._status_error(status, outcome.payload, method=method, url=url, trace_id=trace_id)
            failure.headers = outcome.headers
            raise tries.finish(failure)
        try:
            data = prepared.decode(outcome.payload)
        except BodyMissing:
            raise AppliedWithoutBodyError(
                method=method,
                url=url,
                status=status,
                trace_id=trace_id,
                trace_ids=tries.trace_ids,
                attempts=tries.attempts,
                network_time=tries.network_time,
                headers=self._scrubbed(b"", outcome.headers)[1],
            ) from None
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            payload, headers = self._scrubbed(outcome.payload, outcome.headers)
            raise tries.finish(
                ResponseDecodeError(
                    f"could not decode the response ({self._state.scrub(self.handle, str(exc))}); the update "
                    f"may have been applied: {_safe_excerpt(payload)!r}",
                    method=method,
                    url=url,
                    status=status,
                    trace_id=headers.get("traceId"),
                    body=payload,
                    headers=headers,
                )
            ) from None
        for name, wanted in prepared.expect:
            got = getattr(data, name, None)
            if got is not None and got != wanted:  # an answer about another resource is no success
                raise tries.finish(
                    ResponseMismatchError(
                        f"the answer is about {name} {excerpt(str(got))}, not {wanted!r} as requested; "
                        "it is not taken as this update's success",
                        method=method,
                        url=url,
                        status=status,
                        trace_id=trace_id,
                        field=name,
                        expected=wanted,
                        received=str(got),
                    )
                )
        return Response(
            data=data,
            status=status,
            trace_id=trace_id,
            method=method,
            url=url,
            attempts=tries.attempts,
            elapsed=time.monotonic() - tries.started,
            trace_ids=tuple(tries.trace_ids),
            network_time=tries.network_time,
        )

    def retrying(
        self,
        prepared: PreparedRequest[Any],
        outcome: Outcome,
        tries: Tries,
        delay: float,
        policy: RetryPolicy,
        operation: Any,
    ) -> None:
        """Say that the call goes on after ``outcome``: in the log, and to the observer."""
        observer = self._settings.observer
        if observer is not None:
            observer.retrying(
                operation,
                RetryEvent(
                    self.handle,
                    prepared.method,
                    prepared.path,
                    tries.attempts,
                    outcome.status,
                    outcome.trace_id,
                    None if outcome.failure is None else type(outcome.failure).__name__,
                    delay,
                    outcome.status == 429,
                ),
            )
        said = f"HTTP {outcome.status}" if outcome.failure is None else type(outcome.failure).__name__
        logger.warning(
            "store %s: %s %s -> %s (traceId=%s): %s %.1fs, attempt %d of %d",
            self.handle,
            prepared.method,
            prepared.path,
            said,
            outcome.trace_id,
            "the store cools down for" if outcome.status == 429 else "retrying in",
            delay,
            tries.attempts + 1,
            policy.max_attempts,
        )

    def _scrubbed(self, payload: bytes, headers: Mapping[str, str]) -> tuple[bytes, Mapping[str, str]]:
        """An answer's body and headers fit to keep in an error: every token of the store scrubbed.
        Whatever the network says reaches an error, a log or a result through here only."""
        scrub = self._state.scrub
        text = payload.decode("latin-1")  # byte for byte: a token is ASCII however the body is encoded
        if (clean := scrub(self.handle, text)) is not text:
            payload = clean.encode("latin-1")
        if any(scrub(self.handle, value) is not value for value in headers.values()):
            headers = CIMultiDict((name, scrub(self.handle, value)) for name, value in headers.items())
        return payload, headers

    def _send_failure(self, exc: SendError, method: str, url: str) -> APIError:
        """The APIError for an attempt that got no usable answer, keeping the status if one had arrived."""
        _, headers = self._scrubbed(b"", exc.headers)
        message = self._state.scrub(self.handle, str(exc))
        error_class = next((error for sent, error in _SEND_FAILURES if isinstance(exc, sent)), None)
        if error_class is None:
            error_class, message = APIConnectionError, f"{type(exc).__name__}: {message}"
        return error_class(
            message, method=method, url=url, status=exc.status, trace_id=headers.get("traceId"), headers=headers
        )

    @staticmethod
    def _status_error(status: int, payload: bytes, *, method: str, url: str, trace_id: str | None) -> APIError:
        errors = decode_error_body(payload)
        detail = describe_errors(errors) if errors is not None else _safe_excerpt(payload)
        try:
            phrase = HTTPStatus(status).phrase
        except ValueError:
            phrase = "Error"
        message = f"{phrase}: {detail}" if detail else phrase
        return error_class_for_status(status)(
            message, status=status, errors=errors, method=method, url=url, trace_id=trace_id
        )


_SEND_FAILURES: tuple[tuple[type[SendError], type[APIError]], ...] = (
    (SendTimeout, APITimeoutError),
    (ResponseTooLarge, ResponseDecodeError),
    (CertificateRefused, APICertificateError),
    (ConnectFailed, APIConnectionError),
)
