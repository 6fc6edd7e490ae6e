"""Endpoint methods, bound to one store: products and product images."""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Mapping
from typing import Any, Generic, TypeVar

from ._codec import decode_image, decode_product, encode_image_update, encode_product_update
from ._config import RetryPolicy, Timeout
from ._errors import ConfigError
from ._response import Response
from ._transport import PreparedRequest, StoreTransport, check_api_version, check_extra_headers, path_segment
from .models._image import ImageUpdate, ProductImage
from .models._product import Product, ProductUpdate

__all__ = ["Images", "Products"]

M = TypeVar("M")


class _Resource(Generic[M]):
    __slots__ = ("_api_version", "_decode", "_transport")

    def __init__(self, transport: StoreTransport, api_version: str, decode: Callable[[bytes], M]) -> None:
        self._transport = transport
        self._api_version = api_version
        self._decode = decode

    def _version(self, api_version: str | None) -> str:
        return self._api_version if api_version is None else check_api_version(api_version)

    def _request(
        self,
        prepared: PreparedRequest[M],
        timeout: Timeout | None,
        retry: RetryPolicy | None,
        extra_headers: Mapping[str, str] | None,
    ) -> Coroutine[Any, Any, Response[M]]:
        headers = check_extra_headers(extra_headers, "extra_headers") if extra_headers else None
        return self._transport.request(prepared, timeout=timeout, retry=retry, extra_headers=headers)

    def send(
        self, prepared: PreparedRequest[M], *, timeout: Timeout | None = None, retry: RetryPolicy | None = None
    ) -> Coroutine[Any, Any, Response[M]]:
        """Send what :meth:`prepare` returned (for this store or another), with retries: ``await`` it.
        Raises an APIError subclass."""
        # a plain function handing back the transport's coroutine: no await level of its own, which
        # every resume of the request (several per operation) would pass through
        if prepared.decode is not self._decode:
            raise ConfigError(f"this request was prepared by another resource, not {type(self).__name__}")
        return self._transport.request(prepared, timeout=timeout, retry=retry)


class Products(_Resource[Product]):
    """``store.products``: *Update a product* (``PUT .../products/{product_id}.json``)."""

    __slots__ = ()

    def __init__(self, transport: StoreTransport, api_version: str) -> None:
        super().__init__(transport, api_version, decode_product)

    async def update(
        self,
        product_id: str,
        product: ProductUpdate | Mapping[str, Any],
        *,
        api_version: str | None = None,
        timeout: Timeout | None = None,
        retry: RetryPolicy | None = None,
        extra_headers: Mapping[str, str] | None = None,
    ) -> Product:
        """Update the product, creating it if it does not exist (upsert). Returns the product.

        ``extra_headers`` go with this call's requests (they cannot replace Authorization,
        Content-Type and the other headers the SDK sets). Raises ValidationError (nothing
        sent), an APIError subclass, or AppliedWithoutBodyError.
        """
        prepared = self.prepare(product_id, product, api_version=api_version)
        return (await self._request(prepared, timeout, retry, extra_headers)).data

    async def update_with_response(
        self,
        product_id: str,
        product: ProductUpdate | Mapping[str, Any],
        *,
        api_version: str | None = None,
        timeout: Timeout | None = None,
        retry: RetryPolicy | None = None,
        extra_headers: Mapping[str, str] | None = None,
    ) -> Response[Product]:
        """As :meth:`update`, returning the product with status, trace id, attempts and timing."""
        prepared = self.prepare(product_id, product, api_version=api_version)
        return await self._request(prepared, timeout, retry, extra_headers)

    def prepare(
        self, product_id: str, product: ProductUpdate | Mapping[str, Any], *, api_version: str | None = None
    ) -> PreparedRequest[Product]:
        """Validate and encode without sending. Raises ValidationError (or ConfigError for a bad version)."""
        segment = path_segment(product_id, "$.product_id")
        body = encode_product_update(product)
        path = f"/admin/openapi/{self._version(api_version)}/products/{segment}.json"
        return PreparedRequest("PUT", path, body, decode_product, (("id", product_id),))


class Images(_Resource[ProductImage]):
    """``store.images``: *Update a product image* (``PUT .../products/{product_id}/images/{image_id}.json``)."""

    __slots__ = ()

    def __init__(self, transport: StoreTransport, api_version: str) -> None:
        super().__init__(transport, api_version, decode_image)

    async def update(
        self,
        product_id: str,
        image_id: str,
        image: ImageUpdate | Mapping[str, Any],
        *,
        api_version: str | None = None,
        timeout: Timeout | None = None,
        retry: RetryPolicy | None = None,
        extra_headers: Mapping[str, str] | None = None,
    ) -> ProductImage:
        """Update the image's alt, position or variant. Returns the image.

        Raises ValidationError (nothing sent), NotFoundError if the image is not on the product,
        another APIError subclass, or AppliedWithoutBodyError. ``extra_headers`` as for products.
        """
        prepared = self.prepare(product_id, image_id, image, api_version=api_version)
        return (await self._request(prepared, timeout, retry, extra_headers)).data

    async def update_with_response(
        self,
        product_id: str,
        image_id: str,
        image: ImageUpdate | Mapping[str, Any],
        *,
        api_version: str | None = None,
        timeout: Timeout | None = None,
        retry: RetryPolicy | None = None,
        extra_headers: Mapping[str, str] | None = None,
    ) -> Response[ProductImage]:
        """As :meth:`update`, returning the image with status, trace id, attempts and timing."""
        prepared = self.prepare(product_id, image_id, image, api_version=api_version)
        return await self._request(prepared, timeout, retry, extra_headers)

    def prepare(
        self,
        product_id: str,
        image_id: str,
        image: ImageUpdate | Mapping[str, Any],
        *,
        api_version: str | None = None,
    ) -> PreparedRequest[ProductImage]:
        """Validate and encode without sending. Raises ValidationError (or ConfigError for a bad version)."""
        product_segment = path_segment(product_id, "$.product_id")
        image_segment = path_segment(image_id, "$.image_id")
        body = encode_image_update(image)
        path = f"/admin/openapi/{self._version(api_version)}/products/{product_segment}/images/{image_segment}.json"
        return PreparedRequest("PUT", path, body, decode_image, (("id", image_id), ("product_id", product_id)))
