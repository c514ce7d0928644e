"""The groups and routes view, as pure functions from a ``Snapshot`` to rows of text.

ELB's console shows a listener's rules in order and each target group with its targets; this
is that, live: each target group with its algorithm, zone status (``spilling`` when a
zone-bound group has no eligible backend at home), stickiness, eligible backends, its share
of the traffic now, and its balance figures L and M; then the routes in evaluation order, each
with its forward weights as shares (a canary's 10 %). No Textual here, so it is unit-tested
without an app (STYLE.md, three layers of TUI tests).
"""

from __future__ import annotations

from lbtui.control.model import PoolView, RouteView, Snapshot
from lbtui.tui.numbers import rate_text

GROUP_HEADERS = ("group", "algorithm", "zone", "sticky", "up", "req/s", "share", "L", "M", "via")
ROUTE_HEADERS = ("#", "route", "matches", "action", "forward (share)")


def backend_groups(snapshot: Snapshot) -> dict[str, str]:
    """Each backend's named groups, comma-separated (the default group when it is every
    backend is left out: it says nothing)."""
    everyone = {b.name for b in snapshot.backends}
    out: dict[str, list[str]] = {}
    for p in snapshot.pools:
        if p.name == "default" and set(p.backends) == everyone:
            continue
        for name in p.backends:
            out.setdefault(name, []).append(p.name)
    return {name: ",".join(groups) for name, groups in out.items()}


def zone_text(p: PoolView) -> tuple[str, str]:
    """The zone cell and its style: where a zone-bound group is, and whether it spills."""
    if p.zone is None:
        return "all", ""
    if p.spilling:
        return f"{p.zone} SPILLING", "bold yellow"
    return p.zone, ""


def group_rows(snapshot: Snapshot) -> list[tuple[tuple[str, str], ...]]:
    """One row a group: ``(text, style)`` cells in ``GROUP_HEADERS`` order. The share is the
    group's part of the rates of all groups that routes forward to (or of the default)."""
    total = sum(p.rps for p in snapshot.pools if p.route is not None) or sum(
        p.rps for p in snapshot.pools
    )
    rows: list[tuple[tuple[str, str], ...]] = []
    for p in snapshot.pools:
        share = f"{100 * p.rps / total:.0f}%" if total > 0 else "—"
        up = f"{len(p.eligible)}/{len(p.backends)}"
        rows.append(
            (
                (p.name, "bold"),
                (p.algorithm or snapshot.algorithm, ""),
                zone_text(p),
                (p.sticky or "", "cyan" if p.sticky else ""),
                (up, "bold red" if len(p.eligible) < len(p.backends) else ""),
                (rate_text(p.rps), ""),
                (share, ""),
                (f"{p.imbalance:.1f}", ""),
                (str(p.overload), "bold red" if p.overload else ""),
                (p.route or "", "bright_black"),
            )
        )
    return rows


def forward_text(r: RouteView) -> str:
    """``stable 90 (90%) · canary 10 (10%)``; ``—`` for a redirect or a fixed response."""
    if not r.forward:
        return "—"
    total = sum(r.forward.values())
    parts = []
    for group, weight in r.forward.items():
        share = f"{100 * weight / total:.0f}%" if total > 0 else "0%"
        parts.append(f"{group} {weight:g} ({share})")
    return " · ".join(parts)


def route_rows(snapshot: Snapshot) -> list[tuple[str, ...]]:
    """One row a route, in evaluation order: ``ROUTE_HEADERS``."""
    return [
        (str(i + 1), r.name, r.match, r.action, forward_text(r))
        for i, r in enumerate(snapshot.routes)
    ]
