"""``LocalControl``: the ``Control`` of a balancer in this process (``lbtui demo``, the admin API).

``act`` matches the action on its type; each handler validates it in full first (``Invalid``
names the field, ``NotFound`` the backend), then carries it out with one call to the proxy's
operator methods, which emit its event; the actions the proxy has no method for (faults in
another registry, fleet processes) emit theirs on the same event ring here. Nothing awaits
between validation and change on the event loop, so an action on the balancer is atomic to
every request and every other action (fleet actions wait for the process, and say what
happened once it has).
"""

from __future__ import annotations

import asyncio
import itertools
import math
import os
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any, cast

from pydantic import ValidationError

from lbtui.balancer import operations as ops
from lbtui.balancer.pool import AdminState as PoolAdminState
from lbtui.balancer.proxy import Proxy
from lbtui.config import ALGORITHM_NAMES, BackendConfig, LimitsConfig
from lbtui.control.errors import (
    Conflict,
    Invalid,
    NotFound,
    ReadOnly,
    Unavailable,
    invalid_from,
)
from lbtui.control.faults import FaultLink
from lbtui.control.model import (
    Action,
    ActionResult,
    AddBackend,
    Announce,
    BreakerMode,
    ClearFault,
    Event,
    FaultSpec,
    Figure,
    FleetKill,
    FleetKnobs,
    FleetRestart,
    ForceBreaker,
    RemoveBackend,
    ReplicaKill,
    ReplicaRestart,
    SetAdmin,
    SetAlgorithm,
    SetFault,
    SetForward,
    SetLimits,
    SetWeight,
    Snapshot,
    StoreStart,
    StoreStop,
)
from lbtui.control.replica_actions import replica_act
from lbtui.control.snapshot import build_snapshot
from lbtui.core.events import (
    BreakerUnchanged,
    FaultEnded,
    FleetFaultSet,
    KnobsChanged,
    NoFaultToClear,
    Note,
    ProcessKilled,
    ProcessRestarted,
)
from lbtui.core.faults import Faults
from lbtui.fleet.replicas import ReplicaSet
from lbtui.fleet.spec import KnobsUpdate
from lbtui.fleet.supervisor import Fleet, FleetError

_SESSIONS = itertools.count(1)
BREAKER_MODES: tuple[BreakerMode, ...] = ("open", "closed", "disabled", "auto")


def _number(value: object, field: str, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise Invalid(f"{field}: expected a number, got {value!r}", field=field)
    if not low <= value <= high:
        raise Invalid(f"{field}: expected from {low:g} to {high:g}, got {value!r}", field=field)
    return float(value)


class LocalControl:
    """Direct calls on ``proxy`` and ``fleet``.

    ``faults`` is the registry faults are set in: the proxy's own (the default, the one its
    pipeline consults), or another one for tests of the control plane alone. ``owner`` tags
    every fault set through this control (a fresh tag per control by default), so that
    :meth:`rollback` undoes this session's faults and no one else's."""

    def __init__(
        self,
        proxy: Proxy,
        fleet: Fleet | None = None,
        faults: Faults | None = None,
        *,
        read_only: bool = False,
        owner: str | None = None,
    ) -> None:
        self.proxy = proxy
        self.fleet = fleet
        self.owner = owner or f"control-{os.getpid()}-{next(_SESSIONS)}"
        self.faults = FaultLink(
            faults if faults is not None else proxy.faults,
            proxy.clock,
            owner=self.owner,
            peers=lambda: proxy.peer_records.values(),
        )
        self.read_only = read_only
        self.replicas: ReplicaSet | None = None
        """The other replicas and the limit store of ``lbtui demo --replicas`` (set by the
        demo on its first replica): what replica and store actions act on."""

    def describe_target(self) -> str:
        return "in-process"

    # --- seeing ------------------------------------------------------------------------------

    def snapshot_now(self) -> Snapshot:
        """The snapshot, synchronously (the admin API and metrics call this on the loop)."""
        return build_snapshot(self.proxy, None, self.fleet, faults=self.faults)

    async def snapshot(self) -> Snapshot:
        return self.snapshot_now()

    async def events(self, since_id: int = 0) -> list[Event]:
        return self.proxy.events.since(since_id)

    async def stream_events(self, since_id: int = 0) -> AsyncIterator[Event]:
        ring = self.proxy.events
        wake = asyncio.Event()
        unsubscribe = ring.subscribe(lambda _e: wake.set())
        last = since_id
        try:
            while True:
                wake.clear()  # before reading: an event emitted from here on wakes the wait
                for event in ring.since(last):
                    last = event.id
                    yield event
                await wake.wait()
        finally:
            unsubscribe()

    async def aclose(self) -> None:
        return None

    async def rollback(self) -> list[str]:
        """Clear every fault set through this control that is still on (the guaranteed undo
        at the end of a console session or a run); the backends it cleared. Allowed when
        read-only: it only ever removes faults."""
        if self.faults.registry is self.proxy.faults:
            return cast("list[str]", self.proxy.act(ops.ClearFaults(self.owner)))
        return self.faults.registry.clear_all(self.proxy.clock(), owner=self.owner)

    # --- helpers -----------------------------------------------------------------------------

    def _writable(self) -> None:
        if self.read_only:
            raise ReadOnly("this control is read-only: actions are refused")

    def _known(self, name: str) -> None:
        if name not in self.proxy.backends:
            known = ", ".join(sorted(self.proxy.backends)) or "none"
            raise NotFound(f"no backend named {name!r} (known: {known})")

    def _emits(self, fn: Callable[[], object]) -> bool:
        """Run ``fn``; whether it emitted an event itself."""
        before = self.proxy.events.last_id
        fn()
        return self.proxy.events.last_id != before

    # --- actions -----------------------------------------------------------------------------

    async def act(self, action: Action) -> ActionResult:
        """Carry out ``action``: its handler below validates it in full, then changes things."""
        self._writable()
        match action:
            case AddBackend():
                self._add_backend(action)
            case RemoveBackend(backend=name):
                self._known(name)
                self.proxy.act(ops.RemoveBackend(name))  # clears its fault too
            case SetWeight(backend=name, weight=weight):
                w = _number(weight, "weight", 0, 1000)
                self._known(name)
                self.proxy.act(ops.SetWeight(name, w))
            case SetAdmin(backend=name, state=state):
                self._known(name)
                self.proxy.act(ops.SetAdmin(name, _admin_state(state)))
            case SetAlgorithm(algorithm=algorithm):
                self._set_algorithm(algorithm)
            case SetLimits(limits=limits):
                self._set_limits(limits)
            case ForceBreaker(backend=name, mode=mode):
                self._force_breaker(name, mode)
            case SetFault(backend=name, fault=fault):
                self._set_fault(name, fault)
            case ClearFault(backend=name):
                self._clear_fault(name)
            case FleetKill() | FleetRestart() | FleetKnobs():
                return await self._fleet_act(action)
            case ReplicaKill() | ReplicaRestart() | StoreStop() | StoreStart():
                await replica_act(self.replicas, action, self.proxy.events)
            case SetForward(route=route, weights=weights):
                self._set_forward(route, weights)
            case Announce(text=text):
                self.proxy.events.emit(Note(message=_one_line(text)))
            case _:
                raise Invalid(f"kind: not an action: {action!r}", field="kind")
        return None

    def _add_backend(self, action: AddBackend) -> None:
        try:
            config = BackendConfig.model_validate(
                {
                    "name": action.name,
                    "url": action.url,
                    "weight": action.weight,
                    "zone": action.zone,
                    "max_rps": action.max_rps,
                }
            )
        except ValidationError as exc:
            raise invalid_from(exc) from None
        if config.name in self.proxy.backends:
            raise Conflict(f"a backend named {config.name!r} exists already", field="name")
        groups = self.proxy.state.groups
        if action.group is not None and action.group not in groups:
            known = ", ".join(groups) or "none"
            raise NotFound(f"group: no group named {action.group!r} (known: {known})")
        self.proxy.act(ops.AddBackend(config, action.group))

    def _set_forward(self, name: str, weights: Mapping[str, float]) -> None:
        routes = {r.name: r for r in self.proxy.state.routes}
        route = routes.get(name)
        if route is None:
            known = ", ".join(routes) or "none"
            raise NotFound(f"no route named {name!r} (known: {known})")
        groups = route.weights()
        for group, weight in weights.items():
            if group not in groups:
                raise Invalid(
                    f"weights.{group}: route {name!r} does not forward to it "
                    f"(it forwards to {', '.join(groups) or 'nothing'})",
                    field="weights",
                )
            _number(weight, f"weights.{group}", 0, 1000)
        if not weights:
            raise Invalid("weights: expected at least one group's weight", field="weights")
        self.proxy.act(ops.SetForward(name, tuple((g, float(w)) for g, w in weights.items())))

    def _set_algorithm(self, name: str) -> None:
        if name not in ALGORITHM_NAMES:
            raise Invalid(
                f"algorithm: expected one of {', '.join(ALGORITHM_NAMES)}, got {name!r}",
                field="algorithm",
            )
        self.proxy.act(ops.SetAlgorithm(name))

    def _set_limits(self, limits: Mapping[str, Figure]) -> None:
        values: dict[str, Any] = self.proxy.admission.config.model_dump()
        values.update(limits)
        try:
            config = LimitsConfig.model_validate(values)
        except ValidationError as exc:
            raise invalid_from(exc) from None
        self.proxy.act(ops.SetLimits(config))

    def _force_breaker(self, name: str, mode: BreakerMode) -> None:
        if mode not in BREAKER_MODES:
            raise Invalid(
                f"mode: expected one of {', '.join(BREAKER_MODES)}, got {mode!r}", field="mode"
            )
        self._known(name)
        if self.proxy.backends[name].breaker is None:
            raise Unavailable(f"backend {name!r} has no circuit breaker")
        if not self._emits(lambda: self.proxy.act(ops.ForceBreaker(name, mode))):
            # no transition (already in that state): the action still goes on the timeline
            self.proxy.events.emit(
                BreakerUnchanged(
                    backend=name, message=f"breaker force {mode}: no change", mode=mode
                )
            )

    def _set_fault(self, name: str, fault: FaultSpec) -> None:
        if not isinstance(fault, FaultSpec):
            raise Invalid(f"fault: expected a FaultSpec, got {type(fault).__name__}", field="fault")
        self._known(name)
        if self.faults.registry is self.proxy.faults:
            self.proxy.act(ops.SetFault(name, fault, self.owner))  # its event says what and why
            return
        self.faults.set(name, fault)
        self.proxy.events.emit(
            FleetFaultSet(
                backend=name,
                message=f"fault injected: {fault.describe()}",
                fault=fault.kind.value,
                percent=fault.percent,
            )
        )

    def _clear_fault(self, name: str) -> None:
        self._known(name)
        if self.faults.registry is self.proxy.faults:
            old = cast("FaultSpec | None", self.proxy.act(ops.ClearFault(name)))  # with its proof
        else:
            old = self.faults.clear(name)
            if old is not None:
                self.proxy.events.emit(
                    FaultEnded(
                        backend=name,
                        message=f"fault cleared: {old.describe()}",
                        fault=old.kind.value,
                    )
                )
        if old is None:
            self.proxy.events.emit(NoFaultToClear(backend=name, message="no fault to clear"))

    async def _fleet_act(self, action: FleetKill | FleetRestart | FleetKnobs) -> ActionResult:
        """The actions on the demo fleet's processes."""
        if isinstance(action, FleetKill):
            await self._fleet_kill(action.backend)
        elif isinstance(action, FleetRestart):
            await self._fleet_restart(action.backend)
        else:
            return await self._fleet_knobs(action.backend, action.knobs)
        return None

    def _fleet_member(self, name: str) -> Fleet:
        if self.fleet is None:
            raise Unavailable("no local fleet: fleet actions need lbtui demo")
        if name not in {m.name for m in self.fleet.backends}:
            known = ", ".join(m.name for m in self.fleet.backends)
            raise NotFound(f"no fleet backend named {name!r} (known: {known})")
        return self.fleet

    async def _fleet_kill(self, name: str) -> None:
        fleet = self._fleet_member(name)
        pid = fleet.member(name).pid
        try:
            await fleet.kill(name)
        except FleetError as exc:
            raise Unavailable(str(exc)) from None
        self.proxy.events.emit(
            ProcessKilled(backend=name, message=f"process killed (SIGKILL, pid {pid})")
        )

    async def _fleet_restart(self, name: str) -> None:
        fleet = self._fleet_member(name)
        try:
            member = await fleet.restart(name)
        except FleetError as exc:
            raise Unavailable(str(exc)) from None
        self.proxy.events.emit(
            ProcessRestarted(
                backend=name,
                message=f"process restarted (pid {member.pid}, restart {member.restarts})",
                pid=member.pid,
            )
        )

    async def _fleet_knobs(
        self, name: str, knobs: Mapping[str, float | int | bool]
    ) -> dict[str, float | int | bool]:
        try:
            update = KnobsUpdate.model_validate(dict(knobs))
        except ValidationError as exc:
            raise invalid_from(exc) from None
        fleet = self._fleet_member(name)
        try:
            now = await fleet.set_knobs(name, **update.model_dump(exclude_none=True))
        except FleetError as exc:
            raise Unavailable(str(exc)) from None
        changed = update.model_dump(exclude_none=True)
        self.proxy.events.emit(
            KnobsChanged(
                backend=name,
                message="knobs " + ", ".join(f"{k}={v}" for k, v in changed.items()),
                knobs=changed,
            )
        )
        return {k: v for k, v in now.items() if isinstance(v, int | float | bool)}


def _admin_state(state: str) -> PoolAdminState:
    try:
        return PoolAdminState(state)
    except ValueError:
        choices = ", ".join(s.value for s in PoolAdminState)
        raise Invalid(f"state: expected one of {choices}, got {state!r}", field="state") from None


def _one_line(text: str) -> str:
    """An announcement as one line of the timeline (control characters become spaces)."""
    return " ".join("".join(c if c.isprintable() else " " for c in text).split())
