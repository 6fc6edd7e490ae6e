"""The mock server's HTTP/1.1 layer, spoken to over raw sockets: framing, keep-alive, pipelining,
and the answers to requests that cannot be parsed."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from shopline_async.mock import Faults, MockShopline, MockStoreConfig

PATH = "/admin/openapi/v20260601/products/{}.json"
BODY = json.dumps({"product": {"title": "Shirt"}}).encode()


@pytest.fixture
async def server() -> AsyncIterator[MockShopline]:
    async with MockShopline({"token-a": "a"}, config=MockStoreConfig(rate=None)) as s:
        yield s


def request(
    product: str = "p1",
    *,
    method: str = "PUT",
    body: bytes = BODY,
    version: str = "HTTP/1.1",
    extra: str = "",
    length: bool = True,
) -> bytes:
    head = (
        f"{method} {PATH.format(product)} {version}\r\nHost: x\r\nAuthorization: Bearer token-a\r\n"
        f"Content-Type: application/json\r\n{extra}"
    )
    if length:
        head += f"Content-Length: {len(body)}\r\n"
    return head.encode() + b"\r\n" + body


async def read_response(reader: asyncio.StreamReader, *, head_only: bool = False) -> tuple[int, dict[str, str], Any]:
    status_line = await reader.readuntil(b"\r\n")
    status = int(status_line.split()[1])
    headers: dict[str, str] = {}
    while (line := await reader.readuntil(b"\r\n")) != b"\r\n":
        name, _, value = line.decode().partition(":")
        headers[name.strip().lower()] = value.strip()
    if status == 100:
        return await read_response(reader, head_only=head_only)
    length = int(headers["content-length"])
    body = b"" if head_only else await reader.readexactly(length)
    return status, headers, json.loads(body) if body else None


async def connect(server: MockShopline) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection(server.host, server.port)


async def closed(reader: asyncio.StreamReader) -> bool:
    return await asyncio.wait_for(reader.read(), timeout=2) == b""


async def send_head_expecting_continue(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, product_id: str
) -> bytes:
    """Send a request's head with ``Expect: 100-continue``, check the interim answer; returns the body to send."""
    whole = request(product_id, extra="Expect: 100-continue\r\n")
    head, body = whole[: -len(BODY)], whole[-len(BODY) :]
    writer.write(head)
    assert await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 2) == b"HTTP/1.1 100 Continue\r\n\r\n"
    return body


async def test_pipelined_requests_are_answered_in_order(server: MockShopline) -> None:
    reader, writer = await connect(server)
    writer.write(b"".join(request(f"p{n}") for n in range(5)))
    answers = [await read_response(reader) for _ in range(5)]
    assert [a[2]["product"]["id"] for a in answers] == [f"p{n}" for n in range(5)]
    assert len({a[1]["traceid"] for a in answers}) == 5
    assert server.stats("a").writes == {f"p{n}": 1 for n in range(5)}
    writer.close()


async def test_pipelining_keeps_order_when_the_first_answer_waits(server: MockShopline) -> None:
    server.configure(
        "a", MockStoreConfig(rate=None, faults=Faults(fail_first=1, fail_status="stall", stall_seconds=0.1))
    )
    reader, writer = await connect(server)
    writer.write(request("slow") + request("slow"))  # the first attempt stalls, the second does not
    first, second = await read_response(reader), await read_response(reader)
    assert first[0] == second[0] == 200
    assert first[1]["traceid"] < second[1]["traceid"]
    writer.close()


async def test_a_request_arriving_byte_by_byte(server: MockShopline) -> None:
    reader, writer = await connect(server)
    for byte in request("dribble"):
        writer.write(bytes([byte]))
        await writer.drain()
    status, _, body = await read_response(reader)
    assert status == 200 and body["product"]["title"] == "Shirt"
    writer.close()


async def test_chunked_body(server: MockShopline) -> None:
    reader, writer = await connect(server)
    chunks = b"".join(b"%x;ext=1\r\n%s\r\n" % (len(BODY[i : i + 7]), BODY[i : i + 7]) for i in range(0, len(BODY), 7))
    writer.write(
        request(
            "chunked", body=chunks + b"0\r\nX-Trailer: y\r\n\r\n", extra="Transfer-Encoding: chunked\r\n", length=False
        )
    )
    writer.write(request("after"))  # the framing held: the next request on the connection parses
    assert (await read_response(reader))[2]["product"]["title"] == "Shirt"
    assert (await read_response(reader))[2]["product"]["id"] == "after"
    writer.close()


async def test_expect_100_continue(server: MockShopline) -> None:
    reader, writer = await connect(server)
    body = await send_head_expecting_continue(reader, writer, "expect")
    writer.write(body)
    assert (await read_response(reader))[0] == 200
    writer.close()


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b"NONSENSE\r\n\r\n", 400),
        (b"PUT /x HTTP/1.1\r\nbad header line\r\n\r\n", 400),
        (b"PUT /x HTTP/1.1\r\nContent-Length: -1\r\n\r\n", 400),
        (b"PUT /x HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n", 400),
        (b"PUT /x HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n", 413),
        (b"PUT /x HTTP/1.1\r\nX: " + b"a" * 70_000 + b"\r\n\r\n", 431),
        (b"PUT /x HTTP/1.1\r\nX: " + b"a" * 200_000, 431),  # a header line that never ends
        (b"PUT /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n" + b"4c4b40\r\n" + b"a" * 4_200_000, 413),
    ],
)
async def test_unparseable_requests_get_an_error_with_a_trace_id_then_the_connection_closes(
    server: MockShopline, raw: bytes, status: int
) -> None:
    reader, writer = await connect(server)
    writer.write(raw)
    got, headers, body = await read_response(reader)
    assert got == status and headers["traceid"] and isinstance(body["errors"], str)
    assert headers["connection"] == "close" and await closed(reader)
    writer.close()


async def test_connection_close_and_http_1_0(server: MockShopline) -> None:
    for raw in (request("c", extra="Connection: close\r\n"), request("d", version="HTTP/1.0")):
        reader, writer = await connect(server)
        writer.write(raw)
        status, headers, _ = await read_response(reader)
        assert status == 200 and headers["connection"] == "close" and await closed(reader)
        writer.close()
    reader, writer = await connect(server)  # HTTP/1.0 that asks to stay
    writer.write(request("e", version="HTTP/1.0", extra="Connection: keep-alive\r\n") + request("f"))
    assert [(await read_response(reader))[0] for _ in range(2)] == [200, 200]
    writer.close()


async def test_head_gets_headers_only(server: MockShopline) -> None:
    reader, writer = await connect(server)
    writer.write(request(method="HEAD", body=b"") + request("after"))
    status, headers, _ = await read_response(reader, head_only=True)
    assert status == 405 and int(headers["content-length"]) > 0
    assert (await read_response(reader))[2]["product"]["id"] == "after"
    writer.close()


async def test_a_client_leaving_mid_request_harms_nothing(server: MockShopline) -> None:
    _, writer = await connect(server)
    writer.write(request("gone")[:-5])
    await writer.drain()
    writer.close()
    reader, writer = await connect(server)
    writer.write(request("next"))
    assert (await read_response(reader))[0] == 200
    assert "gone" not in server.stats("a").writes
    writer.close()


async def test_half_close_gets_the_answers_then_the_connection_ends(server: MockShopline) -> None:
    reader, writer = await connect(server)
    writer.write(request("half") + request("never")[:-5])  # one whole request, one cut short
    writer.write_eof()
    assert (await read_response(reader))[0] == 200
    assert await closed(reader)
    writer.close()


async def test_100_continue_is_sent_once_however_the_body_arrives(server: MockShopline) -> None:
    reader, writer = await connect(server)
    body = await send_head_expecting_continue(reader, writer, "expect-parts")
    for part in (body[:5], body[5:10], body[10:]):
        writer.write(part)
        await writer.drain()
        await asyncio.sleep(0.02)
    status_line = await asyncio.wait_for(reader.readuntil(b"\r\n"), 2)
    assert status_line.startswith(b"HTTP/1.1 200")
    writer.close()
