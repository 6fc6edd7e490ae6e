"""A careful user's own validation: plain msgspec Structs carrying the reference page's limits.

What someone writing the client themselves with aiohttp and msgspec would do at the least to
refuse a bad update before sending it: ``msgspec.convert`` the catalog's dict into these Structs
(types, lengths, counts, unknown fields refused), then ``msgspec.json.encode`` the envelope. No
money normalisation, no enum or cross-field checks, no error paths: the base the issue's
instruction target measures the SDK against (``instructions.py``'s ``careful`` loop).
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec

Str64 = Annotated[str, msgspec.Meta(max_length=64)]
Str255 = Annotated[str, msgspec.Meta(max_length=255)]
Str512 = Annotated[str, msgspec.Meta(max_length=512)]


class _Input(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    pass


class ImageInput(_Input):
    alt: Str512 | None = None
    id: Str64 | None = None
    src: Str255 | None = None


class OptionInput(_Input):
    name: Str255 | None = None
    values_images: dict[str, str] | None = None


class VariantInput(_Input):
    barcode: Str255 | None = None
    compare_at_price: str | None = None
    id: Str64 | None = None
    image: ImageInput | None = None
    inventory_policy: str | None = None
    inventory_tracker: bool | None = None
    option1: Str255 | None = None
    option2: Str255 | None = None
    option3: Str255 | None = None
    option4: Str255 | None = None
    option5: Str255 | None = None
    price: str | None = None
    required_shipping: bool | None = None
    sku: Str255 | None = None
    taxable: bool | None = None
    weight: str | None = None
    weight_unit: str | None = None


class ProductInput(_Input):
    body_html: str | None = None
    handle: Str255 | None = None
    images: Annotated[list[ImageInput], msgspec.Meta(max_length=502)] | None = None
    options: Annotated[list[OptionInput], msgspec.Meta(max_length=5)] | None = None
    path: Str512 | None = None
    product_category: Str255 | None = None
    published_scope: str | None = None
    spu: Str255 | None = None
    status: str | None = None
    subtitle: Annotated[str, msgspec.Meta(max_length=400)] | None = None
    tags: Annotated[list[str], msgspec.Meta(max_length=250)] | None = None
    template_path: str | None = None
    title: Str255 | None = None
    variants: Annotated[list[VariantInput], msgspec.Meta(max_length=500)] | None = None
    vendor: Str255 | None = None


class ProductBody(msgspec.Struct, omit_defaults=True):
    product: ProductInput


_encode = msgspec.json.Encoder().encode


def careful_encode(update: dict[str, Any]) -> bytes:
    """The update checked against the limits and encoded in its envelope; raises on a bad one."""
    return _encode(ProductBody(msgspec.convert(update, ProductInput)))
