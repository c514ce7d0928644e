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

            def shown(widget: str) -> str:
                return str(screen.query_one(widget).render())

            # live: elapsed of total, the action ticked off as it fires, the checks so far
            await wait_for(pilot, lambda: "s of 3 s" in shown("#chaos-status"), "elapsed", 30)
            assert "Esc interrupts" in shown("#chaos-hint")
            await wait_for(
                pilot,
                lambda: "✓ drain b1" in shown("#chaos-plan") and screen.returncode is None,
                "the action as it fired, before the end",
                30,
            )
            await wait_for(pilot, lambda: "holding" in shown("#chaos-plan"), "a live check", 30)
            assert "clients see no errors" in shown("#chaos-plan")
            await wait_for(pilot, lambda: screen.returncode is not None, "the verdict", 60)
            assert screen.returncode == 0, screen.query_one("#chaos-log").lines
            # the verdict is drawn on the screen's next refresh after the run has ended
            await wait_for(pilot, lambda: "PASSED" in shown("#chaos-status"), "PASSED shown", 10)
            await wait_for(pilot, lambda: "passed" in shown("#chaos-plan"), "checks passed", 10)
            assert "interrupts" not in shown("#chaos-hint")  # it has finished

            # its start and end are on the balancer's timeline (so on every console's, and in
            # /api/v1/events), with its name; what it did carries its name too
            def marks() -> list[str]:
                return [
                    e.message
                    for e in app.events
                    if e.origin == "chaos tiny" and e.message.startswith("chaos tiny ")
                ]

            await wait_for(pilot, lambda: len(marks()) == 2, "the start and end events", 10)
            assert marks()[0].startswith("chaos tiny started: 3 s of load at ")
            assert marks()[0].endswith(", 1 timeline action")
            assert marks()[1] == "chaos tiny ended: passed"
            shown_log = [e.message for e in app.log_view.shown]
            assert all(m in shown_log for m in marks())
            assert all(e.id > 0 for e in app.log_view.shown)  # no console-only duplicates
            caused = [e for e in app.events if e.data.get("origin") == "chaos tiny"]
            assert any(e.backend == "b1" for e in caused), app.events
            # the run rolled back its drain
            assert lb.proxy.backends["b1"].admin.value == "active"
            await pilot.press("escape")
    finally:
        await control.aclose()
        await admin.stop()


def test_progress_lines_round_trip_and_other_lines_stay_text():
    from lbtui.chaos.progress import (
        ActionFired,
        CheckLine,
        Finished,
        Log,
        Started,
        Tick,
        from_line,
        to_line,
    )

    for p in (
        Started("tiny", 3.0, ["+1s drain b1"], ["clients see no errors"]),
        ActionFired(1, 1.02, "drain b1", True, ""),
        Tick(2.0, 3.0, [CheckLine("clients see no errors", "holding", "0 % (0 of 80)")]),
        Finished("passed", "", [CheckLine("clients see no errors", "passed", "0 %")]),
        Log("chaos: rolling back"),
    ):
        assert from_line(to_line(p)) == p
    assert from_line("Traceback (most recent call last):") is None
    assert from_line('{"type": "tick"}') is None  # incomplete: shown as text, not a crash
