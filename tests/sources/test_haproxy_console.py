"""The console attached to a real HAProxy: its servers with HAProxy's status, check and queue,
the frontends panel, a key that drains a server in HAProxy, and a key HAProxy cannot honour
answered with why."""

from __future__ import annotations

import asyncio
import time

from lbtui.sources.haproxy import HaproxyControl
from lbtui.tui.app import LbtuiApp
from tests.sources.rig import HaproxyRig
from tests.tui.conftest import SIZE, ready, wait_for, wait_text
from tests.tui.screen import screen_text


async def test_console_shows_haproxy_and_drains_with_a_key(haproxy: HaproxyRig) -> None:
    await asyncio.to_thread(lambda: [haproxy.get() for _ in range(9)])
    app = LbtuiApp(HaproxyControl(haproxy.url), refresh_s=0.1)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        screen = await wait_text(pilot, "fe_main")
        for text in ("be_app/s1", "be_app/s3", "check", "L4OK", "queue", "frontends", "scur"):
            assert text in screen, text
        header = next(line for line in screen.splitlines() if " backend " in line)
        assert "check" in header
        assert "breaker" not in header
        await wait_text(pilot, "attached to HAProxy")  # the timeline starts
        dimmed = {key for key, _, dim in app.keybar.keys() if dim}  # noqa: SIM118 (a method)
        assert dimmed == {"s", "e", "b", "a", "l"}  # greyed: HAProxy cannot (h is not shown)
        assert app.table.selected == "be_app/s1"

        start = time.monotonic()
        await pilot.press("d")
        await wait_for(pilot, lambda: haproxy.server_status("s1") == "DRAIN", "s1 DRAIN")
        key_to_haproxy_ms = (time.monotonic() - start) * 1000
        await wait_for(pilot, lambda: "DRAIN" in screen_text(app), "DRAIN on screen")
        print(f"key d → HAProxy DRAIN in {key_to_haproxy_ms:.0f} ms")
        assert key_to_haproxy_ms < 2000

        await pilot.press("s")  # slow: HAProxy cannot delay, and the console says why

        def told() -> bool:
            return any("cannot inject faults" in n.message for n in app._notifications)

        await wait_for(pilot, told, "the reason HAProxy cannot slow a server")
        assert len(app.screen_stack) == 1  # no form was opened
        await pilot.press("r")  # restore: ready again
        await wait_for(pilot, lambda: haproxy.server_status("s1") == "UP", "s1 UP again")
