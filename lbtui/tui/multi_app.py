"""``MultiApp``: the console over several balancers (``lbtui attach URL URL…``).

The same console as ``LbtuiApp``, fed by a ``MultiControl`` (``lbtui.control.multi``): the
table's rows are each backend summed over the balancers that answer, the event log is their
merged timeline with each event tagged with its balancer, the header's figures are the fleet's.
What it adds, each in a widget of its own:

- the **balancers panel** under the header: each balancer live or gone (greyed, with its last
  figures, how long ago and why), and where actions go;
- the **per-balancer breakdown** in the detail: the selected backend as each balancer sees it;
- ``t``, **where actions go**: every balancer (the default) or the one chosen; after each
  action a notice lists every balancer's result (``lb1 ✓ · lb3 ✖ unreachable``).

``--read-only`` holds for all: the ``MultiControl`` refuses, and so does each balancer's own
control.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, ClassVar

from textual.app import SystemCommand
from textual.binding import Binding, BindingType
from textual.screen import Screen

from lbtui.control.multi import MultiControl, collect_outcomes
from lbtui.tui.app import LbtuiApp
from lbtui.tui.feed import LinkChanged, describe_error
from lbtui.tui.figures import is_loopback_target
from lbtui.tui.operator_actions import ACTION_TIMEOUT_S
from lbtui.tui.replicas import MERGE_RULE
from lbtui.tui.screens.choice import ChoiceScreen
from lbtui.tui.widgets.balancers import BalancersPanel
from lbtui.tui.widgets.breakdown import BalancerBreakdown
from lbtui.tui.widgets.totals import TotalsBar

EVERY = "*"
"""The selector's value for "every balancer"."""
TARGET_HELP = "send actions to every balancer, or to the one chosen (▶ in the panel)"


class MultiApp(LbtuiApp):
    """The console on several balancers at once."""

    BINDINGS: ClassVar[list[BindingType]] = [
        *LbtuiApp.BINDINGS,
        Binding("t", "choose_target", "act on", id="balancers.target"),
    ]

    def __init__(self, control: MultiControl, **kwargs: Any) -> None:
        super().__init__(control, **kwargs)
        self.multi = control
        self.target = f"{len(control.names)} balancers"
        self.remote = any(not is_loopback_target(t) for t in control.targets())
        self.panel = BalancersPanel(id="balancers")
        self.breakdown = BalancerBreakdown(id="breakdown")

    def on_mount(self) -> None:
        # runs before LbtuiApp.on_mount (Textual calls each class's handler, subclass first)
        self.mount(self.panel, after=self.query_one(TotalsBar))
        detail = self.query_one("#detail")
        detail.mount(self.breakdown, after=detail.query_one("#detail-0"))
        self.breakdown.display = False

    def on_link_changed(self, message: LinkChanged) -> None:
        self._show_balancers()  # every balancer gone: the panel says which and why

    def _show_balancers(self) -> None:
        self.panel.show(self.multi.balancers, self.multi.target)

    def _render(self) -> None:
        super()._render()
        self._show_balancers()

    def _detail(self) -> None:
        super()._detail()
        name = self.table.selected
        gone = self.snapshot is None or name is None or name not in self._names()
        self.breakdown.show(None if gone else name, self.multi.balancers)

    def _names(self) -> set[str]:
        return {b.name for b in self.snapshot.backends} if self.snapshot is not None else set()

    # --- where actions go

    def action_choose_target(self) -> None:
        views = self.multi.balancers
        choices = [(EVERY, f"every balancer ({len(views)})")]
        for v in views:
            gone = "" if v.reachable else "  — gone"
            choices.append((v.name, f"{v.name}  {v.url}{gone}"))

        def chosen(value: str | None) -> None:
            if value is None:
                return
            self.multi.select(None if value == EVERY else value)
            self._show_balancers()
            self.notify(f"actions go to {self.multi.target or 'every balancer'}", timeout=3)

        current = self.multi.target or EVERY
        self.push_screen(ChoiceScreen("Send actions to", choices, current), chosen)

    async def _run_action(self, label: str, call: Callable[[], Awaitable[object]]) -> None:
        """The action, then one notice with every balancer's result."""
        where = self.multi.target or f"{len(self.multi.names)} balancers"
        failure: Exception | None = None
        with collect_outcomes() as outcomes:
            try:
                async with asyncio.timeout(ACTION_TIMEOUT_S):
                    await call()
            except Exception as exc:
                failure = exc
        lines = " · ".join(o.text() for o in outcomes)
        if failure is None:
            self.notify(lines or label, title=f"✓ {label} on {where}", timeout=4)
            return
        done = any(o.ok for o in outcomes)
        self.notify(
            lines or describe_error(failure),
            title=f"{label} {'partly done' if done else 'failed'} on {where}",
            severity="warning" if done else "error",
            timeout=8,
        )

    # --- keys, help, palette

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "choose_target" and self.screen is not self.screen_stack[0]:
            return False
        return super().check_action(action, parameters)

    def help_groups(self) -> list[tuple[str, list[tuple[str, str]]]]:
        """The console's help, with ``t`` and how the rows add the balancers up."""
        key = self.binding_keys().get("balancers.target", "t")
        extra = {
            "Balancer": (key, TARGET_HELP),
            "Figures": ("several balancers", MERGE_RULE),
        }
        return [(g, [*rows, extra[g]] if g in extra else rows) for g, rows in super().help_groups()]

    def _hidden_in_footer(self, action: str) -> bool:
        # read-only: no action goes anywhere, so where they would go is moot
        return super()._hidden_in_footer(action) or (self.read_only and action == "choose_target")

    def get_system_commands(self, screen: Screen[Any]) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        yield SystemCommand("Balancers: send actions to…", TARGET_HELP, self.action_choose_target)
