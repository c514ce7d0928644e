"""A small closed-loop HTTP load generator: the stand-in for wrk when wrk is not installed.

Run: ``.venv/bin/python bench/pyload.py URL [--duration 5] [--connections 64]``

Like ``wrk -t1 -cN -dD URL``: N keep-alive connections, each sends ``GET`` and waits for the
answer before the next, for D seconds; prints one JSON line (requests, seconds, req/s, non-2xx
and socket errors by kind, as ``common.WrkResult`` has them). It runs on one Python process
(uvloop, ``asyncio.Protocol`` + llhttp), so it is far slower than wrk: with it, throughput
figures measure the client as much as the proxy, and ``python -m bench`` says so.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from urllib.parse import urlsplit

import httptools

from lbtui.runtime import run_async


class _Client(asyncio.Protocol):
    def __init__(self, request: bytes, stats: dict[str, int], deadline: float) -> None:
        self.request = request
        self.stats = stats
        self.deadline = deadline
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        transport.write(self.request)  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.stats["read"] += 1
            self._end()

    def on_message_complete(self) -> None:
        status = self.parser.get_status_code()
        self.stats["requests"] += 1
        if not 200 <= status < 400:
            self.stats["non_2xx_3xx"] += 1
        if time.monotonic() >= self.deadline or not self.parser.should_keep_alive():
            self._end()
        elif self.transport is not None:
            self.transport.write(self.request)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            if time.monotonic() < self.deadline:
                self.stats["read"] += 1
            self.done.set_result(None)

    def _end(self) -> None:
        if self.transport is not None:
            self.transport.close()
        if not self.done.done():
            self.done.set_result(None)


async def _connection(
    host: str, port: int, request: bytes, stats: dict[str, int], deadline: float
) -> None:
    loop = asyncio.get_running_loop()
    while time.monotonic() < deadline:
        try:
            _, proto = await asyncio.wait_for(
                loop.create_connection(lambda: _Client(request, stats, deadline), host, port), 2.0
            )
        except (OSError, TimeoutError):
            stats["connect"] += 1
            await asyncio.sleep(0.01)
            continue
        left = deadline - time.monotonic() + 2.0
        try:
            await asyncio.wait_for(asyncio.shield(proto.done), max(left, 0.1))
        except TimeoutError:
            stats["timeout"] += 1
            if proto.transport is not None:
                proto.transport.abort()
            return


async def run(url: str, duration: float, connections: int) -> dict[str, float]:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    if host not in ("127.0.0.1", "localhost", "::1"):
        raise SystemExit(f"refusing to load anything but loopback: {url}")
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    request = f"GET {path} HTTP/1.1\r\nHost: {parts.netloc}\r\n\r\n".encode()
    stats = dict.fromkeys(("requests", "non_2xx_3xx", "connect", "read", "write", "timeout"), 0)
    t0 = time.monotonic()
    deadline = t0 + duration
    await asyncio.gather(
        *(_connection(host, port, request, stats, deadline) for _ in range(connections))
    )
    seconds = time.monotonic() - t0
    return {**stats, "seconds": seconds, "rps": stats["requests"] / seconds}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("url")
    p.add_argument("--duration", type=float, default=5.0)
    p.add_argument("--connections", type=int, default=64)
    args = p.parse_args()
    print(json.dumps(run_async(run(args.url, args.duration, args.connections))), flush=True)


if __name__ == "__main__":
    main()
