"""The mock SHOPLINE server's own behaviour, spoken to with plain aiohttp."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from conftest import spec_example

from shopline_async.mock import Faults, MockShopline, MockStoreConfig

PRODUCT = "/admin/openapi/v20260601/products/{}.json"
IMAGE = "/admin/openapi/v20250601/products/{}/images/{}.json"
AUTH = {"Authorization": "Bearer token-a", "Content-Type": "application/json; charset=utf-8"}


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def put(
    http: aiohttp.ClientSession, server: MockShopline, path: str, body: Any, headers: dict[str, str] | None = None
) -> tuple[int, Any, str]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    async with http.put(server.base_url + path, data=data, headers=AUTH if headers is None else headers) as resp:
        text = await resp.text()
        return resp.status, json.loads(text) if text else None, resp.headers["traceId"]


def server(**config: Any) -> MockShopline:
    return MockShopline({"token-a": "a", "token-b": "b"}, config=MockStoreConfig(**config), record_traces=True)


async def test_upsert_then_partial_merge(http: aiohttp.ClientSession) -> None:
    async with server(rate=None) as s:
        body = {
            "product": {
                "title": "Shirt",
                "tags": ["linen", "summer"],
                "images": [{"src": "https://img/1.png", "alt": "front"}],
                "options": [{"name": "Color"}, {"name": "Size"}],
                "variants": [{"option1": "Red", "option2": "L", "price": "10.00", "sku": "S1"}],
            }
        }
        status, created, _ = await put(http, s, PRODUCT.format("p1"), body)
        assert status == 200
        product = created["product"]
        assert product["id"] == "p1" and product["status"] == "draft" and product["tags"] == "linen,summer"
        assert product["variants"][0]["title"] == "Red · L" and product["variants"][0]["id"]
        assert product["options"][0]["values"] == ["Red"] and product["options"][1]["values"] == ["L"]
        assert product["images"][0]["id"] and product["image"] == product["images"][0]
        assert product["handle"] == "shirt"

        await asyncio.sleep(1.01)  # timestamps have one-second resolution
        variant_id = product["variants"][0]["id"]
        status, updated, _ = await put(
            http, s, PRODUCT.format("p1"), {"product": {"vendor": "V", "variants": [{"id": variant_id, "price": "12"}]}}
        )
        merged = updated["product"]
        assert (merged["title"], merged["vendor"], merged["tags"]) == ("Shirt", "V", "linen,summer")
        assert merged["variants"][0]["price"] == "12.00" and merged["variants"][0]["sku"] == "S1"
        assert merged["created_at"] == product["created_at"] and merged["updated_at"] > product["updated_at"]
        assert s.stats("a").writes == {"p1": 2}

        async with http.get(s.base_url + PRODUCT.format("p1"), headers=AUTH) as resp:
            assert resp.status == 200 and (await resp.json())["product"] == merged
        async with http.get(s.base_url + PRODUCT.format("nope"), headers=AUTH) as resp:
            assert resp.status == 404 and "errors" in await resp.json()


async def test_money_is_rounded_to_two_places_as_the_reference_says(http: aiohttp.ClientSession) -> None:
    async with server(rate=None) as s:
        variants = [{"price": "1.995", "compare_at_price": "2.004", "weight": "0.001"}, {"price": "3.10"}]
        _, body, _ = await put(http, s, PRODUCT.format("p"), {"product": {"variants": variants}})
    sent = [(v["price"], v["compare_at_price"], v["weight"]) for v in body["product"]["variants"]]
    # prices "rounded to two decimal places"; a weight "rounded up if it exceeds two decimal places"
    assert sent == [("2.00", "2.00", "0.01"), ("3.10", "0.00", None)]


async def test_response_has_the_full_documented_shape(http: aiohttp.ClientSession) -> None:
    async with server(rate=None) as s:
        _, body, _ = await put(http, s, PRODUCT.format("p"), spec_example("product_request_example.json"))
    expected = spec_example("product_response_example.json")["product"]
    assert set(body["product"]) == set(expected)
    assert set(body["product"]["variants"][0]) == set(expected["variants"][0])
    assert set(body["product"]["options"][0]) >= set(expected["options"][0])


async def test_image_update(http: aiohttp.ClientSession) -> None:
    async with server(rate=None) as s:
        images = [{"src": f"https://img/{n}.png"} for n in range(3)]
        _, created, _ = await put(http, s, PRODUCT.format("p"), {"product": {"images": images}})
        last = created["product"]["images"][2]["id"]
        status, body, _ = await put(http, s, IMAGE.format("p", last), spec_example("image_request_example.json"))
        assert status == 200
        image = body["image"]
        assert (image["id"], image["alt"], image["position"], image["product_id"]) == (
            last,
            "This is a image alt",
            1,
            "p",
        )
        assert set(image) == set(spec_example("image_response_example.json")["image"]) | {"sku_id"}
        assert s.product("a", "p")["images"][0]["id"] == last  # moved to the front
        status, body, _ = await put(http, s, IMAGE.format("p", "missing"), {"image": {"alt": "x"}})
        assert status == 404 and "missing" in body["errors"]
        status, _, _ = await put(http, s, IMAGE.format("no-product", last), {"image": {"alt": "x"}})
        assert status == 404


@pytest.mark.parametrize(
    ("headers", "body", "status", "error"),
    [
        ({}, {"product": {}}, 401, "Missing access token"),
        ({"Authorization": "Bearer nope"}, {"product": {}}, 401, "Invalid access token"),
        ({**AUTH, "Content-Type": "text/plain"}, {"product": {}}, 400, "Content-Type"),
        (AUTH, b"{not json", 400, "Invalid JSON"),
        (AUTH, {"title": "no envelope"}, 422, "product is required"),
        (AUTH, {"product": {"title": "x" * 256}}, 422, "$.product.title"),
        (AUTH, {"product": {"variants": [{"price": "-1.99"}]}}, 422, "$.product.variants[0].price"),
        (AUTH, {"product": {"status": "live"}}, 422, "$.product.status"),
    ],
)
async def test_error_bodies(http: aiohttp.ClientSession, headers: dict, body: Any, status: int, error: str) -> None:
    async with server(rate=None) as s:
        got, payload, trace_id = await put(http, s, PRODUCT.format("p"), body, headers)
    assert got == status and error in json.dumps(payload["errors"]) and trace_id


async def test_unknown_fields_are_ignored_like_the_api(http: aiohttp.ClientSession) -> None:
    async with server(rate=None) as s:
        status, body, _ = await put(http, s, PRODUCT.format("p"), {"product": {"title": "t", "activated_at": "x"}})
    assert status == 200 and body["product"]["title"] == "t"


async def test_every_response_has_a_unique_trace_id(http: aiohttp.ClientSession) -> None:
    async with server(rate=None) as s:
        seen = []
        for path, body in [(PRODUCT.format("p"), {"product": {}}), ("/nowhere", {}), (IMAGE.format("p", "x"), {})]:
            seen.append((await put(http, s, path, body))[2])
        async with http.get(s.base_url + "/admin/openapi/v20260601/products/a/b/c", headers=AUTH) as resp:
            seen.append(resp.headers["traceId"])
        async with http.delete(s.base_url + PRODUCT.format("p"), headers=AUTH) as resp:
            assert resp.status == 405
            seen.append(resp.headers["traceId"])
    assert len(set(seen)) == len(seen) == 5


async def test_queue_mode_serves_at_the_rate_and_refuses_beyond_capacity(http: aiohttp.ClientSession) -> None:
    async with server(rate=50, capacity=5, mode="queue") as s:
        started = time.monotonic()
        results = await asyncio.gather(*(put(http, s, PRODUCT.format(f"p{n}"), {"product": {}}) for n in range(7)))
        elapsed = time.monotonic() - started
        statuses = sorted(r[0] for r in results)
        # one served at once, five wait their turn (20 ms apart), the seventh finds the bucket full
        assert statuses == [200] * 6 + [429]
        assert [r[1] for r in results if r[0] == 429] == [{"errors": "Too many request"}]
        assert 0.09 <= elapsed < 0.3
        assert s.stats("a").http_429 == 1 and s.stats("a").max_in_flight >= 6
        # another store has its own bucket
        status, _, _ = await put(
            http, s, PRODUCT.format("q"), {"product": {}}, {**AUTH, "Authorization": "Bearer token-b"}
        )
        assert status == 200


async def test_reject_mode_passes_or_fails_at_once(http: aiohttp.ClientSession) -> None:
    async with server(rate=10, capacity=3, mode="reject", retry_after=0.1) as s:
        results = await asyncio.gather(*(put(http, s, PRODUCT.format(f"p{n}"), {"product": {}}) for n in range(5)))
        assert sorted(r[0] for r in results) == [200, 200, 200, 429, 429]
        await asyncio.sleep(0.12)  # one request's worth has drained
        assert (await put(http, s, PRODUCT.format("x"), {"product": {}}))[0] == 200
        assert (await put(http, s, PRODUCT.format("y"), {"product": {}}))[0] == 429
        async with http.put(s.base_url + PRODUCT.format("z"), data=b'{"product":{}}', headers=AUTH) as resp:
            assert resp.status == 429 and resp.headers["Retry-After"] == "0.1"


async def test_unlimited_mode_has_no_bucket(http: aiohttp.ClientSession) -> None:
    async with server(rate=None) as s:
        results = await asyncio.gather(*(put(http, s, PRODUCT.format(f"p{n}"), {"product": {}}) for n in range(60)))
    assert {r[0] for r in results} == {200}


async def _status_sequence(seed: int) -> tuple[list[int | str], int]:
    faults = Faults(seed=seed, error_rate=0.3, drop_rate=0.1, garbage_rate=0.1)
    out: list[int | str] = []
    async with server(rate=None, faults=faults) as s, aiohttp.ClientSession() as http:
        for n in range(40):
            try:
                async with http.put(s.base_url + PRODUCT.format(n % 5), data=b'{"product":{}}', headers=AUTH) as resp:
                    body = await resp.read()
                    try:
                        json.loads(body)
                        out.append(resp.status)
                    except ValueError:
                        out.append("garbage")
            except aiohttp.ClientError:
                out.append("dropped")
        # aiohttp quietly resends a PUT once after a dropped connection, so count drops at the server
        return out, s.stats("a").dropped


async def test_faults_are_reproducible_from_the_seed() -> None:
    first, again, other = await _status_sequence(1), await _status_sequence(1), await _status_sequence(2)
    assert first == again
    assert first != other
    statuses, dropped = first
    assert dropped > 0 and {"garbage", 200} <= set(statuses)
    assert any(isinstance(x, int) and x >= 500 for x in statuses)


async def test_fail_first_then_succeed(http: aiohttp.ClientSession) -> None:
    async with server(rate=None, faults=Faults(fail_first=2, fail_status=502)) as s:
        statuses = [(await put(http, s, PRODUCT.format("p"), {"product": {}}))[0] for _ in range(4)]
        assert statuses == [502, 502, 200, 200]
        assert s.stats("a").writes == {"p": 2} and s.stats("a").statuses == {502: 2, 200: 2}
        assert s.stats("a").requests == 4


async def test_latency_and_stall(http: aiohttp.ClientSession) -> None:
    async with server(rate=None, faults=Faults(latency_rate=1.0, latency=0.1)) as s:
        started = time.monotonic()
        await put(http, s, PRODUCT.format("p"), {"product": {}})
        assert time.monotonic() - started >= 0.1
    async with server(rate=None, faults=Faults(stall_rate=1.0, stall_seconds=5)) as s:
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(put(http, s, PRODUCT.format("p"), {"product": {}}), 0.2)
