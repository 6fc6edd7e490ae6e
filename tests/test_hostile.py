"""Hostile input and hostile responses: a typed error or a model, never a crash, a hang or a leak."""

from __future__ import annotations

import asyncio
import json
import re
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
    APIError,
    APIStatusError,
    APITimeoutError,
    AppliedWithoutBodyError,
    BatchExecutor,
    ImageInput,
    ImageUpdate,
    OptionInput,
    Product,
    ProductUpdate,
    ResponseDecodeError,
    RetryPolicy,
    ShoplineClient,
    Timeout,
    UpdateImage,
    UpdateProduct,
    ValidationError,
    VariantInput,
)
from shopline_async._codec import encode_image_update, encode_product_update
from shopline_async.models._validate import validate, validate_and_encode

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


async def call(base_url: str, **client: object) -> object:
    async with ShoplineClient(base_url=base_url, retry=RetryPolicy(max_attempts=2, initial_delay=0.01), **client) as c:  # type: ignore[arg-type]
        return await c.store("shop", "token").products.update("1", ProductUpdate(title="x"))


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
    product = await call(await hostile(fixed(200, body)))
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
