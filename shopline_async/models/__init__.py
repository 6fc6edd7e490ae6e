"""msgspec models for the product and product-image endpoints."""

from ._image import ImageUpdate, ProductImage
from ._product import (
    Image,
    ImageInput,
    Option,
    OptionInput,
    OptionValue,
    Product,
    ProductUpdate,
    Variant,
    VariantInput,
)
from ._validate import normalise_money, validate

__all__ = [
    "Image",
    "ImageInput",
    "ImageUpdate",
    "Option",
    "OptionInput",
    "OptionValue",
    "Product",
    "ProductImage",
    "ProductUpdate",
    "Variant",
    "VariantInput",
    "normalise_money",
    "validate",
]
