"""What a console over several balancers shows of each: the balancers panel's lines and the
detail's per-balancer breakdown of one backend. Pure, like ``view.py``: ``BalancerView``s in,
``Text`` out, fitted to a width by dropping whole columns (the same ones on every line, so
they stay aligned), never wrapping.

A balancer that cannot be reached keeps its last figures on its line, greyed, with how long
ago they were read and why it is gone: its share is out of the sums the backend rows show.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from rich.text import Text

from lbtui.control.merge import BalancerView
from lbtui.control.model import BackendView, LimitsView, Snapshot
from lbtui.tui.numbers import human_duration, ms_text, percent_text, rate_text
from lbtui.tui.view import Cell, breaker_cell, fault_cell, state_cell, weight_text

GREY = "bright_black"
LAST_MIN = 20
"""The panel's last column (the admin API, or why the balancer is gone) has at least this."""
MERGE_RULE = "backend rows: rates and counts summed over the live balancers, p50/p99 the highest"
"""What the backend rows show over several balancers (``lbtui.control.merge``), said once."""


@dataclass(frozen=True, slots=True)
class Column:
    title: str
    width: int
    drop: int
    """Dropped first when the line is too narrow: the highest number goes first; 0 stays."""
    right: bool = False


def fit(columns: Sequence[Column], width: int) -> list[int]:
    """Indexes of the columns that fit ``width`` (one space between columns), in order."""
    kept = list(range(len(columns)))
    while sum(columns[i].width + 1 for i in kept) > width and any(columns[i].drop for i in kept):
        kept.remove(max(kept, key=lambda i: (columns[i].drop, i)))
    return kept


def _line(
    cells: Sequence[Cell], columns: Sequence[Column], kept: Sequence[int], grey: bool
) -> Text:
    """One line: each kept column padded to its width; a one-piece cell longer than its
    column is cut with ``…`` (the last column's width is what the line has left)."""
    text = Text(no_wrap=True, overflow="ellipsis", end="")
    for n, i in enumerate(kept):
        col, cell = columns[i], cells[i]
        if len(cell) == 1 and len(cell[0][0]) > col.width:
            cell = ((cell[0][0][: max(0, col.width - 1)] + "…", cell[0][1]),)
        plain = "".join(t for t, _ in cell)
        pad = max(0, col.width - len(plain))
        last = n == len(kept) - 1
        if n:
            text.append(" ")
        if col.right:
            text.append(" " * pad)
        for part, style in cell:
            text.append(part, GREY if grey else style)
        if not col.right and not last:
            text.append(" " * pad)
    return text


def _header(columns: Sequence[Column], kept: Sequence[int]) -> Text:
    cells: list[Cell] = [((c.title, "bold"),) for c in columns]
    line = _line(cells, columns, kept, grey=False)
    line.stylize("bold")
    return line


# --- the balancers panel -----------------------------------------------------------------------


def worst_p99(snapshot: Snapshot) -> float | None:
    """The highest backend p99 on one balancer (the state has no balancer-wide percentile)."""
    known = [b.p99_ms for b in snapshot.backends if b.p99_ms is not None]
    return max(known) if known else None


def store_text(limits: LimitsView) -> str:
    """The limit store and its state: ``memory``, ``redis up · 3 peers``, ``redis DOWN``."""
    store = limits.store
    name = "redis" if store.startswith(("redis://", "rediss://")) else store
    if limits.store_up is None:
        return name
    text = f"{name} {'up' if limits.store_up else 'DOWN'}"
    return f"{text} · {len(limits.peers)} peers" if limits.peers else text


def why_gone(v: BalancerView) -> str:
    """The problem, without the URL it usually starts with (the panel has the name)."""
    return v.problem.removeprefix(f"{v.url}: ")


def link_cell(v: BalancerView) -> Cell:
    if v.reachable:
        return (("● live", "green"),)
    if v.snapshot is None:
        return (("✖ unreachable", "bold red"),)
    return ((f"✖ gone {human_duration(v.age_s)}", "bold red"),)


def balancer_cells(v: BalancerView, chosen: bool) -> list[Cell]:
    mark: Cell = (("▶", "bold cyan"),) if chosen else ((" ", ""),)
    s = v.snapshot
    if s is None:
        figures: list[Cell] = [(("", ""),)] * 5
    else:
        eligible = sum(1 for b in s.backends if b.eligible)
        err = 1.0 - s.totals.success_ratio
        figures = [
            ((rate_text(s.totals.rps), "bold"),),
            ((ms_text(worst_p99(s)), ""),),
            ((percent_text(err), "bold red" if err >= 0.05 else ""),),
            ((f"{eligible}/{len(s.backends)}", "" if eligible == len(s.backends) else "yellow"),),
            ((store_text(s.limits), "red" if "DOWN" in store_text(s.limits) else ""),),
        ]
    last: Cell = ((why_gone(v), "red"),) if not v.reachable else ((v.url, GREY),)
    return [mark, ((v.name, "bold"),), link_cell(v), *figures, last]


def build_balancers(views: Sequence[BalancerView], target: str | None, width: int) -> Text:
    """The panel: a header line, then one line per balancer (``▶`` marks the one actions go
    to when one is chosen)."""
    name_w = max([len(v.name) for v in views] + [8])
    stores = [store_text(v.snapshot.limits) for v in views if v.snapshot is not None]
    store_w = max([len(t) for t in stores] + [11])
    columns = [
        Column("", 1, 0),
        Column("balancer", min(name_w, 24), 0),
        Column("link", 13, 0),
        Column("req/s", 6, 0, right=True),
        Column("p99 ms", 6, 1, right=True),
        Column("err%", 5, 0, right=True),
        Column("eligible", 8, 3),
        Column("limit store", store_w, 2),
    ]
    kept = fit(columns, width - LAST_MIN - 1)
    rest = width - sum(columns[i].width + 1 for i in kept) - 1
    columns.append(Column("admin API / why gone", max(rest, LAST_MIN), 0))
    kept.append(len(columns) - 1)
    lines = [_header(columns, kept)]
    for v in views:
        lines.append(_line(balancer_cells(v, v.name == target), columns, kept, not v.reachable))
    return Text("\n", end="").join(lines)


def panel_title(views: Sequence[BalancerView], target: str | None, width: int = 0) -> str:
    """How many are live and where actions go; the rule of the sums too when ``width`` has
    room for it."""
    live = sum(1 for v in views if v.reachable)
    to = "every balancer" if target is None else target
    title = f"balancers · {live} of {len(views)} live · actions → {to} (t)"
    wide = f"{title} · {MERGE_RULE}"
    return wide if len(wide) + 4 <= width else title


# --- the per-balancer breakdown of one backend ---------------------------------------------------


def _backend_cells(b: BackendView) -> list[Cell]:
    return [
        ((rate_text(b.rps), "bold"),),
        ((str(b.in_flight), ""),),
        ((ms_text(b.p99_ms), ""),),
        ((percent_text(b.error_ratio), "bold red" if b.error_ratio >= 0.05 else ""),),
        state_cell(b),
        breaker_cell(b) or (("—", GREY),),
        ((weight_text(b), ""),),
        fault_cell(b.fault) or (("—", GREY),),
    ]


BREAKDOWN: list[Column] = [
    Column("on each balancer", 16, 0),
    Column("req/s", 6, 0, right=True),
    Column("in-fl", 5, 3, right=True),
    Column("p99 ms", 6, 0, right=True),
    Column("err%", 5, 1, right=True),
    Column("state", 11, 0),
    Column("breaker", 13, 2),
    Column("weight", 7, 4),
    Column("fault", 24, 5),
]


def build_breakdown(name: str, views: Sequence[BalancerView], width: int) -> Text:
    """``name`` on each balancer: its own figures and states there; a balancer that is gone
    shows its last ones, greyed; one that does not have the backend says so."""
    name_w = min(max([len(v.name) for v in views] + [6]) + 12, 28)
    columns = [Column("on each balancer", name_w, 0), *BREAKDOWN[1:]]
    kept = fit(columns, width)
    lines = [_header(columns, kept)]
    for v in views:
        label = v.name if v.reachable else f"{v.name} {human_duration(v.age_s)} ago"
        cells: list[Cell] = [((label, "bold"),)]
        b = _find(v.snapshot, name)
        if b is None:
            why = "never reached" if v.snapshot is None else "not one of its backends"
            text = _line([*cells], columns, kept[:1], grey=True)
            text.append(f"  {why}", GREY)
            lines.append(text)
            continue
        lines.append(_line(cells + _backend_cells(b), columns, kept, not v.reachable))
    return Text("\n", end="").join(lines)


def _find(snapshot: Snapshot | None, name: str) -> BackendView | None:
    if snapshot is None:
        return None
    return next((b for b in snapshot.backends if b.name == name), None)
