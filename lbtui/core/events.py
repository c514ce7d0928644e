"""Events: every state change worth a person's attention, on one clock, in one bounded ring.

Breaker transitions, ejections and readmissions, health flips, limit and config changes,
fallback activations, retry-budget exhaustion, injected faults and operator actions all become an
``Event``: an id that only grows (so a client can resume a stream from ``Last-Event-ID``), the
monotonic time it happened, the wall-clock time for people, a kind, the backend if any, a sentence
saying why, and a small flat payload of figures.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from enum import StrEnum

ORIGIN: ContextVar[str | None] = ContextVar("lbtui_event_origin", default=None)
"""Who is acting now, when it is not the operator at a console: the admin API sets it from the
``X-Lbtui-Origin`` header for the request it serves (a chaos run sends ``chaos NAME``), and
every event emitted meanwhile carries it as ``data["origin"]``."""


class EventKind(StrEnum):
    BREAKER = "breaker"
    EJECTION = "ejection"
    HEALTH = "health"
    LIMITS = "limits"
    FALLBACK = "fallback"
    RETRY_BUDGET = "retry_budget"
    FAULT = "fault"
    ACTION = "action"
    CONFIG = "config"
    FLEET = "fleet"


@dataclass(frozen=True, slots=True)
class Event:
    id: int
    at: float
    """Monotonic seconds, the clock every figure uses."""
    wall: float
    """Unix time, for people and reports."""
    kind: EventKind
    backend: str | None
    message: str
    data: dict[str, str | float | int | bool | None] = field(default_factory=dict)


class EventRing:
    """The newest ``capacity`` events; subscribers are called synchronously on each new one."""

    def __init__(
        self,
        capacity: int = 2048,
        *,
        clock: Callable[[], float],
        wall_clock: Callable[[], float],
    ) -> None:
        self._events: deque[Event] = deque(maxlen=capacity)
        self._next_id = 1
        self._clock = clock
        self._wall = wall_clock
        self._subscribers: list[Callable[[Event], None]] = []

    def emit(
        self,
        kind: EventKind,
        message: str,
        *,
        backend: str | None = None,
        at: float | None = None,
        **data: str | float | int | bool | None,
    ) -> Event:
        origin = ORIGIN.get()
        if origin is not None and "origin" not in data:
            data["origin"] = origin
        now = self._clock()
        wall = self._wall()
        if at is not None:
            wall -= now - at
        event = Event(self._next_id, now if at is None else at, wall, kind, backend, message, data)
        self._next_id += 1
        self._events.append(event)
        for fn in list(self._subscribers):
            fn(event)
        return event

    def subscribe(self, fn: Callable[[Event], None]) -> Callable[[], None]:
        """Call ``fn`` for each new event; returns the function that unsubscribes."""
        self._subscribers.append(fn)

        def unsubscribe() -> None:
            if fn in self._subscribers:
                self._subscribers.remove(fn)

        return unsubscribe

    def since(self, after_id: int = 0, limit: int | None = None) -> list[Event]:
        """Events with an id greater than ``after_id``, oldest first."""
        out = [e for e in self._events if e.id > after_id]
        return out if limit is None else out[-limit:]

    @property
    def last_id(self) -> int:
        return self._next_id - 1

    def __iter__(self) -> Iterator[Event]:
        return iter(self._events)

    def __len__(self) -> int:
        return len(self._events)
