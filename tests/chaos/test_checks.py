"""Checks judged on hand-made recordings, and the reports rendered from them: no processes,
no sockets, no clock."""

from __future__ import annotations

import dataclasses
import json
import re
import xml.etree.ElementTree as ET
from typing import Any

import pytest

from lbtui.chaos.checks import Phases, evaluate
from lbtui.chaos.recording import (
    CLIENT_CLASSES,
    ActionRecord,
    BackendSample,
    ProcessTally,
    Recording,
    RollbackStep,
    RunEvent,
    Sample,
)
from lbtui.chaos.report import render_html, render_json, render_junit, render_text
from lbtui.chaos.runner import RunResult
from lbtui.chaos.scenario import Scenario
from lbtui.chaos.system import Member
from lbtui.core.events import BreakerChanged
from lbtui.core.window import bucket_of
from tests.chaos.conftest import assert_self_contained


def backend(requests: int, errors: int = 0, **kw: Any) -> BackendSample:
    fields: dict[str, Any] = {
        "p99_ms": 5.0,
        "in_flight": 0,
        "breaker": "closed",
        "admin": "active",
        "ejected": False,
        "health": None,
        "fault": None,
        "weight": 1.0,
    }
    fields.update(kw)
    return BackendSample(requests=requests, errors=errors, **fields)


def breaker(id: int, message: str, old: str, new: str) -> BreakerChanged:
    return BreakerChanged(id=id, backend="b", message=message, old=old, new=new)


def recording(seconds: int = 10, rate: int = 100, latency_s: float = 0.005) -> Recording:
    """A steady run: ``rate`` 2xx a second, split over backends a and b, 4 samples a second;
    b is killed at 3 s (no traffic from 4 s on) and restarted at 7 s (traffic from 7.5 s)."""
    rec = Recording()
    ok = 0
    a_req = b_req = 0
    for i in range(seconds * 4 + 1):
        t = i / 4
        if i:
            ok += rate // 4
            b_share = 0 if 3.9 < t < 7.4 else rate // 8
            b_req += b_share
            a_req += rate // 4 - b_share
        client = dict.fromkeys(CLIENT_CLASSES, 0)
        client["2xx"] = ok
        rec.add(
            Sample(
                t=t,
                client=client,
                client_latency={bucket_of(latency_s): rate // 4} if i else {},
                balancer_requests=ok,
                retries=ok // 50,
                fallbacks=0,
                rate_limited=0,
                admitted=ok,
                limits_rps=float(rate),
                backends={
                    "a": backend(a_req),
                    "b": backend(b_req, breaker="open" if 3.0 <= t < 5.0 else "closed"),
                },
                load_rate=float(rate),
            )
        )
    rec.actions += [
        ActionRecord(1, "kill", "kill", "b", "kill b", 3.0, 3.0, 0.01, True, "process reaped"),
        ActionRecord(2, "restart", "restart", "b", "restart b", 7.0, 7.0, 0.4, True, "pid 9"),
    ]
    rec.events += [
        RunEvent(3.2, breaker(1, "breaker closed → open: 5 failures", "closed", "open")),
        RunEvent(5.0, breaker(2, "breaker open → half_open", "open", "half_open")),
    ]
    rec.processes[("b", 9)] = ProcessTally("b", 9, 100, {"POST": 10}, 0, False)
    rec.rollback.append(RollbackStep("clear faults", True, "none left on"))
    return rec


SCENARIO = Scenario.model_validate(
    {
        "load": {"rate": 100, "duration": "10s"},
        "timeline": [
            {"at": "3s", "action": "kill", "backend": "b", "id": "kill"},
            {"at": "7s", "action": "restart", "backend": "b", "id": "restart"},
        ],
        "checks": [{"name": "x", "kind": "no_duplicate_posts"}],
    }
)


def judge(check: dict[str, Any], rec: Recording | None = None) -> Any:
    sc = SCENARIO.model_copy(
        update={
            "checks": [
                Scenario.model_validate(
                    {"load": {"rate": 1, "duration": "1s"}, "checks": [{"name": "c", **check}]}
                ).checks[0]
            ]
        }
    )
    return evaluate(sc.checks[0], rec or recording(), sc)


def test_phases_follow_the_timeline() -> None:
    phases = Phases.of(SCENARIO, 10.0)
    assert (phases.first, phases.last, phases.end) == (3.0, 7.0, 10.0)


def test_error_rate_counts_the_classes_asked_for() -> None:
    rec = recording()
    last = rec.samples[-1]
    bad = dict(last.client)
    bad["5xx"], bad["429"] = 5, 50
    rec.samples[-1] = dataclasses.replace(last, client=bad)
    r = judge({"kind": "error_rate_below", "percent": 0.4}, rec)
    assert not r.passed
    assert r.figures["errors"] == 5
    assert "5 of 1055: 5xx, transport" in r.figure
    assert "0.47 % errors" in r.figure
    assert "> 0.4 %" in r.figure
    r = judge({"kind": "error_rate_below", "percent": 10, "count": ["429"]}, rec)
    assert r.passed
    assert r.figures["errors"] == 50
    r = judge({"kind": "error_rate_below", "percent": 0, "phase": "before"}, rec)
    assert r.passed
    assert r.window == (0.0, 3.0)


def test_p99_checks_read_the_clients_histogram() -> None:
    r = judge({"kind": "p99_below", "ms": 10})
    assert r.passed
    assert 4.8 < float(r.figures["p99_ms"]) < 5.2
    assert not judge({"kind": "p99_above", "ms": 10}).passed
    slow = judge({"kind": "p99_below", "ms": 10}, recording(latency_s=0.2))
    assert not slow.passed
    assert re.match(r"client p99 19\d\.\d ms > 10 ms", slow.figure), slow.figure


def test_a_check_with_nothing_to_judge_fails() -> None:
    r = judge({"kind": "p99_below", "ms": 10, "from": "10s"})
    assert not r.passed
    assert "only 0 answers" in r.figure


def test_breaker_opens_within_reads_the_event_stream() -> None:
    r = judge({"kind": "breaker_opens_within", "backend": "b", "after": "kill", "within": "1s"})
    assert r.passed
    assert r.figures["opened_after_s"] == pytest.approx(0.2)
    r = judge({"kind": "breaker_opens_within", "backend": "b", "after": 1, "within": "100ms"})
    assert not r.passed
    assert "opened 0.20 s after #1 (kill b) > 0.1 s" in r.figure
    r = judge({"kind": "breaker_opens_within", "backend": "a", "after": 1, "within": "1s"})
    assert "never opened" in r.figure


def test_traffic_to_a_killed_backend_and_back() -> None:
    r = judge({"kind": "no_traffic_to_killed_after", "backend": "b", "after": "1s"})
    assert r.passed, r.figure
    assert r.window == (4.0, 7.0)
    r = judge({"kind": "no_traffic_to_killed_after", "backend": "b", "after": "500ms"})
    assert not r.passed
    assert r.figures["requests"] == 12
    r = judge({"kind": "traffic_resumes_within", "backend": "b", "within": "1s"})
    assert r.passed
    assert r.figures["resumed_after_s"] == pytest.approx(0.5)
    r = judge({"kind": "traffic_resumes_within", "backend": "b", "within": "250ms"})
    assert not r.passed


def test_duplicates_and_rates() -> None:
    assert judge({"kind": "no_duplicate_posts"}).passed
    rec = recording()
    rec.processes[("a", 8)] = ProcessTally("a", 8, 50, {"POST": 5}, 2, False)
    r = judge({"kind": "no_duplicate_posts"}, rec)
    assert not r.passed
    assert "a (pid 8): 2" in r.figure
    r = judge({"kind": "admitted_rate_within", "percent": 5})
    assert r.passed
    assert r.figures["rate"] == pytest.approx(100)
    assert not judge({"kind": "admitted_rate_within", "percent": 5, "rps": 150}).passed
    r = judge({"kind": "retry_share_below", "percent": 1})
    assert not r.passed
    assert judge({"kind": "retry_share_below", "percent": 3}).passed
    assert not judge({"kind": "fallback_share_above", "percent": 1}).passed


def result(verdict: str = "failed") -> RunResult:
    rec = recording()
    sc = SCENARIO.model_copy(
        update={
            "checks": Scenario.model_validate(
                {
                    "load": {"rate": 1, "duration": "1s"},
                    "checks": [
                        {"name": "errors <b>low</b>", "kind": "error_rate_below", "percent": 1},
                        {"name": "p99 tiny", "kind": "p99_below", "ms": 1},
                    ],
                }
            ).checks
        }
    )
    r = RunResult(
        name="unit",
        path="unit.toml",
        description="a hand-made run",
        scale=1.0,
        mode="local",
        target="http://127.0.0.1:1",
        admin="http://127.0.0.1:2",
        fleet_source="inline",
        config_source="defaults",
        members=[
            Member("a", "http://127.0.0.1:3", 8, "fast"),
            Member("b", "http://127.0.0.1:4", 9, ""),
        ],
        started_wall=1_700_000_000.0,
        verdict=verdict,  # type: ignore[arg-type]
        recording=rec,
        phases=Phases.of(sc, rec.end),
        algorithm="round_robin",
        load_rate=100,
        load_duration_s=10,
    )
    r.checks = [evaluate(c, rec, sc) for c in sc.checks]
    return r


def test_reports_name_the_broken_check_and_its_figure() -> None:
    r = result()
    assert r.exit_code == 1
    text = render_text(r)
    assert "FAIL  p99 tiny" in text
    assert "client p99 5.0 ms > 1 ms" in text
    assert "verdict   FAILED: 1 of 2 checks held (exit 1)" in text
    doc = json.loads(render_json(r))
    assert doc["verdict"] == "failed"
    assert doc["exit_code"] == 1
    failed = [c for c in doc["checks"] if not c["passed"]]
    assert [c["name"] for c in failed] == ["p99 tiny"]
    assert failed[0]["figures"]["p99_ms"] == pytest.approx(5.0, rel=0.03)
    assert len(doc["series"]["t_s"]) == 10
    suite = ET.fromstring(render_junit(r)).find("testsuite")
    assert suite is not None
    assert suite.get("failures") == "1"
    failure = suite.find("testcase[@name='p99 tiny']/failure")
    assert failure is not None
    assert "client p99" in (failure.get("message") or "")


def test_html_is_self_contained_and_draws_the_timeline() -> None:
    page = render_html(result())
    assert_self_contained(page)
    assert "#1 kill b" in page  # the action marker's label
    assert "b breaker open" in page  # a breaker band's tooltip
    assert "errors &lt;b&gt;low&lt;/b&gt;" in page  # names are escaped


@pytest.mark.parametrize(
    ("verdict", "code"),
    [("passed", 0), ("failed", 1), ("error", 2), ("aborted", 3), ("interrupted", 130)],
)
def test_exit_codes(verdict: str, code: int) -> None:
    r = result(verdict)
    assert r.exit_code == code
    xml = ET.fromstring(render_junit(r))
    assert (xml.get("errors") == "1") == (verdict in ("error", "aborted", "interrupted"))
