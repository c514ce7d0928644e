"""Several balancers' snapshots as one: what a console over a fleet of replicas shows.

Replicas keep their own breakers, ejections and figures and say what they see (DESIGN.md, the
second shape); the console sums them. The rules, one per kind of figure:

- **rates and counts sum** (req/s, in-flight, connections, bytes, requests, answers by class,
  failures, retries, the limiters' counters, the sparkline second by second). A backend's
  ``max_rps`` caps it on each balancer, so its fleet-wide cap is the sum of the caps (``None``
  if any balancer leaves it uncapped), and its demand sums too: M compares the two.
- **latency percentiles are the highest** of the balancers' (the state carries percentiles,
  not histograms, and percentiles cannot be added): the row's p99 is the worst p99 any balancer
  sees for that backend; the detail lists each.
- **shares are weighted by rate**: error ratio and success ratio are Σ ratioᵢ·rpsᵢ / Σ rpsᵢ.
- **states are the worst**: a backend disabled, down, ejected or with an open breaker on one
  balancer shows so, with that balancer's reason; weights are the first balancer's.
- **L and M are recomputed** over the summed rates (``lbtui.core.balance``), pool by pool, with
  the pools of the first balancer.

Only reachable balancers are summed: one that went away keeps its last snapshot beside the
merged one (``BalancerView``), shown greyed, and its share drops out of the sums.

Times: each balancer's monotonic clock is its own. A merged snapshot is on the console's clock
(``at``, ``wall`` given by the caller); every time taken from a balancer's view is moved onto
it through that balancer's ``wall - at`` (the same host: a shift of microseconds).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from lbtui.control.model import (
    BackendView,
    BalancerTotals,
    LimitsView,
    PoolView,
    Snapshot,
)
from lbtui.core.balance import Member, overloaded, pool_imbalance

ADMIN_RANK = {"active": 0, "draining": 1, "disabled": 2}
BREAKER_RANK = {"closed": 0, "disabled": 1, "half_open": 2, "forced_open": 3, "open": 4}


@dataclass(frozen=True, slots=True)
class BalancerView:
    """One balancer of the fleet a console watches, reachable or not."""

    name: str
    url: str
    reachable: bool
    problem: str
    """Why it cannot be reached now; empty while it can."""
    snapshot: Snapshot | None
    """Its own latest snapshot; while unreachable the last one it gave (None: never reached)."""
    age_s: float
    """Seconds since ``snapshot`` was taken (0 while reachable)."""


@dataclass(frozen=True, slots=True)
class Part:
    """One reachable balancer's snapshot and the shift that puts its times on the console's
    clock (``console.at - console.wall - (snapshot.at - snapshot.wall)``)."""

    name: str
    snapshot: Snapshot
    shift: float = 0.0


SHIFT_STEP_S = 0.01
"""Clock shifts are kept to this step: reading two clocks jitters by microseconds, and a shift
that stays the same from one snapshot to the next lets an unchanged row be reused."""


def clock_shift(snapshot: Snapshot, at: float, wall: float) -> float:
    """What to add to a time on ``snapshot``'s clock to have it on the clock of (at, wall),
    to ``SHIFT_STEP_S`` (0 for balancers on the console's host)."""
    shift = (at - wall) - (snapshot.at - snapshot.wall)
    return round(shift / SHIFT_STEP_S) * SHIFT_STEP_S


def _sum_dicts(ds: Iterable[dict[str, int]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for d in ds:
        for k, v in d.items():
            out[k] = out.get(k, 0) + v
    return out


def sum_rates(ds: Iterable[Mapping[str, float]]) -> dict[str, float]:
    """Rates by key, summed over ``ds``."""
    out: dict[str, float] = {}
    for d in ds:
        for k, v in d.items():
            out[k] = out.get(k, 0.0) + v
    return out


def sum_series(series: Sequence[Sequence[float]]) -> list[float]:
    """Series that end at the same second, summed second by second (aligned on the end)."""
    n = max((len(s) for s in series), default=0)
    padded = [s if len(s) == n else [0.0] * (n - len(s)) + list(s) for s in series]
    return list(map(sum, zip(*padded, strict=True)))


def _highest(values: Iterable[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return max(known) if known else None


def weighted_share(pairs: Sequence[tuple[float, float]], empty: float) -> float:
    """Σ shareᵢ·rateᵢ / Σ rateᵢ over ``(share, rate)`` pairs; ``empty`` when no rate."""
    total = sum(rate for _, rate in pairs)
    if total <= 0:
        return empty
    return sum(share * rate for share, rate in pairs) / total


def rebase(view: BackendView, shift: float) -> BackendView:
    """``view`` with its times moved by ``shift`` seconds (onto another clock)."""
    if shift == 0:
        return view
    health = view.health
    if health is not None:
        health = dataclasses.replace(health, since=health.since + shift)
    breaker = view.breaker
    if breaker is not None:
        breaker = dataclasses.replace(breaker, since=breaker.since + shift)
    fault = view.fault
    if fault is not None:
        fault = dataclasses.replace(fault, set_at=fault.set_at + shift)
    server = view.server
    if server is not None:
        server = dataclasses.replace(server, since=server.since + shift)
    until = view.ejected_until
    return dataclasses.replace(
        view,
        server=server,
        admin_since=view.admin_since + shift if view.admin_since else 0.0,
        health=health,
        breaker=breaker,
        fault=fault,
        ejected_until=None if until is None else until + shift,
    )


def _severity(v: BackendView) -> tuple[int, int, int, int]:
    return (
        ADMIN_RANK.get(v.admin, 0),
        1 if v.health is not None and v.health.state == "down" else 0,
        1 if v.ejected else 0,
        BREAKER_RANK.get(v.breaker.state, 0) if v.breaker is not None else 0,
    )


def merge_backend(views: Sequence[BackendView]) -> BackendView:
    """One backend as several balancers see it (views already on one clock). One pass over
    the views: a console over 3 balancers and 1,000 busy backends does this 1,000 times a
    refresh (``bench/multi_merge.py``)."""
    if len(views) == 1:
        return views[0]
    first = views[0]
    admin = down = ejected = breaker = fault = process = server = None
    admin_rank = breaker_rank = -1
    in_flight = conns = requests = retries = bytes_in = bytes_out = refused = samples = 0
    times_ejected = 0
    rps = weighted_err = worst_err = bytes_s = demand = cap = 0.0
    capped = connector = True
    eligible = False
    p50: list[float] = []
    p90: list[float] = []
    p99: list[float] = []
    p999: list[float] = []
    for v in views:
        rank = ADMIN_RANK.get(v.admin, 0)
        if rank > admin_rank:
            admin, admin_rank = v, rank
        if down is None and v.health is not None and v.health.state == "down":
            down = v
        if v.ejected and ejected is None:
            ejected = v
        times_ejected = max(times_ejected, v.times_ejected)
        if v.breaker is not None and (rank := BREAKER_RANK.get(v.breaker.state, 0)) > breaker_rank:
            breaker, breaker_rank = v.breaker, rank
        if v.fault is not None and (fault is None or (v.fault.active and not fault.active)):
            fault = v.fault
        process = process or v.process
        server = server or v.server
        if v.max_rps is None:
            capped = False
        else:
            cap += v.max_rps
        connector = connector and v.connections_source == "connector"
        eligible = eligible or v.eligible
        in_flight += v.in_flight
        conns += v.open_connections
        rps += v.rps
        weighted_err += v.error_ratio * v.rps
        worst_err = max(worst_err, v.error_ratio)
        bytes_s += v.bytes_per_s
        demand += v.demand_rps
        requests += v.requests_total
        retries += v.retries_total
        bytes_in += v.bytes_in_total
        bytes_out += v.bytes_out_total
        refused += v.refused_at_cap_total
        samples += v.latency_samples
        for known, value in ((p50, v.p50_ms), (p90, v.p90_ms), (p99, v.p99_ms), (p999, v.p999_ms)):
            if value is not None:
                known.append(value)
    assert admin is not None
    return dataclasses.replace(
        first,
        admin=admin.admin,
        admin_since=admin.admin_since,
        health=(down or first).health,
        ejected=ejected is not None,
        ejected_until=ejected.ejected_until if ejected is not None else None,
        ejection_reason=(ejected or first).ejection_reason,
        times_ejected=times_ejected,
        breaker=breaker,
        max_rps=cap if capped else None,
        in_flight=in_flight,
        open_connections=conns,
        connections_source="connector" if connector else "in_flight",
        rps=rps,
        rps_series=sum_series([v.rps_series for v in views]),
        p50_ms=max(p50) if p50 else None,
        p90_ms=max(p90) if p90 else None,
        p99_ms=max(p99) if p99 else None,
        p999_ms=max(p999) if p999 else None,
        error_ratio=weighted_err / rps if rps > 0 else worst_err,
        bytes_per_s=bytes_s,
        requests_total=requests,
        responses_total=_sum_dicts(v.responses_total for v in views),
        failures_total=_sum_dicts(v.failures_total for v in views),
        retries_total=retries,
        bytes_in_total=bytes_in,
        bytes_out_total=bytes_out,
        fault=fault,
        process=process,
        score=None,
        demand_rps=demand,
        refused_at_cap_total=refused,
        latency_samples=samples,
        eligible=eligible,
        server=server,
    )


def merge_totals(totals: Sequence[BalancerTotals]) -> BalancerTotals:
    return BalancerTotals(
        rps=sum(t.rps for t in totals),
        in_flight=sum(t.in_flight for t in totals),
        code_rps=sum_rates(t.code_rps for t in totals),
        rate_limited_rps=sum(t.rate_limited_rps for t in totals),
        fallback_rps=sum(t.fallback_rps for t in totals),
        retries_rps=sum(t.retries_rps for t in totals),
        success_ratio=weighted_share(
            [(t.success_ratio, t.rps) for t in totals], min(t.success_ratio for t in totals)
        ),
        requests_total=sum(t.requests_total for t in totals),
        responses_total=_sum_dicts(t.responses_total for t in totals),
        rate_limited_total=_sum_dicts(t.rate_limited_total for t in totals),
        fallback_total=_sum_dicts(t.fallback_total for t in totals),
        retries_total=sum(t.retries_total for t in totals),
        flags_total=_sum_dicts(t.flags_total for t in totals),
        rps_series=sum_series([t.rps_series for t in totals]),
    )


def merge_limits(limits: Sequence[LimitsView]) -> LimitsView:
    """The first balancer's configuration and store; counters summed (the peak too: an upper
    bound); the store is up only if every balancer reaches it; peers as any of them saw."""
    tokens = [lv.global_tokens for lv in limits if lv.global_tokens is not None]
    ups = [lv.store_up for lv in limits if lv.store_up is not None]
    return LimitsView(
        config=dict(limits[0].config),
        global_tokens=sum(tokens) if tokens else None,
        global_allowed_total=sum(lv.global_allowed_total for lv in limits),
        global_rejected_total=sum(lv.global_rejected_total for lv in limits),
        clients=sum(lv.clients for lv in limits),
        client_rejected_total=sum(lv.client_rejected_total for lv in limits),
        client_evicted_total=sum(lv.client_evicted_total for lv in limits),
        in_flight=sum(lv.in_flight for lv in limits),
        concurrency_rejected_total=sum(lv.concurrency_rejected_total for lv in limits),
        peak_in_flight=sum(lv.peak_in_flight for lv in limits),
        store=limits[0].store,
        store_up=all(ups) if ups else None,
        replica=None,
        peers=sorted({p for lv in limits for p in lv.peers}),
    )


def _pools(
    first: Snapshot, panics: dict[str, bool], backends: dict[str, BackendView]
) -> list[PoolView]:
    shapes = first.pools or [
        PoolView("default", None, list(backends), [], first.panic, 0.0, 0.0, 0)
    ]
    out = []
    for shape in shapes:
        views = [backends[n] for n in shape.backends if n in backends]
        panic = panics.get(shape.name, shape.panic)
        members = [_member(v) for v in views]
        eligible = [v.name for v in views if v.eligible]
        out.append(
            dataclasses.replace(
                shape,
                eligible=eligible,
                panic=panic,
                rps=sum(v.rps for v in views if v.eligible),
                imbalance=pool_imbalance(members, panic),
                overload=sum(1 for v in views if v.eligible and overloaded(_member(v))),
            )
        )
    return out


def _member(v: BackendView) -> Member:
    return Member(v.rps, v.weight_effective, v.eligible, v.demand_rps, v.max_rps)


class Merger:
    """Merges the fleet's snapshots poll after poll, reusing a backend's merged row while none
    of its views changed: ``HttpControl`` keeps the very view objects of the backends a delta
    answer did not mention, so with quiet backends only the rows that moved are merged again
    (and ``changed`` names them, for the table to redraw just those)."""

    def __init__(self) -> None:
        self._rows: dict[str, tuple[tuple[BackendView, ...], tuple[float, ...], BackendView]] = {}
        self.changed: frozenset[str] | None = None
        """The backends whose merged row is new since the previous merge; None: all."""

    def merge(
        self, parts: Sequence[Part], *, at: float, wall: float, last_event_id: int
    ) -> Snapshot:
        """The fleet as one snapshot, from the reachable balancers' ``parts`` (at least one)."""
        if not parts:
            raise ValueError("no snapshot to merge")
        grouped: dict[str, tuple[list[BackendView], list[float]]] = {}
        for part in parts:
            for view in part.snapshot.backends:
                views, shifts = grouped.setdefault(view.name, ([], []))
                views.append(view)
                shifts.append(part.shift)
        rows: dict[str, tuple[tuple[BackendView, ...], tuple[float, ...], BackendView]] = {}
        changed: set[str] = set()
        for name, (views, shifts) in grouped.items():
            key, moved = tuple(views), tuple(shifts)
            old = self._rows.get(name)
            if old is not None and old[1] == moved and _same(old[0], key):
                rows[name] = old
                continue
            merged = merge_backend([rebase(v, d) for v, d in zip(views, shifts, strict=True)])
            rows[name] = (key, moved, merged)
            changed.add(name)
        full = set(rows) != set(self._rows)
        self.changed = None if full else frozenset(changed)
        self._rows = rows
        return _assemble(parts, {n: r[2] for n, r in rows.items()}, at, wall, last_event_id)


def _same(a: tuple[BackendView, ...], b: tuple[BackendView, ...]) -> bool:
    return len(a) == len(b) and all(x is y for x, y in zip(a, b, strict=True))


def merge(parts: Sequence[Part], *, at: float, wall: float, last_event_id: int) -> Snapshot:
    """The fleet as one snapshot, from the reachable balancers' ``parts`` (at least one)."""
    return Merger().merge(parts, at=at, wall=wall, last_event_id=last_event_id)


def _assemble(
    parts: Sequence[Part],
    backends: dict[str, BackendView],
    at: float,
    wall: float,
    last_event_id: int,
) -> Snapshot:
    first = parts[0].snapshot
    panics: dict[str, bool] = {}
    for part in parts:
        for pool in part.snapshot.pools:
            panics[pool.name] = panics.get(pool.name, False) or pool.panic
    pools = _pools(first, panics, backends)
    over = {
        n for p in pools for n in p.eligible if n in backends and overloaded(_member(backends[n]))
    }
    algorithms = list(dict.fromkeys(p.snapshot.algorithm for p in parts))
    sources = list(dict.fromkeys(p.snapshot.source for p in parts))
    unavailable: dict[str, str] = {}
    for part in parts:  # what one balancer cannot do, an action sent to all cannot either
        for kind, why in part.snapshot.unavailable.items():
            unavailable.setdefault(kind, f"{part.name}: {why}")
    return Snapshot(
        at=at,
        wall=wall,
        algorithm=algorithms[0] if len(algorithms) == 1 else "mixed: " + ", ".join(algorithms),
        totals=merge_totals([p.snapshot.totals for p in parts]),
        limits=merge_limits([p.snapshot.limits for p in parts]),
        imbalance=sum(p.imbalance for p in pools),
        overload=len(over),
        panic=any(p.snapshot.panic for p in parts),
        backends=list(backends.values()),
        last_event_id=last_event_id,
        pools=pools,
        windows=first.windows,
        source=sources[0] if len(sources) == 1 else "mixed: " + ", ".join(sources),
        frontends=[f for p in parts for f in p.snapshot.frontends],
        unavailable=unavailable,
    )
