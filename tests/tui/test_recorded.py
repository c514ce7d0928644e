"""The recorded snapshot the screenshots use, and the control that serves it."""

from __future__ import annotations

import pytest

from lbtui.control.errors import NotFound, ReadOnly
from lbtui.control.model import EventKind, FaultKind, FaultSpec, SetAdmin, SetFault, Snapshot
from lbtui.tui.recorded import RecordedControl
from tests.tui.recorded_fixture import MAIN, render_files


def test_fixture_files_are_what_the_builder_makes():
    """After a model change: ``python -m tests.tui.recorded_fixture`` rewrites them."""
    for path, text in render_files().items():
        assert path.read_text() == text, f"{path.name} is stale"


def test_fixture_round_trips(recorded):
    snap = Snapshot.from_json(recorded._snapshot.to_json())
    assert snap == recorded._snapshot
    assert [b.name for b in snap.backends] == ["api-1", "api-2", "api-3", "api-4"]


async def test_actions_are_recorded_and_confirmed_by_an_event(recorded):
    before = await recorded.events()
    await recorded.act(SetFault(backend="api-1", fault=FaultSpec(kind=FaultKind.DOWN)))
    assert recorded.actions[-1].name == "set_fault"
    after = await recorded.events(before[-1].id)
    assert [e.kind for e in after] == [EventKind.ACTION]
    with pytest.raises(NotFound):
        await recorded.act(SetAdmin(backend="nope", state="draining"))


async def test_read_only_refuses():
    control = RecordedControl.load(MAIN, read_only=True)
    with pytest.raises(ReadOnly):
        await control.act(SetAdmin(backend="api-1", state="draining"))
    assert (await control.snapshot()).algorithm == "least_request"
