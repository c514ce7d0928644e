"""The header's figures: the balancer-wide totals, fitted to the terminal's width by dropping
the optional ones first, the limits in force, and whether the attach target is local. Pure,
from the snapshot: the widget (``lbtui.tui.widgets.totals``) only lays them out.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from lbtui.control.model import Snapshot
from lbtui.tui.numbers import (
    num,
    rate_text,
)
from lbtui.tui.view import window_text

# --- header ------------------------------------------------------------------------------------


def is_loopback_target(target: str) -> bool:
    """Whether an attach target (a URL, or ``in-process``) stays on this machine."""
    if "://" not in target or target.startswith("unix://"):
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
    if s.source != "lbtui":  # a foreign balancer: no lbtui limiter, fallback or retry budget
        return [
            Figure(rate, rate_text(t.rps), "bold", short="req/s"),
            Figure("in-flight", str(t.in_flight), priority=3),
            Figure("success", f"{success:.1f} %", succ_style),
            Figure("imbalance L", f"{s.imbalance:.1f}", "", short="L"),
        ]
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
