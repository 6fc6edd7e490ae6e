"""The app-level client and its per-store handles."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from ssl import SSLContext
from types import TracebackType

import aiohttp

from ._config import RateLimit, RetryPolicy, Timeout
from ._constants import (
    DEFAULT_BASE_URL,
    DEFAULT_IMAGES_API_VERSION,
    DEFAULT_KEEPALIVE_TIMEOUT,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_RESPONSE_BYTES,
    DEFAULT_PRODUCTS_API_VERSION,
)
from ._errors import ClientClosedError, ConfigError
from ._resources import Images, Products
from ._sender import AiohttpSender, Sender
from ._telemetry import EventHook, Observer, build_observer
from ._transport import (
    ClientState,
    StoreTransport,
    TransportSettings,
    check_api_version,
    check_extra_headers,
    check_handle,
    check_token,
    resolve_base_url,
)
from ._version import __version__

__all__ = ["ShoplineClient", "Store"]


class Store:
    """One store of the app: ``store.products`` and ``store.images``, sharing its limiter and token."""

    __slots__ = ("_transport", "images", "products")

    def __init__(self, transport: StoreTransport, products_api_version: str, images_api_version: str) -> None:
        self._transport = transport
        self.products = Products(transport, products_api_version)
        self.images = Images(transport, images_api_version)

    @property
    def handle(self) -> str:
        return self._transport.handle

    @property
    def base_url(self) -> str:
        return self._transport.base_url

    @property
    def rate_limit(self) -> RateLimit:
        return self._transport.rate_limit

    @property
    def rate_limited(self) -> int:
        """How many 429s this store has answered so far."""
        return self._transport.rate_limited

    def set_access_token(self, access_token: str) -> None:
        """Switch to a refreshed token; attempts already under way keep the old one."""
        self._transport.set_access_token(access_token)

    def __repr__(self) -> str:
        return f"Store(handle={self.handle!r}, base_url={self.base_url!r})"


class ShoplineClient:
    """An app's client for the SHOPLINE Admin REST API. Use it with ``async with``.

    ``client.store(handle, access_token)`` returns the store's handle, with its own rate
    limiter mirroring SHOPLINE's per-app-per-store bucket. Connections are pooled per origin
    (each store is its own host in production) under one cap for the whole client,
    ``max_connections`` sockets idle ones included; see :class:`AiohttpSender`. ``sender``
    replaces the network layer (a :class:`MockSender` in tests); the client closes it on exit.
    Leaving the ``async with`` block closes everything, and the store handles with it.

    ``extra_headers`` go with every request (never Authorization, Content-Type, Content-Length,
    Host or Transfer-Encoding, which the SDK sets). Networking (``trust_env``, ``proxy``, ``ssl``,
    ``session``) is passed to :class:`AiohttpSender`; see there what an app's own session takes over.

    ``event_hooks`` (``{"request": [...], "response": [...], "retry": [...]}``) are called with a
    :class:`RequestEvent`, :class:`ResponseEvent` or :class:`RetryEvent` for every attempt, in
    the event loop: keep them quick. ``telemetry=shopline_async.otel.OpenTelemetry()`` records
    spans and metrics (the ``[otel]`` extra). Copies from ``with_options`` keep both.
    """

    def __init__(
        self,
        *,
        base_url: str = DEFAULT_BASE_URL,
        products_api_version: str = DEFAULT_PRODUCTS_API_VERSION,
        images_api_version: str = DEFAULT_IMAGES_API_VERSION,
        timeout: Timeout | None = None,
        retry: RetryPolicy | None = None,
        rate_limit: RateLimit | None = None,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        keepalive_timeout: float = DEFAULT_KEEPALIVE_TIMEOUT,
        user_agent: str | None = None,
        allow_insecure_http: bool = False,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        extra_headers: Mapping[str, str] | None = None,
        trust_env: bool = False,
        proxy: str | None = None,
        ssl: SSLContext | bool = True,
        session: aiohttp.ClientSession | None = None,
        sender: Sender | None = None,
        event_hooks: Mapping[str, Sequence[EventHook]] | None = None,
        telemetry: Observer | None = None,
    ) -> None:
        agent = user_agent or f"shopline-async/{__version__}"
        if any(c in agent for c in "\r\n\0"):
            raise ConfigError("user_agent must not contain line breaks or NUL")
        # fail at construction, not at the first request, on a bad template
        resolve_base_url(base_url, "1", allow_insecure_http=allow_insecure_http)  # a handle fit for host or port
        self._settings = TransportSettings(
            base_url=base_url,
            timeout=timeout or Timeout(),
            retry=retry or RetryPolicy(),
            user_agent=agent,
            allow_insecure_http=allow_insecure_http,
            extra_headers=check_extra_headers(extra_headers, "extra_headers"),
            observer=build_observer(event_hooks, telemetry),
        )
        if sender is None:
            sender = AiohttpSender(
                max_connections=max_connections,
                keepalive_timeout=keepalive_timeout,
                max_response_bytes=max_response_bytes,
                trust_env=trust_env,
                proxy=proxy,
                ssl=ssl,
                session=session,
            )
        elif trust_env or proxy is not None or ssl is not True or session is not None:
            raise ConfigError("trust_env, proxy, ssl and session configure the default sender: pass them to it")
        self._state = ClientState(sender)
        self._products_api_version = check_api_version(products_api_version)
        self._images_api_version = check_api_version(images_api_version)
        self._rate_limit = rate_limit or RateLimit()
        self._stores: dict[str, Store] = {}

    def with_options(
        self,
        *,
        timeout: Timeout | None = None,
        retry: RetryPolicy | None = None,
        rate_limit: RateLimit | None = None,
        extra_headers: Mapping[str, str] | None = None,
    ) -> ShoplineClient:
        """A copy with other settings that shares this client's connections and its stores' limiters.

        >>> patient = client.with_options(timeout=Timeout(total=120), retry=RetryPolicy(max_attempts=8))
        >>> await patient.store("open001", token).products.update(...)

        Every store already handed out is in the copy too, with its token. A store is one
        SHOPLINE bucket however many copies send to it, so they share one limiter: ``rate_limit``
        applies to stores first created by the copy. ``extra_headers`` replace this client's.
        Closing any copy closes the connections of all; close the client you created.
        """
        copy = object.__new__(ShoplineClient)
        settings = self._settings
        copy._settings = TransportSettings(
            base_url=settings.base_url,
            timeout=timeout or settings.timeout,
            retry=retry or settings.retry,
            user_agent=settings.user_agent,
            allow_insecure_http=settings.allow_insecure_http,
            extra_headers=settings.extra_headers
            if extra_headers is None
            else check_extra_headers(extra_headers, "extra_headers"),
            observer=settings.observer,
        )
        copy._state = self._state
        copy._products_api_version = self._products_api_version
        copy._images_api_version = self._images_api_version
        copy._rate_limit = rate_limit or self._rate_limit
        copy._stores = {
            handle: Store(
                store._transport.with_settings(copy._settings), self._products_api_version, self._images_api_version
            )
            for handle, store in self._stores.items()
        }
        return copy

    @property
    def sender(self) -> Sender:
        """What sends each attempt (an :class:`AiohttpSender` unless one was passed)."""
        return self._state.sender

    @property
    def closed(self) -> bool:
        return self._state.closed

    def store(self, handle: str, access_token: str, *, rate_limit: RateLimit | None = None) -> Store:
        """The handle for one store. Calling again with the same handle returns the same store;
        a different token replaces the old one, a different ``rate_limit`` is refused."""
        if self._state.closed:
            raise ClientClosedError("the client is closed; create a new ShoplineClient")
        key = check_handle(handle)
        check_token(access_token)
        existing = self._stores.get(key)
        if existing is not None:
            if rate_limit is not None and rate_limit != existing.rate_limit:
                raise ConfigError(f"store {key!r} already exists with {existing.rate_limit}")
            existing.set_access_token(access_token)
            return existing
        shared = self._state.limiters.get(key)  # a copy of this client (with_options) sent to it first
        if shared is not None and rate_limit is not None and rate_limit != shared.rate_limit:
            raise ConfigError(f"store {key!r} already exists with {shared.rate_limit}")
        chosen = shared.rate_limit if shared is not None else rate_limit or self._rate_limit
        transport = StoreTransport(key, access_token, self._state, self._settings, chosen)
        store = Store(transport, self._products_api_version, self._images_api_version)
        self._stores[key] = store
        return store

    @property
    def stores(self) -> dict[str, Store]:
        """The stores handed out so far, by handle."""
        return dict(self._stores)

    def get_store(self, handle: str) -> Store | None:
        """The store already handed out for ``handle`` (any case), or None."""
        return self._stores.get(handle.lower())

    async def aclose(self) -> None:
        """Close the client: its connections, and every store handle with it. Safe to call twice."""
        self._state.closed = True
        await self._state.sender.aclose()

    async def __aenter__(self) -> ShoplineClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"ShoplineClient(base_url={self._settings.base_url!r}, stores={len(self._stores)})"
