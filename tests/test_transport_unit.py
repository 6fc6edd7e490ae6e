"""Request building and response mapping with aiohttp patched by aioresponses.

aioresponses does not work on aiohttp >= 3.14, so these are skipped where it
is not installed (the latest-aiohttp CI step); the real-server tests cover
the same paths end to end on every aiohttp.
"""

from __future__ import annotations

import json

import pytest

aioresponses_module = pytest.importorskip("aioresponses")

from yarl import URL  # noqa: E402

from shopline_async import (  # noqa: E402
    AuthenticationError,
    ConfigError,
    ImageUpdate,
    InvalidRequestError,
    ProductUpdate,
    ResponseDecodeError,
    RetryPolicy,
    SecurityBlockError,
    ShoplineClient,
    StoreLockedError,
)

pytestmark = pytest.mark.aioresponses

BASE = "https://open001.myshopline.com"
PRODUCT_URL = f"{BASE}/admin/openapi/v20260601/products/123.json"
TOKEN = "secret-token-abc"


@pytest.fixture
def mocked():
    with aioresponses_module.aioresponses() as m:
        yield m


async def test_product_update_request_is_built_to_the_letter(mocked) -> None:
    mocked.put(PRODUCT_URL, payload={"product": {"id": "123", "title": "x"}}, headers={"traceId": "abc"})
    async with ShoplineClient() as client:
        response = await client.store("open001", TOKEN).products.update_with_response("123", ProductUpdate(title="x"))
    assert (response.status, response.trace_id, response.data.title) == (200, "abc", "x")
    (call,) = mocked.requests[("PUT", URL(PRODUCT_URL))]
    assert call.kwargs["data"] == b'{"product":{"title":"x"}}'
    assert call.kwargs["headers"]["Authorization"] == f"Bearer {TOKEN}"
    assert call.kwargs["headers"]["Content-Type"] == "application/json; charset=utf-8"
    assert call.kwargs["allow_redirects"] is False


async def test_image_update_url_and_body(mocked) -> None:
    url = f"{BASE}/admin/openapi/v20250601/products/16057/images/5785.json"
    mocked.put(url, payload={"image": {"id": "5785", "alt": "a", "position": 2}}, headers={"traceId": "t"})
    async with ShoplineClient() as client:
        image = await client.store("open001", TOKEN).images.update("16057", "5785", ImageUpdate(alt="a", position=2))
    assert (image.id, image.position) == ("5785", 2)
    (call,) = mocked.requests[("PUT", URL(url))]
    assert json.loads(call.kwargs["data"]) == {"image": {"alt": "a", "position": 2}}


async def test_api_version_can_be_overridden_per_client_and_per_call(mocked) -> None:
    mocked.put(f"{BASE}/admin/openapi/v20250901/products/1.json", payload={"product": {}})
    mocked.put(f"{BASE}/admin/openapi/v20251201/products/1.json", payload={"product": {}})
    async with ShoplineClient(products_api_version="v20250901") as client:
        store = client.store("open001", TOKEN)
        await store.products.update("1", {"title": "a"})
        await store.products.update("1", {"title": "a"}, api_version="v20251201")
        for bad in ("", "2025-12-01"):  # refused before sending; only None means the client's version
            with pytest.raises(ConfigError, match="invalid API version"):
                await store.products.update("1", {"title": "a"}, api_version=bad)
            with pytest.raises(ConfigError, match="invalid API version"):
                store.images.prepare("1", "2", {"alt": "a"}, api_version=bad)
    assert len(mocked.requests) == 2


@pytest.mark.parametrize(
    ("status", "payload", "cls", "errors"),
    [
        (401, {"errors": "[API] Invalid token"}, AuthenticationError, "[API] Invalid token"),
        (422, {"errors": ["title too long", "price bad"]}, InvalidRequestError, ["title too long", "price bad"]),
        (
            412,
            {"errors": {"body_html": "script not allowed"}},
            InvalidRequestError,
            {"body_html": "script not allowed"},
        ),
        (423, {"errors": "store locked"}, StoreLockedError, "store locked"),
        (434, {"errors": "blocked"}, SecurityBlockError, "blocked"),
    ],
)
async def test_error_statuses_map_and_are_not_retried(mocked, status, payload, cls, errors) -> None:
    mocked.put(PRODUCT_URL, status=status, payload=payload, headers={"traceId": "tr-9"}, repeat=True)
    async with ShoplineClient(retry=RetryPolicy(initial_delay=0.001)) as client:
        with pytest.raises(cls) as exc:
            await client.store("open001", TOKEN).products.update("123", ProductUpdate(title="x"))
    assert (exc.value.status, exc.value.trace_id, exc.value.errors, exc.value.attempts) == (status, "tr-9", errors, 1)
    assert exc.value.url == PRODUCT_URL and exc.value.method == "PUT"
    assert TOKEN not in str(exc.value) and TOKEN not in repr(exc.value)
    assert len(mocked.requests[("PUT", URL(PRODUCT_URL))]) == 1


@pytest.mark.parametrize(
    "body",
    [b"<html>oops</html>", b'{"product": {"id": "1"', b'{"products": []}', b'{"product": "x"}', b"", b"[]"],
)
async def test_undecodable_success_body_is_a_typed_error(mocked, body: bytes) -> None:
    mocked.put(PRODUCT_URL, status=200, body=body, headers={"traceId": "tr-x"})
    async with ShoplineClient() as client:
        with pytest.raises(ResponseDecodeError) as exc:
            await client.store("open001", TOKEN).products.update("123", ProductUpdate(title="x"))
    assert (exc.value.status, exc.value.trace_id) == (200, "tr-x")
    assert "may have been applied" in str(exc.value)
