"""``RecordedControl``: a ``Control`` that serves a recorded snapshot, for screenshots and tests.

It answers every ``snapshot()`` with the same recorded ``Snapshot`` (so time stands still:
figures, countdowns and "since" clocks are those of the recording) and streams the recorded
events. Actions change nothing; each is kept in ``actions`` and answered with an ``action``
event, the way a real balancer confirms one, so the console's keys and dialogs can be driven
end to end without a balancer (docs, SVG snapshots, dialog tests).

A recording is ``NAME.json`` (``Snapshot.to_json()``) with, optionally, ``NAME.events.json``
next to it (a list of events, oldest first).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lbtui.control.errors import NotFound, ReadOnly
from lbtui.control.model import (
    Action,
    ActionResult,
    AddBackend,
    Announce,
    ClearFault,
    Event,
    FleetKill,
    FleetKnobs,
    FleetRestart,
    ForceBreaker,
    Note,
    SetAdmin,
    SetAlgorithm,
    SetFault,
    SetForward,
    SetLimits,
    SetWeight,
    Snapshot,
    events_from_json,
)


@dataclass(frozen=True, slots=True)
class RecordedAction:
    name: str
    backend: str | None
    args: dict[str, Any]
    action: Action | None = None
    """The action as it was sent."""


class RecordedControl:
    """Serves ``snapshot`` and ``events``; records actions instead of carrying them out."""

    def __init__(
        self,
        snapshot: Snapshot,
        events: list[Event] | None = None,
        *,
        read_only: bool = False,
        target: str = "recorded",
    ) -> None:
        self._snapshot = snapshot
        self._events: list[Event] = list(events or [])
        self.read_only = read_only
        self._target = target
        self.actions: list[RecordedAction] = []
        self._changed = asyncio.Event()

    @classmethod
    def load(cls, path: str | Path, *, read_only: bool = False) -> RecordedControl:
        p = Path(path)
        snapshot = Snapshot.from_json(p.read_bytes())
        events_path = p.with_suffix(".events.json")
        events = (
            events_from_json(json.loads(events_path.read_text())) if events_path.exists() else []
        )
        return cls(snapshot, events, read_only=read_only, target=f"recorded {p.name}")

    def describe_target(self) -> str:
        return self._target

    async def snapshot(self) -> Snapshot:
        return self._snapshot

    async def events(self, since_id: int = 0) -> list[Event]:
        return [e for e in self._events if e.id > since_id]

    async def stream_events(self, since_id: int = 0) -> AsyncIterator[Event]:
        last = since_id
        while True:
            fresh = [e for e in self._events if e.id > last]
            for e in fresh:
                last = e.id
                yield e
            self._changed.clear()
            if not [e for e in self._events if e.id > last]:
                await self._changed.wait()

    async def aclose(self) -> None:
        return None

    # --- actions: recorded, confirmed by an event

    def _record(
        self,
        label: str,
        backend: str | None,
        message: str,
        action: Action | None = None,
        **args: Any,
    ) -> None:
        if self.read_only:
            raise ReadOnly("this console is read-only")
        if backend is not None and all(b.name != backend for b in self._snapshot.backends):
            raise NotFound(f"no backend named {backend!r}", field="backend")
        self.actions.append(RecordedAction(label, backend, args, action))
        last = max(self._events[-1].id if self._events else 0, self._snapshot.last_event_id)
        self._snapshot = dataclasses.replace(self._snapshot, last_event_id=last + 1)
        self._events.append(
            Note(
                id=last + 1,
                at=self._snapshot.at,
                wall=self._snapshot.wall,
                backend=backend,
                message=f"{message} (recorded, not applied)",
            )
        )
        self._changed.set()

    async def act(self, action: Action) -> ActionResult:
        """Record ``action`` (checked as a balancer would: read-only, known backend) and
        confirm it with an event; nothing changes."""
        fields = {f.name: getattr(action, f.name) for f in dataclasses.fields(action)}
        fields.pop("kind")
        backend = fields.pop("backend", None)
        if isinstance(action, SetLimits | FleetKnobs):  # their figures, flat
            fields = dict(action.limits if isinstance(action, SetLimits) else action.knobs)
        self._record(_name(action), backend, _describe(action), action=action, **fields)
        return dict(action.knobs) if isinstance(action, FleetKnobs) else None


def _name(action: Action) -> str:
    """The short name a recorded action is kept under (``drain``, not ``set_admin``)."""
    if isinstance(action, SetAdmin):
        return {"draining": "drain", "disabled": "disable", "active": "enable"}[action.state]
    return action.kind


def _describe(action: Action) -> str:
    match action:
        case AddBackend(name=name, url=url):
            return f"add backend {name} {url}"
        case SetWeight(weight=weight):
            return f"weight set to {weight:g}"
        case SetAdmin(state=state):
            return {"draining": "draining", "disabled": "disabled", "active": "enabled"}[state]
        case SetAlgorithm(algorithm=algorithm):
            return f"algorithm set to {algorithm}"
        case SetLimits(limits=limits):
            return f"limits changed: {limits}"
        case ForceBreaker(mode=mode):
            return f"breaker forced {mode}"
        case SetFault(fault=fault):
            return f"fault set: {fault.kind}"
        case ClearFault():
            return "fault cleared"
        case FleetKill():
            return "process killed"
        case FleetRestart():
            return "process restarted"
        case Announce(text=text):
            return text
        case SetForward(route=route, weights=weights):
            shares = ", ".join(f"{g}={w:g}" for g, w in weights.items())
            return f"route {route} forwards {shares}"
        case _:
            return action.kind.replace("_", " ")
