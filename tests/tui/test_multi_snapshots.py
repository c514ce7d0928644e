"""SVG snapshots of the console over three balancers, built from the recorded snapshot
(``fixtures/snapshots/main.json``): lb1 is the recording, lb2 the same fleet seen with half
the traffic and a slower p99 on api-2, lb3 answered once and then went away. The console's
clock is a fake one that the gone balancer moves 12 s on, so every picture is the same.
``pytest tests/tui/test_multi_snapshots.py --snapshot-update`` after an intended change."""

from __future__ import annotations

import dataclasses

from textual.pilot import Pilot

from lbtui.control.errors import Unavailable
from lbtui.control.model import Snapshot
from lbtui.control.multi import MultiControl
from lbtui.tui.multi_app import MultiApp
from lbtui.tui.recorded import RecordedControl
from tests.tui.conftest import MAIN, wait_for
from tests.tui.screen import screen_text


class FakeClock:
    def __init__(self, at: float, wall: float) -> None:
        self.at, self.wall_at = at, wall

    def now(self) -> float:
        return self.at

    def wall(self) -> float:
        return self.wall_at

    def advance(self, s: float) -> None:
        self.at += s
        self.wall_at += s


class GoneAfterFirst(RecordedControl):
    """Answers the first snapshot, then is unreachable (as a killed balancer is)."""

    def __init__(self, snapshot: Snapshot, clock: FakeClock) -> None:
        super().__init__(snapshot, target="http://10.0.0.3:9901")
        self.asked = 0
        self.clock = clock

    async def snapshot(self) -> Snapshot:
        self.asked += 1
        if self.asked == 1:
            return await super().snapshot()
        if self.asked == 2:
            self.clock.advance(12.0)
        raise Unavailable("http://10.0.0.3:9901: unreachable (ConnectError: connection refused)")


def halved(s: Snapshot) -> Snapshot:
    backends = [
        dataclasses.replace(
            b,
            rps=b.rps / 2,
            rps_series=[r / 2 for r in b.rps_series],
            requests_total=b.requests_total // 2,
            p99_ms=(b.p99_ms or 0) * 3 if b.name == "api-2" else b.p99_ms,
        )
        for b in s.backends
    ]
    totals = dataclasses.replace(s.totals, rps=s.totals.rps / 2)
    return dataclasses.replace(s, backends=backends, totals=totals)


def make_app() -> MultiApp:
    loaded = RecordedControl.load(MAIN)
    recorded = loaded._snapshot
    lb1 = RecordedControl(recorded, loaded._events, target="http://10.0.0.1:9901")
    clock = FakeClock(recorded.at, recorded.wall)
    lb2 = RecordedControl(halved(recorded), target="http://10.0.0.2:9901")
    lb3 = GoneAfterFirst(recorded, clock)
    control = MultiControl(
        [("lb1", lb1), ("lb2", lb2), ("lb3", lb3)], clock=clock.now, wall=clock.wall
    )
    return MultiApp(control, refresh_s=0.25)


async def loaded(pilot: Pilot[None]) -> None:
    app = pilot.app
    assert isinstance(app, MultiApp)
    await wait_for(pilot, lambda: len(app.events) >= 11, "the recorded events")
    await wait_for(pilot, lambda: "gone 12 s" in screen_text(app), "lb3 gone")
    seen = app.snapshots_seen
    await wait_for(pilot, lambda: app.snapshots_seen > seen + 1, "two snapshots more")
    await pilot.pause()


def test_three_balancers_one_gone(snap_compare):
    """The balancers panel (lb3 greyed: gone 12 s, why), the backend rows summed over lb1 and
    lb2, api-1's breakdown on each balancer (lb3's last figures greyed), the tagged events."""
    assert snap_compare(make_app(), terminal_size=(160, 48), run_before=loaded)


def test_three_balancers_at_80x24(snap_compare):
    """The smallest terminal: the panel keeps link, req/s, p99, err% and why lb3 is gone."""
    assert snap_compare(make_app(), terminal_size=(80, 24), run_before=loaded)


async def test_help_says_t_and_how_rows_add_up():
    from lbtui.tui.screens.help import HelpScreen

    app = make_app()
    async with app.run_test(size=(120, 60)) as pilot:
        await wait_for(pilot, lambda: app.snapshot is not None, "first snapshot")
        await pilot.press("question_mark")
        await wait_for(pilot, lambda: isinstance(app.screen, HelpScreen), "help open")
        await pilot.pause()
        text = " ".join(screen_text(app).split())
        assert "t send actions to every balancer, or to the one chosen" in text
        assert "p50/p99 the highest" in text
