"""A small HTTP/1.1 server on asyncio's Protocol API, just enough for the mock.

Framing is httptools' (llhttp, the parser Node.js uses), so chunked bodies, pipelining and the
corner cases of the grammar are a maintained parser's job, not ours. Why not aiohttp's server:
the mock must never be the bottleneck of a benchmark, and aiohttp's per-request machinery (a
task, a stream reader, request and response objects) costs more CPU than the mock's whole
merge-validate-encode work. Here a request whose answer needs no waiting is answered inside
``data_received``, with no task at all; only answers that wait (a rate-limit queue, injected
latency) get one.

Supported: keep-alive and pipelining (answers leave in request order), ``Content-Length`` and
chunked request bodies, ``Expect: 100-continue``, ``Connection: close``, HTTP/1.0, HEAD. A
malformed request gets 400 (431 for a head over 64 KB, 413 for a body over the limit, 415 for a
compressed body, which is never inflated) and the connection is closed, as a server must when it
cannot tell where the next request starts.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from email.utils import formatdate
from http import HTTPStatus
from ssl import SSLContext
from typing import cast

import httptools

__all__ = ["HttpServer", "Reply", "Request"]

_MAX_HEAD = 64 * 1024
_PAUSE_AT = 32  # requests queued behind an answer that waits: stop reading until they are answered


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
    """One client connection. httptools (llhttp, Node.js's parser) does the framing and calls
    back per part; a complete request joins ``_queue`` and is answered in order, at once when
    its answer needs no waiting, else by a task while later requests wait behind it."""

    def __init__(self, server: HttpServer) -> None:
        self._server = server
        self._transport: asyncio.Transport | None = None
        self._peer: tuple[str, int] | None = None
        self._parser = httptools.HttpRequestParser(self)
        self._queue: deque[tuple[Request | Reply, bool]] = deque()
        """Parsed requests (or the error answer that ends the connection) with their keep-alive."""
        self._pending: asyncio.Task[Reply] | None = None
        self._paused = False
        self._closing = False  # the client half-closed, or the stream broke: answer what is queued, then close
        self._parsing = True  # False once the stream cannot be framed any further
        # the request being read
        self._target: list[bytes] = []
        self._headers: dict[str, str] = {}
        self._body: list[bytes] = []
        self._head_size = 0
        self._body_size = 0
        self._in_head = False

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
        if not self._parsing:
            return
        try:
            self._parser.feed_data(data)
            if self._in_head:
                # a head still open after this read: llhttp buffers a header until its line ends,
                # so bound it here too, not only in the callbacks
                self._head_size += len(data)
                if self._head_size > 2 * _MAX_HEAD:
                    raise _BadRequest(431, "Request header fields too large")
        except httptools.HttpParserUpgrade:
            self._stop_parsing(None)  # answer the request, then close: we speak nothing else
        except _BadRequest as bad:
            self._stop_parsing(bad)
        except httptools.HttpParserError as exc:
            cause = exc.__context__  # what a callback raised, if one did
            error = cause if isinstance(cause, _BadRequest) else _BadRequest(400, f"Malformed request: {exc}")
            self._stop_parsing(error)
        self._serve_queued()
        if len(self._queue) > _PAUSE_AT and self._transport is not None and not self._paused:
            self._transport.pause_reading()
            self._paused = True

    def eof_received(self) -> bool:
        # the client will send no more: answer what it did send, then close (a half-sent request
        # does not keep the socket)
        self._closing = True
        self._serve_queued()
        return True

    # --- httptools callbacks ---------------------------------------------

    def on_message_begin(self) -> None:
        self._target = []
        self._headers = {}
        self._body = []
        self._head_size = 0
        self._body_size = 0
        self._in_head = True

    def on_url(self, url: bytes) -> None:
        self._target.append(url)
        self._grow_head(len(url))

    def on_header(self, name: bytes, value: bytes) -> None:
        self._grow_head(len(name) + len(value) + 4)
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        headers = self._headers
        headers[key] = f"{headers[key]}, {text}" if key in headers else text

    def on_headers_complete(self) -> None:
        self._in_head = False
        length = self._headers.get("content-length")
        max_body = self._server.max_body
        if length is not None and int(length) > max_body:  # llhttp checked it is digits
            raise _BadRequest(413, f"Request body too large: {length} bytes, the limit is {max_body}")
        encoding = self._headers.get("content-encoding", "identity").strip().lower()
        if encoding != "identity":  # never inflated here: max_body bounds what a request costs, compressed or not
            raise _BadRequest(415, f"Content-Encoding {encoding[:40]!r} is not accepted: send the body as it is")
        if self._headers.get("expect", "").lower() == "100-continue" and not self._queue and self._pending is None:
            # only when nothing is ahead: an interim answer must not interleave with earlier ones
            self._write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        self._body_size += len(body)
        if self._body_size > self._server.max_body:
            raise _BadRequest(413, f"Request body too large: over {self._server.max_body} bytes")
        self._body.append(body)

    def on_message_complete(self) -> None:
        parser = self._parser
        request = Request(
            parser.get_method().decode("latin-1"),
            b"".join(self._target).decode("latin-1"),
            self._headers,
            b"".join(self._body),
            self._peer,
        )
        self._queue.append((request, parser.should_keep_alive() and not self._closing))

    # --- serving ---------------------------------------------------------

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
        if self._pending is not None:
            self._pending.cancel()

    def _grow_head(self, size: int) -> None:
        self._head_size += size
        if self._head_size > _MAX_HEAD:
            raise _BadRequest(431, "Request header fields too large")

    def _stop_parsing(self, bad: _BadRequest | None) -> None:
        """The stream cannot be framed past this point: answer what came before, then close."""
        self._parsing = False
        self._closing = True
        if bad is not None:
            self._queue.append((self._server.error_reply(bad.status, bad.message), False))

    def _serve_queued(self) -> None:
        queue = self._queue
        while queue and self._transport is not None and self._pending is None:
            item, keep_alive = queue.popleft()
            if isinstance(item, Reply):
                self._send(item, head_only=False, keep_alive=False)
                continue
            try:
                answer = self._server.handler(item)
            except Exception as exc:  # a bug in the mock: say so, like a real 500
                answer = self._server.error_reply(500, f"mock server error: {exc!r}")
            head_only = item.method == "HEAD"
            if isinstance(answer, Reply):
                self._send(answer, head_only=head_only, keep_alive=keep_alive and not self._closing)
            else:
                self._wait_for(answer, head_only=head_only, keep_alive=keep_alive)
        if self._pending is None and not queue:
            if self._paused and self._transport is not None:
                self._paused = False
                self._transport.resume_reading()
            if self._closing and self._transport is not None:
                self._transport.close()

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
            self._send(reply, head_only=head_only, keep_alive=keep_alive and not self._closing)
            self._serve_queued()

        task.add_done_callback(done)

    def _write(self, data: bytes) -> None:
        if self._transport is not None:
            self._transport.write(data)

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

    async def start(self, sock: socket.socket, ssl: SSLContext | None = None) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _Connection(self), sock=sock, ssl=ssl)

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
