"""Active health, driven by a fake clock: ``now`` is just a number we choose."""

from __future__ import annotations

import dataclasses
import json
import math
import subprocess
import sys
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lbtui.core.health import (
    HealthConfig,
    HealthState,
    HealthStats,
    HealthStatus,
    HealthTransition,
)

UP = HealthStatus.UP
DOWN = HealthStatus.DOWN


def make(
    now: float = 0.0, floor: float = 0.1, **fields: Any
) -> tuple[HealthState, list[HealthTransition]]:
    """A health state built from config ``fields`` and the list its listener appends to."""
    seen: list[HealthTransition] = []
    state = HealthState(HealthConfig(**fields), now, listener=seen.append, slow_start_floor=floor)
    return state, seen


def fail_until_down(health: HealthState, now: float = 0.0, detail: str = "") -> HealthTransition:
    for _ in range(health.config.fall):
        transition = health.record_check(False, now, detail)
        if transition is not None:
            return transition
    raise AssertionError("the backend did not go down")


def pass_until_up(health: HealthState, now: float = 0.0) -> HealthTransition:
    for _ in range(health.config.rise):
        transition = health.record_check(True, now)
        if transition is not None:
            return transition
    raise AssertionError("the backend did not come up")


# -- config ---------------------------------------------------------------------------------


def test_default_config_is_haproxy_like() -> None:
    config = HealthConfig()
    assert (config.path, config.interval_s, config.timeout_s) == ("/", 2.0, 1.0)
    assert (config.rise, config.fall, config.expect_status) == (2, 3, (200, 399))
    assert config.slow_start_s == 0.0


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"path": "health"}, "path must be a string starting with '/', got 'health'"),
        ({"interval_s": 0}, "interval_s must be a number of seconds > 0, got 0"),
        ({"interval_s": math.inf}, "interval_s must be a number of seconds > 0, got inf"),
        ({"timeout_s": -1.0}, "timeout_s must be a number of seconds > 0, got -1.0"),
        ({"timeout_s": True}, "timeout_s must be a number of seconds > 0, got True"),
        ({"timeout_s": 3.0}, "timeout_s (3.0) must not exceed interval_s (2.0)"),
        ({"rise": 0}, "rise must be an integer >= 1, got 0"),
        ({"fall": 1.5}, "fall must be an integer >= 1, got 1.5"),
        ({"expect_status": (399, 200)}, "expect_status must be an inclusive (low, high) range"),
        ({"expect_status": (200, 600)}, "got (200, 600)"),
        ({"expect_status": (99, 200)}, "got (99, 200)"),
        ({"expect_status": [200, 299]}, "got [200, 299]"),
        ({"expect_status": (200,)}, "got (200,)"),
        ({"slow_start_s": -1}, "slow_start_s must be a number of seconds >= 0, got -1"),
        ({"slow_start_s": math.nan}, "slow_start_s must be a number of seconds >= 0, got nan"),
    ],
)
def test_config_rejects_bad_values_with_a_clear_message(
    fields: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match="invalid health config: ") as caught:
        HealthConfig(**fields)
    assert message in str(caught.value)


def test_config_reports_every_problem_at_once() -> None:
    with pytest.raises(ValueError, match="rise") as caught:
        HealthConfig(rise=0, fall=0, interval_s=-1)
    assert str(caught.value).count(";") == 2


def test_config_limits_that_are_allowed() -> None:
    HealthConfig(interval_s=1.0, timeout_s=1.0, rise=1, fall=1, expect_status=(100, 599))
    HealthConfig(expect_status=(204, 204), slow_start_s=0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        HealthConfig().rise = 5  # type: ignore[misc]


@pytest.mark.parametrize(
    ("status", "passes"), [(199, False), (200, True), (302, True), (399, True), (400, False)]
)
def test_config_says_which_statuses_pass(status: int, passes: bool) -> None:
    assert HealthConfig().passes(status) is passes


@pytest.mark.parametrize("floor", [0.0, -0.1, 1.5, math.nan, True])
def test_slow_start_floor_must_be_in_zero_one(floor: float) -> None:
    with pytest.raises(ValueError, match="slow_start_floor must be in"):
        HealthState(HealthConfig(), 0.0, slow_start_floor=floor)


# -- up → down ------------------------------------------------------------------------------


def test_a_new_backend_is_assumed_up() -> None:
    health, seen = make(now=7.0)
    assert health.is_up
    assert health.state is UP
    assert health.weight_factor(7.0) == 1.0
    stats = health.stats(7.0)
    assert (stats.state, stats.since, stats.reason) == (UP, 7.0, "assumed up until checks fail")
    assert (stats.last_check_ok, stats.last_check_at, stats.last_check_detail) == (None, None, "")
    assert (stats.checks_total, stats.failures_total) == (0, 0)
    assert seen == []


def test_fall_minus_one_failures_keep_it_up_and_fall_takes_it_down() -> None:
    health, seen = make(fall=3)
    assert health.record_check(False, 1.0, "connection refused") is None
    assert health.record_check(False, 2.0, "connection refused") is None
    assert health.is_up
    assert health.stats(2.0).consecutive_failures == 2
    transition = health.record_check(False, 3.0, "connection refused")
    assert transition == HealthTransition(
        UP, DOWN, 3.0, "3 consecutive checks failed: connection refused"
    )
    assert seen == [transition]
    assert not health.is_up
    stats = health.stats(3.0)
    assert (stats.state, stats.since, stats.reason) == (DOWN, 3.0, transition.reason)


def test_more_failures_while_down_change_nothing() -> None:
    health, seen = make(fall=2)
    fail_until_down(health)
    for t in range(1, 5):
        assert health.record_check(False, float(t), "timeout") is None
    assert len(seen) == 1
    stats = health.stats(5.0)
    assert (stats.consecutive_failures, stats.failures_total, stats.since) == (6, 6, 0.0)


def test_one_success_between_failures_restarts_the_fall() -> None:
    health, seen = make(fall=3)
    for ok in (False, False, True, False, False):
        assert health.record_check(ok, 0.0) is None
    assert health.is_up
    assert health.record_check(False, 0.0) is not None
    assert [t.new for t in seen] == [DOWN]


def test_fall_of_one_reads_in_the_singular_and_without_detail() -> None:
    health, _ = make(fall=1)
    transition = health.record_check(False, 0.0)
    assert transition is not None
    assert transition.reason == "1 check failed"


# -- down → up ------------------------------------------------------------------------------


def test_rise_minus_one_successes_keep_it_down_and_rise_brings_it_up() -> None:
    health, seen = make(rise=2, fall=1)
    fail_until_down(health, now=0.0)
    assert health.record_check(True, 1.0, "HTTP 200") is None
    assert not health.is_up
    assert health.stats(1.0).consecutive_successes == 1
    transition = health.record_check(True, 2.0, "HTTP 200")
    assert transition == HealthTransition(DOWN, UP, 2.0, "2 consecutive checks passed")
    assert seen[-1] == transition
    assert health.is_up


def test_one_failure_during_the_rise_restarts_it() -> None:
    health, _ = make(rise=3, fall=1)
    fail_until_down(health)
    for ok in (True, True, False, True, True):
        assert health.record_check(ok, 0.0) is None
    assert not health.is_up
    assert health.record_check(True, 0.0) is not None
    assert health.is_up


def test_rise_of_one_reads_in_the_singular() -> None:
    health, _ = make(rise=1, fall=1)
    fail_until_down(health)
    assert pass_until_up(health).reason == "1 check passed"


def test_successes_while_up_never_transition() -> None:
    health, seen = make()
    for t in range(10):
        assert health.record_check(True, float(t)) is None
    assert seen == []
    assert health.stats(10.0).consecutive_successes == 10


def test_last_check_and_totals_are_tracked() -> None:
    health, _ = make(fall=5)
    health.record_check(True, 1.0, "HTTP 200")
    health.record_check(False, 2.0, "HTTP 503 (expected 200-399)")
    stats = health.stats(3.0)
    assert stats.last_check_ok is False
    assert stats.last_check_detail == "HTTP 503 (expected 200-399)"
    assert stats.last_check_at == 2.0
    assert (stats.checks_total, stats.failures_total) == (2, 1)
    assert (stats.consecutive_successes, stats.consecutive_failures) == (0, 1)


# -- passive signal -------------------------------------------------------------------------


def test_mark_down_takes_it_down_at_once_and_needs_a_full_rise() -> None:
    health, seen = make(rise=2)
    health.record_check(True, 0.0)
    health.record_check(True, 0.5)
    transition = health.mark_down(1.0, "process exited with code -9")
    assert transition == HealthTransition(UP, DOWN, 1.0, "process exited with code -9")
    assert seen == [transition]
    assert health.stats(1.0).consecutive_successes == 0
    assert health.record_check(True, 2.0) is None
    assert health.record_check(True, 3.0) is not None


def test_mark_down_while_down_restarts_the_rise_without_a_transition() -> None:
    health, seen = make(rise=2, fall=1)
    fail_until_down(health)
    health.record_check(True, 1.0)
    assert health.mark_down(2.0, "process exited") is None
    assert len(seen) == 1
    assert health.stats(2.0).reason == "1 check failed"
    assert health.record_check(True, 3.0) is None
    assert health.record_check(True, 4.0) is not None


# -- slow start -----------------------------------------------------------------------------


def test_no_slow_start_when_off() -> None:
    health, _ = make(fall=1, rise=1, slow_start_s=0.0)
    fail_until_down(health)
    transition = pass_until_up(health, now=10.0)
    assert transition.reason == "1 check passed"
    assert health.weight_factor(10.0) == 1.0
    stats = health.stats(10.0)
    assert (stats.slow_start_remaining_s, stats.slow_start_factor) == (None, None)


def test_a_backend_up_from_the_start_is_not_ramped() -> None:
    health, _ = make(slow_start_s=30.0)
    assert health.weight_factor(0.0) == 1.0
    assert health.stats(0.0).slow_start_factor is None


@pytest.mark.parametrize(
    ("elapsed", "factor"),
    [(0.0, 0.1), (5.0, 0.325), (10.0, 0.55), (19.0, 0.955), (20.0, 1.0), (100.0, 1.0)],
)
def test_slow_start_ramps_linearly_from_the_floor(elapsed: float, factor: float) -> None:
    health, _ = make(fall=1, rise=1, slow_start_s=20.0, floor=0.1)
    fail_until_down(health, now=0.0)
    transition = pass_until_up(health, now=100.0)
    assert transition.reason == "1 check passed; slow start over 20 s"
    assert health.weight_factor(100.0 + elapsed) == pytest.approx(factor)
    stats = health.stats(100.0 + elapsed)
    if elapsed < 20.0:
        assert stats.slow_start_factor == pytest.approx(factor)
        assert stats.slow_start_remaining_s == pytest.approx(20.0 - elapsed)
    else:
        assert (stats.slow_start_remaining_s, stats.slow_start_factor) == (None, None)


def test_slow_start_factor_never_goes_below_the_floor_for_an_earlier_now() -> None:
    health, _ = make(fall=1, rise=1, slow_start_s=10.0, floor=0.2)
    fail_until_down(health)
    pass_until_up(health, now=50.0)
    assert health.weight_factor(49.0) == pytest.approx(0.2)


def test_a_floor_of_one_turns_the_ramp_off() -> None:
    health, _ = make(fall=1, rise=1, slow_start_s=10.0, floor=1.0)
    fail_until_down(health)
    pass_until_up(health, now=5.0)
    assert health.weight_factor(5.0) == 1.0
    assert health.stats(5.0).slow_start_factor is None


def test_going_down_during_slow_start_cancels_it_and_recovery_restarts_it() -> None:
    health, _ = make(fall=1, rise=1, slow_start_s=10.0)
    fail_until_down(health, now=0.0)
    pass_until_up(health, now=1.0)
    assert health.weight_factor(6.0) == pytest.approx(0.55)
    health.record_check(False, 6.0)
    assert health.weight_factor(6.0) == 1.0  # down: the factor is not what keeps it out
    assert health.stats(6.0).slow_start_factor is None
    pass_until_up(health, now=8.0)
    assert health.weight_factor(8.0) == pytest.approx(0.1)


def test_the_factor_is_1_while_down() -> None:
    health, _ = make(fall=1, slow_start_s=10.0)
    fail_until_down(health)
    assert health.weight_factor(0.0) == 1.0


# -- listener and stats ---------------------------------------------------------------------


def test_listener_sees_every_transition_in_order_with_the_new_state_in_place() -> None:
    states: list[tuple[HealthStatus, HealthStatus]] = []
    holder: list[HealthState] = []

    def listener(t: HealthTransition) -> None:
        states.append((t.new, holder[0].state))

    health = HealthState(HealthConfig(rise=1, fall=1), 0.0, listener=listener)
    holder.append(health)
    health.record_check(False, 1.0)
    health.record_check(True, 2.0)
    health.mark_down(3.0, "dead")
    assert states == [(DOWN, DOWN), (UP, UP), (DOWN, DOWN)]


def test_a_state_without_listener_still_returns_transitions() -> None:
    health = HealthState(HealthConfig(fall=1), 0.0)
    assert health.record_check(False, 0.0) is not None


def test_stats_are_frozen_and_json_friendly() -> None:
    health, _ = make(fall=1, rise=1, slow_start_s=4.0)
    fail_until_down(health, detail="timeout")
    pass_until_up(health, now=1.0)
    stats = health.stats(2.0)
    assert isinstance(stats, HealthStats)
    with pytest.raises(dataclasses.FrozenInstanceError):
        stats.reason = "x"  # type: ignore[misc]
    data = dataclasses.asdict(stats)
    assert json.loads(json.dumps(data)) == {
        "state": "up",
        "since": 1.0,
        "reason": "1 check passed; slow start over 4 s",
        "rise": 1,
        "fall": 1,
        "consecutive_successes": 1,
        "consecutive_failures": 0,
        "last_check_ok": True,
        "last_check_detail": "",
        "last_check_at": 1.0,
        "checks_total": 2,
        "failures_total": 1,
        "slow_start_remaining_s": 3.0,
        "slow_start_factor": pytest.approx(0.325),
    }


def test_health_imports_no_io() -> None:
    code = "import sys, lbtui.core.health; print('\\n'.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    mods = set(out.stdout.split())
    for banned in ("asyncio", "aiohttp", "textual", "rich", "httpx", "lbtui.balancer"):
        assert banned not in mods, banned


# -- properties -----------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(
    rise=st.integers(1, 5),
    fall=st.integers(1, 5),
    results=st.lists(st.booleans(), max_size=60),
)
def test_state_agrees_with_a_naive_run_counter(rise: int, fall: int, results: list[bool]) -> None:
    """Up or down is decided by the length of the latest run, exactly as HAProxy's counter."""
    health, seen = make(rise=rise, fall=fall)
    up = True
    run_ok = run_fail = 0
    for i, ok in enumerate(results):
        transition = health.record_check(ok, float(i))
        if ok:
            run_ok, run_fail = run_ok + 1, 0
        else:
            run_ok, run_fail = 0, run_fail + 1
        was = up
        if up and run_fail >= fall:
            up = False
        elif not up and run_ok >= rise:
            up = True
        assert health.is_up is up
        assert (transition is not None) is (was is not up)
    assert [t.new for t in seen] == [DOWN, UP] * (len(seen) // 2) + [DOWN] * (len(seen) % 2)


@settings(max_examples=200, deadline=None)
@given(
    slow_start_s=st.floats(0.1, 1000.0),
    floor=st.floats(0.01, 1.0),
    times=st.lists(st.floats(0.0, 2000.0), min_size=1, max_size=20),
)
def test_slow_start_factor_is_monotonic_and_bounded(
    slow_start_s: float, floor: float, times: list[float]
) -> None:
    health, _ = make(fall=1, rise=1, slow_start_s=slow_start_s, floor=floor)
    fail_until_down(health)
    pass_until_up(health, now=0.0)
    factors = [health.weight_factor(t) for t in sorted(times)]
    assert all(floor - 1e-12 <= f <= 1.0 for f in factors)
    assert factors == sorted(factors)
