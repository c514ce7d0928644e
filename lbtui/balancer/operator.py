"""Operator actions on the data plane: each changes the balancer's :class:`State` and is one event.

Add, remove, reweigh, drain, disable or enable a backend; force its breaker; inject or clear a
fault; change the algorithm or the admission limits. The control plane calls these (through
``Control``), the health checker reports its results here, and with several processes serving
each action done here is sent to the others through ``replicate`` (``workers.py``), where the
same method runs again.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from lbtui.balancer.pool import AdminState, Backend
from lbtui.balancer.state import State
from lbtui.config import ALGORITHM_NAMES, BackendConfig, LimitsConfig
from lbtui.core.events import EventKind
from lbtui.core.faults import FaultSpec

Replicate = Callable[[str, tuple[Any, ...]], None]
"""Sends an operator action done here to the other processes, as (method name, arguments)."""


class Operator:
    """The operator actions of one balancer process."""

    def __init__(self, state: State) -> None:
        self.state = state
        self.clock = state.clock
        self.events = state.events
        self.faults = state.faults
        self.replicate: Replicate | None = None
        """Set by the primary of several processes: operator actions and health results done
        here are sent to the others."""
        self._membership_listeners: list[Callable[[Backend, bool], None]] = []

    def _replicate(self, method: str, *args: Any) -> None:
        if self.replicate is not None:
            self.replicate(method, args)

    # -- backends -----------------------------------------------------------------------------

    def add_backend(self, config: BackendConfig) -> Backend:
        """Add a backend to the default pool (and to nothing else)."""
        state = self.state
        if config.name in state.backends:
            raise ValueError(f"a backend named {config.name!r} exists already")
        now = self.clock()
        backend = Backend.from_config(config)
        state.add(backend, now, config)
        state.default_pool.set_backends([*state.default_pool.backends, backend])
        state.refresh_pools(now)
        self.events.emit(
            EventKind.ACTION, f"backend added: {config.url}", backend=config.name, action="add"
        )
        for fn in self._membership_listeners:
            fn(backend, True)
        self._replicate("add_backend", config)
        return backend

    def remove_backend(self, name: str) -> Backend:
        """Remove a backend from every pool; requests in flight on it finish."""
        state = self.state
        backend = state.backend(name)
        for pool in state.pools:
            if backend in pool.backends:
                pool.set_backends([b for b in pool.backends if b is not backend])
        del state.backends[name]
        self.clear_fault(name)
        state.outliers.set_members(list(state.backends))
        state.refresh_pools(self.clock())
        self.events.emit(EventKind.ACTION, "backend removed", backend=name, action="remove")
        for fn in self._membership_listeners:
            fn(backend, False)
        self._replicate("remove_backend", name)
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
        backend.configured_weight = float(weight)
        for pool in state.pools:
            if backend in pool.backends:
                pool.set_backends(pool.backends)
        state.refresh_pools(self.clock())
        self.events.emit(
            EventKind.ACTION,
            f"weight {old:g} → {weight:g}",
            backend=name,
            action="weight",
            old=old,
            new=float(weight),
        )
        self._replicate("set_weight", name, weight)

    def set_admin(self, name: str, admin: AdminState) -> None:
        """Drain (no new requests; in-flight ones finish), disable, or enable a backend."""
        backend = self.state.backend(name)
        old = backend.admin
        backend.admin = admin
        backend.admin_since = self.clock()
        self.state.refresh_pools(backend.admin_since)
        self.events.emit(
            EventKind.ACTION,
            f"admin state {old.value} → {admin.value}"
            + (
                f" ({backend.in_flight} requests in flight)" if admin is AdminState.DRAINING else ""
            ),
            backend=name,
            action=admin.value,
            old=old.value,
            new=admin.value,
        )
        self._replicate("set_admin", name, admin)

    def force_breaker(self, name: str, mode: str) -> None:
        """``open``, ``closed``, ``disabled`` or ``auto``."""
        if mode not in ("open", "closed", "disabled", "auto"):
            raise ValueError(f"expected open, closed, disabled or auto, got {mode!r}")
        backend = self.state.backend(name)
        assert backend.breaker is not None
        backend.breaker.force(mode, self.clock())  # type: ignore[arg-type]
        self._replicate("force_breaker", name, mode)

    def health_result(self, backend: Backend, ok: bool, detail: str) -> None:
        """An active check finished (called by the health checker)."""
        if backend.health is not None:
            backend.health.record_check(ok, self.clock(), detail)
        self._replicate("health_result_of", backend.name, ok, detail)

    def health_result_of(self, name: str, ok: bool, detail: str) -> None:
        """:meth:`health_result` by backend name (the checks run in the primary process)."""
        backend = self.state.backends.get(name)
        if backend is not None:
            self.health_result(backend, ok, detail)

    # -- faults ---------------------------------------------------------------------------------

    def set_fault(self, name: str, spec: FaultSpec, *, owner: str | None = None) -> None:
        """Inject ``spec`` on backend ``name`` (replacing its fault, if any)."""
        self.state.backend(name)
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
        self._replicate("set_fault_of", name, spec, owner)

    def set_fault_of(self, name: str, spec: FaultSpec, owner: str | None) -> None:
        self.set_fault(name, spec, owner=owner)

    def clear_fault(self, name: str) -> FaultSpec | None:
        """Remove the fault on backend ``name``; the spec it had, or None."""
        spec = self.faults.clear(name, self.clock())
        if spec is not None:
            self._emit_fault_end(name, spec)
        self._replicate("clear_fault", name)
        return spec

    def clear_faults(self, owner: str | None = None) -> list[str]:
        """Remove every fault (or every fault ``owner`` set): the guaranteed undo."""
        names = self.faults.clear_all(self.clock(), owner=owner)
        for name in names:
            st = self.faults.stats(name)
            if st is not None:
                self._emit_fault_end(name, st.spec)
        self._replicate("clear_faults", owner)
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
            EventKind.FAULT,
            f"fault {why}: {spec.describe()}{proof}",
            backend=name,
            at=at,
            change="end",
            fault=spec.kind.value,
        )

    # -- policies -------------------------------------------------------------------------------

    def set_algorithm(self, algorithm: str) -> None:
        if algorithm not in ALGORITHM_NAMES:
            raise ValueError(
                f"unknown algorithm {algorithm!r}; expected one of {', '.join(ALGORITHM_NAMES)}"
            )
        state = self.state
        for pool in state.pools:
            pool.set_algorithm(algorithm)
        state.key_from_ip = algorithm == "ip_hash" or state.hash_kind == "client_ip"
        self._replicate("set_algorithm", algorithm)

    def change_algorithm(self, algorithm: str) -> None:
        old = self.state.default_pool.algorithm
        self.set_algorithm(algorithm)
        self.events.emit(
            EventKind.CONFIG,
            f"algorithm {old} → {algorithm}",
            action="algorithm",
            old=old,
            new=algorithm,
        )

    def set_limits(self, limits: LimitsConfig) -> None:
        """The one run-time entry point for changing admission limits."""
        self.state.admission.reconfigure(limits, self.clock())
        self._replicate("set_limits", limits)
        changed = limits.model_dump(exclude_defaults=True)
        text = ", ".join(f"{k}={v}" for k, v in changed.items()) or "none (no limits)"
        self.events.emit(EventKind.LIMITS, f"limits changed: {text}")
