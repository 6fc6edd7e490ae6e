"""One mock store's products, kept in the API's response shape, and how updates merge into them."""

from __future__ import annotations

import itertools
import re
from datetime import datetime, timedelta, timezone
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
_OPTION_KEYS = ("option1", "option2", "option3", "option4", "option5")


def _now() -> str:
    return datetime.now(_TZ).replace(microsecond=0).isoformat()


def _slug(title: str | None) -> str:
    return re.sub(r"[^a-z0-9]+", "-", (title or "product").lower()).strip("-") or "product"


def _given(value: Any) -> bool:
    # Unset and explicit null both leave the stored value alone, as the API's own example
    # (which sends "status": null) implies; null never erases data.
    return value is not None and value is not UNSET


class Catalog:
    """Products by id; image and variant ids come from one counter per store."""

    def __init__(self, store_number: int) -> None:
        self.products: dict[str, dict[str, Any]] = {}
        # paths keep `path`, which the API accepts but does not return
        self._paths: dict[str, str] = {}
        self._ids = itertools.count(1)
        self._prefix = f"{store_number:03d}"

    def _new_id(self, kind: str) -> str:
        return f"{kind}{self._prefix}{next(self._ids):015d}"

    def upsert(self, product_id: str, update: ProductUpdate) -> tuple[dict[str, Any], bool]:
        """Merge ``update`` into the product (creating it); returns it and whether it was created."""
        now = _now()
        product = self.products.get(product_id)
        created = product is None
        if product is None:
            product = {
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
        for name in _SCALARS:
            value = getattr(update, name)
            if _given(value):
                product[name] = value
        if _given(update.path):
            self._paths[product_id] = update.path  # type: ignore[assignment]
        if _given(update.tags):
            product["tags"] = ",".join(update.tags)  # type: ignore[arg-type]
        if _given(update.images):
            product["images"] = [self._merge_image(product["images"], i) for i in update.images]  # type: ignore[union-attr]
        if _given(update.variants):
            product["variants"] = [
                self._merge_variant(product, v, now)
                for v in update.variants  # type: ignore[union-attr]
            ]
        if not product["variants"]:
            product["variants"] = [self._merge_variant(product, VariantInput(), now)]
        if _given(update.options):
            product["options"] = [self._merge_option(product, o) for o in update.options]  # type: ignore[union-attr]
        self._refresh_options(product)
        if product["handle"] is None:
            product["handle"] = _slug(product["title"])
        if product["status"] == "active" and product["published_at"] is None:
            product["published_at"] = now
        product["image"] = self._embedded(product["images"][0]) if product["images"] else None
        product["updated_at"] = now
        self.products[product_id] = product
        return product, created

    def _merge_image(self, existing: list[dict[str, Any]], image: ImageInput) -> dict[str, Any]:
        match = next((i for i in existing if _given(image.id) and i["id"] == image.id), None)
        if match is None and _given(image.src):
            match = next((i for i in existing if i["src"] == image.src), None)
        new_id = image.id if _given(image.id) else self._new_id("6")
        merged = dict(match) if match else {"alt": None, "id": new_id, "src": None, "position": None}
        for name in ("alt", "src"):
            value = getattr(image, name)
            if _given(value):
                merged[name] = value
        return merged

    def _merge_option(self, product: dict[str, Any], option: OptionInput) -> dict[str, Any]:
        match = next((o for o in product["options"] if o["name"] == option.name), None)
        merged = dict(match) if match else {"id": self._new_id("161"), "name": None, "values_images": {}}
        merged["product_id"] = product["id"]
        if _given(option.name):
            merged["name"] = option.name
        if _given(option.values_images):
            merged["values_images"] = dict(option.values_images)  # type: ignore[arg-type]
        return merged

    def _refresh_options(self, product: dict[str, Any]) -> None:
        for index, option in enumerate(product["options"][: len(_OPTION_KEYS)]):
            key = _OPTION_KEYS[index]
            values = list(dict.fromkeys(v[key] for v in product["variants"] if v.get(key) is not None))
            known = {ov["value"]: ov["id"] for ov in option.get("option_value", [])}
            option["values"] = values
            option["option_value"] = [{"id": known.get(v) or self._new_id("162"), "value": v} for v in values]

    def _merge_variant(self, product: dict[str, Any], variant: VariantInput, now: str) -> dict[str, Any]:
        match = next((v for v in product["variants"] if _given(variant.id) and v["id"] == variant.id), None)
        merged = (
            dict(match)
            if match
            else {
                "barcode": None,
                "compare_at_price": "0.00",
                "created_at": now,
                "id": variant.id if _given(variant.id) else self._new_id("18"),
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
                "product_id": product["id"],
                "required_shipping": True,
                "sku": None,
                "taxable": True,
                "title": "Default Title",
                "updated_at": now,
                "weight": None,
                "weight_unit": "g",
            }
        )
        for name in _VARIANT_SCALARS:
            value = getattr(variant, name)
            if _given(value):
                merged[name] = value
        if _given(variant.image):
            image = self._merge_image(product["images"], variant.image)  # type: ignore[arg-type]
            merged["image"] = self._embedded(image)
        values = [merged[k] for k in _OPTION_KEYS if merged[k] is not None]
        merged["title"] = " · ".join(values) if values else "Default Title"
        merged["updated_at"] = now
        return merged

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
        if _given(update.sku_id):
            image["sku_id"] = update.sku_id
        if _given(update.position):
            # positions are 1-based; moving an image reorders the list as the admin does
            images.pop(index)
            images.insert(min(max(update.position - 1, 0), len(images)), image)  # type: ignore[operator]
        for n, i in enumerate(images, start=1):
            i["position"] = n
        now = _now()
        image["update_time"] = now
        product["image"] = self._embedded(images[0])
        return {
            "alt": image["alt"],
            "create_time": image.setdefault("create_time", product["created_at"]),
            "height": 1024,
            "id": image["id"],
            "position": image["position"],
            "product_id": product_id,
            "sku_id": image.get("sku_id"),
            "src": image["src"],
            "update_time": now,
            "width": 1024,
        }

    @staticmethod
    def public_product(product: dict[str, Any]) -> dict[str, Any]:
        """The product as the API returns it (images without the mock's bookkeeping keys)."""
        out = dict(product)
        out["images"] = [Catalog._embedded(i) for i in product["images"]]
        return out

    @staticmethod
    def _embedded(image: dict[str, Any]) -> dict[str, Any]:
        """An image as products and variants embed it: alt, id, src."""
        return {"alt": image["alt"], "id": image["id"], "src": image["src"]}
