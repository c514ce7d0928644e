"""The console's other pure parts: dialog parsing, latency history, backoff, load steps, feeds."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from lbtui.control.errors import Unauthorized, Unavailable
from lbtui.control.model import Event, EventKind, FaultKind, SetAdmin
from lbtui.tui import forms
from lbtui.tui.feed import (
    Backoff,
    EventsArrived,
    LinkChanged,
    SnapshotArrived,
    describe_error,
    follow_events,
    new_events,
    poll_snapshots,
)
from lbtui.tui.history import LatencyHistory
from lbtui.tui.load import stepped_rate
from lbtui.tui.recorded import RecordedControl
from tests.tui.recorded_fixture import build_events, build_snapshot

# --- forms


def test_fields_report_every_problem_at_once():
    values, errors = forms.validate(
        forms.SLOW_FORM, {"ms": "abc", "jitter_ms": "-1", "percent": "150", "duration": "soon"}
    )
    assert set(errors) == {"ms", "jitter_ms", "percent", "duration"}
    assert errors["ms"] == "expected a number from 0 to 600000, got 'abc'"
    assert errors["percent"] == "must be from 0 to 100, got 150"
    assert "expected a duration" in errors["duration"]
    assert values == {}


def test_slow_form_builds_a_delay():
    values, errors = forms.validate(
        forms.SLOW_FORM, {"ms": "200", "jitter_ms": "50", "percent": "25", "duration": "30s"}
    )
    assert errors == {}
    spec = forms.delay_spec(values)
    assert (spec.kind, spec.ms, spec.jitter_ms, spec.percent, spec.duration_s) == (
        FaultKind.DELAY,
        200.0,
        50.0,
        25.0,
        30.0,
    )
    values, _ = forms.validate(
        forms.SLOW_FORM, {"ms": "0", "jitter_ms": "0", "percent": "100", "duration": ""}
    )
    with pytest.raises(ValueError, match="does nothing"):
        forms.delay_spec(values)


def test_errors_and_hang_forms():
    values, errors = forms.validate(
        forms.ERRORS_FORM, {"status": "502", "percent": "50", "duration": ""}
    )
    assert errors == {}
    spec = forms.abort_spec(values)
    assert (spec.kind, spec.status, spec.percent, spec.duration_s) == ("abort", 502, 50.0, None)
    _, errors = forms.validate(forms.ERRORS_FORM, {"status": "42", "percent": "", "duration": ""})
    assert errors["status"] == "must be from 200 to 599, got 42"
    assert errors["percent"].startswith("required")
    values, _ = forms.validate(forms.HANG_FORM, {"percent": "10", "duration": "1m"})
    assert forms.hang_spec(values).duration_s == 60.0


def test_limits_form_sends_only_changes():
    current = {"rps": 500.0, "burst": None, "per_client_rps": None, "max_in_flight": 64}
    form = forms.limits_form(current)
    texts = {f.name: f.default for f in form}
    assert texts == {"rps": "500", "burst": "", "per_client_rps": "", "max_in_flight": "64"}
    texts["rps"] = "50"
    texts["max_in_flight"] = ""
    values, errors = forms.validate(form, texts)
    assert errors == {}
    assert forms.limits_changes(values, current) == {"rps": 50.0, "max_in_flight": None}
    _, errors = forms.validate(form, {**texts, "max_in_flight": "2.5"})
    assert "whole number" in errors["max_in_flight"]


def test_weight_form():
    (field,) = forms.weight_form(0.5)
    assert field.default == "0.5"
    assert field.parse("0") == 0.0
    with pytest.raises(ValueError, match="from 0 to 1000"):
        field.parse("1001")


# --- history


def test_history_one_sample_a_second_worst_p99_bounded():
    snap = build_snapshot()
    h = LatencyHistory(span_s=5)
    h.add(snap)
    h.add(snap)  # the same snapshot adds nothing
    assert h.p99("api-4") == [251.0]
    b4 = snap.backend("api-4")
    later = dataclasses.replace(
        snap,
        at=snap.at + 0.5,
        backends=[dataclasses.replace(b4, p99_ms=100.0, p50_ms=2.0)],
    )
    h.add(later)
    assert h.p99("api-4") == [251.0]  # worst of the second
    assert h.p50("api-4") == [2.0]  # latest of the second
    assert h.p99("api-1") == []  # gone from the snapshot: forgotten
    for i in range(1, 10):
        h.add(dataclasses.replace(later, at=snap.at + i, backends=[b4]))
    assert len(h.p99("api-4")) == 5
    assert h.seconds("api-4") == 5


# --- backoff, load, events


def test_backoff_doubles_to_a_cap_and_resets():
    b = Backoff(1.0, 10.0)
    assert [b.next() for _ in range(6)] == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
    b.reset()
    assert b.next() == 1.0


def test_stepped_rate_is_bounded():
    assert stepped_rate(200, True) == 250.0
    assert stepped_rate(250, False) == 200.0
    assert stepped_rate(1, False) == 1.0
    assert stepped_rate(0, True) == 1.0
    assert stepped_rate(49_000, True) == 50_000.0


def test_new_events_dedup_and_bound():
    events = build_events()
    kept: list[Event] = []
    new_events(kept, tuple(events[:5]))
    new_events(kept, tuple(events[3:]))
    assert [e.id for e in kept] == [e.id for e in events]
    new_events(kept, tuple(events), keep=4)
    assert len(kept) == 4


def test_describe_error():
    assert describe_error(Unauthorized("bad token")) == (
        "the admin API refused the token (401: bad token); check --token"
    )
    assert describe_error(Unavailable("http://x: unreachable")) == "http://x: unreachable"
    assert describe_error(TimeoutError()) == "no answer (timeout)"
    assert describe_error(ConnectionRefusedError()) == "connection refused"


class FlakyControl(RecordedControl):
    """Fails its first ``failures`` snapshots."""

    def __init__(self, failures: int) -> None:
        super().__init__(build_snapshot(), build_events())
        self.failures = failures

    async def snapshot(self):  # type: ignore[no-untyped-def]
        if self.failures:
            self.failures -= 1
            raise Unavailable("http://127.0.0.1:1: unreachable (ConnectError)")
        return await super().snapshot()


async def test_poll_reports_the_problem_then_recovers():
    posted: list[object] = []
    got = asyncio.Event()

    def post(m: object) -> None:
        posted.append(m)
        if isinstance(m, SnapshotArrived):
            got.set()

    task = asyncio.create_task(
        poll_snapshots(FlakyControl(2), post, 0.01, backoff=Backoff(0.01, 0.02))
    )
    try:
        await asyncio.wait_for(got.wait(), 5)
    finally:
        task.cancel()
    links = [m.link for m in posted if isinstance(m, LinkChanged)]
    assert links[0].ok is False
    assert "unreachable" in links[0].problem
    assert links[-1].ok is True
    assert max(link.failures for link in links) == 2


async def test_events_come_in_batches():
    control = RecordedControl(build_snapshot(), build_events())
    batches: list[tuple[Event, ...]] = []
    first = asyncio.Event()
    done = asyncio.Event()

    def post(m: object) -> None:
        if isinstance(m, EventsArrived):
            batches.append(m.events)
            first.set()
            if sum(len(b) for b in batches) >= 12:
                done.set()

    task = asyncio.create_task(follow_events(control, post, batch_s=0.01))
    try:
        await asyncio.wait_for(first.wait(), 5)
        assert len(batches) == 1  # the whole backlog in one message
        assert len(batches[0]) == 11
        await control.act(SetAdmin(backend="api-1", state="draining"))
        await asyncio.wait_for(done.wait(), 5)
    finally:
        task.cancel()
    assert batches[-1][-1].kind == EventKind.ACTION


def test_a_long_connection_problem_is_shown_whole_and_the_figures_keep_their_line():
    from lbtui.tui.feed import Link
    from lbtui.tui.widgets.totals import HeaderState, TotalsBar

    problem = (
        "Cannot connect to host 127.0.0.1:9901 ssl:default [Connect call failed "
        "('127.0.0.1', 9901)] — is the balancer running with its admin API on?"
    )
    state = HeaderState(
        target="http://127.0.0.1:9901",
        remote=False,
        read_only=False,
        paused=False,
        link=Link(ok=False, problem=problem, retry_in_s=2.0),
        stale_s=12.0,
    )
    first, figures, why = TotalsBar.build(None, state, 80)
    assert "disconnected — retrying in 2 s" in first.plain
    assert "state from 12 s ago" in first.plain
    assert first.cell_len <= 80
    assert figures.plain.strip() == "waiting for the first snapshot…"
    assert why is not None
    assert problem in why.plain
    ok = dataclasses.replace(state, link=Link(ok=True))
    assert TotalsBar.build(None, ok, 80)[2] is None


def test_the_header_names_the_target_once_and_keeps_it_at_80_columns():
    from lbtui.tui.feed import Link
    from lbtui.tui.widgets.totals import HeaderState, TotalsBar

    admin = "http://127.0.0.1:41665"
    state = HeaderState(
        target=admin,
        remote=False,
        read_only=True,
        paused=False,
        link=Link(ok=True),
        stale_s=None,
        title=f"lbtui demo · balancer http://127.0.0.1:46521 · admin {admin}",
    )
    wide = TotalsBar.build(None, state, 200)[0].plain
    assert wide.count(admin) == 1
    assert "balancer http://127.0.0.1:46521" in wide
    narrow = TotalsBar.build(None, state, 80)[0].plain
    assert f"admin {admin}" in narrow
    assert "READ-ONLY" in narrow  # flags and the link state are never dropped
    assert "connecting" in narrow
    assert len(narrow) <= 80
