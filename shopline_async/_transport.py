"""The one path every request takes: admission, send, read, decode, retry.

``StoreTransport`` owns one store's aiohttp session (its connection pool),
its limiter and its credentials. Resource methods hand it a method, a path
built from escaped segments, an encoded body and a decode function.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, TypeVar
from urllib.parse import quote

import aiohttp
import msgspec
from yarl import URL

from ._codec import decode_error_body
from ._config import RateLimit, RetryPolicy, Timeout
from ._constants import LOGGER_NAME
from ._errors import (
    APIConnectionError,
    APIError,
    APITimeoutError,
    ConfigError,
    FieldError,
    ResponseDecodeError,
    ValidationError,
    describe_errors,
    error_class_for_status,
)
from ._ratelimit import StoreLimiter
from ._response import Response
from ._retry import parse_retry_after, retry_delay, should_retry_status

__all__ = ["StoreTransport", "TransportSettings", "path_segment", "resolve_base_url"]

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
    """Client-wide settings every store's transport shares."""

    base_url: str
    timeout: Timeout
    retry: RetryPolicy
    connections_per_store: int
    user_agent: str
    allow_insecure_http: bool
    max_response_bytes: int


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


_NO_REDIRECTS: dict[str, Any] = {"allow_redirects": False}


def _client_timeout(timeout: Timeout) -> aiohttp.ClientTimeout:
    return aiohttp.ClientTimeout(total=timeout.total, connect=timeout.connect, sock_read=timeout.read)


def _safe_excerpt(body: bytes) -> str:
    return " ".join(body[:200].decode("utf-8", "replace").split())


class StoreTransport:
    """One store: its connection pool, limiter, credentials and the retry loop."""

    def __init__(self, handle: str, access_token: str, settings: TransportSettings, rate_limit: RateLimit) -> None:
        self.handle = handle
        self.base_url = resolve_base_url(settings.base_url, handle, allow_insecure_http=settings.allow_insecure_http)
        self._base = URL(self.base_url)
        self._base_path = self._base.raw_path.rstrip("/")
        self.settings = settings
        self.rate_limit = rate_limit
        self._session: aiohttp.ClientSession | None = None
        self._limiter: StoreLimiter | None = None
        self._authorization = ""
        self.set_access_token(access_token)

    def __repr__(self) -> str:
        return f"StoreTransport(handle={self.handle!r}, base_url={self.base_url!r})"

    def set_access_token(self, access_token: str) -> None:
        """Use a new token from the next request on (OAuth tokens last about 10 hours)."""
        self._authorization = f"Bearer {check_token(access_token)}"
        if self._session is not None:
            # session headers are documented as mutable; requests already sent keep the old token
            self._session.headers["Authorization"] = self._authorization

    @property
    def limiter(self) -> StoreLimiter:
        if self._limiter is None:
            self._limiter = StoreLimiter(self.rate_limit)
        return self._limiter

    @property
    def rate_limited(self) -> int:
        """429s this store has answered so far."""
        return self._limiter.rate_limited if self._limiter is not None else 0

    @property
    def session(self) -> aiohttp.ClientSession:
        """The store's pooled session, created on first use inside the running loop."""
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self.settings.connections_per_store, limit_per_host=0),
                timeout=_client_timeout(self.settings.timeout),
                # set once on the session rather than merged into every request
                headers={
                    "User-Agent": self.settings.user_agent,
                    "Accept": "application/json",
                    "Content-Type": "application/json; charset=utf-8",
                    "Authorization": self._authorization,
                },
                cookie_jar=aiohttp.DummyCookieJar(),
                auto_decompress=True,
            )
        return self._session

    @property
    def has_session(self) -> bool:
        return self._session is not None and not self._session.closed

    async def aclose(self) -> None:
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()

    async def request(
        self,
        method: str,
        path: str,
        body: bytes,
        decode: Callable[[bytes], T],
        *,
        timeout: Timeout | None = None,
        retry: RetryPolicy | None = None,
    ) -> Response[T]:
        """Send with retries; return the decoded response or raise an APIError subclass."""
        policy = retry or self.settings.retry
        url = self.base_url + path
        # the path is already escaped: no re-quoting, no dot-segment folding; and with_path on the
        # parsed base skips parsing the whole URL again (a third of a plain request's URL work)
        request_url = self._base.with_path(self._base_path + path, encoded=True)
        options = _NO_REDIRECTS if timeout is None else {**_NO_REDIRECTS, "timeout": _client_timeout(timeout)}
        limiter = self.limiter
        session = self.session
        started = time.monotonic()
        trace_ids: list[str] = []
        network_time = 0.0
        attempt = 0
        while True:
            attempt += 1
            status: int | None = None
            trace_id: str | None = None
            retry_after: float | None = None
            payload = b""
            failure: APIError | None = None
            if not limiter.acquire_now():
                await limiter.acquire()
            try:
                attempt_started = time.monotonic()
                try:
                    async with session.request(method, request_url, data=body, **options) as resp:
                        status = resp.status
                        trace_id = resp.headers.get("traceId")
                        if trace_id:
                            trace_ids.append(trace_id)
                        if status == 429 or status >= 500:
                            retry_after = parse_retry_after(resp.headers.get("Retry-After"))
                        length = resp.content_length
                        if length is not None and length <= self.settings.max_response_bytes:
                            payload = await resp.read()
                        else:
                            payload = await self._read_capped(resp, length)
                except asyncio.TimeoutError:
                    failure = APITimeoutError("request timed out", method=method, url=url, trace_id=trace_id)
                except aiohttp.ClientError as exc:
                    failure = APIConnectionError(
                        f"connection failed: {type(exc).__name__}: {exc}", method=method, url=url, trace_id=trace_id
                    )
                except _BodyTooLarge as exc:
                    failure = ResponseDecodeError(
                        f"response body exceeds {self.settings.max_response_bytes} bytes ({exc})",
                        method=method,
                        url=url,
                        status=status,
                        trace_id=trace_id,
                    )
            finally:
                limiter.release()
                network_time += time.monotonic() - attempt_started
            if logger.isEnabledFor(logging.DEBUG):
                logger.debug(
                    "%s %s -> %s traceId=%s attempt=%d elapsed=%.3fs",
                    method,
                    path,
                    status if failure is None else type(failure).__name__,
                    trace_id,
                    attempt,
                    time.monotonic() - attempt_started,
                )

            if failure is None and status is not None and 200 <= status < 300:
                try:
                    data = decode(payload)
                except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                    raise self._finish(
                        ResponseDecodeError(
                            f"could not decode the response ({exc}); the update may have been applied: "
                            f"{_safe_excerpt(payload)!r}",
                            method=method,
                            url=url,
                            status=status,
                            trace_id=trace_id,
                            body=payload,
                        ),
                        attempt,
                        trace_ids,
                        network_time,
                    ) from None
                return Response(
                    data=data,
                    status=status,
                    trace_id=trace_id,
                    method=method,
                    url=url,
                    attempts=attempt,
                    elapsed=time.monotonic() - started,
                    trace_ids=tuple(trace_ids),
                    network_time=network_time,
                )

            retryable: bool
            if failure is None:
                assert status is not None
                failure = self._status_error(status, payload, method=method, url=url, trace_id=trace_id)
                retryable = should_retry_status(policy, status)
            else:
                retryable = isinstance(failure, APIConnectionError)

            if not retryable or attempt >= policy.max_attempts:
                raise self._finish(failure, attempt, trace_ids, network_time)
            delay = retry_delay(policy, attempt, retry_after)
            if policy.deadline is not None and time.monotonic() - started + delay > policy.deadline:
                raise self._finish(failure, attempt, trace_ids, network_time)
            if status == 429:
                # the bucket is shared by every task of this store: all of them wait
                limiter.cool_down(delay)
            else:
                await asyncio.sleep(delay)

    @staticmethod
    def _finish(error: APIError, attempts: int, trace_ids: list[str], network_time: float) -> APIError:
        error.attempts = attempts
        error.trace_ids = list(trace_ids)
        error.network_time = network_time
        return error

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

    async def _read_capped(self, resp: aiohttp.ClientResponse, length: int | None) -> bytes:
        """The body of a response announced too large (refused) or of unknown length (read up to the cap)."""
        cap = self.settings.max_response_bytes
        if length is not None:
            raise _BodyTooLarge(f"Content-Length {length}")
        chunks: list[bytes] = []
        size = 0
        async for chunk in resp.content.iter_chunked(64 * 1024):
            size += len(chunk)
            if size > cap:
                raise _BodyTooLarge(f"more than {cap} bytes streamed")
            chunks.append(chunk)
        return b"".join(chunks)


class _BodyTooLarge(Exception):
    pass
