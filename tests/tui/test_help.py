"""Keys do what the help says (issue 13, item 4): help is made from the bindings, Enter
toggles the detail from any view, and a refused key in a read-only console says so."""

from __future__ import annotations

from lbtui.tui.app import LbtuiApp
from lbtui.tui.keymap import HELP
from lbtui.tui.recorded import RecordedControl
from lbtui.tui.screens.help import HelpScreen
from tests.tui.conftest import MAIN, ready, wait_for
from tests.tui.screen import screen_text


def test_every_binding_has_a_line_of_help_and_every_line_a_binding():
    ids = [b.id for b in LbtuiApp.BINDINGS if hasattr(b, "id")]
    assert None not in ids
    assert sorted(ids) == sorted(HELP)  # type: ignore[type-var]


async def test_help_lists_every_key_bound_now():
    app = LbtuiApp(RecordedControl.load(MAIN))
    async with app.run_test(size=(120, 60)) as pilot:
        await ready(pilot)
        groups = app.help_groups()
        listed = {keys for _, rows in groups for keys, _ in rows}
        for binding_id, keys in app.binding_keys().items():
            assert keys in listed, binding_id
        assert app.binding_keys()["chaos.run"] == "c"
        await pilot.press("question_mark")
        await wait_for(pilot, lambda: isinstance(app.screen, HelpScreen), "help open")
        await pilot.pause()
        text = screen_text(app)
        assert "run a chaos experiment" in text
        assert "(again: back)" in text
        assert "imbalance L" in text  # the balance figures, one line each
        assert "overload M" in text


async def test_enter_toggles_the_detail_even_in_the_full_screen_detail():
    app = LbtuiApp(RecordedControl.load(MAIN))
    async with app.run_test(size=(100, 30)) as pilot:
        await ready(pilot)
        await pilot.press("enter")
        await wait_for(pilot, lambda: app.view == "detail", "detail full screen")
        assert app.detail.has_focus  # the table is hidden: Enter now reaches the app
        await pilot.press("enter")
        await wait_for(pilot, lambda: app.view == "main", "back to the main view")
        await pilot.press("3", "enter")
        await wait_for(pilot, lambda: app.view == "main", "3 then Enter: back")
        await pilot.press("2", "enter")  # from the events view: the detail
        await wait_for(pilot, lambda: app.view == "detail", "events → detail")


async def test_a_destructive_key_in_a_read_only_console_says_read_only():
    control = RecordedControl.load(MAIN)
    app = LbtuiApp(control, read_only=True)
    async with app.run_test(size=(100, 30)) as pilot:
        await ready(pilot)
        footer = app.query_one("#keys").render()
        assert "kill" not in str(footer)  # not offered
        assert "help" in str(footer)
        for key in ("k", "x", "d", "b", "c"):
            before = len(app._notifications)
            await pilot.press(key)
            await wait_for(pilot, lambda b=before: len(app._notifications) > b, f"{key}: notice")
            note = list(app._notifications)[-1]
            assert "read-only" in note.message
            assert app.screen is app.screen_stack[0]  # no dialog: nothing to confirm
        assert control.actions == []
