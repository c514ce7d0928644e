"""The header band: which balancer, how it is doing, and whether what you see is live."""

from __future__ import annotations

from dataclasses import dataclass

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Static

from lbtui.control.model import Snapshot
from lbtui.tui.feed import Link
from lbtui.tui.figures import fit_figures, limits_text, totals_figures
from lbtui.tui.numbers import human_duration


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
    """Two lines, each fitted to the terminal's width: target, algorithm, flags and the link
    state; then the balancer-wide figures. What does not fit is dropped by priority (the
    limits first, then the algorithm…; the in-flight, fallback and retry rates before the
    figures the issue names: req/s, success, 429/s, L, M), never wrapped over the next line.
    While the link is down a third line says why, whole, wrapped at word boundaries.

    Each line is its own ``Static``, updated only when its text changed: the first changes
    rarely, the second with every snapshot (and is all that is painted again then)."""

    DEFAULT_CSS = """
    TotalsBar {
        height: auto;
    }
    TotalsBar > Static {
        height: 1;
        text-wrap: nowrap;
        text-overflow: ellipsis;
    }
    TotalsBar > #totals-3 {
        height: auto;
        text-wrap: wrap;
        display: none;
    }
    """

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self._lines = (Static(id="totals-1"), Static(id="totals-2"), Static(id="totals-3"))
        self._shown: list[Text | None] = [None, None, None]
        self._last: tuple[Snapshot | None, HeaderState] | None = None

    def compose(self) -> ComposeResult:
        yield from self._lines

    def on_resize(self) -> None:
        if self._last is not None:
            self.show(*self._last)

    def show(self, snapshot: Snapshot | None, state: HeaderState) -> None:
        self._last = (snapshot, state)
        width = self.size.width or self.app.size.width
        lines = self.build(snapshot, state, width)
        for i, line in enumerate(lines):
            if i == 2:
                self._lines[2].display = line is not None
            if line is None or line == self._shown[i]:
                continue
            self._shown[i] = line
            self._lines[i].update(line, layout=i == 2)

    @staticmethod
    def build(
        snapshot: Snapshot | None, state: HeaderState, width: int = 200
    ) -> tuple[Text, Text, Text | None]:
        """The two lines fitted to ``width``, and the problem line while the link is down."""
        return (
            _fit(_first_line(snapshot, state), width),
            _figures_line(snapshot, width),
            _problem_line(state),
        )


Piece = tuple[int, Text]
"""``(priority, text)``: 0 always stays; higher numbers are dropped first."""


def _piece(priority: int, *parts: tuple[str, str]) -> Piece:
    return (priority, Text.assemble(*parts))


def _first_line(snapshot: Snapshot | None, state: HeaderState) -> list[Piece]:
    title, *more = state.title.split(" · ")
    # the part of the title that names the target (lbtui demo's "admin URL") stands for it
    named = next((m for m in more if m.split() and m.split()[-1] == state.target), None)
    pieces: list[Piece] = [_piece(0, (f" {title} ", "bold reverse"))]
    pieces += [
        _piece(7 + i, (f"  {m}", "bright_black")) for i, m in enumerate(more) if m is not named
    ]
    if state.remote:
        pieces.append(_piece(0, ("  ", ""), (f" ⚠ REMOTE {state.target} ", "bold white on red")))
    else:
        pieces.append(_piece(5, ("  ", ""), (named or state.target, "bold")))
    if snapshot is not None:
        pieces.append(
            _piece(3, ("  algorithm ", "bright_black"), (snapshot.algorithm, "bold cyan"))
        )
        if snapshot.workers:
            n = len(snapshot.workers)
            up = sum(1 for w in snapshot.workers if w.alive)
            text = f"{n}" if up == n else f"{up} of {n} up"
            pieces.append(
                _piece(
                    4 if up == n else 0,
                    ("  processes ", "bright_black"),
                    (text, "bold" if up == n else "bold yellow"),
                )
            )
        if snapshot.source == "lbtui":
            limits = limits_text(snapshot.limits.config)
            pieces.append(_piece(6, ("  limits ", "bright_black"), (limits, "")))
        else:
            pieces.append(_piece(2, ("  source ", "bright_black"), (snapshot.source, "bold")))
        if snapshot.panic:
            pieces.append(
                _piece(0, ("  ", ""), (" PANIC: balancing over all ", "bold white on dark_red"))
            )
    if state.paused:
        pieces.append(_piece(0, ("  ", ""), (" PAUSED (p) ", "bold black on yellow")))
    if state.read_only:
        pieces.append(_piece(0, ("  ", ""), (" READ-ONLY ", "bold black on cyan")))
    link = state.link
    if link.ok and snapshot is not None:
        pieces.append(_piece(0, ("  ", ""), ("● live", "green")))
    elif link.ok:
        pieces.append(_piece(0, ("  ", ""), ("◌ connecting…", "yellow")))
    else:
        retry = "retrying now" if not link.retry_in_s else f"retrying in {link.retry_in_s:.0f} s"
        pieces.append(_piece(0, ("  ", ""), (f" ✖ disconnected — {retry} ", "bold white on red")))
        if state.stale_s is not None:
            age = human_duration(state.stale_s)
            pieces.append(_piece(1, (f"  state from {age} ago", "yellow")))
    return pieces


def _fit(pieces: list[Piece], width: int) -> Text:
    """The pieces that fit ``width``, dropping the highest priority number first; what still
    does not fit ends in an ellipsis rather than wrapping."""
    kept = list(pieces)
    while sum(t.cell_len for _, t in kept) > width and any(p for p, _ in kept):
        drop = max(range(len(kept)), key=lambda i: (kept[i][0], i))
        del kept[drop]
    line = Text(no_wrap=True, overflow="ellipsis", end="")
    for _, text in kept:
        line.append_text(text)
    return line


def _figures_line(snapshot: Snapshot | None, width: int) -> Text:
    line = Text(" ", no_wrap=True, overflow="ellipsis", end="")
    if snapshot is None:
        line.append("waiting for the first snapshot…", "bright_black")
        return line
    chosen = fit_figures(totals_figures(snapshot), width)
    gap = "   " if sum(len(lbl) + len(f.value) + 4 for lbl, f in chosen) + 1 <= width else "  "
    for i, (label, fig) in enumerate(chosen):
        if i:
            line.append(gap)
        line.append(f"{label} ", "bright_black")
        line.append(fig.value, fig.style)
    return line


def _problem_line(state: HeaderState) -> Text | None:
    """Why the link is down, whole: wrapped at word boundaries, never cut."""
    if state.link.ok:
        return None
    return Text.assemble((" ✖ ", "bold red"), (state.link.problem, "red"))
