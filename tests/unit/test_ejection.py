"""Passive ejection, driven by a fake clock: ``now`` is just a number we choose."""

from __future__ import annotations

import dataclasses
import json
import math
import subprocess
import sys
import tracemalloc
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lbtui.core.ejection import (
    EjectionConfig,
    EjectionEvent,
    EjectionKind,
    EjectionStats,
    OutlierDetector,
)

EJECTED = EjectionKind.EJECTED
READMITTED = EjectionKind.READMITTED
SKIPPED = EjectionKind.EJECTION_SKIPPED

NAMES = ("a", "b", "c", "d")


def make(
    members: tuple[str, ...] = NAMES, **fields: Any
) -> tuple[OutlierDetector, list[EjectionEvent]]:
    """A detector over ``members`` built from config ``fields``, and its listener's list."""
    seen: list[EjectionEvent] = []
    detector = OutlierDetector(EjectionConfig(**fields), members, listener=seen.append)
    return detector, seen


def fail(detector: OutlierDetector, name: str, now: float = 0.0) -> EjectionEvent:
    """Fail requests on ``name`` until something happens; returns the event."""
    for _ in range(detector.config.consecutive_failures):
        event = detector.record(name, True, now)
        if event is not None:
            return event
    raise AssertionError(f"nothing happened to {name}")


# -- config ---------------------------------------------------------------------------------


def test_default_config_is_envoy_like() -> None:
    config = EjectionConfig()
    assert (config.consecutive_failures, config.base_s, config.max_s) == (5, 30.0, 300.0)
    assert (config.max_percent, config.panic_percent) == (50.0, 50.0)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"consecutive_failures": -1}, "consecutive_failures must be an integer >= 0, got -1"),
        ({"consecutive_failures": 2.0}, "consecutive_failures must be an integer >= 0, got 2.0"),
        ({"consecutive_failures": True}, "consecutive_failures must be an integer >= 0, got True"),
        ({"base_s": 0}, "base_s must be a number of seconds > 0, got 0"),
        ({"max_s": math.inf}, "max_s must be a number of seconds > 0, got inf"),
        ({"base_s": 60.0, "max_s": 30.0}, "max_s (30.0) must not be less than base_s (60.0)"),
        ({"max_percent": -1}, "max_percent must be a percentage in [0, 100], got -1"),
        ({"max_percent": 100.5}, "max_percent must be a percentage in [0, 100], got 100.5"),
        ({"panic_percent": math.nan}, "panic_percent must be a percentage in [0, 100], got nan"),
    ],
)
def test_config_rejects_bad_values_with_a_clear_message(
    fields: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match="invalid ejection config: ") as caught:
        EjectionConfig(**fields)
    assert message in str(caught.value)


def test_config_reports_every_problem_at_once() -> None:
    with pytest.raises(ValueError, match="base_s") as caught:
        EjectionConfig(consecutive_failures=-1, base_s=0, panic_percent=101)
    assert str(caught.value).count(";") == 2


def test_config_limits_that_are_allowed() -> None:
    EjectionConfig(consecutive_failures=0, base_s=1, max_s=1, max_percent=0, panic_percent=0)
    EjectionConfig(consecutive_failures=1, max_percent=100, panic_percent=100)
    with pytest.raises(dataclasses.FrozenInstanceError):
        EjectionConfig().base_s = 1.0  # type: ignore[misc]


# -- consecutive failures -------------------------------------------------------------------


def test_threshold_minus_one_failures_do_not_eject_and_the_threshold_does() -> None:
    detector, seen = make(consecutive_failures=5)
    for _ in range(4):
        assert detector.record("a", True, 1.0) is None
    assert not detector.is_ejected("a", 1.0)
    assert detector.stats("a", 1.0).consecutive_failures == 4
    event = detector.record("a", True, 2.0)
    assert event == EjectionEvent(
        EJECTED, "a", 2.0, 32.0, "5 consecutive failures (1st ejection, 30 s)"
    )
    assert seen == [event]
    assert detector.is_ejected("a", 2.0)
    assert not detector.is_ejected("b", 2.0)


def test_a_success_resets_the_run() -> None:
    detector, seen = make(consecutive_failures=3)
    for failure in (True, True, False, True, True):
        assert detector.record("a", failure, 0.0) is None
    assert detector.stats("a", 0.0).consecutive_failures == 2
    assert detector.record("a", True, 0.0) is not None
    assert [e.kind for e in seen] == [EJECTED]


def test_runs_are_counted_per_backend() -> None:
    detector, _ = make(consecutive_failures=3)
    for name in ("a", "b", "a", "b"):
        assert detector.record(name, True, 0.0) is None
    assert detector.record("a", True, 0.0) is not None
    assert detector.stats("b", 0.0).consecutive_failures == 2


def test_zero_consecutive_failures_never_ejects() -> None:
    detector, seen = make(consecutive_failures=0)
    for _ in range(1000):
        assert detector.record("a", True, 0.0) is None
    assert not detector.is_ejected("a", 0.0)
    assert detector.stats("a", 0.0).consecutive_failures == 0
    assert seen == []


def test_outcomes_while_ejected_are_ignored() -> None:
    detector, seen = make(consecutive_failures=2)
    fail(detector, "a", 0.0)
    for _ in range(10):
        assert detector.record("a", True, 1.0) is None
    assert detector.stats("a", 1.0).consecutive_failures == 0
    assert len(seen) == 1


# -- expiry and readmission -----------------------------------------------------------------


def test_the_ejection_ends_at_its_deadline_and_tick_reports_it() -> None:
    detector, seen = make(consecutive_failures=1, base_s=30.0)
    fail(detector, "a", 10.0)
    assert detector.is_ejected("a", 39.999)
    assert detector.tick(39.999) == []
    assert not detector.is_ejected("a", 40.0)  # refused no more, before tick says so
    readmissions = detector.tick(45.0)
    assert readmissions == [EjectionEvent(READMITTED, "a", 40.0, None, "ejection of 30 s ended")]
    assert seen[-1] == readmissions[0]
    assert detector.tick(50.0) == []
    stats = detector.stats("a", 50.0)
    assert (stats.ejected, stats.reason, stats.times_ejected) == (
        False,
        "ejection of 30 s ended",
        1,
    )


def test_tick_returns_readmissions_oldest_deadline_first() -> None:
    detector, _ = make(consecutive_failures=1, max_percent=100)
    fail(detector, "b", 5.0)
    fail(detector, "a", 10.0)
    fail(detector, "c", 1000.0)
    assert [(e.name, e.at) for e in detector.tick(100.0)] == [("b", 35.0), ("a", 40.0)]
    assert detector.is_ejected("c", 100.0)


def test_tick_readmits_only_what_has_expired() -> None:
    detector, _ = make(consecutive_failures=1, max_percent=100)
    fail(detector, "a", 0.0)
    fail(detector, "b", 10.0)
    assert [e.name for e in detector.tick(35.0)] == ["a"]
    assert detector.is_ejected("b", 35.0)
    assert detector.tick(39.0) == []
    assert [e.name for e in detector.tick(40.0)] == ["b"]


def test_a_failure_run_after_expiry_readmits_first_and_tick_still_reports_it() -> None:
    detector, seen = make(consecutive_failures=1, max_s=1000.0)
    fail(detector, "a", 0.0)
    event = detector.record("a", True, 31.0)  # expired at 30, never ticked
    assert event is not None
    assert event.reason == "1 failure (2nd ejection, 60 s)"
    assert [(e.kind, e.at) for e in seen] == [(EJECTED, 0.0), (READMITTED, 30.0), (EJECTED, 31.0)]
    assert [(e.kind, e.at) for e in detector.tick(32.0)] == [(READMITTED, 30.0)]


# -- the multiplier, its cap and its decay --------------------------------------------------


def test_each_ejection_lasts_base_times_n_up_to_max() -> None:
    detector, _ = make(consecutive_failures=1, base_s=30.0, max_s=100.0)
    now = 0.0
    lengths: list[str] = []
    for _ in range(5):
        event = fail(detector, "a", now)
        assert event.until is not None
        lengths.append(event.reason)
        now = event.until + 1.0
    assert lengths == [
        "1 failure (1st ejection, 30 s)",
        "1 failure (2nd ejection, 60 s)",
        "1 failure (3rd ejection, 90 s)",
        "1 failure (4th ejection, 100 s)",
        "1 failure (5th ejection, 100 s)",
    ]
    assert detector.stats("a", now).times_ejected == 5


def test_ordinals_read_like_english() -> None:
    detector, _ = make(consecutive_failures=1, base_s=1.0, max_s=1.0)
    reasons = []
    now = 0.0
    for _ in range(23):
        event = fail(detector, "a", now)
        reasons.append(event.reason)
        assert event.until is not None
        now = event.until  # fail again at once, before the multiplier decays
    assert [r.split("(")[1].split(" ")[0] for r in reasons[9:14]] == [
        "10th",
        "11th",
        "12th",
        "13th",
        "14th",
    ]
    assert reasons[20].startswith("1 failure (21st")
    assert reasons[21].startswith("1 failure (22nd")
    assert reasons[22].startswith("1 failure (23rd")


def test_times_ejected_resets_after_max_s_readmitted() -> None:
    detector, _ = make(consecutive_failures=1, base_s=10.0, max_s=50.0)
    fail(detector, "a", 0.0)  # 0 → 10
    detector.tick(10.0)
    assert detector.stats("a", 59.9).times_ejected == 1
    assert detector.stats("a", 60.0).times_ejected == 0  # 50 s readmitted
    assert fail(detector, "a", 60.0).reason.endswith("(1st ejection, 10 s)")


def test_times_ejected_keeps_growing_when_it_fails_again_within_max_s() -> None:
    detector, _ = make(consecutive_failures=1, base_s=10.0, max_s=50.0)
    fail(detector, "a", 0.0)
    detector.tick(10.0)
    assert fail(detector, "a", 59.9).reason.endswith("(2nd ejection, 20 s)")


def test_decay_counts_from_the_deadline_even_before_tick() -> None:
    detector, _ = make(consecutive_failures=1, base_s=10.0, max_s=50.0)
    fail(detector, "a", 0.0)  # readmitted at 10, never ticked
    stats = detector.stats("a", 60.0)
    assert (stats.ejected, stats.times_ejected, stats.reason) == (
        False,
        0,
        "ejection of 10 s ended",
    )
    assert fail(detector, "a", 60.0).reason.endswith("(1st ejection, 10 s)")


# -- max_percent ----------------------------------------------------------------------------


def test_one_of_two_may_be_ejected_at_50_percent() -> None:
    detector, seen = make(("a", "b"), consecutive_failures=2, max_percent=50.0)
    assert fail(detector, "a", 0.0).kind is EJECTED
    skipped = fail(detector, "b", 1.0)
    assert skipped == EjectionEvent(
        SKIPPED,
        "b",
        1.0,
        None,
        "2 consecutive failures; not ejected: 1 of 2 backends already ejected, max 50%",
    )
    assert seen[-1] == skipped
    assert not detector.is_ejected("b", 1.0)
    stats = detector.stats("b", 1.0)
    assert (stats.ejected, stats.consecutive_failures, stats.times_ejected) == (False, 0, 0)
    assert stats.reason == skipped.reason
    # The run starts again: the next attempt needs another full run.
    assert detector.record("b", True, 2.0) is None
    # Once a's ejection expires (even before tick), b may take its place.
    assert detector.record("b", True, 31.0) == EjectionEvent(
        EJECTED, "b", 31.0, 61.0, "2 consecutive failures (1st ejection, 30 s)"
    )
    assert [e.name for e in detector.tick(31.0)] == ["a"]


def test_two_of_four_may_be_ejected_at_50_percent() -> None:
    detector, _ = make(NAMES, consecutive_failures=1, max_percent=50.0)
    assert fail(detector, "a").kind is EJECTED
    assert fail(detector, "b").kind is EJECTED
    skipped = fail(detector, "c")
    assert skipped.kind is SKIPPED
    assert skipped.reason.endswith("2 of 4 backends already ejected, max 50%")
    assert fail(detector, "d").kind is SKIPPED


def test_at_least_one_backend_may_always_be_ejected() -> None:
    alone, _ = make(("a",), consecutive_failures=1, max_percent=50.0)
    assert fail(alone, "a").kind is EJECTED
    strict, _ = make(NAMES, consecutive_failures=1, max_percent=0.0)
    assert fail(strict, "a").kind is EJECTED
    skipped = fail(strict, "b")
    assert skipped.kind is SKIPPED
    assert skipped.reason.endswith("1 of 4 backends already ejected, max 0%")


def test_max_percent_100_ejects_everything() -> None:
    detector, _ = make(NAMES, consecutive_failures=1, max_percent=100.0)
    assert [fail(detector, n).kind for n in NAMES] == [EJECTED] * 4


def test_fractional_max_percent_reads_with_one_decimal() -> None:
    detector, _ = make(("a", "b", "c"), consecutive_failures=1, max_percent=100 / 3)
    fail(detector, "a")
    assert fail(detector, "b").reason.endswith("max 33.3%")


# -- operators ------------------------------------------------------------------------------


def test_operator_eject_until_readmitted() -> None:
    detector, seen = make()
    event = detector.eject("a", 5.0)
    assert event == EjectionEvent(EJECTED, "a", 5.0, None, "ejected by operator")
    assert detector.is_ejected("a", 1e9)
    assert detector.tick(1e9) == []
    stats = detector.stats("a", 10.0)
    assert (stats.ejected, stats.ejected_at, stats.ejected_until, stats.remaining_s) == (
        True,
        5.0,
        None,
        None,
    )
    assert stats.times_ejected == 0
    readmitted = detector.readmit("a", 20.0)
    assert readmitted == EjectionEvent(READMITTED, "a", 20.0, None, "readmitted by operator")
    assert seen == [event, readmitted]
    assert not detector.is_ejected("a", 20.0)
    assert detector.readmit("a", 21.0) is None


def test_operator_eject_for_a_time_ignores_max_percent_and_counts_towards_it() -> None:
    detector, _ = make(("a", "b"), consecutive_failures=1, max_percent=50.0)
    detector.eject("a", 0.0, "maintenance", duration_s=10.0)
    assert detector.eject("b", 0.0, duration_s=10.0).kind is EJECTED
    assert detector.is_ejected("b", 9.0)
    assert not detector.is_ejected("b", 10.0)
    detector.readmit("b", 0.0)
    assert fail(detector, "b", 1.0).kind is SKIPPED  # a, ejected by hand, fills the share
    assert detector.stats("a", 1.0).reason == "maintenance"


def test_operator_eject_replaces_an_automatic_ejection() -> None:
    detector, _ = make(consecutive_failures=1)
    fail(detector, "a", 0.0)
    detector.eject("a", 1.0, duration_s=100.0)
    stats = detector.stats("a", 50.0)
    assert (stats.ejected, stats.ejected_until, stats.times_ejected) == (True, 101.0, 1)
    readmissions = detector.tick(101.0)
    assert [(e.at, e.reason) for e in readmissions] == [(101.0, "ejection of 100 s ended")]


def test_readmitting_an_expired_ejection_leaves_the_event_to_tick() -> None:
    detector, _ = make(consecutive_failures=1)
    fail(detector, "a", 0.0)
    assert detector.readmit("a", 40.0) is None
    assert [e.at for e in detector.tick(40.0)] == [30.0]


@pytest.mark.parametrize("duration", [0.0, -1.0, math.inf, math.nan])
def test_operator_eject_needs_a_positive_duration(duration: float) -> None:
    detector, _ = make()
    with pytest.raises(ValueError, match="duration_s must be a number of seconds > 0"):
        detector.eject("a", 0.0, duration_s=duration)


# -- membership -----------------------------------------------------------------------------


def test_unknown_names_are_ignored_by_the_hot_path_and_refused_by_the_rest() -> None:
    detector, seen = make(("a",), consecutive_failures=1)
    assert detector.record("zz", True, 0.0) is None
    assert detector.record("zz", False, 0.0) is None
    assert not detector.is_ejected("zz", 0.0)
    assert seen == []
    for call in (
        lambda: detector.stats("zz", 0.0),
        lambda: detector.eject("zz", 0.0),
        lambda: detector.readmit("zz", 0.0),
    ):
        with pytest.raises(KeyError, match="'zz' is not a member of this pool"):
            call()


def test_set_members_adds_keeps_and_forgets() -> None:
    detector, _ = make(("a", "b"), consecutive_failures=2, max_percent=50.0)
    fail(detector, "a", 0.0)
    detector.record("b", True, 0.0)
    detector.set_members(["b", "c", "d", "b"])
    assert detector.members == ("b", "c", "d")
    assert not detector.is_ejected("a", 0.0)
    assert detector.stats("b", 0.0).consecutive_failures == 1  # kept
    assert detector.stats("c", 0.0).reason == "never ejected"
    # a's ejection no longer counts: b may be ejected (1 of 3 <= 50%).
    assert detector.record("b", True, 1.0) is not None
    assert detector.tick(1000.0) == [
        EjectionEvent(READMITTED, "b", 31.0, None, "ejection of 30 s ended")
    ]


def test_an_empty_detector_is_fine() -> None:
    detector = OutlierDetector(EjectionConfig())
    assert detector.members == ()
    assert detector.tick(0.0) == []
    assert not detector.panic(0, 0)


# -- panic ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("panic_percent", "available", "total", "panic"),
    [
        (50.0, 2, 4, False),  # exactly at the threshold: not below it
        (50.0, 1, 4, True),
        (50.0, 0, 4, True),
        (50.0, 1, 2, False),
        (50.0, 0, 1, True),
        (50.0, 0, 0, False),  # nothing to balance over
        (0.0, 0, 4, False),  # off
        (100.0, 3, 4, True),
        (100.0, 4, 4, False),
        (33.0, 1, 3, False),
        (34.0, 1, 3, True),
    ],
)
def test_panic_below_the_threshold(
    panic_percent: float, available: int, total: int, panic: bool
) -> None:
    detector, _ = make(panic_percent=panic_percent)
    assert detector.panic(available, total) is panic


# -- listener, stats, purity ----------------------------------------------------------------


def test_stats_are_frozen_and_json_friendly() -> None:
    detector, _ = make(consecutive_failures=1, base_s=30.0)
    fail(detector, "a", 0.0)
    fail(detector, "a", 40.0)  # the 2nd ejection: 40 → 100
    stats = detector.stats("a", 55.0)
    assert isinstance(stats, EjectionStats)
    with pytest.raises(dataclasses.FrozenInstanceError):
        stats.ejected = False  # type: ignore[misc]
    assert json.loads(json.dumps(dataclasses.asdict(stats))) == {
        "name": "a",
        "ejected": True,
        "ejected_at": 40.0,
        "ejected_until": 100.0,
        "remaining_s": 45.0,
        "times_ejected": 2,
        "consecutive_failures": 0,
        "reason": "1 failure (2nd ejection, 60 s)",
    }
    assert json.loads(json.dumps(dataclasses.asdict(detector.stats("b", 55.0)))) == {
        "name": "b",
        "ejected": False,
        "ejected_at": None,
        "ejected_until": None,
        "remaining_s": None,
        "times_ejected": 0,
        "consecutive_failures": 0,
        "reason": "never ejected",
    }
    event = detector.tick(100.0)[0]
    assert json.loads(json.dumps(dataclasses.asdict(event)))["kind"] == "readmitted"


def test_stats_change_nothing() -> None:
    detector, seen = make(consecutive_failures=1)
    fail(detector, "a", 0.0)
    detector.stats("a", 100.0)
    assert len(seen) == 1
    assert len(detector.tick(100.0)) == 1


def test_a_detector_without_listener_still_returns_events() -> None:
    detector = OutlierDetector(EjectionConfig(consecutive_failures=1), ["a"])
    assert detector.record("a", True, 0.0) is not None
    assert len(detector.tick(30.0)) == 1


def test_the_hot_path_keeps_no_memory() -> None:
    """``record`` of a success and ``is_ejected`` hold on to nothing, however often called.
    (That they allocate nothing at all, not even briefly, is by construction: a dict lookup,
    a compare and a small-int store; tracemalloc cannot count short-lived objects.)"""
    if sys.gettrace() is not None:
        pytest.skip("a line tracer allocates on every line")
    detector, _ = make(consecutive_failures=5)
    fail(detector, "a", 0.0)
    now = 1.0
    tracemalloc.start()
    try:
        for _ in range(10):  # warm up: caches of the interpreter, not of the detector
            detector.record("b", False, now)
            detector.is_ejected("a", now)
            detector.is_ejected("b", now)
        tracemalloc.reset_peak()
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(10_000):
            detector.record("b", False, now)
            detector.is_ejected("a", now)
            detector.is_ejected("b", now)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak - before < 1024


def test_ejection_imports_no_io() -> None:
    code = "import sys, lbtui.core.ejection; print('\\n'.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    mods = set(out.stdout.split())
    for banned in ("asyncio", "aiohttp", "textual", "rich", "httpx", "lbtui.balancer"):
        assert banned not in mods, banned


# -- properties -----------------------------------------------------------------------------

_step = st.tuples(st.integers(0, 7), st.booleans(), st.floats(0.0, 40.0))


@settings(max_examples=300, deadline=None)
@given(
    n=st.integers(1, 8),
    max_percent=st.integers(0, 100),
    threshold=st.integers(1, 3),
    steps=st.lists(_step, max_size=120),
    tick_every=st.integers(1, 10),
)
def test_automatic_ejections_never_exceed_the_share(
    n: int,
    max_percent: int,
    threshold: int,
    steps: list[tuple[int, bool, float]],
    tick_every: int,
) -> None:
    names = [f"b{i}" for i in range(n)]
    detector, seen = make(
        tuple(names),
        consecutive_failures=threshold,
        base_s=10.0,
        max_s=60.0,
        max_percent=max_percent,
    )
    bound = max(1, math.floor(max_percent * n / 100))
    now = 0.0
    for i, (who, failure, dt) in enumerate(steps):
        now += dt
        detector.record(names[who % n], failure, now)
        if i % tick_every == 0:
            detector.tick(now)
        ejected = [name for name in names if detector.is_ejected(name, now)]
        assert len(ejected) <= bound
        for name in names:
            stats = detector.stats(name, now)
            assert stats.ejected is (name in ejected)
            assert stats.times_ejected >= 0
            if stats.remaining_s is not None:
                assert 0.0 < stats.remaining_s <= 60.0
    detector.tick(now)
    # Every backend's events alternate: ejected, readmitted, ejected, … (skips aside).
    for name in names:
        kinds = [e.kind for e in seen if e.name == name and e.kind is not SKIPPED]
        assert kinds == [EJECTED, READMITTED] * (len(kinds) // 2) + [EJECTED] * (len(kinds) % 2)
        assert (len(kinds) % 2 == 1) is detector.is_ejected(name, now)


@settings(max_examples=200, deadline=None)
@given(
    threshold=st.integers(1, 6),
    outcomes=st.lists(st.booleans(), max_size=80),
)
def test_a_lone_backend_is_ejected_exactly_on_every_full_run(
    threshold: int, outcomes: list[bool]
) -> None:
    """A naive model: count failures since the last success or readmission; eject at the
    threshold. Time stands still, so an ejection never expires and ends the story."""
    detector, _ = make(("a",), consecutive_failures=threshold)
    run = 0
    ejected = False
    for failure in outcomes:
        event = detector.record("a", failure, 0.0)
        if ejected:
            assert event is None
            continue
        run = run + 1 if failure else 0
        if run == threshold:
            assert event is not None
            assert event.kind is EJECTED
            ejected = True
        else:
            assert event is None
    assert detector.is_ejected("a", 0.0) is ejected
