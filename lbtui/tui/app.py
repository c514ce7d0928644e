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

``lbtui demo`` builds it with an in-process ``LocalControl`` and the load generator;
``lbtui attach`` with an ``HttpControl`` (``tui/command.py``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable
from functools import partial
from pathlib import Path
from typing import Any, ClassVar, cast, get_args

from textual import on, work
from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import DataTable, Input

from lbtui.config import Algorithm
from lbtui.control.errors import ControlError
from lbtui.control.interface import Control
from lbtui.control.model import (
    BackendView,
    BreakerMode,
    ClearFault,
    Event,
    EventKind,
    FaultKind,
    FaultSpec,
    Figure,
    FleetKill,
    FleetRestart,
    ForceBreaker,
    SetAdmin,
    SetAlgorithm,
    SetFault,
    SetLimits,
    SetWeight,
    Snapshot,
)
from lbtui.tui import forms
from lbtui.tui.feed import (
    EventsArrived,
    Link,
    LinkChanged,
    SnapshotArrived,
    describe_error,
    follow_events,
    new_events,
    poll_snapshots,
)
from lbtui.tui.figures import is_loopback_target
from lbtui.tui.history import LatencyHistory
from lbtui.tui.load import LoadHandle, stepped_rate
from lbtui.tui.screens.chaos import ChaosScreen, ChaosTarget, scenario_files
from lbtui.tui.screens.choice import ChoiceScreen
from lbtui.tui.screens.confirm import ConfirmScreen
from lbtui.tui.screens.form import FormScreen
from lbtui.tui.screens.help import HelpScreen
from lbtui.tui.view import fault_active, parse_sort, process_dead
from lbtui.tui.widgets.backends import BackendTable
from lbtui.tui.widgets.detail import BackendDetail
from lbtui.tui.widgets.events import EventLog
from lbtui.tui.widgets.keys import KeyBar
from lbtui.tui.widgets.load import LoadPanel
from lbtui.tui.widgets.totals import HeaderState, TotalsBar

ACTION_TIMEOUT_S = 10.0
VIEWS = ("main", "events", "detail")

MUTATING = frozenset(
    {
        "kill",
        "slow",
        "errors",
        "hang",
        "restore",
        "drain",
        "toggle_disable",
        "weight",
        "breaker",
        "algorithm",
        "limits",
        "chaos",
    }
)
"""Actions that change the balancer: hidden and refused on a read-only console."""

OWN_ACTIONS = MUTATING | {
    "quit",
    "help",
    "filter",
    "clear_or_back",
    "view",
    "toggle_detail",
    "pause",
    "cycle_sort",
    "reverse_sort",
    "rate",
}
"""The console's own keys, which a dialog on top switches off."""

COMMANDS: tuple[tuple[str, str, str], ...] = (
    ("kill", "Backend: kill", "kill the selected backend's process (or take it down) — confirmed"),
    ("slow", "Backend: slow down", "inject a delay with jitter on the selected backend"),
    ("errors", "Backend: inject errors", "answer a status instead of forwarding, on a share"),
    ("hang", "Backend: hang", "requests to the selected backend never get an answer"),
    ("chaos", "Chaos: run an experiment", "run a scenario file and watch its checks and verdict"),
    ("restore", "Backend: restore", "clear its fault; restart its process if dead"),
    ("drain", "Backend: drain / undrain", "no new requests; those in flight finish"),
    ("toggle_disable", "Backend: disable / enable", "take it out of rotation — confirmed"),
    ("weight", "Backend: set weight", "configured weight; 0 takes it out — confirmed"),
    ("breaker", "Backend: force breaker", "open / closed / disabled / auto"),
    ("algorithm", "Balancer: algorithm", "choose the balancing algorithm"),
    ("limits", "Balancer: limits", "global rps, burst, per-client rps, max in-flight"),
    ("rate(True)", "Load: raise rate", "offered rate × 1.25"),
    ("rate(False)", "Load: lower rate", "offered rate ÷ 1.25"),
    ("pause", "View: pause / resume", "freeze the display (data keeps coming)"),
    ("cycle_sort", "View: next sort column", "sort the backends by the next column"),
    ("reverse_sort", "View: reverse sort", "reverse the sort order"),
    ("filter", "View: filter", "filter backends and events by text"),
    ("view('main')", "View: main", "table, detail and events"),
    ("view('events')", "View: events", "the event log, full screen"),
    ("view('detail')", "View: detail", "the selected backend, full screen"),
    ("help", "Help: keys", "every key and what it does"),
)

HELP_GROUPS = ("Navigate", "Selected backend", "Balancer")
HELP: dict[str, tuple[str, str]] = {
    "view.toggle_detail": ("Navigate", "the selected backend's detail, full screen (again: back)"),
    "view.main": ("Navigate", "main view: table, detail and events"),
    "view.events": ("Navigate", "the event log, full screen"),
    "view.detail": ("Navigate", "the selected backend's detail, full screen"),
    "filter": ("Navigate", "filter backends and events (every column; terms are ANDed)"),
    "back": ("Navigate", "clear the filter, or back to the main view"),
    "sort.cycle": ("Navigate", "sort by the next column"),
    "sort.reverse": ("Navigate", "reverse the sort order"),
    "pause": ("Navigate", "pause / resume the display (data keeps coming)"),
    "help": ("Navigate", "this help"),
    "quit": ("Navigate", "quit (rolls back every fault this console set)"),
    "backend.kill": (
        "Selected backend",
        "kill: SIGKILL its fleet process, or a proxy-side down fault (asks first)",
    ),
    "backend.slow": (
        "Selected backend",
        "slow: delay ± jitter on a share of requests, for a duration",
    ),
    "backend.errors": ("Selected backend", "errors: answer a status (503…) on a share of requests"),
    "backend.hang": ("Selected backend", "hang: never answer (the proxy's timeout ends it)"),
    "backend.restore": (
        "Selected backend",
        "restore: clear its fault; restart its process if dead",
    ),
    "backend.drain": (
        "Selected backend",
        "drain (again: undrain): no new requests, in-flight finish",
    ),
    "backend.disable": ("Selected backend", "disable (asks first) / enable"),
    "backend.weight": ("Selected backend", "set its weight (0 asks first)"),
    "backend.breaker": (
        "Selected backend",
        "breaker: force open (asks first) / closed / disabled / auto",
    ),
    "balancer.algorithm": ("Balancer", "balancing algorithm"),
    "balancer.limits": ("Balancer", "limits: global rps and burst, per-client rps, max in-flight"),
    "chaos.run": ("Balancer", "run a chaos experiment: live timeline, checks, then the verdict"),
    "load.up": ("Balancer", "load generator rate × 1.25"),
    "load.down": ("Balancer", "load generator rate ÷ 1.25"),
}
"""What each binding does, by binding id, in the order help lists them; every binding has a
line here and every line a binding (``tests/tui/test_help.py``)."""

WIDGET_KEYS: list[tuple[str, str]] = [
    ("↑ ↓ PgUp PgDn", "move in the table or scroll a pane (mouse wheel too)"),
    ("Tab / Shift+Tab", "next / previous pane"),
    ("click a header", "sort by that column (again: reverse)"),
    ("Ctrl+P", "command palette: every action by name"),
]
"""Keys the widgets answer to themselves (not the app's bindings)."""

FIGURES: list[tuple[str, str]] = [
    ("req/s · err%", "over the last 1 s, sliding (p50/p99 over 10 s; — when under 10 samples)"),
    ("imbalance L", "Σ |rate − weighted share| over each pool's eligible backends; 0 = even"),
    ("overload M", "eligible backends whose demand (sent + refused at the cap) > max_rps"),
]
"""What the header's and table's figures mean (``lbtui.core.window``, ``lbtui.core.balance``)."""

BREAKER_CHOICES = (
    ("auto", "auto — the breaker decides (normal)"),
    ("open", "open — reject every request to it (forced)"),
    ("closed", "closed — admit every request (forced)"),
    ("disabled", "disabled — no breaker at all"),
)


class LbtuiApp(App[None]):
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
                    yield EventLog(id="events")
        yield KeyBar(id="keys", hide_action=self._hidden_in_footer)

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

    def on_chaos_screen_run_started(self, message: ChaosScreen.RunStarted) -> None:
        self._note(
            f"chaos {message.name} started: {message.total_s:g} s of load, "
            f"{message.actions} timeline action{'s' if message.actions != 1 else ''}"
        )

    def on_chaos_screen_run_ended(self, message: ChaosScreen.RunEnded) -> None:
        self._note(f"chaos {message.name} ended: {message.verdict} — {message.meaning}")

    def _note(self, text: str) -> None:
        """An event of the console's own on its timeline (the balancer's events say what the
        run did, each with ``[chaos NAME]``; these say when it began and ended)."""
        self.log_view.note(EventKind.ACTION, text, time.monotonic(), time.time())

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

    # --- actions on the balancer

    def _selected_backend(self) -> BackendView | None:
        name = self.table.selected
        if self.snapshot is None or name is None:
            self.notify("no backend selected", severity="warning")
            return None
        try:
            return self.snapshot.backend(name)
        except KeyError:
            self.notify(f"{name} is gone", severity="warning")
            return None

    def _refused(self) -> bool:
        if self.read_only:
            self.notify(
                "read-only console (--read-only): this action is refused; nothing was changed",
                title="read-only",
                severity="warning",
            )
        return self.read_only

    def _act(self, label: str, call: Callable[[], Awaitable[object]]) -> None:
        """Run ``call`` in a worker; its outcome shows in the event log, a failure as a toast."""
        if self._refused():
            return
        self.run_worker(self._run_action(label, call), group="actions", exit_on_error=False)

    async def _run_action(self, label: str, call: Callable[[], Awaitable[object]]) -> None:
        try:
            async with asyncio.timeout(ACTION_TIMEOUT_S):
                await call()
        except ControlError as exc:
            self.notify(exc.message, title=f"{label} failed", severity="error", timeout=8)
        except Exception as exc:
            self.notify(describe_error(exc), title=f"{label} failed", severity="error", timeout=8)
        else:
            self.notify(label, title="✓ done", timeout=2)

    def _confirm(self, question: str, detail: str, then: Callable[[], None]) -> None:
        def answered(yes: bool | None) -> None:
            if yes:
                then()

        self.push_screen(ConfirmScreen(question, detail), answered)

    def action_kill(self) -> None:
        if self._refused() or (b := self._selected_backend()) is None:
            return
        name = b.name
        if b.process is not None:
            if not b.process.alive:
                self.notify(f"{name}'s process is already dead; r restarts it")
                return
            self._confirm(
                f"Kill {name}?",
                f"SIGKILL its process (pid {b.process.pid}); r restarts it.",
                lambda: self._act(
                    f"kill {name}", lambda: self.control.act(FleetKill(backend=name))
                ),
            )
        else:
            self._confirm(
                f"Take {name} down?",
                "Not a local process: a proxy-side 'down' fault fails every request to it "
                "without contacting it; r restores.",
                lambda: self._act(
                    f"down {name}",
                    lambda: self.control.act(
                        SetFault(backend=name, fault=FaultSpec(kind=FaultKind.DOWN))
                    ),
                ),
            )

    def _fault_form(
        self,
        title: str,
        form: tuple[forms.FormField, ...],
        build: Callable[[dict[str, Any]], FaultSpec],
    ) -> None:
        if self._refused() or (b := self._selected_backend()) is None:
            return
        name = b.name

        def done(spec: FaultSpec | None) -> None:
            if spec is not None:
                self._act(
                    f"{spec.kind} fault on {name}",
                    lambda: self.control.act(SetFault(backend=name, fault=spec)),
                )

        note = "replaces its current fault" if fault_active(b) else ""
        self.push_screen(FormScreen(f"{title} {name}", form, note, build), done)

    def action_slow(self) -> None:
        self._fault_form("Slow down", forms.SLOW_FORM, forms.delay_spec)

    def action_errors(self) -> None:
        self._fault_form("Inject errors on", forms.ERRORS_FORM, forms.abort_spec)

    def action_hang(self) -> None:
        self._fault_form("Hang", forms.HANG_FORM, forms.hang_spec)

    def action_restore(self) -> None:
        if self._refused() or (b := self._selected_backend()) is None:
            return
        name = b.name
        steps: list[Callable[[], Awaitable[object]]] = []
        if fault_active(b):
            steps.append(lambda: self.control.act(ClearFault(backend=name)))
        if process_dead(b):
            steps.append(lambda: self.control.act(FleetRestart(backend=name)))
        if not steps:
            self.notify(f"{name} has no fault and its process (if any) is alive")
            return

        async def restore() -> None:
            for step in steps:
                await step()

        self._act(f"restore {name}", restore)

    def action_drain(self) -> None:
        if self._refused() or (b := self._selected_backend()) is None:
            return
        name = b.name
        if b.admin == "draining":
            self._act(
                f"undrain {name}", lambda: self.control.act(SetAdmin(backend=name, state="active"))
            )
        else:
            self._act(
                f"drain {name}", lambda: self.control.act(SetAdmin(backend=name, state="draining"))
            )

    def action_toggle_disable(self) -> None:
        if self._refused() or (b := self._selected_backend()) is None:
            return
        name = b.name
        if b.admin == "disabled":
            self._act(
                f"enable {name}", lambda: self.control.act(SetAdmin(backend=name, state="active"))
            )
            return
        self._confirm(
            f"Disable {name}?",
            "It gets no requests until enabled again (x).",
            lambda: self._act(
                f"disable {name}",
                lambda: self.control.act(SetAdmin(backend=name, state="disabled")),
            ),
        )

    def action_weight(self) -> None:
        if self._refused() or (b := self._selected_backend()) is None:
            return
        name = b.name

        def done(values: dict[str, Any] | None) -> None:
            if values is None:
                return
            weight = float(values["weight"])

            def send() -> None:
                self._act(
                    f"weight {name} = {weight:g}",
                    lambda: self.control.act(SetWeight(backend=name, weight=weight)),
                )

            if weight == 0:
                self._confirm(f"Set {name}'s weight to 0?", "It gets no new requests.", send)
            else:
                send()

        self.push_screen(
            FormScreen(f"Weight of {name}", forms.weight_form(b.weight_configured)), done
        )

    def action_breaker(self) -> None:
        if self._refused() or (b := self._selected_backend()) is None:
            return
        name = b.name
        state = b.breaker.state if b.breaker is not None else None
        current = {"forced_open": "open", "disabled": "disabled"}.get(state or "", "auto")

        def chosen(mode: str | None) -> None:
            if mode is None:
                return
            m: BreakerMode = mode  # type: ignore[assignment]

            def send() -> None:
                self._act(
                    f"breaker {name} → {m}",
                    lambda: self.control.act(ForceBreaker(backend=name, mode=m)),
                )

            if m == "open":
                self._confirm(
                    f"Force {name}'s breaker open?", "Every request to it is rejected.", send
                )
            else:
                send()

        self.push_screen(ChoiceScreen(f"Breaker of {name}", BREAKER_CHOICES, current), chosen)

    def action_algorithm(self) -> None:
        if self._refused():
            return
        current = self.snapshot.algorithm if self.snapshot is not None else None
        choices = [(a, a) for a in get_args(Algorithm)]

        def chosen(algo: str | None) -> None:
            if algo is not None and algo != current:
                self._act(
                    f"algorithm → {algo}",
                    lambda: self.control.act(SetAlgorithm(algorithm=cast(Algorithm, algo))),
                )

        self.push_screen(ChoiceScreen("Balancing algorithm", choices, current), chosen)

    def action_chaos(self) -> None:
        """Run a scenario file against this balancer and watch its progress and verdict."""
        if self._refused():
            return
        if self.chaos is None:
            self.notify(
                "chaos runs need the balancer's listener: lbtui attach URL --target LISTENER_URL",
                severity="warning",
            )
            return
        target = self.chaos
        files = scenario_files(target.scenario_dir)
        if not files:
            self.notify(f"no scenario files in {target.scenario_dir}", severity="warning")
            return
        choices = [(str(f), f.stem) for f in files]

        def chosen(path: str | None) -> None:
            if path is not None:
                self.push_screen(ChaosScreen(target, Path(path)))

        self.push_screen(ChoiceScreen("Run a chaos experiment", choices), chosen)

    def action_limits(self) -> None:
        if self._refused():
            return
        config: dict[str, Any] = dict(self.snapshot.limits.config) if self.snapshot else {}

        def done(values: dict[str, Any] | None) -> None:
            if values is None:
                return
            changes = forms.limits_changes(values, config)
            if not changes:
                self.notify("limits unchanged")
                return
            text = ", ".join(f"{k}={v}" for k, v in changes.items())
            self._act(
                f"limits {text}",
                lambda: self.control.act(SetLimits(limits=cast(dict[str, Figure], changes))),
            )

        self.push_screen(FormScreen("Limits", forms.limits_form(config), "empty = no limit"), done)

    def action_rate(self, up: bool) -> None:
        if self.load is None:
            self.notify("no load generator here (lbtui demo has one)", severity="warning")
            return
        rate = stepped_rate(self.load.rate, up)
        self.load.set_rate(rate)
        self._tick_load()
