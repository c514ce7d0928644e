"""Events: every state change worth a person's attention, on one clock, in one bounded ring.

Breaker transitions, ejections and readmissions, health flips, limit and config changes,
fallback activations, retry-budget exhaustion, injected faults and operator actions each have
their own class here, with typed fields: readers match on the class (``isinstance`` or
``match``), not on a ``kind`` string. Every event shares the base: an id that only grows (so a
client can resume a stream from ``Last-Event-ID``), the monotonic time it happened, the
wall-clock time for people, the backend if any, a sentence saying why, who acted
(``origin``) and, for an event a worker process made, its index.

On the wire (the admin API, ``lbtui attach``, recordings, chaos reports) an event stays the flat
form it always had: ``{"id", "at", "wall", "kind", "backend", "message", "data"}``, ``data``
built from the typed fields (:attr:`Event.data`). :func:`from_wire` reads that form back into
the typed class; a kind or a shape this version does not know (a newer balancer) becomes a
:class:`GenericEvent` carrying the payload as it came, so attach keeps working across versions
and the bytes survive a round trip either way. Not compiled (``lbtui/build.py``): pydantic
reads these classes at the edge.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, ClassVar, overload

ORIGIN: ContextVar[str | None] = ContextVar("lbtui_event_origin", default=None)
"""Who is acting now, when it is not the operator at a console: the admin API sets it from the
``X-Lbtui-Origin`` header for the request it serves (a chaos run sends ``chaos NAME``), and
every event emitted meanwhile carries it as ``origin`` (``data["origin"]`` on the wire)."""

Figure = str | float | int | bool | None
"""A flat value of an event's wire payload."""
Num = int | float
"""A figure that may be whole or not: kept as it was given, so its JSON keeps its form."""


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


_BASE_FIELDS = ("id", "at", "wall", "backend", "message", "origin", "worker", "balancer")


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    """What every event has. Built by an emitter without ``id``/``at``/``wall`` (the ring
    stamps them); the class says the kind, its fields the figures."""

    KIND: ClassVar[EventKind]
    PREFIX: ClassVar[tuple[tuple[str, Figure], ...]] = ()
    """Constant wire keys that come first in ``data`` (``"action": "weight"``): what told
    one shape of a kind from another before events had classes."""

    id: int = 0
    at: float = 0.0
    """Monotonic seconds, the clock every figure uses."""
    wall: float = 0.0
    """Unix time, for people and reports."""
    backend: str | None = None
    message: str = ""
    origin: str | None = None
    """Who acted, when not the operator at a console (``chaos NAME``, ``worker 1``)."""
    worker: int | None = None
    """The worker process whose traffic made it (forwarded to the primary), or that it is
    about; None for the primary's own."""
    balancer: str | None = None
    """The balancer it happened on, set by a console that watches several
    (``lbtui attach URL URL…``, ``lbtui.control.multi``); None on the balancer itself. Not on
    the wire: each balancer's timeline is its own."""

    @property
    def kind(self) -> str:
        """The wire tag (an :class:`EventKind`, or an unknown one's string)."""
        return self.KIND

    def payload(self) -> dict[str, Figure]:
        """This kind's own figures, in wire order."""
        out: dict[str, Figure] = dict(self.PREFIX)
        for name in _own_fields(type(self)):
            out[name] = getattr(self, name)
        return out

    @property
    def data(self) -> dict[str, Figure]:
        """The wire payload: ``worker`` first, the kind's figures, ``origin`` last (the order
        emitters always gave them)."""
        out: dict[str, Figure] = {} if self.worker is None else {"worker": self.worker}
        out.update(self.payload())
        if self.origin is not None:
            out["origin"] = self.origin
        return out

    @classmethod
    def parse(cls, payload: Mapping[str, Figure]) -> dict[str, Any] | None:
        """Constructor arguments from a wire payload (without worker and origin), or None
        when a field is missing or of the wrong type; the caller checks the rebuilt bytes."""
        hints = _hints(cls)
        out: dict[str, Any] = {}
        for name in _own_fields(cls):
            if name not in payload or not _fits(payload[name], hints[name]):
                return None
            out[name] = payload[name]
        return out


# --- the kinds ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class BreakerChanged(Event):
    """A circuit breaker's transition (``old`` → ``new``: closed, open, half_open,
    forced_open, disabled)."""

    KIND = EventKind.BREAKER
    old: str
    new: str


@dataclass(frozen=True, slots=True, kw_only=True)
class HealthChanged(Event):
    """An active health check flipped a backend (``up`` / ``down``)."""

    KIND = EventKind.HEALTH
    old: str
    new: str


@dataclass(frozen=True, slots=True, kw_only=True)
class EjectionChanged(Event):
    """Outlier detection ejected, readmitted, or declined to eject (``change``)."""

    KIND = EventKind.EJECTION
    change: str
    """``ejected``, ``readmitted`` or ``ejection_skipped``."""
    until: float | None
    """When an ejection ends by itself (monotonic); None otherwise."""


@dataclass(frozen=True, slots=True, kw_only=True)
class PanicChanged(Event):
    """A pool entered or left panic mode (too few backends available to honour ejections)."""

    KIND = EventKind.EJECTION
    available: int
    total: int


@dataclass(frozen=True, slots=True, kw_only=True)
class ZoneSpill(Event):
    """A group that stays in the balancer's zone started or stopped sending to other zones."""

    KIND = EventKind.EJECTION
    group: str
    zone: str
    spilling: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class DiscoveryChanged(Event):
    """A group's discovery source (file, DNS) changed its backends, or failed (the last good
    set stays): ``ok`` says which, the message what and why."""

    KIND = EventKind.CONFIG
    group: str
    source: str
    ok: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class LimitsChanged(Event):
    """An operator changed the rate limits (the message lists them)."""

    KIND = EventKind.LIMITS


@dataclass(frozen=True, slots=True, kw_only=True)
class RateLimited(Event):
    """An episode of 429s began (once per episode, not per request)."""

    KIND = EventKind.LIMITS
    scope: str


@dataclass(frozen=True, slots=True, kw_only=True)
class LimitStoreChanged(Event):
    """The shared limit store (``[limits] store``) was lost or answers again."""

    KIND = EventKind.LIMITS
    store: str
    """The store's URL without credentials."""
    up: bool
    peers: int
    """Live replicas last seen, this one included."""
    reason: str
    """Why it was lost (empty when it answers)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class FallbackServed(Event):
    """An episode of fallback answers began (once per episode, not per request)."""

    KIND = EventKind.FALLBACK
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryBudgetExhausted(Event):
    """A retry was refused because the retry budget was spent (once per episode)."""

    KIND = EventKind.RETRY_BUDGET


@dataclass(frozen=True, slots=True, kw_only=True)
class FaultSet(Event):
    """A fault injected into the balancer's path to a backend."""

    KIND = EventKind.FAULT
    PREFIX = (("action", "fault"), ("change", "set"))
    fault: str
    percent: Num
    duration_s: Num | None
    owner: str | None


@dataclass(frozen=True, slots=True, kw_only=True)
class FleetFaultSet(Event):
    """A fault injected into a demo fleet's backend process itself (no duration or owner)."""

    KIND = EventKind.FAULT
    PREFIX = (("action", "fault"), ("change", "set"))
    fault: str
    percent: Num


@dataclass(frozen=True, slots=True, kw_only=True)
class FaultEnded(Event):
    """A fault ended: cleared, replaced, expired or done (the message says which, with the
    proof of what it did)."""

    KIND = EventKind.FAULT
    PREFIX = (("change", "end"),)
    fault: str


@dataclass(frozen=True, slots=True, kw_only=True)
class NoFaultToClear(Event):
    """An operator cleared a fault where there was none."""

    KIND = EventKind.FAULT
    PREFIX = (("action", "fault"), ("change", "none"))


@dataclass(frozen=True, slots=True, kw_only=True)
class WeightChanged(Event):
    KIND = EventKind.ACTION
    PREFIX = (("action", "weight"),)
    old: Num
    new: Num


@dataclass(frozen=True, slots=True, kw_only=True)
class ForwardChanged(Event):
    """A route's forward weights set by an operator (canary, blue/green shift)."""

    KIND = EventKind.ACTION
    route: str
    weights: str
    """``group=weight`` pairs, comma-separated, as they are now."""


@dataclass(frozen=True, slots=True, kw_only=True)
class AdminChanged(Event):
    """A backend's admin state set by an operator (active, draining, disabled)."""

    KIND = EventKind.ACTION
    old: str
    new: str

    def payload(self) -> dict[str, Figure]:
        return {"action": self.new, "old": self.old, "new": self.new}


@dataclass(frozen=True, slots=True, kw_only=True)
class BackendAdded(Event):
    KIND = EventKind.ACTION
    PREFIX = (("action", "add"),)


@dataclass(frozen=True, slots=True, kw_only=True)
class BackendRemoved(Event):
    KIND = EventKind.ACTION
    PREFIX = (("action", "remove"),)


@dataclass(frozen=True, slots=True, kw_only=True)
class BreakerUnchanged(Event):
    """An operator forced a breaker into the state it was in: on the timeline, not a
    transition."""

    KIND = EventKind.ACTION
    PREFIX = (("action", "breaker"),)
    mode: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Unchanged(Event):
    """An operator action that found things as it wanted them (``action`` names it)."""

    KIND = EventKind.ACTION
    action: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Note(Event):
    """An action with nothing but its sentence: a console's own note (a chaos run it started),
    an action a recording only noted."""

    KIND = EventKind.ACTION


@dataclass(frozen=True, slots=True, kw_only=True)
class AlgorithmChanged(Event):
    KIND = EventKind.CONFIG
    PREFIX = (("action", "algorithm"),)
    old: str
    new: str


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkerExited(Event):
    """A worker process died (``worker`` says which) and is being started again."""

    KIND = EventKind.CONFIG
    pid: int | None
    exit_code: int | None


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkerRestarted(Event):
    KIND = EventKind.CONFIG
    pid: int | None


@dataclass(frozen=True, slots=True, kw_only=True)
class ConfigNote(Event):
    """A remark on the configuration (slow start with a weight-blind algorithm)."""

    KIND = EventKind.CONFIG


@dataclass(frozen=True, slots=True, kw_only=True)
class ConfigReloaded(Event):
    """The config file was read again and applied as a difference: the message lists what
    changed (``config reloaded: +b3, algorithm round_robin → least_request``)."""

    KIND = EventKind.CONFIG
    PREFIX = (("action", "reload"),)
    changes: int
    """How many changes were applied (0: the file says what the balancer does already)."""
    not_applied: int
    """Changes that take a restart and were left as they were."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ConfigRejected(Event):
    """A reload found the file broken: nothing changed; the message gives the problems."""

    KIND = EventKind.CONFIG
    PREFIX = (("action", "reload_rejected"),)
    problems: int


@dataclass(frozen=True, slots=True, kw_only=True)
class ReplicaChanged(Event):
    """A demo's balancer replica, or the limit store the replicas share, was killed or stopped,
    or started again (``lbtui demo --replicas``; chaos ``replica_kill`` …)."""

    KIND = EventKind.FLEET
    PREFIX = (("action", "replica"),)
    target: str
    """The replica's name, or ``store``."""
    change: str
    """``killed``, ``restarted``, ``stopped`` or ``started``."""
    pid: int | None


@dataclass(frozen=True, slots=True, kw_only=True)
class ProcessKilled(Event):
    """A demo fleet's backend process was killed (SIGKILL)."""

    KIND = EventKind.FLEET
    PREFIX = (("action", "kill"),)


@dataclass(frozen=True, slots=True, kw_only=True)
class ProcessRestarted(Event):
    KIND = EventKind.FLEET
    PREFIX = (("action", "restart"),)
    pid: int | None


@dataclass(frozen=True, slots=True, kw_only=True)
class KnobsChanged(Event):
    """A demo fleet backend's knobs (latency, error rate...) changed: those that changed."""

    KIND = EventKind.FLEET
    PREFIX = (("action", "knobs"),)
    knobs: dict[str, Figure] = field(default_factory=dict)

    def payload(self) -> dict[str, Figure]:
        return {**dict(self.PREFIX), **self.knobs}

    @classmethod
    def parse(cls, payload: Mapping[str, Figure]) -> dict[str, Any] | None:
        return {"knobs": {k: v for k, v in payload.items() if k != "action"}}


@dataclass(frozen=True, slots=True, kw_only=True)
class GenericEvent(Event):
    """An event of a kind, or a shape, this version has no class for (a newer balancer's):
    kept as it came, so it is shown, filtered and passed on unchanged."""

    name: str
    """Its kind on the wire."""
    fields: dict[str, Figure] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        try:
            return EventKind(self.name)
        except ValueError:
            return self.name

    def payload(self) -> dict[str, Figure]:
        return dict(self.fields)


KINDS: tuple[type[Event], ...] = (
    BreakerChanged,
    HealthChanged,
    EjectionChanged,
    PanicChanged,
    LimitStoreChanged,
    ZoneSpill,
    DiscoveryChanged,
    RateLimited,
    LimitsChanged,
    FallbackServed,
    RetryBudgetExhausted,
    FaultSet,
    FleetFaultSet,
    FaultEnded,
    NoFaultToClear,
    WeightChanged,
    ForwardChanged,
    AdminChanged,
    BackendAdded,
    BackendRemoved,
    BreakerUnchanged,
    Unchanged,
    Note,
    AlgorithmChanged,
    WorkerExited,
    WorkerRestarted,
    ConfigReloaded,
    ConfigRejected,
    ConfigNote,
    ReplicaChanged,
    ProcessKilled,
    ProcessRestarted,
    KnobsChanged,
)
"""Every typed kind, the more specific shape of a kind before the looser one (parsing takes
the first whose rebuilt payload is the one that came)."""

_BY_KIND: dict[str, tuple[type[Event], ...]] = {
    k.value: tuple(c for c in KINDS if c.KIND is k) for k in EventKind
}


# --- reading the wire form ---------------------------------------------------------------------


def _own_fields(cls: type[Event]) -> tuple[str, ...]:
    names = _OWN.get(cls)
    if names is None:
        names = tuple(f.name for f in dataclasses.fields(cls) if f.name not in _BASE_FIELDS)
        _OWN[cls] = names
    return names


_OWN: dict[type[Event], tuple[str, ...]] = {}
_HINTS: dict[type[Event], dict[str, Any]] = {}


def _hints(cls: type[Event]) -> dict[str, Any]:
    hints = _HINTS.get(cls)
    if hints is None:
        hints = typing.get_type_hints(cls)
        _HINTS[cls] = hints
    return hints


def _fits(value: object, hint: Any) -> bool:
    """Whether a wire figure has the field's type (``bool`` is not a number here)."""
    if hint is type(None):
        return value is None
    origin = typing.get_origin(hint)
    if origin is typing.Union or origin is types.UnionType:
        return any(_fits(value, h) for h in typing.get_args(hint))
    if origin is dict:
        return isinstance(value, dict)
    if isinstance(value, bool):
        return hint is bool
    return isinstance(hint, type) and isinstance(value, hint)


def _same(a: Mapping[str, Figure], b: Mapping[str, Figure]) -> bool:
    """Equal in keys, order, types and values: what makes equal JSON."""
    return len(a) == len(b) and all(
        ka == kb and type(va) is type(vb) and va == vb
        for (ka, va), (kb, vb) in zip(a.items(), b.items(), strict=True)
    )


def from_wire(
    *,
    id: int,
    at: float,
    wall: float,
    kind: str,
    backend: str | None,
    message: str,
    data: Mapping[str, Figure],
) -> Event:
    """The typed event of a wire form; a :class:`GenericEvent` when no class rebuilds exactly
    this payload (an unknown kind, or a shape of a newer version)."""
    keys = list(data)
    w = data["worker"] if keys and keys[0] == "worker" else None
    o = data["origin"] if keys and keys[-1] == "origin" else None
    worker = w if isinstance(w, int) and not isinstance(w, bool) else None
    origin = o if isinstance(o, str) else None
    base: dict[str, Any] = {
        "id": id,
        "at": at,
        "wall": wall,
        "backend": backend,
        "message": message,
    }
    if (w is None or worker is not None) and (o is None or origin is not None):
        payload = {k: v for k, v in data.items() if not (k == "worker" and worker is not None)}
        if origin is not None:
            del payload["origin"]
        for cls in _BY_KIND.get(kind, ()):
            args = cls.parse(payload)
            if args is None:
                continue
            event = cls(**base, origin=origin, worker=worker, **args)
            if _same(event.data, data):
                return event
        return GenericEvent(**base, origin=origin, worker=worker, name=kind, fields=payload)
    return GenericEvent(**base, name=kind, fields=dict(data))


# --- the ring ----------------------------------------------------------------------------------


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

    @overload
    def emit(self, event: Event, *, at: float | None = None) -> Event: ...

    @overload
    def emit(
        self,
        event: EventKind,
        message: str,
        *,
        backend: str | None = None,
        at: float | None = None,
        **data: Figure,
    ) -> Event: ...

    def emit(
        self,
        event: Event | EventKind,
        message: str = "",
        *,
        backend: str | None = None,
        at: float | None = None,
        **data: Figure,
    ) -> Event:
        """Stamp ``event`` (id, times, the acting origin) and keep it. ``at``: when it
        happened, if before now (a transition the core timed). The older form, a kind with
        the wire payload as keywords, is read as :func:`from_wire` reads a wire event."""
        origin = ORIGIN.get()
        now = self._clock()
        wall = self._wall()
        if at is not None:
            wall -= now - at
        if isinstance(event, Event):
            event = dataclasses.replace(
                event,
                id=self._next_id,
                at=now if at is None else at,
                wall=wall,
                origin=event.origin if event.origin is not None else origin,
            )
        else:
            if origin is not None and "origin" not in data:
                data["origin"] = origin
            event = from_wire(
                id=self._next_id,
                at=now if at is None else at,
                wall=wall,
                kind=event.value,
                backend=backend,
                message=message,
                data=data,
            )
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
