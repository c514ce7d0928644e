"""The naive aiohttp reverse proxy: the baseline lbtui is compared against.

``python bench/naive_proxy.py --port 8000 http://127.0.0.1:9001 http://127.0.0.1:9002 ...``

One ``web.Application`` with a catch-all handler, one shared ``ClientSession`` upstream, round
robin over the backends, the body streamed back through a ``StreamResponse``. No retries, no
health, no hop-by-hop care beyond the obvious. Runs on uvloop when installed, like lbtui, so a
side-by-side comparison measures the design and not the event loop.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
from collections.abc import Iterator

import aiohttp
from aiohttp import web

HOP = frozenset({"connection", "keep-alive", "transfer-encoding", "content-length", "host"})


def make_app(backends: list[str]) -> web.Application:
    rr: Iterator[str] = itertools.cycle(backends)
    session_key = web.AppKey("session", aiohttp.ClientSession)

    async def on_startup(app: web.Application) -> None:
        app[session_key] = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0), auto_decompress=False
        )

    async def on_cleanup(app: web.Application) -> None:
        await app[session_key].close()

    async def handle(request: web.Request) -> web.StreamResponse:
        url = next(rr) + request.path_qs
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP}
        data = request.content if request.body_exists else None
        async with app[session_key].request(
            request.method, url, headers=headers, data=data, allow_redirects=False
        ) as up:
            resp = web.StreamResponse(status=up.status, reason=up.reason)
            for k, v in up.headers.items():
                if k.lower() not in HOP:
                    resp.headers.add(k, v)
            if up.content_length is not None:
                resp.content_length = up.content_length
            await resp.prepare(request)
            async for chunk in up.content.iter_any():
                await resp.write(chunk)
            await resp.write_eof()
            return resp

    app = web.Application()
    app.on_startup.append(on_startup)
    app.on_cleanup.append(on_cleanup)
    app.router.add_route("*", "/{tail:.*}", handle)
    return app


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("backends", nargs="+", metavar="URL")
    args = p.parse_args()
    loop: asyncio.AbstractEventLoop
    try:
        import uvloop

        loop = uvloop.new_event_loop()
    except ImportError:
        loop = asyncio.new_event_loop()
    web.run_app(
        make_app([b.rstrip("/") for b in args.backends]),
        host="127.0.0.1",
        port=args.port,
        access_log=None,
        print=None,
        loop=loop,
    )


if __name__ == "__main__":
    main()
