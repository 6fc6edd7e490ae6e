"""Image models: the ``ImageUpdate`` request body and the ``ProductImage`` response."""

from __future__ import annotations

from typing import Annotated, Any

from msgspec import UNSET, Meta, Struct, UnsetType

from ._types import Id, ReadOnly, Str512

__all__ = ["ImageUpdate", "ProductImage"]


class ImageUpdate(Struct, forbid_unknown_fields=True, omit_defaults=True, kw_only=True, repr_omit_defaults=True):
    """The body of *Update a product image*. Only the fields you set are sent.

    ``position`` is 1-based; ``sku_id`` is the id of the variant the image belongs to.
    """

    alt: Str512 | UnsetType | None = UNSET
    position: Annotated[int, Meta(ge=1)] | UnsetType | None = UNSET
    sku_id: Id | UnsetType | None = UNSET
    # returned by the API, not taken: accepted for round trips, never sent
    create_time: ReadOnly | UnsetType = UNSET
    height: ReadOnly | UnsetType = UNSET
    id: ReadOnly | UnsetType = UNSET
    product_id: ReadOnly | UnsetType = UNSET
    src: ReadOnly | UnsetType = UNSET
    update_time: ReadOnly | UnsetType = UNSET
    width: ReadOnly | UnsetType = UNSET

    @classmethod
    def from_image(cls, image: ProductImage) -> ImageUpdate:
        """The update that sets what ``image`` has (alt, position, sku_id), for a round trip.

        Fields the API returned as null or left out are not sent.
        """
        return cls(**_given(image, ("alt", "position", "sku_id")))


def _given(source: Struct, names: tuple[str, ...]) -> dict[str, Any]:
    return {name: value for name in names if (value := getattr(source, name)) is not None}


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
