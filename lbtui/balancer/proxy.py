"""The request pipeline: admit → route → pick → forward → respond, every outcome recorded once.

Semantics copied from nginx and Envoy:

- **admission** (Envoy local rate limit): global and per-client token buckets and a concurrency
  limit; a rejection is a 429 with ``Retry-After`` and ``RateLimit-Policy`` / ``RateLimit`` and
  never reaches a backend;
- **pick**: the pool's algorithm over the backends that can take the request now: active, not
  down by health checks, not ejected, breaker admitting, under ``max_rps``; when too few are
  available (Envoy's panic threshold), health and ejection are ignored;
- **headers**: hop-by-hop headers (``Connection`` and the headers it names, ``Keep-Alive``,
  ``TE``, ``Trailer``, ``Transfer-Encoding``, ``Upgrade``, ``Proxy-*``) are dropped both ways;
  ``X-Forwarded-For`` is appended to, ``X-Forwarded-Proto`` and ``X-Forwarded-Host`` are set,
  ``Via`` gets ``1.1 lbtui`` appended; ``Host``, the raw path and query, repeated headers and
  the status pass through untouched;
- **bodies** stream both ways with back-pressure (constant memory); a small body with a known
  length is buffered so that it can be sent again;
- **retries** (nginx ``proxy_next_upstream``, Envoy retry policy): a connect failure moves the
  request to another backend (nothing was sent: always safe); an idempotent request whose
  connection broke or timed out before any response byte reached the client, or that got a
  listed status, is tried again elsewhere, within ``retries.attempts`` and the retry budget;
  a POST or PATCH that reached a backend is never sent twice;
- **failures** answer the route's fallback if one is configured, else 502 (connect, broken),
  504 (timeout) or 503 (no backend) with a short JSON body naming the backend and the reason.

Every attempt's outcome goes once to the backend's record, breaker, outlier detector and the
algorithm; every client answer once to the balancer's record, with its response flag.

Shape: the steps are plain methods on a per-request :class:`Job` (route and rewrite, pick,
start an attempt, record a failed one, decide on a status, answer a whole response), and two
drivers run them. :meth:`Proxy.serve` is a coroutine (the aiohttp listener's handler awaits it);
:meth:`Proxy.serve_nowait` runs the usual request with callbacks only — no task, no future —
and hands the rest of any other request to :meth:`Proxy._rest`, the same coroutine ``serve``
ends in. The listeners reach the client through ``exchange.ClientRequest``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Protocol, cast

from aiohttp import web
from multidict import CIMultiDict

from lbtui.balancer.admission import Admission
from lbtui.balancer.connections import BackendConnection, HeadBlock, LeanResponse, LeanUpstream
from lbtui.balancer.exchange import (
    HOP_BY_HOP,
    VIA,
    AiohttpClient,
    Answer,
    ClientRequest,
    Result,
    request_headers,
    response_headers,
    response_pairs,
    to_web,
)
from lbtui.balancer.fallback import Fallback
from lbtui.balancer.faults import before_send, body_fault
from lbtui.balancer.pool import AdminState, Backend, Pool, breaker_config, cap_bucket
from lbtui.balancer.upstream import BackendResponse, Upstream
from lbtui.config import ALGORITHM_NAMES, BackendConfig, Config, HealthConfig, LimitsConfig
from lbtui.core import health as core_health
from lbtui.core.balancing import Balancer
from lbtui.core.breaker import OPERATOR_REASON, BreakerState, CircuitBreaker, Transition
from lbtui.core.ejection import EjectionConfig as CoreEjectionConfig
from lbtui.core.ejection import EjectionEvent, EjectionKind, OutlierDetector
from lbtui.core.events import EventKind, EventRing
from lbtui.core.faults import FaultDecision, FaultKind, Faults, FaultSpec, FaultStats
from lbtui.core.record import BackendRecord, BalancerRecord, FailureKind
from lbtui.core.retry import FailureKind as RetryFailure
from lbtui.core.retry import RetryBudget, RetryPolicy
from lbtui.errors import UpstreamBroken, UpstreamConnectError, UpstreamError, UpstreamTimeout

if TYPE_CHECKING:
    from lbtui.balancer.shared import SharedLimits

log = logging.getLogger("lbtui.proxy")

__all__ = [
    "HOP_BY_HOP",
    "VIA",
    "Flag",
    "Proxy",
    "Route",
    "error_response",
    "request_headers",
    "response_headers",
]

WEIGHT_BLIND = frozenset({"round_robin", "ip_hash", "consistent_hash"})
"""Algorithms that do not follow effective weights, so slow start cannot ramp them."""
HASHING = frozenset({"ip_hash", "consistent_hash"})
IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})
SMALL_RESPONSE_BYTES = 256 * 1024
"""Responses up to this size (with a Content-Length) are read whole and sent in one write."""
EPISODE_QUIET_S = 5.0
"""A rate-limit or fallback episode is reported as an event when it starts after this long
without one: events tell when something began, counters tell how much."""
_SHAPING = (FaultKind.RESET, FaultKind.BANDWIDTH)
_ADMITTING = (BreakerState.CLOSED, BreakerState.DISABLED)
_SYNCED = (BreakerState.OPEN, BreakerState.CLOSED)
"""Breaker transitions the other processes adopt; half-open follows from the shared deadline."""
_IGNORES_FEEDBACK = Balancer.observe
"""The base ``observe``: an algorithm that keeps it needs no feedback."""
"""Breaker states that admit every call, whatever the time."""


class Flag:
    """Response flags (Envoy's access-log flags): why the balancer did not simply pass through."""

    NO_HEALTHY_BACKEND: Final = "no_healthy_backend"
    BREAKER_OPEN: Final = "breaker_open"
    RATE_LIMITED: Final = "rate_limited"
    UPSTREAM_CONNECT_FAILURE: Final = "upstream_connect_failure"
    UPSTREAM_TIMEOUT: Final = "upstream_timeout"
    UPSTREAM_RESET: Final = "upstream_reset"
    RETRY_LIMIT: Final = "retry_limit_reached"
    RETRY_BUDGET: Final = "retry_budget_exhausted"
    RETRIED: Final = "retried"
    FAULT: Final = "fault_injected"
    FALLBACK: Final = "fallback"
    INTERNAL_ERROR: Final = "internal_error"
    DOWNSTREAM_DISCONNECT: Final = "downstream_disconnect"


@dataclass(frozen=True, slots=True)
class Route:
    """A compiled routing rule."""

    path_prefix: str
    host: str | None
    pool: Pool
    fallback: Fallback | None

    def matches(self, host: str, path: str) -> bool:
        return path.startswith(self.path_prefix) and (self.host is None or self.host == host)


def error_response(
    status: int, error: str, flag: str, backend: str | None, detail: str, flags_header: bool
) -> web.Response:
    body = json.dumps({"error": error, "backend": backend, "detail": detail}).encode() + b"\n"
    resp = web.Response(status=status, body=body, content_type="application/json")
    if flags_header:
        resp.headers["X-Lbtui-Flags"] = flag
    return resp


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


class Job:
    """One client request on its way through the pipeline: what it is, where it may go, and
    what it has been through so far."""

    __slots__ = (
        "admitted",
        "backend",
        "body",
        "budget_held",
        "client",
        "connect_failures",
        "cut",
        "extra_headers",
        "fallback",
        "fault",
        "faulted",
        "flag",
        "headers",
        "key",
        "last",
        "method",
        "pool",
        "proxy",
        "raw_path",
        "replayable",
        "reset_retried",
        "retries",
        "t0",
        "tried",
    )

    def __init__(
        self,
        client: ClientRequest,
        pool: Pool,
        fallback: Fallback | None,
        key: str | None,
        extra_headers: list[tuple[str, str]] | None,
    ) -> None:
        self.client = client
        self.method = client.method
        self.raw_path = client.raw_path
        self.pool = pool
        self.fallback = fallback
        self.key = key
        self.extra_headers = extra_headers
        self.headers: HeadBlock | list[tuple[str, str]] = []
        self.body: Any = None
        """None, the whole body (bytes, replayable) or the client's body stream."""
        self.replayable = True
        self.tried: list[Backend] = []
        self.retries = 0
        self.connect_failures = 0
        self.budget_held = 0
        self.reset_retried = False
        self.last: UpstreamError | None = None
        self.flag: str | None = None
        self.fault: FaultDecision | None = None
        """The fault applied to the current attempt, if any."""
        self.faulted: list[tuple[str, FaultKind]] = []
        """Every fault applied to this request, as (backend, kind)."""
        self.cut = False
        """The client's response was cut mid-body."""
        # Set by ``Proxy.serve_nowait`` only, for the backend connection's callback:
        self.proxy: Proxy
        self.backend: Backend
        self.t0: float
        self.admitted: bool

    def __call__(self, conn: BackendConnection, error: UpstreamError | None) -> None:
        """The backend connection's callback for the attempt ``serve_nowait`` sent."""
        self.proxy._answered_nowait(self, conn, error)


@dataclass(slots=True)
class PeerRecords:
    """What another process of this balancer last reported (``[listener] workers``)."""

    balancer: BalancerRecord
    backends: dict[str, BackendRecord]
    connections: dict[str, int]
    """Connections open to each backend from that process."""
    faults: dict[str, FaultStats] = field(default_factory=dict)
    """Its proxy-side faults' figures, by backend (the same fault is set in every process)."""
    fault_applied: dict[tuple[str, FaultKind], int] = field(default_factory=dict)
    """Faults it applied since it started, by (backend, kind)."""


class Proxy:
    """The data plane: backends, routes, policies, and the pipeline each request goes through
    (:meth:`serve` behind the aiohttp listener, :meth:`serve_nowait` behind the fast one)."""

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
        self.replicate: Callable[[str, tuple[Any, ...]], None] | None = None
        """Set by the primary of several processes: operator actions and health results done
        here are sent to the others as ``(method name, arguments)``."""
        self.on_sync: Callable[[tuple[Any, ...]], None] | None = None
        """Set when several processes serve: a breaker trip or close, or an ejection, made
        here by traffic, to be adopted by the other processes (:meth:`adopt`)."""
        self._adopting = False
        self.peer_records: dict[int, PeerRecords] = {}
        """The other processes' records, by worker index, as last reported (a worker that
        has exited keeps its last ones under a negative index, for the totals)."""
        self.peer_pids: dict[int, int] = {}
        """The live workers' process ids, by index."""
        now = clock()
        self.events = EventRing(clock=clock, wall_clock=wall_clock)
        self.record = BalancerRecord()
        self.faults = Faults()
        self.backends: dict[str, Backend] = {}
        self._clear_pools: set[Pool] = set()
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
        for bc in config.backends:
            self._add_backend(Backend.from_config(bc), now)
        algorithm = config.balancer.algorithm
        self.default_pool = Pool(list(self.backends.values()), algorithm)
        base = Path(config.base_dir) if config.base_dir else None
        self.fallback = Fallback(config.fallback, base) if config.fallback else None
        self.routes: list[Route] = [
            Route(
                r.path_prefix,
                r.host.lower() if r.host else None,
                Pool([self.backends[n] for n in r.backends], algorithm),
                Fallback(r.fallback, base) if r.fallback else self.fallback,
            )
            for r in config.routes
        ]
        self.admission = Admission(config.limits, now, shared)
        r = config.retries
        self.retry_policy = RetryPolicy(
            attempts=r.attempts,
            per_try_timeout_s=r.per_try_timeout_ms / 1e3 if r.per_try_timeout_ms else None,
            retry_on_status=frozenset(r.retry_on_status),
            retry_buffer_bytes=r.retry_buffer_bytes,
        )
        self.retry_budget = RetryBudget(r.budget_percent, r.budget_min)
        p = config.proxy
        self.upstream: LeanUpstream | Upstream
        if p.upstream == "lean":
            self.upstream = LeanUpstream(
                connect_timeout_s=p.connect_timeout_ms / 1e3,
                read_timeout_s=p.read_timeout_ms / 1e3,
                max_idle_per_backend=p.keepalive_per_backend,
            )
        else:
            self.upstream = Upstream(
                connect_timeout_s=p.connect_timeout_ms / 1e3,
                read_timeout_s=p.read_timeout_ms / 1e3,
            )
        self.per_try_timeout_s = self.retry_policy.per_try_timeout_s
        self._lean = isinstance(self.upstream, LeanUpstream)
        self._read_timeout_s = self.per_try_timeout_s or self.upstream.read_timeout_s
        """The timeout of one attempt (per try, else the read timeout)."""
        self._retry_statuses = self.retry_policy.retry_on_status
        fs = config.breaker.failure_statuses
        self._failure_status_set = frozenset(fs) if fs is not None else None
        self.max_attempts = p.max_attempts
        self.flags_header = p.response_flags_header
        hash_on = config.balancer.hash_on
        self._hash_kind, _, self._hash_name = hash_on.partition(":")
        self._key_from_ip = algorithm == "ip_hash" or hash_on == "client_ip"
        self._episodes: dict[str, float] = {}
        self._membership_listeners: list[Callable[[Backend, bool], None]] = []
        self._stale_wanted = any(
            fb is not None and fb.keeps_stale
            for fb in [self.fallback, *(rt.fallback for rt in self.routes)]
        )
        self._refresh_pools(now)
        if config.health.enabled and config.health.slow_start_s > 0 and algorithm in WEIGHT_BLIND:
            self.events.emit(
                EventKind.CONFIG,
                f"slow start has no effect with {algorithm}, which ignores weights; "
                "use weighted_round_robin, least_request or p2c_ewma to ramp recovered backends",
            )

    # -- membership and state ------------------------------------------------------------------

    def _failure_statuses(self, backend: Backend) -> Callable[[int], bool]:
        fs = self.config.breaker.failure_statuses
        if fs is None:
            return lambda s: s >= 500
        wanted = frozenset(fs)
        return lambda s: s in wanted

    def _add_backend(self, backend: Backend, now: float, bc: BackendConfig | None = None) -> None:
        cfg = self.config
        if bc is None:
            bc = next((b for b in cfg.backends if b.name == backend.name), None)
        enabled = cfg.breaker.enabled
        if bc is not None and bc.breaker is not None and bc.breaker.enabled is not None:
            enabled = bc.breaker.enabled
        backend.breaker = CircuitBreaker(
            breaker_config(cfg.breaker, bc), now, listener=self._on_breaker(backend.name)
        )
        backend.breaker_enabled = enabled
        if not enabled:
            backend.breaker.force("disabled", now)
        backend.cap = cap_bucket(backend.name, backend.max_rps, now, self.shared)
        if cfg.health.enabled:
            backend.health = core_health.HealthState(
                health_core_config(cfg.health), now, listener=self._on_health(backend.name)
            )
        backend.refresh(now)
        self.backends[backend.name] = backend
        self.outliers.set_members(list(self.backends))

    def _on_breaker(self, name: str) -> Callable[[Transition], None]:
        def emit(t: Transition) -> None:
            if hasattr(self, "default_pool"):  # not while the proxy is being built
                self._update_clear(t.at)
            if self._adopting:
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
                EventKind.BREAKER,
                f"breaker {t.old.value} → {t.new.value}: {t.reason}",
                backend=name,
                at=t.at,
                old=t.old.value,
                new=t.new.value,
            )

        return emit

    def _on_health(self, name: str) -> Callable[[core_health.HealthTransition], None]:
        def emit(t: core_health.HealthTransition) -> None:
            self.events.emit(
                EventKind.HEALTH,
                f"health {t.old.value} → {t.new.value}: {t.reason}",
                backend=name,
                at=t.at,
                old=t.old.value,
                new=t.new.value,
            )
            if t.new is core_health.HealthStatus.UP:
                # Envoy: a passing active check un-ejects the host.
                ev = self.outliers.readmit(
                    name, t.at, "readmitted early: active health checks pass again"
                )
                if ev is not None:
                    self._emit_ejection(ev)
            self._refresh_pools(t.at)

        return emit

    def _emit_ejection(self, ev: EjectionEvent) -> None:
        if (
            self.on_sync is not None
            and ev.kind is EjectionKind.EJECTED
            and ev.until is not None
            and not self._adopting
        ):
            times = self.outliers.stats(ev.name, ev.at).times_ejected
            self.on_sync(("eject", ev.name, ev.until, times, ev.reason))
        self.events.emit(
            EventKind.EJECTION,
            f"{ev.kind.replace('_', ' ')}: {ev.reason}",
            backend=ev.name,
            at=ev.at,
            change=ev.kind.value,
            until=ev.until,
        )

    def health_result(self, backend: Backend, ok: bool, detail: str) -> None:
        """An active check finished (called by the health checker)."""
        if backend.health is not None:
            backend.health.record_check(ok, self.clock(), detail)
        if self.replicate is not None:
            self.replicate("health_result_of", (backend.name, ok, detail))

    def health_result_of(self, name: str, ok: bool, detail: str) -> None:
        """:meth:`health_result` by backend name (the checks run in the primary process)."""
        backend = self.backends.get(name)
        if backend is not None:
            self.health_result(backend, ok, detail)

    # -- several processes (``[listener] workers``) ------------------------------------------

    def adopt(self, message: tuple[Any, ...], origin: str) -> None:
        """Take over a breaker transition or an ejection another process made
        (``on_sync``'s message); ``origin`` names that process in the reason shown here."""
        now = self.clock()
        kind, name = message[0], message[1]
        backend = self.backends.get(name)
        if backend is None:
            return
        self._adopting = True
        try:
            if kind == "breaker" and backend.breaker is not None:
                _, _, state, until, reason, at = message
                backend.breaker.adopt(
                    BreakerState(state), now, f"{reason} ({origin})", open_until=until, at=at
                )
            elif kind == "eject":
                _, _, until, times, reason = message
                if self.outliers.adopt(name, now, until, times, f"{reason} ({origin})"):
                    self._refresh_pools(now)
        finally:
            self._adopting = False

    def merged_record(self) -> BalancerRecord:
        """The balancer's record summed over every process serving."""
        if not self.peer_records:
            return self.record
        return BalancerRecord.merged(
            [self.record, *(p.balancer for p in self.peer_records.values())]
        )

    def merged_backend_record(self, backend: Backend) -> BackendRecord:
        """``backend``'s record summed over every process serving."""
        if not self.peer_records:
            return backend.record
        name = backend.name
        parts = [p.backends[name] for p in self.peer_records.values() if name in p.backends]
        return BackendRecord.merged([backend.record, *parts]) if parts else backend.record

    def records(self) -> PeerRecords:
        """This process's records, to send to the primary."""
        count = getattr(self.upstream, "open_connections", None)
        backends = self.backends.values()
        faults = self.faults
        return PeerRecords(
            self.record,
            {b.name: b.record for b in backends},
            {b.name: int(count(b.host, b.port)) for b in backends} if callable(count) else {},
            {
                b.name: replace(st, client_observed=dict(st.client_observed))  # picklable
                for b in backends
                if (st := faults.stats(b.name)) is not None
            },
            faults.applied_totals(),
        )

    def tick(self) -> None:
        """Periodic upkeep (a few times a second): readmissions, slow-start weights, panic."""
        now = self.clock()
        for ev in self.outliers.tick(now):
            self._emit_ejection(ev)
        for name, spec in self.faults.expire(now):
            self._emit_fault_end(name, spec)
        self._refresh_pools(now)

    def _update_clear(self, now: float) -> None:
        outliers = self.outliers
        self._clear_pools = {
            pool
            for pool in self.pools
            if all(
                b.cap is None
                and b.healthy()
                and (b.breaker is None or b.breaker.state in _ADMITTING)
                and not outliers.is_ejected(b.name, now)
                for b in pool.backends
            )
        }

    def _refresh_pools(self, now: float) -> None:
        for b in self.backends.values():
            b.refresh(now)
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
                    EventKind.EJECTION,
                    f"pool {state} panic mode: {available} of {active} backends available",
                    available=available,
                    total=active,
                )
        self._update_clear(now)

    @property
    def pools(self) -> list[Pool]:
        return [self.default_pool, *(r.pool for r in self.routes)]

    def set_algorithm(self, algorithm: str) -> None:
        if algorithm not in ALGORITHM_NAMES:
            raise ValueError(
                f"unknown algorithm {algorithm!r}; expected one of {', '.join(ALGORITHM_NAMES)}"
            )
        for pool in self.pools:
            pool.set_algorithm(algorithm)
        self._key_from_ip = algorithm == "ip_hash" or self._hash_kind == "client_ip"
        if self.replicate is not None:
            self.replicate("set_algorithm", (algorithm,))

    def set_limits(self, limits: LimitsConfig) -> None:
        """The one run-time entry point for changing admission limits."""
        self.admission.reconfigure(limits, self.clock())
        if self.replicate is not None:
            self.replicate("set_limits", (limits,))
        changed = limits.model_dump(exclude_defaults=True)
        text = ", ".join(f"{k}={v}" for k, v in changed.items()) or "none (no limits)"
        self.events.emit(EventKind.LIMITS, f"limits changed: {text}")

    # -- operator actions (the control plane calls these; each one is an event) ---------------

    def backend(self, name: str) -> Backend:
        try:
            return self.backends[name]
        except KeyError:
            raise KeyError(f"no backend named {name!r}") from None

    def add_backend(self, config: BackendConfig) -> Backend:
        """Add a backend to the default pool (and to nothing else)."""
        if config.name in self.backends:
            raise ValueError(f"a backend named {config.name!r} exists already")
        now = self.clock()
        backend = Backend.from_config(config)
        self._add_backend(backend, now, config)
        self.default_pool.set_backends([*self.default_pool.backends, backend])
        self._refresh_pools(now)
        self.events.emit(
            EventKind.ACTION, f"backend added: {config.url}", backend=config.name, action="add"
        )
        for fn in self._membership_listeners:
            fn(backend, True)
        if self.replicate is not None:
            self.replicate("add_backend", (config,))
        return backend

    def remove_backend(self, name: str) -> Backend:
        """Remove a backend from every pool; requests in flight on it finish."""
        backend = self.backend(name)
        for pool in self.pools:
            if backend in pool.backends:
                pool.set_backends([b for b in pool.backends if b is not backend])
        del self.backends[name]
        self.clear_fault(name)
        self.outliers.set_members(list(self.backends))
        self._refresh_pools(self.clock())
        self.events.emit(EventKind.ACTION, "backend removed", backend=name, action="remove")
        for fn in self._membership_listeners:
            fn(backend, False)
        if self.replicate is not None:
            self.replicate("remove_backend", (name,))
        return backend

    def on_membership(self, fn: Callable[[Backend, bool], None]) -> None:
        """Call ``fn(backend, added)`` when a backend is added or removed."""
        self._membership_listeners.append(fn)

    def set_weight(self, name: str, weight: float) -> None:
        if not 0 <= weight <= 1000:
            raise ValueError(f"expected a weight from 0 to 1000, got {weight}")
        backend = self.backend(name)
        old = backend.configured_weight
        backend.configured_weight = float(weight)
        for pool in self.pools:
            if backend in pool.backends:
                pool.set_backends(pool.backends)
        self._refresh_pools(self.clock())
        self.events.emit(
            EventKind.ACTION,
            f"weight {old:g} → {weight:g}",
            backend=name,
            action="weight",
            old=old,
            new=float(weight),
        )
        if self.replicate is not None:
            self.replicate("set_weight", (name, weight))

    def set_admin(self, name: str, state: AdminState) -> None:
        """Drain (no new requests; in-flight ones finish), disable, or enable a backend."""
        backend = self.backend(name)
        old = backend.admin
        backend.admin = state
        backend.admin_since = self.clock()
        self._refresh_pools(backend.admin_since)
        self.events.emit(
            EventKind.ACTION,
            f"admin state {old.value} → {state.value}"
            + (
                f" ({backend.in_flight} requests in flight)" if state is AdminState.DRAINING else ""
            ),
            backend=name,
            action=state.value,
            old=old.value,
            new=state.value,
        )
        if self.replicate is not None:
            self.replicate("set_admin", (name, state))

    def force_breaker(self, name: str, mode: str) -> None:
        """``open``, ``closed``, ``disabled`` or ``auto``."""
        if mode not in ("open", "closed", "disabled", "auto"):
            raise ValueError(f"expected open, closed, disabled or auto, got {mode!r}")
        backend = self.backend(name)
        assert backend.breaker is not None
        backend.breaker.force(mode, self.clock())  # type: ignore[arg-type]
        if self.replicate is not None:
            self.replicate("force_breaker", (name, mode))

    def set_fault(self, name: str, spec: FaultSpec, *, owner: str | None = None) -> None:
        """Inject ``spec`` on backend ``name`` (replacing its fault, if any)."""
        self.backend(name)
        old = self.faults.get(name)
        self.faults.set(name, spec, self.clock(), owner=owner)
        if old is not None:
            self._emit_fault_end(name, old, replaced=True)
        self.events.emit(
            EventKind.FAULT,
            f"fault injected: {spec.describe()}",
            backend=name,
            action="fault",
            change="set",
            fault=spec.kind.value,
            percent=spec.percent,
            duration_s=spec.duration_s,
            owner=owner,
        )
        if self.replicate is not None:
            self.replicate("set_fault_of", (name, spec, owner))

    def set_fault_of(self, name: str, spec: FaultSpec, owner: str | None) -> None:
        self.set_fault(name, spec, owner=owner)

    def clear_fault(self, name: str) -> FaultSpec | None:
        """Remove the fault on backend ``name``; the spec it had, or None."""
        spec = self.faults.clear(name, self.clock())
        if spec is not None:
            self._emit_fault_end(name, spec)
        if self.replicate is not None:
            self.replicate("clear_fault", (name,))
        return spec

    def clear_faults(self, owner: str | None = None) -> list[str]:
        """Remove every fault (or every fault ``owner`` set): the guaranteed undo."""
        names = self.faults.clear_all(self.clock(), owner=owner)
        for name in names:
            st = self.faults.stats(name)
            if st is not None:
                self._emit_fault_end(name, st.spec)
        if self.replicate is not None:
            self.replicate("clear_faults", (owner,))
        return names

    def _emit_fault_end(self, name: str, spec: FaultSpec, *, replaced: bool = False) -> None:
        """An event for a fault that ended, with the proof of what it did."""
        st = self.faults.stats(name)
        if replaced or st is None or st.spec is not spec:
            why, proof, at = "replaced", "", None
        else:
            why, proof, at = st.ended or "ended", f"; {st.summary()}", st.ended_at
        self.events.emit(
            EventKind.FAULT,
            f"fault {why}: {spec.describe()}{proof}",
            backend=name,
            at=at,
            change="end",
            fault=spec.kind.value,
        )

    def change_algorithm(self, algorithm: str) -> None:
        old = self.default_pool.algorithm
        self.set_algorithm(algorithm)
        self.events.emit(
            EventKind.CONFIG,
            f"algorithm {old} → {algorithm}",
            action="algorithm",
            old=old,
            new=algorithm,
        )

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        await self.upstream.start()

    async def close(self) -> None:
        self.clear_faults()  # the guaranteed undo; BalancerServer.stop may call it earlier
        await self.upstream.close()

    # -- pipeline ----------------------------------------------------------------------------

    def route(self, host: str, path: str) -> Route | None:
        if self.routes:
            h = host.rsplit(":", 1)[0].lower() if host else ""
            for r in self.routes:
                if r.matches(h, path):
                    return r
        return None

    def _key(self, client: ClientRequest) -> str | None:
        if self._key_from_ip:
            return client.remote
        if self._hash_kind == "header":
            return client.headers.get(self._hash_name)
        return client.cookie(self._hash_name)

    def _episode(self, key: str, now: float) -> bool:
        last = self._episodes.get(key)
        self._episodes[key] = now
        return last is None or now - last > EPISODE_QUIET_S

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        """The aiohttp listener's handler."""
        return to_web(await self.serve(AiohttpClient(request)))

    def admit(self, client: ClientRequest) -> tuple[web.Response | None, list[tuple[str, str]]]:
        """Admission for one client request (the concurrency slot is taken when admitted):
        ``(the 429 to send, or None; headers for a successful response)``."""
        admission = self.admission
        now = self.clock()
        rejection, ok_headers = admission.admit(
            client.remote, client.headers if admission.client_header else None, now
        )
        if rejection is None:
            return None, ok_headers
        if self._episode(f"limit:{rejection.scope}", now):
            self.events.emit(
                EventKind.LIMITS,
                f"rate limiting started ({rejection.scope} limit)",
                scope=rejection.scope,
            )
        self.record.count_rejection(rejection.scope, now)
        return rejection.response(self.flags_header), ok_headers

    def internal_error(self, client: ClientRequest, exc: BaseException) -> web.Response:
        """A defect of lbtui's own: the client still gets a JSON answer, and it is logged."""
        log.error(
            "internal error while proxying %s %s",
            client.method,
            client.path,
            exc_info=(type(exc), exc, exc.__traceback__),
        )
        return error_response(
            500, "internal proxy error", Flag.INTERNAL_ERROR, None, type(exc).__name__,
            self.flags_header,
        )  # fmt: skip

    async def serve(self, client: ClientRequest) -> Result:
        """The whole pipeline for one client request: its answer (or the streamed response)."""
        self.record.started()
        admitted = False
        try:
            extra: list[tuple[str, str]] | None = None
            if self.admission.active:
                rejection, extra = self.admit(client)
                if rejection is not None:
                    self.record.answered(429, Flag.RATE_LIMITED, self.clock())
                    return rejection
                admitted = True
            job = self.job(client, extra)
        except Exception as exc:
            return self._crashed(client, exc, admitted)
        return await self._rest(job, admitted, read_body=client.body_exists)

    def serve_nowait(self, client: NowaitClient) -> None:
        """``serve`` without a coroutine for as long as it can go (the fast listener's way).

        The usual request (no body, no fault, an idle keep-alive connection to the picked
        backend, a small whole answer) is sent with :meth:`LeanUpstream` callbacks and answered
        from the backend connection's ``data_received``: no task, no future, no coroutine. At
        the first thing that needs waiting (a body to read, a connect, an injected fault, a
        failure to retry, a streamed answer) the rest of the request continues as
        :meth:`_rest` through ``client.spawn`` — the same steps ``serve`` takes. The answer
        goes to ``client.finish`` once."""
        self.record.started()
        admitted = False
        try:
            extra: list[tuple[str, str]] | None = None
            if self.admission.active:
                rejection, extra = self.admit(client)
                if rejection is not None:
                    self.record.answered(429, Flag.RATE_LIMITED, self.clock())
                    client.finish(rejection)
                    return
                admitted = True
            job = self.job(client, extra)
            upstream = self.upstream
            if client.body_exists or type(upstream) is not LeanUpstream:
                client.spawn(self._rest(job, admitted, read_body=client.body_exists))
                return
            backend = self.next_backend(job)
            if backend is None:
                result, flag = self.failed(job)
                self._end(admitted, result.status, flag)
                client.finish(result)
                return
            t0 = self.attempt_start(job, backend)
            conn = (
                upstream.idle_connection(backend.host, backend.port) if job.fault is None else None
            )
            if conn is None:
                client.spawn(self._rest(job, admitted, start=(backend, t0)))
                return
            head, _ = upstream.head(
                job.method, backend.base_path + job.raw_path, job.headers,
                backend.host, backend.port, None,
            )  # fmt: skip
            job.proxy = self
            job.backend = backend
            job.t0 = t0
            job.admitted = admitted
            conn.send_nowait(head, job.method == "HEAD", self._read_timeout_s, job)
        except Exception as exc:
            client.finish(self._crashed(client, exc, admitted))

    def _answered_nowait(
        self, job: Job, conn: BackendConnection, error: UpstreamError | None
    ) -> None:
        """The backend connection's callback for a request sent by ``serve_nowait``: the whole
        small answer is recorded and handed to the client here; anything else goes on as
        :meth:`_rest`."""
        backend, t0, admitted = job.backend, job.t0, job.admitted
        client = cast("NowaitClient", job.client)
        try:
            if error is not None:
                self.attempt_failed(job, backend, error, t0)
                client.spawn(self._rest(job, admitted, pending=(backend, t0, None)))
                return
            up = LeanResponse(conn, cast(LeanUpstream, self.upstream), self._read_timeout_s)
            status = up.status
            length = up.content_length
            if (
                conn.complete
                and length is not None
                and length <= SMALL_RESPONSE_BYTES
                and status >= 200
                and status != 204
                and status != 304
                and job.method != "HEAD"
                and status not in self._retry_statuses
            ):
                fs = self._failure_status_set
                failure = status >= 500 if fs is None else status in fs
                whole = self.respond_whole(job, backend, up, t0, failure, conn.take_body())
                flag = job.flag
                if job.faulted:
                    self._observe_faults(job, status)
                    flag = flag or Flag.FAULT
                if admitted:
                    self.admission.release()
                self.record.answered(status, flag, self.clock())
                client.finish(whole)
                return
            client.spawn(self._rest(job, admitted, pending=(backend, t0, up)))
        except Exception as exc:
            client.finish(self._crashed(client, exc, admitted))

    def _end(self, admitted: bool, status: int, flag: str | None) -> None:
        if admitted:
            self.admission.release()
        self.record.answered(status, flag, self.clock())

    def _crashed(self, client: ClientRequest, exc: Exception, admitted: bool) -> web.Response:
        self._end(admitted, 500, Flag.INTERNAL_ERROR)
        return self.internal_error(client, exc)

    async def _rest(
        self,
        job: Job,
        admitted: bool,
        *,
        read_body: bool = False,
        start: tuple[Backend, float] | None = None,
        pending: tuple[Backend, float, BackendResponse | None] | None = None,
    ) -> Result:
        """The pipeline from a routed job on: read a small body, attempts, the answer; the
        request is recorded as answered (and its admission released) once, here."""
        status, flag = 0, None
        try:
            if read_body:
                client = job.client
                length = client.content_length
                if length is not None and length <= self.retry_policy.retry_buffer_bytes:
                    job.body = await client.read()
                else:
                    job.body = client.content
                    job.replayable = False
            result, flag = await self.attempts(job, start, pending)
            status = result.status
            return result
        except (ConnectionError, asyncio.CancelledError):
            raise
        except Exception as exc:
            flag = Flag.INTERNAL_ERROR
            status = 500
            return self.internal_error(job.client, exc)
        finally:
            self._end(admitted, status, flag)

    def _eligible(self, pool: Pool, job: Job, now: float) -> Callable[[Backend], bool]:
        tried = job.tried
        outliers = self.outliers
        panic = pool.panic

        def eligible(b: Backend) -> bool:
            if tried and b in tried:
                return False
            if not panic and (not b.healthy() or outliers.is_ejected(b.name, now)):
                return False
            breaker = b.breaker
            if breaker is not None and not breaker.peek(now):
                return False
            cap = b.cap
            return cap is None or cap.peek(now)

        return eligible

    def job(self, client: ClientRequest, extra_headers: list[tuple[str, str]] | None) -> Job:
        """Route a request (pool, fallback, hash key) and rewrite its headers for the backend."""
        route = self.route(client.host, client.path) if self.routes else None
        if route is not None:
            pool, fallback = route.pool, route.fallback
        else:
            pool, fallback = self.default_pool, self.fallback
        key = self._key(client) if pool.balancer.name in HASHING else None
        job = Job(client, pool, fallback, key, extra_headers or None)
        headers = client.forward_headers("http")
        if type(headers) is HeadBlock and not self._lean:
            headers = headers.items()  # the aiohttp client wants text pairs
        job.headers = headers
        return job

    async def attempts(
        self,
        job: Job,
        start: tuple[Backend, float] | None = None,
        pending: tuple[Backend, float, BackendResponse | None] | None = None,
    ) -> tuple[Result, str | None]:
        """Attempts on backends until one answers or no other may be tried. ``start`` is an
        attempt the caller began (picked and counted, not sent); ``pending`` one it sent (its
        response head, or None when it failed and the failure is recorded)."""
        try:
            while True:
                if pending is not None:
                    backend, t0, up = pending
                    pending = None
                else:
                    if start is not None:
                        backend, t0 = start
                        start = None
                    else:
                        next_backend = self.next_backend(job)
                        if next_backend is None:
                            break
                        backend = next_backend
                        t0 = self.attempt_start(job, backend)
                    up = await self._send(job, backend, t0)
                if up is not None:
                    result = await self._on_head(job, backend, up, t0)
                    if result is not None:
                        return self.succeeded(job, result)
                if not self._may_go_on(job):
                    break
        finally:
            for _ in range(job.budget_held):
                self.retry_budget.release()
            job.budget_held = 0
        return self.failed(job)

    def succeeded(self, job: Job, result: Result) -> tuple[Result, str | None]:
        if job.faulted:
            self._observe_faults(job, result.status)
            return result, job.flag or Flag.FAULT
        return result, job.flag

    def failed(self, job: Job) -> tuple[Result, str | None]:
        """No backend answered (or none may be tried): the failure answer."""
        failed, flag = self._failure(job, job.last, job.tried, job.flag)
        if job.faulted:
            self._observe_faults(job, failed.status)
        return failed, flag

    def next_backend(self, job: Job) -> Backend | None:
        """Pick the backend for the next attempt (its breaker admitting it), or None."""
        clock = self.clock
        pool = job.pool
        while True:
            now = clock()
            if pool in self._clear_pools and not job.tried:
                backend = pool.pick(now, job.key, None)  # every backend may take it
            else:
                backend = pool.pick(now, job.key, self._eligible(pool, job, now))
            if backend is None:
                return None
            job.tried.append(backend)
            breaker = backend.breaker
            if breaker is not None and not breaker.allow(now):
                continue  # lost a half-open permit race: pick again
            if backend.cap is not None:
                backend.cap.allow(now)
            return backend

    def attempt_start(self, job: Job, backend: Backend) -> float:
        """An attempt on ``backend`` begins: counted, and its fault (if any) decided."""
        t0 = self.clock()
        brec = backend.record
        brec.started(t0)
        if len(job.tried) > 1:
            brec.retries_total += 1
            self.record.count_retry(t0)
        fault = job.fault = self.faults.decide(backend.name, t0)
        if fault is not None:
            job.faulted.append((backend.name, fault.kind))
        return t0

    async def _send(self, job: Job, backend: Backend, t0: float) -> BackendResponse | None:
        """One attempt's request: the response head, or None if it failed (recorded)."""
        fault = job.fault
        try:
            up: BackendResponse | None = None
            if fault is not None:
                # Injected faults take the same paths as real ones: down raises a connect error,
                # hang a timeout, abort is an answer the backend "gave", delay just waits.
                up = await before_send(
                    fault, backend.name, self.per_try_timeout_s or self.upstream.read_timeout_s
                )
            if up is None:
                up = await self.upstream.send(
                    backend,
                    job.method,
                    job.raw_path,
                    job.headers,  # type: ignore[arg-type]  # a HeadBlock only for the lean one
                    job.body,
                    read_timeout_s=self.per_try_timeout_s,
                )
        except UpstreamError as exc:
            self.attempt_failed(job, backend, exc, t0)
            return None
        return up

    def attempt_failed(self, job: Job, backend: Backend, exc: UpstreamError, t0: float) -> None:
        """An attempt got no response head: recorded, and remembered for the retry decision."""
        now = self.clock()
        kind = (
            FailureKind.CONNECT
            if isinstance(exc, UpstreamConnectError)
            else FailureKind.TIMEOUT
            if isinstance(exc, UpstreamTimeout)
            else FailureKind.RESET
        )
        backend.record.failed(kind, now - t0, 0, now)
        self._outcome(backend, job.pool, True, now - t0, now)
        if kind is FailureKind.CONNECT:
            job.connect_failures += 1
        job.last = exc

    async def _on_head(
        self, job: Job, backend: Backend, up: BackendResponse, t0: float
    ) -> Result | None:
        if self.retry_on_status(job, backend, up, t0):
            return None
        return await self._respond(job, backend, up, t0, self._is_failure(up.status))

    def retry_on_status(self, job: Job, backend: Backend, up: BackendResponse, t0: float) -> bool:
        """True when the answer's status is worth another backend: then it is dropped (its
        connection is not reused) and recorded."""
        status = up.status
        if (
            status in self.retry_policy.retry_on_status
            and job.method in IDEMPOTENT
            and job.retries < self.retry_policy.attempts
            and self._budget_allows(job)
        ):
            up.close()
            now = self.clock()
            backend.record.finished(status, now - t0, 0, 0, now)
            self._outcome(backend, job.pool, self._is_failure(status), now - t0, now)
            job.last = _StatusFailure(backend.name, status)
            return True
        return False

    def _observe_faults(self, job: Job, status: int) -> None:
        """Proof: what the client finally got for a request faults were applied to."""
        outcome: int | str = "reset" if job.cut else status
        for name, kind in job.faulted:
            self.faults.observe(name, kind, outcome)

    def _may_go_on(self, job: Job) -> bool:
        """After a failed attempt: is another backend tried?"""
        last = job.last
        if last is None:
            return True
        method = job.method
        if isinstance(last, UpstreamConnectError):
            # Nothing was sent (both upstreams connect before they read a streamed body): always
            # safe.
            if job.connect_failures >= self.max_attempts:
                return False
            job.flag = job.flag or Flag.RETRIED
            return True
        kind = RetryFailure.TIMEOUT if isinstance(last, UpstreamTimeout) else RetryFailure.RESET
        if isinstance(last, _StatusFailure):
            kind = RetryFailure.STATUS
        if (
            kind is RetryFailure.RESET
            and not job.reset_retried
            and method in IDEMPOTENT
            and job.replayable
        ):
            # A connection that broke before any response byte (a killed backend, a stale
            # keep-alive connection): the request goes once more elsewhere, whatever the retry
            # settings and budget — nginx's ``proxy_next_upstream error`` default. Bounded to
            # one per request, so a crashing fleet sees at most twice its load.
            job.reset_retried = True
            job.flag = Flag.RETRIED
            return True
        if not self.retry_policy.may_retry(
            method,
            kind,
            attempt=job.retries + 1,
            request_sent=True,
            response_started=False,
            body_replayable=job.replayable,
            status=last.status if isinstance(last, _StatusFailure) else None,
        ):
            if job.retries >= self.retry_policy.attempts and method in IDEMPOTENT:
                job.flag = Flag.RETRY_LIMIT
            return False
        if not self._budget_allows(job) or not self.retry_budget.try_acquire(self.record.in_flight):
            return False
        job.budget_held += 1
        job.retries += 1
        job.flag = Flag.RETRIED
        return True

    def _budget_allows(self, job: Job) -> bool:
        """Whether the retry budget has room for one more retry (taken if so); an exhausted
        budget sets the request's flag and is reported as an event when it starts."""
        if self.retry_budget.peek(self.record.in_flight):
            return True
        self.retry_budget.try_acquire(self.record.in_flight)  # counts the exhaustion
        job.flag = Flag.RETRY_BUDGET
        now = self.clock()
        if self._episode("retry_budget", now):
            st = self.retry_budget.stats()
            self.events.emit(
                EventKind.RETRY_BUDGET,
                f"retry budget exhausted: {st.active_retries} retries in flight "
                f"(budget {st.budget_percent:g}% of {self.record.in_flight} requests, "
                f"min {st.min_concurrency})",
            )
        return False

    def _outcome(
        self, backend: Backend, pool: Pool, failure: bool, duration: float, now: float
    ) -> None:
        """Feed one attempt's outcome to the breaker, the outlier detector and the algorithm."""
        if backend.breaker is not None:
            backend.breaker.record(failure, duration, now)
        ev = self.outliers.record(backend.name, failure, now)
        if ev is not None:
            self._emit_ejection(ev)
            self._refresh_pools(now)
        balancer = pool.balancer
        if type(balancer).observe is not _IGNORES_FEEDBACK:
            balancer.observe(backend, duration, not failure, now)

    def _is_failure(self, status: int) -> bool:
        fs = self._failure_status_set
        return status >= 500 if fs is None else status in fs

    def _failure(
        self, job: Job, last: UpstreamError | None, tried: list[Backend], flag: str | None
    ) -> tuple[web.Response, str]:
        client = job.client
        fallback = job.fallback
        now = self.clock()
        if isinstance(last, _StatusFailure):
            # Retries of a listed status ran out: the client gets a plain gateway error.
            last = UpstreamBroken(last.backend, f"answered {last.status} on every try")
        if last is None:
            reason = Flag.NO_HEALTHY_BACKEND
            if not tried and any(
                b.breaker is not None and not b.breaker.peek(now) for b in job.pool.backends
            ):
                reason = Flag.BREAKER_OPEN
        else:
            reason = last.reason
        if fallback is not None:
            stale_key = (client.host + client.raw_path) if client.method == "GET" else None
            resp, why = fallback.respond(reason, stale_key, now)
            if self._episode(f"fallback:{why}", now):
                self.events.emit(
                    EventKind.FALLBACK, f"serving fallback responses ({why})", reason=why
                )
            if self.flags_header:
                resp.headers["X-Lbtui-Flags"] = f"{Flag.FALLBACK},{reason}"
            self.record.count_fallback(why, now)
            return resp, Flag.FALLBACK
        fh = self.flags_header
        if last is None:
            detail = (
                "every backend's circuit breaker is open"
                if reason == Flag.BREAKER_OPEN
                else "no backend can take the request"
            )
            return error_response(503, "no backend available", reason, None, detail, fh), reason
        if isinstance(last, UpstreamTimeout):
            resp = error_response(504, "upstream timeout", reason, last.backend, last.detail, fh)
            return resp, flag if flag == Flag.RETRY_BUDGET else reason
        detail = last.detail
        if len(tried) > 1:
            detail += f" (tried {', '.join(b.name for b in tried)})"
        error = (
            "upstream connect failure"
            if isinstance(last, UpstreamConnectError)
            else "upstream connection broken"
        )
        return error_response(502, error, reason, last.backend, detail, fh), reason

    async def _respond(
        self, job: Job, backend: Backend, up: BackendResponse, t0: float, is_failure: bool
    ) -> Result:
        client = job.client
        status = up.status
        length = up.content_length
        no_body = job.method == "HEAD" or status in (204, 304) or status < 200
        shaped = job.fault  # reset and bandwidth act on the body: always the streamed path
        if shaped is not None and shaped.kind not in _SHAPING:
            shaped = None

        if shaped is None and not no_body and length is not None and length <= SMALL_RESPONSE_BYTES:
            try:
                data = await up.read()
            except UpstreamError as exc:
                self.body_failed(job, backend, up, t0, exc)
                failed, _ = self._failure(job, exc, [backend], None)
                return failed
            return self.respond_whole(job, backend, up, t0, is_failure, data)

        brec = backend.record
        headers = client.response_headers(up, job.extra_headers)
        bytes_in = client.content_length or 0
        sent = 0
        chunks = up.chunks()
        if shaped is not None:
            chunks = body_fault(shaped, chunks, backend.name)
        stream = client.open_stream(status, up.reason, headers, length)
        try:
            await client.start_stream()
            # An injected reset cuts even a body-less answer: an applied fault never escapes.
            if not no_body or shaped is not None:
                async for chunk in chunks:
                    await client.write(chunk)
                    sent += len(chunk)
            await client.finish_stream()
        except UpstreamError:
            # The head is out: the only honest signal left is to cut the client connection.
            job.cut = True
            now = self.clock()
            brec.failed(FailureKind.RESET, now - t0, bytes_in, now)
            self._outcome(backend, job.pool, True, now - t0, now)
            up.close()
            client.cut()
            return stream
        except ConnectionError:
            # The client went away mid-response: not the backend's fault.
            up.close()
            now = self.clock()
            brec.finished(status, now - t0, bytes_in, sent, now)
            if backend.breaker is not None:
                backend.breaker.release(now)
            return stream
        up.release()
        now = self.clock()
        brec.finished(status, now - t0, bytes_in, sent, now)
        self._outcome(backend, job.pool, is_failure, now - t0, now)
        return stream

    def body_failed(
        self, job: Job, backend: Backend, up: BackendResponse, t0: float, exc: UpstreamError
    ) -> None:
        """A small body broke off or timed out before the head went out: recorded."""
        now = self.clock()
        kind = FailureKind.TIMEOUT if isinstance(exc, UpstreamTimeout) else FailureKind.RESET
        backend.record.failed(kind, now - t0, job.client.content_length or 0, now)
        self._outcome(backend, job.pool, True, now - t0, now)
        up.close()

    def respond_whole(
        self,
        job: Job,
        backend: Backend,
        up: BackendResponse,
        t0: float,
        is_failure: bool,
        data: bytes,
    ) -> Answer:
        """A small response read whole: recorded, and the answer to send in one write."""
        client = job.client
        status = up.status
        headers = client.response_headers(up, job.extra_headers)
        fallback = job.fallback
        stale = (
            self._stale_wanted
            and status == 200
            and job.method == "GET"
            and fallback is not None
            and fallback.keeps_stale
        )
        stale_headers = None
        if stale:
            stale_headers = CIMultiDict(response_pairs(up))
            for k, v in job.extra_headers or ():
                stale_headers.add(k, v)
        up.release()
        answer = Answer(status, up.reason, headers, data)
        now = self.clock()
        backend.record.finished(status, now - t0, client.content_length or 0, len(data), now)
        self._outcome(backend, job.pool, is_failure, now - t0, now)
        if stale_headers is not None and fallback is not None:
            fallback.remember(client.host + job.raw_path, status, stale_headers, data, now)
        return answer


class NowaitClient(ClientRequest, Protocol):
    """A client whose listener can take an answer later (``finish``) or run the rest of its
    request as a task (``spawn``): what ``Proxy.serve_nowait`` needs."""

    def finish(self, result: Result) -> None: ...

    def spawn(self, rest: Coroutine[Any, Any, Result]) -> None: ...


class _StatusFailure(UpstreamError):
    """An answer with a status listed in ``retries.retry_on_status``."""

    reason = "upstream_status"

    def __init__(self, backend: str, status: int) -> None:
        self.status = status
        super().__init__(backend, f"answered {status}")
