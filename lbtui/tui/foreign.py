"""How the console shows a foreign balancer (HAProxy) in its own words: pure view functions.

A server of HAProxy has figures lbtui's model has not (its status word with a since-time, the
last check's code and duration, the queue, error counters) and lacks some lbtui has (breaker,
fault, percentiles). Rather than a second table, the same columns take HAProxy's figures where
lbtui's have no meaning there — the breaker column shows the check (``L4CON 1ms``), the fault
column the queue and error rates — and their headers say so (``SOURCE_LABELS``); what has no
figure at all reads ``—``. The frontends panel and the detail lines are built here too.
"""

from __future__ import annotations

from rich.text import Text

from lbtui.control.model import BackendView, FrontendView, Snapshot
from lbtui.tui.numbers import NO_SAMPLES, ms_text, num, percent_text, rate_text

Segment = tuple[str, str]
Cell = tuple[Segment, ...]

SOURCE_LABELS: dict[str, dict[str, str]] = {
    "haproxy": {"breaker": "check", "fault": "queue · errors/s", "in_flight": "scur"},
    "prometheus": {"breaker": "—", "fault": "—"},
}
"""Column headers that a source's figures replace (``view.COLUMNS`` keys); ``—`` heads a
column the source has no figure for (Prometheus: no breaker, no fault)."""
SOURCE_WIDTHS: dict[str, dict[str, int]] = {"haproxy": {"name": 18}, "prometheus": {"name": 18}}
"""Wider columns for a source's longer values (``be_app/api-1``)."""

STATUS_STYLE = {
    "UP": "green",
    "DOWN": "bold red",
    "MAINT": "bright_black",
    "DRAIN": "yellow",
    "NOLB": "yellow",
    "no": "green",
}


def column_label(source: str, key: str, default: str) -> str:
    return SOURCE_LABELS.get(source.split(":")[0], {}).get(key, default)


def column_min_width(source: str, key: str, default: int) -> int:
    return SOURCE_WIDTHS.get(source.split(":")[0], {}).get(key, default)


def short_age(seconds: float) -> str:
    """``12s``, ``5m``, ``3h``, ``2d``: a since-time that fits a table cell."""
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m"
    if s < 86400:
        return f"{s // 3600}h"
    return f"{s // 86400}d"


def status_cell(b: BackendView, at: float | None) -> Cell:
    """HAProxy's status word and how long it has held: ``UP 3m``, ``DOWN 12s``, ``UP 1/3``."""
    assert b.server is not None
    status = b.server.status or "?"
    word = status.split(" ")[0]
    style = STATUS_STYLE.get(word, "")
    if word == "UP" and " " in status:
        style = "yellow"  # going down: failed checks counted
    age = "" if at is None else " " + short_age(at - b.server.since)
    return ((status, style), (age, "bright_black"))


def check_cell(b: BackendView) -> Cell:
    """``L4OK 1ms``, ``L4CON 0ms`` (red), ``—`` for a server without checks."""
    s = b.server
    assert s is not None
    if s.check_status is None:
        return ((NO_SAMPLES, "bright_black"),)
    ok = s.check_status.endswith(("OK", "OKC", "OKD"))
    duration = "" if s.check_duration_ms is None else f" {num(s.check_duration_ms)}ms"
    return ((s.check_status, "green" if ok else "bold red"), (duration, "bright_black"))


def queue_cell(b: BackendView) -> Cell:
    """``q 0`` then the error rates that are not 0: ``q 3  con 2/s 5xx 1/s``."""
    s = b.server
    assert s is not None
    out: list[Segment] = [(f"q {s.queue}", "bold yellow" if s.queue else "")]
    for key, label in (("connect", "con"), ("response", "resp"), ("5xx", "5xx")):
        rate = s.error_rates.get(key, 0.0)
        if rate > 0:
            out.append((f"  {label} {rate_text(rate)}/s", "red"))
    return tuple(out)


def detail_lines(b: BackendView, at: float) -> list[str]:
    """The detail pane's lines for a server: status, check, queue, errors, HAProxy's averages."""
    s = b.server
    assert s is not None
    lines = [
        f"HAProxy {s.group}: {s.status} for {short_age(at - s.since)}",
        "check: "
        + (
            "none configured"
            if s.check_status is None
            else f"{s.check_status} {s.check_detail} ({ms_text(s.check_duration_ms)} ms)"
        ),
        f"queue {s.queue}; errors/s: "
        + ", ".join(f"{k} {rate_text(v)}" for k, v in s.error_rates.items()),
    ]
    if s.average_ms:
        avg = ", ".join(f"{k} {num(v)}" for k, v in s.average_ms.items())
        lines.append(f"averages over HAProxy's last 1,024 requests (ms, not percentiles): {avg}")
    return lines


def frontend_line(f: FrontendView) -> Text:
    text = Text(no_wrap=True)
    style = "green" if f.status == "OPEN" else "bold red"
    text.append(f"{f.name:<14.14}", "bold")
    text.append(f" {f.status:<5}", style)
    text.append(f" {rate_text(f.rps):>6} req/s", "")
    text.append(f" {f.connections:>4} conn", "")
    text.append(f" {rate_text(f.connection_rate):>5} conn/s", "bright_black")
    if f.error_ratio > 0:
        text.append(f" err {percent_text(f.error_ratio)}", "bold red")
    return text


def frontends_text(snapshot: Snapshot) -> Text:
    """The frontends panel: one line each (request rate, connections, errors)."""
    out = Text(no_wrap=True)
    out.append("frontends\n", "bold")
    for i, f in enumerate(snapshot.frontends):
        if i:
            out.append("\n")
        out.append_text(frontend_line(f))
    return out
