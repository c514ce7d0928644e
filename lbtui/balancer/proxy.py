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
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from aiohttp import StreamReader, web
from multidict import CIMultiDict, CIMultiDictProxy

from lbtui.balancer.admission import Admission
from lbtui.balancer.connections import LeanUpstream
from lbtui.balancer.fallback import Fallback
from lbtui.balancer.faults import before_send, body_fault
from lbtui.balancer.pool import AdminState, Backend, Pool, breaker_config, cap_bucket
from lbtui.balancer.upstream import BackendResponse, Upstream
from lbtui.config import ALGORITHM_NAMES, BackendConfig, Config, HealthConfig, LimitsConfig
from lbtui.core import health as core_health
from lbtui.core.breaker import CircuitBreaker, Transition
from lbtui.core.ejection import EjectionConfig as CoreEjectionConfig
from lbtui.core.ejection import EjectionEvent, OutlierDetector
from lbtui.core.events import EventKind, EventRing
from lbtui.core.faults import FaultDecision, FaultKind, Faults, FaultSpec
from lbtui.core.record import BalancerRecord, FailureKind
from lbtui.core.retry import FailureKind as RetryFailure
from lbtui.core.retry import RetryBudget, RetryPolicy
from lbtui.errors import UpstreamBroken, UpstreamConnectError, UpstreamError, UpstreamTimeout

log = logging.getLogger("lbtui.proxy")

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
    }
)
WEIGHT_BLIND = frozenset({"round_robin", "ip_hash", "consistent_hash"})
"""Algorithms that do not follow effective weights, so slow start cannot ramp them."""
IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})
SMALL_RESPONSE_BYTES = 256 * 1024
"""Responses up to this size (with a Content-Length) are read whole and sent in one write."""
VIA = "1.1 lbtui"
EPISODE_QUIET_S = 5.0
"""A rate-limit or fallback episode is reported as an event when it starts after this long
without one: events tell when something began, counters tell how much."""


class Flag:
    """Response flags (Envoy's access-log flags): why the balancer did not simply pass through."""

    NO_HEALTHY_BACKEND = "no_healthy_backend"
    BREAKER_OPEN = "breaker_open"
    RATE_LIMITED = "rate_limited"
    UPSTREAM_CONNECT_FAILURE = "upstream_connect_failure"
    UPSTREAM_TIMEOUT = "upstream_timeout"
    UPSTREAM_RESET = "upstream_reset"
    RETRY_LIMIT = "retry_limit_reached"
    RETRY_BUDGET = "retry_budget_exhausted"
    RETRIED = "retried"
    FAULT = "fault_injected"
    FALLBACK = "fallback"
    INTERNAL_ERROR = "internal_error"
    DOWNSTREAM_DISCONNECT = "downstream_disconnect"


@dataclass(frozen=True, slots=True)
class Route:
    """A compiled routing rule."""

    path_prefix: str
    host: str | None
    pool: Pool
    fallback: Fallback | None

    def matches(self, host: str, path: str) -> bool:
        return path.startswith(self.path_prefix) and (self.host is None or self.host == host)


def _connection_tokens(headers: CIMultiDictProxy[str]) -> frozenset[str]:
    values = headers.getall("Connection", ())
    if not values:
        return frozenset()
    return frozenset(t.strip().lower() for v in values for t in v.split(",") if t.strip())


def _is_hop(name: str, named: frozenset[str]) -> bool:
    lname = name.lower()
    return lname in HOP_BY_HOP or lname.startswith("proxy-") or lname in named


def request_headers(headers: CIMultiDictProxy[str], client_ip: str, proto: str) -> CIMultiDict[str]:
    """The headers sent to the backend for a client request with ``headers``."""
    named = _connection_tokens(headers)
    out: CIMultiDict[str] = CIMultiDict()
    xff: list[str] = []
    via: list[str] = []
    for name, value in headers.items():
        if _is_hop(name, named):
            continue
        lname = name.lower()
        if lname == "x-forwarded-for":
            xff.append(value)
        elif lname == "via":
            via.append(value)
        elif lname not in ("x-forwarded-proto", "x-forwarded-host"):
            out.add(name, value)
    xff.append(client_ip)
    via.append(VIA)
    out["X-Forwarded-For"] = ", ".join(xff)
    out["X-Forwarded-Proto"] = proto
    host = headers.get("Host")
    if host is not None:
        out["X-Forwarded-Host"] = host
    out["Via"] = ", ".join(via)
    return out


def response_headers(headers: CIMultiDictProxy[str]) -> CIMultiDict[str]:
    """The headers sent to the client for a backend response with ``headers``."""
    named = _connection_tokens(headers)
    out: CIMultiDict[str] = CIMultiDict()
    for name, value in headers.items():
        if _is_hop(name, named) or name.lower() == "content-length":
            continue
        out.add(name, value)
    return out


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


class _Attempt:
    """What one request has been through so far."""

    __slots__ = (
        "budget_held",
        "connect_failures",
        "cut",
        "fault",
        "faulted",
        "flag",
        "last",
        "reset_retried",
        "retries",
        "tried",
    )

    def __init__(self) -> None:
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


class Proxy:
    """The data plane: backends, routes, policies, and the aiohttp handler for each request."""

    def __init__(
        self,
        config: Config,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.clock = clock
        now = clock()
        self.events = EventRing(clock=clock, wall_clock=wall_clock)
        self.record = BalancerRecord()
        self.faults = Faults()
        self.backends: dict[str, Backend] = {}
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
        self.admission = Admission(config.limits, now)
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
        backend.cap = cap_bucket(backend.max_rps, now)
        if cfg.health.enabled:
            backend.health = core_health.HealthState(
                health_core_config(cfg.health), now, listener=self._on_health(backend.name)
            )
        backend.refresh(now)
        self.backends[backend.name] = backend
        self.outliers.set_members(list(self.backends))

    def _on_breaker(self, name: str) -> Callable[[Transition], None]:
        def emit(t: Transition) -> None:
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

    def tick(self) -> None:
        """Periodic upkeep (a few times a second): readmissions, slow-start weights, panic."""
        now = self.clock()
        for ev in self.outliers.tick(now):
            self._emit_ejection(ev)
        for name, spec in self.faults.expire(now):
            self._emit_fault_end(name, spec)
        self._refresh_pools(now)

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

    def set_limits(self, limits: LimitsConfig) -> None:
        """The one run-time entry point for changing admission limits."""
        self.admission.reconfigure(limits, self.clock())
        self.events.emit(
            EventKind.LIMITS,
            "limits changed: "
            + ", ".join(f"{k}={v}" for k, v in limits.model_dump(exclude_defaults=True).items())
            or "limits changed: none",
        )

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

    def force_breaker(self, name: str, mode: str) -> None:
        """``open``, ``closed``, ``disabled`` or ``auto``."""
        if mode not in ("open", "closed", "disabled", "auto"):
            raise ValueError(f"expected open, closed, disabled or auto, got {mode!r}")
        backend = self.backend(name)
        assert backend.breaker is not None
        backend.breaker.force(mode, self.clock())  # type: ignore[arg-type]

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

    def clear_fault(self, name: str) -> FaultSpec | None:
        """Remove the fault on backend ``name``; the spec it had, or None."""
        spec = self.faults.clear(name, self.clock())
        if spec is not None:
            self._emit_fault_end(name, spec)
        return spec

    def clear_faults(self, owner: str | None = None) -> list[str]:
        """Remove every fault (or every fault ``owner`` set): the guaranteed undo."""
        names = self.faults.clear_all(self.clock(), owner=owner)
        for name in names:
            st = self.faults.stats(name)
            if st is not None:
                self._emit_fault_end(name, st.spec)
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

    def _key(self, request: web.BaseRequest) -> str | None:
        if self._key_from_ip:
            return request.remote
        if self._hash_kind == "header":
            return request.headers.get(self._hash_name)
        return request.cookies.get(self._hash_name)

    def _episode(self, key: str, now: float) -> bool:
        last = self._episodes.get(key)
        self._episodes[key] = now
        return last is None or now - last > EPISODE_QUIET_S

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        rec = self.record
        rec.started()
        status, flag = 0, None
        admission = self.admission
        admitted = False
        try:
            if admission.active:
                now = self.clock()
                rejection, ok_headers = admission.admit(request.remote or "", request.headers, now)
                if rejection is not None:
                    flag = Flag.RATE_LIMITED
                    if self._episode(f"limit:{rejection.scope}", now):
                        self.events.emit(
                            EventKind.LIMITS,
                            f"rate limiting started ({rejection.scope} limit)",
                            scope=rejection.scope,
                        )
                    resp: web.StreamResponse = rejection.response(self.flags_header)
                    status = 429
                    rec.count_rejection(rejection.scope, now)
                    return resp
                admitted = True
                resp, flag = await self._forward(request, ok_headers)
            else:
                resp, flag = await self._forward(request, None)
            status = resp.status
            return resp
        except (ConnectionError, asyncio.CancelledError):
            raise
        except Exception as exc:
            # A defect of lbtui's own: the client still gets a JSON answer, and it is logged.
            log.exception("internal error while proxying %s %s", request.method, request.path)
            flag = Flag.INTERNAL_ERROR
            status = 500
            return error_response(
                500, "internal proxy error", flag, None, type(exc).__name__, self.flags_header
            )
        finally:
            if admitted:
                admission.release()
            rec.answered(status, flag, self.clock())

    def _eligible(self, pool: Pool, att: _Attempt, now: float) -> Callable[[Backend], bool]:
        tried = att.tried
        outliers = self.outliers
        panic = pool.panic

        def eligible(b: Backend) -> bool:
            if b in tried:
                return False
            if not panic and (not b.healthy() or outliers.is_ejected(b.name, now)):
                return False
            breaker = b.breaker
            if breaker is not None and not breaker.peek(now):
                return False
            cap = b.cap
            return cap is None or cap.peek(now)

        return eligible

    async def _forward(
        self, request: web.BaseRequest, extra_headers: list[tuple[str, str]] | None
    ) -> tuple[web.StreamResponse, str | None]:
        clock = self.clock
        method = request.method
        raw_path = request.raw_path
        route = self.route(request.host, request.path)
        pool = route.pool if route is not None else self.default_pool
        fallback = route.fallback if route is not None else self.fallback
        key = self._key(request) if pool.balancer.name in ("ip_hash", "consistent_hash") else None
        headers = request_headers(request.headers, request.remote or "", "http")

        body: StreamReader | bytes | None = None
        replayable = True
        if request.body_exists:
            length = request.content_length
            if length is not None and length <= self.retry_policy.retry_buffer_bytes:
                body = await request.read()
            else:
                body = request.content
                replayable = False

        att = _Attempt()
        try:
            while True:
                now = clock()
                backend = pool.pick(now, key, self._eligible(pool, att, now))
                if backend is None:
                    break
                att.tried.append(backend)
                breaker = backend.breaker
                if breaker is not None and not breaker.allow(now):
                    continue  # lost a half-open permit race: pick again
                if backend.cap is not None:
                    backend.cap.allow(now)
                resp = await self._try(
                    request,
                    method,
                    raw_path,
                    headers,
                    body,
                    replayable,
                    backend,
                    pool,
                    att,
                    fallback,
                    extra_headers,
                )
                if resp is not None:
                    if att.faulted:
                        self._observe_faults(att, resp.status)
                        return resp, att.flag or Flag.FAULT
                    return resp, att.flag
                if not self._may_go_on(method, replayable, att):
                    break
        finally:
            for _ in range(att.budget_held):
                self.retry_budget.release()
        failed, flag = self._failure(request, att, fallback, pool)
        if att.faulted:
            self._observe_faults(att, failed.status)
        return failed, flag

    def _observe_faults(self, att: _Attempt, status: int) -> None:
        """Proof: what the client finally got for a request faults were applied to."""
        outcome: int | str = "reset" if att.cut else status
        for name, kind in att.faulted:
            self.faults.observe(name, kind, outcome)

    def _may_go_on(self, method: str, replayable: bool, att: _Attempt) -> bool:
        """After a failed attempt: is another backend tried?"""
        last = att.last
        if last is None:
            return True
        if isinstance(last, UpstreamConnectError):
            # Nothing was sent (aiohttp connects before it reads a streamed body): always safe.
            if att.connect_failures >= self.max_attempts:
                return False
            att.flag = att.flag or Flag.RETRIED
            return True
        kind = RetryFailure.TIMEOUT if isinstance(last, UpstreamTimeout) else RetryFailure.RESET
        if isinstance(last, _StatusFailure):
            kind = RetryFailure.STATUS
        if (
            kind is RetryFailure.RESET
            and not att.reset_retried
            and method in IDEMPOTENT
            and replayable
        ):
            # A connection that broke before any response byte (a killed backend, a stale
            # keep-alive connection): the request goes once more elsewhere, whatever the retry
            # settings and budget — nginx's ``proxy_next_upstream error`` default. Bounded to
            # one per request, so a crashing fleet sees at most twice its load.
            att.reset_retried = True
            att.flag = Flag.RETRIED
            return True
        if not self.retry_policy.may_retry(
            method,
            kind,
            attempt=att.retries + 1,
            request_sent=True,
            response_started=False,
            body_replayable=replayable,
            status=last.status if isinstance(last, _StatusFailure) else None,
        ):
            if att.retries >= self.retry_policy.attempts and method in IDEMPOTENT:
                att.flag = Flag.RETRY_LIMIT
            return False
        if not self._budget_allows(att) or not self.retry_budget.try_acquire(self.record.in_flight):
            return False
        att.budget_held += 1
        att.retries += 1
        att.flag = Flag.RETRIED
        return True

    def _budget_allows(self, att: _Attempt) -> bool:
        """Whether the retry budget has room for one more retry (taken if so); an exhausted
        budget sets the request's flag and is reported as an event when it starts."""
        if self.retry_budget.peek(self.record.in_flight):
            return True
        self.retry_budget.try_acquire(self.record.in_flight)  # counts the exhaustion
        att.flag = Flag.RETRY_BUDGET
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
        pool.balancer.observe(backend, duration, not failure, now)

    async def _try(
        self,
        request: web.BaseRequest,
        method: str,
        raw_path: str,
        headers: CIMultiDict[str],
        body: StreamReader | bytes | None,
        replayable: bool,
        backend: Backend,
        pool: Pool,
        att: _Attempt,
        fallback: Fallback | None,
        extra_headers: list[tuple[str, str]] | None,
    ) -> web.StreamResponse | None:
        """One attempt on ``backend``: the response for the client, or None if it failed."""
        clock = self.clock
        brec = backend.record
        t0 = clock()
        brec.started(t0)
        if len(att.tried) > 1:
            brec.retries_total += 1
            self.record.count_retry(t0)
        fault = att.fault = self.faults.decide(backend.name, t0)
        try:
            up: BackendResponse | None = None
            if fault is not None:
                # Injected faults take the same paths as real ones: down raises a connect error,
                # hang a timeout, abort is an answer the backend "gave", delay just waits.
                att.faulted.append((backend.name, fault.kind))
                up = await before_send(
                    fault, backend.name, self.per_try_timeout_s or self.upstream.read_timeout_s
                )
            if up is None:
                up = await self.upstream.send(
                    backend, method, raw_path, headers, body, read_timeout_s=self.per_try_timeout_s
                )
        except UpstreamError as exc:
            now = clock()
            kind = (
                FailureKind.CONNECT
                if isinstance(exc, UpstreamConnectError)
                else FailureKind.TIMEOUT
                if isinstance(exc, UpstreamTimeout)
                else FailureKind.RESET
            )
            brec.failed(kind, now - t0, 0, now)
            self._outcome(backend, pool, True, now - t0, now)
            if kind is FailureKind.CONNECT:
                att.connect_failures += 1
            att.last = exc
            return None
        status = up.status
        is_failure = self._is_failure(status)
        if (
            status in self.retry_policy.retry_on_status
            and method in IDEMPOTENT
            and att.retries < self.retry_policy.attempts
            and self._budget_allows(att)
        ):
            # Worth another backend: drop this answer (its connection is not reused).
            up.close()
            now = clock()
            brec.finished(status, now - t0, 0, 0, now)
            self._outcome(backend, pool, is_failure, now - t0, now)
            att.last = _StatusFailure(backend.name, status)
            return None
        return await self._respond(
            request, up, backend, t0, pool, is_failure, fallback, extra_headers, att
        )

    def _is_failure(self, status: int) -> bool:
        fs = self.config.breaker.failure_statuses
        return status >= 500 if fs is None else status in fs

    def _failure(
        self, request: web.BaseRequest, att: _Attempt, fallback: Fallback | None, pool: Pool
    ) -> tuple[web.Response, str]:
        last = att.last
        now = self.clock()
        if isinstance(last, _StatusFailure):
            # Retries of a listed status ran out: the client gets a plain gateway error.
            last = UpstreamBroken(last.backend, f"answered {last.status} on every try")
        if last is None:
            reason = Flag.NO_HEALTHY_BACKEND
            if not att.tried and any(
                b.breaker is not None and not b.breaker.peek(now) for b in pool.backends
            ):
                reason = Flag.BREAKER_OPEN
        else:
            reason = last.reason
        if fallback is not None:
            stale_key = (request.host + request.raw_path) if request.method == "GET" else None
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
            return resp, att.flag if att.flag == Flag.RETRY_BUDGET else reason
        detail = last.detail
        if len(att.tried) > 1:
            detail += f" (tried {', '.join(b.name for b in att.tried)})"
        error = (
            "upstream connect failure"
            if isinstance(last, UpstreamConnectError)
            else "upstream connection broken"
        )
        return error_response(502, error, reason, last.backend, detail, fh), reason

    async def _respond(
        self,
        request: web.BaseRequest,
        up: BackendResponse,
        backend: Backend,
        t0: float,
        pool: Pool,
        is_failure: bool,
        fallback: Fallback | None,
        extra_headers: list[tuple[str, str]] | None,
        att: _Attempt,
    ) -> web.StreamResponse:
        clock = self.clock
        brec = backend.record
        status = up.status
        headers = response_headers(up.headers)
        if extra_headers:
            for k, v in extra_headers:
                headers.add(k, v)
        length = up.content_length
        bytes_in = request.content_length or 0
        method = request.method
        no_body = method == "HEAD" or status in (204, 304) or status < 200
        shaped = att.fault  # reset and bandwidth act on the body: always the streamed path
        if shaped is not None and shaped.kind not in (FaultKind.RESET, FaultKind.BANDWIDTH):
            shaped = None

        if shaped is None and not no_body and length is not None and length <= SMALL_RESPONSE_BYTES:
            try:
                data = await up.read()
            except UpstreamError as exc:
                now = clock()
                kind = (
                    FailureKind.TIMEOUT if isinstance(exc, UpstreamTimeout) else FailureKind.RESET
                )
                brec.failed(kind, now - t0, bytes_in, now)
                self._outcome(backend, pool, True, now - t0, now)
                up.close()
                att = _Attempt()
                att.last = exc
                att.tried.append(backend)
                resp, _ = self._failure(request, att, fallback, pool)
                return resp
            up.release()
            whole = web.Response(status=status, reason=up.reason, headers=headers, body=data)
            now = clock()
            brec.finished(status, now - t0, bytes_in, len(data), now)
            self._outcome(backend, pool, is_failure, now - t0, now)
            if (
                self._stale_wanted
                and status == 200
                and method == "GET"
                and fallback is not None
                and fallback.keeps_stale
            ):
                fallback.remember(request.host + request.raw_path, status, headers, data, now)
            return whole

        stream = web.StreamResponse(status=status, reason=up.reason, headers=headers)
        if length is not None:
            stream.content_length = length
        sent = 0
        chunks = up.chunks()
        if shaped is not None:
            chunks = body_fault(shaped, chunks, backend.name)
        try:
            await stream.prepare(request)
            # An injected reset cuts even a body-less answer: an applied fault never escapes.
            if not no_body or shaped is not None:
                async for chunk in chunks:
                    await stream.write(chunk)
                    sent += len(chunk)
            await stream.write_eof()
        except UpstreamError:
            # The head is out: the only honest signal left is to cut the client connection.
            att.cut = True
            now = clock()
            brec.failed(FailureKind.RESET, now - t0, bytes_in, now)
            self._outcome(backend, pool, True, now - t0, now)
            up.close()
            if request.transport is not None:
                request.transport.close()
            return stream
        except ConnectionError:
            # The client went away mid-response: not the backend's fault.
            up.close()
            now = clock()
            brec.finished(status, now - t0, bytes_in, sent, now)
            if backend.breaker is not None:
                backend.breaker.release(now)
            return stream
        up.release()
        now = clock()
        brec.finished(status, now - t0, bytes_in, sent, now)
        self._outcome(backend, pool, is_failure, now - t0, now)
        return stream


class _StatusFailure(UpstreamError):
    """An answer with a status listed in ``retries.retry_on_status``."""

    reason = "upstream_status"

    def __init__(self, backend: str, status: int) -> None:
        self.status = status
        super().__init__(backend, f"answered {status}")
