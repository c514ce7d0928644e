"""The detail's per-balancer breakdown: the selected backend as each balancer sees it."""

from __future__ import annotations

from collections.abc import Sequence

from rich.text import Text
from textual.widget import Widget
from textual.widgets import Static

from lbtui.control.merge import BalancerView
from lbtui.tui.replicas import build_breakdown


class BalancerBreakdown(Static):
    """Under the detail's name line: one row per balancer, its own figures and states for the
    backend; the row of a balancer that is gone keeps its last figures, greyed."""

    DEFAULT_CSS = """
    BalancerBreakdown {
        width: 100%;
        height: auto;
        text-wrap: nowrap;
        text-overflow: ellipsis;
        margin: 0 0 1 0;
    }
    """

    def __init__(self, **kwargs: object) -> None:
        super().__init__("", **kwargs)  # type: ignore[arg-type]
        self._shown: Text | None = None
        self._last: tuple[str | None, tuple[BalancerView, ...]] = (None, ())

    def on_resize(self) -> None:
        self.show(*self._last)

    def show(self, name: str | None, views: Sequence[BalancerView]) -> None:
        self._last = (name, tuple(views))
        self.display = name is not None
        if name is None:
            return
        width = self.content_size.width or self.parent_width()
        text = build_breakdown(name, views, width)
        if text != self._shown:
            self._shown = text
            self.update(text)

    def parent_width(self) -> int:
        """Before its first layout: the detail pane's width, less its padding."""
        parent = self.parent
        width = parent.size.width if isinstance(parent, Widget) else 0
        return max(20, width - 4) if width else 90
