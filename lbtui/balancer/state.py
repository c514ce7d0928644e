"""The balancer's live state: its backends, pools and routes, and what changes them.

Every other part of the data plane reads this one object: the pipeline (``pipeline.py``,
``attempt.py``) to route, pick and record; operator actions (``operator.py``) to change it;
replication (``replication.py``) to adopt what another process saw; the control plane to show
it. What changes a backend's standing — a breaker transition, a health flip, an ejection, an
attempt's outcome — comes through here, so that the pools' panic mode and the set of pools
where every backend may take a request (``clear_pools``, a shortcut for the pick) are
recomputed in one place, and every change is one event.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, cast

from lbtui.balancer.admission import Admission
from lbtui.balancer.exchange import ClientRequest
from lbtui.balancer.fallback import Fallback
from lbtui.balancer.pool import AdminState, Backend, Pool, breaker_config, cap_bucket
from lbtui.balancer.routing import Route, build_routes, group_pool, shape
from lbtui.balancer.zones import zone_degraded
from lbtui.config import BackendConfig, BreakerOverride, Config, HealthConfig
from lbtui.config.store import parse_store
from lbtui.core import health as core_health
from lbtui.core.balancing import Balancer
from lbtui.core.breaker import OPERATOR_REASON, BreakerState, CircuitBreaker, Transition
from lbtui.core.ejection import EjectionConfig as CoreEjectionConfig
from lbtui.core.ejection import EjectionEvent, EjectionKind, OutlierDetector
from lbtui.core.events import (
    BreakerChanged,
    ConfigNote,
    EjectionChanged,
    EventRing,
    HealthChanged,
    PanicChanged,
)
from lbtui.core.faults import Faults
from lbtui.core.record import BackendRecord, BalancerRecord
from lbtui.core.routing import Router

if TYPE_CHECKING:
    from lbtui.balancer.redis_store import RedisLimits
    from lbtui.balancer.shared import SharedLimits

WEIGHT_BLIND = frozenset({"round_robin", "ip_hash", "consistent_hash"})
"""Algorithms that do not follow effective weights, so slow start cannot ramp them."""
HASHING = frozenset({"ip_hash", "consistent_hash"})
EPISODE_QUIET_S: Final = 5.0
"""A rate-limit or fallback episode is reported as an event when it starts after this long
without one: events tell when something began, counters tell how much."""
_ADMITTING = (BreakerState.CLOSED, BreakerState.DISABLED)
"""Breaker states that admit every call, whatever the time."""
_SYNCED = (BreakerState.OPEN, BreakerState.CLOSED)
"""Breaker transitions the other processes adopt; half-open follows from the shared deadline."""
_IGNORES_FEEDBACK = Balancer.observe
"""The base ``observe``: an algorithm that keeps it needs no feedback."""

SyncMessage = tuple[Any, ...]
"""A breaker transition or an ejection made here by traffic, for the other processes:
``("breaker", name, state, open_until, reason, at)`` or ``("eject", name, until, times,
reason)`` (``replication.py`` adopts them)."""


def health_core_config(h: HealthConfig) -> core_health.HealthConfig:
    return core_health.HealthConfig(
        path=h.path,
        interval_s=h.interval_ms / 1e3,
        timeout_s=h.effective_timeout_ms / 1e3,
        rise=h.rise,
        fall=h.fall,
        expect_status=h.expect_status,
        slow_start_s=h.slow_start_s,
    )


def limit_store(
    config: Config, events: EventRing, clock: Callable[[], float]
) -> RedisLimits | None:
    """The Redis store ``[limits] store`` names, if it names one (redis-py is imported then)."""
    address = parse_store(config.limits.store)
    if address is None:
        return None
    from lbtui.balancer.redis_store import RedisLimits

    return RedisLimits(config.limits, address, emit=events.emit, clock=clock)


class State:
    """Backends, pools, routes, and the records, events and policies that go with them."""

    def __init__(
        self,
        config: Config,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        shared: SharedLimits | None = None,
    ) -> None:
        self.config = config
        self.clock = clock
        self.shared = shared
        """Limiter state in shared memory when several processes serve (``workers``)."""
        self.on_sync: Callable[[SyncMessage], None] | None = None
        """Set when several processes serve: a breaker trip or close, or an ejection, made
        here by traffic, to be adopted by the other processes."""
        self.adopting = False
        """A change another process made is being adopted: it is not sent back."""
        now = clock()
        self.events = EventRing(clock=clock, wall_clock=wall_clock)
        self.limit_store = limit_store(config, self.events, clock)
        """The shared limit store when ``[limits] store`` names Redis (started by the server
        once the listener's address is known)."""
        self.record = BalancerRecord(now)
        self.faults = Faults()
        self.backends: dict[str, Backend] = {}
        self.clear_pools: set[Pool] = set()
        """Pools whose every backend can take a request now, plainly (healthy, not ejected,
        breaker closed or disabled, no rate cap): a pick there needs no eligibility check."""
        e = config.ejection
        self.outliers = OutlierDetector(
            CoreEjectionConfig(
                consecutive_failures=e.consecutive_failures,
                base_s=e.base_s,
                max_s=e.max_s,
                max_percent=e.max_percent,
                panic_percent=e.panic_percent,
            ),
            [],
        )
        self.group_breakers: dict[str, BreakerOverride] = {}
        """A backend's group's changes to ``[breaker]`` (the first group that has some)."""
        self.group_health: dict[str, HealthConfig] = {}
        """A backend's group's ``health`` table, instead of ``[health]`` (the first group's)."""
        self.joined: dict[str, list[str]] = {}
        """Backends added to a group at run time (admin API, discovery), by group: a reload
        keeps them in it."""
        self._group_tables()
        for bc in config.backends:
            self.add(Backend.from_config(bc), now)
        algorithm = config.balancer.algorithm
        self.zone = config.balancer.zone
        self.algorithm: str = algorithm
        """The balancer's algorithm: every group's but those that name their own."""
        self.default_pool = Pool(list(self.backends.values()), algorithm)
        """Where requests no route matches go: the group named ``default``, else every backend
        (the same object for the balancer's life: a reload reshapes it)."""
        self.groups: dict[str, Pool] = {}
        """The named target groups (``[[groups]]``)."""
        self.fallback: Fallback | None = None
        self.routes: list[Route] = []
        """The routes in evaluation order (``priority``, then file order)."""
        self.router: Router | None = None
        self.no_group = Pool([], algorithm, name="(none)")
        """Where a route whose forward weights are all 0 sends: nowhere (its fallback)."""
        self.hash_kind = ""
        self.hash_name = ""
        self.key_from_ip = False
        self.stale_wanted = False
        self.configure_routing()
        self.admission = Admission(config.limits, now, shared, store=self.limit_store)
        self.failure_statuses: frozenset[int] | None = None
        """Statuses that count as failures (None: every 5xx)."""
        self.configure_failures()
        self.flags_header = config.proxy.response_flags_header
        self.episodes: dict[str, float] = {}
        self.refresh_pools(now)
        if config.health.enabled and config.health.slow_start_s > 0 and algorithm in WEIGHT_BLIND:
            self.events.emit(
                ConfigNote(
                    message=f"slow start has no effect with {algorithm}, which ignores weights; "
                    "use weighted_round_robin, least_request or p2c_ewma to ramp recovered "
                    "backends"
                )
            )

    # -- membership --------------------------------------------------------------------------

    def add(self, backend: Backend, now: float, bc: BackendConfig | None = None) -> None:
        """Give ``backend`` its breaker, rate cap and health state, and make it a member."""
        self.arm_breaker(backend, now, bc)
        backend.cap = cap_bucket(backend.name, backend.max_rps, now, self.shared, self.limit_store)
        backend.record = BackendRecord(now)  # its rates divide by the time since now at first
        self.arm_health(backend, now)
        backend.refresh(now)
        self.backends[backend.name] = backend
        self.outliers.set_members(list(self.backends))

    def arm_breaker(self, backend: Backend, now: float, bc: BackendConfig | None = None) -> None:
        """A new breaker for ``backend`` from the ``[breaker]`` table and its override (at
        start, for a backend added, and when a reload changes either)."""
        cfg = self.config
        if bc is None:
            bc = next((b for b in cfg.backends if b.name == backend.name), None)
        enabled = cfg.breaker.enabled
        group = self.group_breakers.get(backend.name)
        if group is not None and group.enabled is not None:
            enabled = group.enabled
        backend.breaker = CircuitBreaker(
            breaker_config(cfg.breaker, bc, group), now, listener=self._on_breaker(backend.name)
        )
        if bc is not None and bc.breaker is not None and bc.breaker.enabled is not None:
            enabled = bc.breaker.enabled
        backend.breaker_enabled = enabled
        if not enabled:
            backend.breaker.force("disabled", now)

    def health_for(self, name: str) -> HealthConfig:
        """The health-check settings of backend ``name``: its group's, else ``[health]``."""
        return self.group_health.get(name, self.config.health)

    def _group_tables(self) -> None:
        """Each backend's group breaker changes and health table (the first group's)."""
        self.group_breakers = {}
        self.group_health = {}
        for g in self.config.groups:
            names = [*g.backends, *self.joined.get(g.name, ())]
            for n in names:
                if g.breaker is not None:
                    self.group_breakers.setdefault(n, g.breaker)
                if g.health is not None:
                    self.group_health.setdefault(n, g.health)

    def arm_health(self, backend: Backend, now: float) -> None:
        """``backend``'s health state from its group's ``health`` or ``[health]`` (None when
        checks are off)."""
        h = self.health_for(backend.name)
        backend.health = (
            core_health.HealthState(
                health_core_config(h), now, listener=self._on_health(backend.name)
            )
            if h.enabled
            else None
        )

    def configure_routing(self) -> None:
        """Groups, routes, fallbacks and the hash key from the config (at start and on a
        reload); the groups' pools are new (but ``default``'s, reshaped), their members the
        backends of the same names."""
        config = self.config
        algorithm = self.algorithm
        self._group_tables()
        groups: dict[str, Pool] = {}
        default = self.default_pool
        for g in config.groups:
            names = dict.fromkeys([*g.backends, *self.joined.get(g.name, ())])
            members = [self.backends[n] for n in names if n in self.backends]
            if g.name == "default":
                shape(default, g, algorithm, config.balancer.zone)
                default.set_backends(members)
                groups[g.name] = default
            else:
                groups[g.name] = group_pool(g, members, algorithm, config.balancer.zone)
        if "default" not in groups and default.name == "default" and self.groups.get("default"):
            # the default group left the file: every backend again, the balancer's algorithm
            default.sticky_cookie = None
            default.zone = None
            default.own_algorithm = False
            default.set_backends(list(self.backends.values()))
            if default.algorithm != algorithm:
                default.set_algorithm(algorithm)
        self.groups = groups
        base = Path(config.base_dir) if config.base_dir else None
        self.fallback = Fallback(config.fallback, base) if config.fallback else None
        self.routes, self.router = build_routes(
            config.routes,
            groups,
            lambda i, rc: Pool(
                [self.backends[n] for n in rc.backends or () if n in self.backends],
                algorithm,
                name=f"routes[{i}]",
            ),
            lambda rc: Fallback(rc.fallback, base) if rc.fallback else self.fallback,
        )
        hash_on = config.balancer.hash_on
        self.hash_kind, _, self.hash_name = hash_on.partition(":")
        self.key_from_ip = algorithm == "ip_hash" or hash_on == "client_ip"
        self.stale_wanted = any(
            fb is not None and fb.keeps_stale
            for fb in [self.fallback, *(rt.fallback for rt in self.routes)]
        )

    def configure_failures(self) -> None:
        fs = self.config.breaker.failure_statuses
        self.failure_statuses = frozenset(fs) if fs is not None else None

    def backend(self, name: str) -> Backend:
        try:
            return self.backends[name]
        except KeyError:
            raise KeyError(f"no backend named {name!r}") from None

    @property
    def pools(self) -> list[Pool]:
        """Every pool once: the default one, the named groups, the routes' unnamed ones."""
        out = [self.default_pool]
        for pool in [*self.groups.values(), *(p for r in self.routes for p, _ in r.forward)]:
            if pool not in out:
                out.append(pool)
        return out

    # -- what changes a backend's standing -----------------------------------------------------

    def _on_breaker(self, name: str) -> Callable[[Transition], None]:
        def emit(t: Transition) -> None:
            if hasattr(self, "default_pool"):  # not while the state is being built
                self.update_clear(t.at)
            if self.adopting:
                return  # the process that made it tells
            if (
                self.on_sync is not None
                and t.new in _SYNCED
                and t.reason != OPERATOR_REASON
                and name in self.backends
            ):
                breaker = self.backends[name].breaker
                until = breaker.open_until if breaker is not None else None
                self.on_sync(("breaker", name, t.new.value, until, t.reason, t.at))
            self.events.emit(
                BreakerChanged(
                    backend=name,
                    message=f"breaker {t.old.value} → {t.new.value}: {t.reason}",
                    old=t.old.value,
                    new=t.new.value,
                ),
                at=t.at,
            )

        return emit

    def _on_health(self, name: str) -> Callable[[core_health.HealthTransition], None]:
        def emit(t: core_health.HealthTransition) -> None:
            self.events.emit(
                HealthChanged(
                    backend=name,
                    message=f"health {t.old.value} → {t.new.value}: {t.reason}",
                    old=t.old.value,
                    new=t.new.value,
                ),
                at=t.at,
            )
            if t.new is core_health.HealthStatus.UP:
                # Envoy: a passing active check un-ejects the host.
                ev = self.outliers.readmit(
                    name, t.at, "readmitted early: active health checks pass again"
                )
                if ev is not None:
                    self.emit_ejection(ev)
            self.refresh_pools(t.at)

        return emit

    def emit_ejection(self, ev: EjectionEvent) -> None:
        if (
            self.on_sync is not None
            and ev.kind is EjectionKind.EJECTED
            and ev.until is not None
            and not self.adopting
        ):
            times = self.outliers.stats(ev.name, ev.at).times_ejected
            self.on_sync(("eject", ev.name, ev.until, times, ev.reason))
        self.events.emit(
            EjectionChanged(
                backend=ev.name,
                message=f"{ev.kind.replace('_', ' ')}: {ev.reason}",
                change=ev.kind.value,
                until=ev.until,
            ),
            at=ev.at,
        )

    def outcome(
        self, backend: Backend, pool: Pool, failure: bool, duration: float, now: float
    ) -> None:
        """Feed one attempt's outcome to the breaker, the outlier detector and the algorithm."""
        if backend.breaker is not None:
            backend.breaker.record(failure, duration, now)
        ev = self.outliers.record(backend.name, failure, now)
        if ev is not None:
            self.emit_ejection(ev)
            self.refresh_pools(now)
        balancer = pool.balancer
        if type(balancer).observe is not _IGNORES_FEEDBACK:
            balancer.observe(backend, duration, not failure, now)

    def is_failure(self, status: int) -> bool:
        """Whether a backend's answer counts against it (breaker, ejection, algorithm)."""
        fs = self.failure_statuses
        return status >= 500 if fs is None else status in fs

    def update_clear(self, now: float) -> None:
        outliers = self.outliers
        self.clear_pools = {
            pool
            for pool in self.pools
            if pool.zone is None
            and all(
                b.cap is None
                and b.healthy()
                and (b.breaker is None or b.breaker.state in _ADMITTING)
                and not outliers.is_ejected(b.name, now)
                for b in pool.backends
            )
        }

    def refresh_pools(self, now: float) -> None:
        """Effective weights, panic mode and the clear pools, after anything changed."""
        for b in self.backends.values():
            b.refresh(now)
        panic_pct = self.config.ejection.panic_percent
        for pool in self.pools:
            members = pool.backends
            available = sum(
                1
                for b in members
                if b.admin is AdminState.ACTIVE
                and b.healthy()
                and not self.outliers.is_ejected(b.name, now)
            )
            active = sum(1 for b in members if b.admin is AdminState.ACTIVE)
            panic = self.outliers.panic(available, active) if active else False
            if panic != pool.panic:
                pool.panic = panic
                state = "entered" if panic else "left"
                self.events.emit(
                    PanicChanged(
                        message=f"pool {state} panic mode: {available} of {active} backends "
                        "available",
                        available=available,
                        total=active,
                    )
                )
            if pool.zone is not None:
                pool.zone_degraded = zone_degraded(pool, self.outliers.is_ejected, panic_pct, now)
        self.update_clear(now)

    def tick(self, on_fault_end: Callable[[float], None]) -> None:
        """Periodic upkeep (a few times a second): readmissions, slow-start weights, panic;
        ``on_fault_end(now)`` expires the faults whose time is up."""
        now = self.clock()
        for ev in self.outliers.tick(now):
            self.emit_ejection(ev)
        on_fault_end(now)
        self.refresh_pools(now)

    # -- routing -------------------------------------------------------------------------------

    def route(self, client: ClientRequest) -> Route | None:
        """The route the request matches (None: the default group takes it)."""
        router = self.router
        if router is None:
            return None
        rule = router.match(client.host, client.path, client.method, client)
        return cast(Route, rule.target) if rule is not None else None

    def key(self, client: ClientRequest) -> str | None:
        """The request's hash key, for the hashing algorithms."""
        if self.key_from_ip:
            return client.remote
        if self.hash_kind == "header":
            return client.headers.get(self.hash_name)
        return client.cookie(self.hash_name)

    def episode(self, key: str, now: float) -> bool:
        """Whether something that happens to many requests (``key``) starts an episode now."""
        last = self.episodes.get(key)
        self.episodes[key] = now
        return last is None or now - last > EPISODE_QUIET_S
