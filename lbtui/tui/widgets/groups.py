"""The groups view (key 4): target groups and routes, two tables redrawn when they change.

A handful of rows (groups and routes are few): the panel is a ``Static`` holding two Rich
tables, rebuilt only when the rows differ from the last ones shown, rather than a keyed
``DataTable`` (no cursor to keep here).
"""

from __future__ import annotations

from rich.console import Group
from rich.table import Table
from rich.text import Text
from textual.widgets import Static

from lbtui.control.model import Snapshot
from lbtui.tui.groups_view import GROUP_HEADERS, ROUTE_HEADERS, group_rows, route_rows


class GroupsPanel(Static):
    """Updated with each snapshot."""

    _shown: object = None

    def show(self, snapshot: Snapshot) -> None:
        groups = group_rows(snapshot)
        routes = route_rows(snapshot)
        if (groups, routes) == self._shown:
            return
        self._shown = (groups, routes)
        g = Table(title="target groups", title_justify="left", expand=True, box=None)
        for h in GROUP_HEADERS:
            g.add_column(h, justify="right" if h in ("req/s", "share", "L", "M", "up") else "left")
        for cells in groups:
            g.add_row(*(Text(text, style=style) for text, style in cells))
        r = Table(
            title="routes, in the order they are tried", title_justify="left", expand=True, box=None
        )
        for h in ROUTE_HEADERS:
            r.add_column(h)
        for line in routes:
            r.add_row(*line)
        if not routes:
            r.add_row("", "(no routes: every request goes to the default group)", "", "", "")
        self.update(Group(g, Text(""), r))
