"""``Control``: the one interface the consoles (TUI, chaos runner) use to see and steer a balancer.

Two implementations pass one contract suite (``tests/integration/test_control_contract.py``):
``LocalControl`` calls the balancer in the same process (``lbtui demo``), ``HttpControl`` talks
to its admin API (``lbtui attach``). Both raise the same ``lbtui.control.errors`` classes:
``NotFound`` for an unknown backend, ``Invalid`` (naming the field) for a bad value,
``Conflict``, ``Unavailable`` (no fleet, no faults registry, target unreachable),
``Unauthorized``, and ``ReadOnly`` for any action on a read-only control.

Every action is applied atomically (validated in full before anything changes) and becomes an
event on the balancer's timeline.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol

from lbtui.control.model import (
    Action,
    AddBackend,
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
    SetAdmin,
    SetAlgorithm,
    SetFault,
    SetLimits,
    SetWeight,
    Snapshot,
)


class Control(Protocol):
    """See and steer one balancer."""

    read_only: bool
    """Every action raises ``ReadOnly`` (``lbtui attach --read-only``)."""

    def describe_target(self) -> str:
        """``in-process``, or the admin API's URL."""
        ...

    async def snapshot(self) -> Snapshot: ...

    async def events(self, since_id: int = 0) -> list[Event]:
        """Events with an id above ``since_id`` still in the ring, oldest first."""
        ...

    def stream_events(self, since_id: int = 0) -> AsyncIterator[Event]:
        """Events above ``since_id``, then each new one as it happens, until the consumer stops
        iterating (HTTP: reconnects and resumes from the last id seen)."""
        ...

    async def add_backend(self, name: str, url: str, weight: float = 1) -> None: ...

    async def remove_backend(self, name: str) -> None: ...

    async def set_weight(self, name: str, weight: float) -> None: ...

    async def drain(self, name: str) -> None:
        """No new requests; those in flight finish."""
        ...

    async def disable(self, name: str) -> None: ...

    async def enable(self, name: str) -> None: ...

    async def set_algorithm(self, name: str) -> None: ...

    async def set_limits(self, **limits: Figure) -> None:
        """Change some ``[limits]`` keys (others keep their value; ``None`` clears one)."""
        ...

    async def force_breaker(self, name: str, mode: BreakerMode) -> None: ...

    async def set_fault(self, name: str, fault: FaultSpec) -> None: ...

    async def clear_fault(self, name: str) -> None: ...

    async def fleet_kill(self, name: str) -> None: ...

    async def fleet_restart(self, name: str) -> None: ...

    async def fleet_knobs(
        self, name: str, **knobs: float | int | bool
    ) -> dict[str, float | int | bool]:
        """Change a fleet backend's knobs; returns all of its knobs now."""
        ...

    async def aclose(self) -> None:
        """Release connections (HTTP); nothing to do in-process."""
        ...


async def apply(control: Control, action: Action) -> None:
    """Carry out ``action`` on ``control`` (scenario files and the admin API speak actions)."""
    match action:
        case AddBackend(name=name, url=url, weight=weight):
            await control.add_backend(name, url, weight)
        case RemoveBackend(backend=b):
            await control.remove_backend(b)
        case SetWeight(backend=b, weight=w):
            await control.set_weight(b, w)
        case SetAdmin(backend=b, state="draining"):
            await control.drain(b)
        case SetAdmin(backend=b, state="disabled"):
            await control.disable(b)
        case SetAdmin(backend=b, state="active"):
            await control.enable(b)
        case SetAlgorithm(algorithm=a):
            await control.set_algorithm(a)
        case SetLimits(limits=limits):
            await control.set_limits(**limits)
        case ForceBreaker(backend=b, mode=mode):
            await control.force_breaker(b, mode)
        case SetFault(backend=b, fault=fault):
            await control.set_fault(b, fault)
        case ClearFault(backend=b):
            await control.clear_fault(b)
        case FleetKill(backend=b):
            await control.fleet_kill(b)
        case FleetRestart(backend=b):
            await control.fleet_restart(b)
        case FleetKnobs(backend=b, knobs=knobs):
            await control.fleet_knobs(b, **knobs)
        case _:  # pragma: no cover - the union is closed
            raise TypeError(f"not an action: {action!r}")
