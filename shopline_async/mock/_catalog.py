"""One mock store's products, kept in the API's response shape, and how updates merge into them."""

from __future__ import annotations

import itertools
import re
import time
from datetime import datetime, timedelta, timezone
from decimal import ROUND_CEILING, ROUND_HALF_UP, Context, Decimal
from typing import Any

from msgspec import UNSET

from ..models._image import ImageUpdate
from ..models._product import ImageInput, OptionInput, ProductUpdate, VariantInput

__all__ = ["Catalog"]

_TZ = timezone(timedelta(hours=8))
_SCALARS = (
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
_VARIANT_SCALARS = (
    "barcode",
    "compare_at_price",
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
# prices are "rounded to two decimal places", a weight "rounded up if it exceeds two decimal places"
_MONEY = {"compare_at_price": ROUND_HALF_UP, "price": ROUND_HALF_UP, "weight": ROUND_CEILING}
_CENT = Decimal("0.01")
_OPTION_KEYS = ("option1", "option2", "option3", "option4", "option5")


_clock: tuple[int, str] = (0, "")


def _rounded(name: str, value: str) -> str:
    """Money as the server keeps it: two places. Validation has made it a plain decimal string."""
    if len(value) - value.find(".") == 3:  # already two places: the common case, no Decimal
        return value
    return str(Decimal(value).quantize(_CENT, rounding=_MONEY[name], context=Context(prec=len(value) + 3)))


def _now() -> str:
    """ISO 8601 to the second, as the API gives it; formatted once per second, not per request."""
    global _clock
    second = int(time.time())
    if _clock[0] != second:
        _clock = (second, datetime.fromtimestamp(second, _TZ).isoformat())
    return _clock[1]


def _slug(title: str | None) -> str:
    return re.sub(r"[^a-z0-9]+", "-", (title or "product").lower()).strip("-") or "product"


def _value(value: Any) -> Any:
    return None if value is UNSET else value


def _given(value: Any) -> bool:
    # Unset and explicit null both leave the stored value alone, as the API's own example
    # (which sends "status": null) implies; null never erases data.
    return value is not None and value is not UNSET


class Catalog:
    """Products by id; image and variant ids come from one counter per store."""

    def __init__(self, store_number: int) -> None:
        self.products: dict[str, dict[str, Any]] = {}
        # paths keep `path`, which the API accepts but does not return
        self._image_meta: dict[str, dict[str, Any]] = {}
        self._ids = itertools.count(1)
        self._prefix = f"{store_number:03d}"

    def _new_id(self, kind: str) -> str:
        return f"{kind}{self._prefix}{next(self._ids):015d}"

    def upsert(self, product_id: str, update: ProductUpdate) -> dict[str, Any]:
        """Merge ``update`` into the product (creating it if need be) and return it. ``path`` is
        accepted but, as in the API's response, not kept."""
        # read straight off the validated struct: no intermediate dicts on the mock's hot path
        now = _now()
        product = self.products.get(product_id)
        created = product is None
        if product is None:
            product = self.products[product_id] = self._new_product(product_id, now)
        for name in _SCALARS:
            value = getattr(update, name)
            if value is not None and value is not UNSET:
                product[name] = value
        if isinstance(update.tags, list):
            product["tags"] = ",".join(update.tags)
        if isinstance(update.images, list):
            product["images"] = [self._merge_image(product["images"], i) for i in update.images]
        if isinstance(update.variants, list):
            product["variants"] = [self._merge_variant(product, v, now) for v in update.variants]
        if not product["variants"]:
            product["variants"] = [self._merge_variant(product, VariantInput(), now)]
        if isinstance(update.options, list):
            product["options"] = [self._merge_option(product, o) for o in update.options]
        if created or update.options is not UNSET or update.variants is not UNSET:
            self._refresh_options(product)
        if product["handle"] is None:
            product["handle"] = _slug(product["title"])
        if product["status"] == "active" and product["published_at"] is None:
            product["published_at"] = now
        product["image"] = self._embedded(product["images"][0]) if product["images"] else None
        product["updated_at"] = now
        return product

    @staticmethod
    def _new_product(product_id: str, now: str) -> dict[str, Any]:
        return {
            "body_html": None,
            "created_at": now,
            "handle": None,
            "id": product_id,
            "image": None,
            "images": [],
            "options": [],
            "product_behavior": "",
            "product_category": None,
            "product_type": "NORMAL",
            "published_at": None,
            "published_scope": "web",
            "spu": None,
            "status": "draft",
            "subtitle": None,
            "tags": "",
            "template_path": None,
            "title": None,
            "updated_at": now,
            "variants": [],
            "vendor": None,
        }

    def _merge_image(self, existing: list[dict[str, Any]], image: ImageInput) -> dict[str, Any]:
        image_id, src = _value(image.id), _value(image.src)
        match = None
        for stored in existing:  # a plain loop: a handful of images, and no generator to set up
            if (image_id is not None and stored["id"] == image_id) or (image_id is None and stored["src"] == src):
                match = stored
                break
        # stored dicts are the mock's own: updated in place rather than copied
        merged = match or {"alt": None, "id": image_id or self._new_id("6"), "src": None}
        if _given(image.alt):
            merged["alt"] = image.alt
        if src is not None:
            merged["src"] = src
        return merged

    def _merge_option(self, product: dict[str, Any], option: OptionInput) -> dict[str, Any]:
        name = _value(option.name)
        match = None
        for stored in product["options"]:
            if stored["name"] == name:
                match = stored
                break
        merged = match or {"id": self._new_id("161"), "name": None, "values_images": {}}
        merged["product_id"] = product["id"]
        if name is not None:
            merged["name"] = name
        if isinstance(option.values_images, dict):
            merged["values_images"] = dict(option.values_images)
        return merged

    def _refresh_options(self, product: dict[str, Any]) -> None:
        variants = product["variants"]
        for key, option in zip(_OPTION_KEYS, product["options"], strict=False):  # most products have fewer than five
            values = list(dict.fromkeys([v[key] for v in variants if v[key] is not None]))
            if values == option.get("values"):
                continue  # the same values as before: their ids stand
            known = {ov["value"]: ov["id"] for ov in option.get("option_value", [])}
            option["values"] = values
            option["option_value"] = [{"id": known.get(v) or self._new_id("162"), "value": v} for v in values]

    def _merge_variant(self, product: dict[str, Any], variant: VariantInput, now: str) -> dict[str, Any]:
        variant_id = _value(variant.id)
        merged = None
        if variant_id is not None:
            for stored in product["variants"]:
                if stored["id"] == variant_id:
                    merged = stored
                    break
        if merged is None:
            merged = self._new_variant(product["id"], variant_id, now)
        for name in _VARIANT_SCALARS:
            value = getattr(variant, name)
            if value is not None and value is not UNSET:
                merged[name] = _rounded(name, value) if name in _MONEY else value
        if isinstance(variant.image, ImageInput):
            merged["image"] = self._embedded(self._merge_image(product["images"], variant.image))
        values = [merged[k] for k in _OPTION_KEYS if merged[k] is not None]
        merged["title"] = " · ".join(values) if values else "Default Title"
        merged["updated_at"] = now
        return merged

    def _new_variant(self, product_id: str, variant_id: str | None, now: str) -> dict[str, Any]:
        return {
            "barcode": None,
            "compare_at_price": "0.00",
            "created_at": now,
            "id": variant_id or self._new_id("18"),
            "image": None,
            "inventory_item_id": self._new_id("57"),
            "inventory_policy": "deny",
            "inventory_quantity": 0,
            "inventory_tracker": True,
            "option1": None,
            "option2": None,
            "option3": None,
            "option4": None,
            "option5": None,
            "price": "0.00",
            "product_id": product_id,
            "required_shipping": True,
            "sku": None,
            "taxable": True,
            "title": "Default Title",
            "updated_at": now,
            "weight": None,
            "weight_unit": "g",
        }

    def update_image(self, product_id: str, image_id: str, update: ImageUpdate) -> dict[str, Any] | None:
        """The updated image, or None if the product has no such image."""
        product = self.products.get(product_id)
        if product is None:
            return None
        images: list[dict[str, Any]] = product["images"]
        index = next((n for n, i in enumerate(images) if i["id"] == image_id), None)
        if index is None:
            return None
        image = images[index]
        if _given(update.alt):
            image["alt"] = update.alt
        if _given(update.position):
            # positions are 1-based, the order of product.images: moving one reorders the list
            images.pop(index)
            index = min(max(update.position - 1, 0), len(images))  # type: ignore[operator]
            images.insert(index, image)
        now = _now()
        # what the product JSON does not carry lives beside it, so products are stored as served
        meta = self._image_meta.setdefault(image["id"], {"create_time": product["created_at"], "sku_id": None})
        if _given(update.sku_id):
            meta["sku_id"] = update.sku_id
        product["image"] = self._embedded(images[0])
        return {
            "alt": image["alt"],
            "create_time": meta["create_time"],
            "height": 1024,
            "id": image["id"],
            "position": index + 1,
            "product_id": product_id,
            "sku_id": meta["sku_id"],
            "src": image["src"],
            "update_time": now,
            "width": 1024,
        }

    @staticmethod
    def _embedded(image: dict[str, Any]) -> dict[str, Any]:
        """An image as products and variants embed it: alt, id, src."""
        return {"alt": image["alt"], "id": image["id"], "src": image["src"]}
