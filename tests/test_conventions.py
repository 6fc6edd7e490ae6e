"""The conventions users bring from httpx and openai-python: extra headers, copies with other
options, proxies and an app's own session, one event loop per client."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator

import aiohttp
import pytest
import trustme
from aiohttp import web
from conftest import FAST_RETRY

from shopline_async import (
    APICertificateError,
    APIConnectionError,
    ClientClosedError,
    ConfigError,
    EventLoopError,
    HTTPResponse,
    MockSender,
    RateLimit,
    RetryPolicy,
    ServerError,
    ShoplineClient,
)
from shopline_async.mock import Faults, MockShopline, MockStoreConfig

PRODUCT_ANSWER = HTTPResponse(200, {"traceId": "t-1"}, b'{"product":{"id":"1"}}')


def answering() -> MockSender:
    return MockSender(lambda request: PRODUCT_ANSWER)


# --- extra headers ------------------------------------------------------------------------------


async def test_extra_headers_per_client_and_per_call() -> None:
    sender = answering()
    async with ShoplineClient(sender=sender, extra_headers={"X-App": "sync", "X-Both": "client"}) as client:
        products = client.store("shop", "tok").products
        await products.update("1", {"title": "x"})
        await products.update("1", {"title": "x"}, extra_headers={"X-Both": "call", "Idempotency-Key": "k1"})
    first, second = (dict(r.headers) for r in sender.requests)
    assert first["X-App"] == "sync" and first["X-Both"] == "client" and "Idempotency-Key" not in first
    assert second["X-App"] == "sync" and second["X-Both"] == "call" and second["Idempotency-Key"] == "k1"
    assert second["Authorization"] == "Bearer tok" and second["Content-Type"] == "application/json; charset=utf-8"


async def test_an_extra_header_replaces_one_of_the_same_name_whatever_its_case(fake_time: None) -> None:
    sender = answering()
    async with ShoplineClient(sender=sender, extra_headers={"accept": "application/vnd.app+json"}) as client:
        products = client.store("shop", "tok").products
        await products.update("1", {"title": "x"})
        await products.update("1", {"title": "x"}, extra_headers={"X-Call": "1"})
        await products.update("1", {"title": "x"}, extra_headers={"ACCEPT": "text/plain"})
    accepts = [[value for name, value in r.headers.items() if name.lower() == "accept"] for r in sender.requests]
    assert accepts == [["application/vnd.app+json"], ["application/vnd.app+json"], ["text/plain"]]


@pytest.mark.parametrize("name", ["Authorization", "content-type", "Content-Length", "Host", "Transfer-Encoding"])
async def test_extra_headers_never_override_what_the_sdk_sets(name: str) -> None:
    with pytest.raises(ConfigError, match=f"{name} is set by the SDK"):
        ShoplineClient(sender=answering(), extra_headers={name: "x"})
    sender = answering()
    async with ShoplineClient(sender=sender) as client:
        with pytest.raises(ConfigError, match=f"{name} is set by the SDK"):
            await client.store("shop", "tok").products.update("1", {"title": "x"}, extra_headers={name: "x"})
    assert sender.requests == []  # refused before anything was sent


@pytest.mark.parametrize("headers", [{"X-Evil": "a\r\nInjected: 1"}, {"Bad Name": "x"}, {"X-Nul": "a\0"}])
async def test_extra_headers_cannot_split_a_request(headers: dict[str, str]) -> None:
    with pytest.raises(ConfigError):
        ShoplineClient(sender=answering(), extra_headers=headers)


# --- with_options -------------------------------------------------------------------------------


async def test_with_options_shares_connections_stores_and_limiters() -> None:
    async with MockShopline(
        {"tok-a": "a"}, config=MockStoreConfig(rate=None, faults=Faults(fail_first=1, fail_status=503))
    ) as mock:
        async with ShoplineClient(base_url=mock.base_url, retry=FAST_RETRY, rate_limit=RateLimit.unlimited()) as client:
            store = client.store("a", "tok-a")
            impatient = client.with_options(retry=RetryPolicy(max_attempts=1), extra_headers={"X-Copy": "1"})
            assert impatient.sender is client.sender
            copied = impatient.get_store("a")  # the token came along
            assert copied is not None and copied is not store and copied.rate_limit == store.rate_limit
            with pytest.raises(ServerError):  # one attempt only, where the original retries
                await copied.products.update("p1", {"title": "x"})
            assert (await store.products.update("p2", {"title": "x"})).id == "p2"
            # one store, one bucket: a store first met by the copy shares its limiter with the original
            assert impatient.store("a", "tok-a") is copied
            with pytest.raises(ConfigError, match="already exists"):
                impatient.store("a", "tok-a", rate_limit=RateLimit(rate=1))
            assert mock.stats("a").requests == 3
        with pytest.raises(ClientClosedError):  # closing the original closed the copy's connections too
            await copied.products.update("p3", {"title": "x"})
        assert mock.stats("a").requests == 3


async def test_with_options_stores_share_one_limiter_with_the_original(fake_time: None) -> None:
    sender = answering()
    async with ShoplineClient(sender=sender, rate_limit=RateLimit(rate=2, burst=1)) as client:
        copy = client.with_options()
        original = client.store("shop", "tok")
        other = copy.store("shop", "tok")
        started = asyncio.get_running_loop().time()
        await asyncio.gather(*(s.products.update("1", {"title": "x"}) for s in (original, other, original)))
        # three requests through one pacer at 2/s with no burst: about a second, not half of one
        assert asyncio.get_running_loop().time() - started >= 0.9


# --- one event loop per client ------------------------------------------------------------------


def test_a_client_used_from_a_second_event_loop_says_so() -> None:
    client = ShoplineClient(sender=answering())
    store = client.store("shop", "tok")
    asyncio.run(store.products.update("1", {"title": "x"}))
    with pytest.raises(EventLoopError, match="another event loop"):
        asyncio.run(store.products.update("1", {"title": "x"}))
    asyncio.run(client.aclose())


# --- proxies and an app's own session ----------------------------------------------------------


@pytest.fixture
async def forwarding_proxy() -> AsyncIterator[tuple[str, list[str]]]:
    """A tiny HTTP forward proxy: takes absolute-form requests and forwards them. Yields its URL
    and the URLs it forwarded."""
    seen: list[str] = []
    upstream = aiohttp.ClientSession()

    async def forward(request: web.Request) -> web.Response:
        raw = request.raw_path  # absolute-form ("PUT http://host:port/path"), as a forward proxy gets it
        target = raw if raw.startswith("http://") else f"http://{request.headers['Host']}{raw}"
        seen.append(target)
        headers = {k: v for k, v in request.headers.items() if k.lower() not in ("host", "proxy-connection")}
        async with upstream.request(request.method, target, data=await request.read(), headers=headers) as resp:
            body = await resp.read()
            kept = {k: v for k, v in resp.headers.items() if k.lower() in ("content-type", "traceid")}
            return web.Response(status=resp.status, body=body, headers=kept)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", forward)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}", seen
    await runner.cleanup()
    await upstream.close()


async def test_an_explicit_proxy_carries_every_request(
    mock_server: MockShopline, forwarding_proxy: tuple[str, list[str]]
) -> None:
    proxy, seen = forwarding_proxy
    async with ShoplineClient(base_url=mock_server.base_url, proxy=proxy) as client:
        product = await client.store("alpha", "token-alpha").products.update("p1", {"title": "via proxy"})
    assert product.title == "via proxy" and mock_server.product("alpha", "p1")["title"] == "via proxy"  # type: ignore[index]
    assert seen == [mock_server.base_url + "/admin/openapi/v20260601/products/p1.json"]


async def test_proxies_from_the_environment_with_trust_env(
    mock_server: MockShopline, forwarding_proxy: tuple[str, list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    proxy, seen = forwarding_proxy
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", proxy)
    async with ShoplineClient(base_url=mock_server.base_url) as client:  # not trusted: direct
        await client.store("alpha", "token-alpha").products.update("p1", {"title": "direct"})
    assert seen == []
    async with ShoplineClient(base_url=mock_server.base_url, trust_env=True) as client:
        await client.store("alpha", "token-alpha").products.update("p1", {"title": "from env"})
    assert len(seen) == 1 and mock_server.product("alpha", "p1")["title"] == "from env"  # type: ignore[index]


async def test_proxy_credentials_never_appear_in_errors() -> None:
    async with ShoplineClient(
        base_url="http://127.0.0.1:9", proxy="http://user:s3cret-pass@127.0.0.1:9", retry=RetryPolicy(max_attempts=1)
    ) as client:
        with pytest.raises(APIConnectionError) as exc:
            await client.store("shop", "tok").products.update("1", {"title": "x"})
    assert "s3cret-pass" not in str(exc.value) and "s3cret-pass" not in repr(exc.value)


async def test_an_apps_own_session_is_used_and_left_open(mock_server: MockShopline) -> None:
    async with aiohttp.ClientSession() as session:
        async with ShoplineClient(base_url=mock_server.base_url, session=session) as client:
            await client.store("alpha", "token-alpha").products.update("p1", {"title": "own session"})
        assert not session.closed  # the app's to close
        async with session.get(mock_server.base_url + "/admin/openapi/v20260601/products/p1.json") as resp:
            assert resp.status == 401  # the session works, and carries no token of ours
    with pytest.raises(ConfigError, match="session's own settings"):
        ShoplineClient(session=session, trust_env=True)


# --- TLS ------------------------------------------------------------------------------------------


async def test_a_custom_ssl_context_trusts_a_private_ca() -> None:
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_context)
    trusting = ssl.create_default_context()
    ca.configure_trust(trusting)
    async with MockShopline({"token-alpha": "alpha"}, ssl=server_context) as server:
        assert server.base_url.startswith("https://")
        async with ShoplineClient(base_url=server.base_url, ssl=trusting) as client:
            product = await client.store("alpha", "token-alpha").products.update("p1", {"title": "over TLS"})
        assert product.title == "over TLS"
        # the default context does not know the private CA: refused at once, as retrying cannot help
        async with ShoplineClient(base_url=server.base_url) as client:
            with pytest.raises(APICertificateError, match="CERTIFICATE_VERIFY_FAILED") as exc:
                await client.store("alpha", "token-alpha").products.update("p1", {"title": "x"})
        assert isinstance(exc.value, APIConnectionError) and exc.value.attempts == 1
