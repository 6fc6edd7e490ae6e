"""Check a request model against the constraints on its field types.

The rules are the ``Meta`` annotations on the models, the same ones that
govern JSON decoding. Two passes, for speed:

1. msgspec itself checks types, lengths, item counts and enums in C, by
   decoding a MessagePack copy of the model back into the model (a few
   microseconds). MessagePack, not JSON or ``to_builtins``: it keeps every
   value's type, where JSON would turn a NaN into null and bytes into a
   base64 string that then passes for text;
2. small Python checkers, compiled once per class from ``msgspec.inspect``,
   apply the rules msgspec cannot (money, UTF-8 byte sizes) and normalise
   money to a two-place string.

Only when pass 1 fails does the full Python walk run, to list every problem
with its JSON path instead of msgspec's first one.

The send path (``validate_and_encode``) first tries a shortcut: pass 1 against a "wire form" of
the model, where money must already be a two-place string and HTML short enough that its UTF-8
size cannot exceed the limit, so that msgspec checks every rule and pass 2 has nothing to do.
The wire form has no read-only fields: their values are left behind by the decode, in C.
Money given as the API documents it (``"90.22"``) takes the shortcut; other forms take both passes.
"""

from __future__ import annotations

import functools
import logging
import operator
import re
import types
from collections.abc import Callable
from decimal import Context, Decimal, InvalidOperation
from functools import cache
from typing import Annotated, Any, TypeVar, Union, get_args, get_origin, get_type_hints

import msgspec
import msgspec.inspect as mi
from msgspec import UNSET, UnsetType

from .._constants import LOGGER_NAME
from .._errors import FieldError, ValidationError

__all__ = ["encode_mapping", "normalise_money", "validate", "validate_and_encode"]

S = TypeVar("S", bound=msgspec.Struct)
# A JSON path, built only if an error needs it: the root string, or (parent, ".name" | index).
Path = str | tuple[Any, str | int]
Checker = Callable[[Any, Path, list[FieldError]], Any]

logger = logging.getLogger(LOGGER_NAME)

_CENT = Decimal("0.01")
# what a money string may hold: a sign, digits, one optional point (no exponent, no other digits)
_DECIMAL_TEXT = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)")
# already what the API wants ("90.22"): the common case, answered without Decimal
_CANONICAL_MONEY = re.compile(r"(?:0|[1-9][0-9]{0,14})\.[0-9]{2}")
# the same as msgspec patterns (which it applies with re.search), for the wire form; positive: not 0.00
_WIRE_MONEY = r"^(?:0|[1-9][0-9]{0,14})\.[0-9]{2}\Z"
_WIRE_POSITIVE_MONEY = r"^(?:0\.(?:0[1-9]|[1-9][0-9])|[1-9][0-9]{0,14}\.[0-9]{2})\Z"


def validate(value: S, path: str = "$", *, decoded: bool = False) -> S:
    """Return ``value`` normalised for sending, or raise ValidationError listing every problem.

    ``decoded=True`` says msgspec built ``value`` from JSON or builtins, so its types and
    limits were checked on the way in and only the rules msgspec cannot express remain.
    """
    cls = type(value)
    errors: list[FieldError] = []
    try:
        if not decoded:
            _decoder_for(cls).decode(_copy.encode(value))
    except _CHECK_FAILED as exc:
        without_read_only: S = _checker_for(cls)(value, path, errors)
        errors = _without_not_sent(errors)
        if not errors and without_read_only is not value:
            return validate(without_read_only, path)  # a read-only value msgspec could not copy: not sent
        if not errors:  # msgspec saw something the walk does not model: say what msgspec said
            errors.append(FieldError(_render(path), str(exc)))
        raise ValidationError(errors) from None
    extras = _extras_checker_for(cls)
    result: S = extras(value, path, errors) if extras is not None else value
    errors = _without_not_sent(errors)
    if errors:
        raise ValidationError(errors)
    return result


def validate_and_encode(value: msgspec.Struct, path: str = "$") -> bytes:
    """``value`` checked and normalised as by :func:`validate`, encoded as JSON."""
    cls = type(value)
    copy = b""
    try:
        copy = _copy.encode(value)
        wire = _wire_decoder_for(cls).decode(copy)  # read-only values are left behind here, in C
        if logger.isEnabledFor(logging.DEBUG):
            _log_read_only(value, path)
        return _encoder.encode(wire)
    except _CHECK_FAILED:
        pass  # not in wire form (money as a number, say) or invalid: the two passes say which
    errors: list[FieldError] = []
    extras = _extras_checker_for(cls)
    normalised = extras(value, path, errors) if extras is not None else value
    errors = _without_not_sent(errors)
    if not errors:
        try:
            # money was all that could differ: the copy made above still serves when none changed
            _decoder_for(cls).decode(copy if normalised is value and copy else _copy.encode(normalised))
            return _encoder.encode(normalised)
        except _CHECK_FAILED:
            pass
    return _encoder.encode(validate(value, path))  # raises, listing every problem


def encode_mapping(value: object, cls: type[msgspec.Struct]) -> bytes | None:
    """A plain dict (a catalog row) checked and encoded in one pass, in C, when it is in wire form
    and names no read-only field: what :func:`validate_and_encode` would send for the model built
    from it. None otherwise: the caller then builds the model and takes that path, which says
    what is wrong or drops the read-only values."""
    if type(value) is not dict:
        return None
    try:
        return _encoder.encode(msgspec.convert(value, _closed_wire_type_for(cls), strict=False))
    except msgspec.ValidationError:
        return None


class _NotSent(FieldError):
    """Not an error: a read-only field the checkers dropped, reported in the same pass."""

    def __init__(self, path: str) -> None:
        super().__init__(path, "read-only, not sent")


def _without_not_sent(found: list[FieldError]) -> list[FieldError]:
    """The errors among ``found``; the read-only fields dropped are logged, once per body."""
    dropped = [e.path for e in found if type(e) is _NotSent]
    if not dropped:
        return found
    if logger.isEnabledFor(logging.DEBUG):
        # by field, not by item: a product with 500 variants names each field once
        fields = dict.fromkeys(_ITEM_INDEX.sub("[]", path) for path in dropped)
        logger.debug("%d read-only values not sent: %s", len(dropped), ", ".join(fields))
    return [e for e in found if type(e) is not _NotSent]


def _log_read_only(value: msgspec.Struct, path: str) -> None:
    """The DEBUG line for the read-only values the wire form left behind (a second walk, DEBUG only)."""
    extras = _extras_checker_for(type(value))
    if extras is not None:
        found: list[FieldError] = []
        extras(value, path, found)
        _without_not_sent(found)


_ITEM_INDEX = re.compile(r"\[\d+\]")
_encoder = msgspec.json.Encoder()
_copy = msgspec.msgpack.Encoder()
# what the copy-and-check can raise: MessagePack refuses ints beyond 64 bits with OverflowError
_CHECK_FAILED = (msgspec.ValidationError, TypeError, ValueError, OverflowError)


@cache
def _decoder_for(cls: type[msgspec.Struct]) -> msgspec.msgpack.Decoder[Any]:
    return msgspec.msgpack.Decoder(cls)


@cache
def _wire_decoder_for(cls: type[msgspec.Struct]) -> msgspec.msgpack.Decoder[Any]:
    return msgspec.msgpack.Decoder(_wire_type(cls))


@cache
def _closed_wire_type_for(cls: type[msgspec.Struct]) -> Any:
    return _wire_type(cls, closed=True)


def _extra_of(tp: Any) -> dict[str, Any]:
    """The ``Meta(extra=...)`` of an ``Annotated`` type, merged; of ``T | UnsetType``, of ``T``."""
    if get_origin(tp) in (Union, types.UnionType):
        members = [m for m in get_args(tp) if m is not UnsetType and m is not type(None)]
        return _extra_of(members[0]) if len(members) == 1 else {}
    extra: dict[str, Any] = {}
    if get_origin(tp) is Annotated:
        for meta in get_args(tp)[1:]:
            extra.update(getattr(meta, "extra", None) or {})
    return extra


def _wire_type(tp: Any, *, closed: bool = False) -> Any:
    """``tp`` with every struct replaced by its wire form (see the module docstring). ``closed``: a
    read-only field is an unknown one, refused, as the model refuses every other unknown field."""
    if isinstance(tp, type) and issubclass(tp, msgspec.Struct):
        return _wire_struct(tp, closed)
    if closed and tp is int:  # a copy made from a model fails beyond 64 bits; a dict converted does not
        return Annotated[int, msgspec.Meta(le=2**63 - 1)]  # (every int sent has a lower bound)
    origin = get_origin(tp)
    if origin is Annotated:
        base, *metas = get_args(tp)
        extra = _extra_of(tp)
        wired: Any
        if "money" in extra:
            pattern = _WIRE_POSITIVE_MONEY if extra["money"] == "positive" else _WIRE_MONEY
            wired = Annotated[str, msgspec.Meta(pattern=pattern)]
        elif "max_bytes" in extra:  # at most 4 UTF-8 bytes a character
            wired = Annotated[_wire_type(base, closed=closed), msgspec.Meta(max_length=extra["max_bytes"] // 4)]
        else:
            wired = _wire_type(base, closed=closed)
        for meta in metas:  # the other constraints stay
            wired = Annotated[wired, meta]
        return wired
    if origin is Union or origin is types.UnionType:
        return functools.reduce(operator.or_, (_wire_type(arg, closed=closed) for arg in get_args(tp)))
    if origin in (list, dict):
        return origin[tuple(_wire_type(arg, closed=closed) for arg in get_args(tp))]
    return tp


@cache
def _wire_struct(cls: type[msgspec.Struct], closed: bool) -> type[msgspec.Struct]:
    hints = get_type_hints(cls, include_extras=True)
    all_fields = msgspec.structs.fields(cls)
    # Read-only fields are absent from the wire form, which ignores unknown fields: decoding the
    # model's copy leaves their values behind, and the decoded wire struct is what gets encoded.
    # The copy holds only the model's own fields, so nothing else can be ignored.
    fields = [f for f in all_fields if "read_only" not in _extra_of(hints[f.name])]
    config = cls.__struct_config__  # what decoding and encoding depend on, as the model has it
    return msgspec.defstruct(
        f"Wire{cls.__name__}",
        [(f.name, _wire_type(hints[f.name], closed=closed), f.default) for f in fields],
        kw_only=True,
        omit_defaults=config.omit_defaults,
        forbid_unknown_fields=config.forbid_unknown_fields and (closed or len(fields) == len(all_fields)),
        array_like=config.array_like,
        tag=config.tag,
        tag_field=config.tag_field,
        rename={f.name: f.encode_name for f in fields},
    )


def normalise_money(value: object, *, positive: bool = False) -> str:
    """``value`` (Decimal, int, float or str) as a plain decimal string: two places, or more if given.

    The reference pages say the server rounds prices and weights to two places, so a value with
    more places is sent exactly as given (``"19.999"``) for the server to round; one with fewer is
    padded (``"5"`` -> ``"5.00"``). Raises ``ValueError`` with the rule broken: not a number (an
    exponent such as ``"1e3"`` included), NaN/infinite, negative, or not > 0 when ``positive``.
    """
    if type(value) is str and _CANONICAL_MONEY.fullmatch(value) and (not positive or value.strip("0.")):
        return value
    if isinstance(value, bool) or not isinstance(value, (str, int, float, Decimal)):
        raise ValueError(f"expected a decimal number or string, got {type(value).__name__}")
    if isinstance(value, str) and not _DECIMAL_TEXT.fullmatch(value.strip()):
        raise ValueError(f"expected a decimal number such as 19.99, got {value!r}")
    try:
        # repr() gives a float's shortest round-trip form: 19.99 -> "19.99", not 19.989999...
        number = Decimal(repr(value) if isinstance(value, float) else str(value).strip())
    except InvalidOperation:
        raise ValueError(f"expected a decimal number, got {value!r}") from None
    if not number.is_finite():
        raise ValueError(f"must be a finite number, got {value!r}")
    if positive and number <= 0:
        raise ValueError(f"must be greater than 0, got {value!r}")
    if number < 0:
        raise ValueError(f"must not be negative, got {value!r}")
    # a context as wide as the number: the default 28 digits would refuse a large one the page allows
    context = Context(prec=max(28, number.adjusted() + 3))
    rounded = number.quantize(_CENT, context=context)
    exact = rounded if rounded == number else number.normalize(context)
    return f"{exact.copy_abs():f}"  # exact (abs() would round to 28 digits); "-0" must not go out as "-0.00"


def _render(path: Path) -> str:
    if isinstance(path, str):
        return path
    parent, segment = path
    return _render(parent) + (f"[{segment}]" if isinstance(segment, int) else segment)


def _type_name(value: object) -> str:
    return "null" if value is None else type(value).__name__


@cache
def _checker_for(cls: type[msgspec.Struct]) -> Checker:
    """Every rule: the full walk."""
    checker = _compile(mi.type_info(cls), extras_only=False)
    assert checker is not None
    return checker


@cache
def _extras_checker_for(cls: type[msgspec.Struct]) -> Checker | None:
    """Only the rules msgspec does not enforce; None if the class has none."""
    return _compile(mi.type_info(cls), extras_only=True)


def _compile(t: mi.Type, *, extras_only: bool) -> Checker | None:  # noqa: C901 - one branch per type kind
    if isinstance(t, mi.UnionType):
        # `T | None` fields are unwrapped where structs walk their fields; no other union is modelled
        raise TypeError(f"unsupported union in request model: {t}")

    if isinstance(t, mi.Metadata):
        extra = t.extra or {}
        if "money" in extra:
            positive = extra["money"] == "positive"

            def check_money(value: Any, path: Path, errors: list[FieldError]) -> Any:
                if type(value) is str and _CANONICAL_MONEY.fullmatch(value) and (not positive or value.strip("0.")):
                    return value  # already as the API wants it: the common case, no call
                try:
                    normalised = normalise_money(value, positive=positive)
                except ValueError as exc:
                    errors.append(FieldError(_render(path), str(exc)))
                    return value
                # the same object when nothing changed, so the struct need not be copied
                return value if normalised == value else normalised

            return check_money
        if "max_bytes" in extra:
            compiled_str = _compile(t.type, extras_only=False)
            assert compiled_str is not None
            inner: Checker = compiled_str
            max_bytes: int = extra["max_bytes"]

            def check_bytes(value: Any, path: Path, errors: list[FieldError]) -> Any:
                value = inner(value, path, errors)
                if isinstance(value, str) and len(value) * 4 > max_bytes:
                    size = len(value.encode("utf-8", "surrogatepass"))
                    if size > max_bytes:
                        message = f"must be at most {max_bytes} bytes in UTF-8, got {size}"
                        errors.append(FieldError(_render(path), message))
                return value

            return check_bytes
        return _compile(t.type, extras_only=extras_only)

    if extras_only and isinstance(t, (mi.StrType, mi.BoolType, mi.IntType, mi.LiteralType, mi.AnyType)):
        return None

    if isinstance(t, mi.StrType):
        min_length, max_length = t.min_length, t.max_length

        def check_str(value: Any, path: Path, errors: list[FieldError]) -> Any:
            if not isinstance(value, str):
                errors.append(FieldError(_render(path), f"expected a string, got {_type_name(value)}"))
            elif max_length is not None and len(value) > max_length:
                errors.append(FieldError(_render(path), f"must be at most {max_length} characters, got {len(value)}"))
            elif min_length is not None and len(value) < min_length:
                errors.append(FieldError(_render(path), "must not be empty"))
            return value

        return check_str

    if isinstance(t, mi.BoolType):

        def check_bool(value: Any, path: Path, errors: list[FieldError]) -> Any:
            if not isinstance(value, bool):
                errors.append(FieldError(_render(path), f"expected true or false, got {_type_name(value)}"))
            return value

        return check_bool

    if isinstance(t, mi.IntType):
        ge = t.ge

        def check_int(value: Any, path: Path, errors: list[FieldError]) -> Any:
            if isinstance(value, bool) or not isinstance(value, int):
                errors.append(FieldError(_render(path), f"expected an integer, got {_type_name(value)}"))
            elif ge is not None and value < ge:
                errors.append(FieldError(_render(path), f"must be >= {ge}, got {value}"))
            elif not -(2**63) <= value < 2**64:
                errors.append(FieldError(_render(path), f"must fit in 64 bits, got {value}"))
            return value

        return check_int

    if isinstance(t, mi.LiteralType):
        allowed = t.values
        shown = ", ".join(repr(v) for v in allowed)

        def check_literal(value: Any, path: Path, errors: list[FieldError]) -> Any:
            if value not in allowed or not isinstance(value, str):
                errors.append(FieldError(_render(path), f"must be one of {shown}, got {value!r}"))
            return value

        return check_literal

    if isinstance(t, mi.ListType):
        item = _compile(t.item_type, extras_only=extras_only)
        if item is None:
            return None
        max_items = t.max_length

        def check_list(value: Any, path: Path, errors: list[FieldError]) -> Any:
            if not isinstance(value, (list, tuple)):
                errors.append(FieldError(_render(path), f"expected a list, got {_type_name(value)}"))
                return value
            if max_items is not None and len(value) > max_items:
                errors.append(FieldError(_render(path), f"must have at most {max_items} items, got {len(value)}"))
            out = [item(v, (path, i), errors) for i, v in enumerate(value)]
            if type(value) is list and all(map(operator.is_, out, value)):
                return value  # nothing normalised: no copy, so the caller's struct is reused as is
            return out

        return check_list

    if isinstance(t, mi.DictType):
        key_check = _compile(t.key_type, extras_only=extras_only)
        value_check = _compile(t.value_type, extras_only=extras_only)
        if key_check is None or value_check is None:
            if extras_only and key_check is None and value_check is None:
                return None
            raise TypeError(f"unsupported map in request model: {t}")

        def check_dict(value: Any, path: Path, errors: list[FieldError]) -> Any:
            if not isinstance(value, dict):
                errors.append(FieldError(_render(path), f"expected an object, got {_type_name(value)}"))
                return value
            for k, v in value.items():
                key_check(k, (path, f"[{k!r}] (key)"), errors)
                value_check(v, (path, f"[{k!r}]"), errors)
            return value

        return check_dict

    if isinstance(t, mi.StructType):
        cls = t.cls
        # Request fields are `T | None | UnsetType`: unset and (where allowed) null are skipped right
        # here, and the field's own checker is compiled without an Optional wrapper, one call less
        # per field on the hot path.
        compiled = []
        nullable: set[str] = set()
        read_only: list[tuple[str, str]] = []
        for f in t.fields:
            if isinstance(f.type, mi.Metadata) and "read_only" in (f.type.extra or {}):
                read_only.append((f.name, "." + f.encode_name))
                continue
            field_type = f.type
            if isinstance(field_type, mi.UnionType) and any(isinstance(m, mi.NoneType) for m in field_type.types):
                nullable.add(f.name)
                members = [m for m in field_type.types if not isinstance(m, mi.NoneType)]
                if len(members) != 1:
                    raise TypeError(f"unsupported union in request model: {field_type}")
                field_type = members[0]
            checker = _compile(field_type, extras_only=extras_only)
            if checker is not None:
                compiled.append((f.name, "." + f.encode_name, checker))
        if extras_only and not compiled and not read_only:
            return None
        # all read-only fields fetched in one C call, as they are almost always unset; "__class__"
        # makes it a tuple even for one name
        read_only_values = operator.attrgetter(*(name for name, _ in read_only), "__class__")

        def check_struct(value: Any, path: Path, errors: list[FieldError]) -> Any:
            if not isinstance(value, cls):
                errors.append(FieldError(_render(path), f"expected {cls.__name__}, got {_type_name(value)}"))
                return value
            changes: dict[str, Any] = {}
            if read_only and read_only_values(value).count(UNSET) != len(read_only):
                for name, segment in read_only:
                    if getattr(value, name) is not UNSET:
                        errors.append(_NotSent(_render((path, segment))))
                        changes[name] = UNSET
            for name, segment, check in compiled:
                current = getattr(value, name)
                if current is UNSET or (current is None and name in nullable):
                    continue
                checked = check(current, (path, segment), errors)
                if checked is not current:
                    changes[name] = checked
            return msgspec.structs.replace(value, **changes) if changes else value

        return check_struct

    if isinstance(t, mi.AnyType):
        return lambda value, path, errors: value

    raise TypeError(f"unsupported type in request model: {t}")
