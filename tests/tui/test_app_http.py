"""``lbtui attach`` against the admin API: a target that is not there yet, a wrong token, a
server that goes away. The console says what is wrong, keeps the last state greyed, retries
with backoff, and recovers by itself — it never crashes."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from lbtui.balancer.pool import AdminState
from lbtui.config import AdminConfig
from lbtui.control.api import AdminServer
from lbtui.control.client import HttpControl
from lbtui.control.local import LocalControl
from lbtui.tui.app import LbtuiApp
from lbtui.tui.widgets.backends import BackendTable
from tests.tui.conftest import SIZE, wait_for, wait_text
from tests.tui.screen import screen_text

TOKEN = "console"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
async def admin(backends, balancer) -> AsyncIterator[Callable[..., Awaitable[AdminServer]]]:
    started: list[AdminServer] = []

    async def make(port: int = 0, **kw: Any) -> AdminServer:
        lb = await balancer(await backends(2))
        server = AdminServer(
            AdminConfig(address=f"127.0.0.1:{port}", token=TOKEN),
            LocalControl(lb.proxy),
            keepalive_s=0.5,
            environ={},
        )
        await server.start()
        started.append(server)
        return server

    yield make
    for s in started:
        await s.stop()


@pytest.fixture
async def http() -> AsyncIterator[Callable[..., HttpControl]]:
    made: list[HttpControl] = []

    def make(url: str, token: str | None = TOKEN, **kw: Any) -> HttpControl:
        c = HttpControl(url, token, timeout_s=1.0, reconnect_for_s=1.0, **kw)
        made.append(c)
        return c

    yield make
    for c in made:
        await c.aclose()


async def test_nothing_listening_then_the_server_appears(admin, http):
    port = free_port()
    control = http(f"http://127.0.0.1:{port}")
    app = LbtuiApp(control, refresh_s=0.1)
    async with app.run_test(size=SIZE) as pilot:
        text = await wait_text(pilot, "disconnected")
        assert f"http://127.0.0.1:{port}" in text
        assert "retrying in" in text
        assert app.is_running
        # the whole reason, wrapped at word boundaries under the header, never cut
        problem = app.link.problem
        assert len(problem) > 30
        assert str(app.query_one("#totals-3").render()).strip() == f"✖ {problem}"
        words = " ".join(screen_text(app).split())
        assert " ".join(problem.split()) in words
        server = await admin(port)
        await wait_for(pilot, lambda: app.link.ok and app.snapshot is not None, "recovered", 15)
        await wait_for(pilot, lambda: "b1" in screen_text(app), "backends shown")
        assert "disconnected" not in screen_text(app)
        assert not app.query_one("#totals-3").display
        # actions and the event stream work over the recovered link
        await pilot.press("d")
        lb_backend = server.control.proxy.backends["b1"]
        await wait_for(pilot, lambda: lb_backend.admin == AdminState.DRAINING, "drained", 10)
        await wait_for(
            pilot,
            lambda: any(e.backend == "b1" and "drain" in e.message for e in app.events),
            "the drain event came back through the stream",
            15,
        )


async def test_server_goes_away_state_stays_greyed(admin, http):
    server = await admin()
    app = LbtuiApp(http(server.url), refresh_s=0.1)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.snapshot is not None, "connected")
        await server.stop()
        await wait_text(pilot, "disconnected")
        # The age of the state shown follows within a refresh.
        text = await wait_text(pilot, "state from")
        assert "b1" in text  # the last known state is still there
        assert app.query_one("#body").has_class("-stale")
        assert app.query_one(BackendTable).row_count == 2


async def test_a_refused_token_stops_the_console_with_exit_2(admin, http):
    """A 401 is not a connection problem: no retry will fix it (issue 13, item 5)."""
    server = await admin()
    app = LbtuiApp(http(server.url, token="wrong"), refresh_s=0.1)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.refused is not None, "refused", 10)
    assert app.return_code == 2
    assert app.refused is not None
    assert "refused the token (401" in app.refused
    assert "check --token" in app.refused


async def test_lbtui_attach_with_a_wrong_token_exits_2_and_says_why(admin):
    server = await admin()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "lbtui", "attach", server.url, "--token", "wrong",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "LBTUI_ADMIN_TOKEN": ""},
    )  # fmt: skip
    try:
        out, err = await asyncio.wait_for(proc.communicate(), 60)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 2, (out, err)
    message = err.decode()
    assert f"lbtui: attach {server.url}: the admin API refused the token (401" in message
    assert "check --token" in message
    assert "Traceback" not in message


async def test_read_only_attach_refuses_at_both_ends(admin, http):
    server = await admin()
    app = LbtuiApp(http(server.url, read_only=True), refresh_s=0.1)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.snapshot is not None, "connected")
        assert app.read_only  # taken from the control
        await pilot.press("d")
        await pilot.pause()
        assert server.control.proxy.backends["b1"].admin == AdminState.ACTIVE
        assert "READ-ONLY" in screen_text(app)
