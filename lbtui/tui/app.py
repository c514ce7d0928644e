"""``LbtuiApp``: the console. It sees and steers one balancer through a ``Control``, nothing else.

Two workers feed it (``feed.py``): snapshots every ``refresh_s`` and the event stream; each
posts typed messages, and the handlers here hand the immutable snapshot to the widgets, which
render it. Nothing on the UI path waits for the network: every action runs in a worker, and a
failure comes back as a notification with the control's message. When the control cannot be
reached the last snapshot stays on screen, greyed, with the problem and the retry countdown in
the header.

Keys are bindings with ids (``backend.kill``…) so a keymap can move them; destructive ones
(kill, weight 0, force-open, disable) ask first and none sits on a reflex key. Every action is
also a command in the palette (Ctrl+P). A read-only console hides and refuses them all.

The actions that change the balancer, with their dialogs, are the ``OperatorActions`` mixin
(``operator_actions.py``); what each key does and the palette's entries are ``keymap.py``.

``lbtui demo`` builds it with an in-process ``LocalControl`` and the load generator;
``lbtui attach`` with an ``HttpControl`` (``tui/command.py``).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from functools import partial
from pathlib import Path
from typing import Any, ClassVar

from textual import on, work
from textual.app import ComposeResult, SystemCommand
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import DataTable, Input

from lbtui.control.interface import Control
from lbtui.control.model import (
    Event,
    Snapshot,
)
from lbtui.tui.feed import (
    EventsArrived,
    Link,
    LinkChanged,
    SnapshotArrived,
    follow_events,
    new_events,
    poll_snapshots,
)
from lbtui.tui.figures import is_loopback_target
from lbtui.tui.history import LatencyHistory
from lbtui.tui.keymap import (
    COMMANDS,
    FIGURES,
    HELP,
    HELP_GROUPS,
    MUTATING,
    OWN_ACTIONS,
    WIDGET_KEYS,
)
from lbtui.tui.load import LoadHandle, stepped_rate
from lbtui.tui.operator_actions import KEY_KINDS, OperatorActions
from lbtui.tui.screens.chaos import ChaosTarget
from lbtui.tui.screens.help import HelpScreen
from lbtui.tui.view import parse_sort
from lbtui.tui.widgets.backends import BackendTable
from lbtui.tui.widgets.detail import BackendDetail
from lbtui.tui.widgets.events import EventLog
from lbtui.tui.widgets.frontends import FrontendsPanel
from lbtui.tui.widgets.groups import GroupsPanel
from lbtui.tui.widgets.keys import KeyBar
from lbtui.tui.widgets.load import LoadPanel
from lbtui.tui.widgets.totals import HeaderState, TotalsBar

VIEWS = ("main", "events", "detail", "groups")


class LbtuiApp(OperatorActions):
    """The console on one balancer."""

    CSS_PATH = Path(__file__).with_name("lbtui.tcss")
    TITLE = "lbtui"

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("q", "quit", "quit", id="quit"),
        Binding("question_mark", "help", "help", id="help"),
        Binding("slash", "filter", "filter", id="filter"),
        Binding("escape", "clear_or_back", "back", show=False, id="back"),
        Binding("1", "view('main')", "main", show=False, id="view.main"),
        Binding("2", "view('events')", "events", show=False, id="view.events"),
        Binding("3", "view('detail')", "detail", show=False, id="view.detail"),
        Binding("4", "view('groups')", "groups", show=False, id="view.groups"),
        Binding("enter", "toggle_detail", "detail", show=False, id="view.toggle_detail"),
        Binding("p", "pause", "pause", id="pause"),
        Binding("S,shift+s", "cycle_sort", "sort", id="sort.cycle"),
        Binding("R,shift+r", "reverse_sort", "reverse", show=False, id="sort.reverse"),
        Binding("k", "kill", "kill", id="backend.kill"),
        Binding("s", "slow", "slow", id="backend.slow"),
        Binding("e", "errors", "errors", id="backend.errors"),
        Binding("h", "hang", "hang", show=False, id="backend.hang"),
        Binding("r", "restore", "restore", id="backend.restore"),
        Binding("d", "drain", "drain", id="backend.drain"),
        Binding("x", "toggle_disable", "disable", id="backend.disable"),
        Binding("w", "weight", "weight", id="backend.weight"),
        Binding("b", "breaker", "breaker", id="backend.breaker"),
        Binding("a", "algorithm", "algorithm", id="balancer.algorithm"),
        Binding("l", "limits", "limits", id="balancer.limits"),
        Binding("f", "forward", "forward", show=False, id="route.forward"),
        Binding("c", "chaos", "chaos", id="chaos.run"),
        Binding("plus", "rate(True)", "rate+", id="load.up"),
        Binding("minus", "rate(False)", "rate-", id="load.down"),
    ]

    def __init__(
        self,
        control: Control,
        *,
        load: LoadHandle | None = None,
        refresh_s: float = 0.25,
        filter: str = "",
        sort: str | None = None,
        read_only: bool = False,
        title: str | None = None,
        chaos: ChaosTarget | None = None,
    ) -> None:
        super().__init__()
        self.control = control
        self.chaos = chaos
        self.load = load
        self.refresh_s = max(0.05, refresh_s)
        self.read_only = read_only or bool(getattr(control, "read_only", False))
        self.target = control.describe_target()
        self.remote = not is_loopback_target(self.target)
        self.title = title or "lbtui"
        self.initial_filter = filter
        self.sort_column: str | None = None
        self.sort_reverse = False
        if sort:
            self.sort_column, self.sort_reverse = parse_sort(sort)
        self.snapshot: Snapshot | None = None
        """The latest snapshot received (shown unless paused)."""
        self.snapshot_received: float | None = None
        self.events: list[Event] = []
        self.history = LatencyHistory()
        self.link = Link(ok=True)
        self.paused = False
        self.view = "main"
        self.snapshots_seen = 0
        self.refused: str | None = None
        """Why the balancer refused this console (a wrong token); it has stopped."""

    # --- layout

    def compose(self) -> ComposeResult:
        yield TotalsBar(id="totals")
        with Vertical(id="body"):
            yield Input(self.initial_filter, placeholder="filter backends and events…", id="filter")
            yield BackendTable(id="backends", sort=self.sort_column, reverse=self.sort_reverse)
            with Horizontal(id="lower"):
                yield BackendDetail(id="detail")
                with Vertical(id="side"):
                    if self.load is not None:
                        yield LoadPanel(id="load")
                    yield FrontendsPanel(id="frontends")
                    yield EventLog(id="events")
            yield GroupsPanel(id="groups")
        yield KeyBar(id="keys", hide_action=self._hidden_in_footer, dim_action=self._dimmed)

    def on_mount(self) -> None:
        # The main screen's widgets, held once: ``query_one`` on the app searches the active
        # screen, which is a dialog while one is open.
        self.table = self.query_one(BackendTable)
        self.detail = self.query_one(BackendDetail)
        self.log_view = self.query_one(EventLog)
        self.totals = self.query_one(TotalsBar)
        self.filter_box = self.query_one("#filter", Input)
        self.body = self.query_one("#body", Vertical)
        self.load_panel = self.query_one(LoadPanel) if self.load is not None else None
        self.frontends = self.query_one(FrontendsPanel)
        self.keybar = self.query_one(KeyBar)
        self.groups_panel = self.query_one(GroupsPanel)
        self.frontends.display = False
        if self.initial_filter:
            self.filter_box.display = True
            self._apply_filter(self.initial_filter)
        self.table.focus()
        self._header()
        self._poll()
        self._follow()
        if self.load is not None:
            self._tick_load()
            self.set_interval(self.refresh_s, self._tick_load)

    # --- feeds

    @work(exclusive=True, group="snapshots", exit_on_error=False)
    async def _poll(self) -> None:
        await poll_snapshots(
            self.control,
            self.post_message,
            self.refresh_s,
            known_event_id=lambda: self.events[-1].id if self.events else 0,
        )

    @work(exclusive=True, group="events", exit_on_error=False)
    async def _follow(self) -> None:
        await follow_events(self.control, self.post_message)

    def on_snapshot_arrived(self, message: SnapshotArrived) -> None:
        snap = message.snapshot
        if snap.last_event_id < message.events_known:
            self._balancer_restarted()
        if self.snapshot is None or snap.unavailable.keys() != self.snapshot.unavailable.keys():
            self.call_after_refresh(self.keybar.refresh_keys)
        self.snapshot = snap
        self.snapshot_received = time.monotonic()
        self.snapshots_seen += 1
        self.history.add(snap)
        if not self.link.ok:
            self.on_link_changed(LinkChanged(Link(ok=True)))
        if not self.paused:
            self._render()

    def _balancer_restarted(self) -> None:
        """Event ids went backwards: a new balancer behind the same address. Its timeline and
        clock start over, so do the log and the latency history."""
        self.events = []
        self.log_view.clear()
        self.history = LatencyHistory()
        self._follow()  # exclusive: replaces the stream that waits for ids that will not come
        self.notify("the balancer restarted: its event log starts over", severity="warning")

    def on_events_arrived(self, message: EventsArrived) -> None:
        new_events(self.events, message.events)
        if not self.paused:
            self.log_view.add(message.events)
            self._detail()  # its recent events, now rather than at the next snapshot

    def on_link_changed(self, message: LinkChanged) -> None:
        if message.link.refused:
            self.refused = message.link.problem
            self.exit(return_code=2)
            return
        self.link = message.link
        self.body.set_class(not self.link.ok and self.snapshot is not None, "-stale")
        self._header()

    def _render(self) -> None:
        if self.snapshot is None:
            return
        self.table.show(self.snapshot)
        self.frontends.show(self.snapshot)
        if self.view == "groups":
            self.groups_panel.show(self.snapshot)
        self._detail()
        self._header()

    def _detail(self) -> None:
        self.detail.show(self.snapshot, self.table.selected, self.history, self.events)

    def _header(self) -> None:
        stale = None
        if not self.link.ok and self.snapshot_received is not None:
            stale = time.monotonic() - self.snapshot_received
        state = HeaderState(
            target=self.target,
            remote=self.remote,
            read_only=self.read_only,
            paused=self.paused,
            link=self.link,
            stale_s=stale,
            title=self.title,
        )
        self.totals.show(self.snapshot, state)

    def _tick_load(self) -> None:
        if self.load is not None and self.load_panel is not None and not self.paused:
            self.load_panel.show(self.load.live())

    # --- selection, filter, views

    @on(DataTable.RowHighlighted, "#backends")
    def _highlighted(self, event: DataTable.RowHighlighted) -> None:
        self._detail()

    @on(DataTable.RowSelected, "#backends")
    def _selected(self, event: DataTable.RowSelected) -> None:
        self.action_toggle_detail()

    def action_toggle_detail(self) -> None:
        """Enter: the selected backend's detail full screen; again (from any view): back."""
        self.action_view("main" if self.view == "detail" else "detail")

    def action_filter(self) -> None:
        box = self.filter_box
        box.display = True
        box.focus()

    @on(Input.Changed, "#filter")
    def _filter_changed(self, event: Input.Changed) -> None:
        self._apply_filter(event.value)

    @on(Input.Submitted, "#filter")
    def _filter_done(self, event: Input.Submitted) -> None:
        if not event.value.strip():
            event.input.display = False
        self.table.focus()

    def _apply_filter(self, query: str) -> None:
        self.table.set_filter(query)
        self.log_view.set_filter(query)
        self._detail()

    def action_clear_or_back(self) -> None:
        box = self.filter_box
        if box.display and (box.has_focus or box.value):
            box.value = ""
            box.display = False
            self._apply_filter("")
            self.table.focus()
        elif self.view != "main":
            self.action_view("main")

    def action_view(self, view: str) -> None:
        if view not in VIEWS:
            return
        for v in VIEWS:
            self.body.set_class(v == view, f"-view-{v}")
        self.view = view
        if view == "events":
            self.log_view.focus()
        elif view == "detail":
            self.detail.focus()
        elif view == "groups":
            if self.snapshot is not None:
                self.groups_panel.show(self.snapshot)
        else:
            self.table.focus()
        self.call_after_refresh(self._detail)

    def action_pause(self) -> None:
        self.paused = not self.paused
        if not self.paused:
            self._render()
            self.log_view.add(self.events)
        self._header()

    def action_cycle_sort(self) -> None:
        self.table.cycle_sort()

    def action_reverse_sort(self) -> None:
        self.table.reverse_sort()

    def action_help(self) -> None:
        self.push_screen(HelpScreen(self.help_groups(), self._help_note()))

    def _help_note(self) -> str:
        notes = []
        if self.read_only:
            notes.append("read-only console: the backend and balancer keys are refused")
        if self.load is None:
            notes.append("no load generator attached: +/- do nothing")
        return "; ".join(notes)

    def help_groups(self) -> list[tuple[str, list[tuple[str, str]]]]:
        """Every binding (``HELP`` says what each does), with the keys bound to it now, in
        its group; then the keys the widgets answer to themselves. Built from the bindings,
        so a key added without a line of help fails ``tests/tui/test_help.py``."""
        keys = self.binding_keys()
        groups: dict[str, list[tuple[str, str]]] = {g: [] for g in HELP_GROUPS}
        for binding_id, (group, what) in HELP.items():
            groups[group].append((keys.get(binding_id, "—"), what))
        groups["Navigate"] += WIDGET_KEYS
        groups["Figures"] = FIGURES
        return [(g, rows) for g, rows in groups.items() if rows]

    def binding_keys(self) -> dict[str, str]:
        """Binding id → the keys bound to it now (a keymap may have moved them), as shown."""
        out: dict[str, list[str]] = {}
        for bindings in self._bindings.key_to_bindings.values():
            for binding in bindings:
                if binding.id is not None:
                    out.setdefault(binding.id, []).append(self.get_key_display(binding))
        return {k: " ".join(dict.fromkeys(v)) for k, v in out.items()}

    # --- read-only, palette

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in OWN_ACTIONS and self.screen is not self.screen_stack[0]:
            return False  # a dialog is open: its keys only (q in a dialog must not quit)
        # read-only: the actions stay bound so that their keys say why nothing happens
        # (``_refused``); the footer and the palette leave them out
        return not (action == "rate" and self.load is None)

    def _dimmed(self, action: str) -> bool:
        """A key whose action this balancer cannot do (``Snapshot.unavailable``)."""
        kind = KEY_KINDS.get(action.split("(")[0])
        return self.snapshot is not None and kind in self.snapshot.unavailable

    def _hidden_in_footer(self, action: str) -> bool:
        return self.read_only and action.split("(")[0] in MUTATING

    def get_system_commands(self, screen: Screen[Any]) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        for action, title, help_text in COMMANDS:
            name = action.split("(")[0]
            if self.read_only and name in MUTATING:
                continue
            if name == "rate" and self.load is None:
                continue
            yield SystemCommand(title, help_text, partial(self.run_action, action))

    def action_rate(self, up: bool) -> None:
        if self.load is None:
            self.notify("no load generator here (lbtui demo has one)", severity="warning")
            return
        rate = stepped_rate(self.load.rate, up)
        self.load.set_rate(rate)
        self._tick_load()
