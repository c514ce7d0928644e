"""Zone-aware routing (Envoy's, ELB's cross-zone attribute off): a group with
``cross_zone = false`` stays in the balancer's zone while that zone can take its traffic.

It spills to the other zones when the zone has no eligible backend for a request (the pick,
``attempt.py``), or when the share of the zone's active backends that are healthy and not
ejected falls below the panic threshold (``ejection.panic_percent``: judged here, whenever
the pools are refreshed, so a request pays a flag's read). Spilling starts and stops as one
``ZoneSpill`` event each, with the reason.
"""

from __future__ import annotations

from collections.abc import Callable

from lbtui.balancer.pool import AdminState, Pool
from lbtui.core.events import EventRing, ZoneSpill


def zone_degraded(
    pool: Pool, is_ejected: Callable[[str, float], bool], panic_percent: float, now: float
) -> bool:
    """Whether fewer than ``panic_percent`` of the zone's active members are available."""
    local = [b for b in pool.backends if b.zone == pool.zone and b.admin is AdminState.ACTIVE]
    if not local or panic_percent <= 0:
        return False
    up = sum(1 for b in local if b.healthy() and not is_ejected(b.name, now))
    return 100.0 * up / len(local) < panic_percent


def set_spilling(events: EventRing, pool: Pool, spilling: bool, now: float) -> None:
    """``pool`` starts or stops sending to the other zones: one event, with the reason."""
    pool.spilling = spilling
    zone = pool.zone or ""
    if spilling:
        why = (
            "too few of its backends there are available (below the panic threshold)"
            if pool.zone_degraded
            else "no eligible backend there"
        )
        message = f"group {pool.name} spills out of zone {zone}: {why}"
    else:
        message = f"group {pool.name} back in zone {zone}: its backends there can take it again"
    events.emit(ZoneSpill(message=message, group=pool.name, zone=zone, spilling=spilling), at=now)
