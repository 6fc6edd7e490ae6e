"""An independent reading of the two reference pages (../shared/spec/), for property tests.

Written from the pages' field lists, not from the SDK's models or validators, so that a test can
ask "does the SDK agree with the spec?" instead of "does the SDK agree with itself?". It knows
JSON only: give it a request body as ``json.loads`` returns it.

Readings where a page is terse: "Maximum length" counts characters; body_html's "Maximum size:
512 KB" counts UTF-8 bytes (a size, not a length); spu's and sku's "Maximum size: 255" are
string fields, so characters; money fields are strings holding a decimal number that the server
rounds to two places ("The value is rounded to two decimal places"), never negative, and weight
"is required to be greater than 0"; ``null`` clears a field, so it is accepted anywhere.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

__all__ = ["image_update_violations", "product_update_violations"]

Check = Callable[[Any, str, list[str]], None]

_DECIMAL = re.compile(r"[0-9]+(\.[0-9]+)?")


def text(max_length: int | None = None, *, max_utf8_bytes: int | None = None) -> Check:
    def check(value: Any, path: str, out: list[str]) -> None:
        if (
            not isinstance(value, str)
            or (max_length is not None and len(value) > max_length)
            or (max_utf8_bytes is not None and len(value.encode()) > max_utf8_bytes)
        ):
            out.append(path)

    return check


def one_of(*allowed: str) -> Check:
    def check(value: Any, path: str, out: list[str]) -> None:
        if value not in allowed:
            out.append(path)

    return check


def boolean(value: Any, path: str, out: list[str]) -> None:
    if not isinstance(value, bool):
        out.append(path)


def integer(value: Any, path: str, out: list[str]) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        out.append(path)


def money(*, positive: bool) -> Check:
    def check(value: Any, path: str, out: list[str]) -> None:
        if not isinstance(value, str) or not _DECIMAL.fullmatch(value) or (positive and float(value) <= 0):
            out.append(path)

    return check


def array(max_items: int, item: Check) -> Check:
    def check(value: Any, path: str, out: list[str]) -> None:
        if not isinstance(value, list):
            out.append(path)
            return
        if len(value) > max_items:
            out.append(path)
        for index, element in enumerate(value):
            if element is not None:
                item(element, f"{path}[{index}]", out)

    return check


def string_map(value: Any, path: str, out: list[str]) -> None:
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        out.append(path)


def obj(fields: dict[str, Check]) -> Check:
    def check(value: Any, path: str, out: list[str]) -> None:
        if not isinstance(value, dict):
            out.append(path)
            return
        for name, field_value in value.items():
            if name not in fields:
                out.append(f"{path}.{name}")  # no such request field on the page
            elif field_value is not None:
                fields[name](field_value, f"{path}.{name}", out)

    return check


# --- Update a product (v20260601), "Request Body" ------------------------------------------------

_image = obj({"alt": text(512), "id": text(64), "src": text(255)})
_variant = obj(
    {
        "barcode": text(255),
        "compare_at_price": money(positive=False),
        "id": text(64),
        "image": _image,
        "inventory_policy": one_of("deny", "continue"),
        "inventory_tracker": boolean,
        **{f"option{n}": text(255) for n in range(1, 6)},
        "price": money(positive=False),
        "required_shipping": boolean,
        "sku": text(255),
        "taxable": boolean,
        "weight": money(positive=True),
        "weight_unit": one_of("g", "kg", "lb", "oz", "zh_kg"),
    }
)
_product = obj(
    {
        "body_html": text(max_utf8_bytes=512 * 1024),
        "handle": text(255),
        "images": array(502, _image),
        "options": array(5, obj({"name": text(255), "values_images": string_map})),
        "path": text(512),
        "product_category": text(255),
        "published_scope": one_of("web"),
        "spu": text(255),
        "status": one_of("active", "draft", "archived"),
        "subtitle": text(400),
        "tags": array(250, text(255)),
        "template_path": text(),
        "title": text(255),
        "variants": array(500, _variant),
        "vendor": text(255),
    }
)

# --- Update a product image (v20250601), "Request Body" ------------------------------------------

_image_update = obj({"alt": text(512), "position": integer, "sku_id": text()})


def _violations(body: Any, key: str, check: Check) -> list[str]:
    out: list[str] = []
    if not isinstance(body, dict) or set(body) != {key}:
        return ["$"]
    if body[key] is None:
        return [f"$.{key}"]
    check(body[key], f"$.{key}", out)
    return out


def product_update_violations(body: Any) -> list[str]:
    """JSON paths in an *Update a product* body that the reference page does not allow."""
    return _violations(body, "product", _product)


def image_update_violations(body: Any) -> list[str]:
    """JSON paths in an *Update a product image* body that the reference page does not allow."""
    return _violations(body, "image", _image_update)
