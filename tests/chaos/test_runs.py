"""The ready-made experiments, for real: each one's fleet, balancer and load on 127.0.0.1, run
through the command (in this process, to save start-up time) with ``--duration-scale`` so
the whole set stays short. Each must pass; the deliberately broken one must fail with exit 1
and say which check broke and by how much."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from lbtui.cli import main
from lbtui.fleet.redis_server import INSTALL_HINT, redis_server_path
from tests.chaos.conftest import FIXTURES, SCENARIOS, assert_self_contained

SCALES = {
    "kill-one-backend": 0.35,
    "slow-one-backend": 0.25,
    "flapping-backend": 0.25,
    "error-storm-with-retries-and-budget": 0.25,
    "rate-limit-burst": 0.4,  # its last window (after the burst, settled) stays ≥ 0.5 s
    "all-backends-down-fallback": 0.4,
    "rolling-restart": 0.5,
    "store-outage": 0.7,  # the store is tried again every 0.5 s: windows ≥ 2 s
    "replica-kill": 1.0,  # a replica's restart (a Python process starting) is not scaled
}
"""Each experiment's scale in the suite: as short as its checks' reaction bounds allow."""
NEED_REDIS = {"store-outage", "replica-kill"}
"""Experiments whose replicas share their limits through a redis-server the run starts."""


def test_every_ready_made_experiment_is_in_the_suite() -> None:
    assert sorted(p.stem for p in SCENARIOS.glob("*.toml")) == sorted(SCALES)


def run(path: Path, scale: float, tmp_path: Path, *extra: str) -> tuple[int, dict[str, Any]]:
    out = tmp_path / "run.json"
    args = ["chaos", "run", str(path), "--duration-scale", str(scale), "--json", str(out)]
    code = main([*args, "-q", *extra])
    return code, json.loads(out.read_text())


@pytest.mark.parametrize("name", sorted(SCALES))
def test_ready_made_experiment_passes(
    name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if name in NEED_REDIS and redis_server_path() is None:
        pytest.skip(INSTALL_HINT)
    report = tmp_path / "report.html"
    code, doc = run(SCENARIOS / f"{name}.toml", SCALES[name], tmp_path, "--report", str(report))
    summary = capsys.readouterr().out
    assert code == 0, summary
    assert doc["verdict"] == "passed"
    assert doc["rollback_ok"] is True
    assert all(c["passed"] for c in doc["checks"])
    assert "verdict   PASSED" in summary
    assert_self_contained(report.read_text())


def test_broken_experiment_fails_and_names_the_check(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    junit = tmp_path / "junit.xml"
    code, doc = run(FIXTURES / "kill-without-retries.toml", 0.3, tmp_path, "--junit", str(junit))
    summary = capsys.readouterr().out
    assert code == 1, summary
    assert doc["verdict"] == "failed"
    failed = [c for c in doc["checks"] if not c["passed"]]
    assert [c["name"] for c in failed] == ["zero client errors without retries"]
    assert failed[0]["figures"]["errors"] >= 1
    assert "FAIL  zero client errors without retries" in summary
    assert f"% errors ({failed[0]['figures']['errors']} of" in summary
    assert "> 0 %" in summary
    assert 'failures="1"' in junit.read_text()
