"""The balancers panel of a console over several balancers: one line each, live or gone."""

from __future__ import annotations

from collections.abc import Sequence

from rich.text import Text
from textual.widgets import Static

from lbtui.control.merge import BalancerView
from lbtui.tui.replicas import build_balancers, panel_title


class BalancersPanel(Static):
    """Each balancer's link, rate, worst p99, errors, eligible backends and limit store; the
    border says how many are live, where actions go and (when wide enough) how the backend
    rows add the balancers up. Repainted only when its text changed."""

    DEFAULT_CSS = """
    BalancersPanel {
        width: 100%;
        height: auto;
        max-height: 10;
        text-wrap: nowrap;
        text-overflow: ellipsis;
        border-top: solid $primary-darken-2;
        border-title-align: left;
        padding: 0 1;
    }
    """

    def __init__(self, **kwargs: object) -> None:
        super().__init__("", **kwargs)  # type: ignore[arg-type]
        self._shown: Text | None = None
        self._last: tuple[tuple[BalancerView, ...], str | None] = ((), None)

    def on_resize(self) -> None:
        self.show(*self._last)

    def show(self, views: Sequence[BalancerView], target: str | None) -> None:
        self._last = (tuple(views), target)
        width = self.content_size.width or self.app.size.width - 2
        self.border_title = panel_title(views, target, width)
        text = build_balancers(views, target, width)
        if text != self._shown:
            self._shown = text
            self.update(text)
