"""SVG snapshots of the console on the recorded snapshot (``fixtures/snapshots/main.json``).

The recording freezes time (the same snapshot every poll, events with fixed wall clocks, and
UTC from the ``utc`` fixture), so the pictures are stable. After an intended change of layout:
``pytest tests/tui/test_snapshots.py --snapshot-update`` and look at the new SVGs.
"""

from __future__ import annotations

from textual.pilot import Pilot

from lbtui.tui.app import LbtuiApp
from lbtui.tui.recorded import RecordedControl
from tests.tui.conftest import MAIN, SIZE, wait_for


def make_app() -> LbtuiApp:
    """Built the way ``lbtui attach`` builds it, on the recorded control."""
    return LbtuiApp(RecordedControl.load(MAIN), refresh_s=0.25)


async def loaded(pilot: Pilot[None]) -> None:
    app = pilot.app
    assert isinstance(app, LbtuiApp)
    await wait_for(pilot, lambda: app.snapshot is not None and len(app.events) >= 11, "loaded")
    seen = app.snapshots_seen
    # one more snapshot after the events: every pane has drawn both, whatever the timing
    await wait_for(pilot, lambda: app.snapshots_seen > seen, "a snapshot after the events")
    await pilot.pause()


def test_main_screen(snap_compare):
    """Header, four backends (ejected, breaker open under an abort, draining, delayed),
    the first one's detail, the event log, the footer."""
    assert snap_compare(make_app(), terminal_size=SIZE, run_before=loaded)


def test_detail_explains_an_open_breaker(snap_compare):
    """api-2 selected: OPEN since … with the reason and the probe countdown, the fault's
    proof, the breaker window against its thresholds."""

    async def run_before(pilot: Pilot[None]) -> None:
        await loaded(pilot)
        await pilot.press("down")
        await pilot.pause()

    assert snap_compare(make_app(), terminal_size=SIZE, run_before=run_before)


def test_slow_dialog_says_what_is_wrong(snap_compare):
    """The slow-down dialog after a bad submit: each wrong field says why, inline."""

    async def run_before(pilot: Pilot[None]) -> None:
        await loaded(pilot)
        await pilot.press("s", "ctrl+a", "ctrl+k", *"fast", "tab", "tab", "ctrl+a", "ctrl+k")
        await pilot.press(*"101", "enter")
        await pilot.pause()

    assert snap_compare(make_app(), terminal_size=SIZE, run_before=run_before)


def test_main_screen_at_80x24(snap_compare):
    """The smallest terminal: the header keeps req/s, success, 429/s, L, M and the link; the
    table keeps name, state, breaker, req/s, p99 and err% for every backend; nothing wraps
    over anything; the footer has only whole keys."""
    assert snap_compare(make_app(), terminal_size=(80, 24), run_before=loaded)


def test_main_screen_at_120x40(snap_compare):
    """A common terminal: the fault, weight and in-flight columns come back."""
    assert snap_compare(make_app(), terminal_size=(120, 40), run_before=loaded)
