"""The header band: which balancer, how it is doing, and whether what you see is live."""

from __future__ import annotations

from dataclasses import dataclass

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Static

from lbtui.control.model import Snapshot
from lbtui.tui.feed import Link
from lbtui.tui.view import human_duration, limits_text, totals_figures

PROBLEM_CHARS = 72
"""The longest connection problem the header shows whole (aiohttp's can run to 150 characters);
a longer one loses its middle."""


@dataclass(frozen=True, slots=True)
class HeaderState:
    target: str
    remote: bool
    """The target is not on this machine: said plainly (PRODUCT.md, read-only attach)."""
    read_only: bool
    paused: bool
    link: Link
    stale_s: float | None
    """Age of the snapshot shown when the link is down; ``None`` when live."""
    title: str = "lbtui"


class TotalsBar(Vertical):
    """Two lines: target, algorithm, flags and link state; then the balancer-wide figures.

    Each line is its own ``Static``, updated only when its text changed: the first changes
    rarely, the second with every snapshot (and is all that is painted again then). Both
    wrap as the two lines of one text would, and the bar (``height: 2``) clips what wraps
    past its second row: a long first line (connection lost) pushes the figures out."""

    DEFAULT_CSS = """
    TotalsBar > Static {
        height: auto;
    }
    """

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self._lines = (Static(id="totals-1"), Static(id="totals-2"))
        self._shown: list[Text | None] = [None, None]

    def compose(self) -> ComposeResult:
        yield from self._lines

    def show(self, snapshot: Snapshot | None, state: HeaderState) -> None:
        for i, line in enumerate(self.build(snapshot, state).split("\n")[:2]):
            shown = self._shown[i]
            if line == shown:
                continue
            width = self._lines[i].size.width
            # a line that fits on one row before and after keeps its height: no layout pass
            fits = bool(width) and shown is not None and max(line.cell_len, shown.cell_len) <= width
            self._shown[i] = line
            self._lines[i].update(line, layout=not fits)

    @staticmethod
    def build(snapshot: Snapshot | None, state: HeaderState) -> Text:
        line1 = Text()
        line1.append(f" {state.title} ", "bold reverse")
        line1.append("  ")
        if state.remote:
            line1.append(f" ⚠ REMOTE {state.target} ", "bold white on red")
        else:
            line1.append(state.target, "bold")
        if snapshot is not None:
            line1.append("  algorithm ", "bright_black")
            line1.append(snapshot.algorithm, "bold cyan")
            if snapshot.workers:
                n = len(snapshot.workers)
                up = sum(1 for w in snapshot.workers if w.alive)
                line1.append("  processes ", "bright_black")
                line1.append(
                    f"{n}" if up == n else f"{up} of {n} up", "bold" if up == n else "bold yellow"
                )
            line1.append("  limits ", "bright_black")
            line1.append(limits_text(snapshot.limits.config))
        line1.append("  ")
        link = state.link
        if link.ok and snapshot is not None:
            line1.append("● live", "green")
        elif link.ok:
            line1.append("◌ connecting…", "yellow")
        else:
            retry = (
                "retrying now" if not link.retry_in_s else f"retrying in {link.retry_in_s:.0f} s"
            )
            problem = link.problem
            if len(problem) > PROBLEM_CHARS:  # keep the retry and the state's age on the line
                tail = PROBLEM_CHARS // 3  # where the advice is ("— check --token")
                problem = problem[: PROBLEM_CHARS - tail - 1] + "…" + problem[-tail:]
            line1.append(f" ✖ connection lost: {problem} — {retry} ", "bold white on red")
            if state.stale_s is not None:
                line1.append(f"  showing state from {human_duration(state.stale_s)} ago", "yellow")
        if snapshot is not None and snapshot.panic:
            line1.append("  ")
            line1.append(" PANIC: balancing over all backends ", "bold white on dark_red")
        if state.paused:
            line1.append("  ")
            line1.append(" PAUSED (p) ", "bold black on yellow")
        if state.read_only:
            line1.append("  ")
            line1.append(" READ-ONLY ", "bold black on cyan")
        line2 = Text(" ")
        if snapshot is None:
            line2.append("waiting for the first snapshot…", "bright_black")
        else:
            for fig in totals_figures(snapshot):
                line2.append(f"{fig.label} ", "bright_black")
                line2.append(fig.value, fig.style)
                line2.append("   ")
        line1.no_wrap = True
        line2.no_wrap = True
        return Text("\n").join([line1, line2])
