"""Annotated field types shared by the request models.

The constraints live on the types so that the models document the API's
limits, JSON input (the CLI's JSONL) is checked while it is decoded, and
``validate()`` checks objects built in Python against the very same rules.
"""

from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING, Annotated, Any, Literal

from msgspec import Meta

__all__ = [
    "Id",
    "Money",
    "PositiveMoney",
    "ReadOnly",
    "Str255",
    "Str400",
    "Str512",
]

Id = Annotated[str, Meta(min_length=1, max_length=64)]
Str255 = Annotated[str, Meta(max_length=255)]
Str400 = Annotated[str, Meta(max_length=400)]
Str512 = Annotated[str, Meta(max_length=512)]
# The docs say "Maximum size: 512 KB": counted in UTF-8 bytes, not characters.
Html = Annotated[str, Meta(extra={"max_bytes": 512 * 1024})]

if TYPE_CHECKING:
    # msgspec cannot decode into a union of str and Decimal (both come from a
    # JSON string), so at run time a Decimal is accepted by validate() alone.
    Money = str | int | float | Decimal
    PositiveMoney = str | int | float | Decimal
else:
    Money = Annotated[str | int | float, Meta(extra={"money": "non-negative"})]
    PositiveMoney = Annotated[str | int | float, Meta(extra={"money": "positive"})]

# A field the API returns but does not take (``created_at``, a variant's ``title``...): accepted so
# that a product fetched from the API can be sent back as it is, and never sent (dropped on encoding).
ReadOnly = Annotated[Any, Meta(extra={"read_only": True})]

ProductStatus = Literal["active", "draft", "archived"]
InventoryPolicy = Literal["deny", "continue"]
WeightUnit = Literal["g", "kg", "lb", "oz", "zh_kg"]
PublishedScope = Literal["web"]
