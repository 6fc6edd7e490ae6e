"""A local stand-in for SHOPLINE's product endpoints, for tests, the demo and benchmarks.

It serves the two PUT endpoints (and GET of a product, to inspect state) for
several stores at once, each found by its access token. It validates bodies
with the SDK's own models, keeps products in memory, limits each store with
SHOPLINE's leaky bucket and injects faults on request. Every response, error
or not, carries a unique ``traceId`` header.
"""

from __future__ import annotations

import asyncio
import copy
import itertools
import os
import re
import socket
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from functools import cache
from ssl import SSLContext
from types import TracebackType
from typing import Any, NamedTuple
from urllib.parse import unquote

import msgspec
import msgspec.inspect as mi

from .._errors import ValidationError
from ..models._image import ImageUpdate
from ..models._product import ProductUpdate
from ..models._validate import validate
from ._bucket import LeakyBucket
from ._catalog import Catalog
from ._config import Faults, MockStoreConfig
from ._http import HttpServer, Reply, Request

__all__ = ["MockShopline", "StoreStats"]

_PRODUCT_PATH = re.compile(r"/admin/openapi/(v\d{8})/products/([^/]+)\.json")
_IMAGE_PATH = re.compile(r"/admin/openapi/(v\d{8})/products/([^/]+)/images/([^/]+)\.json")
_JSON = "application/json"
_MAX_BODY = 4 * 1024 * 1024  # room for the largest documented product (body_html alone may be 512 KB)
_decoder = msgspec.json.Decoder()
_encoder = msgspec.json.Encoder()


class _ProductBody(msgspec.Struct):
    product: ProductUpdate


class _ImageBody(msgspec.Struct):
    image: ImageUpdate


_ENVELOPE_DECODERS: dict[type[Any], msgspec.json.Decoder[Any]] = {
    ProductUpdate: msgspec.json.Decoder(_ProductBody, strict=False),
    ImageUpdate: msgspec.json.Decoder(_ImageBody, strict=False),
}


@dataclass
class StoreStats:
    """What one store saw. ``writes`` counts accepted updates by product id
    (image updates by ``"{product_id}/images/{image_id}"``)."""

    requests: int = 0
    http_429: int = 0
    in_flight: int = 0
    max_in_flight: int = 0
    dropped: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    writes: Counter[str] = field(default_factory=Counter)
    attempts: Counter[str] = field(default_factory=Counter)
    peers: set[tuple[str, int]] = field(default_factory=set)
    """Client addresses seen: one per TCP connection the store's clients opened."""
    traces: dict[str, list[str]] = field(default_factory=dict)
    """traceIds sent, by request path (only with ``record_traces=True``)."""
    senders: Counter[str] = field(default_factory=Counter)
    """Requests by the value of the server's ``sender_header`` (a fleet worker's identity, say);
    counted for requests that wait (a bucket or faults), as are the overlaps."""
    sender_overlaps: int = 0
    """Requests that arrived while another sender's request to this store was in flight."""
    _in_flight_by_sender: Counter[str] = field(default_factory=Counter, repr=False)


class _Store:
    def __init__(self, handle: str, number: int, config: MockStoreConfig) -> None:
        self.handle = handle
        self.config = config
        self.catalog = Catalog(number)
        self.stats = StoreStats()
        self._bucket: LeakyBucket | None = None

    def count_attempt(self, path: str) -> int:
        """Count a request for ``path``; returns how many came before it (fault draws key on this)."""
        attempts = self.stats.attempts
        nth = attempts[path]
        attempts[path] = nth + 1
        return nth

    @property
    def bucket(self) -> LeakyBucket | None:
        if self._bucket is None and self.config.rate is not None:
            self._bucket = LeakyBucket(self.config.rate, self.config.capacity, self.config.mode)
        return self._bucket


class _Route(NamedTuple):
    path: str
    product_id: str
    image_id: str | None


class _Reply(Exception):
    """Raised inside a handler to answer with an error."""

    def __init__(self, status: int, errors: Any, headers: Mapping[str, str] | None = None) -> None:
        self.status = status
        self.errors = errors
        self.headers = headers or {}


@cache
def _known_fields(cls: type[msgspec.Struct]) -> tuple[frozenset[str], dict[str, type[msgspec.Struct]]]:
    """A request model's field names, and which of them hold nested models (alone or in lists)."""
    nested: dict[str, type[msgspec.Struct]] = {}
    info = mi.type_info(cls)
    assert isinstance(info, mi.StructType)
    for f in info.fields:
        members = f.type.types if isinstance(f.type, mi.UnionType) else (f.type,)
        for m in members:
            inner = m.type if isinstance(m, mi.Metadata) else m
            if isinstance(inner, mi.ListType):
                inner = inner.item_type
            if isinstance(inner, mi.StructType):
                nested[f.encode_name] = inner.cls
    return frozenset(f.encode_name for f in info.fields), nested


def _drop_unknown(value: Any, cls: type[msgspec.Struct]) -> Any:
    # The real API ignores fields it does not know (its own example sends read-only ones).
    if not isinstance(value, dict):
        return value
    names, nested = _known_fields(cls)
    out = {k: v for k, v in value.items() if k in names}
    for key, inner in nested.items():
        item = out.get(key)
        if isinstance(item, list):
            out[key] = [_drop_unknown(i, inner) for i in item]
        elif isinstance(item, dict):
            out[key] = _drop_unknown(item, inner)
    return out


class MockShopline:
    """The mock server. Use ``async with MockShopline(...) as server:`` and point a client at ``server.base_url``.

    ``tokens`` maps access tokens to store handles (default: one store
    ``mock-store`` with token ``mock-token``). ``config`` applies to every
    store unless ``store_configs`` has one for its handle.
    """

    def __init__(
        self,
        tokens: Mapping[str, str] | None = None,
        *,
        config: MockStoreConfig | None = None,
        store_configs: Mapping[str, MockStoreConfig] | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        validate_bodies: bool = True,
        record_traces: bool = False,
        ssl: SSLContext | None = None,
        sender_header: str | None = None,
    ) -> None:
        self.tokens = dict(tokens or {"mock-token": "mock-store"})
        default = config or MockStoreConfig()
        configs = store_configs or {}
        self._stores = {
            handle: _Store(handle, n, configs.get(handle, default))
            for n, handle in enumerate(dict.fromkeys(self.tokens.values()), start=1)
        }
        self.host = host
        self.port = port
        self.validate_bodies = validate_bodies
        self.record_traces = record_traces
        self.ssl = ssl  # a server-side context: HTTPS, for clients' TLS settings
        self.sender_header = sender_header.lower() if sender_header is not None else None
        self._trace_prefix = os.urandom(4).hex()
        self._trace_numbers = itertools.count(1)
        self._http: HttpServer | None = None

    # --- running ---------------------------------------------------------

    async def start(self) -> str:
        """Start listening; returns the base URL (``http://127.0.0.1:PORT``, ``https://`` with ``ssl``)."""
        sock = socket.socket(socket.AF_INET6 if ":" in self.host else socket.AF_INET)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.host, self.port))
            self.port = sock.getsockname()[1]
            self._http = HttpServer(self._handle, self._protocol_error, max_body=_MAX_BODY)
            await self._http.start(sock, self.ssl)
        except BaseException:
            sock.close()
            await self.stop()
            raise
        return self.base_url

    async def stop(self) -> None:
        if self._http is not None:
            http, self._http = self._http, None
            await http.stop()

    async def __aenter__(self) -> MockShopline:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    @property
    def base_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'https' if self.ssl is not None else 'http'}://{host}:{self.port}"

    # --- inspection ------------------------------------------------------

    @property
    def handles(self) -> list[str]:
        return list(self._stores)

    def token_for(self, handle: str) -> str:
        return next(t for t, h in self.tokens.items() if h == handle)

    def stats(self, handle: str) -> StoreStats:
        return self._stores[handle].stats

    def product(self, handle: str, product_id: str) -> dict[str, Any] | None:
        """The stored product in the API's response shape, or None."""
        product = self._stores[handle].catalog.products.get(product_id)
        return copy.deepcopy(product) if product is not None else None

    def seed(self, handle: str, product_id: str, update: ProductUpdate) -> dict[str, Any]:
        """Create or update a product directly (no request, no statistics), e.g. before a demo."""
        product = self._stores[handle].catalog.upsert(product_id, validate(update, "$.product"))
        return copy.deepcopy(product)

    def configure(self, handle: str, config: MockStoreConfig) -> None:
        """Change one store's behaviour (its bucket starts afresh)."""
        store = self._stores[handle]
        store.config = config
        store._bucket = None

    # --- serving ---------------------------------------------------------

    def _trace_id(self) -> str:
        return f"{self._trace_prefix}{next(self._trace_numbers):012d}"

    def _handle(self, request: Request) -> Reply | Awaitable[Reply]:
        trace_id = self._trace_id()
        try:
            store = self._authenticate(request)
        except _Reply as reply:
            return self._reply(None, trace_id, reply.status, {"errors": reply.errors}, reply.headers)
        stats = store.stats
        stats.requests += 1
        if self.record_traces:
            stats.traces.setdefault(request.target, []).append(trace_id)
        if request.peer is not None:
            stats.peers.add(request.peer)
        if store.bucket is None and not store.config.faults.active:
            # nothing to wait for: answered on the spot, no task (see _http's docstring)
            stats.max_in_flight = max(stats.max_in_flight, stats.in_flight + 1)
            return self._answer(request, store, trace_id, lambda: self._serve_now(request, store))
        return self._answer_later(request, store, trace_id)

    async def _answer_later(self, request: Request, store: _Store, trace_id: str) -> Reply:
        """The same as _serve_now, with the waits in between: the bucket's queue and injected faults."""
        stats = store.stats
        stats.in_flight += 1
        stats.max_in_flight = max(stats.max_in_flight, stats.in_flight)
        sender = request.headers.get(self.sender_header) if self.sender_header is not None else None
        if sender is not None:
            stats.senders[sender] += 1
            if stats._in_flight_by_sender.total() > stats._in_flight_by_sender[sender]:
                stats.sender_overlaps += 1
            stats._in_flight_by_sender[sender] += 1
        try:
            route = self._route(request)
            bucket = store.bucket
            if bucket is not None and not await bucket.admit():
                after = store.config.retry_after
                raise _Reply(429, "Too many request", {"Retry-After": f"{after:g}"} if after is not None else None)
            if route.image_id is None and request.method == "GET":
                return self._answer(request, store, trace_id, lambda: self._get(store, route))
            nth = self._accept(request, store, route)
            if store.config.faults.active:
                await self._inject_faults(store, route.path, nth)
            return self._answer(request, store, trace_id, lambda: self._write(request, store, route))
        except (_Reply, _Drop) as exc:
            return self._failure(request, store, trace_id, exc)
        finally:
            stats.in_flight -= 1
            if sender is not None:
                stats._in_flight_by_sender[sender] -= 1

    def _answer(self, request: Request, store: _Store, trace_id: str, serve: Callable[[], tuple[int, bytes]]) -> Reply:
        try:
            status, body = serve()
        except (_Reply, _Drop, _Garbage) as exc:
            return self._failure(request, store, trace_id, exc)
        return self._reply(store, trace_id, status, body)

    def _failure(self, request: Request, store: _Store, trace_id: str, exc: Exception) -> Reply:
        if isinstance(exc, _Drop):
            # no response at all: the client sees the connection end, and no traceId
            if self.record_traces:
                store.stats.traces[request.target].pop()
            return Reply(0, drop=True)
        if isinstance(exc, _Garbage):
            store.stats.statuses[200] += 1
            return Reply(200, exc.body, {"traceId": trace_id, "Content-Type": exc.content_type})
        assert isinstance(exc, _Reply)
        return self._reply(store, trace_id, exc.status, {"errors": exc.errors}, exc.headers)

    def _reply(
        self,
        store: _Store | None,
        trace_id: str,
        status: int,
        body: bytes | dict[str, Any],
        extra_headers: Mapping[str, str] | None = None,
    ) -> Reply:
        if store is not None:
            store.stats.statuses[status] += 1
            if status == 429:
                store.stats.http_429 += 1
        headers = {"traceId": trace_id, "Content-Type": _JSON}
        if extra_headers:
            headers.update(extra_headers)
        return Reply(status, body if isinstance(body, bytes) else _encoder.encode(body), headers)

    def _protocol_error(self, status: int, message: str) -> Reply:
        """A request too malformed to reach a store (bad request line or headers, body over the limit)."""
        return self._reply(None, self._trace_id(), status, {"errors": message})

    def _authenticate(self, request: Request) -> _Store:
        auth = request.headers.get("authorization", "")
        scheme, _, token = auth.partition(" ")
        handle = self.tokens.get(token) if scheme == "Bearer" else None
        if handle is None:
            raise _Reply(401, "[API] Invalid access token" if auth else "[API] Missing access token")
        return self._stores[handle]

    @staticmethod
    def _route(request: Request) -> _Route:
        path = request.target.partition("?")[0]
        image_match = _IMAGE_PATH.fullmatch(path)
        if image_match is not None:
            if request.method != "PUT":
                raise _Reply(405, f"Method {request.method} not allowed")
            return _Route(path, unquote(image_match.group(2)), unquote(image_match.group(3)))
        product_match = _PRODUCT_PATH.fullmatch(path)
        if product_match is None:
            raise _Reply(404, "Not Found")
        if request.method not in ("PUT", "GET"):
            raise _Reply(405, f"Method {request.method} not allowed")
        return _Route(path, unquote(product_match.group(2)), None)

    def _serve_now(self, request: Request, store: _Store) -> tuple[int, bytes]:
        route = self._route(request)
        if route.image_id is None and request.method == "GET":
            return self._get(store, route)
        self._accept(request, store, route)
        return self._write(request, store, route)

    @staticmethod
    def _get(store: _Store, route: _Route) -> tuple[int, bytes]:
        product = store.catalog.products.get(route.product_id)
        if product is None:
            raise _Reply(404, "Product not found")
        return 200, _encoder.encode({"product": product})

    @staticmethod
    def _accept(request: Request, store: _Store, route: _Route) -> int:
        """Check the body's type and count the attempt; returns how many came before it (faults key on this)."""
        if request.headers.get("content-type", "").partition(";")[0].strip().lower() != _JSON:
            raise _Reply(400, "Content-Type must be application/json; charset=utf-8")
        return store.count_attempt(route.path)

    def _write(self, request: Request, store: _Store, route: _Route) -> tuple[int, bytes]:
        if route.image_id is None:
            update = self._parse(request.body, "product", ProductUpdate)
            product = store.catalog.upsert(route.product_id, update)
            store.stats.writes[route.product_id] += 1
            body = _encoder.encode({"product": product})
        else:
            image_update = self._parse(request.body, "image", ImageUpdate)
            image = store.catalog.update_image(route.product_id, route.image_id, image_update)
            if image is None:
                raise _Reply(404, f"Image {route.image_id} not found on product {route.product_id}")
            store.stats.writes[f"{route.product_id}/images/{route.image_id}"] += 1
            body = _encoder.encode({"image": image})
        self._maybe_garble(store, route.path, body)
        return 200, body

    def _parse(self, raw: bytes, key: str, cls: type[Any]) -> Any:
        try:
            # fast path: a typed decode, with every limit msgspec can check, in C
            model = getattr(_ENVELOPE_DECODERS[cls].decode(raw), key)
        except msgspec.ValidationError:
            model = self._parse_leniently(raw, key, cls)
        except msgspec.DecodeError as exc:
            raise _Reply(400, f"Invalid JSON: {exc}") from None
        if self.validate_bodies:
            try:
                model = validate(model, f"$.{key}", decoded=True)
            except ValidationError as exc:
                raise _Reply(422, [str(e) for e in exc.errors]) from None
        return model

    @staticmethod
    def _parse_leniently(raw: bytes, key: str, cls: type[Any]) -> Any:
        """The slow path: drop fields the API ignores, then say exactly what is wrong, if anything."""
        document = _decoder.decode(raw)
        if not isinstance(document, dict) or not isinstance(document.get(key), dict):
            raise _Reply(422, f"{key} is required")
        try:
            return msgspec.convert(_drop_unknown(document[key], cls), cls, strict=False)
        except msgspec.ValidationError as exc:
            raise _Reply(422, f"{exc}".replace("`$", f"`$.{key}")) from None

    async def _inject_faults(self, store: _Store, path: str, nth: int) -> None:
        """The faults configured for the ``nth`` attempt (0-based) at ``path``."""
        faults: Faults = store.config.faults
        retry_after = {"Retry-After": f"{faults.retry_after:g}"} if faults.retry_after is not None else None
        if nth < faults.fail_first:
            if faults.fail_status == "drop":
                store.stats.dropped += 1
                raise _Drop()
            if faults.fail_status == "stall":
                await asyncio.sleep(faults.stall_seconds)
                return
            raise _Reply(faults.fail_status, f"Injected failure {nth + 1} of {faults.fail_first}", retry_after)
        rng = faults.rng(store.handle, path, nth)
        if rng.random() < faults.latency_rate:
            low, high = faults.latency if isinstance(faults.latency, tuple) else (faults.latency, faults.latency)
            await asyncio.sleep(rng.uniform(low, high))
        if rng.random() < faults.drop_rate:
            store.stats.dropped += 1
            raise _Drop()
        if rng.random() < faults.error_rate:
            raise _Reply(rng.choice(faults.error_statuses), "Injected server error", retry_after)
        if rng.random() < faults.stall_rate:
            await asyncio.sleep(faults.stall_seconds)

    @staticmethod
    def _maybe_garble(store: _Store, path: str, body: bytes) -> None:
        faults = store.config.faults
        if not faults.garbage_rate:
            return
        rng = faults.rng(store.handle, path + "#garbage", store.stats.attempts[path])
        if rng.random() < faults.garbage_rate:
            if rng.random() < 0.5:
                raise _Garbage(b"<html><body><h1>502 Bad Gateway</h1></body></html>", "text/html")
            raise _Garbage(body[: len(body) // 2], _JSON)


class _Garbage(Exception):
    def __init__(self, body: bytes, content_type: str) -> None:
        self.body = body
        self.content_type = content_type


class _Drop(Exception):
    pass
