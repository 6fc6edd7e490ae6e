"""What AiohttpSender hands aiohttp, with aiohttp patched by aioresponses: the one place where the
keyword arguments themselves are the contract (no redirects followed, the body as bytes, every
header). Everything it does on the wire is tested against the real mock server elsewhere."""

from __future__ import annotations

import pytest
from aioresponses import aioresponses
from yarl import URL

from shopline_async import AiohttpSender, HTTPRequest, ResponseTooLarge, Timeout

URL_ = URL("https://open001.myshopline.com/admin/openapi/v20260601/products/1.json")
HEADERS = {"Authorization": "Bearer t", "Content-Type": "application/json; charset=utf-8"}


async def test_the_request_aiohttp_is_asked_to_send() -> None:
    sender = AiohttpSender()
    with aioresponses() as mocked:
        mocked.put(str(URL_), status=303, body=b"{}", headers={"traceId": "t1", "Location": "https://elsewhere/"})
        response = await sender.send(HTTPRequest("PUT", URL_, HEADERS, b'{"product":{}}', Timeout(total=5)))
        (call,) = mocked.requests[("PUT", URL_)]
    await sender.aclose()
    assert (response.status, response.headers["traceid"], response.body) == (303, "t1", b"{}")
    assert call.kwargs["allow_redirects"] is False  # a 303 is handed back, never followed
    assert call.kwargs["data"] == b'{"product":{}}'
    # no Connection: close while nobody waits for a socket; only the encodings the sender inflates itself
    assert dict(call.kwargs["headers"]) == {**HEADERS, "Accept-Encoding": "gzip, deflate"}
    assert call.kwargs["timeout"].total == 5


async def test_an_announced_oversized_body_is_refused_unread() -> None:
    sender = AiohttpSender(max_response_bytes=1024)
    with aioresponses() as mocked:
        mocked.put(str(URL_), status=200, body=b"x" * 2000, headers={"traceId": "big"})
        with pytest.raises(ResponseTooLarge) as exc:
            await sender.send(HTTPRequest("PUT", URL_, HEADERS, b"{}", Timeout()))
    await sender.aclose()
    assert exc.value.status == 200 and exc.value.headers["traceId"] == "big"
