"""``Control``: the one interface the consoles (TUI, chaos runner) use to see and steer a balancer.

Four implementations pass one contract suite (``tests/integration/test_control_contract.py``):
``LocalControl`` calls the balancer in the same process (the admin API, ``lbtui demo``),
``HttpControl`` talks to its admin API (``lbtui attach``), ``ThreadedControl`` hands calls to a
control on another thread's loop (``lbtui demo``), and ``RecordedControl`` records actions
against a recorded snapshot (screenshots, dialog tests). Two more attach to balancers that are
not lbtui (``lbtui/sources``): ``HaproxyControl`` on HAProxy's Runtime API and the read-only
``PrometheusControl``, with a contract of their own (``tests/sources/test_source_contract.py``)
run against the real HAProxy and Prometheus. All raise the same
``lbtui.control.errors`` classes: ``NotFound`` for an unknown backend, ``Invalid`` (naming the
field) for a bad value, ``Conflict``, ``Unavailable`` (no fleet, no faults registry, target
unreachable), ``Unauthorized``, and ``ReadOnly`` for any action on a read-only control.

Steering is one method, :meth:`Control.act`, taking a typed ``Action`` (``control/model.py``):
the console's keys and forms, the admin API, the chaos runner and its undo all send the same
actions, so an action added to the union needs its dataclass, its handler in ``LocalControl``
and its key or form — the HTTP path, the thread bridge and the recorder carry any action.
Every action is applied atomically (validated in full before anything changes) and becomes an
event on the balancer's timeline.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol

from lbtui.control.model import Action, ActionResult, Event, Snapshot


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

    async def act(self, action: Action) -> ActionResult:
        """Carry out ``action``: validated in full, then done, and on the timeline. Returns a
        fleet backend's knobs after ``FleetKnobs``, else None."""
        ...

    async def aclose(self) -> None:
        """Release connections (HTTP); nothing to do in-process."""
        ...
