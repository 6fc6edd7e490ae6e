"""Catalog rows from JSONL or CSV, for ``sync`` and ``fleet submit``: each row an operation, or an
``invalid`` report naming its line (and the JSON path where one applies).

Nothing a row holds can end the run: undecodable bytes, truncated or invalid JSON, numbers out of
range, deep nesting, oversized lines and fields each become that row's report, and the rows after
it are read as usual. Ambiguous input is refused rather than guessed at: a key twice in one JSON
object, a float as an id, more CSV cells than header columns. Messages quote at most a short
prefix of an offending value, with its size.
"""

from __future__ import annotations

import csv
import io
import json
import re
import sys
from collections.abc import Callable, Hashable, Iterator, Sequence
from typing import IO, Any, NamedTuple

import msgspec
from msgspec import UNSET, Struct, UnsetType

from ._codec import mapping_errors, msgspec_error_to_field_error
from ._errors import FieldError, excerpt
from ._operations import Operation, UpdateImage, UpdateProduct
from .models._image import ImageUpdate
from .models._product import ProductUpdate

__all__ = [
    "CSV_COLUMNS",
    "MAX_ROW_BYTES",
    "InvalidRow",
    "RowKey",
    "SyncInputError",
    "open_input",
    "read_operations",
]

MAX_ROW_BYTES = 16 * 1024 * 1024
"""A row's size limit. The largest update the reference pages allow (a 512 KiB ``body_html``, 500
variants, 502 images) is a few MiB even with every character escaped."""
_MAX_DIGITS = 64  # an id is at most 64 characters; no price or weight the API takes comes close
_BOM = b"\xef\xbb\xbf"


class SyncInputError(Exception):
    """The input cannot be read at all (exit code 2)."""


class RowKey(NamedTuple):
    """A catalog row's key as the results report it: its line, its key, and what it updates."""

    line: int
    key: Hashable
    product_id: str = ""
    image_id: str | None = None


InvalidRow = Callable[[int, Hashable, str, "str | None"], None]
"""``on_invalid(line, key, message, store)``; ``store`` as the row named it, if it did."""


class _Row(Struct, forbid_unknown_fields=True):
    product_id: str | int  # an integer id is taken as its decimal string
    product: ProductUpdate | UnsetType = UNSET
    image_id: str | int | UnsetType = UNSET
    image: ImageUpdate | UnsetType = UNSET
    store: str | UnsetType = UNSET
    key: str | int | UnsetType = UNSET


class _Unreadable(NamedTuple):
    message: str
    store: str | None
    key: Hashable


class _Refused(ValueError):
    """Input JSON that parses but is refused: ambiguous, or beyond what any update can hold."""


def _unreadable(line: int, message: str, document: object = None) -> _Unreadable:
    """A row that is not an operation, with the store and key it names if it names them."""
    store = document.get("store") if isinstance(document, dict) else None
    key = document.get("key") if isinstance(document, dict) else None
    if isinstance(store, str):
        store = store.strip() or None
    if isinstance(key, str):
        key = key.strip() or None
    return _Unreadable(
        message,
        store if isinstance(store, str) and len(store) <= 63 else None,
        key if isinstance(key, (str, int)) and not isinstance(key, bool) and len(str(key)) <= 255 else str(line),
    )


def open_input(path: str) -> IO[bytes]:
    """The input as bytes (each row is decoded on its own, so one row's bad bytes spoil only that row)."""
    if path == "-":
        return sys.stdin.buffer
    try:
        return open(path, "rb")
    except IsADirectoryError:
        raise SyncInputError(f"cannot read {path}: it is a directory; give a .jsonl or .csv file") from None
    except OSError as exc:
        raise SyncInputError(f"cannot read {path}: {exc.strerror}") from None


def read_operations(
    source: IO[bytes], fmt: str, default_store: str | None, on_invalid: InvalidRow
) -> Iterator[Operation]:
    """Operations from JSONL or CSV bytes, lazily; ``on_invalid(line, key, message, store)`` for rows that fail.

    Raises SyncInputError at once (not when iterated) for a CSV header it cannot use.
    """
    rows = _jsonl_rows(source) if fmt == "jsonl" else _csv_rows(source)
    return _operations(rows, default_store, on_invalid)


def _operations(
    rows: Iterator[tuple[int, _Row | _Unreadable]], default_store: str | None, on_invalid: InvalidRow
) -> Iterator[Operation]:
    for line, row in rows:
        if isinstance(row, _Unreadable):
            on_invalid(line, row.key, row.message, row.store or default_store)
            continue
        key: Hashable = row.key if row.key is not UNSET else str(line)
        store = row.store if row.store is not UNSET else default_store
        if store is None:
            on_invalid(line, key, 'no store: add a "store" field or pass --store', None)
            continue
        if (row.product is UNSET) == (row.image is UNSET):
            on_invalid(line, key, 'expected exactly one of "product" or "image"', store)
            continue
        product_id = str(row.product_id)
        if row.image is not UNSET:
            if row.image_id is UNSET:
                on_invalid(line, key, '$.image_id: required with "image"', store)
                continue
            image_id = str(row.image_id)
            yield UpdateImage(store, product_id, image_id, row.image, key=RowKey(line, key, product_id, image_id))
        else:
            yield UpdateProduct(store, product_id, row.product, key=RowKey(line, key, product_id))  # type: ignore[arg-type]


# --- JSONL ------------------------------------------------------------------------------------


def _jsonl_rows(source: IO[bytes]) -> Iterator[tuple[int, _Row | _Unreadable]]:
    line = 0
    while data := source.readline(MAX_ROW_BYTES + 1):
        line += 1
        if line == 1 and data.startswith(_BOM):
            data = data[len(_BOM) :]
        if len(data) > MAX_ROW_BYTES:  # read no more of it than the limit: the rest is skipped unread
            size = len(data) + _skip_line(source)
            yield line, _Unreadable(f"row of {size:,} bytes, over the limit of {MAX_ROW_BYTES:,}", None, str(line))
            continue
        if data.strip():
            yield line, _jsonl_row(line, data)


def _skip_line(source: IO[bytes]) -> int:
    skipped = 0
    while chunk := source.readline(1024 * 1024):
        skipped += len(chunk)
        if chunk.endswith(b"\n"):
            break
    return skipped


def _jsonl_row(line: int, data: bytes) -> _Row | _Unreadable:
    try:
        text = data.decode("utf-8").rstrip("\r\n")
    except UnicodeDecodeError as exc:
        return _unreadable(line, f"not valid UTF-8: byte 0x{data[exc.start]:02x} at column {exc.start + 1}")
    try:
        document = json.loads(text, object_pairs_hook=_unique_keys, parse_int=_bounded_int, parse_constant=_no_constant)
    except json.JSONDecodeError as exc:
        return _unreadable(line, f"not valid JSON: {exc.msg} at column {exc.pos + 1}")
    except _Refused as exc:
        return _unreadable(line, f"refused: {exc}")
    except RecursionError:
        return _unreadable(line, "refused: nested too deeply")
    return _to_row(line, document)


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    document = dict(pairs)
    if len(document) != len(pairs):
        seen: set[str] = set()
        twice = next(k for k, _ in pairs if k in seen or seen.add(k))  # type: ignore[func-returns-value]
        raise _Refused(f"the key {excerpt(twice)} twice in one object: which one is meant is ambiguous")
    return document


def _bounded_int(digits: str) -> int:
    if len(digits.lstrip("-")) > _MAX_DIGITS:
        raise _Refused(f"a number of {len(digits):,} digits (at most {_MAX_DIGITS} are read): {excerpt(digits)}")
    return int(digits)


def _no_constant(name: str) -> Any:
    raise _Refused(f"{name} is not a JSON number")


def _to_row(line: int, document: Any) -> _Row | _Unreadable:
    if not isinstance(document, dict):
        return _unreadable(line, f"expected a JSON object, got {_json_type(document)}")
    for id_field in ("product_id", "image_id"):
        value = document.get(id_field)
        if isinstance(value, (float, bool)):
            return _unreadable(line, f"$.{id_field}: an id is a string or an integer, got {value!r}", document)
    try:
        return msgspec.convert(document, _Row, strict=False)
    except msgspec.ValidationError as exc:
        return _unreadable(line, _row_errors(document, exc), document)
    except RecursionError:
        return _unreadable(line, "refused: nested too deeply", document)


def _json_type(value: Any) -> str:
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    return "null" if value is None else "a number" if isinstance(value, (int, float)) else type(value).__name__


def _row_errors(document: dict[str, Any], exc: msgspec.ValidationError) -> str:
    """Every problem of a row's update, as a model would list them, after msgspec's first if that
    one is outside the update (``$.product_id``, say)."""
    first = msgspec_error_to_field_error(exc, "$")
    errors: list[FieldError] = []
    for key, cls in (("product", ProductUpdate), ("image", ImageUpdate)):
        body = document.get(key)
        if isinstance(body, dict):
            errors += mapping_errors(body, cls, f"$.{key}")
    if not any(e.path == first.path for e in errors):
        errors.insert(0, first)
    return "; ".join(str(e) for e in errors)


# --- CSV --------------------------------------------------------------------------------------

_PRODUCT_COLUMNS = (
    "title",
    "status",
    "vendor",
    "body_html",
    "subtitle",
    "handle",
    "spu",
    "product_category",
    "published_scope",
    "template_path",
    "path",
)
_VARIANT_COLUMNS = {
    "variant_id": "id",
    "sku": "sku",
    "price": "price",
    "compare_at_price": "compare_at_price",
    "barcode": "barcode",
    "inventory_policy": "inventory_policy",
    "inventory_tracker": "inventory_tracker",
    "required_shipping": "required_shipping",
    "taxable": "taxable",
    "weight": "weight",
    "weight_unit": "weight_unit",
    "option1": "option1",
    "option2": "option2",
    "option3": "option3",
    "option4": "option4",
    "option5": "option5",
}
CSV_COLUMNS = ("product_id", "store", "key", "tags", *_PRODUCT_COLUMNS, *_VARIANT_COLUMNS)
_BOOL_COLUMNS = {"inventory_tracker", "required_shipping", "taxable"}
_TRUE = {"true", "1", "yes", "y"}
_FALSE = {"false", "0", "no", "n"}
# bytes that were not UTF-8, as the surrogateescape error handler keeps them
_UNDECODED = re.compile("[\udc80-\udcff]")


def _csv_rows(source: IO[bytes]) -> Iterator[tuple[int, _Row | _Unreadable]]:
    # a spec-legal body_html (up to 512 KiB) is over the csv module's default field limit of 128 KiB;
    # the limit is the process's own, so it is only ever raised
    if csv.field_size_limit() < MAX_ROW_BYTES:
        csv.field_size_limit(MAX_ROW_BYTES)
    # surrogateescape: a cell's bytes that are not UTF-8 spoil that row only (and are found there)
    text = io.TextIOWrapper(source, encoding="utf-8-sig", errors="surrogateescape", newline="")
    reader = csv.reader(text)
    try:
        header = next(reader, [])
        _check_csv_header(header)
    except csv.Error as exc:
        text.detach()
        raise SyncInputError(f"CSV header: {exc}") from None
    except SyncInputError:
        text.detach()  # the source is its opener's to close
        raise
    return _csv_records(text, reader, header)


def _check_csv_header(header: Sequence[str]) -> None:
    unknown = [excerpt(c) for c in header if c not in CSV_COLUMNS]
    if unknown:
        raise SyncInputError(f"CSV header: unknown columns {', '.join(unknown)} (known: {', '.join(CSV_COLUMNS)})")
    if "product_id" not in header:
        raise SyncInputError("CSV header: a product_id column is required")
    twice = sorted({c for c in header if header.count(c) > 1})
    if twice:
        raise SyncInputError(f"CSV header: the column {twice[0]} twice: which one is meant is ambiguous")


def _csv_records(text: io.TextIOWrapper, reader: Any, header: list[str]) -> Iterator[tuple[int, _Row | _Unreadable]]:
    try:
        yield from _csv_cells(reader, header)
    finally:
        text.detach()


def _csv_cells(reader: Any, header: list[str]) -> Iterator[tuple[int, _Row | _Unreadable]]:
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:  # a field over the size limit, say: the reader goes on at the next line
            yield reader.line_num, _Unreadable(f"not valid CSV: {exc}", None, str(reader.line_num))
            continue
        line = reader.line_num
        if not cells:
            continue
        record = dict(zip(header, cells, strict=False))
        if len(cells) > len(header):
            yield line, _unreadable(line, f"{len(cells)} cells, but the header has {len(header)} columns", record)
            continue
        bad = next((c for c in header if _UNDECODED.search(record.get(c) or "")), None)
        if bad is not None:
            yield line, _unreadable(line, f"column {bad}: not valid UTF-8", record)
            continue
        try:
            yield line, msgspec.convert(_csv_document(record), _Row, strict=False)
        except msgspec.ValidationError as exc:
            yield line, _unreadable(line, str(msgspec_error_to_field_error(exc, "$")), record)
        except ValueError as exc:
            yield line, _unreadable(line, str(exc), record)


def _csv_document(record: dict[str, str]) -> dict[str, Any]:
    cells = {k: v.strip() for k, v in record.items() if v.strip()}
    product: dict[str, Any] = {c: cells[c] for c in _PRODUCT_COLUMNS if c in cells}
    if "tags" in cells:
        product["tags"] = [t.strip() for t in cells["tags"].split(",") if t.strip()]
    variant: dict[str, Any] = {}
    for column, name in _VARIANT_COLUMNS.items():
        if column in cells:
            value: Any = cells[column]
            if column in _BOOL_COLUMNS:
                if value.lower() not in _TRUE | _FALSE:
                    raise ValueError(f"$.product.variants[0].{name}: expected true or false, got {excerpt(value)}")
                value = value.lower() in _TRUE
            variant[name] = value
    if variant:
        product["variants"] = [variant]
    document: dict[str, Any] = {"product_id": cells.get("product_id", ""), "product": product}
    for extra in ("store", "key"):
        if extra in cells:
            document[extra] = cells[extra]
    return document
