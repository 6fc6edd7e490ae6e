"""The request path above the network, with a MockSender (as httpx's MockTransport): exact requests,
status and send-error mapping, retries, token refresh. Nothing here opens a socket."""

from __future__ import annotations

import json

import pytest

from shopline_async import (
    APIConnectionError,
    APITimeoutError,
    AuthenticationError,
    ConfigError,
    ConnectFailed,
    HTTPRequest,
    HTTPResponse,
    ImageUpdate,
    InvalidRequestError,
    MockSender,
    NotFoundError,
    ProductUpdate,
    ResponseDecodeError,
    ResponseTooLarge,
    RetryPolicy,
    SecurityBlockError,
    SendTimeout,
    ShoplineClient,
    StoreLockedError,
)

BASE = "https://open001.myshopline.com"
PRODUCT_URL = f"{BASE}/admin/openapi/v20260601/products/123.json"
TOKEN = "secret-token-abc"
FAST = RetryPolicy(initial_delay=0.001, max_delay=0.002)


def answer(status: int, body: object, **headers: str) -> HTTPResponse:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return HTTPResponse(status, {"traceId": f"tr-{status}", **headers}, raw)


def client_with(*answers: HTTPResponse | Exception, retry: RetryPolicy = FAST, **options: object) -> ShoplineClient:
    """A client whose sender gives these answers in turn (the last one again and again)."""
    queue = list(answers)

    def handler(request: HTTPRequest) -> HTTPResponse:
        reply = queue.pop(0) if len(queue) > 1 else queue[0]
        if isinstance(reply, Exception):
            raise reply
        return reply

    return ShoplineClient(sender=MockSender(handler), retry=retry, **options)  # type: ignore[arg-type]


def sent(client: ShoplineClient) -> list[HTTPRequest]:
    sender = client.sender
    assert isinstance(sender, MockSender)
    return sender.requests


async def test_product_update_request_is_built_to_the_letter() -> None:
    async with client_with(answer(200, {"product": {"id": "123", "title": "x"}}, traceId="abc")) as client:
        response = await client.store("open001", TOKEN).products.update_with_response("123", ProductUpdate(title="x"))
    assert (response.status, response.trace_id, response.data.title) == (200, "abc", "x")
    (request,) = sent(client)
    assert (request.method, str(request.url)) == ("PUT", PRODUCT_URL)
    assert request.body == b'{"product":{"title":"x"}}'
    assert request.headers["Authorization"] == f"Bearer {TOKEN}"
    assert request.headers["Content-Type"] == "application/json; charset=utf-8"
    assert request.headers["Accept"] == "application/json"
    assert request.headers["User-Agent"].startswith("shopline-async/")
    assert TOKEN not in repr(request)


async def test_image_update_url_and_body() -> None:
    body = {"image": {"id": "5785", "alt": "a", "position": 2}}
    async with client_with(answer(200, body)) as client:
        image = await client.store("open001", TOKEN).images.update("16057", "5785", ImageUpdate(alt="a", position=2))
    assert (image.id, image.position) == ("5785", 2)
    (request,) = sent(client)
    assert str(request.url) == f"{BASE}/admin/openapi/v20250601/products/16057/images/5785.json"
    assert json.loads(request.body) == {"image": {"alt": "a", "position": 2}}


async def test_api_version_can_be_overridden_per_client_and_per_call() -> None:
    async with client_with(answer(200, {"product": {}}), products_api_version="v20250901") as client:
        store = client.store("open001", TOKEN)
        await store.products.update("1", {"title": "a"})
        await store.products.update("1", {"title": "a"}, api_version="v20251201")
        for bad in ("", "2025-12-01"):  # refused before sending; only None means the client's version
            with pytest.raises(ConfigError, match="invalid API version"):
                await store.products.update("1", {"title": "a"}, api_version=bad)
            with pytest.raises(ConfigError, match="invalid API version"):
                store.images.prepare("1", "2", {"alt": "a"}, api_version=bad)
    assert [str(r.url) for r in sent(client)] == [
        f"{BASE}/admin/openapi/v20250901/products/1.json",
        f"{BASE}/admin/openapi/v20251201/products/1.json",
    ]


@pytest.mark.parametrize(
    ("status", "payload", "cls", "errors"),
    [
        (401, {"errors": "[API] Invalid token"}, AuthenticationError, "[API] Invalid token"),
        (404, {"errors": "Image 57 not found"}, NotFoundError, "Image 57 not found"),
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
async def test_error_statuses_map_and_are_not_retried(status, payload, cls, errors) -> None:
    async with client_with(answer(status, payload)) as client:
        with pytest.raises(cls) as exc:
            await client.store("open001", TOKEN).products.update("123", ProductUpdate(title="x"))
    assert (exc.value.status, exc.value.trace_id, exc.value.errors, exc.value.attempts) == (
        status,
        f"tr-{status}",
        errors,
        1,
    )
    assert exc.value.url == PRODUCT_URL and exc.value.method == "PUT"
    assert TOKEN not in str(exc.value) and TOKEN not in repr(exc.value)
    assert len(sent(client)) == 1


@pytest.mark.parametrize(
    "body",
    [b"<html>oops</html>", b'{"product": {"id": "1"', b'{"products": []}', b'{"product": "x"}', b"", b"[]"],
)
async def test_undecodable_success_body_is_a_typed_error(body: bytes) -> None:
    async with client_with(answer(200, body)) as client:
        with pytest.raises(ResponseDecodeError) as exc:
            await client.store("open001", TOKEN).products.update("123", ProductUpdate(title="x"))
    assert (exc.value.status, exc.value.trace_id) == (200, "tr-200")
    assert "may have been applied" in str(exc.value)


async def test_5xx_429_and_send_errors_are_retried_with_every_trace_id_kept(fake_time: None) -> None:
    answers = [
        answer(503, {"errors": "busy"}),
        answer(429, {"errors": "Too many request"}, **{"Retry-After": "0"}),
        ConnectFailed("reset"),
        SendTimeout("slow", status=200, headers={"traceId": "tr-late"}),
        answer(200, {"product": {"id": "123"}}, traceId="tr-ok"),
    ]
    async with client_with(*answers) as client:
        store = client.store("open001", TOKEN)
        response = await store.products.update_with_response("123", {"title": "x"})
        assert store.rate_limited == 1
    assert response.attempts == 5
    assert response.trace_ids == ("tr-503", "tr-429", "tr-late", "tr-ok")


@pytest.mark.parametrize(
    ("failure", "cls", "attempts"),
    [
        (ConnectFailed("connection reset"), APIConnectionError, 3),
        (SendTimeout("request timed out"), APITimeoutError, 3),
        (ResponseTooLarge("response body exceeds 1024 bytes", status=200), ResponseDecodeError, 1),
    ],
)
async def test_send_errors_map_to_the_documented_exceptions(failure, cls, attempts, fake_time: None) -> None:
    async with client_with(failure, retry=RetryPolicy(max_attempts=3, initial_delay=0.001)) as client:
        with pytest.raises(cls) as exc:
            await client.store("open001", TOKEN).products.update("123", {"title": "x"})
    assert type(exc.value) is cls and exc.value.attempts == attempts and len(sent(client)) == attempts
    assert str(failure) in str(exc.value)


async def test_a_refreshed_token_applies_to_the_next_attempt() -> None:
    stores = []

    def handler(request: HTTPRequest) -> HTTPResponse:
        if request.headers["Authorization"] == "Bearer old-token":
            stores[0].set_access_token("new-token")  # refreshed while the first attempt was out
            return answer(503, {"errors": "busy"})
        return answer(200, {"product": {}})

    async with ShoplineClient(sender=MockSender(handler), retry=FAST) as client:
        stores.append(client.store("open001", "old-token"))
        await stores[0].products.update("1", {"title": "x"})
    assert [r.headers["Authorization"] for r in sent(client)] == ["Bearer old-token", "Bearer new-token"]


async def test_a_request_prepared_once_goes_to_several_stores_but_not_to_the_wrong_resource() -> None:
    async with client_with(answer(200, {"product": {"id": "1"}})) as client:
        one, two = client.store("one", TOKEN), client.store("two", TOKEN)
        prepared = one.products.prepare("1", {"title": "x"})
        await one.products.send(prepared)
        await two.products.send(prepared)
        with pytest.raises(ConfigError, match="another resource"):
            await two.images.send(prepared)  # type: ignore[arg-type]
    assert [str(r.url) for r in sent(client)] == [
        "https://one.myshopline.com/admin/openapi/v20260601/products/1.json",
        "https://two.myshopline.com/admin/openapi/v20260601/products/1.json",
    ]
