"""A small HTTP/1.1 server on asyncio's Protocol API, just enough for the mock.

Why not aiohttp's server: the mock must never be the bottleneck of a benchmark, and on a 2-core
machine aiohttp's per-request machinery (a task, a stream reader, request and response objects)
cost more CPU than the mock's whole merge-validate-encode work. Here a request whose answer
needs no waiting is answered inside ``data_received``, with no task at all; only answers that
wait (a rate-limit queue, injected latency) get one.

Supported: keep-alive and pipelining (answers leave in request order), ``Content-Length`` and
chunked request bodies, ``Expect: 100-continue``, ``Connection: close``, HTTP/1.0, HEAD. A
malformed request gets 400 (431 for a head over 64 KB, 413 for a body over the limit) and the
connection is closed, as a server must when it cannot tell where the next request starts.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from email.utils import formatdate
from http import HTTPStatus
from typing import cast

__all__ = ["HttpServer", "Reply", "Request"]

_MAX_HEAD = 64 * 1024
_PAUSE_AT = 256 * 1024  # buffered bytes while an answer is pending: stop reading until it is sent


@dataclass(slots=True)
class Request:
    method: str
    target: str
    """The request target as sent, percent-escapes and query included."""
    headers: dict[str, str]
    """Names in lower case; repeated headers joined with ", "."""
    body: bytes
    peer: tuple[str, int] | None


@dataclass(slots=True)
class Reply:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    drop: bool = False
    """Send nothing and close the connection (what a crashed upstream looks like to a client)."""


Handler = Callable[[Request], Reply | Awaitable[Reply]]
ErrorReply = Callable[[int, str], Reply]


class _BadRequest(Exception):
    def __init__(self, status: int, message: str) -> None:
        self.status = status
        self.message = message


_date: tuple[int, bytes] = (0, b"")


def _date_header() -> bytes:
    """The Date header, formatted once per second rather than per response."""
    global _date
    second = int(time.time())
    if _date[0] != second:
        _date = (second, f"Date: {formatdate(second, usegmt=True)}\r\n".encode())
    return _date[1]


def _status_line(status: int) -> bytes:
    try:
        reason = HTTPStatus(status).phrase
    except ValueError:
        reason = "Unknown"
    return f"HTTP/1.1 {status} {reason}\r\n".encode()


_STATUS_LINES = {status.value: _status_line(status.value) for status in HTTPStatus}


class _Connection(asyncio.Protocol):
    def __init__(self, server: HttpServer) -> None:
        self._server = server
        self._transport: asyncio.Transport | None = None
        self._peer: tuple[str, int] | None = None
        self._buffer = bytearray()
        self._pending: asyncio.Task[Reply] | None = None
        self._paused = False
        self._closing = False
        self._continued = False  # 100 Continue already sent for the request being read

    # --- asyncio.Protocol ------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass asyncio's
        peer = transport.get_extra_info("peername")
        self._peer = (peer[0], peer[1]) if peer else None
        self._server.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        # an answer still being worked out finishes (its write lands, as on a real server whose
        # client gave up), but has nowhere to go
        self._transport = None
        self._server.connections.discard(self)

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        if self._pending is None:
            self._serve_buffered()
        elif len(self._buffer) > _PAUSE_AT and self._transport is not None:
            self._transport.pause_reading()
            self._paused = True

    def eof_received(self) -> bool:
        # the client will send no more: answer what it did send, then close (done by _serve_buffered
        # once the buffer holds no complete request, so a half-sent one does not keep the socket)
        self._closing = True
        if self._pending is None:
            self._serve_buffered()
        return True

    # --- serving ---------------------------------------------------------

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
        if self._pending is not None:
            self._pending.cancel()

    def _serve_buffered(self) -> None:
        while self._transport is not None and self._pending is None:
            try:
                parsed = self._parse()
            except _BadRequest as bad:
                self._closing = True
                self._send(self._server.error_reply(bad.status, bad.message), head_only=False, keep_alive=False)
                return
            if parsed is None:
                if self._closing and self._transport is not None:
                    self._transport.close()
                return
            request, keep_alive = parsed
            try:
                answer = self._server.handler(request)
            except Exception as exc:  # a bug in the mock: say so, like a real 500
                answer = self._server.error_reply(500, f"mock server error: {exc!r}")
            if isinstance(answer, Reply):
                self._send(answer, head_only=request.method == "HEAD", keep_alive=keep_alive)
            else:
                self._wait_for(answer, head_only=request.method == "HEAD", keep_alive=keep_alive)

    def _wait_for(self, answer: Awaitable[Reply], *, head_only: bool, keep_alive: bool) -> None:
        task = asyncio.ensure_future(answer)
        self._pending = task
        self._server.tasks.add(task)

        def done(task: asyncio.Task[Reply]) -> None:
            self._server.tasks.discard(task)
            self._pending = None
            if task.cancelled():
                return
            exc = task.exception()
            reply = task.result() if exc is None else self._server.error_reply(500, f"mock server error: {exc!r}")
            self._send(reply, head_only=head_only, keep_alive=keep_alive)
            if self._paused and self._transport is not None:
                self._paused = False
                self._transport.resume_reading()
            self._serve_buffered()

        task.add_done_callback(done)

    def _send(self, reply: Reply, *, head_only: bool, keep_alive: bool) -> None:
        transport = self._transport
        if transport is None:
            return
        if reply.drop:
            self._transport = None
            transport.close()
            return
        head = [_STATUS_LINES.get(reply.status) or _status_line(reply.status), _date_header()]
        for name, value in reply.headers.items():
            head.append(f"{name}: {value}\r\n".encode("latin-1"))
        head.append(b"Content-Length: %d\r\n" % len(reply.body))
        if not keep_alive:
            head.append(b"Connection: close\r\n")
        head.append(b"\r\n")
        if not head_only:
            head.append(reply.body)
        transport.write(b"".join(head))
        if not keep_alive:
            self._transport = None
            transport.close()

    def _parse(self) -> tuple[Request, bool] | None:
        """The next complete request in the buffer (removed from it) and whether to keep the
        connection open after it; None while incomplete. Raises _BadRequest."""
        buffer = self._buffer
        end = buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(buffer) > _MAX_HEAD:
                raise _BadRequest(431, "Request header fields too large")
            return None
        if end > _MAX_HEAD:
            raise _BadRequest(431, "Request header fields too large")
        lines = buffer[:end].decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3 or not parts[0].isalpha() or not parts[1] or not parts[2].startswith("HTTP/1."):
            raise _BadRequest(400, f"Malformed request line: {lines[0][:100]!r}")
        method, target, version = parts
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, colon, value = line.partition(":")
            if not colon or not name or name != name.strip():
                raise _BadRequest(400, f"Malformed header line: {line[:100]!r}")
            name = name.lower()
            value = value.strip()
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        body_start = end + 4
        max_body = self._server.max_body

        if "transfer-encoding" in headers:
            if headers["transfer-encoding"].lower() != "chunked" or "content-length" in headers:
                raise _BadRequest(400, "Unsupported Transfer-Encoding")
            chunked = _read_chunked(buffer, body_start, max_body)
            if chunked is None:
                self._continue_if_expected(headers)
                return None
            body, body_end = chunked
        else:
            length_text = headers.get("content-length", "0")
            if not length_text.isdigit():
                raise _BadRequest(400, f"Invalid Content-Length: {length_text[:20]!r}")
            length = int(length_text)
            if length > max_body:
                raise _BadRequest(413, f"Request body too large: {length} bytes, the limit is {max_body}")
            body_end = body_start + length
            if len(buffer) < body_end:
                self._continue_if_expected(headers)
                return None
            body = bytes(buffer[body_start:body_end])
        del buffer[:body_end]
        self._continued = False

        connection = headers.get("connection", "").lower()
        keep_alive = "keep-alive" in connection if version == "HTTP/1.0" else "close" not in connection
        if self._closing:
            keep_alive = False
        return Request(method, target, headers, body, self._peer), keep_alive

    def _continue_if_expected(self, headers: dict[str, str]) -> None:
        # the head is parsed afresh on every read, so the connection remembers it already answered
        if self._continued or self._transport is None or headers.get("expect", "").lower() != "100-continue":
            return
        self._continued = True
        self._transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")


def _read_chunked(buffer: bytearray, start: int, max_body: int) -> tuple[bytes, int] | None:
    """A chunked body starting at ``start``: (body, end offset), or None while incomplete."""
    chunks: list[bytes] = []
    size = 0
    position = start
    while True:
        line_end = buffer.find(b"\r\n", position)
        if line_end < 0:
            return None
        size_text = bytes(buffer[position:line_end]).split(b";", 1)[0].strip()
        try:
            chunk_size = int(size_text, 16)
        except ValueError:
            raise _BadRequest(400, "Malformed chunk size") from None
        size += chunk_size
        if size > max_body:
            raise _BadRequest(413, f"Request body too large: over {max_body} bytes")
        data_start = line_end + 2
        if chunk_size == 0:
            trailers_end = buffer.find(b"\r\n\r\n", line_end)
            if buffer[data_start : data_start + 2] == b"\r\n":
                return b"".join(chunks), data_start + 2
            if trailers_end < 0:
                return None
            return b"".join(chunks), trailers_end + 4
        data_end = data_start + chunk_size
        if len(buffer) < data_end + 2:
            return None
        if buffer[data_end : data_end + 2] != b"\r\n":
            raise _BadRequest(400, "Malformed chunk")
        chunks.append(bytes(buffer[data_start:data_end]))
        position = data_end + 2


class HttpServer:
    """Serve ``handler`` on ``sock``. ``error_reply(status, message)`` builds the answer to a
    request that could not be parsed, so those carry the same headers as every other."""

    def __init__(self, handler: Handler, error_reply: ErrorReply, *, max_body: int) -> None:
        self.handler = handler
        self.error_reply = error_reply
        self.max_body = max_body
        self.connections: set[_Connection] = set()
        self.tasks: set[asyncio.Task[Reply]] = set()
        self._server: asyncio.Server | None = None

    async def start(self, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _Connection(self), sock=sock)

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        for connection in list(self.connections):
            connection.close()
        pending = list(self.tasks)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        await server.wait_closed()
