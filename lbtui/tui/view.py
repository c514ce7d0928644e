"""The console's view model: pure functions from the control model to what the screen shows.

Everything the widgets print is decided here, from a ``Snapshot`` / ``BackendView`` / ``Event``
to plain strings and Rich style names, with no Textual import and no clock read (times are
converted with the snapshot's own ``(at, wall)`` pair). That keeps the widgets thin and lets the
formatting be unit-tested without an app (STYLE.md, "three layers of TUI tests").

A table cell is a ``Cell``: a tuple of ``(text, style)`` segments. Cells are hashable and cheap
to compare, so the backends table can tell which cells changed since the last snapshot and
update only those, and cache the Rich ``Text`` built for each distinct cell.

This module holds the backend table's row (state, breaker, faults, columns, sorting) and the
event lines; the figures it prints come from ``lbtui.tui.numbers``, and the detail pane's
reasons and the header's figures have modules of their own (``reasons``, ``figures``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from lbtui.control.model import (
    BackendView,
    BreakerView,
    Event,
    FaultSpec,
    FaultView,
    Windows,
)
from lbtui.tui import foreign
from lbtui.tui.foreign import column_label, column_min_width
from lbtui.tui.numbers import (
    clock_text,
    human_bytes,
    human_duration,
    ms_text,
    num,
    percent_text,
    rate_text,
    sparkline,
)

Segment = tuple[str, str]
"""``(text, rich style)``; an empty style is the default colour."""
Cell = tuple[Segment, ...]

# --- backend state -----------------------------------------------------------------------------

State = Literal["up", "draining", "disabled", "ejected", "down"]

STATE_SYMBOL: dict[State, str] = {
    "up": "●",
    "draining": "◐",
    "disabled": "○",
    "ejected": "⊘",
    "down": "✖",
}
STATE_STYLE: dict[State, str] = {
    "up": "green",
    "draining": "yellow",
    "disabled": "bright_black",
    "ejected": "magenta",
    "down": "bold red",
}
STATE_ORDER: dict[State, int] = {"down": 0, "ejected": 1, "disabled": 2, "draining": 3, "up": 4}
"""Sorting by state puts the trouble first."""

OPERATOR_REASON = "forced by operator"
"""The reason a breaker gives for a state the operator forced (``lbtui.core.breaker``)."""

BREAKER_LABEL = {
    "closed": ("closed", "bright_black"),
    "open": ("OPEN", "bold red"),
    "half_open": ("half-open", "yellow"),
    "forced_open": ("OPEN (forced)", "bold red"),
    "disabled": ("OFF (forced)", "bright_black"),
}
"""The breaker column; a closed breaker is normal and reads grey."""
FORCED_CLOSED = ("CLOSED (forced)", "cyan")


def breaker_forced_closed(br: BreakerView) -> bool:
    """Closed because the operator forced it so (it judges by itself again from a fresh
    window, but the operator's choice is what explains the state)."""
    return br.state == "closed" and br.reason == OPERATOR_REASON


def process_dead(b: BackendView) -> bool:
    return b.process is not None and not b.process.alive


def backend_state(b: BackendView) -> State:
    """The one word for a backend: the operator's choice first (it explains the rest), then
    what happened to it."""
    if b.admin == "disabled":
        return "disabled"
    if process_dead(b) or (b.health is not None and b.health.state == "down"):
        return "down"
    if b.ejected:
        return "ejected"
    if b.admin == "draining":
        return "draining"
    return "up"


def state_cell(b: BackendView) -> Cell:
    """``● up``, ``◐ draining``, ``⊘ ejected`` … (the breaker has a column of its own)."""
    st = backend_state(b)
    return ((f"{STATE_SYMBOL[st]} {st}", STATE_STYLE[st]),)


def breaker_cell(b: BackendView) -> Cell:
    """``closed``, ``OPEN``, ``half-open``, ``OPEN (forced)``, ``CLOSED (forced)``,
    ``OFF (forced)``; empty when the backend has no breaker."""
    br = b.breaker
    if br is None:
        return ()
    if breaker_forced_closed(br):
        return (FORCED_CLOSED,)
    return (BREAKER_LABEL.get(br.state, (br.state, "")),)


def weight_text(b: BackendView) -> str:
    """Effective over configured weight, ``0.4/1`` (PRODUCT.md: weights as they are now)."""
    return f"{num(b.weight_effective)}/{num(b.weight_configured)}"


# --- faults ------------------------------------------------------------------------------------


def fault_spec_text(spec: FaultSpec) -> str:
    """Short, for the table: ``delay 200±50ms``, ``abort 503``, ``down``, ``hang``."""
    kind = str(spec.kind)
    if kind == "delay":
        jit = f"±{num(spec.jitter_ms)}" if spec.jitter_ms else ""
        return f"delay {num(spec.ms or 0)}{jit}ms"
    if kind == "abort":
        return f"abort {spec.status if spec.status is not None else 503}"
    if kind == "bandwidth":
        return f"bw {num(spec.kbps or 0)}KB/s"
    if kind == "reset":
        return "reset"
    return kind


def fault_cell(f: FaultView | None) -> Cell:
    """Short description, then requested → applied percentage: ``delay 200±50ms 50→49%``.
    A fault that ended stays, greyed, with its final figures."""
    if f is None:
        return ()
    applied = "–" if f.applied_percent is None else f"{f.applied_percent:.0f}%"
    figures = f" {num(f.spec.percent)}→{applied}"
    if not f.active:
        return (("ended ", "bright_black"), (fault_spec_text(f.spec) + figures, "bright_black"))
    return ((fault_spec_text(f.spec), "bold dark_orange"), (figures, "dark_orange"))


def fault_active(b: BackendView) -> bool:
    return b.fault is not None and b.fault.active


FAILING_FAULTS = frozenset({"abort", "down", "reset", "hang"})
"""Faults that fail the request they hit: a client that still got an answer was served by a
retry on another backend (or a fallback)."""


def _hidden_by_retries(f: FaultView) -> str:
    """`` — retried on other backends`` when a failing fault's requests still ended well for
    the client, so that ``applied 5 of 5; clients saw 200 ×5`` does not read as a
    contradiction (issue 13, item 6)."""
    if str(f.spec.kind) not in FAILING_FAULTS:
        return ""
    ok = sum(n for status, n in f.client_observed.items() if status[:1] in ("1", "2", "3"))
    if ok == 0:
        return ""
    total = sum(f.client_observed.values())
    who = "" if ok == total else f"{ok} "
    return f" — {who}retried on other backends"


def fault_proof(f: FaultView) -> str:
    """The sentence that proves a fault happens (PRODUCT.md, gap 3): requested vs applied with
    the sample size, and what clients finally saw."""
    if f.eligible == 0:
        proof = f"no eligible request yet ({f.requests} seen)"
    else:
        ap = f.applied_percent if f.applied_percent is not None else 0.0
        proof = (
            f"applied {f.applied} of {f.eligible} eligible "
            f"({ap:.1f} % vs {num(f.spec.percent)} % requested)"
        )
    seen = ""
    if f.client_observed:
        parts = ", ".join(f"{k} ×{v}" for k, v in sorted(f.client_observed.items()))
        seen = f"; clients saw {parts}{_hidden_by_retries(f)}"
    if not f.active:
        tail = f"; ended: {f.ended or 'ended'}"
    elif f.remaining_s is not None:
        tail = f"; ends in {human_duration(f.remaining_s)}"
    else:
        tail = "; until cleared (r)"
    return f"{f.description} — {proof}{seen}{tail}"


# --- the table row -----------------------------------------------------------------------------


def window_text(seconds: float) -> str:
    """``1s``, ``10s``, ``250ms``, ``1m``: how a column header names its window."""
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds >= 60 and seconds % 60 == 0:
        return f"{seconds / 60:.0f}m"
    return f"{num(round(seconds, 1))}s"


@dataclass(frozen=True, slots=True)
class Column:
    key: str
    label: str
    width: int
    right: bool = False
    """Right-aligned (numbers)."""
    priority: int = 0
    """0: always shown; otherwise columns are dropped highest number first as the terminal
    narrows (as htop and k9s do)."""
    window: Literal["rate", "percentile", ""] = ""
    """Which window the header names after the label (``req/s 1s``)."""

    def title(self, windows: Windows, source: str = "lbtui") -> str:
        label = column_label(source, self.key, self.label)
        if not self.window:
            return label
        seconds = windows.rate_s if self.window == "rate" else windows.quantile_s
        return f"{label} {window_text(seconds)}"


COLUMNS: tuple[Column, ...] = (
    Column("name", "backend", 11),
    Column("state", "state", 10),
    Column("breaker", "breaker", 15),
    Column("weight", "weight", 7, right=True, priority=2),
    Column("in_flight", "infl", 4, right=True, priority=4),
    Column("conns", "conn", 4, right=True, priority=6),
    Column("rps", "req/s", 6, right=True, window="rate"),
    Column("spark", "last 60 s", 12, priority=5),
    Column("p50", "p50", 5, right=True, priority=3, window="percentile"),
    Column("p99", "p99", 5, right=True, window="percentile"),
    Column("errors", "err%", 4, right=True),
    Column("fault", "fault req→applied", 23, priority=1),
    Column("cpu", "cpu%", 4, right=True, priority=7),
    Column("rss", "rss", 9, right=True, priority=8),
    Column("zone", "zone", 6, priority=9),
    Column("group", "group", 10, priority=10),
)
"""Every column at 160 wide; at 80 the priority-0 ones (name, state, breaker, req/s, p99,
err%) still fit, and the rest come back by priority as the width allows."""
COLUMN_KEYS = tuple(c.key for c in COLUMNS)
SORT_KEYS = tuple(k for k in COLUMN_KEYS if k != "spark")
"""What ``--sort`` and the ``S`` key accept (the sparkline sorts as req/s)."""
CELL_PADDING = 1
"""DataTable's default: one blank each side of a cell."""


def column_width(col: Column, windows: Windows, source: str = "lbtui") -> int:
    """Room for the widest value and the header with a sort arrow (so it never truncates)."""
    return max(column_min_width(source, col.key, col.width), len(col.title(windows, source)) + 2)


def fit_columns(width: int, windows: Windows, source: str = "lbtui") -> tuple[int, ...]:
    """Indexes into ``COLUMNS`` of the columns that fit ``width`` cells, in display order:
    every priority-0 column, then the others by priority while they fit (one that does not
    fit is skipped, a narrower one after it may still come)."""
    cost = [column_width(c, windows, source) + 2 * CELL_PADDING for c in COLUMNS]
    shown = {i for i, c in enumerate(COLUMNS) if c.priority == 0}
    used = sum(cost[i] for i in shown)
    for i in sorted(
        (i for i, c in enumerate(COLUMNS) if c.priority), key=lambda i: COLUMNS[i].priority
    ):
        if used + cost[i] <= width:
            shown.add(i)
            used += cost[i]
    return tuple(sorted(shown))


SPARK_WIDTH = 12


def _plain(text: str, style: str = "") -> Cell:
    return ((text, style),) if text else ()


def error_style(ratio: float) -> str:
    if ratio >= 0.05:
        return "bold red"
    if ratio > 0:
        return "yellow"
    return ""


def backend_row(b: BackendView, at: float | None = None, groups: str = "") -> tuple[Cell, ...]:
    """One table row, in ``COLUMNS`` order; ``at`` (the snapshot's time) dates a foreign
    server's status (``UP 3m``); ``groups``: its target groups (``groups_view``)."""
    p = b.process
    if p is None:
        cpu, rss = _plain(""), _plain("")
    elif not p.alive:
        cpu, rss = _plain("dead", "bold red"), _plain("")
    else:
        cpu, rss = _plain(f"{p.cpu_percent:.0f}"), _plain(human_bytes(p.rss_bytes))
    over = b.eligible and b.max_rps is not None and b.demand_rps > b.max_rps  # counts in M
    weight_style = "yellow" if b.weight_effective != b.weight_configured else ""
    slow = b.p99_ms is not None and b.p99_ms >= 1000
    server = b.server is not None
    return (
        _plain(b.name, "bold"),
        foreign.status_cell(b, at) if server else state_cell(b),
        foreign.check_cell(b) if server else breaker_cell(b),
        _plain(weight_text(b), weight_style),
        _plain(str(b.in_flight)),
        _plain(str(b.open_connections)),
        _plain(rate_text(b.rps), "bold red" if over else ""),
        _plain(sparkline(b.rps_series, SPARK_WIDTH), "cyan"),
        _plain(ms_text(b.p50_ms)),
        _plain(ms_text(b.p99_ms), "yellow" if slow else ""),
        _plain(percent_text(b.error_ratio), error_style(b.error_ratio)),
        foreign.queue_cell(b) if server else fault_cell(b.fault),
        cpu,
        rss,
        _plain(b.zone or ""),
        _plain(groups),
    )


def cell_text(cell: Cell) -> str:
    return "".join(t for t, _ in cell)


def row_text(b: BackendView, row: Sequence[Cell] | None = None) -> str:
    """Everything a filter matches against: every column, plus the URL and zone."""
    cells = row if row is not None else backend_row(b)
    parts = [cell_text(c) for c in cells]
    parts += [b.url, b.zone or ""]
    return " ".join(parts).lower()


def matches(text: str, query: str) -> bool:
    """Every whitespace-separated term of ``query`` occurs in ``text`` (case-insensitive)."""
    return all(term in text for term in query.lower().split())


_DIGITS = re.compile(r"(\d+)")


def natural_key(name: str) -> tuple[tuple[int, int | str], ...]:
    """``b2`` before ``b10``."""
    return tuple(
        (0, int(part)) if part.isdigit() else (1, part.lower()) for part in _DIGITS.split(name)
    )


BREAKER_ORDER = {
    "OPEN": 0,
    "OPEN (forced)": 1,
    "half-open": 2,
    "CLOSED (forced)": 3,
    "OFF (forced)": 4,
    "closed": 5,
    "": 6,
}
"""Sorting by breaker puts the trouble first."""


def sort_value(b: BackendView, column: str) -> tuple[object, ...]:
    """The key of ``b`` when sorting by ``column``; ties go by name."""
    tie = natural_key(b.name)
    p = b.process
    match column:
        case "state":
            return (STATE_ORDER[backend_state(b)], tie)
        case "breaker":
            return (BREAKER_ORDER.get(cell_text(breaker_cell(b)), 9), tie)
        case "weight":
            return (b.weight_effective, b.weight_configured, tie)
        case "in_flight":
            return (b.in_flight, tie)
        case "conns":
            return (b.open_connections, tie)
        case "rps" | "spark":
            return (b.rps, tie)
        case "p50":
            return (-1.0 if b.p50_ms is None else b.p50_ms, tie)
        case "p99":
            return (-1.0 if b.p99_ms is None else b.p99_ms, tie)
        case "errors":
            return (b.error_ratio, tie)
        case "fault":
            return (0 if b.fault is None else (2 if b.fault.active else 1), tie)
        case "cpu":
            return (p.cpu_percent if p is not None and p.alive else -1.0, tie)
        case "rss":
            return (p.rss_bytes if p is not None and p.alive else -1, tie)
        case "zone":
            return (b.zone or "", tie)
        case _:
            return (tie,)


def sort_names(
    backends: Iterable[BackendView], column: str | None, reverse: bool = False
) -> list[str]:
    """Backend names in display order: the snapshot's (config) order when ``column`` is None."""
    items = list(backends)
    if column is None:
        names = [b.name for b in items]
        return names[::-1] if reverse else names
    return [b.name for b in sorted(items, key=lambda b: sort_value(b, column), reverse=reverse)]


def parse_sort(text: str) -> tuple[str, bool]:
    """``rps`` → ``("rps", False)``; a leading ``-`` sorts in reverse. Raises ``ValueError``."""
    reverse = text.startswith("-")
    key = text.lstrip("-+").strip().lower().replace("-", "_")
    aliases = {"req/s": "rps", "err": "errors", "error": "errors", "inflight": "in_flight"}
    key = aliases.get(key, key)
    if key not in SORT_KEYS:
        raise ValueError(f"cannot sort by {text!r}; choose one of {', '.join(SORT_KEYS)}")
    return key, reverse


# --- events ------------------------------------------------------------------------------------

KIND_STYLE = {
    "breaker": "bold red",
    "ejection": "magenta",
    "health": "yellow",
    "limits": "blue",
    "fallback": "dark_orange",
    "retry_budget": "bright_red",
    "fault": "bold dark_orange",
    "action": "bold cyan",
    "config": "cyan",
    "fleet": "green",
}


KIND_LABEL = {"retry_budget": "budget"}
"""Kinds are padded to 8 columns; the one longer name is shortened."""


def event_segments(e: Event) -> Cell:
    """``12:03:07 breaker  b2     closed → open: failure rate …``; on a console over several
    balancers, the balancer's name after the time."""
    kind = str(e.kind)
    origin = e.origin
    by: Cell = ((f"  [{origin}]", "magenta"),) if origin else ()
    on: Cell = ((e.balancer, "bold blue"), (" ", "")) if e.balancer else ()
    return (
        (clock_text(e.wall), "bright_black"),
        (" ", ""),
        *on,
        (f"{KIND_LABEL.get(kind, kind):<8}", KIND_STYLE.get(kind, "")),
        (" ", ""),
        (f"{e.backend or '·':<6}", "bold"),
        (" ", ""),
        (e.message, ""),
        *by,
    )


def event_text(e: Event) -> str:
    """What an event filter matches against."""
    origin = e.origin or ""
    return f"{e.balancer or ''} {e.kind} {e.backend or ''} {e.message} {origin}".lower()
