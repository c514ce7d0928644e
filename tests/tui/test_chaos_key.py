"""`c` runs a chaos experiment against the attached balancer and shows its progress and verdict."""

from __future__ import annotations

from pathlib import Path

from lbtui.config import AdminConfig
from lbtui.control.api import AdminServer
from lbtui.control.client import HttpControl
from lbtui.control.local import LocalControl
from lbtui.tui.app import LbtuiApp
from lbtui.tui.screens.chaos import ChaosScreen, ChaosTarget
from tests.tui.conftest import SIZE, wait_for

SCENARIO = """
name = "tiny"
description = "a short drain of one backend under light load"

[load]
rate = 40
duration = "3s"

[[timeline]]
at = "1s"
action = "drain"
backend = "b1"

[[checks]]
name = "clients see no errors"
kind = "error_rate_below"
percent = 0
"""


async def test_c_runs_a_scenario_and_shows_the_verdict(backends, balancer, tmp_path: Path):
    folder = tmp_path / "scenarios"
    folder.mkdir()
    (folder / "tiny.toml").write_text(SCENARIO)
    lb = await balancer(await backends(2))
    admin = AdminServer(
        AdminConfig(address="127.0.0.1:0", token="t"), LocalControl(lb.proxy), environ={}
    )
    await admin.start()
    control = HttpControl(admin.url, "t")
    try:
        app = LbtuiApp(control, chaos=ChaosTarget(admin.url, lb.url, "t", folder))
        async with app.run_test(size=SIZE) as pilot:
            await pilot.press("c")
            await pilot.pause()
            await pilot.press("enter")
            await wait_for(
                pilot, lambda: isinstance(app.screen, ChaosScreen), "the chaos screen", 5
            )
            screen = app.screen
            assert isinstance(screen, ChaosScreen)
            await wait_for(pilot, lambda: screen.returncode is not None, "the verdict", 60)
            assert screen.returncode == 0, screen.query_one("#chaos-log").lines
            status = str(screen.query_one("#chaos-status").render())
            assert "PASSED" in status
            # the run rolled back its drain
            assert lb.proxy.backends["b1"].admin.value == "active"
            await pilot.press("escape")
    finally:
        await control.aclose()
        await admin.stop()
