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


async def test_one_timer_checks_every_backend_each_interval_until_removed():
    """The schedule: every backend checked once an interval, the first checks spread over it;
    a removed backend is checked no more, one added again (a new object under the old name)
    is checked from then on; stop ends every check."""
    runner, port, paths = await serve(200)
    results: list[tuple[str, bool]] = []
    checker = HealthChecker(
        HealthConfig(enabled=True, interval_ms=400, path="/hz"),
        lambda b, ok, detail: results.append((b.name, ok)),
    )
    backends = [Backend(f"b{i}", f"http://127.0.0.1:{port}") for i in range(10)]
    try:
        await checker.start(backends)

        async def until(cond, timeout: float = 10.0) -> None:
            deadline = asyncio.get_running_loop().time() + timeout
            while not cond():
                assert asyncio.get_running_loop().time() < deadline, results[-5:]
                await asyncio.sleep(0.01)

        def count(name: str) -> int:
            return sum(1 for n, _ in results if n == name)

        await until(lambda: all(count(b.name) >= 3 for b in backends))
        assert all(ok for _, ok in results)
        # the first round checked each backend once (spread over the interval: 40 ms apart)
        assert sorted(n for n, _ in results[:10]) == sorted(b.name for b in backends)
        # about one check an interval each: ~3 rounds took ~2 intervals or more
        assert max(count(b.name) for b in backends) <= min(count(b.name) for b in backends) + 2

        checker.remove("b3")
        gone = count("b3")
        again = Backend("b5", f"http://127.0.0.1:{port}")
        checker.remove("b5")
        checker.add(again)
        seen = len(results)
        await until(lambda: len(results) >= seen + 20)
        assert count("b3") <= gone + 1  # at most the check in flight when it was removed
        assert any(n == "b5" for n, _ in results[seen:])
    finally:
        await checker.stop()
        await runner.cleanup()
    after = len(results)
    await asyncio.sleep(0.5)
    assert len(results) == after
    assert all(p == "/hz" for p in paths)
