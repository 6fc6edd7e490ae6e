"""Endpoint methods, bound to one store: products and product images."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ._codec import coerce_update, decode_image, decode_product, encode_image_update, encode_product_update
from ._config import RetryPolicy, Timeout
from ._response import Response
from ._transport import StoreTransport, check_api_version, path_segment
from .models._image import ImageUpdate, ProductImage
from .models._product import Product, ProductUpdate

__all__ = ["Images", "Products"]


class Products:
    """``store.products``: *Update a product* (``PUT .../products/{product_id}.json``)."""

    def __init__(self, transport: StoreTransport, api_version: str) -> None:
        self._transport = transport
        self._api_version = api_version

    async def update(
        self,
        product_id: str,
        product: ProductUpdate | Mapping[str, Any],
        *,
        api_version: str | None = None,
        timeout: Timeout | None = None,
        retry: RetryPolicy | None = None,
    ) -> Product:
        """Update the product, creating it if it does not exist (upsert). Returns the product.

        Raises ValidationError (nothing sent) or an APIError subclass.
        """
        return (
            await self.update_with_response(product_id, product, api_version=api_version, timeout=timeout, retry=retry)
        ).data

    async def update_with_response(
        self,
        product_id: str,
        product: ProductUpdate | Mapping[str, Any],
        *,
        api_version: str | None = None,
        timeout: Timeout | None = None,
        retry: RetryPolicy | None = None,
    ) -> Response[Product]:
        """As :meth:`update`, returning the product with status, trace id, attempts and timing."""
        path, body = self.prepare(product_id, product, api_version=api_version)
        return await self._transport.request("PUT", path, body, decode_product, timeout=timeout, retry=retry)

    def prepare(
        self, product_id: str, product: ProductUpdate | Mapping[str, Any], *, api_version: str | None = None
    ) -> tuple[str, bytes]:
        """Validate and encode without sending: the request path and body. Raises ValidationError."""
        segment = path_segment(product_id, "product_id")
        body = encode_product_update(coerce_update(product, ProductUpdate, "$.product"))
        version = self._api_version if api_version is None else check_api_version(api_version)
        return f"/admin/openapi/{version}/products/{segment}.json", body

    async def send(self, path: str, body: bytes, *, retry: RetryPolicy | None = None) -> Response[Product]:
        """Send what :meth:`prepare` returned."""
        return await self._transport.request("PUT", path, body, decode_product, retry=retry)


class Images:
    """``store.images``: *Update a product image* (``PUT .../products/{product_id}/images/{image_id}.json``)."""

    def __init__(self, transport: StoreTransport, api_version: str) -> None:
        self._transport = transport
        self._api_version = api_version

    async def update(
        self,
        product_id: str,
        image_id: str,
        image: ImageUpdate | Mapping[str, Any],
        *,
        api_version: str | None = None,
        timeout: Timeout | None = None,
        retry: RetryPolicy | None = None,
    ) -> ProductImage:
        """Update the image's alt, position or variant. Returns the image.

        Raises ValidationError (nothing sent), NotFoundError if the image is not on the product,
        or another APIError subclass.
        """
        return (
            await self.update_with_response(
                product_id, image_id, image, api_version=api_version, timeout=timeout, retry=retry
            )
        ).data

    async def update_with_response(
        self,
        product_id: str,
        image_id: str,
        image: ImageUpdate | Mapping[str, Any],
        *,
        api_version: str | None = None,
        timeout: Timeout | None = None,
        retry: RetryPolicy | None = None,
    ) -> Response[ProductImage]:
        """As :meth:`update`, returning the image with status, trace id, attempts and timing."""
        path, body = self.prepare(product_id, image_id, image, api_version=api_version)
        return await self._transport.request("PUT", path, body, decode_image, timeout=timeout, retry=retry)

    def prepare(
        self,
        product_id: str,
        image_id: str,
        image: ImageUpdate | Mapping[str, Any],
        *,
        api_version: str | None = None,
    ) -> tuple[str, bytes]:
        """Validate and encode without sending: the request path and body. Raises ValidationError."""
        product_segment = path_segment(product_id, "product_id")
        image_segment = path_segment(image_id, "image_id")
        body = encode_image_update(coerce_update(image, ImageUpdate, "$.image"))
        version = self._api_version if api_version is None else check_api_version(api_version)
        return f"/admin/openapi/{version}/products/{product_segment}/images/{image_segment}.json", body

    async def send(self, path: str, body: bytes, *, retry: RetryPolicy | None = None) -> Response[ProductImage]:
        """Send what :meth:`prepare` returned."""
        return await self._transport.request("PUT", path, body, decode_image, retry=retry)
