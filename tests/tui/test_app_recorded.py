"""The console driven by keys on a recorded snapshot: layout, navigation, dialogs, read-only.

No balancer here: ``RecordedControl`` records the actions the keys send, so these tests check
what each key asks for (and that dialogs refuse bad input) in a few milliseconds each.
"""

from __future__ import annotations

import dataclasses

from lbtui.control.errors import Conflict
from lbtui.control.model import Action, ConfigNote, FaultKind, SetAdmin
from lbtui.tui.app import LbtuiApp
from lbtui.tui.recorded import RecordedControl
from lbtui.tui.screens.choice import ChoiceScreen
from lbtui.tui.screens.confirm import ConfirmScreen
from lbtui.tui.screens.form import FormScreen
from lbtui.tui.screens.help import HelpScreen
from lbtui.tui.widgets.backends import BackendTable
from lbtui.tui.widgets.events import EventLog
from tests.tui.conftest import SIZE, ready, wait_for, wait_text
from tests.tui.recorded_fixture import MAIN
from tests.tui.screen import screen_text

CLEAR = ("ctrl+a", "ctrl+k")
"""Home, then delete to the end: empties an Input."""


def order(app: LbtuiApp) -> list[str]:
    table = app.query_one(BackendTable)
    return [r.key.value or "" for r in table.ordered_rows]


async def select(pilot, app: LbtuiApp, name: str) -> None:
    app.query_one(BackendTable).select(name)
    await pilot.pause()
    assert app.query_one(BackendTable).selected == name


async def test_main_screen_shows_header_table_detail_and_events(recorded):
    app = LbtuiApp(recorded)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        text = await wait_text(pilot, "balancer started")
        assert "recorded main.json" in text
        assert "algorithm least_request" in text
        assert "overload M 1" in text
        for name in ("api-1", "api-2", "api-3", "api-4"):
            assert name in text
        assert "⊘ ejected" in text
        assert "● up" in text
        assert "OPEN " in text
        assert "◐ draining" in text
        assert "delay 200±50ms 50→50%" in text
        # the detail pane explains the selected backend (the first row)
        assert "EJECTED" in text
        assert "5 consecutive 5xx (2nd ejection, 60 s); readmitted in 42 s" in text
        # events newest first
        assert text.index("slow answers") < text.index("balancer started")


async def test_cursor_follows_the_backend_and_detail_explains_it(recorded):
    app = LbtuiApp(recorded)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await pilot.press("down")
        text = await wait_text(pilot, "OPEN")
        assert "since 12:03:02 — failure rate 62% >= 50% over 21 calls; half-open probe in" in text
        assert "applied 412 of 688 eligible (59.9 % vs 60 %" in text
        # sorting keeps the cursor on api-2
        await pilot.press("S")  # name
        await pilot.press("S")  # state
        await pilot.pause()
        assert app.query_one(BackendTable).sort_column == "state"
        assert order(app)[:2] == ["api-1", "api-3"]
        assert app.query_one(BackendTable).selected == "api-2"
        await pilot.press("R")
        await pilot.pause()
        assert order(app)[0] == "api-4"
        assert app.query_one(BackendTable).selected == "api-2"


async def test_sort_flag_and_header_click(recorded):
    app = LbtuiApp(recorded, sort="-rps")
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        assert order(app) == ["api-4", "api-2", "api-3", "api-1"]
        assert "req/s 1s ▼" in screen_text(app)
        table = app.query_one(BackendTable)
        # a click on the p99 header sorts by it, a second click reverses
        region = table.region
        p99_x = screen_text(app).splitlines()[3].index("p99 10s")
        await pilot.click(offset=(p99_x + 1, region.y + 1))
        await wait_for(pilot, lambda: table.sort_column == "p99", "sorted by p99")
        assert order(app)[-1] == "api-4"
        await pilot.click(offset=(p99_x + 1, region.y + 1))
        await wait_for(pilot, lambda: table.sort_reverse, "reversed")
        assert order(app)[0] == "api-4"


async def test_filter_across_columns_and_escape_clears(recorded):
    app = LbtuiApp(recorded)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await pilot.press("slash")
        await pilot.press(*"delay")
        await wait_for(pilot, lambda: order(app) == ["api-4"], "filtered to api-4")
        log = app.query_one(EventLog)
        assert [e.backend for e in log.shown] == ["api-4"]  # the event log filters too
        await pilot.press("enter")  # keeps the filter, back to the table
        assert app.focused is app.query_one(BackendTable)
        await pilot.press("escape")
        await wait_for(pilot, lambda: len(order(app)) == 4, "filter cleared")
        assert len(log.shown) == 11


async def test_filter_flag(recorded):
    app = LbtuiApp(recorded, filter="draining")
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await wait_for(pilot, lambda: order(app) == ["api-3"], "filtered")


async def test_help_lists_every_key_and_closes(recorded):
    app = LbtuiApp(recorded)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await pilot.press("question_mark")
        await wait_for(pilot, lambda: isinstance(app.screen, HelpScreen), "help open")
        text = screen_text(app)
        for words in (
            "kill: SIGKILL",
            "slow:",
            "errors:",
            "hang:",
            "restore:",
            "drain",
            "weight",
            "breaker:",
            "balancing algorithm",
            "limits:",
            "rate",
            "pause",
            "quit",
        ):
            assert words in text, words
        await pilot.press("escape")
        await wait_for(pilot, lambda: not isinstance(app.screen, HelpScreen), "help closed")


async def test_views_and_pause(recorded):
    app = LbtuiApp(recorded)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await pilot.press("tab")  # table → detail → events
        assert app.focused is app.query_one("#detail")
        await pilot.press("tab")
        assert app.focused is app.query_one(EventLog)
        await pilot.press("2")
        await pilot.pause()
        assert not app.query_one(BackendTable).display
        assert app.focused is app.query_one(EventLog)
        await pilot.press("1")
        await pilot.press("enter")  # the selected backend full screen
        await pilot.pause()
        assert app.view == "detail"
        await pilot.press("escape")
        assert app.view == "main"
        await pilot.press("p")
        assert "PAUSED" in await wait_text(pilot, "PAUSED")
        seen = app.snapshots_seen
        await wait_for(pilot, lambda: app.snapshots_seen > seen + 2, "snapshots keep coming")
        await pilot.press("p")
        await wait_for(pilot, lambda: "PAUSED" not in screen_text(app), "resumed")


async def test_slow_dialog_validates_inline_then_sends_a_delay(recorded):
    app = LbtuiApp(recorded)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await select(pilot, app, "api-3")
        await pilot.press("s")
        await wait_for(pilot, lambda: isinstance(app.screen, FormScreen), "form open")
        await pilot.press(*CLEAR, *"x12", "tab", *CLEAR, *"5", "tab", *CLEAR, *"300")
        await pilot.press("enter")
        text = await wait_text(pilot, "✖ must be from 0 to 100, got 300")
        assert "✖ expected a number from 0 to 600000, got 'x12'" in text
        assert isinstance(app.screen, FormScreen)  # still open
        assert recorded.actions == []
        # the first wrong field has the focus
        await pilot.press(*CLEAR, *"250", "tab", "tab", *CLEAR, *"50", "tab", *CLEAR, *"30s")
        await pilot.press("enter")
        await wait_for(pilot, lambda: recorded.actions, "action sent")
        act = recorded.actions[-1]
        assert (act.name, act.backend) == ("set_fault", "api-3")
        spec = act.args["fault"]
        assert (spec.kind, spec.ms, spec.jitter_ms, spec.percent, spec.duration_s) == (
            FaultKind.DELAY,
            250.0,
            5.0,
            50.0,
            30.0,
        )
        # confirmed by the event that comes back in the log
        await wait_text(pilot, "fault set: delay (recorded, not applied)")


async def test_kill_asks_first_and_no_cancels(recorded):
    app = LbtuiApp(recorded)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await select(pilot, app, "api-4")
        await pilot.press("k")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), "asks")
        assert "Kill api-4?" in screen_text(app)
        await pilot.press("n")
        await wait_for(pilot, lambda: not isinstance(app.screen, ConfirmScreen), "closed")
        assert recorded.actions == []
        await pilot.press("k")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), "asks again")
        await pilot.press("y")
        await wait_for(pilot, lambda: recorded.actions, "sent")
        assert recorded.actions[-1].name == "fleet_kill"


async def test_weight_zero_and_disable_are_confirmed(recorded):
    app = LbtuiApp(recorded)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await select(pilot, app, "api-2")
        await pilot.press("w")
        await wait_for(pilot, lambda: isinstance(app.screen, FormScreen), "form")
        await pilot.press(*CLEAR, "0", "enter")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), "asks")
        await pilot.press("enter")
        await wait_for(pilot, lambda: recorded.actions, "sent")
        assert recorded.actions[-1].args == {"weight": 0.0}
        await pilot.press("x")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), "asks")
        await pilot.press("escape")
        await pilot.pause()
        assert len(recorded.actions) == 1
        await pilot.press("d")
        await wait_for(pilot, lambda: len(recorded.actions) == 2, "drain sent at once")
        assert recorded.actions[-1].name == "drain"


async def test_breaker_and_algorithm_choices(recorded):
    app = LbtuiApp(recorded)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await pilot.press("b")
        await wait_for(pilot, lambda: isinstance(app.screen, ChoiceScreen), "choices")
        await pilot.press("down", "down", "enter")  # auto → open → closed
        await wait_for(pilot, lambda: recorded.actions, "sent")
        assert recorded.actions[-1].args == {"mode": "closed"}
        await pilot.press("a")
        await wait_for(pilot, lambda: isinstance(app.screen, ChoiceScreen), "algorithms")
        assert "least_request  (now)" in screen_text(app)
        await pilot.press("up", "enter")
        await wait_for(pilot, lambda: len(recorded.actions) == 2, "sent")
        assert recorded.actions[-1].args == {"algorithm": "least_connections"}


async def test_read_only_hides_and_refuses_every_action():
    control = RecordedControl.load(MAIN)
    app = LbtuiApp(control, read_only=True)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        text = screen_text(app)
        assert "READ-ONLY" in text
        footer = text.splitlines()[-1]
        assert "kill" not in footer
        assert "drain" not in footer
        for key in ("k", "s", "e", "h", "r", "d", "x", "w", "b", "a", "l"):
            await pilot.press(key)
            await pilot.pause()
            assert app.screen is app.screen_stack[0], key
        assert control.actions == []
        titles = [c.title for c in app.get_system_commands(app.screen)]
        assert "Backend: kill" not in titles
        assert "View: pause / resume" in titles


async def test_palette_lists_every_action(recorded):
    app = LbtuiApp(recorded)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        titles = {c.title for c in app.get_system_commands(app.screen)}
        for t in (
            "Backend: kill",
            "Backend: slow down",
            "Backend: drain / undrain",
            "Backend: force breaker",
            "Balancer: algorithm",
            "Balancer: limits",
            "View: filter",
            "Help: keys",
        ):
            assert t in titles
        assert "Load: raise rate" not in titles  # no load generator attached


async def test_remote_target_is_said_plainly():
    control = RecordedControl.load(MAIN)
    control._target = "http://10.1.2.3:9901"
    app = LbtuiApp(control)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        assert "⚠ REMOTE http://10.1.2.3:9901" in screen_text(app)


async def test_q_quits(recorded):
    app = LbtuiApp(recorded)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await pilot.press("q")
        await wait_for(pilot, lambda: not app.is_running, "exited")


async def test_rows_follow_membership_and_the_cursor_stays(recorded):
    app = LbtuiApp(recorded, refresh_s=0.05)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await select(pilot, app, "api-3")
        snap = recorded._snapshot
        b1, _b2, b3, b4 = snap.backends
        api5 = dataclasses.replace(b4, name="api-5", url="http://127.0.0.1:9105")
        recorded._snapshot = dataclasses.replace(snap, backends=[b1, b3, b4, api5])
        await wait_for(pilot, lambda: order(app) == ["api-1", "api-3", "api-4", "api-5"], "rows")
        assert app.query_one(BackendTable).selected == "api-3"
        assert "api-2" not in screen_text(app).split("┌")[0]


async def test_a_failed_action_says_why(recorded):
    async def refuse(action: Action) -> None:
        assert isinstance(action, SetAdmin)
        raise Conflict(f"{action.backend} is being removed")

    recorded.act = refuse  # type: ignore[method-assign]
    app = LbtuiApp(recorded)
    async with app.run_test(size=SIZE, notifications=True) as pilot:
        await ready(pilot)
        await pilot.press("d")
        text = await wait_text(pilot, "api-1 is being removed")
        assert "drain api-1 failed" in text
        assert app.is_running


async def test_a_restarted_balancer_starts_the_log_over(recorded):
    app = LbtuiApp(recorded, refresh_s=0.05)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await wait_for(pilot, lambda: len(app.events) == 11, "events")
        recorded._events = [
            ConfigNote(
                id=1,
                at=recorded._snapshot.at,
                wall=recorded._snapshot.wall,
                message="balancer started again",
            )
        ]
        recorded._snapshot = dataclasses.replace(recorded._snapshot, last_event_id=1)
        await wait_for(
            pilot, lambda: [e.message for e in app.events] == ["balancer started again"], "reset"
        )
        await wait_text(pilot, "balancer started again")
