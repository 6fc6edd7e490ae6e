"""The app-level client and its per-store handles."""

from __future__ import annotations

from types import TracebackType

from ._config import RateLimit, RetryPolicy, Timeout
from ._constants import (
    DEFAULT_BASE_URL,
    DEFAULT_CONNECTIONS_PER_STORE,
    DEFAULT_IMAGES_API_VERSION,
    DEFAULT_MAX_RESPONSE_BYTES,
    DEFAULT_PRODUCTS_API_VERSION,
)
from ._errors import ConfigError
from ._resources import Images, Products
from ._transport import (
    StoreTransport,
    TransportSettings,
    check_api_version,
    check_handle,
    check_token,
    resolve_base_url,
)
from ._version import __version__

__all__ = ["ShoplineClient", "Store"]


class Store:
    """One store of the app: ``store.products`` and ``store.images``, sharing one connection pool."""

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

    def set_access_token(self, access_token: str) -> None:
        """Switch to a refreshed token; requests already under way keep the old one."""
        self._transport.set_access_token(access_token)

    def __repr__(self) -> str:
        return f"Store(handle={self.handle!r}, base_url={self.base_url!r})"


class ShoplineClient:
    """An app's client for the SHOPLINE Admin REST API. Use it with ``async with``.

    ``client.store(handle, access_token)`` returns the store's handle; each
    store gets its own connection pool (created on first use) and its own
    rate limiter, mirroring SHOPLINE's per-app-per-store bucket. Leaving the
    ``async with`` block closes every pool.
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
        connections_per_store: int = DEFAULT_CONNECTIONS_PER_STORE,
        user_agent: str | None = None,
        allow_insecure_http: bool = False,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
    ) -> None:
        if not isinstance(connections_per_store, int) or connections_per_store < 1:
            raise ConfigError("connections_per_store must be an int >= 1")
        if not isinstance(max_response_bytes, int) or max_response_bytes < 1024:
            raise ConfigError("max_response_bytes must be an int >= 1024")
        agent = user_agent or f"shopline-async/{__version__}"
        if any(c in agent for c in "\r\n\0"):
            raise ConfigError("user_agent must not contain line breaks or NUL")
        # fail at construction, not at the first request, on a bad template
        resolve_base_url(base_url, "example", allow_insecure_http=allow_insecure_http)
        self._settings = TransportSettings(
            base_url=base_url,
            timeout=timeout or Timeout(),
            retry=retry or RetryPolicy(),
            connections_per_store=connections_per_store,
            user_agent=agent,
            allow_insecure_http=allow_insecure_http,
            max_response_bytes=max_response_bytes,
        )
        self._products_api_version = check_api_version(products_api_version)
        self._images_api_version = check_api_version(images_api_version)
        self._rate_limit = rate_limit or RateLimit()
        self._stores: dict[str, Store] = {}
        self._closed = False

    def store(self, handle: str, access_token: str, *, rate_limit: RateLimit | None = None) -> Store:
        """The handle for one store. Calling again with the same handle returns the same store
        (and pool); a different token replaces the old one, a different ``rate_limit`` is refused."""
        if self._closed:
            raise ConfigError("the client is closed")
        key = check_handle(handle)
        check_token(access_token)
        existing = self._stores.get(key)
        if existing is not None:
            if rate_limit is not None and rate_limit != existing.rate_limit:
                raise ConfigError(f"store {key!r} already exists with {existing.rate_limit}")
            existing.set_access_token(access_token)
            return existing
        transport = StoreTransport(key, access_token, self._settings, rate_limit or self._rate_limit)
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
        """Close every store's connection pool. Safe to call twice."""
        self._closed = True
        for store in self._stores.values():
            await store._transport.aclose()

    async def __aenter__(self) -> ShoplineClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"ShoplineClient(base_url={self._settings.base_url!r}, stores={sorted(self._stores)!r})"
