"""What the state cache keeps of each backend's view, and how it tells what moved.

A kept view is its JSON and what splicing needs (``viewsplice``: the bytes around the record's
figures, the breaker's calls and the health object), with the key of counters that moves with
each outcome, the tick and rate slot it was read in, and whether it shows anything that moves
with time alone. ``StateCache`` decides from these, per backend and per poll, between nothing,
a splice and a rebuild.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from pydantic import TypeAdapter

from lbtui.balancer.pool import Backend
from lbtui.control.model import BackendView, HealthView, ProcessView
from lbtui.control.snapshot import ConnectionCount, health_view
from lbtui.control.viewsplice import Figures, Template
from lbtui.core.balance import Member
from lbtui.core.balancing import Balancer
from lbtui.core.events import EventRing

HEALTH = TypeAdapter(HealthView)
_HEALTH_KEY = b'"health":'
_CALM_BREAKER = ("closed", "disabled")


@dataclass(slots=True)
class Kept:
    key: tuple[object, ...]
    tick: int
    fast: int
    """The ``RATE_TICK_S`` slot it was built in."""
    json: bytes
    """The view, serialised: the view itself is not kept (bytes are no work for the garbage
    collector; 1,000 views of a dozen objects each made every full collection longer)."""
    version: int
    moving: bool
    """The view shows something that changes with time alone: rebuild it every tick."""
    rating: bool
    """It shows a rate over the "now" window: rebuild it every ``RATE_TICK_S``."""
    member: Member
    """What the pools' balance figures read of it."""
    checks: int
    """Health checks reported when it was built: a check that changes no state (the runs of
    passed and failed checks, the last one's detail) is shown at the next tick, not at once —
    at 1,000 backends checked every 2 s that is 500 rebuilds a second saved."""
    figures: Figures
    """The record's figures it shows."""
    parts: Template | None
    """``json`` around ``figures`` and the breaker's calls (``viewsplice``): when only they
    moved — an outcome or time passing, but no event, no health check, no change of weight,
    nothing else that moves with time alone — they are read again and spliced in, not the
    whole view rebuilt (a view is ~45 µs, a splice a few)."""
    calls: bytes
    """The breaker's calls as ``json`` shows them."""
    others: bool
    """It shows something that moves with time besides the record's windows (a breaker's
    countdown, slow start, an ejection, a fault, a score, a process): rebuilt whole each tick."""
    health: tuple[int, int]
    """Where its health's JSON lies in ``parts[0]`` (offset, length; ``(-1, 0)`` when it has
    no health checks or no template): a check that changes no state moves only that object,
    read again and spliced in at the next tick (1,000 backends checked every 2 s: 500 views a
    second that would otherwise be rebuilt whole, 45 ms at every tick)."""


_FIELDS = tuple(f.name for f in dataclasses.fields(Figures) if f.name != "rps_series")


def assign(f: Figures, new: Figures) -> None:
    """``new``'s figures into ``f``, in place: a view's figures stay the objects they were, so
    that splicing 1,000 views a poll makes no new containers for the collector to scan."""
    for name in _FIELDS:
        setattr(f, name, getattr(new, name))
    f.rps_series[:] = new.rps_series


def shows_rate(f: Figures, in_flight: int) -> bool:
    return bool(f.rps or f.demand_rps or f.bytes_per_s or in_flight)


def windows_moving(f: Figures, in_flight: int) -> bool:
    return bool(f.rps or f.bytes_per_s or f.error_ratio or in_flight or any(f.rps_series))


def others_moving(v: BackendView) -> bool:
    if v.breaker is not None and (
        v.breaker.state not in _CALM_BREAKER or v.breaker.retry_in_s is not None
    ):
        return True
    if v.health is not None and v.health.slow_start_remaining_s is not None:
        return True
    return bool(v.ejected or v.fault is not None or v.score is not None or v.process is not None)


def view_key(
    peers: tuple[int, ...], b: Backend, connections: ConnectionCount | None
) -> tuple[object, ...]:
    """What moves when the backend gets an outcome (not events: those are read from the ring);
    ``peers``: the workers' reports it is merged with (``Pass.peers``)."""
    r = b.record
    return (
        r.requests_total,
        r.in_flight,
        r.latency.count,
        r.retries_total,
        connections(b, r.in_flight) if connections is not None else 0,
        b.weight,
        peers,
    )


OUTCOME = 5
"""``view_key``'s fields before this one move with outcomes (and connections); those after
do not."""


def in_flight_only(b: Backend, in_flight: int) -> int:
    """The connection count where the upstream pool cannot be read: the requests in flight."""
    return in_flight


class EventCursor:
    """Reads the event ring from where it last stopped: which backends events named since."""

    def __init__(self, ring: EventRing) -> None:
        self._ring = ring
        self._id = 0

    def touched(self) -> set[str] | None:
        """Backends named by events since the last call; ``None`` when every backend may have
        changed (an event about the whole balancer, or events lost off the ring)."""
        ring = self._ring
        last = ring.last_id
        if last == self._id:
            return set()
        events = ring.since(self._id)
        lost = last < self._id or not events or events[0].id != self._id + 1
        self._id = last
        if lost or any(e.backend is None for e in events):
            return None
        return {e.backend for e in events if e.backend is not None}


@dataclass(slots=True)
class Pass:
    """What one pass reads once for every backend it visits."""

    connections: ConnectionCount | None
    scorer: Balancer[Backend] | None
    processes: dict[str, ProcessView]
    peers: tuple[int, ...]
    """The workers' records a view is merged from, by identity (new at each report)."""
    now: float
    tick: int
    fast: int


def health_span(parts: Template | None, health: HealthView | None) -> tuple[int, int]:
    """Where ``health``'s JSON lies in ``parts[0]``, checked byte for byte; ``(-1, 0)`` if it
    does not (no template, no health checks)."""
    if parts is None or health is None:
        return (-1, 0)
    head = parts[0]
    at = head.find(_HEALTH_KEY)
    data = HEALTH.dump_json(health)
    if at < 0 or not head.startswith(data, at + len(_HEALTH_KEY)):
        return (-1, 0)
    return (at + len(_HEALTH_KEY), len(data))


def rechecked(e: Kept, b: Backend, now: float, checks: int) -> bool:
    """Bring ``e``'s health up to ``checks`` reported checks by splicing its JSON into
    ``parts[0]``; ``False`` if that cannot be done (no kept span, or the health now shows
    slow start, which moves with time: the view is rebuilt whole)."""
    if e.checks == checks:
        return True
    at, length = e.health
    h = health_view(b, now)
    parts = e.parts
    if at < 0 or h is None or h.slow_start_remaining_s is not None or parts is None:
        return False
    data = HEALTH.dump_json(h)
    head = parts[0]
    e.parts = (head[:at] + data + head[at + length :], *parts[1:])
    e.health = (at, len(data))
    e.checks = checks
    return True
