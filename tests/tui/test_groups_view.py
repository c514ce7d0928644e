"""The groups view and the forward-weights key: pure rows, then the console on a recorded
snapshot that has groups, a spilling zone and a canary route."""

from __future__ import annotations

import dataclasses

from lbtui.control.model import PoolView, RouteView, SetForward, Snapshot
from lbtui.tui.app import LbtuiApp
from lbtui.tui.groups_view import backend_groups, forward_text, group_rows, route_rows
from lbtui.tui.recorded import RecordedControl
from lbtui.tui.screens.form import FormScreen
from lbtui.tui.view import backend_row, cell_text
from tests.tui.conftest import SIZE, ready, wait_for, wait_text
from tests.tui.recorded_fixture import MAIN
from tests.tui.test_app_recorded import CLEAR


def pool(name: str, backends: list[str], rps: float, **kw: object) -> PoolView:
    return PoolView(
        name=name,
        route=kw.pop("route", None),  # type: ignore[arg-type]
        backends=backends,
        eligible=list(kw.pop("eligible", backends)),  # type: ignore[call-overload]
        panic=False,
        rps=rps,
        imbalance=0.5,
        overload=0,
        **kw,  # type: ignore[arg-type]
    )


def grouped(snap: Snapshot) -> Snapshot:
    names = [b.name for b in snap.backends]
    return dataclasses.replace(
        snap,
        pools=[
            pool("default", names, 100.0),
            pool("stable", names[:2], 90.0, route="api", algorithm="round_robin"),
            pool("canary", names[2:3], 10.0, route="api", zone="eu-1", spilling=True, sticky="lb"),
        ],
        routes=[
            RouteView(name="old", match="*/old", action="redirect"),
            RouteView(
                name="api", match="*/api/*", action="forward", forward={"stable": 90, "canary": 10}
            ),
        ],
    )


def test_rows_say_shares_zones_and_weights():
    snap = grouped(RecordedControl.load(MAIN)._snapshot)
    rows = {r[0][0]: [c[0] for c in r] for r in group_rows(snap)}
    assert rows["stable"][6] == "90%"
    assert rows["canary"][6] == "10%"
    assert rows["canary"][2] == "eu-1 SPILLING"
    assert rows["canary"][3] == "lb"
    assert rows["default"][2] == "all"
    assert route_rows(snap)[1] == (
        "2",
        "api",
        "*/api/*",
        "forward",
        "stable 90 (90%) · canary 10 (10%)",
    )
    assert route_rows(snap)[0][4] == "—"
    assert forward_text(RouteView("r", "*/", "forward", {"a": 0, "b": 0})) == "a 0 (0%) · b 0 (0%)"
    groups = backend_groups(snap)
    first, third = snap.backends[0], snap.backends[2]
    assert groups[first.name] == "stable"  # the default group (every backend) is left out
    assert groups[third.name] == "canary"
    assert cell_text(backend_row(third, snap.at, groups[third.name])[-1]) == "canary"


async def test_view_four_shows_groups_and_f_shifts_a_route():
    control = RecordedControl(grouped(RecordedControl.load(MAIN)._snapshot), [])
    app = LbtuiApp(control)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await pilot.press("4")
        text = await wait_text(pilot, "SPILLING")
        assert "target groups" in text
        assert "canary" in text
        assert "stable 90 (90%)" in text
        await pilot.press("f")
        await wait_for(pilot, lambda: isinstance(app.screen, FormScreen), "form")
        await pilot.press(*CLEAR, "5", "0", "tab", *CLEAR, "5", "0", "enter")
        await wait_for(pilot, lambda: control.actions, "sent")
        sent = control.actions[-1].action
        assert sent == SetForward(route="api", weights={"stable": 50.0, "canary": 50.0})
