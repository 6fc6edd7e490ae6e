"""Product models: the ``ProductUpdate`` request body and the ``Product`` response.

Request models send only what the caller set: every field defaults to
``UNSET`` and is left out of the JSON; pass ``None`` to send an explicit null.
Response models decode leniently: unknown fields are ignored, a field may be missing or null
(a list then reads as empty), a number where text is expected (``"id": 16``, ``"price": 10.10``)
reads as its decimal text, and enum-like fields stay plain strings.
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from msgspec import UNSET, Meta, Struct, UnsetType

from ._types import (
    Html,
    Id,
    InventoryPolicy,
    Money,
    PositiveMoney,
    ProductStatus,
    PublishedScope,
    ReadOnly,
    Str255,
    Str400,
    Str512,
    WeightUnit,
)

__all__ = [
    "Image",
    "ImageInput",
    "Option",
    "OptionInput",
    "OptionValue",
    "Product",
    "ProductUpdate",
    "Variant",
    "VariantInput",
]


class _Request(Struct, forbid_unknown_fields=True, omit_defaults=True, kw_only=True, repr_omit_defaults=True):
    pass


# gc=False: decoded responses hold only strings, numbers and each other, never a cycle, and a batch
# that keeps thousands of them (BatchExecutor.gather) otherwise pays for the GC walking them all
class _Response(Struct, kw_only=True, gc=False):
    pass


# --- request ---------------------------------------------------------------


class ImageInput(_Request):
    """A product image in a product update (``product.images[]``, ``variants[].image``)."""

    alt: Str512 | UnsetType | None = UNSET
    id: Id | UnsetType | None = UNSET
    src: Str255 | UnsetType | None = UNSET


class OptionInput(_Request):
    """A product option (``product.options[]``): its name and option-value -> image URL map."""

    name: Str255 | UnsetType | None = UNSET
    values_images: dict[Str255, str] | UnsetType | None = UNSET
    # returned by the API, not taken: accepted for round trips, never sent
    id: ReadOnly | UnsetType = UNSET
    option_value: ReadOnly | UnsetType = UNSET
    product_id: ReadOnly | UnsetType = UNSET
    values: ReadOnly | UnsetType = UNSET


class VariantInput(_Request):
    """A product variant in a product update (``product.variants[]``).

    Prices and weight accept ``Decimal``, ``int``, ``float`` or a decimal string; they are sent as
    strings with two places (``"90.22"``), or with more exactly as given, for the server to round.
    """

    barcode: Str255 | UnsetType | None = UNSET
    compare_at_price: Money | UnsetType | None = UNSET
    id: Id | UnsetType | None = UNSET
    image: ImageInput | UnsetType | None = UNSET
    inventory_policy: InventoryPolicy | UnsetType | None = UNSET
    inventory_tracker: bool | UnsetType | None = UNSET
    option1: Str255 | UnsetType | None = UNSET
    option2: Str255 | UnsetType | None = UNSET
    option3: Str255 | UnsetType | None = UNSET
    option4: Str255 | UnsetType | None = UNSET
    option5: Str255 | UnsetType | None = UNSET
    price: Money | UnsetType | None = UNSET
    required_shipping: bool | UnsetType | None = UNSET
    sku: Str255 | UnsetType | None = UNSET
    taxable: bool | UnsetType | None = UNSET
    weight: PositiveMoney | UnsetType | None = UNSET
    weight_unit: WeightUnit | UnsetType | None = UNSET
    # returned by the API, not taken: accepted for round trips, never sent
    created_at: ReadOnly | UnsetType = UNSET
    inventory_item_id: ReadOnly | UnsetType = UNSET
    inventory_quantity: ReadOnly | UnsetType = UNSET
    product_id: ReadOnly | UnsetType = UNSET
    title: ReadOnly | UnsetType = UNSET
    updated_at: ReadOnly | UnsetType = UNSET


class ProductUpdate(_Request):
    """The body of *Update a product* (an upsert). Only the fields you set are sent.

    >>> ProductUpdate(title="x")  # encodes to {"product":{"title":"x"}}
    """

    body_html: Html | UnsetType | None = UNSET
    handle: Str255 | UnsetType | None = UNSET
    images: Annotated[list[ImageInput], Meta(max_length=502)] | UnsetType | None = UNSET
    options: Annotated[list[OptionInput], Meta(max_length=5)] | UnsetType | None = UNSET
    path: Str512 | UnsetType | None = UNSET
    product_category: Str255 | UnsetType | None = UNSET
    published_scope: PublishedScope | UnsetType | None = UNSET
    spu: Str255 | UnsetType | None = UNSET
    status: ProductStatus | UnsetType | None = UNSET
    subtitle: Str400 | UnsetType | None = UNSET
    tags: Annotated[list[Str255], Meta(max_length=250)] | UnsetType | None = UNSET
    template_path: str | UnsetType | None = UNSET
    title: Str255 | UnsetType | None = UNSET
    variants: Annotated[list[VariantInput], Meta(max_length=500)] | UnsetType | None = UNSET
    vendor: Str255 | UnsetType | None = UNSET
    # returned by the API, not taken: accepted so that a product the API returned can be sent back
    # as it is (the reference page's own example request carries them), and never sent
    activated_at: ReadOnly | UnsetType = UNSET
    created_at: ReadOnly | UnsetType = UNSET
    id: ReadOnly | UnsetType = UNSET
    image: ReadOnly | UnsetType = UNSET
    product_behavior: ReadOnly | UnsetType = UNSET
    product_type: ReadOnly | UnsetType = UNSET
    published_at: ReadOnly | UnsetType = UNSET
    updated_at: ReadOnly | UnsetType = UNSET

    @classmethod
    def from_product(cls, product: Product) -> ProductUpdate:
        """The update that sets everything writable ``product`` has, for a fetch-change-send round trip.

        >>> update = ProductUpdate.from_product(product)
        >>> update.title = "New title"

        Fields the API returned as null or left out are not sent (a round trip never clears one);
        read-only fields (ids of options, timestamps, a variant's title) are not copied. Tags
        come back as one comma-separated string and go out as a list.
        """
        fields = _given(product, _PRODUCT_WRITABLE)
        if product.tags_raw is not None:
            fields["tags"] = product.tags
        # an empty list is what a missing one reads as: not sent, as a null field is not
        if product.images:
            fields["images"] = [ImageInput(**_given(image, _IMAGE_WRITABLE)) for image in product.images]
        if product.options:
            fields["options"] = [OptionInput(**_given(option, ("name", "values_images"))) for option in product.options]
        if product.variants:
            fields["variants"] = [_variant_input(variant) for variant in product.variants]
        return cls(**fields)


# --- response --------------------------------------------------------------


class Image(_Response):
    """An image as embedded in a product or variant."""

    alt: str | None = None
    id: str | None = None
    src: str | None = None


class OptionValue(_Response):
    """One value of a product option, with its id."""

    id: str | None = None
    value: str | None = None


class Option(_Response):
    """A product option (e.g. Color): its values and the value -> image URL map."""

    id: str | None = None
    name: str | None = None
    option_value: list[OptionValue] = msgspec.field(default_factory=list)
    product_id: str | None = None
    values: list[str] = msgspec.field(default_factory=list)
    values_images: dict[str, str] | None = None


class Variant(_Response):
    """A product variant as returned by the API; ``title`` is assembled from its option values."""

    barcode: str | None = None
    compare_at_price: str | None = None
    created_at: str | None = None
    id: str | None = None
    image: Image | None = None
    inventory_item_id: str | None = None
    inventory_policy: str | None = None
    inventory_quantity: int | None = None
    inventory_tracker: bool | None = None
    option1: str | None = None
    option2: str | None = None
    option3: str | None = None
    option4: str | None = None
    option5: str | None = None
    price: str | None = None
    product_id: str | None = None
    required_shipping: bool | None = None
    sku: str | None = None
    taxable: bool | None = None
    title: str | None = None
    updated_at: str | None = None
    weight: str | None = None
    weight_unit: str | None = None


class Product(_Response):
    """A product as returned by the API. ``tags`` is a list; the API sends one comma-separated string."""

    body_html: str | None = None
    created_at: str | None = None
    handle: str | None = None
    id: str | None = None
    image: Image | None = None
    images: list[Image] = msgspec.field(default_factory=list)
    options: list[Option] = msgspec.field(default_factory=list)
    product_behavior: str | None = None
    product_category: str | None = None
    product_type: str | None = None
    published_at: str | None = None
    published_scope: str | None = None
    spu: str | None = None
    status: str | None = None
    subtitle: str | None = None
    tags_raw: str | list[str] | None = msgspec.field(default=None, name="tags")
    template_path: str | None = None
    title: str | None = None
    updated_at: str | None = None
    variants: list[Variant] = msgspec.field(default_factory=list)
    vendor: str | None = None

    @property
    def tags(self) -> list[str]:
        """The tags as a list (split from the API's comma-separated string, blanks dropped)."""
        raw = self.tags_raw
        if raw is None:
            return []
        parts = raw.split(",") if isinstance(raw, str) else raw
        return [tag.strip() for tag in parts if tag and tag.strip()]


_PRODUCT_WRITABLE = (
    "body_html",
    "handle",
    "product_category",
    "published_scope",
    "spu",
    "status",
    "subtitle",
    "template_path",
    "title",
    "vendor",
)
_IMAGE_WRITABLE = ("alt", "id", "src")
_VARIANT_WRITABLE = (
    "barcode",
    "compare_at_price",
    "id",
    "inventory_policy",
    "inventory_tracker",
    "option1",
    "option2",
    "option3",
    "option4",
    "option5",
    "price",
    "required_shipping",
    "sku",
    "taxable",
    "weight",
    "weight_unit",
)


def _given(source: msgspec.Struct, names: tuple[str, ...]) -> dict[str, Any]:
    return {name: value for name in names if (value := getattr(source, name)) is not None}


def _variant_input(variant: Variant) -> VariantInput:
    fields = _given(variant, _VARIANT_WRITABLE)
    if variant.image is not None:
        fields["image"] = ImageInput(**_given(variant.image, _IMAGE_WRITABLE))
    return VariantInput(**fields)
