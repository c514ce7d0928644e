"""Events as typed classes: each wire shape reads back into its own class and writes the same
bytes; a kind or shape this version does not know (a newer balancer's) stays readable as a
``GenericEvent`` and passes through unchanged, so ``lbtui attach`` works across versions.

``test_event_json.py`` pins the events a balancer makes on its own; the shapes below are the
ones it makes only with a fleet, with workers, or for an action that changed nothing, written
as the emitters wrote them before events had classes (keyword order = ``data`` order).
"""

from __future__ import annotations

import json

import pytest

from lbtui.control.model import event_from_json, event_to_json_bytes, events_from_json
from lbtui.core.events import (
    KINDS,
    ORIGIN,
    BreakerChanged,
    BreakerUnchanged,
    EventKind,
    EventRing,
    FleetFaultSet,
    GenericEvent,
    KnobsChanged,
    NoFaultToClear,
    Note,
    ProcessRestarted,
    Unchanged,
    WorkerExited,
    WorkerRestarted,
)


def line(kind: str, data: str, backend: str | None = "b1") -> str:
    b = "null" if backend is None else f'"{backend}"'
    return (
        f'{{"id":7,"at":12.5,"wall":1800000012.5,"kind":"{kind}","backend":{b},'
        f'"message":"m","data":{data}}}'
    )


SHAPES = [
    (BreakerUnchanged, line("action", '{"action":"breaker","mode":"open"}')),
    (
        FleetFaultSet,
        line("fault", '{"action":"fault","change":"set","fault":"abort","percent":50}'),
    ),
    (NoFaultToClear, line("fault", '{"action":"fault","change":"none"}')),
    (Unchanged, line("action", '{"action":"algorithm"}', None)),
    (Note, line("action", "{}")),
    (WorkerExited, line("config", '{"worker":1,"pid":4242,"exit_code":-9}', None)),
    (WorkerRestarted, line("config", '{"worker":1,"pid":4243}', None)),
    (ProcessRestarted, line("fleet", '{"action":"restart","pid":4243}')),
    (KnobsChanged, line("fleet", '{"action":"knobs","latency_ms":200,"error_rate":0.5}')),
    # a worker's breaker trip, forwarded by the primary; an admin API caller's origin
    (BreakerChanged, line("breaker", '{"worker":2,"old":"closed","new":"open"}')),
    (BreakerChanged, line("breaker", '{"old":"closed","new":"open","origin":"chaos s1"}')),
]


@pytest.mark.parametrize(("cls", "wire"), SHAPES)
def test_each_shape_reads_into_its_class_and_writes_the_same_bytes(cls, wire):
    event = event_from_json(wire)
    assert type(event) is cls
    assert event_to_json_bytes(event).decode() == wire


def test_typed_fields_and_the_acting_origin():
    forwarded = event_from_json(SHAPES[-2][1])
    assert isinstance(forwarded, BreakerChanged)
    assert (forwarded.worker, forwarded.old, forwarded.new) == (2, "closed", "open")
    by_chaos = event_from_json(SHAPES[-1][1])
    assert by_chaos.origin == "chaos s1"
    assert by_chaos.worker is None
    knobs = event_from_json(SHAPES[-3][1])
    assert isinstance(knobs, KnobsChanged)
    assert knobs.knobs == {"latency_ms": 200, "error_rate": 0.5}


@pytest.mark.parametrize(
    "wire",
    [
        # a kind a newer balancer has
        line("quota", '{"worker":1,"tenant":"t1","used":0.97,"origin":"chaos s1"}'),
        # a known kind with a field this version does not know
        line("breaker", '{"old":"closed","new":"open","window":"10s"}'),
        # a known field of another type
        line("health", '{"old":"up","new":1}'),
    ],
)
def test_an_unknown_kind_or_shape_stays_readable_and_unchanged(wire):
    event = event_from_json(wire)
    assert type(event) is GenericEvent
    assert event.kind == json.loads(wire)["kind"]
    assert event_to_json_bytes(event).decode() == wire
    [again] = events_from_json([json.loads(wire)])
    assert event_to_json_bytes(again).decode() == wire


def test_a_number_keeps_its_json_form():
    weight = line("action", '{"action":"weight","old":1,"new":2.5}')
    assert event_to_json_bytes(event_from_json(weight)).decode() == weight


def test_every_class_has_a_kind_and_a_distinct_shape():
    assert {c.KIND for c in KINDS} == set(EventKind)
    assert len(set(KINDS)) == len(KINDS)


def test_the_ring_stamps_id_times_and_origin():
    now = [10.0]
    ring = EventRing(4, clock=lambda: now[0], wall_clock=lambda: 1000.0 + now[0])
    seen = []
    ring.subscribe(seen.append)
    first = ring.emit(BreakerChanged(backend="b1", message="m", old="closed", new="open"), at=9.5)
    token = ORIGIN.set("chaos s1")
    try:
        second = ring.emit(Unchanged(message="m", action="algorithm"))
    finally:
        ORIGIN.reset(token)
    assert (first.id, first.at, first.wall, first.origin) == (1, 9.5, 1009.5, None)
    assert (second.id, second.at, second.origin) == (2, 10.0, "chaos s1")
    assert isinstance(second, Unchanged)
    assert second.data == {
        "action": "algorithm",
        "origin": "chaos s1",
    }
    assert seen == [first, second]
    assert ring.last_id == 2


def test_the_keyword_form_of_emit_builds_the_same_typed_event():
    ring = EventRing(4, clock=lambda: 1.0, wall_clock=lambda: 2.0)
    legacy = ring.emit(EventKind.BREAKER, "m", backend="b1", old="closed", new="open")
    typed = ring.emit(BreakerChanged(backend="b1", message="m", old="closed", new="open"))
    assert type(legacy) is BreakerChanged
    assert event_to_json_bytes(legacy).replace(b'"id":1', b'"id":2') == event_to_json_bytes(typed)
