"""One attempt of one HTTP request: the seam between the SDK's request logic and the network.

A ``Sender`` takes an :class:`HTTPRequest` and returns an :class:`HTTPResponse` (any status), or
raises a :class:`SendError`: :class:`ConnectFailed` (no response: refused, reset, dropped),
:class:`SendTimeout` or :class:`ResponseTooLarge`. It does not retry, pace, decode or map statuses
to errors; ``StoreTransport`` above it does. As with httpx's transports, tests swap in a
:class:`MockSender` that answers from a function.

``AiohttpSender`` is the real one. It caps the sockets open across the whole client
(``max_connections``, idle ones included): a request that finds the cap reached waits for a
socket, it never fails for want of descriptors.

Why pools per origin (scheme, host, port) under one budget, not one aiohttp connector for all:
aiohttp's ``limit`` counts only connections in use; idle keep-alive connections of other hosts
are not counted and not closed to make room, so with a thousand stores (a thousand hosts) a
connector with ``limit=100`` held a thousand sockets. Here each origin gets its own connector,
and the sender counts every socket it may hold: a pool with no request in flight is closed when
another pool needs its sockets, or after ``keepalive_timeout`` without work; a busy pool with
idle sockets gives one back by sending its next request with ``Connection: close``. Stores
behind one origin (a proxy, the mock server) share one pool; per-store limits are the store
limiter's (``RateLimit.max_in_flight``), never the host name's. Why not one pool per store: behind
a shared origin (our mock, our benchmarks, a proxy) every store would open sockets of its own,
where one pool serves them all (not yet measured side by side; see the note on issue 15).
"""

from __future__ import annotations

import asyncio
import urllib.request
import zlib
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Mapping
from ssl import SSLContext
from typing import Protocol

import aiohttp
import msgspec
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from ._config import Timeout
from ._constants import DEFAULT_KEEPALIVE_TIMEOUT, DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_RESPONSE_BYTES
from ._errors import ClientClosedError, ConfigError

__all__ = [
    "AiohttpSender",
    "CertificateRefused",
    "ConnectFailed",
    "HTTPRequest",
    "HTTPResponse",
    "MockSender",
    "ResponseTooLarge",
    "SendError",
    "SendTimeout",
    "Sender",
]


class HTTPRequest(msgspec.Struct, gc=False):
    """What one attempt sends: method, absolute URL, every header, the body and its timeout."""

    # msgspec Structs: built in C, one of each per attempt; gc=False, as they hold no cycles

    method: str
    url: URL
    headers: Mapping[str, str]
    body: bytes
    timeout: Timeout

    def __repr__(self) -> str:  # never the headers: Authorization is one of them
        return f"HTTPRequest({self.method} {self.url})"


class HTTPResponse(msgspec.Struct, gc=False):
    """What came back: status, headers (case-insensitive) and the whole body."""

    status: int
    headers: Mapping[str, str]
    body: bytes

    def __repr__(self) -> str:
        return f"HTTPResponse({self.status}, {len(self.body)} bytes)"


class SendError(Exception):
    """No usable response. ``status`` and ``headers`` are set if a response had begun to arrive."""

    def __init__(self, message: str, *, status: int | None = None, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.headers: Mapping[str, str] = headers if headers is not None else {}


class ConnectFailed(SendError):
    """The connection could not be made, or broke before the response was complete."""


class CertificateRefused(ConnectFailed):
    """The server's TLS certificate failed verification: trying again cannot help."""


class SendTimeout(SendError):
    """The attempt took longer than its timeout."""


class ResponseTooLarge(SendError):
    """The response body was (or was announced) larger than the sender's ``max_response_bytes``."""


class Sender(Protocol):
    """Sends one request, once. Implementations: :class:`AiohttpSender`, :class:`MockSender`."""

    async def send(self, request: HTTPRequest) -> HTTPResponse: ...

    async def aclose(self) -> None: ...


Handler = Callable[[HTTPRequest], "HTTPResponse | Awaitable[HTTPResponse]"]


class MockSender:
    """A sender that answers from ``handler(request)`` (plain or async), touching no network.

    For tests, as httpx's ``MockTransport``: ``ShoplineClient(sender=MockSender(handler))``.
    ``requests`` keeps every request it was given; a handler may raise a :class:`SendError`.
    """

    def __init__(self, handler: Handler) -> None:
        self._handler = handler
        self.requests: list[HTTPRequest] = []
        self.closed = False

    async def send(self, request: HTTPRequest) -> HTTPResponse:
        if self.closed:
            raise ClientClosedError("the sender is closed")
        self.requests.append(request)
        answer = self._handler(request)
        response = await answer if isinstance(answer, Awaitable) else answer
        if not isinstance(response.headers, CIMultiDictProxy | CIMultiDict):
            response.headers = CIMultiDict(response.headers)  # case-insensitive, as on the wire
        return response

    async def aclose(self) -> None:
        self.closed = True


class _Pool:
    """One origin's aiohttp session and its share of the socket budget."""

    __slots__ = ("active", "held", "idle_since", "key", "session", "waiters")

    def __init__(self, key: tuple[str, str], session: aiohttp.ClientSession) -> None:
        self.key = key
        self.session = session
        self.held = 0  # sockets this pool may have open: permits taken from the budget
        self.active = 0  # requests under way; never more than held
        self.idle_since = 0.0
        self.waiters: deque[asyncio.Future[None]] = deque()


class AiohttpSender:
    """Sends with aiohttp, at most ``max_connections`` sockets open at once across every origin.

    Idle sockets close after ``keepalive_timeout`` seconds, and a pool with nothing in flight for
    that long closes as a whole. Create it (or let ``ShoplineClient`` create it) anywhere; its
    sessions are opened inside the running loop on first use. Redirects are never followed.

    Networking as aiohttp has it: ``trust_env=True`` takes proxies from ``HTTPS_PROXY``/``HTTP_PROXY``
    (and ``NO_PROXY``, ``~/.netrc``); ``proxy`` names one explicitly (credentials in its URL are
    never logged); ``ssl`` is an ``SSLContext`` (a private CA, client certificates) or ``False``
    to skip verification. ``session`` is an app's own ``aiohttp.ClientSession``, used for every
    request: its connector then owns the sockets (its ``limit``, keep-alive, ``ssl``, proxies
    and ``trust_env``), so ``max_connections``, ``keepalive_timeout``, ``trust_env`` and ``ssl``
    do not apply here, and the app closes it (the sender never does). ``proxy`` still applies.
    """

    def __init__(
        self,
        *,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        keepalive_timeout: float = DEFAULT_KEEPALIVE_TIMEOUT,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        trust_env: bool = False,
        proxy: str | None = None,
        ssl: SSLContext | bool = True,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        if not isinstance(max_connections, int) or max_connections < 1:
            raise ConfigError("max_connections must be an int >= 1")
        if not keepalive_timeout > 0:
            raise ConfigError("keepalive_timeout must be > 0")
        if not isinstance(max_response_bytes, int) or max_response_bytes < 1024:
            raise ConfigError("max_response_bytes must be an int >= 1024")
        if session is not None and (trust_env or ssl is not True):
            raise ConfigError("with session=, trust_env and ssl are the session's own settings: set them on it")
        if proxy is not None and URL(proxy).scheme not in ("http", "https"):
            raise ConfigError("proxy must be an http:// or https:// URL")
        self.max_connections = max_connections
        self.keepalive_timeout = keepalive_timeout
        self.max_response_bytes = max_response_bytes
        self._trust_env = trust_env
        self._proxy = proxy
        self._ssl = ssl
        self._session = session
        self._free = max_connections
        self._pools: dict[tuple[str, str], _Pool] = {}
        self._idle: OrderedDict[tuple[str, str], _Pool] = OrderedDict()  # pools with nothing in flight, oldest first
        self._starving: deque[_Pool] = deque()  # pools with requests waiting for a socket, first come first served
        self._closing: set[asyncio.Task[None]] = set()
        self._sweep: asyncio.TimerHandle | None = None
        # the last Timeout seen and its aiohttp form, by identity: nearly every request carries the
        # client's one Timeout object, and hashing the dataclass per request costs more than the cache
        self._timeout: tuple[Timeout | None, aiohttp.ClientTimeout | None] = (None, None)
        self.closed = False

    def proxy_for(self, url: URL) -> URL | None:
        """The proxy a request to ``url`` goes through: ``proxy``, else with ``trust_env`` the
        environment's (``HTTP_PROXY``/``HTTPS_PROXY`` less ``NO_PROXY``), else None. (An app's own
        ``session`` decides for itself, unseen here.)"""
        if self._proxy is not None:
            return URL(self._proxy)
        if self._trust_env and url.host is not None:
            proxies = urllib.request.getproxies()
            if url.scheme in proxies and not urllib.request.proxy_bypass(url.host):
                return URL(proxies[url.scheme])
        return None

    @property
    def open_sockets_bound(self) -> int:
        """Sockets the sender may have open now (permits held by its pools): never over ``max_connections``."""
        return self.max_connections - self._free

    @property
    def pools(self) -> int:
        """Origins with a pool open now."""
        return len(self._pools)

    async def send(self, request: HTTPRequest) -> HTTPResponse:
        # one coroutine for the socket budget and the exchange, not two: aiohttp resumes this
        # frame several times per request, and every level between costs on each resume
        if self.closed:
            raise ClientClosedError("the client is closed; create a new ShoplineClient")
        session = self._session
        pool: _Pool | None = None
        reclaim = False
        headers = request.headers
        if session is None:  # else the app's own session: its connector counts the sockets
            url = request.url
            key = (url.scheme, url.raw_authority)
            pool = self._pools.get(key)
            if pool is None:
                pool = self._open_pool(key)
            if pool.active < pool.held:
                pool.active += 1
                if pool.active == 1:
                    self._idle.pop(key, None)
            else:
                await self._wait_for_socket(pool)
            session = pool.session
            # others wait for sockets while this pool has idle ones: this request's socket goes back
            reclaim = bool(self._starving) and pool.active < pool.held
            if reclaim:
                headers = {**headers, "Connection": "close"}
        status: int | None = None
        response_headers: Mapping[str, str] | None = None
        try:
            async with session.request(
                request.method,
                request.url,
                data=request.body,
                headers=headers,
                timeout=self._client_timeout(request.timeout),
                allow_redirects=False,
                proxy=self._proxy,
            ) as resp:
                status = resp.status
                response_headers = resp.headers
                length = resp.content_length
                # a compressed body's Content-Length says nothing of its size once inflated
                encoding = _content_encoding(response_headers)
                if length is not None and length <= self.max_response_bytes and encoding is None:
                    body = await resp.read()
                else:  # inflated here, unless an app's own session inflates as it reads
                    inflate_here = pool is not None or not session.auto_decompress
                    body = await self._read_capped(resp, length, encoding if inflate_here else None)
                return HTTPResponse(status, response_headers, body)
        except asyncio.TimeoutError:
            raise SendTimeout("request timed out", status=status, headers=response_headers) from None
        except aiohttp.ClientError as exc:
            # a proxy error's text may hold the proxy's URL, and with it its credentials
            proxy_failed = isinstance(exc, aiohttp.ClientProxyConnectionError | aiohttp.ClientHttpProxyError)
            detail = "the proxy refused or failed" if proxy_failed else str(exc)
            failed = CertificateRefused if isinstance(exc, aiohttp.ClientConnectorCertificateError) else ConnectFailed
            raise failed(
                f"connection failed: {type(exc).__name__}: {detail}", status=status, headers=response_headers
            ) from None
        finally:
            if pool is not None:
                self._release(pool, reclaim)

    async def aclose(self) -> None:
        """Close every pool. Requests still under way fail. Safe to call twice."""
        self.closed = True
        if self._sweep is not None:
            self._sweep.cancel()
            self._sweep = None
        pools, self._pools = list(self._pools.values()), {}
        self._idle.clear()
        for pool in pools:
            await pool.session.close()
        while self._closing:
            await asyncio.gather(*self._closing)

    # --- the socket budget ----------------------------------------------------

    def _open_pool(self, key: tuple[str, str]) -> _Pool:
        session = aiohttp.ClientSession(
            # no aiohttp limit: the budget below is the limit, and it counts idle sockets too
            connector=aiohttp.TCPConnector(
                limit=0, limit_per_host=0, keepalive_timeout=self.keepalive_timeout, ssl=self._ssl
            ),
            cookie_jar=aiohttp.DummyCookieJar(),
            # inflated here, in bounded steps (_read_capped): aiohttp would inflate a whole body at once
            auto_decompress=False,
            headers={"Accept-Encoding": _ACCEPT_ENCODING},
            trust_env=self._trust_env,
        )
        pool = _Pool(key, session)
        self._pools[key] = pool
        return pool

    async def _wait_for_socket(self, pool: _Pool) -> None:
        """Take a socket for ``pool``, which has none idle: a free permit, the permits of the
        longest-idle pool (closed for it), or, failing both, the first to come back."""
        if self._free == 0 and self._idle:
            await self._retire(next(iter(self._idle.values())))  # serves earlier waiters first
        if self._free > 0 and not self._starving:
            self._free -= 1
            pool.held += 1
            pool.active += 1
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        pool.waiters.append(waiter)
        if len(pool.waiters) == 1:
            self._starving.append(pool)
        try:
            await waiter  # whoever wakes us has counted us in pool.active
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self._release(pool, reclaim=False)  # handed a socket as we were cancelled: hand it on
            else:
                pool.waiters.remove(waiter)
                if not pool.waiters and pool in self._starving:
                    self._starving.remove(pool)
            raise

    def _release(self, pool: _Pool, reclaim: bool) -> None:
        pool.active -= 1
        if reclaim:  # its socket was sent with Connection: close and is gone
            pool.held -= 1
            self._free += 1
        if pool.waiters:
            if pool.active < pool.held:
                self._wake(pool)
        elif pool.active == 0:
            if self._starving and pool.held:
                self._retire_soon(pool)  # others wait: its sockets are worth more to them
            else:
                pool.idle_since = asyncio.get_running_loop().time()
                self._idle[pool.key] = pool
                self._schedule_sweep()
        self._hand_out()

    def _hand_out(self) -> None:
        """Give free permits to pools waiting for a socket, one each in turn."""
        while self._free > 0 and self._starving:
            pool = self._starving.popleft()
            self._free -= 1
            pool.held += 1
            if not self._wake(pool):  # its only waiter was cancelled meanwhile
                pool.held -= 1
                self._free += 1
            if pool.waiters:
                self._starving.append(pool)

    def _wake(self, pool: _Pool) -> bool:
        woke = False
        while pool.waiters:
            waiter = pool.waiters.popleft()
            if not waiter.done():
                pool.active += 1
                waiter.set_result(None)
                woke = True
                break
        if not pool.waiters and pool in self._starving:
            self._starving.remove(pool)
        return woke

    def _detach(self, pool: _Pool) -> int:
        """Take ``pool`` out of service (a new pool may then open for its origin); returns its permits."""
        if self._pools.get(pool.key) is pool:
            del self._pools[pool.key]
        if self._idle.get(pool.key) is pool:
            del self._idle[pool.key]
        held, pool.held = pool.held, 0
        return held

    def _retire_soon(self, pool: _Pool) -> None:
        """Close a pool with nothing in flight, in the background."""
        task = asyncio.ensure_future(self._retire(pool))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    def _retire(self, pool: _Pool) -> Awaitable[None]:
        # out of service at once, not when the close task first runs: no request may start on it
        held = self._detach(pool)
        return self._close_then_return(pool.session, held)

    async def _close_then_return(self, session: aiohttp.ClientSession, held: int) -> None:
        await session.close()
        self._free += held  # only now: its sockets are closed
        self._hand_out()

    def _schedule_sweep(self) -> None:
        if self._sweep is None:
            loop = asyncio.get_running_loop()
            self._sweep = loop.call_later(self.keepalive_timeout, self._sweep_idle)

    def _sweep_idle(self) -> None:
        """Close the pools that have had nothing in flight for ``keepalive_timeout``."""
        self._sweep = None
        deadline = asyncio.get_running_loop().time() - self.keepalive_timeout
        for pool in list(self._idle.values()):
            if pool.idle_since > deadline:
                break
            self._retire_soon(pool)
        if self._idle:
            self._schedule_sweep()

    def _client_timeout(self, timeout: Timeout) -> aiohttp.ClientTimeout:
        last, client_timeout = self._timeout
        if last is not timeout or client_timeout is None:
            client_timeout = aiohttp.ClientTimeout(total=timeout.total, connect=timeout.connect, sock_read=timeout.read)
            self._timeout = (timeout, client_timeout)
        return client_timeout

    async def _read_capped(self, resp: aiohttp.ClientResponse, length: int | None, encoding: str | None) -> bytes:
        """The body of a response announced too large (refused), of unknown length, or compressed:
        read (and inflated) in steps, never more than ``max_response_bytes`` of it held."""
        cap = self.max_response_bytes
        if length is not None and length > cap:
            raise ResponseTooLarge(
                f"response body exceeds {cap} bytes (Content-Length {length})", status=resp.status, headers=resp.headers
            )
        inflate = _Inflater(encoding, cap) if encoding is not None else None
        chunks: list[bytes] = []
        size = 0
        async for chunk in resp.content.iter_chunked(64 * 1024):
            pieces = inflate.feed(chunk) if inflate is not None else (chunk,)
            for piece in pieces:
                size += len(piece)
                if size > cap:
                    raise ResponseTooLarge(
                        f"response body exceeds {cap} bytes ({'inflated' if inflate else 'more streamed'})",
                        status=resp.status,
                        headers=resp.headers,
                    )
                chunks.append(piece)
        return b"".join(chunks)


_ACCEPT_ENCODING = "gzip, deflate"


def _content_encoding(headers: Mapping[str, str]) -> str | None:
    """The response's Content-Encoding if it has to be undone, or None for none (or identity)."""
    encoding = headers.get("Content-Encoding")
    if encoding is None:
        return None
    encoding = encoding.strip().lower()
    return None if encoding in ("", "identity") else encoding


class _Inflater:
    """Undoes gzip or deflate in steps that never yield more than the cap allows (plus one byte,
    to tell an exact fit from an overflow): a 1 MB gzip bomb costs the cap, not its 1 GB."""

    __slots__ = ("_cap", "_produced", "_zlib")

    def __init__(self, encoding: str, cap: int) -> None:
        if encoding not in ("gzip", "x-gzip", "deflate"):
            raise ConnectFailed(f"the response is encoded {encoding!r}, which was not asked for ({_ACCEPT_ENCODING})")
        # 47: a gzip or a zlib header, found by zlib itself (some servers send zlib for gzip and back)
        self._zlib = zlib.decompressobj(wbits=47)
        self._cap = cap
        self._produced = 0

    def feed(self, data: bytes) -> list[bytes]:
        pieces: list[bytes] = []
        try:
            while data and self._produced <= self._cap:
                piece = self._zlib.decompress(data, self._cap + 1 - self._produced)
                self._produced += len(piece)
                pieces.append(piece)
                data = self._zlib.unconsumed_tail
        except zlib.error as exc:
            raise ConnectFailed(f"the response body could not be decompressed: {exc}") from None
        return pieces
