"""The load panel: what the demo's load generator offers and what comes back, client-side."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.text import Text
from textual.widgets import Static

from lbtui.tui.numbers import ms_text, rate_text

if TYPE_CHECKING:
    from lbtui.loadgen import LiveFigures

STATUS_STYLE = {"2xx": "green", "3xx": "cyan", "4xx": "yellow", "5xx": "bold red", "error": "red"}


WIDE = 50
"""Columns from which the panel spells its labels out; below it (the side panel at 80 columns
is 28 wide) it keeps every figure and drops words, so that ``achieved`` is never cut."""


def build_load(live: LiveFigures, width: int = WIDE) -> Text:
    """The panel's three lines for a panel ``width`` columns wide."""
    wide = width >= WIDE
    text = Text(no_wrap=True)
    text.append("load  " if wide else "load ", "bold")
    text.append("offered " if wide else "", "bright_black")
    text.append(f"{rate_text(live.target_rate)}/s", "bold")
    text.append("  achieved " if wide else " → ", "bright_black")
    short = live.target_rate > 0 and live.achieved_rate < 0.9 * live.target_rate
    text.append(f"{rate_text(live.achieved_rate)}/s", "bold yellow" if short else "bold green")
    text.append("   +/- change\n" if wide else "  +/-\n", "bright_black")
    text.append("mix   " if wide else "mix  ", "bright_black")
    rates = {cls: rate for cls, rate in live.status_rates.items() if rate > 0}
    if not rates:
        text.append("no answers yet", "bright_black")
    for cls, rate in sorted(rates.items()):
        text.append(f"{cls} ", STATUS_STYLE.get(cls, ""))
        text.append(f"{rate_text(rate)}/s  " if wide else f"{rate_text(rate)} ")
    text.append("\nlat   " if wide else "\nlat  ", "bright_black")
    if wide:
        text.append(f"p50 {ms_text(live.p50_s * 1000)} ms  p99 {ms_text(live.p99_s * 1000)} ms")
        text.append(f"   in-flight {live.in_flight}  backlog {live.backlog}", "bright_black")
    else:
        text.append(f"p50 {ms_text(live.p50_s * 1000)}  p99 {ms_text(live.p99_s * 1000)} ms")
        tail = f"  infl {live.in_flight}"
        if len(text.plain.rsplit("\n", 1)[-1]) + len(tail) <= width:
            text.append(tail, "bright_black")
    return text


class LoadPanel(Static):
    """Updated on a timer from ``LoadHandle.live()`` (in-process, no network)."""

    _shown: Text | None = None

    def show(self, live: LiveFigures) -> None:
        text = build_load(live, self.content_size.width or WIDE)
        if text == self._shown:
            return
        self._shown = text
        # a fixed height (``height: 5`` in lbtui.tcss): no layout pass needed
        self.update(text, layout=False)
