"""WebSocket (any Upgrade) through the fast listener: a real aiohttp WebSocket backend, a real
``ws_connect`` client, and the balancer between them."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from lbtui import config as config_mod
from lbtui.balancer.server import BalancerServer
from lbtui.control.snapshot import build_snapshot


class WsBackend:
    """Echoes WebSocket messages; ``/ws?close=1`` closes after the first; ``/no`` refuses the
    upgrade with 403; ``/`` answers plain requests with its name."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.runner: web.AppRunner | None = None
        self.port = 0
        self.seen: list[dict[str, str]] = []
        self.open = 0

    async def ws(self, request: web.Request) -> web.StreamResponse:
        self.seen.append(dict(request.headers))
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self.open += 1
        try:
            async for msg in ws:
                if msg.type == aiohttp.WSMsgType.TEXT:
                    await ws.send_str(f"{self.name}:{msg.data}")
                elif msg.type == aiohttp.WSMsgType.BINARY:
                    await ws.send_bytes(msg.data[::-1])
                if request.query.get("close"):
                    await ws.close()
        finally:
            self.open -= 1
        return ws

    async def refuse(self, request: web.Request) -> web.Response:
        return web.Response(status=403, text="no upgrade for you")

    async def plain(self, request: web.Request) -> web.Response:
        return web.Response(text=self.name)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/ws", self.ws)
        app.router.add_get("/no", self.refuse)
        app.router.add_get("/", self.plain)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = self.runner.addresses[0][1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


Make = Callable[..., Awaitable[tuple[BalancerServer, list[WsBackend]]]]


@pytest.fixture
async def rig() -> AsyncIterator[Make]:
    servers: list[BalancerServer] = []
    backends: list[WsBackend] = []

    async def make(n: int = 1, **sections: Any) -> tuple[BalancerServer, list[WsBackend]]:
        mine = [WsBackend(f"b{i + 1}") for i in range(n)]
        for b in mine:
            await b.start()
        backends.extend(mine)
        data: dict[str, Any] = {
            "listener": {"address": "127.0.0.1:0"},
            "backends": [{"name": b.name, "url": b.url} for b in mine],
            **sections,
        }
        server = BalancerServer(config_mod.from_dict(data, "test"))
        await server.start()
        servers.append(server)
        return server, mine

    yield make
    for s in servers:
        await s.stop(0)
    for b in backends:
        assert b.runner is not None
        await b.runner.cleanup()


async def until(check: Callable[[], object], what: str, deadline_s: float = 10.0) -> None:
    end = time.monotonic() + deadline_s
    while not check():
        assert time.monotonic() < end, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


def tunnels(server: BalancerServer) -> int:
    return sum(v.tunnels for v in build_snapshot(server.proxy).listeners)


async def test_websocket_echoes_both_ways_and_counts_in_flight(rig: Make) -> None:
    server, (b1,) = await rig()
    async with aiohttp.ClientSession() as s, s.ws_connect(server.url + "/ws?x=1") as ws:
        for i in range(5):
            await ws.send_str(f"hello {i}")
            assert (await ws.receive_str(timeout=5)) == f"b1:hello {i}"
        await ws.send_bytes(b"\x00\x01\x02" * 1000)
        assert (await ws.receive_bytes(timeout=5)) == (b"\x00\x01\x02" * 1000)[::-1]
        snap = build_snapshot(server.proxy)
        assert snap.backend("b1").in_flight == 1
        assert snap.totals.in_flight == 1
        assert tunnels(server) == 1
    await until(lambda: tunnels(server) == 0, "the tunnel closed")
    await until(lambda: b1.open == 0, "the backend's socket closed")
    snap = build_snapshot(server.proxy)
    assert snap.backend("b1").in_flight == 0
    assert snap.totals.in_flight == 0
    headers = b1.seen[0]
    assert headers["Upgrade"].lower() == "websocket"
    assert "upgrade" in headers["Connection"].lower()
    assert headers["X-Forwarded-Proto"] == "http"
    assert "X-Forwarded-For" in headers


async def test_backend_closing_ends_the_tunnel(rig: Make) -> None:
    server, _ = await rig()
    async with aiohttp.ClientSession() as s, s.ws_connect(server.url + "/ws?close=1") as ws:
        await ws.send_str("bye")
        assert (await ws.receive_str(timeout=5)) == "b1:bye"
        msg = await ws.receive(timeout=5)
        assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
    await until(lambda: tunnels(server) == 0, "the tunnel closed")


async def test_refused_upgrade_is_relayed(rig: Make) -> None:
    server, _ = await rig()
    async with aiohttp.ClientSession() as s:
        with pytest.raises(aiohttp.WSServerHandshakeError) as info:
            await s.ws_connect(server.url + "/no")
        assert info.value.status == 403
        async with s.get(server.url + "/") as resp:  # the listener goes on serving
            assert await resp.text() == "b1"
    assert tunnels(server) == 0
    assert build_snapshot(server.proxy).totals.in_flight == 0


async def test_idle_tunnel_is_closed(rig: Make) -> None:
    server, _ = await rig(proxy={"tunnel_idle_timeout_s": 0.3})
    async with aiohttp.ClientSession() as s, s.ws_connect(server.url + "/ws", autoping=False) as ws:
        await ws.send_str("one")
        assert (await ws.receive_str(timeout=5)) == "b1:one"
        t0 = time.monotonic()
        msg = await ws.receive(timeout=10)
        assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
        assert time.monotonic() - t0 >= 0.25
    await until(lambda: tunnels(server) == 0, "the tunnel closed")


async def test_least_connections_sees_tunnels(rig: Make) -> None:
    server, _ = await rig(2, balancer={"algorithm": "least_connections"})
    async with aiohttp.ClientSession() as s, s.ws_connect(server.url + "/ws") as ws:
        await ws.send_str("x")
        holder = (await ws.receive_str(timeout=5)).split(":")[0]
        other = "b2" if holder == "b1" else "b1"
        got = []
        for _ in range(6):
            async with s.get(server.url + "/") as resp:
                got.append(await resp.text())
        assert got == [other] * 6


async def test_shutdown_waits_for_tunnels_up_to_the_grace(rig: Make) -> None:
    server, _ = await rig()
    async with aiohttp.ClientSession() as s:
        ws = await s.ws_connect(server.url + "/ws")
        stopping = asyncio.create_task(server.stop(30))
        await asyncio.sleep(0.2)
        assert not stopping.done()
        await ws.send_str("still here")  # the tunnel works while the balancer drains
        assert (await ws.receive_str(timeout=5)) == "b1:still here"
        await ws.close()
        await asyncio.wait_for(stopping, 10)

    server2, _ = await rig()
    async with aiohttp.ClientSession() as s:
        ws = await s.ws_connect(server2.url + "/ws")
        t0 = time.monotonic()
        await server2.stop(0.3)  # the grace runs out: the tunnel is cut
        assert time.monotonic() - t0 < 5
        msg = await ws.receive(timeout=5)
        assert msg.type in (
            aiohttp.WSMsgType.CLOSE,
            aiohttp.WSMsgType.CLOSED,
            aiohttp.WSMsgType.ERROR,
        )


async def test_metrics_show_tunnels(rig: Make) -> None:
    from lbtui.control.metrics import render

    server, _ = await rig()
    async with aiohttp.ClientSession() as s, s.ws_connect(server.url + "/ws") as ws:
        await ws.send_str("m")
        await ws.receive_str(timeout=5)
        text = render(server.proxy).decode()
        assert 'lbtui_listener_tunnels{listener="default"} 1.0' in text
        assert 'lbtui_backend_in_flight{backend="b1"} 1.0' in text
    await until(lambda: tunnels(server) == 0, "the tunnel closed")
    text = render(server.proxy).decode()
    assert 'lbtui_listener_tunnels{listener="default"} 0.0' in text
    assert 'lbtui_listener_tunnels_closed_total{listener="default"} 1.0' in text


async def test_client_leaving_before_the_101_frees_everything() -> None:
    held: list[asyncio.StreamWriter] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        held.append(writer)  # never answers

    backend = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = backend.sockets[0].getsockname()[1]
    data = {
        "listener": {"address": "127.0.0.1:0"},
        "backends": [{"name": "b1", "url": f"http://127.0.0.1:{port}"}],
    }
    server = BalancerServer(config_mod.from_dict(data, "test"))
    await server.start()
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(
            b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        await until(lambda: held, "the backend got the upgrade request")
        assert build_snapshot(server.proxy).backend("b1").in_flight == 1
        writer.close()
        await until(lambda: build_snapshot(server.proxy).totals.in_flight == 0, "the request ended")
        snap = build_snapshot(server.proxy)
        assert snap.backend("b1").in_flight == 0
        assert snap.backend("b1").breaker.state == "closed"
    finally:
        await server.stop(0)
        for w in held:
            w.close()
        backend.close()
        await backend.wait_closed()
