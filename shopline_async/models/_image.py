"""Image models: the ``ImageUpdate`` request body and the ``ProductImage`` response."""

from __future__ import annotations

from typing import Annotated

from msgspec import UNSET, Meta, Struct, UnsetType

from ._types import Id, Str512

__all__ = ["ImageUpdate", "ProductImage"]


class ImageUpdate(Struct, forbid_unknown_fields=True, omit_defaults=True, kw_only=True, repr_omit_defaults=True):
    """The body of *Update a product image*. Only the fields you set are sent.

    ``position`` is 1-based; ``sku_id`` is the id of the variant the image belongs to.
    """

    alt: Str512 | UnsetType | None = UNSET
    position: Annotated[int, Meta(ge=1)] | UnsetType | None = UNSET
    sku_id: Id | UnsetType | None = UNSET


class ProductImage(Struct, kw_only=True, gc=False):  # only scalars: nothing for the GC to walk
    """A product image as returned by *Update a product image*."""

    alt: str | None = None
    create_time: str | None = None
    height: int | None = None
    id: str | None = None
    position: int | None = None
    product_id: str | None = None
    sku_id: str | None = None
    src: str | None = None
    update_time: str | None = None
    width: int | None = None
