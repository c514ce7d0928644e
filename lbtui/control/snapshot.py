"""``build_snapshot``: the balancer at one instant, read from its records and policy stats.

Nothing here counts: every figure is read from ``BackendRecord`` / ``BalancerRecord`` and the
``stats(now)`` of the breakers, health states, outlier detector and limiters (DESIGN.md: every
outcome is recorded once, and every view reads that record). Building a snapshot changes
nothing in the data plane except what reading does anyway (rolling windows drop old slots).

The balance figures are the problem statement's, per pool over its eligible backends
(``lbtui.core.balance``): imbalance L = Σᵢ |rᵢ − r̄ᵢ| with r̄ᵢ the weighted share of the total
rate (effective weights), and overload M = #{i : demandᵢ > max_rpsᵢ}. A backend's rate counts
every request sent to it, whichever pool it came through (pools that share backends see that
sum). The snapshot's ``imbalance`` is the pools' sum, ``overload`` the backends counted.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

from lbtui.balancer.pool import AdminState, Backend, Pool
from lbtui.balancer.proxy import Proxy
from lbtui.config.store import shown_store
from lbtui.control.faults import FaultLink
from lbtui.control.listening import ListenerView
from lbtui.control.model import (
    BackendView,
    BalancerTotals,
    BreakerView,
    HealthView,
    LimitsView,
    PoolView,
    ProcessView,
    RouteView,
    Snapshot,
    Windows,
    WorkerView,
    finite,
)
from lbtui.core.balance import Member, overloaded, pool_imbalance, pool_overload
from lbtui.core.balancing import Balancer
from lbtui.fleet.supervisor import Fleet

_OPEN = ("open", "forced_open")


def member_of(v: BackendView) -> Member:
    """What the balance figures need of one backend's view."""
    admitting = v.admin == AdminState.ACTIVE.value and (
        v.breaker is None or v.breaker.state not in _OPEN
    )
    return Member(
        rate=v.rps,
        weight=v.weight_effective,
        eligible=v.eligible,
        demand=v.demand_rps,
        max_rps=v.max_rps,
        admitting=admitting,
    )


def named_pools(proxy: Proxy) -> list[tuple[str, str | None, Pool]]:
    """Every group once (``default`` first) with the names of the routes that forward to it."""
    state = proxy.state
    named: list[tuple[str, str | None, Pool]] = []
    for pool in state.pools:
        via = [r.name for r in state.routes if any(p is pool for p, _ in r.forward)]
        named.append((pool.name, ", ".join(via) or None, pool))
    return named


def pool_views(proxy: Proxy, members: Mapping[str, Member]) -> list[PoolView]:
    """Each group's balance figures over its eligible backends, the default group first
    (``members`` by backend name; ``/metrics`` builds them from the records, the snapshot from
    its views: one computation for both)."""
    out: list[PoolView] = []
    for name, match, pool in named_pools(proxy):
        names = [b.name for b in pool.backends if b.name in members]
        group = [members[n] for n in names]
        live = [n for n, m in zip(names, group, strict=True) if m.counts(pool.panic)]
        out.append(
            PoolView(
                name=name,
                route=match,
                backends=names,
                eligible=live,
                panic=pool.panic,
                rps=sum(members[n].rate for n in live),
                imbalance=pool_imbalance(group, pool.panic),
                overload=pool_overload(group, pool.panic),
                algorithm=pool.algorithm,
                zone=pool.zone,
                spilling=pool.spilling,
                sticky=pool.sticky_cookie,
            )
        )
    return out


def route_views(proxy: Proxy) -> list[RouteView]:
    """The routes in evaluation order, with their forward weights as they are now."""
    out: list[RouteView] = []
    for r in proxy.state.routes:
        fixed = r.fixed
        action: Literal["forward", "redirect", "respond"] = (
            "forward" if fixed is None else "redirect" if 300 <= fixed.status < 400 else "respond"
        )
        out.append(RouteView(name=r.name, match=r.match, action=action, forward=r.weights()))
    return out


def overload_total(pools: Sequence[PoolView], members: Mapping[str, Member]) -> int:
    """M over the balancer: the backends over their cap in some pool, each counted once."""
    return sum(1 for n in {n for p in pools for n in p.eligible} if overloaded(members[n]))


ConnectionCount = Callable[[Backend, int], int]
"""``count(backend, in_flight)``: connections open to ``backend`` now."""


def connection_counter(proxy: Proxy) -> ConnectionCount | None:
    """How to count the connections open to each backend, or ``None`` when the upstream pool
    cannot be read (then in-flight stands in).

    The lean upstream answers ``open_connections(host, port)`` (idle plus in use) itself. For
    aiohttp's pool the idle connections are read from its connector and the ones in use are
    the requests in flight (each holds one; aiohttp counts in-use connections per host only
    with ``limit_per_host``)."""
    upstream = proxy.upstream
    public = getattr(upstream, "open_connections", None)
    if callable(public):
        peers = [p.connections for p in proxy.peer_records.values()]

        def ask(b: Backend, in_flight: int) -> int:
            return int(public(b.host, b.port)) + sum(c.get(b.name, 0) for c in peers)

        return ask
    session = getattr(upstream, "_session", None)
    pool = getattr(getattr(session, "connector", None), "_conns", None)
    if not isinstance(pool, Mapping):
        return None
    idle: dict[tuple[str, int], int] = {}
    for key, conns in list(pool.items()):
        host, port = getattr(key, "host", None), getattr(key, "port", None)
        if isinstance(host, str) and isinstance(port, int):
            idle[(host, port)] = idle.get((host, port), 0) + len(conns)

    def add(b: Backend, in_flight: int) -> int:
        return idle.get((b.host, b.port), 0) + in_flight

    return add


def scorer_for(proxy: Proxy) -> Balancer[Backend] | None:
    pool = proxy.default_pool
    return pool.balancer if pool.algorithm == "p2c_ewma" else None


def health_view(b: Backend, now: float) -> HealthView | None:
    """``b``'s active health as the state shows it (``None`` without health checks)."""
    if b.health is None:
        return None
    h = b.health.stats(now)
    return HealthView(
        state=h.state.value,
        since=h.since,
        reason=h.reason,
        consecutive_successes=h.consecutive_successes,
        consecutive_failures=h.consecutive_failures,
        last_check_ok=h.last_check_ok,
        last_check_detail=h.last_check_detail,
        slow_start_remaining_s=h.slow_start_remaining_s,
        slow_start_factor=h.slow_start_factor,
    )


def backend_view(
    proxy: Proxy,
    b: Backend,
    now: float,
    *,
    connections: ConnectionCount | None,
    scorer: Balancer[Backend] | None,
    process: ProcessView | None,
    faults: FaultLink | None,
) -> BackendView:
    rec = proxy.merged_backend_record(b)
    fig = rec.figures(now)
    breaker = None
    if b.breaker is not None:
        s = b.breaker.stats(now)
        breaker = BreakerView(
            state=s.state.value,
            since=s.since,
            reason=s.reason,
            window=s.window,
            window_size=s.window_size,
            calls=s.calls,
            failures=s.failures,
            slow_calls=s.slow_calls,
            failure_rate=s.failure_rate,
            slow_call_rate=s.slow_call_rate,
            failure_rate_threshold=s.failure_rate_threshold,
            slow_call_rate_threshold=s.slow_call_rate_threshold,
            slow_call_s=s.slow_call_s,
            min_calls=s.min_calls,
            retry_in_s=s.retry_in_s,
            half_open_permits=s.half_open_permits,
            times_opened=s.times_opened,
        )
    health = health_view(b, now)
    try:
        ej = proxy.outliers.stats(b.name, now)
        ejected, until, reason, times = ej.ejected, ej.ejected_until, ej.reason, ej.times_ejected
    except KeyError:  # removed between the listing and now
        ejected, until, reason, times = False, None, "never ejected", 0
    source: Literal["connector", "in_flight"] = "in_flight"
    conns = fig.in_flight
    if connections is not None:
        conns, source = connections(b, fig.in_flight), "connector"
    score = None
    if scorer is not None:
        score = {k: finite(v) for k, v in scorer.describe(b, now).items()}
    return BackendView(
        name=b.name,
        url=b.url,
        zone=b.zone,
        admin=b.admin.value,
        admin_since=b.admin_since,
        health=health,
        ejected=ejected,
        ejected_until=until,
        ejection_reason=reason,
        times_ejected=times,
        breaker=breaker,
        weight_configured=b.configured_weight,
        weight_effective=b.weight,
        max_rps=b.max_rps,
        in_flight=fig.in_flight,
        open_connections=conns,
        connections_source=source,
        rps=fig.rps,
        rps_series=fig.rps_series,
        p50_ms=fig.p50_ms,
        p90_ms=fig.p90_ms,
        p99_ms=fig.p99_ms,
        p999_ms=fig.p999_ms,
        error_ratio=fig.error_ratio,
        bytes_per_s=fig.bytes_per_s,
        requests_total=fig.requests_total,
        responses_total=fig.responses_total,
        failures_total=fig.failures_total,
        retries_total=rec.retries_total,
        bytes_in_total=fig.bytes_in_total,
        bytes_out_total=fig.bytes_out_total,
        fault=faults.view(b.name, now) if faults is not None else None,
        process=process,
        score=score,
        demand_rps=fig.demand_rps,
        refused_at_cap_total=fig.refused_at_cap_total,
        latency_samples=fig.latency_samples,
        eligible=(
            b.admin is AdminState.ACTIVE
            and not ejected
            and (breaker is None or breaker.state not in _OPEN)
            and (health is None or health.state == "up")
        ),
    )


def limits_view(proxy: Proxy, now: float) -> LimitsView:
    adm = proxy.admission
    bucket = adm.bucket.stats(now) if adm.bucket is not None else None
    clients = adm.clients.stats(now) if adm.clients is not None else None
    conc = adm.concurrency.stats()
    config = adm.config.model_dump()
    config["store"] = shown_store(config["store"])  # never the password
    return LimitsView(
        config=config,
        global_tokens=bucket.tokens if bucket is not None else None,
        global_allowed_total=bucket.allowed_total if bucket is not None else 0,
        global_rejected_total=bucket.rejected_total if bucket is not None else 0,
        clients=clients.keys if clients is not None else 0,
        client_rejected_total=clients.rejected_total if clients is not None else 0,
        client_evicted_total=clients.evicted_total if clients is not None else 0,
        in_flight=conc.in_flight,
        concurrency_rejected_total=conc.rejected_total,
        peak_in_flight=conc.peak_in_flight,
        **store_view(proxy),
    )


def store_view(proxy: Proxy) -> dict[str, Any]:
    """The limit store's part of :class:`LimitsView`: where, whether it answers, who shares."""
    store = proxy.state.limit_store
    if store is None:
        return {}
    return {
        "store": store.address.shown,
        "store_up": store.up,
        "replica": store.name,
        "peers": list(store.peers),
    }


def process_views(fleet: Fleet | None) -> dict[str, ProcessView]:
    if fleet is None:
        return {}
    return {
        p.name: ProcessView(
            pid=p.pid, alive=p.alive, cpu_percent=p.cpu_percent, rss_bytes=p.rss_bytes
        )
        for p in fleet.process_stats()
    }


def build_snapshot(
    proxy: Proxy,
    now: float | None = None,
    fleet: Fleet | None = None,
    *,
    faults: FaultLink | None = None,
    wall: float | None = None,
) -> Snapshot:
    """The balancer at ``now`` (its clock; read when ``None``); ``wall`` is Unix time then."""
    if now is None:
        now = proxy.clock()
    if wall is None:
        wall = time.time()
    connections = connection_counter(proxy)
    scorer = scorer_for(proxy)
    processes = process_views(fleet)
    views = [
        backend_view(
            proxy,
            b,
            now,
            connections=connections,
            scorer=scorer,
            process=processes.get(b.name),
            faults=faults,
        )
        for b in list(proxy.backends.values())
    ]
    return assemble(proxy, views, now, wall)


def assemble(
    proxy: Proxy,
    views: list[BackendView],
    now: float,
    wall: float,
    balance: tuple[dict[str, Member], list[PoolView]] | None = None,
) -> Snapshot:
    """The snapshot around backend ``views`` already read: the totals, limits and workers read
    now, and the balance figures computed from the views, or given as ``balance`` (members and
    pool views: ``statecache`` keeps them, with its views' JSON, while none has changed)."""
    t = proxy.merged_record().figures(now)
    totals = BalancerTotals(
        rps=t.rps,
        in_flight=t.in_flight,
        code_rps=t.code_rps,
        rate_limited_rps=t.rate_limited_rps,
        fallback_rps=t.fallback_rps,
        retries_rps=t.retries_rps,
        success_ratio=t.success_ratio,
        requests_total=t.requests_total,
        responses_total=t.responses_total,
        rate_limited_total=t.rate_limited_total,
        fallback_total=t.fallback_total,
        retries_total=t.retries_total,
        flags_total=t.flags_total,
        rps_series=t.rps_series,
    )
    if balance is None:
        members = {v.name: member_of(v) for v in views}
        balance = (members, pool_views(proxy, members))
    members, pools = balance
    return Snapshot(
        at=now,
        wall=wall,
        algorithm=proxy.default_pool.algorithm,
        totals=totals,
        limits=limits_view(proxy, now),
        imbalance=sum(p.imbalance for p in pools),
        overload=overload_total(pools, members),
        panic=proxy.default_pool.panic,
        backends=views,
        last_event_id=proxy.events.last_id,
        workers=worker_views(proxy),
        pools=pools,
        windows=Windows(),
        routes=route_views(proxy),
        listeners=listener_views(proxy),
    )


def listener_views(proxy: Proxy) -> list[ListenerView]:
    """The listeners this process serves, with their connections and tunnels now."""
    listeners = proxy.listeners
    if listeners is None:
        return []
    return [
        ListenerView(
            name=i.name,
            address=i.address,
            tls=i.tls,
            redirect_https=i.redirect_https,
            connections=i.connections,
            tunnels=i.tunnels,
            certificates=i.certificates,
        )
        for i in listeners.infos()
    ]


def worker_views(proxy: Proxy) -> list[WorkerView]:
    """The processes serving (empty for one): the primary first, then each worker, live or
    gone (a gone worker's last counts stay in the totals)."""
    count = proxy.config.listener.process_count
    if count < 2:
        return []
    rec = proxy.record
    views = [WorkerView(0, os.getpid(), True, rec.requests_total, rec.in_flight)]
    for index in range(1, count):
        peer = proxy.peer_records.get(index)
        pid = proxy.peer_pids.get(index)
        views.append(
            WorkerView(
                index,
                pid,
                pid is not None,
                peer.balancer.requests_total if peer is not None else 0,
                peer.balancer.in_flight if peer is not None else 0,
            )
        )
    return views
