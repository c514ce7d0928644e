"""Live reload through real sockets: the admin API under open-loop load (0 failed requests),
a broken file (422, nothing changed), SIGHUP and ``lbtui reload`` on a real ``lbtui serve``,
and a reload that reaches every worker process."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import pytest

from lbtui import config as config_mod
from lbtui.control.runtime import BalancerRuntime, run_balancer
from lbtui.core.events import ConfigRejected, ConfigReloaded
from lbtui.loadgen import LoadGenerator
from tests.integration.conftest import TestBackend
from tests.integration.test_cli import LBTUI, free_port
from tests.integration.test_workers import snapshot, until

Backends = Callable[[int], Awaitable[list[TestBackend]]]


def write(path: Path, servers: list[TestBackend], *extra: str, workers: int = 1) -> None:
    """A config file: the listener and admin API on free ports, ``servers`` as backends."""
    lines = [
        "[listener]",
        'address = "127.0.0.1:0"',
        f"workers = {workers}",
        "[admin]",
        'address = "127.0.0.1:0"',
        *extra,
    ]
    for b in servers:
        lines += ["[[backends]]", f'name = "{b.name}"', f'url = "{b.url}"']
    path.write_text("\n".join(lines) + "\n")


@pytest.fixture
async def reloadable(tmp_path: Path) -> AsyncIterator[Callable[..., Awaitable[BalancerRuntime]]]:
    started: list[BalancerRuntime] = []
    path = tmp_path / "lbtui.toml"

    async def make(servers: list[TestBackend], *extra: str, workers: int = 1) -> BalancerRuntime:
        write(path, servers, *extra, workers=workers)
        rt = run_balancer(
            config_mod.load(path), loader=lambda: config_mod.load(path), source=str(path)
        )
        await rt.start()
        started.append(rt)
        return rt

    yield make
    for rt in started:
        await rt.stop()


async def post_reload(rt: BalancerRuntime) -> tuple[int, dict[str, Any]]:
    assert rt.admin is not None
    async with httpx.AsyncClient(trust_env=False) as c:
        r = await c.post(f"{rt.admin.url}/api/v1/config/reload", timeout=10)
    return r.status_code, r.json()


async def test_two_reloads_under_open_loop_load_fail_no_request(
    backends: Backends, reloadable: Callable[..., Awaitable[BalancerRuntime]], tmp_path: Path
) -> None:
    b1, b2, b3 = await backends(3)
    rt = await reloadable([b1, b2], '[balancer]\nalgorithm = "round_robin"')
    path = tmp_path / "lbtui.toml"
    gen = LoadGenerator(rt.server.url + "/", 150, 4.0, connections=16, timeout_s=5.0)
    load = asyncio.create_task(gen.run())
    await until(lambda: b1.hits + b2.hits >= 30, what="load flowing")

    write(path, [b1, b2, b3], '[balancer]\nalgorithm = "least_request"')
    status, body = await post_reload(rt)
    assert status == 200, body
    assert body["changes"] == ["+b3", "algorithm round_robin → least_request"]
    assert rt.server.proxy.default_pool.algorithm == "least_request"
    await until(lambda: b3.hits >= 10, what="the new backend taking requests")

    write(path, [b2, b3], '[balancer]\nalgorithm = "least_request"')
    status, body = await post_reload(rt)
    assert status == 200, body
    assert body["changes"] == ["-b1"]
    removed_at = b1.hits
    others = b2.hits + b3.hits
    await until(lambda: b2.hits + b3.hits >= others + 60, what="load after the removal")
    assert b1.hits <= removed_at + 16  # at most what was already on its way

    report = await load
    assert sum(report.errors.values()) == 0, report.error_examples
    assert set(report.status_counts) == {200}, report.status_counts
    assert report.completed >= 300
    reloaded = [e for e in rt.server.proxy.events if isinstance(e, ConfigReloaded)]
    assert [e.message for e in reloaded] == [
        "config reloaded: +b3, algorithm round_robin → least_request",
        "config reloaded: -b1",
    ]
    assert "b1" not in rt.server.proxy.backends


async def test_a_broken_file_changes_nothing_and_says_why(
    backends: Backends, reloadable: Callable[..., Awaitable[BalancerRuntime]], tmp_path: Path
) -> None:
    b1, b2 = await backends(2)
    rt = await reloadable([b1, b2], "[limits]\nrps = 1000")
    path = tmp_path / "lbtui.toml"
    path.write_text(path.read_text().replace("rps = 1000", 'rps = "lots"\nburts = 3'))
    status, body = await post_reload(rt)
    assert status == 422, body
    assert body["applied"] is False
    assert body["error"]["field"] == "config"
    assert any(p.startswith("limits.rps:") for p in body["problems"]), body
    assert any("burts: unknown key (did you mean 'burst'?)" in p for p in body["problems"])
    rejected = [e for e in rt.server.proxy.events if isinstance(e, ConfigRejected)]
    assert len(rejected) == 1
    assert rejected[0].problems == 2
    assert rt.server.proxy.admission.config.rps == 1000
    assert set(rt.server.proxy.backends) == {"b1", "b2"}
    async with aiohttp.ClientSession() as s, s.get(rt.server.url + "/") as r:
        assert r.status == 200

    path.write_text(path.read_text().replace('rps = "lots"\nburts = 3', "rps = 5"))
    status, body = await post_reload(rt)
    assert status == 200, body
    assert body["changes"] == ["limits (rps)"]
    assert rt.server.proxy.admission.config.rps == 5


async def test_live_tables_take_effect(
    backends: Backends, reloadable: Callable[..., Awaitable[BalancerRuntime]], tmp_path: Path
) -> None:
    """Routes, weights and retries changed in the file change what requests do."""
    b1, b2 = await backends(2)
    rt = await reloadable([b1, b2])
    path = tmp_path / "lbtui.toml"
    text = path.read_text()
    text += '[[routes]]\npath_prefix = "/only2"\nbackends = ["b2"]\n'
    text += "[retries]\nattempts = 2\nretry_on_status = [503]\n"
    path.write_text(text)
    status, body = await post_reload(rt)
    assert status == 200, body
    assert body["changes"] == ["retries (attempts, retry_on_status)", "routes"]
    before = b1.hits
    async with aiohttp.ClientSession() as s:
        for _ in range(6):
            async with s.get(rt.server.url + "/only2/x") as r:
                assert r.status == 200
                assert r.headers["X-Backend"] == "b2"
        assert b1.hits == before
        b1.status = 503  # now a 503 from b1 is retried on b2
        for _ in range(4):
            async with s.get(rt.server.url + "/any") as r:
                assert r.status == 200


async def test_a_reload_reaches_every_worker(
    backends: Backends, reloadable: Callable[..., Awaitable[BalancerRuntime]], tmp_path: Path
) -> None:
    if sys.platform != "linux":
        pytest.skip("SO_REUSEPORT balancing")
    b1, b2, b3 = await backends(3)
    rt = await reloadable([b1, b2], workers=2)
    path = tmp_path / "lbtui.toml"
    write(path, [b2, b3], workers=2)
    status, body = await post_reload(rt)
    assert status == 200, body
    assert body["changes"] == ["-b1", "+b3"]
    connector = aiohttp.TCPConnector(force_close=True)  # new connections: both processes serve

    async def round_without_b1() -> bool:
        before = b1.hits
        async with aiohttp.ClientSession(connector=connector, connector_owner=False) as s:
            for _ in range(20):
                async with s.get(rt.server.url + "/") as r:
                    assert r.status == 200
        return b1.hits == before

    await until(round_without_b1, what="every process serving without b1")
    served_before = {w.index: w.requests_total for w in snapshot(rt).workers}
    assert await round_without_b1()
    assert await round_without_b1()
    hits = b3.hits
    assert hits > 0

    def both_served_since() -> bool:
        now = {w.index: w.requests_total for w in snapshot(rt).workers}
        return len(now) == 2 and all(now[i] > served_before.get(i, 0) for i in now)

    await until(both_served_since, what="both processes serving after the reload")
    await connector.close()


def test_sighup_and_lbtui_reload_on_a_real_serve(tmp_path: Path) -> None:
    path = tmp_path / "lbtui.toml"
    admin_port = free_port()
    port = free_port()
    dead = [f"http://127.0.0.1:{free_port()}" for _ in range(3)]

    def config(*names: int, extra: str = "") -> str:
        text = f'[listener]\naddress = "127.0.0.1:{port}"\n'
        text += f'[admin]\naddress = "127.0.0.1:{admin_port}"\n'
        for i in names:
            text += f'[[backends]]\nname = "d{i}"\nurl = "{dead[i]}"\n'
        return text + extra

    path.write_text(config(0))
    proc = subprocess.Popen(
        [*LBTUI, "serve", "--config", str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    admin = f"http://127.0.0.1:{admin_port}"

    def names() -> list[str]:
        return [b["name"] for b in httpx.get(f"{admin}/api/v1/state", timeout=5).json()["backends"]]

    try:
        end = time.monotonic() + 20
        while True:
            assert proc.poll() is None, proc.communicate()[1]
            try:
                if names() == ["d0"]:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < end, "serve did not start"
            time.sleep(0.05)

        path.write_text(config(0, 1))
        proc.send_signal(signal.SIGHUP)
        end = time.monotonic() + 10
        while names() != ["d0", "d1"]:
            assert time.monotonic() < end, names()
            time.sleep(0.05)

        path.write_text(config(0, 1, extra="[limits]\nrps = -3\n"))
        r = subprocess.run(
            [*LBTUI, "reload", "--admin", admin], capture_output=True, text=True, timeout=30
        )
        assert r.returncode == 2, r
        assert "config reload rejected, nothing changed" in r.stderr
        assert "limits.rps:" in r.stderr
        assert "Traceback" not in r.stderr
        assert names() == ["d0", "d1"]

        path.write_text(config(1, 2))
        r = subprocess.run(
            [*LBTUI, "reload", "--admin", admin], capture_output=True, text=True, timeout=30
        )
        assert r.returncode == 0, r
        assert f"lbtui: config reloaded from {path}: -d0, +d2" in r.stdout
        assert names() == ["d1", "d2"]
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            _, err = proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            _, err = proc.communicate()
    assert proc.returncode == 0, err
    assert f"lbtui: config reloaded from {path}: +d1\n" in err
    assert f"lbtui: config reloaded from {path}: -d0, +d2\n" in err  # the API's, told too
    assert "lbtui: config reload rejected, nothing changed:" in err
    assert "Traceback" not in err


async def test_a_reload_opens_and_closes_listeners(backends: Backends, tmp_path: Path) -> None:
    """A listener added by a reload serves; one removed stops accepting, and a request it
    had in flight still gets its answer."""
    (b1,) = await backends(1)
    web, alt = free_port(), free_port()
    path = tmp_path / "lbtui.toml"

    def write_listeners(*entries: tuple[str, int]) -> None:
        text = '[admin]\naddress = "127.0.0.1:0"\n'
        text += f'[[backends]]\nname = "b1"\nurl = "{b1.url}"\n'
        for n, port in entries:
            text += f'[[listeners]]\nname = "{n}"\naddress = "127.0.0.1:{port}"\n'
        path.write_text(text)

    write_listeners(("web", web))
    rt = run_balancer(config_mod.load(path), loader=lambda: config_mod.load(path), source="f")
    await rt.start()
    try:
        write_listeners(("web", web), ("alt", alt))
        status, body = await post_reload(rt)
        assert status == 200, body
        assert body["changes"] == [f"+listener alt (127.0.0.1:{alt})"]
        async with aiohttp.ClientSession() as s:

            async def answers(port: int) -> bool:
                try:
                    async with s.get(f"http://127.0.0.1:{port}/") as r:
                        return r.status == 200
                except aiohttp.ClientConnectionError:
                    return False

            await until(lambda: answers(alt), what="the new listener answering")
            hits = b1.hits
            slow = asyncio.ensure_future(s.get(f"http://127.0.0.1:{alt}/sleep?s=0.5"))
            await until(lambda: b1.hits > hits, what="the slow request at the backend")
            write_listeners(("web", web))
            status, body = await post_reload(rt)
            assert status == 200, body
            assert body["changes"] == ["-listener alt"]
            resp = await slow
            assert resp.status == 200
            resp.release()
            await until(lambda: _refused(alt), what="the removed listener refusing")
            assert await answers(web)
    finally:
        await rt.stop()


async def _refused(port: int) -> bool:
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return True
    writer.close()
    return False


async def test_a_reload_moves_the_access_log(
    backends: Backends, reloadable: Callable[..., Awaitable[BalancerRuntime]], tmp_path: Path
) -> None:
    (b1,) = await backends(1)
    first, second = tmp_path / "first.log", tmp_path / "second.log"
    rt = await reloadable([b1], f'[access_log]\npath = "{first}"\nflush_ms = 10')
    path = tmp_path / "lbtui.toml"
    async with aiohttp.ClientSession() as s:
        async with s.get(rt.server.url + "/one") as r:
            assert r.status == 200
        await until(lambda: first.exists() and "/one" in first.read_text(), what="first log")
        path.write_text(path.read_text().replace(str(first), str(second)))
        status, body = await post_reload(rt)
        assert status == 200, body
        assert body["changes"] == ["access_log (path)"]
        async with s.get(rt.server.url + "/two") as r:
            assert r.status == 200
        await until(lambda: second.exists() and "/two" in second.read_text(), what="new log")
    assert "/two" not in first.read_text()
