"""Hostile input and hostile responses: a typed error or a model, never a crash, a hang or a leak."""

from __future__ import annotations

import asyncio
import gzip
import json
import logging
import re
import tracemalloc
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from decimal import Decimal
from typing import Any

import msgspec
import pytest
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from spec_oracle import image_update_violations, product_update_violations

from shopline_async import (
    APIConnectionError,
    APIError,
    APIStatusError,
    APITimeoutError,
    AppliedWithoutBodyError,
    BatchExecutor,
    ConfigError,
    HTTPRequest,
    HTTPResponse,
    ImageInput,
    ImageUpdate,
    Ledger,
    MockSender,
    OptionInput,
    Product,
    ProductUpdate,
    ResponseDecodeError,
    ResponseMismatchError,
    RetryPolicy,
    ShoplineClient,
    Timeout,
    UpdateImage,
    UpdateProduct,
    ValidationError,
    VariantInput,
)
from shopline_async._codec import coerce_update, encode_image_update, encode_product_update
from shopline_async.models._validate import encode_mapping, validate, validate_and_encode

# --- property-based: random models against an independent reading of the reference pages ----------

text = st.one_of(st.text(max_size=40), st.text(min_size=250, max_size=260), st.just(""))
maybe = lambda s: st.one_of(st.none(), s)  # noqa: E731
money = st.one_of(
    st.decimals(allow_nan=True, allow_infinity=True, places=None),
    st.integers(min_value=-5, max_value=10**6),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(alphabet="0123456789.-e", max_size=8),
    st.from_regex(r"(0|[1-9][0-9]{0,3})\.[0-9]{2}", fullmatch=True),  # the API's own form
    st.from_regex(r"-?[0-9]{1,3}(\.[0-9]{0,3})?", fullmatch=True),  # and its near misses
)
# what the API returns and the SDK accepts but never sends
read_only = st.one_of(st.just(msgspec.UNSET), st.none(), st.integers(), text)
images = st.builds(ImageInput, alt=maybe(text), id=maybe(st.text(max_size=70)), src=maybe(text))
variants = st.builds(
    VariantInput,
    sku=maybe(text),
    price=maybe(money),
    compare_at_price=maybe(money),
    weight=maybe(money),
    weight_unit=maybe(st.sampled_from(["g", "kg", "lb", "oz", "zh_kg", "stone"])),
    inventory_policy=maybe(st.sampled_from(["deny", "continue", "maybe"])),
    option1=maybe(text),
    image=maybe(images),
    title=read_only,
    inventory_quantity=read_only,
)
products = st.builds(
    ProductUpdate,
    title=maybe(text),
    status=maybe(st.sampled_from(["active", "draft", "archived", "live"])),
    tags=maybe(st.lists(text, max_size=4)),
    images=maybe(st.lists(images, max_size=3)),
    options=maybe(st.lists(st.builds(OptionInput, name=maybe(text)), max_size=7)),
    variants=maybe(st.lists(variants, max_size=3)),
    published_scope=maybe(st.sampled_from(["web", "pos"])),
    id=read_only,
    created_at=read_only,
)
image_updates = st.builds(
    ImageUpdate,
    alt=maybe(st.text(max_size=520)),
    position=maybe(st.one_of(st.integers(min_value=-2, max_value=10), st.integers(min_value=2**63 - 2))),
    sku_id=maybe(st.text(max_size=70)),
    src=read_only,
)


def as_json(update: ProductUpdate | ImageUpdate) -> Any:
    """The update as JSON would carry it, converted without the SDK's validators: numbers given
    for money become their plain decimal strings (what the page's string fields hold)."""

    def convert(value: Any, name: str = "") -> Any:
        if isinstance(value, dict):
            return {k: convert(v, k) for k, v in value.items()}
        if isinstance(value, list):
            return [convert(v) for v in value]
        if name in MONEY_FIELDS and isinstance(value, (int, float, Decimal)) and not isinstance(value, bool):
            number = Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
            return format(number, "f") if number.is_finite() else str(number)
        return value

    key = "product" if isinstance(update, ProductUpdate) else "image"
    return {key: convert(msgspec.to_builtins(update, builtin_types=(Decimal,)))}


MONEY_FIELDS = {"price", "compare_at_price", "weight"}


def value_at(document: Any, path: str) -> Any:
    for name, index in re.findall(r"\.(\w+)|\[(\d+)\]", path.removeprefix("$")):
        document = document[name] if name else document[int(index)]
    return document


def sdk_policy(path: str, value: Any) -> bool:
    """Where the SDK refuses what the reference pages allow, on purpose (README, "Limits the SDK adds")."""
    field = path.rsplit(".", 1)[-1]
    if field == "id" or field == "sku_id":  # an id is 1 to 64 characters, as every id field on the pages is
        return isinstance(value, str) and not 1 <= len(value) <= 64
    if field == "position":  # 1-based, and a JSON integer the API can read as a 64-bit number
        return isinstance(value, int) and not 1 <= value < 2**63
    return False


def agrees_with_the_spec(update: ProductUpdate | ImageUpdate, violations: Callable[[Any], list[str]]) -> None:
    """The SDK sends only what the page allows, and refuses only what the page forbids (or its
    stated policy does), naming the very path the page's rule is broken at."""
    encode = encode_product_update if isinstance(update, ProductUpdate) else encode_image_update
    try:
        body = encode(update)  # type: ignore[arg-type]
    except ValidationError as exc:
        sent = as_json(update)
        expected = set(violations(sent))
        for error in exc.errors:
            assert error.path in expected or sdk_policy(error.path, value_at(sent, error.path)), (error, expected)
        return
    assert violations(json.loads(body)) == [], body


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(products)
def test_random_product_updates_agree_with_the_reference_page(update: ProductUpdate) -> None:
    agrees_with_the_spec(update, product_update_violations)


def test_the_oracle_is_not_blind() -> None:
    """The reference page's own example passes it; a broken limit anywhere is found at its path."""
    assert product_update_violations({"product": {"title": "x", "variants": [{"price": "90.22"}]}}) == []
    assert product_update_violations({"product": {"variants": [{}, {"weight": "0.00"}]}}) == [
        "$.product.variants[1].weight"
    ]
    assert product_update_violations({"product": {"tags": ["a" * 256], "options": [{}] * 6}}) == [
        "$.product.tags[0]",
        "$.product.options",
    ]
    assert image_update_violations({"image": {"position": "1", "colour": "red"}}) == [
        "$.image.position",
        "$.image.colour",
    ]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(products)
def test_random_product_updates_send_money_with_at_least_two_places(update: ProductUpdate) -> None:
    try:
        body = encode_product_update(update)
    except ValidationError:
        return
    for variant in json.loads(body)["product"].get("variants") or []:
        for field in MONEY_FIELDS:
            if variant.get(field) is not None:
                assert Decimal(variant[field]).as_tuple().exponent <= -2  # more places go as given


# money as callers give it: mostly valid, in every form, with near misses of the wire form
valid_ish_money = st.one_of(
    st.builds(  # "12", "12.", "12.3", "12.34", "12.345"
        lambda whole, places, cents: f"{whole}." + f"{cents:03d}"[:places] if places >= 0 else str(whole),
        st.integers(min_value=0, max_value=9999),
        st.integers(min_value=-1, max_value=3),
        st.integers(min_value=0, max_value=999),
    ),
    st.integers(min_value=0, max_value=10**6),
    st.integers(min_value=0, max_value=10**6).map(lambda cents: cents / 100),
    st.decimals(min_value=0, max_value=10**6, places=2),
    st.decimals(min_value=0, max_value=10**6, places=3),
    st.sampled_from([float("inf"), float("nan"), Decimal("NaN"), "1.00\n", " 1.00", "+1.00", "1e2", "\u0661.00"]),
)


def both_paths(update: ProductUpdate | ImageUpdate) -> tuple[bytes | None, bytes | None]:
    """validate_and_encode first tries msgspec alone against the wire form; it must agree with validate()."""
    try:
        slow: bytes | None = msgspec.json.encode(validate(update))
    except ValidationError:
        slow = None
    try:
        fast: bytes | None = validate_and_encode(update)
    except ValidationError:
        fast = None
    return fast, slow


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(products, image_updates))
def test_the_wire_form_shortcut_agrees_with_the_full_check(update: ProductUpdate | ImageUpdate) -> None:
    fast, slow = both_paths(update)
    assert fast == slow


def through_the_model(row: dict[str, Any], cls: type[ProductUpdate] | type[ImageUpdate]) -> bytes | None:
    """What the model path sends for a row: the row converted into the model, then checked and encoded."""
    root = "$.product" if cls is ProductUpdate else "$.image"
    try:
        return validate_and_encode(coerce_update(row, cls, root), root)  # type: ignore[arg-type]
    except ValidationError:
        return None


rows = st.one_of(
    products.map(lambda update: (msgspec.to_builtins(update), ProductUpdate)),
    image_updates.map(lambda update: (msgspec.to_builtins(update), ImageUpdate)),
)
mutations = st.sampled_from(
    [
        None,
        ("colour", "red"),  # unknown
        ("id", "1"),  # read-only in a product
        ("created_at", "2026-01-01"),
        ("title", 12),
        ("position", "3"),  # a numeric string where a number goes: the model path is lax about it
        ("vendor", None),
    ]
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows, mutations)
def test_a_rows_one_pass_encoding_agrees_with_the_model_path(
    row_and_cls: tuple[dict[str, Any], type[ProductUpdate] | type[ImageUpdate]], mutation: tuple[str, Any] | None
) -> None:
    row, cls = row_and_cls
    if mutation is not None:
        row[mutation[0]] = mutation[1]
    fast = encode_mapping(row, cls)
    assert fast is None or fast == through_the_model(row, cls)


def test_a_rows_one_pass_encoding_takes_the_common_rows() -> None:
    """Not a shortcut that never runs: the documented forms go in one pass; the rest the model's way."""
    assert encode_mapping({"title": "x", "variants": [{"price": "90.22", "inventory_tracker": "true"}]}, ProductUpdate)
    assert encode_mapping({"title": "x", "id": "1"}, ProductUpdate) is None  # read-only: dropped on the model path
    assert encode_mapping({"variants": [{"price": 90.22}]}, ProductUpdate) is None  # normalised there
    assert encode_mapping({"colour": "red"}, ProductUpdate) is None  # refused there, with its path
    assert encode_mapping({"alt": "a", "position": 1, "sku_id": "7"}, ImageUpdate) == (
        b'{"alt":"a","position":1,"sku_id":"7"}'
    )
    assert encode_mapping({"position": 0}, ImageUpdate) is None
    assert encode_mapping({"position": 2**63}, ImageUpdate) is None  # beyond 64 bits signed: the model path decides


@pytest.mark.parametrize(
    "money",
    [
        *("0.00", "0.01", "90.22", "90.2", "90.", "90", "090.22", "90.220", "1.00\n", " 1.00", "+1.00", "1e2"),
        "\u0661.00",  # an Arabic-Indic digit: the pattern says [0-9], not \d
        *(Decimal("90.22"), Decimal("90.2"), Decimal("1E+1"), Decimal("NaN")),
        *(90.22, 90, 0, float("inf"), float("nan")),
    ],
)
@pytest.mark.parametrize("field", ["price", "weight"])
def test_the_wire_form_shortcut_agrees_on_each_money_form(money: object, field: str) -> None:
    fast, slow = both_paths(ProductUpdate(variants=[VariantInput(**{field: money})]))
    assert fast == slow


@settings(max_examples=300, deadline=None)
# unset or money that is mostly valid: most examples pass, so the bytes of both paths are compared
@given(st.lists(st.tuples(*[st.one_of(st.just(msgspec.UNSET), valid_ish_money)] * 2), min_size=1, max_size=3))
def test_the_wire_form_shortcut_agrees_on_money(prices: list[tuple[object, object]]) -> None:
    update = ProductUpdate(variants=[VariantInput(price=price, weight=weight) for price, weight in prices])  # type: ignore[arg-type]
    fast, slow = both_paths(update)
    assert fast == slow


@settings(max_examples=200, deadline=None)
@given(image_updates)
def test_random_image_updates_agree_with_the_reference_page(update: ImageUpdate) -> None:
    agrees_with_the_spec(update, image_update_violations)


# --- hostile responses from a server that misbehaves on purpose -----------------------------------

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@pytest.fixture
async def hostile() -> AsyncIterator[Callable[[Handler], Awaitable[str]]]:
    runners: list[web.AppRunner] = []

    async def serve(handler: Handler) -> str:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handler)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        port = runner.addresses[0][1]
        return f"http://127.0.0.1:{port}"

    yield serve
    for runner in runners:
        await runner.cleanup()


def fixed(status: int, body: bytes, content_type: str = "application/json", **headers: str) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        await request.read()
        return web.Response(status=status, body=body, content_type=content_type, headers=headers)

    return handler


async def call(base_url: str, product_id: str = "1", **client: object) -> object:
    async with ShoplineClient(base_url=base_url, retry=RetryPolicy(max_attempts=2, initial_delay=0.01), **client) as c:  # type: ignore[arg-type]
        return await c.store("shop", "token").products.update(product_id, ProductUpdate(title="x"))


@pytest.mark.parametrize(
    "body",
    [
        b"<html><body>Bad Gateway</body></html>",
        b'{"product": {"id": "1", "title": ',
        b'{"product": {"variants": "not a list"}}',
        b'{"product": {"tags": {"a": 1}}}',
        b'{"product": {"title": ["not", "text"]}}',
        b"",
        b"null",
        b"\xff\xfe\x00garbage",
    ],
)
async def test_undecodable_2xx_is_a_decode_error(hostile, body: bytes) -> None:
    base_url = await hostile(fixed(200, body, traceId="tr-1"))
    with pytest.raises(ResponseDecodeError) as exc:
        await call(base_url)
    assert exc.value.status == 200 and exc.value.trace_id == "tr-1" and exc.value.attempts == 1


async def test_lenient_answers_decode_into_the_model(hostile) -> None:
    body = (
        b'{"product": {"id": 16069938731613985273252340, "tags": null, "images": null, "options": null,'
        b' "variants": [{"id": 18, "price": 10.10, "weight": 1, "compare_at_price": null, "image": null}]}}'
    )
    # an integer id in the answer is the id asked for, as its decimal text
    product = await call(await hostile(fixed(200, body)), "16069938731613985273252340")
    assert isinstance(product, Product)
    assert product.id == "16069938731613985273252340" and product.tags == []
    assert product.images == [] and product.options == []
    (variant,) = product.variants
    assert (variant.id, variant.price, variant.weight, variant.compare_at_price) == ("18", "10.10", "1", None)


@pytest.mark.parametrize("body", [b"{}", b'{"product": null}', b' {"product" : null, "other": 1} '])
async def test_a_2xx_without_the_product_is_applied_without_a_body(hostile, body: bytes) -> None:
    base_url = await hostile(fixed(200, body, traceId="tr-9"))
    with pytest.raises(AppliedWithoutBodyError) as exc:
        await call(base_url)
    assert not isinstance(exc.value, APIError)  # not a failure: the write was applied
    assert (exc.value.status, exc.value.trace_id, exc.value.attempts) == (200, "tr-9", 1)
    assert exc.value.headers["traceid"] == "tr-9"
    async with ShoplineClient(base_url=base_url) as client:
        ops = [UpdateProduct("shop", "1", {"title": "x"})]
        if body == b"{}":  # the image endpoint's own empty answer
            ops.append(UpdateImage("shop", "1", "2", {"alt": "a"}))
        client.store("shop", "token")
        report = await BatchExecutor(client).gather(ops)
    assert [(r.outcome, r.ok, r.data, r.trace_id) for r in report.results] == [
        ("applied_without_body", True, None, "tr-9")
    ] * len(ops)
    assert report.summary.ok == len(ops) and report.summary.failed == 0


async def test_oversized_body_is_refused_not_read(hostile) -> None:
    base_url = await hostile(fixed(200, b'{"product":{"title":"' + b"x" * (10 * 1024 * 1024) + b'"}}'))
    with pytest.raises(ResponseDecodeError, match="exceeds 1048576 bytes"):
        await call(base_url, max_response_bytes=1024 * 1024)


async def test_oversized_streamed_body_is_refused(hostile) -> None:
    async def chunked(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        for _ in range(40):
            await response.write(b" " * 65536)
        await response.write_eof()
        return response

    with pytest.raises(ResponseDecodeError, match="exceeds"):
        await call(await hostile(chunked), max_response_bytes=1024 * 1024)


async def test_missing_trace_id_and_unexpected_statuses(hostile) -> None:
    product = await call(await hostile(fixed(200, b'{"product": {"id": "1"}}')))
    assert product.id == "1"  # type: ignore[attr-defined]
    with pytest.raises(APIStatusError) as teapot:
        await call(await hostile(fixed(418, b"I'm a teapot", "text/plain")))
    assert teapot.value.status == 418 and "teapot" in str(teapot.value) and teapot.value.errors is None
    with pytest.raises(APIStatusError) as redirect:
        await call(await hostile(fixed(303, b"", Location="https://evil.example/steal")))
    assert redirect.value.status == 303  # not followed: the token never goes to another host


async def test_a_response_that_never_ends_times_out(hostile) -> None:
    async def stall(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/json", "Content-Length": "100"})
        await response.prepare(request)
        await response.write(b'{"product":')
        await asyncio.sleep(10)
        return response

    with pytest.raises(APITimeoutError) as exc:
        await call(await hostile(stall), timeout=Timeout(total=0.2))
    assert exc.value.attempts == 2


# --- transport hardening: bombs, echoed secrets, answers about another resource, proxies ------------

_BOMB_SIZE = 256 * 1024 * 1024  # inflated; about 250 KB on the wire


def _bomb(wbits: int) -> bytes:
    packer = zlib.compressobj(9, zlib.DEFLATED, wbits)
    zeros = bytes(1024 * 1024)
    return b"".join(packer.compress(zeros) for _ in range(_BOMB_SIZE // len(zeros))) + packer.flush()


@pytest.fixture(scope="module")
def bombs() -> dict[str, bytes]:
    return {"gzip": _bomb(31), "deflate": _bomb(15)}


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
async def test_a_compression_bomb_with_a_small_content_length_is_cut_at_the_cap(
    hostile, bombs: dict[str, bytes], encoding: str
) -> None:
    bomb = bombs[encoding]
    assert len(bomb) < 1024 * 1024  # the Content-Length is within the cap: only the inflated size is not
    base_url = await hostile(fixed(200, bomb, **{"Content-Encoding": encoding, "traceId": "bomb"}))
    tracemalloc.start()
    try:
        with pytest.raises(ResponseDecodeError, match="exceeds 1048576 bytes") as exc:
            await call(base_url, max_response_bytes=1024 * 1024)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert exc.value.status == 200 and exc.value.trace_id == "bomb"
    # the cap (1 MiB) twice over and the bomb itself, not the 256 MiB it inflates to
    assert peak < 8 * 1024 * 1024, peak


async def test_a_compressed_answer_within_the_cap_decodes(hostile) -> None:
    body = b'{"product": {"id": "1", "title": "' + b"x" * 200 + b'"}}'
    for encoding, packed in (("gzip", gzip.compress(body)), ("deflate", zlib.compress(body))):
        product = await call(await hostile(fixed(200, packed, **{"Content-Encoding": encoding})))
        assert product.title == "x" * 200  # type: ignore[attr-defined]


def echo_token(status: int, content_type: str) -> Handler:
    """A server (or proxy) that repeats the request's Authorization header in its body and a header."""

    async def handler(request: web.Request) -> web.StreamResponse:
        await request.read()
        said = request.headers["Authorization"]
        if content_type == "application/json":
            body = json.dumps({"errors": f"bad token {said}", "token": said.split()[1]}).encode()
        else:
            body = f"<html><body><h1>{status}</h1><pre>Authorization: {said}</pre></body></html>".encode()
        return web.Response(status=status, body=body, content_type=content_type, headers={"X-Echo": said})

    return handler


SECRET = "sk-live-echoed/secret+token"


@pytest.mark.parametrize(
    ("status", "content_type"), [(400, "application/json"), (502, "text/html"), (200, "text/html")]
)
async def test_a_token_echoed_by_the_server_reaches_no_error_log_or_result(
    hostile, status: int, content_type: str, caplog, tmp_path, monkeypatch
) -> None:
    base_url = await hostile(echo_token(status, content_type))
    caplog.set_level(logging.DEBUG, logger="shopline_async")
    async with ShoplineClient(base_url=base_url, retry=RetryPolicy(max_attempts=2, initial_delay=0.01)) as client:
        with pytest.raises(APIError) as exc:
            await client.store("shop", SECRET).products.update("1", ProductUpdate(title="x"))
    error = exc.value
    texts = [str(error), repr(error), caplog.text, repr(getattr(error, "errors", None)), repr(dict(error.headers))]
    texts.append(getattr(error, "body", b"").decode("latin-1"))
    assert "[REDACTED]" in str(error) + texts[-1] + texts[-2]
    for text in texts:
        assert SECRET not in text and SECRET.replace("/", "\\/") not in text

    from shopline_async.cli import main

    source = tmp_path / "c.jsonl"
    source.write_text('{"product_id": "1", "product": {"title": "x"}}\n')
    monkeypatch.setenv("SHOPLINE_ACCESS_TOKEN", SECRET)
    monkeypatch.chdir(tmp_path)
    await asyncio.to_thread(
        main,
        ["sync", str(source), "--store", "shop", "--base-url", base_url, "--progress", "never", "--max-attempts", "1"],
    )
    results = (tmp_path / "c.jsonl.results.jsonl").read_text()
    assert "REDACTED" in results and SECRET not in results and SECRET.replace("/", "\\/") not in results


async def test_a_token_too_short_to_be_a_credential_does_not_garble_what_the_server_said() -> None:
    # a mock or test token such as "t": scrubbed, "not found" would read "no[REDACTED] found"
    sender = MockSender(lambda request: HTTPResponse(404, {"traceId": "t1"}, b'{"errors": "not found: the product"}'))
    async with ShoplineClient(sender=sender) as client:
        with pytest.raises(APIError) as exc:
            await client.store("shop", "t").products.update("1", {"title": "x"})
    assert "not found: the product" in str(exc.value)


async def test_a_2xx_about_another_product_is_an_error_not_a_success(hostile, tmp_path) -> None:
    asked: list[str] = []

    async def other(request: web.Request) -> web.StreamResponse:
        asked.append(request.path)
        await request.read()
        return web.Response(
            body=b'{"product": {"id": "999999"}}', content_type="application/json", headers={"traceId": "tr-other"}
        )

    base_url = await hostile(other)
    with pytest.raises(ResponseMismatchError) as exc:
        await call(base_url, "123")
    error = exc.value
    assert (error.field, error.expected, error.received, error.trace_id) == ("id", "123", "999999", "tr-other")
    assert "999999" in str(error) and "123" in str(error) and error.attempts == 1  # not retried
    async with ShoplineClient(base_url=base_url) as client:
        client.store("shop", "token")
        with Ledger(tmp_path / "l.sqlite3") as ledger:
            report = await BatchExecutor(client, ledger=ledger).gather([UpdateProduct("shop", "123", {"title": "x"})])
            (result,) = report.results
            assert result.outcome == "failed" and isinstance(result.error, ResponseMismatchError)
            store = client.get_store("shop")
            assert store is not None
            entry = ledger.last(store.base_url, "shop", "/admin/openapi/v20260601/products/123.json")
            assert entry is not None and not entry.ok


async def test_an_image_answer_for_another_product_is_an_error() -> None:
    def answer(request: HTTPRequest) -> HTTPResponse:
        return HTTPResponse(200, {"traceId": "t"}, b'{"image": {"id": "5", "product_id": "other"}}')

    async with ShoplineClient(sender=MockSender(answer)) as client:
        with pytest.raises(ResponseMismatchError, match="product_id"):
            await client.store("shop", "token").images.update("mine", "5", ImageUpdate(alt="x"))


def test_plain_http_through_a_proxy_off_this_machine_is_refused(monkeypatch) -> None:
    # refused when the store is made: nothing is ever sent to the proxy
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.invalid:3128")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    with pytest.raises(ConfigError, match=r"through the proxy proxy\.invalid"):
        ShoplineClient(base_url="http://127.0.0.1:8080", trust_env=True).store("shop", "token")
    with pytest.raises(ConfigError, match="through the proxy"):
        ShoplineClient(base_url="http://127.0.0.1:8080", proxy="http://proxy.invalid:3128").store("shop", "token")
    # allowed: asked for, a proxy on this machine, TLS to the store (tunnelled), no proxy from the environment
    ShoplineClient(base_url="http://127.0.0.1:8080", trust_env=True, allow_insecure_http=True).store("shop", "t")
    ShoplineClient(base_url="http://127.0.0.1:8080", proxy="http://127.0.0.1:3128").store("shop", "t")
    ShoplineClient(trust_env=True).store("shop", "t")
    ShoplineClient(base_url="http://127.0.0.1:8080").store("shop", "t")


async def test_a_negative_retry_after_is_ignored_and_backoff_applies(hostile) -> None:
    answers = iter([(503, b'{"errors": "busy"}'), (200, b'{"product": {"id": "1"}}')])

    async def flaky(request: web.Request) -> web.StreamResponse:
        status, body = next(answers)
        return web.Response(status=status, body=body, content_type="application/json", headers={"Retry-After": "-30"})

    base_url = await hostile(flaky)
    policy = RetryPolicy(max_attempts=2, initial_delay=0.3, jitter=False)
    async with ShoplineClient(base_url=base_url, retry=policy) as client:
        response = await client.store("shop", "token").products.update_with_response("1", ProductUpdate(title="x"))
    assert response.attempts == 2 and response.elapsed >= 0.3  # the backoff's 0.3 s, not "retry at once"


async def test_a_body_cut_short_keeps_the_status_that_had_arrived() -> None:
    async def half(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b'HTTP/1.1 200 OK\r\nContent-Length: 100\r\ntraceId: tr-cut\r\n\r\n{"product":')
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(half, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        with pytest.raises(APIConnectionError) as exc:
            await call(f"http://127.0.0.1:{port}")
    finally:
        server.close()
        await server.wait_closed()
    assert exc.value.status == 200 and exc.value.trace_id == "tr-cut"


async def test_a_copy_made_before_a_token_refresh_sends_the_new_token(fake_time: None) -> None:
    sender = MockSender(lambda request: HTTPResponse(200, {}, b'{"product": {"id": "1"}}'))
    async with ShoplineClient(sender=sender) as client:
        store = client.store("shop", "old-token")
        patient = client.with_options(retry=RetryPolicy(max_attempts=8))
        client.store("shop", "new-token")  # refreshed on the original
        await patient.store("shop", "new-token").products.update("1", {"title": "x"})
        await patient.get_store("shop").products.update("1", {"title": "x"})  # type: ignore[union-attr]
        store.set_access_token("newer-token")  # and the other way round
        await patient.get_store("shop").products.update("1", {"title": "x"})  # type: ignore[union-attr]
        assert client.get_store("shop") is store
    said = [request.headers["Authorization"] for request in sender.requests]
    assert said == ["Bearer new-token", "Bearer new-token", "Bearer newer-token"]


async def test_the_mock_refuses_compressed_request_bodies(mock_server) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", int(mock_server.base_url.rsplit(":", 1)[1]))
    body = gzip.compress(b'{"product": {"title": "x"}}')
    writer.write(
        b"PUT /admin/openapi/v20260601/products/1.json HTTP/1.1\r\nHost: alpha\r\n"
        b"Authorization: Bearer token-alpha\r\nContent-Type: application/json\r\nContent-Encoding: gzip\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )
    await writer.drain()
    status_line = await reader.readline()
    writer.close()
    assert status_line.startswith(b"HTTP/1.1 415 ")
