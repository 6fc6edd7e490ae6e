"""The ceiling for the mock server benchmark: a minimal aiohttp app answering every PUT with the
reference page's example response, fixed bytes, no parsing, no state. Prints its URL, like
`shopline-async mock-server`, so the benchmark starts both the same way."""

from __future__ import annotations

import asyncio
import sys

from aiohttp import web
from common import spec_response_bytes

BODY = spec_response_bytes()


async def answer(request: web.BaseRequest) -> web.Response:
    await request.read()
    return web.Response(body=BODY, headers={"traceId": "0", "Content-Type": "application/json"})


async def main() -> None:
    runner = web.ServerRunner(web.Server(answer, access_log=None), handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    print(f"reference server on http://127.0.0.1:{port}", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    try:
        import uvloop
    except ImportError:
        asyncio.run(main())
    else:
        uvloop.run(main())
    sys.exit(0)
