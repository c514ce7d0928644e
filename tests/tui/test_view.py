"""The view model without Textual: numbers, states with reasons, rows, sorting, filtering."""

from __future__ import annotations

import dataclasses

import pytest

from lbtui.control.model import (
    BackendView,
    BreakerChanged,
    BreakerView,
    FaultKind,
    FaultSpec,
    HealthView,
    ProcessView,
    RetryBudgetExhausted,
    Snapshot,
)
from lbtui.tui import figures, numbers
from lbtui.tui import reasons as pane
from lbtui.tui import view as v
from tests.tui.recorded_fixture import AT, WALL, build_snapshot


@pytest.fixture
def snap() -> Snapshot:
    return build_snapshot()


def backend(snap: Snapshot, name: str, **changes: object) -> BackendView:
    return dataclasses.replace(snap.backend(name), **changes)  # type: ignore[arg-type]


# --- numbers


@pytest.mark.parametrize(
    ("x", "text"),
    [(0.4, "0.4"), (1.0, "1"), (1 / 3, "0.33"), (12.5, "12.5"), (1250.4, "1250"), (0, "0")],
)
def test_num(x, text):
    assert numbers.num(x) == text


def test_rate_ms_percent():
    assert [numbers.rate_text(x) for x in (0, 3.25, 123.4, 12_345)] == ["0", "3.2", "123", "12.3k"]
    assert [numbers.ms_text(x) for x in (0, 0.42, 3.21, 251.0, 12_345)] == [
        "–",
        "0.42",
        "3.2",
        "251",
        "12.3k",
    ]
    assert [numbers.percent_text(x) for x in (0, 0.004, 0.58, 1.0)] == ["0", "0.4", "58", "100"]


@pytest.mark.parametrize(
    ("s", "text"),
    [
        (None, "–"),
        (0.25, "250 ms"),
        (3.2, "3.2 s"),
        (42.3, "42 s"),
        (303, "5 m 03 s"),
        (7500, "2 h 05 m"),
        (-1, "0 ms"),
    ],
)
def test_human_duration(s, text):
    assert numbers.human_duration(s) == text


@pytest.mark.parametrize(
    ("n", "text"),
    [(512, "512 B"), (4096, "4.0 KiB"), (12.3 * 2**20, "12.3 MiB"), (1.5 * 2**30, "1.5 GiB")],
)
def test_human_bytes(n, text):
    assert numbers.human_bytes(n) == text


def test_clock_uses_the_snapshot_pair(snap):
    assert numbers.clock_text(WALL) == "12:03:07"
    assert numbers.clock_text(numbers.wall_of(snap, AT - 4.8)) == "12:03:02"


# --- sparklines


def test_sparkline_scales_to_max_and_keeps_idle_blank():
    assert numbers.sparkline([0, 1, 2, 4, 8]) == " ▁▂▄█"
    assert numbers.sparkline([0, 0]) == "  "
    assert numbers.sparkline([]) == ""
    assert numbers.sparkline([5, 5], top=10) == "▄▄"


def test_resample_keeps_spikes():
    values = [0.0] * 60
    values[31] = 9.0
    out = numbers.resample(values, 12)
    assert len(out) == 12
    assert max(out) == 9.0
    assert numbers.resample([1, 2], 12) == [1, 2]
    assert len(numbers.sparkline(list(range(60)), 12)) == 12


# --- states and reasons


def test_state_symbols(snap):
    assert v.state_cell(snap.backend("api-1")) == (("⊘ ejected", "magenta"),)
    assert v.state_cell(snap.backend("api-2")) == (("● up", "green"),)
    assert v.breaker_cell(snap.backend("api-2")) == (("OPEN", "bold red"),)
    assert v.cell_text(v.state_cell(snap.backend("api-3"))) == "◐ draining"
    assert v.cell_text(v.state_cell(snap.backend("api-4"))) == "● up"
    disabled = backend(snap, "api-4", admin="disabled")
    assert v.cell_text(v.state_cell(disabled)) == "○ disabled"
    dead = backend(
        snap, "api-4", process=ProcessView(pid=1, alive=False, cpu_percent=0, rss_bytes=0)
    )
    assert v.cell_text(v.state_cell(dead)) == "✖ down"


def test_breaker_labels(snap):
    b = snap.backend("api-4")
    assert b.breaker is not None
    for state, reason, label in [
        ("closed", "failure rate back under", "closed"),
        ("half_open", "probe", "half-open"),
        ("forced_open", "forced by operator", "OPEN (forced)"),
        ("closed", "forced by operator", "CLOSED (forced)"),
        ("disabled", "forced by operator", "OFF (forced)"),
    ]:
        br = dataclasses.replace(b.breaker, state=state, reason=reason)
        changed = backend(snap, "api-4", breaker=br)
        assert v.cell_text(v.breaker_cell(changed)) == label
        assert v.cell_text(v.state_cell(changed)) == "● up"  # the breaker is not the state
        titles = {r.title for r in pane.state_reasons(changed, snap)}
        if "forced" in label:
            assert label in titles  # the detail says the same words as the table


def test_weight_effective_over_configured(snap):
    assert v.weight_text(snap.backend("api-1")) == "0/1"
    assert v.weight_text(backend(snap, "api-4", weight_effective=0.4)) == "0.4/1"


def reasons(b: BackendView, snap: Snapshot) -> dict[str, str]:
    return {r.title: r.text for r in pane.state_reasons(b, snap)}


def test_breaker_open_reason_says_why_since_when_and_what_next(snap):
    r = reasons(snap.backend("api-2"), snap)
    assert r["OPEN"] == (
        "since 12:03:02 — failure rate 62% >= 50% over 21 calls; half-open probe in 3.2 s"
    )


def test_ejection_reason(snap):
    r = reasons(snap.backend("api-1"), snap)
    assert r["EJECTED"] == "5 consecutive 5xx (2nd ejection, 60 s); readmitted in 42 s"


def test_drain_shows_its_countdown(snap):
    r = reasons(snap.backend("api-3"), snap)
    assert r["DRAINING"] == "since 12:02:55 — no new requests; 3 requests in flight left"
    drained = backend(snap, "api-3", in_flight=0)
    assert "drained: nothing in flight" in reasons(drained, snap)["DRAINING"]


def test_fault_proof_requested_vs_applied(snap):
    r = reasons(snap.backend("api-4"), snap)
    assert r["FAULT"] == (
        "delay 200±50 ms on 50% — applied 455 of 902 eligible (50.4 % vs 50 % requested); "
        "clients saw 200 ×455; until cleared (r)"
    )
    assert v.cell_text(v.fault_cell(snap.backend("api-4").fault)) == "delay 200±50ms 50→50%"
    assert v.cell_text(v.fault_cell(snap.backend("api-2").fault)) == "abort 503 60→60%"
    assert "ends in 1 m 24 s" in reasons(snap.backend("api-2"), snap)["FAULT"]


def test_ended_fault_stays_greyed(snap):
    f = snap.backend("api-2").fault
    assert f is not None
    ended = backend(snap, "api-2", fault=dataclasses.replace(f, active=False, ended="cleared"))
    assert v.cell_text(v.fault_cell(ended.fault)).startswith("ended abort 503")
    assert "FAULT" not in reasons(ended, snap)
    assert reasons(ended, snap)["FAULT ENDED"].endswith("; ended: cleared")
    assert not v.fault_active(ended)


def test_health_down_slow_start_disabled_dead_overcap(snap):
    h = snap.backend("api-4").health
    assert h is not None
    down = backend(
        snap,
        "api-4",
        health=dataclasses.replace(
            h,
            state="down",
            since=AT - 2,
            reason="3 consecutive checks failed",
            last_check_ok=False,
            last_check_detail="HTTP 503",
        ),
    )
    assert reasons(down, snap)["DOWN"] == (
        "since 12:03:05 — 3 consecutive checks failed; last check: HTTP 503"
    )
    assert h.last_check_detail == "HTTP 200"
    assert down.health is not None
    same = dataclasses.replace(
        down, health=dataclasses.replace(down.health, reason="2 checks failed: HTTP 503")
    )
    assert reasons(same, snap)["DOWN"] == "since 12:03:05 — 2 checks failed: HTTP 503"
    ramp = backend(
        snap,
        "api-4",
        health=dataclasses.replace(h, slow_start_factor=0.4, slow_start_remaining_s=18.0),
    )
    assert reasons(ramp, snap)["SLOW START"] == "40 % of weight; 18 s to full weight"
    disabled = backend(snap, "api-4", admin="disabled", admin_since=AT - 7)
    assert reasons(disabled, snap)["DISABLED"] == "since 12:03:00 by the operator; x enables it"
    dead = backend(
        snap, "api-4", process=ProcessView(pid=77, alive=False, cpu_percent=0, rss_bytes=0)
    )
    assert reasons(dead, snap)["PROCESS DEAD"] == "pid 77 is gone; r restarts it"
    assert reasons(snap.backend("api-4"), snap)["OVER CAP"].startswith(
        "demand 96 req/s > max_rps 80"
    )


def test_a_healthy_backend_has_no_reasons(snap):
    healthy = backend(snap, "api-4", fault=None, max_rps=None)
    assert pane.state_reasons(healthy, snap) == []


def test_breaker_window_and_score(snap):
    br = snap.backend("api-2").breaker
    assert isinstance(br, BreakerView)
    assert pane.breaker_window(br) == (
        "count window of 20: 21 calls, failures 13 = 62 % (opens at ≥ 50 %), slow 0 = 0 % "
        "(≥ 100 % over 1.0 s); opened 3× since start"
    )
    assert pane.score_text({"ewma_ms": 12.34, "in_flight": 2, "penalty": 0.0, "cost": 37.02}) == (
        "cost 37.02 = ewma 12.34 ms × (in-flight 2 + 1), penalty 0"
    )
    assert pane.score_text({"ewma_ms": 1, "in_flight": 0, "penalty": 0, "cost": None}).startswith(
        "cost ∞"
    )


# --- rows, sorting, filtering


def test_row_has_every_column(snap):
    row = v.backend_row(snap.backend("api-4"))
    assert len(row) == len(v.COLUMNS)
    texts = dict(zip(v.COLUMN_KEYS, (v.cell_text(c) for c in row), strict=True))
    assert texts["name"] == "api-4"
    assert texts["weight"] == "1/1"
    assert texts["in_flight"] == "14"
    assert texts["rps"] == "96"
    assert len(texts["spark"]) == v.SPARK_WIDTH
    assert texts["p99"] == "251"
    assert texts["cpu"] == "23"
    assert texts["rss"] == "39.4 MiB"
    assert dict(row[v.COLUMN_KEYS.index("rps")])["96"] == "bold red"  # over its max_rps


def test_rows_are_hashable_and_equal_when_unchanged(snap):
    assert v.backend_row(snap.backend("api-1")) == v.backend_row(build_snapshot().backend("api-1"))
    assert len({v.backend_row(b) for b in snap.backends}) == 4


def test_sort(snap):
    assert v.sort_names(snap.backends, None) == ["api-1", "api-2", "api-3", "api-4"]
    assert v.sort_names(snap.backends, "rps", reverse=True) == ["api-4", "api-2", "api-3", "api-1"]
    assert v.sort_names(snap.backends, "state")[:2] == ["api-1", "api-3"]
    assert v.natural_key("b2") < v.natural_key("b10")
    assert v.parse_sort("-rps") == ("rps", True)
    assert v.parse_sort("p99") == ("p99", False)
    assert v.parse_sort("in-flight") == ("in_flight", False)
    with pytest.raises(ValueError, match="cannot sort by"):
        v.parse_sort("colour")


def test_filter_matches_every_column(snap):
    def hits(query: str) -> list[str]:
        return [b.name for b in snap.backends if v.matches(v.row_text(b), query)]

    assert hits("ejected") == ["api-1"]
    assert hits("open") == ["api-2"]
    assert hits("delay") == ["api-4"]
    assert hits("9103") == ["api-3"]  # the URL
    assert hits("API up") == ["api-2", "api-4"]
    assert hits("") == ["api-1", "api-2", "api-3", "api-4"]


# --- header, events


def test_totals_figures(snap):
    figs = {f.label: f for f in figures.totals_figures(snap)}
    assert figs["req/s 1s"].value == "99"  # the snapshot states its window
    assert figs["success"].value == "98.8 %"
    assert figs["overload M"].value == "1"
    assert figs["overload M"].style == "bold red"
    assert figs["imbalance L"].value == "94.6"
    calm = dataclasses.replace(snap, overload=0)
    assert {f.label: f for f in figures.totals_figures(calm)}["overload M"].style == "green"


def test_limits_text():
    assert figures.limits_text({"rps": 500.0, "burst": 1000.0, "max_in_flight": 256}) == (
        "rps 500 burst 1000 · in-flight ≤ 256"
    )
    assert figures.limits_text({"rps": None}) == "no limits"


@pytest.mark.parametrize(
    ("target", "loopback"),
    [
        ("in-process", True),
        ("http://127.0.0.1:9901", True),
        ("http://localhost:9901", True),
        ("http://[::1]:9901", True),
        ("http://10.0.0.5:9901", False),
        ("https://lb.example.com", False),
    ],
)
def test_loopback_target(target, loopback):
    assert figures.is_loopback_target(target) is loopback


def test_event_line():
    e = BreakerChanged(
        id=3,
        at=AT,
        wall=WALL,
        backend="api-2",
        message="closed → open: failure rate 62%",
        old="closed",
        new="open",
    )
    assert v.cell_text(v.event_segments(e)) == (
        "12:03:07 breaker  api-2  closed → open: failure rate 62%"
    )
    budget = RetryBudgetExhausted(id=4, at=AT, wall=WALL, message="exhausted")
    assert v.cell_text(v.event_segments(budget)).startswith("12:03:07 budget   ·      exhausted")
    assert v.matches(v.event_text(e), "breaker api-2")


def test_fault_spec_text():
    assert v.fault_spec_text(FaultSpec(kind=FaultKind.DOWN)) == "down"
    assert v.fault_spec_text(FaultSpec(kind=FaultKind.DELAY, ms=20)) == "delay 20ms"
    assert v.fault_spec_text(FaultSpec(kind=FaultKind.BANDWIDTH, kbps=64)) == "bw 64KB/s"


def test_health_view_is_optional(snap):
    b = backend(snap, "api-4", health=None, breaker=None, process=None, fault=None, max_rps=None)
    assert pane.state_reasons(b, snap) == []
    assert v.cell_text(v.backend_row(b)[v.COLUMN_KEYS.index("cpu")]) == ""
    assert isinstance(snap.backend("api-4").health, HealthView)


# --- every terminal size, words that do not contradict (issue 13, items 3 and 6)

REQUIRED = ("name", "state", "breaker", "rps", "p99", "errors")


@pytest.mark.parametrize("width", [80, 100, 120, 200])
def test_columns_that_must_stay_fit_every_width(width):
    windows = v.Windows()
    shown = v.fit_columns(width - 2, windows)  # minus the vertical scrollbar
    keys = [v.COLUMNS[i].key for i in shown]
    assert set(REQUIRED) <= set(keys)
    assert keys == [k for k in v.COLUMN_KEYS if k in keys]  # in their usual order
    used = sum(v.column_width(v.COLUMNS[i], windows) + 2 for i in shown)
    assert used <= width - 2


def test_columns_come_back_by_priority_as_the_width_grows():
    windows = v.Windows(rate_s=1.0, quantile_s=10.0)
    counts = [len(v.fit_columns(w, windows)) for w in (78, 98, 118, 198)]
    placeholders = {v.COLUMNS[i].key for i in v.fit_columns(98, v.Windows())}
    assert "fault" in placeholders
    assert counts == sorted(counts)
    assert counts[0] == len(REQUIRED)
    assert counts[-1] == len(v.COLUMNS)
    at_100 = {v.COLUMNS[i].key for i in v.fit_columns(98, windows)}
    assert "fault" in at_100  # the fault goes last but one from the optional columns
    assert "rss" not in at_100


def test_headers_name_their_window():
    windows = v.Windows(rate_s=1.0, quantile_s=10.0)
    titles = {c.key: c.title(windows) for c in v.COLUMNS}
    assert titles["rps"] == "req/s 1s"
    assert titles["p99"] == "p99 10s"
    assert titles["p50"] == "p50 10s"
    assert v.window_text(0.25) == "250ms"
    assert v.window_text(60) == "1m"


def test_a_window_without_enough_samples_reads_a_dash(snap):
    assert numbers.ms_text(None) == "—"
    b = backend(snap, "api-4", p50_ms=None, p99_ms=None)  # type: ignore[arg-type]
    row = dict(zip(v.COLUMN_KEYS, (v.cell_text(c) for c in v.backend_row(b)), strict=True))
    assert row["p50"] == row["p99"] == "—"
    assert v.sort_value(b, "p99")[0] == -1.0


@pytest.mark.parametrize("width", [80, 100, 120, 200])
def test_header_figures_fit_and_keep_the_ones_that_matter(snap, width):
    chosen = figures.fit_figures(figures.totals_figures(snap), width)
    line = " " + "  ".join(f"{label} {f.value}" for label, f in chosen)
    assert len(line) <= width
    values = {f.label for _, f in chosen}
    assert {"success", "429/s", "imbalance L", "overload M"} <= values
    assert any(label.startswith("req/s") for label in values)
    if width >= 120:
        assert len(chosen) == len(figures.totals_figures(snap))


def test_fault_proof_says_when_retries_hid_the_effect(snap):
    f = snap.backend("api-2").fault
    assert f is not None
    spec = dataclasses.replace(f.spec, percent=100.0)
    hidden = dataclasses.replace(
        f, spec=spec, applied=5, eligible=5, applied_percent=100.0, client_observed={"200": 5}
    )
    assert "clients saw 200 ×5 — retried on other backends" in v.fault_proof(hidden)
    some = dataclasses.replace(hidden, client_observed={"200": 3, "503": 2})
    assert "clients saw 200 ×3, 503 ×2 — 3 retried on other backends" in v.fault_proof(some)
    seen = dataclasses.replace(hidden, client_observed={"503": 5})
    assert "retried" not in v.fault_proof(seen)
    delay = snap.backend("api-4").fault
    assert delay is not None
    assert "retried" not in v.fault_proof(delay)
