"""The detail pane: one backend, its history, and the reason for every state it is in."""

from __future__ import annotations

from collections.abc import Sequence

from rich.console import Group
from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.widgets import Static

from lbtui.control.model import BackendView, Event, Snapshot
from lbtui.tui.history import LatencyHistory
from lbtui.tui.view import (
    breaker_window,
    clock_text,
    event_segments,
    human_bytes,
    ms_text,
    num,
    rate_text,
    score_text,
    sparkline,
    state_cell,
    state_reasons,
    wall_of,
    weight_text,
)

RECENT_EVENTS = 8
LABEL_W = 9


def _counts(d: dict[str, int]) -> str:
    return " ".join(f"{k} {v}" for k, v in sorted(d.items()) if v) or "none"


def _plot(
    text: Text, label: str, values: Sequence[float], width: int, span: str, unit: str
) -> None:
    text.append(f"{label:<{LABEL_W}}", "bold")
    line = sparkline(values, width)
    text.append(f"{line:<{width}}", "cyan")
    now = values[-1] if values else 0.0
    hi = max(values, default=0.0)
    fmt = rate_text if unit == "req/s" else ms_text
    text.append(f"  now {fmt(now):>5}  max {fmt(hi):>5} {unit:<5}", "")
    text.append(f" {span}\n", "bright_black")


def build_detail(
    b: BackendView,
    snapshot: Snapshot,
    history: LatencyHistory,
    events: Sequence[Event],
    width: int = 90,
) -> Group:
    """Everything the pane shows about ``b`` (pure, so tests and screenshots share it)."""
    head = Text(no_wrap=True, overflow="ellipsis")
    head.append(f" {b.name} ", "bold reverse")
    head.append("  ")
    head.append_text(Text.assemble(*state_cell(b)))
    head.append(f"  {b.url}", "bright_black")
    if b.zone:
        head.append(f"  zone {b.zone}", "bright_black")

    plots = Text(no_wrap=True, overflow="crop")
    plot_w = max(10, min(120, width - LABEL_W - 38))
    _plot(plots, "req/s", b.rps_series, plot_w, "60 s", "req/s")
    _plot(plots, "p50 ms", history.p50(b.name), plot_w, "2 min", "ms")
    _plot(plots, "p99 ms", history.p99(b.name), plot_w, "2 min", "ms")
    plots.rstrip()

    why = Table.grid(padding=(0, 1), expand=True)
    why.add_column(width=12, no_wrap=True)
    why.add_column(ratio=1)
    reasons = state_reasons(b, snapshot)
    for r in reasons:
        why.add_row(Text(r.title, r.style), Text(r.text))
    if not reasons:
        why.add_row(
            Text("● SERVING", "green"),
            Text("normally — no fault, breaker closed, not ejected", "bright_black"),
        )

    facts = Table.grid(padding=(0, 1), expand=True)
    facts.add_column(width=LABEL_W - 1, no_wrap=True, style="bright_black")
    facts.add_column(ratio=1)

    cap = f" · max_rps {num(b.max_rps)}" if b.max_rps is not None else ""
    facts.add_row(
        "weight",
        f"{weight_text(b)} effective/configured{cap} · in-flight {b.in_flight}"
        f" · conns {b.open_connections} ({b.connections_source})",
    )
    facts.add_row(
        "latency",
        f"p50 {ms_text(b.p50_ms)} · p90 {ms_text(b.p90_ms)} · p99 {ms_text(b.p99_ms)}"
        f" · p99.9 {ms_text(b.p999_ms)} ms · {human_bytes(b.bytes_per_s)}/s",
    )
    facts.add_row(
        "totals",
        f"{b.requests_total} requests · {_counts(b.responses_total)} · failures "
        f"{_counts(b.failures_total)} · retries {b.retries_total}",
    )
    if b.breaker is not None:
        facts.add_row("breaker", breaker_window(b.breaker))
    if b.health is not None:
        h = b.health
        since = clock_text(wall_of(snapshot, h.since))
        if h.last_check_ok is None:
            last = "no check yet"
        elif h.last_check_ok:
            last = "last check ok"
        else:
            last = f"last check failed: {h.last_check_detail}"
        facts.add_row("health", f"{h.state} since {since} — {h.reason}; {last}")
    if b.score is not None:
        facts.add_row("score", f"{snapshot.algorithm}: {score_text(b.score)}")
    if b.process is not None:
        p = b.process
        alive = "alive" if p.alive else "dead"
        facts.add_row(
            "process",
            f"pid {p.pid} {alive} · cpu {p.cpu_percent:.0f} % · rss {human_bytes(p.rss_bytes)}",
        )

    recent = Text(no_wrap=True, overflow="ellipsis")
    recent.append("recent events\n", "bold")
    mine = [e for e in events if e.backend == b.name][-RECENT_EVENTS:]
    if not mine:
        recent.append("  none yet", "bright_black")
    for i, e in enumerate(reversed(mine)):
        recent.append("  ")
        recent.append_text(Text.assemble(*event_segments(e)))
        if i < len(mine) - 1:
            recent.append("\n")
    return Group(head, plots, why, facts, recent)


class BackendDetail(VerticalScroll):
    """Shows the backend selected in the table; scrolls when it is long."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self._body = Static("select a backend", id="detail-body")

    def compose(self) -> ComposeResult:
        yield self._body

    def show(
        self,
        snapshot: Snapshot | None,
        name: str | None,
        history: LatencyHistory,
        events: Sequence[Event],
    ) -> None:
        body = self._body
        if snapshot is None or name is None:
            body.update(Text("no backend selected", "bright_black"))
            return
        try:
            b = snapshot.backend(name)
        except KeyError:
            body.update(Text(f"{name} is gone", "bright_black"))
            return
        width = self.scrollable_content_region.width or 90
        body.update(build_detail(b, snapshot, history, events, width))
