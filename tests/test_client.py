"""The client against the real mock server on 127.0.0.1 (port 0): pooling, retries, limits, safety."""

from __future__ import annotations

import asyncio
import logging
import re
import time

import pytest
from conftest import FAST_RETRY, TOKENS, mock_answer, spec_example

from shopline_async import (
    AiohttpSender,
    APIConnectionError,
    APITimeoutError,
    AuthenticationError,
    ClientClosedError,
    ConfigError,
    NotFoundError,
    ProductUpdate,
    RateLimit,
    RetryPolicy,
    ServerError,
    ShoplineClient,
    Timeout,
    ValidationError,
    VariantInput,
)
from shopline_async.mock import Faults, MockShopline, MockStoreConfig


def update(title: str = "T") -> ProductUpdate:
    return ProductUpdate(title=title, variants=[VariantInput(price="9.99", sku="S1")])


async def test_quickstart_roundtrip(client: ShoplineClient, mock_server: MockShopline) -> None:
    store = client.store("alpha", "token-alpha")
    response = await store.products.update_with_response("p-1", update("Hello"))
    assert response.status == 200 and response.data.title == "Hello"
    assert response.trace_id and response.trace_ids == (response.trace_id,)
    assert response.attempts == 1 and response.elapsed > 0
    assert mock_server.product("alpha", "p-1")["title"] == "Hello"  # type: ignore[index]


async def test_stores_behind_one_origin_share_one_kept_alive_pool(
    client: ShoplineClient, mock_server: MockShopline
) -> None:
    alpha = client.store("alpha", "token-alpha")
    beta = client.store("beta", "token-beta")
    assert client.store("ALPHA", "token-alpha") is alpha
    for n in range(5):
        await alpha.products.update(f"a{n}", update())
        await beta.products.update(f"b{n}", update())
    # sequential calls ride one kept-alive connection, whichever store they are for (the mock is one
    # host; in production each store is its own host and so its own pool)
    assert len(mock_server.stats("alpha").peers) == 1
    assert mock_server.stats("beta").peers == mock_server.stats("alpha").peers
    assert mock_server.stats("alpha").writes == {f"a{n}": 1 for n in range(5)}
    assert mock_server.stats("beta").writes == {f"b{n}": 1 for n in range(5)}


async def test_pools_are_opened_lazily_and_a_closed_client_sends_nothing(mock_server: MockShopline) -> None:
    async with ShoplineClient(base_url=mock_server.base_url) as client:
        store = client.store("alpha", "token-alpha")
        sender = client.sender
        assert isinstance(sender, AiohttpSender) and sender.pools == 0
        await store.products.update("p", update())
        assert sender.pools == 1
    assert client.closed and sender.pools == 0
    requests = mock_server.stats("alpha").requests
    with pytest.raises(ClientClosedError, match="closed"):
        await store.products.update("p", update())  # a handle outlives its client: it raises, opens nothing
    with pytest.raises(ClientClosedError, match="closed"):
        await store.images.update_with_response("p", "i", {"alt": "x"})
    with pytest.raises(ClientClosedError, match="closed"):
        client.store("alpha", "token-alpha")
    assert sender.pools == 0 and mock_server.stats("alpha").requests == requests
    # an unclosed session would warn when collected, and warnings are errors here (conftest)


async def test_retry_on_503_then_success(mock_server: MockShopline, client: ShoplineClient) -> None:
    mock_server.configure("alpha", MockStoreConfig(rate=None, faults=Faults(fail_first=2, fail_status=503)))
    response = await client.store("alpha", "token-alpha").products.update_with_response("p", update())
    assert response.attempts == 3
    assert len(set(response.trace_ids)) == 3 and response.trace_id == response.trace_ids[-1]
    assert mock_server.stats("alpha").writes["p"] == 1


async def test_retries_give_up_with_the_last_error(mock_server: MockShopline, client: ShoplineClient) -> None:
    mock_server.configure("alpha", MockStoreConfig(rate=None, faults=Faults(fail_first=10, fail_status=502)))
    with pytest.raises(ServerError) as exc:
        await client.store("alpha", "token-alpha").products.update("p", update())
    assert exc.value.status == 502 and exc.value.attempts == FAST_RETRY.max_attempts
    assert len(exc.value.trace_ids) == FAST_RETRY.max_attempts and exc.value.trace_id == exc.value.trace_ids[-1]
    assert mock_server.stats("alpha").writes["p"] == 0


async def test_retries_can_be_switched_off(mock_server: MockShopline, client: ShoplineClient) -> None:
    mock_server.configure("alpha", MockStoreConfig(rate=None, faults=Faults(fail_first=1, fail_status=503)))
    store = client.store("alpha", "token-alpha")
    with pytest.raises(ServerError) as exc:
        await store.products.update("p", update(), retry=RetryPolicy.disabled())
    assert exc.value.attempts == 1


async def test_retry_deadline_stops_early(mock_server: MockShopline, client: ShoplineClient) -> None:
    mock_server.configure("alpha", MockStoreConfig(rate=None, faults=Faults(fail_first=50, fail_status=500)))
    policy = RetryPolicy(max_attempts=50, initial_delay=0.05, max_delay=0.05, jitter=False, deadline=0.3)
    started = time.monotonic()
    with pytest.raises(ServerError) as exc:
        await client.store("alpha", "token-alpha").products.update("p", update(), retry=policy)
    assert 3 <= exc.value.attempts <= 7
    assert time.monotonic() - started < 0.6


async def test_retry_after_is_honoured(mock_server: MockShopline, client: ShoplineClient) -> None:
    mock_server.configure(
        "alpha", MockStoreConfig(rate=None, faults=Faults(fail_first=1, fail_status=503, retry_after=0.3))
    )
    response = await client.store("alpha", "token-alpha").products.update_with_response("p", update())
    assert response.attempts == 2
    assert response.elapsed >= 0.3  # FAST_RETRY alone would wait at most 0.01 s


async def test_non_retryable_statuses_are_not_retried(mock_server: MockShopline, client: ShoplineClient) -> None:
    for status in (423, 433, 422):
        mock_server.configure("alpha", MockStoreConfig(rate=None, faults=Faults(fail_first=1, fail_status=status)))
        with pytest.raises(Exception) as exc:
            await client.store("alpha", "token-alpha").products.update(f"p{status}", update())
        assert exc.value.status == status and exc.value.attempts == 1  # type: ignore[attr-defined]


async def test_429_cool_down_is_shared_by_every_task_of_the_store(mock_server: MockShopline) -> None:
    mock_server.configure("alpha", MockStoreConfig(rate=5, capacity=1, mode="reject", retry_after=0.3))
    async with ShoplineClient(
        base_url=mock_server.base_url, rate_limit=RateLimit.unlimited(), retry=RetryPolicy(max_attempts=6)
    ) as client:
        store = client.store("alpha", "token-alpha")
        beta = client.store("beta", "token-beta")
        await store.products.update("first", update())  # fills the one-request bucket
        second = asyncio.create_task(store.products.update_with_response("second", update()))
        while mock_server.stats("alpha").http_429 == 0:
            await asyncio.sleep(0.005)
        third = asyncio.create_task(store.products.update_with_response("third", update()))
        await asyncio.sleep(0.15)
        # the third task has not sent anything: it waits out the second task's 429
        assert mock_server.stats("alpha").requests == 2
        # other stores are not held back
        await beta.products.update("b", update())
        results = await asyncio.gather(second, third)
    assert all(r.attempts >= 2 or r is results[1] for r in results)
    assert results[0].elapsed >= 0.3
    assert mock_server.stats("alpha").writes == {"first": 1, "second": 1, "third": 1}


async def test_timeout_then_retry(mock_server: MockShopline, client: ShoplineClient) -> None:
    mock_server.configure(
        "alpha", MockStoreConfig(rate=None, faults=Faults(fail_first=1, fail_status="stall", stall_seconds=2))
    )
    store = client.store("alpha", "token-alpha")
    response = await store.products.update_with_response("p", update(), timeout=Timeout(total=0.2))
    assert response.attempts == 2


async def test_timeout_error_when_every_attempt_stalls(mock_server: MockShopline, client: ShoplineClient) -> None:
    mock_server.configure(
        "alpha", MockStoreConfig(rate=None, faults=Faults(fail_first=9, fail_status="stall", stall_seconds=2))
    )
    with pytest.raises(APITimeoutError) as exc:
        await client.store("alpha", "token-alpha").products.update(
            "p", update(), timeout=Timeout(total=0.1), retry=RetryPolicy(max_attempts=2, initial_delay=0.01)
        )
    assert exc.value.attempts == 2 and exc.value.trace_id is None


async def test_dropped_connection_is_retried(mock_server: MockShopline, client: ShoplineClient) -> None:
    mock_server.configure("alpha", MockStoreConfig(rate=None, faults=Faults(fail_first=1, fail_status="drop")))
    response = await client.store("alpha", "token-alpha").products.update_with_response("p", update())
    assert response.data.title == "T"
    assert mock_server.stats("alpha").writes["p"] == 1


async def test_connection_refused_is_a_connection_error() -> None:
    async with MockShopline(TOKENS) as server:
        base_url = server.base_url
    async with ShoplineClient(base_url=base_url, retry=RetryPolicy(max_attempts=2, initial_delay=0.01)) as client:
        with pytest.raises(APIConnectionError) as exc:
            await client.store("alpha", "token-alpha").products.update("p", update())
    assert exc.value.attempts == 2 and exc.value.status is None


async def test_cancellation_leaves_no_pending_task_and_no_leaked_connection(mock_server: MockShopline) -> None:
    mock_server.configure(
        "alpha", MockStoreConfig(rate=None, faults=Faults(fail_first=1, fail_status="stall", stall_seconds=5))
    )
    async with ShoplineClient(
        base_url=mock_server.base_url, max_connections=1, rate_limit=RateLimit.unlimited(max_in_flight=1)
    ) as client:
        store = client.store("alpha", "token-alpha")
        task = asyncio.create_task(store.products.update("slow", update()))
        while mock_server.stats("alpha").in_flight == 0:
            await asyncio.sleep(0.005)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        mock_server.configure("alpha", MockStoreConfig(rate=None))
        # the only in-flight slot and the only connection came back: a new call goes through at once
        await asyncio.wait_for(store.products.update("next", update()), timeout=2)
    # only the in-process mock server's own answers (the stalled request) may remain
    leftovers = [t for t in asyncio.all_tasks() if t is not asyncio.current_task() and not mock_answer(t)]
    assert leftovers == []


async def test_in_flight_cap_per_store(mock_server: MockShopline) -> None:
    mock_server.configure("alpha", MockStoreConfig(rate=None, faults=Faults(latency_rate=1.0, latency=0.03)))
    async with ShoplineClient(base_url=mock_server.base_url, rate_limit=RateLimit.unlimited(max_in_flight=3)) as client:
        store = client.store("alpha", "token-alpha")
        await asyncio.gather(*(store.products.update(f"p{n}", update()) for n in range(12)))
    assert mock_server.stats("alpha").max_in_flight == 3


async def test_client_side_rate_limit_paces_each_store_separately(mock_server: MockShopline) -> None:
    async with ShoplineClient(base_url=mock_server.base_url, rate_limit=RateLimit(rate=20, burst=1)) as client:
        alpha = client.store("alpha", "token-alpha")
        beta = client.store("beta", "token-beta", rate_limit=RateLimit.unlimited())
        started = time.monotonic()
        await asyncio.gather(*(beta.products.update(f"b{n}", update()) for n in range(10)))
        beta_time = time.monotonic() - started
        started = time.monotonic()
        await asyncio.gather(*(alpha.products.update(f"a{n}", update()) for n in range(11)))
        alpha_time = time.monotonic() - started
    assert 0.45 <= alpha_time < 1.0  # 10 intervals of 50 ms after the first
    assert beta_time < 0.3


async def test_errors_carry_status_trace_id_and_payload(mock_server: MockShopline, client: ShoplineClient) -> None:
    store = client.store("alpha", "token-alpha")
    await store.products.update("p", update())
    with pytest.raises(NotFoundError) as exc:
        await store.images.update("p", "missing-image", {"alt": "x"})
    assert exc.value.status == 404 and exc.value.trace_id and "missing-image" in exc.value.errors
    assert exc.value.headers["traceid"] == exc.value.trace_id  # the response's headers, case-insensitive
    assert exc.value.headers["Content-Type"].startswith("application/json")
    bad = client.store("beta", "wrong-token")
    with pytest.raises(AuthenticationError) as auth:
        await bad.products.update("p", update())
    assert auth.value.errors == "[API] Invalid access token"


async def test_token_never_leaks(mock_server: MockShopline, caplog: pytest.LogCaptureFixture) -> None:
    secret = "shpat-SECRET-0123456789"
    caplog.set_level(logging.DEBUG)
    async with ShoplineClient(base_url=mock_server.base_url, retry=FAST_RETRY) as client:
        store = client.store("alpha", secret)
        texts = [repr(client), repr(store), str(client.stores)]
        with pytest.raises(AuthenticationError) as exc:
            await store.products.update("p", update())
        texts += [str(exc.value), repr(exc.value), repr(exc.value.__dict__)]
        store.set_access_token("token-alpha")
        response = await store.products.update_with_response("p", update())
        texts.append(repr(response))
        with pytest.raises(ConfigError) as bad_token:
            client.store("alpha", secret + "\r\nX-Evil: 1")
        texts.append(str(bad_token.value))
    texts.append(caplog.text)
    assert "attempt=1" in caplog.text
    for text in texts:
        assert secret not in text


async def test_debug_log_line_per_attempt(mock_server: MockShopline, client: ShoplineClient, caplog) -> None:
    mock_server.configure("alpha", MockStoreConfig(rate=None, faults=Faults(fail_first=1, fail_status=503)))
    caplog.set_level(logging.DEBUG, logger="shopline_async")
    response = await client.store("alpha", "token-alpha").products.update_with_response("p", update())
    lines = [r.getMessage() for r in caplog.records if r.name == "shopline_async" and r.levelno == logging.DEBUG]
    assert len(lines) == 2
    assert lines[0].startswith("store alpha: PUT /admin/openapi/v20260601/products/p.json -> 503 traceId=")
    assert re.fullmatch(
        rf"store alpha: PUT /admin/openapi/v20260601/products/p\.json -> 200 traceId={response.trace_id} attempt=2 elapsed=\d+\.\d{{3}}s",
        lines[1],
    )
    warnings = [r.getMessage() for r in caplog.records if r.name == "shopline_async" and r.levelno == logging.WARNING]
    assert len(warnings) == 1 and re.fullmatch(
        r"store alpha: PUT /admin/openapi/v20260601/products/p\.json -> HTTP 503 \(traceId=\w+\): "
        r"retrying in \d+\.\ds, attempt 2 of \d+",
        warnings[0],
    ), warnings


@pytest.mark.parametrize("product_id", ["a/b", "x?y=1", "frag#x", "%2F", "sp ace", "new\nline", "../admin", "ü"])
async def test_ids_cannot_change_the_path(product_id: str, client: ShoplineClient, mock_server: MockShopline) -> None:
    response = await client.store("alpha", "token-alpha").products.update_with_response(product_id, update())
    escaped = {
        "a/b": "a%2Fb",
        "x?y=1": "x%3Fy%3D1",
        "frag#x": "frag%23x",
        "%2F": "%252F",
        "sp ace": "sp%20ace",
        "new\nline": "new%0Aline",
        "../admin": "..%2Fadmin",
        "ü": "%C3%BC",
    }[product_id]
    assert response.url == f"{mock_server.base_url}/admin/openapi/v20260601/products/{escaped}.json"
    # the server saw exactly this product id, nothing else
    assert mock_server.product("alpha", product_id) is not None
    assert list(mock_server.stats("alpha").writes) == [product_id]


@pytest.mark.parametrize("product_id", ["", ".", "..", "x" * 65])
async def test_impossible_ids_are_refused_before_sending(product_id, client, mock_server) -> None:
    with pytest.raises(ValidationError, match="product_id"):
        await client.store("alpha", "token-alpha").products.update(product_id, update())
    with pytest.raises(ValidationError, match="image_id"):
        await client.store("alpha", "token-alpha").images.update("p", product_id, {"alt": "a"})
    assert mock_server.stats("alpha").requests == 0


async def test_invalid_body_is_refused_before_sending(client: ShoplineClient, mock_server: MockShopline) -> None:
    with pytest.raises(ValidationError, match=r"\$\.product\.variants\[0\]\.price"):
        await client.store("alpha", "token-alpha").products.update("p", {"variants": [{"price": "-1.99"}]})
    assert mock_server.stats("alpha").requests == 0


@pytest.mark.parametrize("handle", ["evil.com/x", "a.b", "", "-x", "x" * 64, "a b", "a\nb", "ok:80"])
async def test_handles_must_be_dns_labels(handle: str) -> None:
    async with ShoplineClient() as client:
        with pytest.raises(ConfigError, match="DNS label"):
            client.store(handle, "token")


async def test_handle_goes_into_the_host_only() -> None:
    async with ShoplineClient() as client:
        assert client.store("open001", "t").base_url == "https://open001.myshopline.com"


@pytest.mark.parametrize(
    ("base_url", "allowed"),
    [
        ("http://example.com", False),
        ("http://10.0.0.1:8080", False),
        ("https://example.com", True),
        ("http://127.0.0.1:9", True),
        ("http://localhost:9", True),
        ("http://[::1]:9", True),
        ("ftp://example.com", False),
        ("https://user:pw@example.com", False),
    ],
)
async def test_plain_http_only_on_loopback(base_url: str, allowed: bool) -> None:
    if allowed:
        ShoplineClient(base_url=base_url)
    else:
        with pytest.raises(ConfigError):
            ShoplineClient(base_url=base_url)


async def test_plain_http_when_explicitly_allowed() -> None:
    async with ShoplineClient(base_url="http://{handle}.internal", allow_insecure_http=True) as client:
        assert client.store("shop", "t").base_url == "http://shop.internal"


async def test_the_reference_example_request_is_sent_as_is_and_round_trips(
    client: ShoplineClient, mock_server: MockShopline
) -> None:
    products = client.store("alpha", "token-alpha").products
    example = spec_example("product_request_example.json")["product"]  # read-only fields and all
    created = await products.update("16069938731613985273252340", example)
    assert created.title == "A product title" and created.tags == ["tag1", "tag2"]
    assert created.variants[0].price == "10.11" and created.variants[0].title == "Red · L"  # type: ignore[index]
    # fetch, change, send back: what the API returned goes back as it is
    update = ProductUpdate.from_product(created)
    update.title = "Renamed"
    again = await products.update("16069938731613985273252340", update)
    assert again.title == "Renamed" and again.variants[0].id == created.variants[0].id  # type: ignore[index]
    assert mock_server.stats("alpha").writes == {"16069938731613985273252340": 2}
