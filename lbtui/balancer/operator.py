"""Operator actions on the data plane: each changes the balancer's :class:`State` and is one event.

:meth:`Operator.apply` takes a typed operation (``operations.py``) — add, remove, reweigh,
drain, disable or enable a backend; force its breaker; inject or clear a fault; change the
algorithm or the admission limits; an active health check's result — matches it to its handler
below, and, with several processes serving, hands the same object to ``replicate`` so that
every worker applies it too (``workers.py``). The control plane sends these (``LocalControl``),
the health checker its results.
"""

from __future__ import annotations

from collections.abc import Callable

from lbtui.balancer import operations as ops
from lbtui.balancer.pool import AdminState, Backend
from lbtui.balancer.state import State
from lbtui.config import ALGORITHM_NAMES, BackendConfig, LimitsConfig
from lbtui.config.store import STORE_KEYS
from lbtui.core.events import (
    AdminChanged,
    AlgorithmChanged,
    BackendAdded,
    BackendRemoved,
    FaultEnded,
    FaultSet,
    ForwardChanged,
    LimitsChanged,
    Unchanged,
    WeightChanged,
)
from lbtui.core.faults import FaultSpec

Replicate = Callable[[ops.Operation], None]
"""Sends an operation done here to the other processes."""


class Operator:
    """The operator actions of one balancer process."""

    def __init__(self, state: State) -> None:
        self.state = state
        self.clock = state.clock
        self.events = state.events
        self.faults = state.faults
        self.replicate: Replicate | None = None
        """Set by the primary of several processes: operations applied here are sent to the
        others."""
        self._membership_listeners: list[Callable[[Backend, bool], None]] = []
        self.on_reload: Callable[[ops.Reload], None] | None = None
        """Carries out a reload (set by ``Proxy``: it needs the pipeline too,
        ``reconfigure.py``)."""

    def apply(self, op: ops.Operation) -> object:
        """Carry out ``op`` (and send it to the other processes): what its handler returns."""
        result: object = None
        match op:
            case ops.AddBackend(config=config, group=group):
                result = self.add_backend(config, group)
            case ops.RemoveBackend(backend=name):
                result = self.remove_backend(name)
            case ops.SetWeight(backend=name, weight=weight):
                self.set_weight(name, weight)
            case ops.SetAdmin(backend=name, admin=admin):
                self.set_admin(name, admin)
            case ops.ForceBreaker(backend=name, mode=mode):
                self.force_breaker(name, mode)
            case ops.SetFault(backend=name, spec=spec, owner=owner):
                self.set_fault(name, spec, owner=owner)
            case ops.ClearFault(backend=name):
                result = self.clear_fault(name)
            case ops.ClearFaults(owner=owner):
                result = self.clear_faults(owner)
            case ops.SetAlgorithm(algorithm=algorithm):
                self.change_algorithm(algorithm)
            case ops.SetLimits(limits=limits):
                self.set_limits(limits)
            case ops.Reload():
                self._reload(op)
            case ops.SetForward(route=route, weights=weights):
                self.set_forward(route, dict(weights))
            case ops.HealthResult(backend=name, ok=ok, detail=detail):
                self._health_result(name, ok, detail)
        if self.replicate is not None:
            self.replicate(op)
        return result

    def _reload(self, op: ops.Reload) -> None:
        if self.on_reload is None:
            raise ValueError("this balancer cannot reload its config")
        self.on_reload(op)

    def _health_result(self, name: str, ok: bool, detail: str) -> None:
        backend = self.state.backends.get(name)
        if backend is not None and backend.health is not None:
            backend.health.record_check(ok, self.clock(), detail)

    # -- backends -----------------------------------------------------------------------------

    def add_backend(self, config: BackendConfig, group: str | None = None) -> Backend:
        """Add a backend to target group ``group`` (``KeyError`` for an unknown one), and to
        the default pool while that is every backend (no group is named ``default``)."""
        state = self.state
        if config.name in state.backends:
            raise ValueError(f"a backend named {config.name!r} exists already")
        pool = state.groups[group] if group is not None else state.default_pool
        now = self.clock()
        backend = Backend.from_config(config)
        state.add(backend, now, config)
        default = state.default_pool
        if pool is not default and "default" not in state.groups:
            default.set_backends([*default.backends, backend])
        pool.set_backends([*pool.backends, backend])
        if group is not None:
            state.joined.setdefault(group, []).append(config.name)
        state.refresh_pools(now)
        where = f" in group {group}" if group is not None else ""
        self.events.emit(
            BackendAdded(backend=config.name, message=f"backend added{where}: {config.url}")
        )
        for fn in self._membership_listeners:
            fn(backend, True)
        return backend

    def remove_backend(self, name: str) -> Backend:
        """Remove a backend from every pool; requests in flight on it finish."""
        state = self.state
        backend = state.backend(name)
        for names in state.joined.values():
            if name in names:
                names.remove(name)
        for pool in state.pools:
            if backend in pool.backends:
                pool.set_backends([b for b in pool.backends if b is not backend])
        del state.backends[name]
        self.clear_fault(name)
        state.outliers.set_members(list(state.backends))
        state.refresh_pools(self.clock())
        self.events.emit(BackendRemoved(backend=name, message="backend removed"))
        for fn in self._membership_listeners:
            fn(backend, False)
        return backend

    def on_membership(self, fn: Callable[[Backend, bool], None]) -> None:
        """Call ``fn(backend, added)`` when a backend is added or removed."""
        self._membership_listeners.append(fn)

    def set_weight(self, name: str, weight: float) -> None:
        if not 0 <= weight <= 1000:
            raise ValueError(f"expected a weight from 0 to 1000, got {weight}")
        state = self.state
        backend = state.backend(name)
        old = backend.configured_weight
        if old == float(weight):  # a no-op is not a transition (no "1 → 1" on the timeline)
            self._unchanged(name, "weight", f"weight already {old:g}")
            return
        backend.configured_weight = float(weight)
        for pool in state.pools:
            if backend in pool.backends:
                pool.set_backends(pool.backends)
        state.refresh_pools(self.clock())
        self.events.emit(
            WeightChanged(
                backend=name, message=f"weight {old:g} → {weight:g}", old=old, new=float(weight)
            )
        )

    def set_admin(self, name: str, admin: AdminState) -> None:
        """Drain (no new requests; in-flight ones finish), disable, or enable a backend."""
        backend = self.state.backend(name)
        old = backend.admin
        if old is admin:  # draining a draining backend keeps its since-time and its countdown
            self._unchanged(name, admin.value, f"admin state already {admin.value}")
            return
        backend.admin = admin
        backend.admin_since = self.clock()
        self.state.refresh_pools(backend.admin_since)
        in_flight = (
            f" ({backend.in_flight} requests in flight)" if admin is AdminState.DRAINING else ""
        )
        self.events.emit(
            AdminChanged(
                backend=name,
                message=f"admin state {old.value} → {admin.value}{in_flight}",
                old=old.value,
                new=admin.value,
            )
        )

    def force_breaker(self, name: str, mode: str) -> None:
        """``open``, ``closed``, ``disabled`` or ``auto``."""
        if mode not in ("open", "closed", "disabled", "auto"):
            raise ValueError(f"expected open, closed, disabled or auto, got {mode!r}")
        backend = self.state.backend(name)
        assert backend.breaker is not None
        backend.breaker.force(mode, self.clock())  # type: ignore[arg-type]

    def set_fault(self, name: str, spec: FaultSpec, *, owner: str | None = None) -> None:
        """Inject ``spec`` on backend ``name`` (replacing its fault, if any)."""
        self.state.backend(name)
        old = self.faults.get(name)
        self.faults.set(name, spec, self.clock(), owner=owner)
        if old is not None:
            self._emit_fault_end(name, old, replaced=True)
        self.events.emit(
            FaultSet(
                backend=name,
                message=f"fault injected: {spec.describe()}",
                fault=spec.kind.value,
                percent=spec.percent,
                duration_s=spec.duration_s,
                owner=owner,
            )
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

    def expire_faults(self, now: float) -> None:
        """End the faults whose time is up (``State.tick``)."""
        for name, spec in self.faults.expire(now):
            self._emit_fault_end(name, spec)

    def _emit_fault_end(self, name: str, spec: FaultSpec, *, replaced: bool = False) -> None:
        """An event for a fault that ended, with the proof of what it did."""
        st = self.faults.stats(name)
        if replaced or st is None or st.spec is not spec:
            why, proof, at = "replaced", "", None
        else:
            why, proof, at = st.ended or "ended", f"; {st.summary()}", st.ended_at
        self.events.emit(
            FaultEnded(
                backend=name,
                message=f"fault {why}: {spec.describe()}{proof}",
                fault=spec.kind.value,
            ),
            at=at,
        )

    # -- policies -------------------------------------------------------------------------------

    def set_algorithm(self, algorithm: str) -> None:
        if algorithm not in ALGORITHM_NAMES:
            raise ValueError(
                f"unknown algorithm {algorithm!r}; expected one of {', '.join(ALGORITHM_NAMES)}"
            )
        state = self.state
        state.algorithm = algorithm
        for pool in state.pools:
            if not pool.own_algorithm:  # a group's own algorithm stays
                pool.set_algorithm(algorithm)
        state.key_from_ip = algorithm == "ip_hash" or state.hash_kind == "client_ip"

    def _unchanged(self, name: str | None, action: str, what: str) -> None:
        """An operator action that found things as it wanted them: on the timeline as an
        action, but not as a transition."""
        self.events.emit(Unchanged(backend=name, message=f"{what}: no change", action=action))

    def change_algorithm(self, algorithm: str) -> None:
        old = self.state.algorithm
        if old == algorithm:
            self._unchanged(None, "algorithm", f"algorithm already {algorithm}")
            return
        self.set_algorithm(algorithm)
        self.events.emit(
            AlgorithmChanged(message=f"algorithm {old} → {algorithm}", old=old, new=algorithm)
        )

    def set_forward(self, name: str, weights: dict[str, float]) -> None:
        """New forward weights for route ``name`` (``KeyError`` for an unknown route or group)."""
        route = next((r for r in self.state.routes if r.name == name), None)
        if route is None:
            known = ", ".join(r.name for r in self.state.routes) or "none"
            raise KeyError(f"no route named {name!r} (known: {known})")
        old = route.weights()
        route.set_weights(weights)
        now = route.weights()
        text = ", ".join(f"{g}={w:g}" for g, w in now.items())
        if now == old:
            self._unchanged(None, "forward", f"route {name} forward weights already {text}")
            return
        self.events.emit(
            ForwardChanged(message=f"route {name} forwards {text}", route=name, weights=text)
        )

    def set_limits(self, limits: LimitsConfig) -> None:
        """The one run-time entry point for changing admission limits."""
        self.state.admission.reconfigure(limits, self.clock())
        changed = limits.model_dump(exclude_defaults=True, exclude=set(STORE_KEYS))
        text = ", ".join(f"{k}={v}" for k, v in changed.items()) or "none (no limits)"
        self.events.emit(LimitsChanged(message=f"limits changed: {text}"))
