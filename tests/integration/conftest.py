"""Real servers on 127.0.0.1 ephemeral ports: in-process aiohttp backends and the balancer."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from lbtui import config as config_mod
from lbtui.balancer.server import BalancerServer

PATTERN = bytes(range(256)) * 256  # 64 KiB of deterministic bytes


def pattern_bytes(n: int) -> bytes:
    """The first ``n`` bytes of the repeating pattern the test backends serve."""
    reps, rest = divmod(n, len(PATTERN))
    return PATTERN * reps + PATTERN[:rest]


class TestBackend:
    """An aiohttp app on an ephemeral port that reports what it received."""

    __test__ = False

    def __init__(self, name: str) -> None:
        self.name = name
        self.hits = 0
        self.requests: list[dict[str, Any]] = []
        self.runner: web.AppRunner | None = None
        self.port = 0
        self.delay_s = 0.0
        self.status = 200

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.hits += 1
        path = request.path
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if path.startswith("/big"):
            size = int(request.query["size"])
            resp = web.StreamResponse(headers={"X-Backend": self.name})
            if request.query.get("sized") == "1":
                resp.content_length = size
            await resp.prepare(request)
            left = size if request.method != "HEAD" else 0
            while left:
                n = min(left, len(PATTERN))
                await resp.write(PATTERN[:n])
                left -= n
            await resp.write_eof()
            return resp
        if path.startswith("/sleep"):
            await asyncio.sleep(float(request.query["s"]))
        digest = hashlib.sha256()
        size = 0
        async for chunk in request.content.iter_any():
            digest.update(chunk)
            size += len(chunk)
        info = {
            "backend": self.name,
            "method": request.method,
            "raw_path": request.raw_path,
            "headers": [[k, v] for k, v in request.headers.items()],
            "body_sha256": digest.hexdigest(),
            "body_size": size,
        }
        self.requests.append(info)
        status = int(request.query.get("status", self.status))
        headers: list[tuple[str, str]] = [("X-Backend", self.name)]
        if path.startswith("/cookies"):
            headers += [("Set-Cookie", "a=1; Path=/"), ("Set-Cookie", "b=2; Path=/")]
        if path.startswith("/hop"):
            headers += [("Connection", "X-Secret"), ("X-Secret", "1"), ("Keep-Alive", "timeout=5")]
        if status in (204, 304):
            return web.Response(status=status, headers=headers)
        return web.Response(
            status=status,
            body=json.dumps(info).encode(),
            content_type="application/json",
            headers=headers,
        )

    async def start(self, port: int = 0) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", port, reuse_address=True)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None


@pytest.fixture
async def backends() -> AsyncIterator[Callable[[int], Awaitable[list[TestBackend]]]]:
    started: list[TestBackend] = []

    async def make(n: int) -> list[TestBackend]:
        out = []
        for _i in range(n):
            b = TestBackend(f"b{len(started) + 1}")
            await b.start()
            started.append(b)
            out.append(b)
        return out

    yield make
    for b in started:
        await b.stop()


ENGINES = ("fast", "aiohttp")
"""The two listeners (``[listener] engine``): every test that takes ``balancer`` runs on both."""


@pytest.fixture(params=ENGINES)
async def balancer(
    request: pytest.FixtureRequest,
) -> AsyncIterator[Callable[..., Awaitable[BalancerServer]]]:
    started: list[BalancerServer] = []
    engine = request.param

    async def make(servers: list[TestBackend], /, **sections: Any) -> BalancerServer:
        data: dict[str, Any] = {"listener": {"address": "127.0.0.1:0", "engine": engine}}
        data["backends"] = [{"name": b.name, "url": b.url} for b in servers]
        for key, value in sections.items():
            if key == "backends":
                data["backends"] = value
            else:
                data[key] = value
        cfg = config_mod.from_dict(data, "test")
        server = BalancerServer(cfg)
        await server.start()
        started.append(server)
        return server

    yield make
    for s in started:
        await s.stop()


@pytest.fixture
async def client() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(auto_decompress=False) as session:
        yield session


class DroppingBackend:
    """Accepts a connection, reads the request head, and closes without answering."""

    def __init__(self) -> None:
        self.requests = 0
        self.server: asyncio.AbstractServer | None = None
        self.port = 0

    async def _conn(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            self.requests += 1
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        writer.close()

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._conn, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self.server:
            self.server.close()
            await self.server.wait_closed()


@pytest.fixture
async def dropping() -> AsyncIterator[DroppingBackend]:
    d = DroppingBackend()
    await d.start()
    yield d
    await d.stop()
