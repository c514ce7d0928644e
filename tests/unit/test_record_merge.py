"""Merging the outcome records of several processes, and carrying them over a pipe (pickle).

The same outcomes are fed to one reference record and, split at random, to 2–4 part records;
the merged parts must show exactly what the reference shows, at any later ``now``.
"""

from __future__ import annotations

import math
import pickle
import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lbtui.core.record import BackendRecord, BalancerRecord, FailureKind
from lbtui.core.window import LatencyHistogram, RollingCounter, RollingHistogram

STATUSES = (0, 101, 200, 200, 201, 304, 404, 429, 500, 502, 503, 999)
KINDS = tuple(FailureKind)
FLAGS = (None, None, "retry_budget_exhausted", "breaker_open", "no_healthy_backend")
SCOPES = ("global", "client", "route")
REASONS = ("no_healthy_backend", "breaker_open")
BEGUN = (False, True)
"""Records made without a start (windows full from the first read) and with one (warm-up)."""


def state(obj: Any, *, exact_sums: bool = True) -> Any:
    """Everything an object of ``lbtui.core`` holds, slot by slot, as plain values."""
    if isinstance(obj, list | tuple):
        return [state(x, exact_sums=exact_sums) for x in obj]
    if isinstance(obj, dict):
        return {k: state(v, exact_sums=exact_sums) for k, v in obj.items()}
    cls = type(obj)
    # a compiled class names its fields in __mypyc_attrs__ (and has no __slots__)
    fields = getattr(cls, "__slots__", None) or getattr(cls, "__mypyc_attrs__", None)
    if cls.__module__.startswith("lbtui.") and fields:
        return (
            cls.__name__,
            {
                s: state(getattr(obj, s), exact_sums=exact_sums)
                for s in sorted(fields)
                if exact_sums or not (cls is LatencyHistogram and s == "sum")
            },
        )
    return obj


def read_times(last: float, window_s: float) -> list[float]:
    """Moments to read at: just before the last write, at it, then as the windows expire."""
    offsets = [-0.6, 0.0, 0.13, 0.3, 1.0, 0.5 * window_s, window_s - 0.1, window_s + 0.2]
    offsets += [2.0 * window_s, 30.0, 59.5, 61.0, 75.0, 500.0]
    return [max(last + d, 0.0) for d in offsets]


# one event: time step, part, status, latency, bytes in, bytes out, what happened, lateness
events = st.lists(
    st.tuples(
        st.one_of(st.floats(0.0, 1.5), st.floats(0.0, 1.5), st.floats(2.0, 90.0)),
        st.integers(0, 1000),
        st.sampled_from(STATUSES),
        st.floats(1e-7, 40.0),
        st.integers(0, 1 << 20),
        st.integers(0, 1 << 20),
        st.integers(0, 9),
        st.sampled_from((0.0, 0.0, 0.0, 0.0, 0.4, 3.0, 15.0, 70.0)),
    ),
    min_size=1,
    max_size=120,
)


def feed_backend(
    evs: list[Any], start: float, parts: list[BackendRecord], ref: BackendRecord
) -> float:
    t = start
    for dt, who, status, latency, b_in, b_out, what, late in evs:
        t += dt
        now = max(t - late, 0.0)  # a ``now`` read a while ago (an attempt's start, say)
        for r in (parts[who % len(parts)], ref):
            r.started(now)
            if what < 6:
                r.finished(status, latency, b_in, b_out, now)
            elif what < 9:
                r.failed(KINDS[what - 6], latency, b_in, now)
            else:
                r.retries_total += 1
    return t


def feed_balancer(
    evs: list[Any], start: float, parts: list[BalancerRecord], ref: BalancerRecord
) -> float:
    t = start
    for dt, who, status, _latency, b_in, _b_out, what, late in evs:
        t += dt
        now = max(t - late, 0.0)
        for r in (parts[who % len(parts)], ref):
            if what < 6:
                r.started()
                if what < 5:
                    r.answered(status, FLAGS[b_in % len(FLAGS)], now)
            elif what == 6:
                r.count_rejection(SCOPES[b_in % len(SCOPES)], now)
            elif what == 7:
                r.count_fallback(REASONS[b_in % len(REASONS)], now)
            else:
                r.count_retry(now)
    return t


def assert_same_backend(merged: BackendRecord, ref: BackendRecord, nows: list[float]) -> None:
    for now in nows:
        assert merged.figures(now) == ref.figures(now), now
    assert state(merged, exact_sums=False) == state(ref, exact_sums=False)
    assert math.isclose(merged.latency.sum, ref.latency.sum, rel_tol=1e-9, abs_tol=1e-9)


def assert_same_balancer(merged: BalancerRecord, ref: BalancerRecord, nows: list[float]) -> None:
    for now in nows:
        assert merged.figures(now) == ref.figures(now), now
    assert state(merged) == state(ref)


@settings(max_examples=150, deadline=None)
@given(
    evs=events,
    n_parts=st.integers(2, 4),
    start=st.floats(0.0, 1e5),
    begun=st.sampled_from(BEGUN),
)
def test_merged_backend_records_show_what_one_record_would(
    evs: list[Any], n_parts: int, start: float, begun: bool
) -> None:
    window_s, begin = 10.0, (start if begun else -math.inf)
    parts = [BackendRecord(begin) for _ in range(n_parts)]
    ref = BackendRecord(begin)
    last = feed_backend(evs, start, parts, ref)
    before = [state(p) for p in parts]

    merged = BackendRecord.merged(parts)

    assert [state(p) for p in parts] == before  # the parts are left as they were
    assert_same_backend(merged, ref, read_times(last, window_s))


@settings(max_examples=150, deadline=None)
@given(
    evs=events,
    n_parts=st.integers(2, 4),
    start=st.floats(0.0, 1e5),
    begun=st.sampled_from(BEGUN),
)
def test_merged_balancer_records_show_what_one_record_would(
    evs: list[Any], n_parts: int, start: float, begun: bool
) -> None:
    window_s, begin = 10.0, (start if begun else -math.inf)
    parts = [BalancerRecord(begin) for _ in range(n_parts)]
    ref = BalancerRecord(begin)
    last = feed_balancer(evs, start, parts, ref)
    before = [state(p) for p in parts]

    merged = BalancerRecord.merged(parts)

    assert [state(p) for p in parts] == before
    assert_same_balancer(merged, ref, read_times(last, window_s))


@settings(max_examples=60, deadline=None)
@given(evs=events, more=events, n_parts=st.integers(1, 4), start=st.floats(0.0, 1e5))
def test_a_merged_record_keeps_counting_like_the_reference(
    evs: list[Any], more: list[Any], n_parts: int, start: float
) -> None:
    """A merged record is a record: written to afterwards it still matches the reference, and
    writing to it changes none of its parts (no list is shared)."""
    parts = [BackendRecord() for _ in range(n_parts)]
    ref = BackendRecord()
    last = feed_backend(evs, start, parts, ref)
    merged = BackendRecord.merged(parts)
    before = [state(p) for p in parts]
    last = feed_backend(more, last, [merged], ref)
    assert [state(p) for p in parts] == before
    assert_same_backend(merged, ref, read_times(last, 10.0))

    bparts = [BalancerRecord() for _ in range(n_parts)]
    bref = BalancerRecord()
    last = feed_balancer(evs, start, bparts, bref)
    bmerged = BalancerRecord.merged(bparts)
    bbefore = [state(p) for p in bparts]
    last = feed_balancer(more, last, [bmerged], bref)
    assert [state(p) for p in bparts] == bbefore
    assert_same_balancer(bmerged, bref, read_times(last, 10.0))


@settings(max_examples=60, deadline=None)
@given(evs=events, more=events, start=st.floats(0.0, 1e5))
def test_records_survive_a_pickle_round_trip(evs: list[Any], more: list[Any], start: float) -> None:
    rec, brec = BackendRecord(), BalancerRecord()
    last = feed_backend(evs, start, [rec], BackendRecord())
    feed_balancer(evs, start, [brec], BalancerRecord())
    copy = pickle.loads(pickle.dumps(rec, protocol=5))
    bcopy = pickle.loads(pickle.dumps(brec, protocol=5))
    assert state(copy) == state(rec)
    assert state(bcopy) == state(brec)
    nows = read_times(last, 10.0)
    assert [copy.figures(t) for t in nows] == [rec.figures(t) for t in nows]
    assert [bcopy.figures(t) for t in nows] == [brec.figures(t) for t in nows]
    # and the copy counts on exactly like the original
    feed_backend(more, last, [copy], rec)
    feed_balancer(more, last, [bcopy], brec)
    assert state(copy) == state(rec)
    assert state(bcopy) == state(brec)


def test_many_processes_a_long_run() -> None:
    """Eight processes, thousands of requests over two minutes, read every quarter second."""
    rng = random.Random(20240611)
    n = 8
    parts = [BackendRecord() for _ in range(n)]
    ref = BackendRecord()
    bparts = [BalancerRecord() for _ in range(n)]
    bref = BalancerRecord()
    t = 5000.0
    next_read = t
    while t < 5120.0:
        t += rng.expovariate(200.0)
        who = rng.randrange(n)
        status = rng.choice(STATUSES)
        latency = rng.lognormvariate(-5.0, 1.0)
        now = t - rng.choice((0.0, 0.0, 0.0, latency))
        kind = rng.choice(KINDS) if rng.random() < 0.05 else None
        size = rng.randrange(1 << 16)
        flag = rng.choice(FLAGS)
        for r in (parts[who], ref):
            r.started(now)
            if kind is not None:
                r.failed(kind, latency, 0, t)
            else:
                r.finished(status, latency, 300, size, t)
        for b in (bparts[who], bref):
            b.started()
            b.answered(status, flag, t)
        if t >= next_read:
            next_read += 0.25
            assert BackendRecord.merged(parts).figures(t) == ref.figures(t)
            assert BalancerRecord.merged(bparts).figures(t) == bref.figures(t)
    assert_same_backend(BackendRecord.merged(parts), ref, read_times(t, 10.0))
    assert_same_balancer(BalancerRecord.merged(bparts), bref, read_times(t, 10.0))
    # through the pipe, as the workers send them
    sent = [pickle.loads(pickle.dumps(p, protocol=5)) for p in parts]
    assert_same_backend(BackendRecord.merged(sent), ref, read_times(t, 10.0))


def test_parts_at_different_epochs_are_aligned() -> None:
    """A part last written long ago adds only what is still in the window at the newest part's
    latest write; a stale slot of it is not counted."""
    old, new, ref = RollingCounter(10.0, 10), RollingCounter(10.0, 10), RollingCounter(10.0, 10)
    for c in (old, ref):
        c.add(5, 100.5)  # epoch 100
        c.add(7, 104.5)  # epoch 104
    for c in (new, ref):
        c.add(1, 109.5)
        c.add(2, 112.5)  # epoch 112: the window is 103..112
    merged = RollingCounter.merged([old, new])
    assert merged.total(112.7) == 10  # 7 + 1 + 2: the 5 of epoch 100 has expired
    assert merged.series(112.7) == ref.series(112.7)
    for now in (112.0, 113.9, 114.6, 119.2, 122.5, 130.0):
        assert merged.total(now) == ref.total(now)
        assert merged.series(now) == ref.series(now)
    # and in the other order
    assert state(RollingCounter.merged([new, old])) == state(merged)

    h_old, h_new, h_ref = (RollingHistogram(10.0, 10) for _ in range(3))
    for h in (h_old, h_ref):
        h.record(0.5, 100.5)
        h.record(0.002, 104.5)
    for h in (h_new, h_ref):
        h.record(0.010, 112.5)
    hm = RollingHistogram.merged([h_old, h_new])
    assert hm.count(112.7) == 2
    assert state(hm) == state(h_ref)
    for now in (112.5, 114.6, 121.0, 123.0):
        assert hm.quantiles([0.5, 0.99], now) == h_ref.quantiles([0.5, 0.99], now)


def test_a_write_older_than_the_window_is_dropped() -> None:
    """A late write (its ``now`` read long before) lands in no slot of the window, instead of
    in whichever newer slot shares its position."""
    c = RollingCounter(10.0, 10)
    c.add(1, 120.5)
    c.add(100, 105.5)  # 15 s late: older than the window
    c.add(10, 115.5)  # 5 s late: still in it
    assert c.total(120.6) == 11
    h = RollingHistogram(10.0, 10)
    h.record(0.001, 120.5)
    h.record(0.001, 105.5)
    h.record(0.001, 115.5)
    assert h.count(120.6) == 2
    assert h.window_counts(120.6)[1] == 2


def test_one_part_gives_a_copy_and_none_an_empty_record() -> None:
    rec = BackendRecord()
    rec.started(10.0)
    rec.finished(200, 0.01, 10, 20, 10.1)
    one = BackendRecord.merged([rec])
    assert one is not rec
    assert state(one) == state(rec)
    one.started(10.2)
    one.failed(FailureKind.RESET, 0.5, 0, 10.7)
    assert rec.requests_total == 1
    assert rec.figures(10.8).failures_total["reset"] == 0
    assert rec.figures(10.8).latency_samples == 1  # the copy's sample is not in it

    assert state(BackendRecord.merged([])) == state(BackendRecord())
    assert state(BalancerRecord.merged([])) == state(BalancerRecord())
    bal = BalancerRecord()
    bal.count_rejection("global", 3.0)
    assert BalancerRecord.merged([bal]).figures(3.5) == bal.figures(3.5)

    with pytest.raises(ValueError, match="nothing to merge"):
        RollingCounter.merged([])
    with pytest.raises(ValueError, match="nothing to merge"):
        RollingHistogram.merged([])
    assert state(LatencyHistogram.merged([])) == state(LatencyHistogram())


def test_different_windows_do_not_merge() -> None:
    with pytest.raises(ValueError, match="windows differ"):
        RollingCounter.merged([RollingCounter(10.0, 10), RollingCounter(10.0, 20)])
    with pytest.raises(ValueError, match="windows differ"):
        RollingCounter.merged([RollingCounter(10.0, 10), RollingCounter(20.0, 10)])
    with pytest.raises(ValueError, match="windows differ"):
        RollingHistogram.merged([RollingHistogram(10.0, 10), RollingHistogram(5.0, 10)])


def test_latency_histograms_merge_either_way() -> None:
    rng = random.Random(7)
    parts = [LatencyHistogram() for _ in range(3)]
    whole = LatencyHistogram()
    for _ in range(2000):
        x = rng.lognormvariate(-4.0, 2.0)
        rng.choice(parts).record(x)
        whole.record(x)
    merged = LatencyHistogram.merged(parts)
    in_place = LatencyHistogram()
    for p in parts:
        in_place.merge(p)
    assert merged.counts == in_place.counts == whole.counts
    assert merged.count == in_place.count == whole.count == 2000
    assert math.isclose(merged.sum, whole.sum)
    assert math.isclose(in_place.sum, whole.sum)
    assert merged.counts is not parts[0].counts


def test_histogram_pickles_are_small() -> None:
    """Only the span of buckets in use travels: a busy backend record is a few kilobytes."""
    rec = BackendRecord()
    rng = random.Random(3)
    t = 100.0
    for _ in range(20000):
        t += 0.0005
        rec.started(t)
        rec.finished(200, rng.lognormvariate(-5.0, 0.5), 100, 1000, t)
    blob = pickle.dumps(rec, protocol=5)
    assert len(blob) < 6000
    assert state(pickle.loads(blob)) == state(rec)


@settings(max_examples=60, deadline=None)
@given(evs=events, n_parts=st.integers(3, 4), start=st.floats(0.0, 1e5))
def test_merging_in_steps_is_merging_at_once(evs: list[Any], n_parts: int, start: float) -> None:
    """The peers' records may be merged once per update and that sum merged with the live
    record on each read: the same record as merging them all at once."""
    parts = [BackendRecord() for _ in range(n_parts)]
    feed_backend(evs, start, parts, BackendRecord())
    at_once = BackendRecord.merged(parts)
    in_steps = BackendRecord.merged([parts[0], BackendRecord.merged(parts[1:])])
    assert state(in_steps, exact_sums=False) == state(at_once, exact_sums=False)
    bparts = [BalancerRecord() for _ in range(n_parts)]
    feed_balancer(evs, start, bparts, BalancerRecord())
    b_once = BalancerRecord.merged(bparts)
    assert state(BalancerRecord.merged([bparts[0], BalancerRecord.merged(bparts[1:])])) == state(
        b_once
    )
