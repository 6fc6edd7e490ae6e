"""Encode request bodies and decode responses, one msgspec Encoder/Decoder per type."""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from typing import Any, NoReturn, TypeVar, get_args

import msgspec
import msgspec.inspect as mi
from msgspec import UNSET, UnsetType

from ._errors import FieldError, ValidationError
from .models._image import ImageUpdate, ProductImage
from .models._product import Product, ProductUpdate
from .models._validate import encode_mapping, validate_and_encode

__all__ = [
    "BodyMissing",
    "coerce_update",
    "decode_error_body",
    "decode_image",
    "decode_product",
    "encode_image_update",
    "encode_product_update",
    "mapping_errors",
    "msgspec_error_to_field_error",
]

U = TypeVar("U", ProductUpdate, ImageUpdate)

_encoder = msgspec.json.Encoder()


class BodyMissing(Exception):
    """A 2xx answer without the resource: ``{}`` or ``{"product": null}``. The write was applied."""


class _ProductEnvelope(msgspec.Struct):
    product: Product | UnsetType | None = UNSET


class _ImageEnvelope(msgspec.Struct):
    image: ProductImage | UnsetType | None = UNSET


# strict=False: tolerate "1" for 1 and the like; unknown fields are ignored by default.
_product_decoder = msgspec.json.Decoder(_ProductEnvelope, strict=False)
_image_decoder = msgspec.json.Decoder(_ImageEnvelope, strict=False)
_any_decoder = msgspec.json.Decoder()
# floats as their text: a price sent as the number 10.10 becomes "10.10", not "10.1"
_exact_decoder = msgspec.json.Decoder(float_hook=str)


def coerce_update(value: U | Mapping[str, Any], cls: type[U], root: str) -> U:
    """Accept a model or a plain mapping (as JSON would give); raise ValidationError with the JSON path."""
    if isinstance(value, cls):
        return value
    if not isinstance(value, Mapping):
        raise ValidationError([FieldError(root, f"expected {cls.__name__} or a mapping, got {type(value).__name__}")])
    try:
        return msgspec.convert(value, cls, strict=False)
    except msgspec.ValidationError as exc:
        # msgspec stops at the first problem; a model reports them all, and so does a mapping
        errors = mapping_errors(value, cls, root) or [msgspec_error_to_field_error(exc, root)]
        raise ValidationError(errors) from None


def mapping_errors(value: Mapping[str, Any], cls: type[msgspec.Struct], path: str) -> list[FieldError]:
    """Every field of ``value`` that will not convert into ``cls``, each at its own path."""
    fields = {f.encode_name: f for f in msgspec.structs.fields(cls)}
    errors: list[FieldError] = []
    for name, item in value.items():
        field = fields.get(name)
        where = f"{path}.{name}"
        if field is None:
            errors.append(FieldError(path, f"Object contains unknown field `{name}`"))  # where msgspec puts it
            continue
        try:
            msgspec.convert(item, field.type, strict=False)
        except msgspec.ValidationError as exc:
            nested = _struct_in(field.type)
            found: list[FieldError] = []
            if nested is not None and isinstance(item, Mapping):
                found = mapping_errors(item, nested, where)
            elif nested is not None and isinstance(item, list):
                for index, element in enumerate(item):
                    if isinstance(element, Mapping):
                        found += mapping_errors(element, nested, f"{where}[{index}]")
            errors += found or [msgspec_error_to_field_error(exc, where)]
    return errors


def _struct_in(annotation: Any) -> type[msgspec.Struct] | None:
    """The Struct a field holds, alone or in a list, under Annotated, unions, UNSET and None."""
    if isinstance(annotation, type) and issubclass(annotation, msgspec.Struct):
        return annotation
    for arg in get_args(annotation):
        found = _struct_in(arg)
        if found is not None:
            return found
    return None


def msgspec_error_to_field_error(exc: msgspec.ValidationError, root: str) -> FieldError:
    """msgspec says "Expected `str`, got `int` - at `$.variants[0].sku`"; re-root the path."""
    message, sep, where = str(exc).rpartition(" - at `")
    if not sep:
        message, where = str(exc), "$`"
    path = root + where.rstrip("`")[1:]
    missing = re.fullmatch(r"Object missing required field `(\w+)`", message)
    if missing:  # named at the field, as every other error is: $.product_id, not $
        return FieldError(f"{path}.{missing.group(1)}", "required")
    return FieldError(path, message)


def encode_product_update(update: ProductUpdate | Mapping[str, Any]) -> bytes:
    """The request body for a model or a plain mapping; raises ValidationError naming every problem."""
    return b'{"product":' + _encode(update, ProductUpdate, "$.product") + b"}"


def encode_image_update(update: ImageUpdate | Mapping[str, Any]) -> bytes:
    """The request body for a model or a plain mapping; raises ValidationError naming every problem."""
    return b'{"image":' + _encode(update, ImageUpdate, "$.image") + b"}"


def _encode(update: U | Mapping[str, Any], cls: type[U], root: str) -> bytes:
    # a catalog row's dict goes to the wire in one pass when it can; else through the model
    encoded = encode_mapping(update, cls)
    return encoded if encoded is not None else validate_and_encode(coerce_update(update, cls, root), root)


def decode_product(body: bytes) -> Product:
    """The product of a 2xx body. Raises BodyMissing, or msgspec's errors for what is not a product."""
    try:
        product = _product_decoder.decode(body).product
    except msgspec.ValidationError:
        product = _decode_leniently(body, _ProductEnvelope).product
    if product is None or product is UNSET:
        _body_missing(body, "product")
    return product


def decode_image(body: bytes) -> ProductImage:
    """The image of a 2xx body. Raises BodyMissing, or msgspec's errors for what is not an image."""
    try:
        image = _image_decoder.decode(body).image
    except msgspec.ValidationError:
        image = _decode_leniently(body, _ImageEnvelope).image
    if image is None or image is UNSET:
        _body_missing(body, "image")
    return image


def _body_missing(body: bytes, key: str) -> NoReturn:
    """BodyMissing for ``{}`` or an explicit ``{key: null}``; for an object without ``key`` that
    holds something else, the error it is: not this endpoint's answer."""
    document = _any_decoder.decode(body)
    if document == {} or (key in document and document[key] is None):
        raise BodyMissing
    raise msgspec.ValidationError(f"Object missing required field `{key}`")


E = TypeVar("E", _ProductEnvelope, _ImageEnvelope)


def _decode_leniently(body: bytes, envelope: type[E]) -> E:
    """The second try, for an answer the models do not fit as they are: a number where a string
    is expected (``"id": 16``, ``"price": 10.1``) becomes its decimal text, ``null`` where a list
    is expected an empty list. Anything else still raises msgspec's ValidationError."""
    return msgspec.convert(_loosen(_exact_decoder.decode(body), _type_info(envelope)), envelope, strict=False)


@functools.cache
def _type_info(envelope: type[msgspec.Struct]) -> mi.Type:
    return mi.type_info(envelope)


def _loosen(value: Any, t: mi.Type) -> Any:
    if isinstance(t, mi.Metadata):
        t = t.type
    if isinstance(t, mi.UnionType):
        if value is None:
            return None
        members = [m for m in t.types if not isinstance(m, mi.NoneType)]
        if len(members) != 1:  # tags: a string or a list of them
            return str(value) if _is_number(value) and any(isinstance(m, mi.StrType) for m in members) else value
        t = members[0]
    if isinstance(t, mi.StructType) and isinstance(value, dict):
        fields = {f.encode_name: f.type for f in t.fields}
        return {k: _loosen(v, fields[k]) if k in fields else v for k, v in value.items()}
    if isinstance(t, mi.ListType):
        if value is None:
            return []
        if isinstance(value, list):
            return [_loosen(item, t.item_type) for item in value]
    if isinstance(t, mi.StrType) and _is_number(value):
        return str(value)
    return value


def _is_number(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def decode_error_body(body: bytes) -> Any:
    """The ``errors`` value of an error response, or ``None`` if the body is not ``{"errors": ...}``."""
    try:
        parsed = _any_decoder.decode(body)
    except msgspec.DecodeError:
        return None
    if isinstance(parsed, dict):
        return parsed.get("errors", parsed.get("message"))
    return None
