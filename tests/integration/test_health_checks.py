"""Active health checks against real sockets: what a check reports for an answer, a refusal
and silence (a check reads the status line only, on a connection of its own)."""

from __future__ import annotations

import asyncio
import socket

import pytest
from aiohttp import web

from lbtui.balancer.health import HealthChecker
from lbtui.balancer.pool import Backend
from lbtui.config import HealthConfig


async def serve(status: int) -> tuple[web.AppRunner, int, list[str]]:
    paths: list[str] = []

    async def handle(request: web.Request) -> web.Response:
        paths.append(request.path_qs)
        return web.Response(status=status, text="x" * 100_000)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, port, paths


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_a_check_reads_the_status_and_keeps_the_path():
    checker = HealthChecker(HealthConfig(enabled=True, path="/healthz"), lambda *a: None)
    ok_runner, ok_port, paths = await serve(204)
    bad_runner, bad_port, _ = await serve(503)
    try:
        b = Backend("ok", f"http://127.0.0.1:{ok_port}/base")
        assert await checker.check_once(b) == (True, "HTTP 204")
        assert paths == ["/base/healthz"]
        bad = Backend("bad", f"http://127.0.0.1:{bad_port}")
        assert await checker.check_once(bad) == (False, "HTTP 503 (expected 200-399)")
        refused = Backend("gone", f"http://127.0.0.1:{free_port()}")
        passed, detail = await checker.check_once(refused)
        assert not passed
        assert detail.startswith("connect failed: ")
    finally:
        await ok_runner.cleanup()
        await bad_runner.cleanup()


async def test_a_silent_backend_fails_at_the_timeout():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)  # accepts (the kernel does) and never answers
    port = listener.getsockname()[1]
    checker = HealthChecker(HealthConfig(enabled=True, timeout_ms=100), lambda *a: None)
    try:
        started = asyncio.get_running_loop().time()
        result = await checker.check_once(Backend("mute", f"http://127.0.0.1:{port}"))
        took = asyncio.get_running_loop().time() - started
    finally:
        listener.close()
    assert result == (False, "no answer within 100 ms")
    assert took < 1.0


def test_checks_work_on_uvloop_too():
    """``lbtui serve`` runs on uvloop, whose transports are not asyncio's classes."""
    uvloop = pytest.importorskip("uvloop")
    assert uvloop.run(test_a_check_reads_the_status_and_keeps_the_path()) is None
