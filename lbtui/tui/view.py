"""The console's view model: pure functions from the control model to what the screen shows.

Everything the widgets print is decided here, from a ``Snapshot`` / ``BackendView`` / ``Event``
to plain strings and Rich style names, with no Textual import and no clock read (times are
converted with the snapshot's own ``(at, wall)`` pair). That keeps the widgets thin and lets the
formatting be unit-tested without an app (STYLE.md, "three layers of TUI tests").

A table cell is a ``Cell``: a tuple of ``(text, style)`` segments. Cells are hashable and cheap
to compare, so the backends table can tell which cells changed since the last snapshot and
update only those, and cache the Rich ``Text`` built for each distinct cell.
"""

from __future__ import annotations

import ipaddress
import math
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal
from urllib.parse import urlsplit

from lbtui.control.model import (
    BackendView,
    BreakerView,
    Event,
    FaultSpec,
    FaultView,
    Snapshot,
    Windows,
)

Segment = tuple[str, str]
"""``(text, rich style)``; an empty style is the default colour."""
Cell = tuple[Segment, ...]

# --- numbers -----------------------------------------------------------------------------------


def num(x: float) -> str:
    """A short number for people: ``0.4``, ``1``, ``0.33``, ``12.5``, ``1250``."""
    if not math.isfinite(x):
        return "∞" if x > 0 else "–"
    if x == int(x) and abs(x) < 1e6:
        return str(int(x))
    if abs(x) >= 100:
        return f"{x:.0f}"
    return f"{x:.2f}".rstrip("0").rstrip(".")


def rate_text(rps: float) -> str:
    """Requests per second: ``0``, ``3.2``, ``123``, ``12.3k``."""
    if rps <= 0:
        return "0"
    if rps < 10:
        return f"{rps:.1f}"
    if rps < 10_000:
        return f"{rps:.0f}"
    return f"{rps / 1000:.1f}k"


NO_SAMPLES = "—"
"""A percentile over a window that holds too few samples to say (the snapshot's ``None``)."""


def ms_text(ms: float | None) -> str:
    """Milliseconds: ``0.42``, ``3.2``, ``123``, ``12.3k``; ``—`` when the window holds too
    few samples for the percentile (``None``)."""
    if ms is None:
        return NO_SAMPLES
    if not math.isfinite(ms) or ms <= 0:
        return "–"
    if ms < 1:
        return f"{ms:.2f}"
    if ms < 10:
        return f"{ms:.1f}"
    if ms < 10_000:
        return f"{ms:.0f}"
    return f"{ms / 1000:.1f}k"


def percent_text(ratio: float) -> str:
    """A ratio (0..1) as a percentage without the sign: ``0``, ``0.4``, ``12.5``, ``100``."""
    p = ratio * 100
    if p <= 0:
        return "0"
    if p < 10:
        return f"{p:.1f}"
    return f"{p:.0f}"


def human_duration(seconds: float | None) -> str:
    """``250 ms``, ``3.2 s``, ``42 s``, ``5 m 03 s``, ``2 h 05 m``; ``–`` for unknown."""
    if seconds is None or not math.isfinite(seconds):
        return "–"
    s = max(seconds, 0.0)
    if s < 1:
        return f"{s * 1000:.0f} ms"
    if s < 10:
        return f"{s:.1f} s"
    if s < 60:
        return f"{s:.0f} s"
    if s < 3600:
        m, sec = divmod(int(s), 60)
        return f"{m} m {sec:02d} s"
    h, rem = divmod(int(s), 3600)
    return f"{h} h {rem // 60:02d} m"


def human_bytes(n: float) -> str:
    """``512 B``, ``4.0 KiB``, ``12.3 MiB``, ``1.5 GiB``."""
    value = float(max(n, 0))
    if value < 1024:
        return f"{value:.0f} B"
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        value /= 1024
        if value < 1024 or unit == "TiB":
            return f"{value:.1f} {unit}"
    raise AssertionError("unreachable")  # pragma: no cover


def clock_text(wall: float) -> str:
    """Wall-clock time of day ``HH:MM:SS`` (local time)."""
    return time.strftime("%H:%M:%S", time.localtime(wall))


def wall_of(snapshot: Snapshot, at: float) -> float:
    """The Unix time of monotonic ``at`` on the balancer's clock (model.py, "Times")."""
    return snapshot.wall - (snapshot.at - at)


# --- sparklines --------------------------------------------------------------------------------

BLOCKS = "▁▂▃▄▅▆▇█"


def resample(values: Sequence[float], width: int) -> list[float]:
    """At most ``width`` values; each is the maximum of its bucket, so a spike stays visible."""
    n = len(values)
    if width <= 0:
        return []
    if n <= width:
        return list(values)
    out = []
    for i in range(width):
        lo, hi = i * n // width, (i + 1) * n // width
        out.append(max(values[lo:hi]))
    return out


def sparkline(values: Sequence[float], width: int | None = None, top: float | None = None) -> str:
    """A one-line plot in unicode blocks, scaled to ``top`` (default: the largest value).

    Zero is a blank, any positive value at least ``▁``, so an idle stretch reads as idle.
    """
    # memoised: fifty backends' series change once a second, the console asks four times
    return _sparkline(tuple(values), width, top)


@lru_cache(maxsize=1024)
def _sparkline(values: tuple[float, ...], width: int | None, top: float | None) -> str:
    vals = resample(values, width) if width is not None else list(values)
    hi = top if top is not None else max(vals, default=0.0)
    if hi <= 0:
        return " " * len(vals)
    out = []
    for v in vals:
        if v <= 0 or not math.isfinite(v):
            out.append(" ")
        else:
            idx = min(len(BLOCKS) - 1, max(0, math.ceil(v / hi * len(BLOCKS)) - 1))
            out.append(BLOCKS[idx])
    return "".join(out)


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

    def title(self, windows: Windows) -> str:
        if not self.window:
            return self.label
        seconds = windows.rate_s if self.window == "rate" else windows.quantile_s
        return f"{self.label} {window_text(seconds)}"


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
)
"""Every column at 160 wide; at 80 the priority-0 ones (name, state, breaker, req/s, p99,
err%) still fit, and the rest come back by priority as the width allows."""
COLUMN_KEYS = tuple(c.key for c in COLUMNS)
SORT_KEYS = tuple(k for k in COLUMN_KEYS if k != "spark")
"""What ``--sort`` and the ``S`` key accept (the sparkline sorts as req/s)."""
CELL_PADDING = 1
"""DataTable's default: one blank each side of a cell."""


def column_width(col: Column, windows: Windows) -> int:
    """Room for the widest value and the header with a sort arrow (so it never truncates)."""
    return max(col.width, len(col.title(windows)) + 2)


def fit_columns(width: int, windows: Windows) -> tuple[int, ...]:
    """Indexes into ``COLUMNS`` of the columns that fit ``width`` cells, in display order:
    every priority-0 column, then the others by priority while they fit (one that does not
    fit is skipped, a narrower one after it may still come)."""
    cost = [column_width(c, windows) + 2 * CELL_PADDING for c in COLUMNS]
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


def backend_row(b: BackendView) -> tuple[Cell, ...]:
    """One table row, in ``COLUMNS`` order."""
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
    return (
        _plain(b.name, "bold"),
        state_cell(b),
        breaker_cell(b),
        _plain(weight_text(b), weight_style),
        _plain(str(b.in_flight)),
        _plain(str(b.open_connections)),
        _plain(rate_text(b.rps), "bold red" if over else ""),
        _plain(sparkline(b.rps_series, SPARK_WIDTH), "cyan"),
        _plain(ms_text(b.p50_ms)),
        _plain(ms_text(b.p99_ms), "yellow" if slow else ""),
        _plain(percent_text(b.error_ratio), error_style(b.error_ratio)),
        fault_cell(b.fault),
        cpu,
        rss,
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


# --- the detail pane: every non-normal state with its reason -----------------------------------


@dataclass(frozen=True, slots=True)
class Reason:
    title: str
    """``OPEN``, ``EJECTED`` … in capitals."""
    style: str
    text: str
    """The rest of the line: since when, why, and what comes next."""


def _since(snapshot: Snapshot, at: float) -> str:
    return f"since {clock_text(wall_of(snapshot, at))}"


def breaker_reason(br: BreakerView, snapshot: Snapshot) -> Reason | None:
    since = _since(snapshot, br.since)
    match br.state:
        case "open":
            if br.retry_in_s is None:
                nxt = ""
            elif br.retry_in_s <= 0:
                nxt = "; half-open probe due"
            else:
                nxt = f"; half-open probe in {human_duration(br.retry_in_s)}"
            return Reason("OPEN", "bold red", f"{since} — {br.reason}{nxt}")
        case "half_open":
            permits = (
                f"; {br.half_open_permits} probe calls left"
                if br.half_open_permits is not None
                else ""
            )
            return Reason("HALF-OPEN", "yellow", f"{since} — {br.reason}{permits}")
        case "forced_open":
            return Reason("OPEN (forced)", "bold red", f"{since} — {br.reason}; b → auto")
        case "disabled":
            return Reason(
                "OFF (forced)", "bright_black", f"{since} — {br.reason}: no breaker; b → auto"
            )
        case "closed" if breaker_forced_closed(br):
            return Reason(
                "CLOSED (forced)", "cyan", f"{since} — {br.reason}; judging again from here"
            )
    return None


def state_reasons(b: BackendView, snapshot: Snapshot) -> list[Reason]:
    """Why ``b`` is not simply up and serving, one line per state (PRODUCT.md, gap 2)."""
    out: list[Reason] = []
    if b.admin == "disabled":
        since = f"{_since(snapshot, b.admin_since)} " if b.admin_since else ""
        out.append(Reason("DISABLED", "bright_black", f"{since}by the operator; x enables it"))
    if process_dead(b):
        pid = b.process.pid if b.process is not None else None
        out.append(Reason("PROCESS DEAD", "bold red", f"pid {pid} is gone; r restarts it"))
    if b.health is not None and b.health.state == "down":
        h = b.health
        detail = (
            f"; last check: {h.last_check_detail}"
            if h.last_check_detail and h.last_check_detail not in h.reason
            else ""
        )
        out.append(Reason("DOWN", "bold red", f"{_since(snapshot, h.since)} — {h.reason}{detail}"))
    if b.ejected:
        if b.ejected_until is None:
            back = "until further notice"
        else:
            back = f"readmitted in {human_duration(b.ejected_until - snapshot.at)}"
        out.append(Reason("EJECTED", "magenta", f"{b.ejection_reason}; {back}"))
    if b.breaker is not None:
        r = breaker_reason(b.breaker, snapshot)
        if r is not None:
            out.append(r)
    if b.admin == "draining":
        since = f"{_since(snapshot, b.admin_since)} — " if b.admin_since else ""
        left = (
            "drained: nothing in flight"
            if b.in_flight == 0
            else f"{b.in_flight} request{'s' if b.in_flight != 1 else ''} in flight left"
        )
        out.append(Reason("DRAINING", "yellow", f"{since}no new requests; {left}"))
    if b.health is not None and (factor := b.health.slow_start_factor) is not None:
        h = b.health
        left = (
            f"; {human_duration(h.slow_start_remaining_s)} to full weight"
            if h.slow_start_remaining_s is not None
            else ""
        )
        out.append(Reason("SLOW START", "cyan", f"{factor * 100:.0f} % of weight{left}"))
    if b.eligible and b.max_rps is not None and b.demand_rps > b.max_rps:
        out.append(
            Reason(
                "OVER CAP",
                "bold red",
                f"demand {rate_text(b.demand_rps)} req/s > max_rps {num(b.max_rps)}: "
                f"carries {rate_text(b.rps)}, the cap refused the rest (counts in M)",
            )
        )
    if b.fault is not None and b.fault.active:
        out.append(Reason("FAULT", "bold dark_orange", fault_proof(b.fault)))
    elif b.fault is not None:
        out.append(Reason("FAULT ENDED", "bright_black", fault_proof(b.fault)))
    return out


def breaker_window(br: BreakerView) -> str:
    """The breaker's window against its thresholds."""

    def rate(r: float | None) -> str:
        return "–" if r is None else f"{r:.0f} %"

    judged = "" if br.calls >= br.min_calls else f"; not judged below {br.min_calls} calls"
    return (
        f"{br.window} window of {br.window_size}: {br.calls} calls, "
        f"failures {br.failures} = {rate(br.failure_rate)} (opens at ≥ "
        f"{num(br.failure_rate_threshold)} %), slow {br.slow_calls} = "
        f"{rate(br.slow_call_rate)} (≥ {num(br.slow_call_rate_threshold)} % over "
        f"{human_duration(br.slow_call_s)}){judged}; opened {br.times_opened}× since start"
    )


def score_text(score: dict[str, float | None]) -> str:
    """p2c_ewma's cost and its parts (PRODUCT.md: the score's parts)."""

    def f(key: str) -> str:
        v = score.get(key)
        return "∞" if v is None else num(round(v, 2))

    known = ("ewma_ms", "in_flight", "penalty", "cost")
    if all(k in score for k in known):
        text = (
            f"cost {f('cost')} = ewma {f('ewma_ms')} ms × (in-flight {f('in_flight')} + 1)"
            f", penalty {f('penalty')}"
        )
    else:
        text = ""
    extra = [f"{k} {f(k)}" for k in score if k not in known]
    return "; ".join(x for x in [text, ", ".join(extra)] if x)


# --- header ------------------------------------------------------------------------------------


def is_loopback_target(target: str) -> bool:
    """Whether an attach target (a URL, or ``in-process``) stays on this machine."""
    if "://" not in target:
        return True
    host = urlsplit(target).hostname or ""
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True, slots=True)
class Figure:
    label: str
    value: str
    style: str = ""
    short: str = ""
    """The label on a narrow terminal (``L`` for ``imbalance L``); empty: the same."""
    priority: int = 0
    """0: always shown; otherwise dropped highest number first when the line is too narrow."""


def totals_figures(s: Snapshot) -> list[Figure]:
    """The header's balancer-wide figures."""
    t = s.totals
    success = t.success_ratio * 100
    succ_style = "bold red" if success < 95 else ("yellow" if success < 99.5 else "green")
    rate = f"req/s {window_text(s.windows.rate_s)}"
    return [
        Figure(rate, rate_text(t.rps), "bold", short="req/s"),
        Figure("in-flight", str(t.in_flight), priority=3),
        Figure("success", f"{success:.1f} %", succ_style),
        Figure("429/s", rate_text(t.rate_limited_rps), "yellow" if t.rate_limited_rps else ""),
        Figure(
            "fallback/s",
            rate_text(t.fallback_rps),
            "yellow" if t.fallback_rps else "",
            short="fb/s",
            priority=2,
        ),
        Figure(
            "retries/s",
            rate_text(t.retries_rps),
            "yellow" if t.retries_rps else "",
            short="retry/s",
            priority=1,
        ),
        Figure("imbalance L", f"{s.imbalance:.1f}", "", short="L"),
        Figure("overload M", str(s.overload), "bold red" if s.overload > 0 else "green", short="M"),
    ]


def fit_figures(figures: Sequence[Figure], width: int) -> list[tuple[str, Figure]]:
    """The figures that fit ``width`` cells, each with the label to show: every figure with
    its full label while they fit; then the optional figures dropped, highest priority number
    first; then short labels. The priority-0 figures are always kept."""

    def cost(chosen: Sequence[tuple[str, Figure]], gap: int) -> int:
        return sum(len(lbl) + 1 + len(f.value) + gap for lbl, f in chosen) + 1

    kept = list(figures)
    while True:
        for gap in (3, 2):
            chosen = [(f.label, f) for f in kept]
            if cost(chosen, gap) <= width:
                return chosen
        optional = [f for f in kept if f.priority]
        if not optional:
            break
        kept.remove(max(optional, key=lambda f: f.priority))
    return [(f.short or f.label, f) for f in kept]


def limits_text(config: dict[str, float | int | str | bool | None]) -> str:
    """The limits in force, e.g. ``rps 100 burst 200 · per client 10 · in-flight 64``."""

    def fig(key: str) -> str | None:
        v = config.get(key)
        if v is None or isinstance(v, bool | str):
            return None
        return num(float(v))

    parts = []
    if (rps := fig("rps")) is not None:
        burst = fig("burst")
        parts.append(f"rps {rps}" + (f" burst {burst}" if burst is not None else ""))
    if (per_client := fig("per_client_rps")) is not None:
        parts.append(f"per client {per_client}")
    if (conc := fig("max_in_flight")) is not None:
        parts.append(f"in-flight ≤ {conc}")
    return " · ".join(parts) if parts else "no limits"


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
    """``12:03:07 breaker  b2     closed → open: failure rate …``"""
    kind = str(e.kind)
    origin = e.data.get("origin")
    by: Cell = ((f"  [{origin}]", "magenta"),) if origin else ()
    return (
        (clock_text(e.wall), "bright_black"),
        (" ", ""),
        (f"{KIND_LABEL.get(kind, kind):<8}", KIND_STYLE.get(kind, "")),
        (" ", ""),
        (f"{e.backend or '·':<6}", "bold"),
        (" ", ""),
        (e.message, ""),
        *by,
    )


def event_text(e: Event) -> str:
    """What an event filter matches against."""
    origin = e.data.get("origin") or ""
    return f"{e.kind} {e.backend or ''} {e.message} {origin}".lower()
