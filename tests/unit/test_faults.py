"""Fault decisions, driven by a fake clock: ``now`` is just a number we choose."""

from __future__ import annotations

import dataclasses
import math
import random
import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lbtui.core.faults import PPM, FaultDecision, FaultKind, Faults, FaultSpec

B = "api-1"


def run(faults: Faults, n: int, now: float = 0.0, backend: str = B) -> list[FaultDecision | None]:
    return [faults.decide(backend, now) for _ in range(n)]


def applied(decisions: list[FaultDecision | None]) -> int:
    return sum(d is not None for d in decisions)


# -- the spec ----------------------------------------------------------------------------------


def test_kind_may_be_given_as_a_string_and_defaults_are_filled_in():
    assert FaultSpec("delay", ms=5).kind is FaultKind.DELAY  # type: ignore[arg-type]
    assert FaultSpec(FaultKind.ABORT).status == 503
    assert FaultSpec(FaultKind.RESET).after_bytes == 0
    spec = FaultSpec(FaultKind.DOWN)
    assert (spec.percent, spec.duration_s) == (100.0, None)
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.percent = 50  # type: ignore[misc]


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"kind": "explode"}, "unknown fault kind 'explode'; expected one of down, delay, abort"),
        ({"kind": "delay"}, "a delay fault needs ms"),
        ({"kind": "delay", "ms": 0}, "a delay of 0 ms with no jitter does nothing"),
        ({"kind": "delay", "ms": -1}, "ms must be from 0 to 600000, got -1"),
        ({"kind": "delay", "ms": math.nan}, "ms must be a finite number, got nan"),
        ({"kind": "delay", "ms": True}, "ms must be a finite number, got True"),
        ({"kind": "delay", "ms": 5, "ramp_s": 0}, "ramp_s must be > 0, got 0"),
        ({"kind": "abort", "status": 99}, "status must be an HTTP status from 200 to 599, got 99"),
        ({"kind": "abort", "status": 600}, "status must be an HTTP status from 200 to 599"),
        ({"kind": "abort", "ms": 5}, "ms does not apply to abort faults (they take status)"),
        ({"kind": "down", "status": 503}, "status does not apply to down faults (they take no"),
        ({"kind": "hang", "ramp_s": 3}, "ramp_s does not apply to hang faults"),
        ({"kind": "bandwidth"}, "a bandwidth fault needs kbps"),
        ({"kind": "bandwidth", "kbps": 0}, "kbps must be > 0 and ≤ 1e+07, got 0"),
        ({"kind": "reset", "after_bytes": -1}, "after_bytes must be a whole number ≥ 0, got -1"),
        ({"kind": "reset", "after_bytes": 1.5}, "after_bytes must be a whole number ≥ 0"),
        ({"kind": "down", "percent": 150}, "percent must be from 0 to 100, got 150"),
        ({"kind": "down", "percent": -0.5}, "percent must be from 0 to 100, got -0.5"),
        ({"kind": "down", "duration_s": 0}, "duration_s must be > 0, got 0"),
        ({"kind": "down", "duration_s": math.inf}, "duration_s must be a finite number, got inf"),
        ({"kind": "down", "on_s": 5}, "flap needs both on_s and off_s"),
        ({"kind": "down", "on_s": 5, "off_s": 0}, "off_s must be > 0, got 0"),
        ({"kind": "down", "first_n": 0}, "first_n must be a whole number ≥ 1, got 0"),
    ],
)
def test_invalid_specs_say_what_is_wrong(fields: dict[str, Any], message: str):
    with pytest.raises(ValueError, match=re.escape(message)):
        FaultSpec(**fields)


def test_every_problem_is_reported_at_once():
    with pytest.raises(ValueError, match="invalid delay fault") as info:
        FaultSpec(FaultKind.DELAY, ms=-1, percent=101, first_n=0)
    text = str(info.value)
    assert "ms must be" in text
    assert "percent must be" in text
    assert "first_n must be" in text


@pytest.mark.parametrize(
    ("spec", "line"),
    [
        (
            FaultSpec(FaultKind.DELAY, ms=200, jitter_ms=50, duration_s=30),
            "delay 200±50 ms on 100% for 30 s",
        ),
        (
            FaultSpec(FaultKind.ABORT, status=503, percent=25, on_s=5, off_s=25),
            "abort 503 on 25% (flap 5 s on / 25 s off)",
        ),
        (FaultSpec(FaultKind.DOWN, first_n=10), "down on 100% (first 10 requests)"),
        (FaultSpec(FaultKind.HANG, percent=2.5, duration_s=0.5), "hang on 2.5% for 500 ms"),
        (FaultSpec(FaultKind.RESET, after_bytes=1024), "reset after 1024 B on 100%"),
        (
            FaultSpec(FaultKind.BANDWIDTH, kbps=64, duration_s=300),
            "bandwidth 64 KB/s on 100% for 5 min",
        ),
        (
            FaultSpec(FaultKind.DELAY, ms=500, ramp_s=60),
            "delay 500 ms on 100% (ramp from 0 over 60 s)",
        ),
    ],
)
def test_describe_is_one_human_line(spec: FaultSpec, line: str):
    assert spec.describe() == line


# -- decisions per kind ------------------------------------------------------------------------


def test_no_fault_means_no_decision_and_nothing_counted():
    faults = Faults()
    assert faults.decide(B, 0.0) is None
    assert faults.get(B) is None
    assert faults.stats(B) is None
    assert len(faults) == 0
    assert faults.applied_totals() == {}


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (FaultSpec(FaultKind.DOWN), FaultDecision(FaultKind.DOWN)),
        (FaultSpec(FaultKind.HANG), FaultDecision(FaultKind.HANG)),
        (FaultSpec(FaultKind.ABORT), FaultDecision(FaultKind.ABORT, status=503)),
        (FaultSpec(FaultKind.ABORT, status=429), FaultDecision(FaultKind.ABORT, status=429)),
        (FaultSpec(FaultKind.RESET), FaultDecision(FaultKind.RESET, after_bytes=0)),
        (
            FaultSpec(FaultKind.RESET, after_bytes=100),
            FaultDecision(FaultKind.RESET, after_bytes=100),
        ),
        (FaultSpec(FaultKind.BANDWIDTH, kbps=8), FaultDecision(FaultKind.BANDWIDTH, kbps=8)),
        (FaultSpec(FaultKind.DELAY, ms=250), FaultDecision(FaultKind.DELAY, delay_s=0.25)),
    ],
)
def test_each_kind_decides_what_its_spec_says(spec: FaultSpec, expected: FaultDecision):
    faults = Faults()
    faults.set(B, spec, 0.0)
    assert faults.get(B) == spec
    assert B in faults
    assert faults.decide(B, 1.0) == expected
    assert faults.decide("other", 1.0) is None


def test_delay_jitter_stays_in_range_never_negative_and_uses_the_injected_rng():
    spec = FaultSpec(FaultKind.DELAY, ms=100, jitter_ms=150)
    a, b = Faults(random.Random(7)), Faults(random.Random(7))
    a.set(B, spec, 0.0)
    b.set(B, spec, 0.0)
    da = [d.delay_s for d in run(a, 500) if d is not None]
    db = [d.delay_s for d in run(b, 500) if d is not None]
    assert da == db  # same seed, same delays
    assert all(0.0 <= s <= 0.25 for s in da)
    assert min(da) == 0.0  # 100 - 150 clamps to 0
    assert max(da) > 0.2
    assert len(set(da)) > 100


def test_ramp_grows_the_delay_linearly_then_holds():
    faults = Faults()
    faults.set(B, FaultSpec(FaultKind.DELAY, ms=200, ramp_s=10), 100.0)
    delays = []
    for t in (100.0, 102.5, 105.0, 110.0, 130.0):
        d = faults.decide(B, t)
        assert d is not None
        delays.append(d.delay_s)
    assert delays == pytest.approx([0.0, 0.05, 0.1, 0.2, 0.2])


def test_ramp_scales_the_jitter_too():
    faults = Faults(random.Random(1))
    faults.set(B, FaultSpec(FaultKind.DELAY, ms=100, jitter_ms=100, ramp_s=10), 0.0)
    early = [d.delay_s for d in run(faults, 200, now=1.0) if d is not None]
    assert all(0.0 <= s <= 0.02 for s in early)  # 10 ± 10 ms at 10 % of the ramp


# -- percent: exact, not random ----------------------------------------------------------------


def test_fifty_percent_is_every_other_request_starting_with_the_first():
    faults = Faults()
    faults.set(B, FaultSpec(FaultKind.ABORT, percent=50), 0.0)
    pattern = [d is not None for d in run(faults, 8)]
    assert pattern == [True, False] * 4


def test_thirty_three_percent_is_one_in_three():
    faults = Faults()
    faults.set(B, FaultSpec(FaultKind.ABORT, percent=100 / 3), 0.0)
    pattern = [d is not None for d in run(faults, 300)]
    for i in range(0, 300, 3):
        assert sum(pattern[i : i + 3]) == 1


def test_envoy_9597_fifty_percent_is_not_seventy_five():
    faults = Faults()
    faults.set(B, FaultSpec(FaultKind.ABORT, percent=50), 0.0)
    assert applied(run(faults, 1000)) == 500
    s = faults.stats(B)
    assert s is not None
    assert s.applied_percent == 50.0


def test_zero_and_hundred_percent():
    faults = Faults()
    faults.set(B, FaultSpec(FaultKind.DOWN, percent=0), 0.0)
    assert applied(run(faults, 100)) == 0
    faults.set(B, FaultSpec(FaultKind.DOWN, percent=100), 0.0)
    assert applied(run(faults, 100)) == 100  # Toxiproxy #148: nothing escapes a 100 % fault


@settings(max_examples=300, deadline=None)
@given(ppm=st.integers(0, PPM), n=st.integers(1, 3000))
def test_percent_applies_round_n_p_at_every_prefix(ppm: int, n: int):
    percent = ppm / 10_000
    faults = Faults()
    faults.set(B, FaultSpec(FaultKind.ABORT, percent=percent), 0.0)
    count = 0
    for i in range(1, n + 1):
        count += faults.decide(B, 0.0) is not None
        # exactly round-half-up(i·p/100), in integers
        assert count == (i * ppm + PPM // 2) // PPM
    assert abs(count - round(n * percent / 100)) <= 1


@settings(max_examples=200, deadline=None)
@given(percent=st.floats(0, 100), n=st.integers(1, 2000))
def test_any_float_percent_is_within_one_of_expected(percent: float, n: int):
    faults = Faults()
    faults.set(B, FaultSpec(FaultKind.DOWN, percent=percent), 0.0)
    got = applied(run(faults, n))
    assert abs(got - n * percent / 100) <= 1


@settings(max_examples=100, deadline=None)
@given(
    percent=st.integers(0, 100),
    times=st.lists(st.floats(0, 100, allow_nan=False), min_size=1, max_size=400),
)
def test_percent_is_exact_over_the_eligible_requests_of_a_flapping_fault(
    percent: int, times: list[float]
):
    faults = Faults()
    faults.set(B, FaultSpec(FaultKind.DOWN, percent=percent, on_s=3, off_s=7), 0.0)
    for t in sorted(times):
        faults.decide(B, t)
    s = faults.stats(B)
    assert s is not None
    assert s.requests_total == len(times)
    assert s.eligible_total == sum(t % 10 < 3 for t in times)
    assert abs(s.applied_total - s.eligible_total * percent / 100) <= 1


# -- shapes and time ---------------------------------------------------------------------------


def test_duration_ends_the_fault_even_before_expire_runs():
    faults = Faults()
    spec = FaultSpec(FaultKind.ABORT, duration_s=30)
    faults.set(B, spec, 10.0)
    assert faults.decide(B, 39.999) is not None
    assert faults.decide(B, 40.0) is None  # not yet removed, but no longer applied
    assert faults.expire(39.0) == []
    assert faults.get(B) == spec
    assert faults.expire(41.0) == [(B, spec)]
    assert faults.get(B) is None
    assert faults.expire(42.0) == []
    s = faults.stats(B)
    assert s is not None
    assert (s.active, s.ended, s.ended_at) == (False, "expired after 30 s", 40.0)
    assert (s.requests_total, s.applied_total) == (1, 1)


def test_flap_is_on_for_on_s_out_of_every_period_starting_on():
    faults = Faults()
    faults.set(B, FaultSpec(FaultKind.ABORT, on_s=5, off_s=25), 100.0)
    on = {t: faults.decide(B, 100.0 + t) is not None for t in (0, 4.9, 5, 20, 29.9, 30, 34, 35, 60)}
    assert on == {
        0: True,
        4.9: True,
        5: False,
        20: False,
        29.9: False,
        30: True,
        34: True,
        35: False,
        60: True,
    }
    s = faults.stats(B)
    assert s is not None
    assert (s.requests_total, s.eligible_total, s.applied_total) == (9, 5, 5)
    spec = faults.get(B)
    assert spec is not None
    assert spec.in_phase(61)
    assert not spec.in_phase(66)


def test_first_n_affects_only_the_first_requests_then_ends():
    faults = Faults()
    spec = FaultSpec(FaultKind.DOWN, first_n=3)
    faults.set(B, spec, 0.0)
    assert [d is not None for d in run(faults, 5, now=1.0)] == [True, True, True, False, False]
    assert faults.expire(2.0) == [(B, spec)]
    s = faults.stats(B)
    assert s is not None
    assert s.ended == "first 3 requests done"
    assert (s.requests_total, s.eligible_total, s.applied_total) == (5, 3, 3)


def test_first_n_counts_eligible_requests_and_percent_applies_among_them():
    faults = Faults()
    faults.set(B, FaultSpec(FaultKind.ABORT, first_n=10, percent=50), 0.0)
    assert applied(run(faults, 20)) == 5


def test_first_n_only_counts_requests_in_the_on_phase():
    faults = Faults()
    faults.set(B, FaultSpec(FaultKind.ABORT, first_n=2, on_s=1, off_s=1), 0.0)
    assert faults.decide(B, 1.5) is None  # off phase: not eligible, does not use up first_n
    assert faults.decide(B, 2.1) is not None
    assert faults.decide(B, 2.2) is not None
    assert faults.decide(B, 4.1) is None


# -- setting and undoing -----------------------------------------------------------------------


def test_clear_returns_the_spec_and_keeps_the_final_figures():
    faults = Faults()
    spec = FaultSpec(FaultKind.DOWN)
    faults.set(B, spec, 0.0)
    run(faults, 3)
    assert faults.clear(B, 5.0) == spec
    assert faults.clear(B, 6.0) is None
    assert faults.decide(B, 7.0) is None
    s = faults.stats(B)
    assert s is not None
    assert (s.active, s.ended, s.ended_at, s.applied_total) == (False, "cleared", 5.0, 3)
    assert s.remaining_s(5.0) is None


def test_set_replaces_the_previous_fault():
    faults = Faults()
    faults.set(B, FaultSpec(FaultKind.DOWN), 0.0)
    run(faults, 2)
    new = FaultSpec(FaultKind.ABORT, status=500)
    faults.set(B, new, 1.0)
    assert faults.get(B) == new
    s = faults.stats(B)
    assert s is not None
    assert (s.active, s.applied_total, s.set_at) == (True, 0, 1.0)
    assert len(faults) == 1


def test_clear_all_undoes_everything_or_one_owners_faults():
    faults = Faults()
    faults.set("a", FaultSpec(FaultKind.DOWN), 0.0, owner="console")
    faults.set("b", FaultSpec(FaultKind.HANG), 0.0, owner="chaos-run-1")
    faults.set("c", FaultSpec(FaultKind.ABORT), 0.0)
    assert faults.clear_all(1.0, owner="chaos-run-1") == ["b"]
    assert sorted(n for n, _ in faults.items()) == ["a", "c"]
    assert sorted(faults.clear_all(2.0)) == ["a", "c"]
    assert len(faults) == 0
    assert all(faults.decide(n, 3.0) is None for n in "abc")
    assert faults.clear_all(4.0) == []


def test_set_refuses_nonsense():
    faults = Faults()
    with pytest.raises(ValueError, match="needs a backend name"):
        faults.set("", FaultSpec(FaultKind.DOWN), 0.0)
    with pytest.raises(TypeError, match="expected a FaultSpec"):
        faults.set(B, "down", 0.0)  # type: ignore[arg-type]


# -- proof -------------------------------------------------------------------------------------


def test_stats_are_the_proof_requested_vs_applied_with_sample_size():
    faults = Faults()
    spec = FaultSpec(FaultKind.ABORT, percent=25, duration_s=60)
    faults.set(B, spec, 10.0, owner="console")
    run(faults, 40, now=11.0)
    s = faults.stats(B)
    assert s is not None
    assert s.description == "abort 503 on 25% for 60 s"
    assert (s.owner, s.set_at, s.expires_at, s.active) == ("console", 10.0, 70.0, True)
    assert (s.requests_total, s.eligible_total, s.applied_total) == (40, 40, 10)
    assert (s.requested_percent, s.applied_percent, s.sample_size) == (25, 25.0, 40)
    assert s.summary() == "applied 10 of 40 eligible (25% vs 25% requested)"
    assert s.remaining_s(30.0) == 40.0
    assert s.remaining_s(99.0) == 0.0
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.applied_total = 0  # type: ignore[misc]


def test_applied_percent_is_none_before_the_first_eligible_request():
    faults = Faults()
    faults.set(B, FaultSpec(FaultKind.DOWN), 0.0)
    s = faults.stats(B)
    assert s is not None
    assert s.applied_percent is None
    assert s.summary() == "applied 0 of 0 eligible (– vs 100% requested)"


def test_client_observed_counts_what_clients_finally_got():
    faults = Faults()
    faults.set(B, FaultSpec(FaultKind.DOWN), 0.0)
    faults.observe(B, FaultKind.DOWN, 200)  # retried on another backend
    faults.observe(B, "down", 200)
    faults.observe(B, FaultKind.DOWN, 502)
    faults.observe(B, FaultKind.ABORT, 503)  # not this fault's kind: ignored
    faults.observe("other", FaultKind.DOWN, 503)  # no fault there: ignored
    s = faults.stats(B)
    assert s is not None
    assert dict(s.client_observed) == {"200": 2, "502": 1}
    with pytest.raises(TypeError):
        s.client_observed["200"] = 0  # type: ignore[index]
    # a request that outlives its fault is still counted on it
    faults.clear(B, 1.0)
    faults.observe(B, FaultKind.DOWN, "reset")
    s = faults.stats(B)
    assert s is not None
    assert dict(s.client_observed) == {"200": 2, "502": 1, "reset": 1}


def test_applied_totals_only_grow_across_clears_for_prometheus():
    faults = Faults()
    faults.set("a", FaultSpec(FaultKind.DOWN), 0.0)
    faults.set("b", FaultSpec(FaultKind.DELAY, ms=1), 0.0)
    run(faults, 3, backend="a")
    run(faults, 2, backend="b")
    faults.clear_all(1.0)
    faults.set("a", FaultSpec(FaultKind.DOWN, percent=50), 2.0)
    run(faults, 4, backend="a")
    assert faults.applied_totals() == {
        ("a", FaultKind.DOWN): 5,
        ("b", FaultKind.DELAY): 2,
    }
