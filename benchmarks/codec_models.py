"""pydantic v2 mirrors of the product models, for the codec comparison only."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class _Req(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PImageInput(_Req):
    alt: str | None = Field(None, max_length=512)
    id: str | None = Field(None, max_length=64)
    src: str | None = Field(None, max_length=255)


class POptionInput(_Req):
    name: str | None = Field(None, max_length=255)
    values_images: dict[str, str] | None = None


class PVariantInput(_Req):
    barcode: str | None = Field(None, max_length=255)
    compare_at_price: str | None = None
    id: str | None = Field(None, max_length=64)
    image: PImageInput | None = None
    inventory_policy: str | None = None
    inventory_tracker: bool | None = None
    option1: str | None = Field(None, max_length=255)
    option2: str | None = Field(None, max_length=255)
    option3: str | None = Field(None, max_length=255)
    option4: str | None = Field(None, max_length=255)
    option5: str | None = Field(None, max_length=255)
    price: str | None = None
    required_shipping: bool | None = None
    sku: str | None = Field(None, max_length=255)
    taxable: bool | None = None
    weight: str | None = None
    weight_unit: str | None = None


class PProductUpdate(_Req):
    body_html: str | None = None
    handle: str | None = Field(None, max_length=255)
    images: list[PImageInput] | None = Field(None, max_length=502)
    options: list[POptionInput] | None = Field(None, max_length=5)
    path: str | None = Field(None, max_length=512)
    product_category: str | None = Field(None, max_length=255)
    published_scope: str | None = None
    spu: str | None = Field(None, max_length=255)
    status: str | None = None
    subtitle: str | None = Field(None, max_length=400)
    tags: list[str] | None = Field(None, max_length=250)
    template_path: str | None = None
    title: str | None = Field(None, max_length=255)
    variants: list[PVariantInput] | None = Field(None, max_length=500)
    vendor: str | None = Field(None, max_length=255)


class PProductUpdateBody(_Req):
    product: PProductUpdate


class PImage(BaseModel):
    alt: str | None = None
    id: str | None = None
    src: str | None = None


class POptionValue(BaseModel):
    id: str | None = None
    value: str | None = None


class POption(BaseModel):
    id: str | None = None
    name: str | None = None
    option_value: list[POptionValue] | None = None
    product_id: str | None = None
    values: list[str] | None = None
    values_images: dict[str, str] | None = None


class PVariant(BaseModel):
    barcode: str | None = None
    compare_at_price: str | None = None
    created_at: str | None = None
    id: str | None = None
    image: PImage | None = None
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


class PProduct(BaseModel):
    body_html: str | None = None
    created_at: str | None = None
    handle: str | None = None
    id: str | None = None
    image: PImage | None = None
    images: list[PImage] | None = None
    options: list[POption] | None = None
    product_behavior: str | None = None
    product_category: str | None = None
    product_type: str | None = None
    published_at: str | None = None
    published_scope: str | None = None
    spu: str | None = None
    status: str | None = None
    subtitle: str | None = None
    tags: str | list[str] | None = None
    template_path: str | None = None
    title: str | None = None
    updated_at: str | None = None
    variants: list[PVariant] | None = None
    vendor: str | None = None


class PProductBody(BaseModel):
    product: PProduct
