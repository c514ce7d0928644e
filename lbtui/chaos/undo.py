"""Undo: what a run changed, remembered before each change, and put back at the end.

Every timeline action is noted (:meth:`Changes.note`) before it is carried out, with the value
the thing had before the run first touched it — the admin state, the weight, the algorithm,
the limits, a removed backend's address, a fleet backend's knobs. :func:`roll_back` then undoes
all of it, each step bounded by a timeout and logged, whatever ended the run: faults cleared
(the control's own session-scoped ``rollback``), forced breakers back to ``auto``, backends the
run added removed and those it removed added back, killed backends restarted and knobs
restored (when attached: a fleet the run started is stopped instead), admin states, weights,
algorithm and limits restored. Attached to HAProxy, every server's admin state and weight goes
back to the run's first snapshot, whichever the timeline touched (``HaproxyControl.restore``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

from lbtui.chaos.recording import RollbackStep
from lbtui.chaos.steps import (
    AddBackendStep,
    AlgorithmStep,
    Breaker,
    ClearFaultStep,
    Disable,
    Drain,
    Enable,
    Fault,
    Kill,
    Knobs,
    Limits,
    LoadRate,
    RemoveBackendStep,
    ReplicaKillStep,
    ReplicaRestartStep,
    Restart,
    Step,
    StoreStartStep,
    StoreStopStep,
    Weight,
    step_backend,
)
from lbtui.config import Algorithm
from lbtui.control.client import HttpControl
from lbtui.control.errors import ControlError
from lbtui.control.interface import Control
from lbtui.control.local import LocalControl
from lbtui.control.model import (
    AddBackend,
    AdminState,
    FleetKnobs,
    FleetRestart,
    ForceBreaker,
    RemoveBackend,
    ReplicaRestart,
    SetAdmin,
    SetAlgorithm,
    SetLimits,
    SetWeight,
    Snapshot,
    StoreStart,
)
from lbtui.control.threaded import ThreadedControl
from lbtui.fleet.supervisor import FleetError
from lbtui.sources.haproxy import HaproxyControl

UNDO_TIMEOUT_S = 10.0


@dataclass
class Changes:
    """What the run changed, with the value each thing had before it first changed it."""

    baseline: Snapshot
    faults: set[str] = field(default_factory=set)
    killed: set[str] = field(default_factory=set)
    admin: dict[str, str] = field(default_factory=dict)
    weight: dict[str, float] = field(default_factory=dict)
    algorithm: str | None = None
    limits: dict[str, Any] | None = None
    added: set[str] = field(default_factory=set)
    removed: dict[str, tuple[str, float]] = field(default_factory=dict)
    breakers: set[str] = field(default_factory=set)
    knobs: dict[str, dict[str, Any]] = field(default_factory=dict)
    replicas_killed: set[str] = field(default_factory=set)
    store_stopped: bool = False

    def _base(self, name: str) -> Any:
        return next((b for b in self.baseline.backends if b.name == name), None)

    def note(self, step: Step, knobs_before: dict[str, Any] | None) -> None:
        """Remember what ``step`` is about to change (call before carrying it out)."""
        name = step_backend(step)
        base = self._base(name) if name else None
        match step:
            case Fault():
                self.faults.add(step.backend)
            case ClearFaultStep():
                self.faults.discard(step.backend)
            case Kill():
                self.killed.add(step.backend)
            case Restart():
                self.killed.discard(step.backend)
            case Drain() | Disable() | Enable():
                if base is not None:
                    self.admin.setdefault(step.backend, base.admin)
            case Weight():
                if base is not None:
                    self.weight.setdefault(step.backend, base.weight_configured)
            case AlgorithmStep():
                if self.algorithm is None:
                    self.algorithm = self.baseline.algorithm
            case Limits():
                if self.limits is None:
                    self.limits = dict(self.baseline.limits.config)
            case AddBackendStep():
                if step.backend in self.removed:
                    self.removed.pop(step.backend)
                elif base is None:
                    self.added.add(step.backend)
            case RemoveBackendStep():
                if step.backend in self.added:
                    self.added.discard(step.backend)
                elif base is not None:
                    self.removed.setdefault(step.backend, (base.url, base.weight_configured))
                self.faults.discard(step.backend)
            case Breaker():
                self.breakers.add(step.backend)
            case Knobs():
                if knobs_before is not None:
                    self.knobs.setdefault(step.backend, knobs_before)
            case ReplicaKillStep():
                self.replicas_killed.add(step.replica)
            case ReplicaRestartStep():
                self.replicas_killed.discard(step.replica)
            case StoreStopStep():
                self.store_stopped = True
            case StoreStartStep():
                self.store_stopped = False
            case LoadRate():
                pass


async def _step(
    steps: list[RollbackStep], what: str, coro: Any, log: Callable[[str], None]
) -> None:
    try:
        await asyncio.wait_for(coro, UNDO_TIMEOUT_S)
    except (ControlError, FleetError, TimeoutError, OSError) as exc:
        steps.append(RollbackStep(what, False, str(exc) or type(exc).__name__))
        log(f"chaos: rollback: {what}: FAILED: {exc}")
    else:
        steps.append(RollbackStep(what, True))


async def roll_back(
    undo: Changes, control: Control, *, fleet_owned: bool, log: Callable[[str], None]
) -> list[RollbackStep]:
    """Undo everything the run changed, each step bounded by ``UNDO_TIMEOUT_S``; what was
    done, step by step. ``fleet_owned``: the run started the fleet and stops it next, so
    killed backends and changed knobs go with it."""
    steps: list[RollbackStep] = []

    async def step(what: str, coro: Any) -> None:
        await _step(steps, what, coro, log)

    if isinstance(control, LocalControl | HttpControl | ThreadedControl):
        try:
            cleared = await asyncio.wait_for(control.rollback(), UNDO_TIMEOUT_S)
        except (ControlError, TimeoutError) as exc:
            steps.append(RollbackStep("clear faults", False, str(exc)))
        else:
            steps.append(
                RollbackStep(
                    "clear faults",
                    True,
                    ("cleared on " + ", ".join(cleared)) if cleared else "none left on",
                )
            )
    if isinstance(control, HaproxyControl):
        # HAProxy: every server back to its admin state and weight as the run found it, the
        # ones the timeline did not touch too (a step that timed out may still have landed)
        try:
            changed = await asyncio.wait_for(control.restore(undo.baseline), UNDO_TIMEOUT_S)
        except (ControlError, TimeoutError) as exc:
            steps.append(RollbackStep("servers as found", False, str(exc)))
        else:
            detail = ("restored " + ", ".join(changed)) if changed else "none had changed"
            steps.append(RollbackStep("servers as found", True, detail))
    for name in sorted(undo.breakers):
        await step(f"breaker {name} auto", control.act(ForceBreaker(backend=name, mode="auto")))
    for name in sorted(undo.added):
        await step(f"remove added backend {name}", control.act(RemoveBackend(backend=name)))
    for name, (url, weight) in sorted(undo.removed.items()):
        await step(
            f"add removed backend {name}",
            control.act(AddBackend(name=name, url=url, weight=weight)),
        )
    if not fleet_owned:  # attached: bring back what the run killed, restore knobs
        for name in sorted(undo.killed):
            await step(f"restart killed {name}", control.act(FleetRestart(backend=name)))
        for name, knobs in sorted(undo.knobs.items()):
            values = {k: v for k, v in knobs.items() if isinstance(v, int | float | bool)}
            await step(
                f"knobs {name} restored", control.act(FleetKnobs(backend=name, knobs=values))
            )
    elif undo.killed:
        steps.append(
            RollbackStep(
                "killed backends", True, ", ".join(sorted(undo.killed)) + ": the fleet stops"
            )
        )
    if not fleet_owned:  # attached (lbtui demo --replicas): the store, then the replicas
        if undo.store_stopped:
            await step("start the limit store", control.act(StoreStart()))
        for name in sorted(undo.replicas_killed):
            await step(f"restart killed replica {name}", control.act(ReplicaRestart(replica=name)))
    elif undo.store_stopped or undo.replicas_killed:
        stopped = sorted(undo.replicas_killed) + (["the store"] if undo.store_stopped else [])
        steps.append(RollbackStep("replicas", True, ", ".join(stopped) + ": the run stops them"))
    if isinstance(control, HaproxyControl):
        undo.admin.clear()  # restored above, with every other server
        undo.weight.clear()
    for name, state in sorted(undo.admin.items()):
        admin = cast(AdminState, state if state in ("active", "draining") else "disabled")
        await step(f"admin {name} {state}", control.act(SetAdmin(backend=name, state=admin)))
    for name, weight in sorted(undo.weight.items()):
        await step(f"weight {name} {weight:g}", control.act(SetWeight(backend=name, weight=weight)))
    if undo.algorithm is not None:
        await step(
            f"algorithm {undo.algorithm}",
            control.act(SetAlgorithm(algorithm=cast(Algorithm, undo.algorithm))),
        )
    if undo.limits is not None:
        await step("limits restored", control.act(SetLimits(limits=undo.limits)))
    return steps
