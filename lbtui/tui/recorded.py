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
    BreakerMode,
    Event,
    EventKind,
    FaultSpec,
    Snapshot,
    events_from_json,
)

Figure = float | int | str | bool | None


@dataclass(frozen=True, slots=True)
class RecordedAction:
    name: str
    backend: str | None
    args: dict[str, Any]


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

    def _record(self, action: str, backend: str | None, message: str, **args: Any) -> None:
        if self.read_only:
            raise ReadOnly("this console is read-only")
        if backend is not None and all(b.name != backend for b in self._snapshot.backends):
            raise NotFound(f"no backend named {backend!r}", field="backend")
        self.actions.append(RecordedAction(action, backend, args))
        last = max(self._events[-1].id if self._events else 0, self._snapshot.last_event_id)
        self._snapshot = dataclasses.replace(self._snapshot, last_event_id=last + 1)
        self._events.append(
            Event(
                id=last + 1,
                at=self._snapshot.at,
                wall=self._snapshot.wall,
                kind=EventKind.ACTION,
                backend=backend,
                message=f"{message} (recorded, not applied)",
            )
        )
        self._changed.set()

    async def add_backend(self, name: str, url: str, weight: float = 1) -> None:
        self._record("add_backend", None, f"add backend {name} {url}", name=name, url=url)

    async def remove_backend(self, name: str) -> None:
        self._record("remove_backend", name, "remove backend")

    async def set_weight(self, name: str, weight: float) -> None:
        self._record("set_weight", name, f"weight set to {weight:g}", weight=weight)

    async def drain(self, name: str) -> None:
        self._record("drain", name, "draining")

    async def disable(self, name: str) -> None:
        self._record("disable", name, "disabled")

    async def enable(self, name: str) -> None:
        self._record("enable", name, "enabled")

    async def set_algorithm(self, name: str) -> None:
        self._record("set_algorithm", None, f"algorithm set to {name}", algorithm=name)

    async def set_limits(self, **limits: Figure) -> None:
        self._record("set_limits", None, f"limits changed: {limits}", **limits)

    async def force_breaker(self, name: str, mode: BreakerMode) -> None:
        self._record("force_breaker", name, f"breaker forced {mode}", mode=mode)

    async def set_fault(self, name: str, fault: FaultSpec) -> None:
        self._record("set_fault", name, f"fault set: {fault.kind}", fault=fault)

    async def clear_fault(self, name: str) -> None:
        self._record("clear_fault", name, "fault cleared")

    async def fleet_kill(self, name: str) -> None:
        self._record("fleet_kill", name, "process killed")

    async def fleet_restart(self, name: str) -> None:
        self._record("fleet_restart", name, "process restarted")

    async def fleet_knobs(
        self, name: str, **knobs: float | int | bool
    ) -> dict[str, float | int | bool]:
        self._record("fleet_knobs", name, f"knobs {knobs}", **knobs)
        return dict(knobs)
