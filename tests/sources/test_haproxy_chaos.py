"""``lbtui chaos run --attach unix://…`` against a real HAProxy: the ready-made scenario passes
with load measured at HAProxy's frontend, and every exit path puts each server's admin state
and weight back as the run found them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lbtui.cli import main
from tests.sources.rig import HaproxyRig

ROOT = Path(__file__).resolve().parents[2]
SCENARIO = ROOT / "demo" / "scenarios" / "haproxy" / "drain-and-weight.toml"


def run(haproxy: HaproxyRig, scenario: Path, tmp_path: Path, scale: float) -> tuple[int, dict]:
    out = tmp_path / "run.json"
    argv = ["chaos", "run", str(scenario), "--attach", haproxy.url, "--target", haproxy.frontend]
    code = main([*argv, "--duration-scale", str(scale), "--json", str(out), "-q"])
    return code, json.loads(out.read_text()) if out.exists() else {}


def as_configured(haproxy: HaproxyRig) -> list[tuple[str, int]]:
    return [(haproxy.server_status(n), haproxy.server_weight(n)) for n in haproxy.servers]


def test_ready_made_haproxy_scenario_passes_and_rolls_back(
    haproxy: HaproxyRig, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    haproxy.command("set server be_app/s2 weight 2")  # as found: weight 2, not 1
    code, doc = run(haproxy, SCENARIO, tmp_path, 0.5)
    summary = capsys.readouterr().out
    print(summary)
    assert code == 0, summary
    assert doc["verdict"] == "passed"
    assert doc["rollback_ok"] is True
    assert all(c["passed"] for c in doc["checks"])
    assert as_configured(haproxy) == [("UP", 1), ("UP", 2), ("UP", 1)]


def test_a_step_haproxy_refuses_mid_run_still_rolls_back(
    haproxy: HaproxyRig, tmp_path: Path
) -> None:
    broken = tmp_path / "broken.toml"
    broken.write_text(BROKEN)
    code, doc = run(haproxy, broken, tmp_path, 1.0)
    assert code == 2
    assert [a["ok"] for a in doc["actions"]] == [True, True, True, False]
    # s1 was drained, s3 in maintenance, s2 at weight 5 when the run stopped: as found again
    assert as_configured(haproxy) == [("UP", 1), ("UP", 1), ("UP", 1)]


BROKEN = """
name = "broken"
[load]
rate = 50
duration = "3s"
[[timeline]]
at = "0.2s"
action = "drain"
backend = "be_app/s1"
[[timeline]]
at = "0.3s"
action = "disable"
backend = "be_app/s3"
[[timeline]]
at = "0.4s"
action = "weight"
backend = "be_app/s2"
weight = 5
[[timeline]]
at = "0.6s"
action = "weight"
backend = "be_app/s2"
weight = 300  # HAProxy's weights stop at 256
[[checks]]
name = "zero client errors"
kind = "error_rate_below"
percent = 0
"""


def test_a_fault_on_haproxy_is_refused_before_anything_changes(
    haproxy: HaproxyRig, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    faulty = tmp_path / "faulty.toml"
    faulty.write_text(
        SCENARIO.read_text()
        + '\n[[timeline]]\nat = "2s"\naction = "fault"\nbackend = "be_app/s2"\nfault = "delay"\n'
        'delay = "100ms"\n'
    )
    code, doc = run(haproxy, faulty, tmp_path, 0.3)
    err = capsys.readouterr().err
    assert code == 2
    assert doc == {}
    assert "timeline[5].action" in err
    assert "cannot inject faults" in err
    assert as_configured(haproxy) == [("UP", 1), ("UP", 1), ("UP", 1)]


def test_an_interrupted_run_rolls_back(haproxy: HaproxyRig, tmp_path: Path) -> None:
    """SIGINT while s1 is drained and s3 in maintenance: exit 130, every server as found."""
    import os
    import signal
    import subprocess
    import sys

    from tests.sources.rig import wait_for

    scenario = tmp_path / "long.toml"
    scenario.write_text(BROKEN.replace('duration = "3s"', 'duration = "60s"').replace("300", "4"))
    argv = [sys.executable, "-m", "lbtui", "chaos", "run", str(scenario), "--attach", haproxy.url]
    env = {k: v for k, v in os.environ.items() if k != "LBTUI_ADMIN_TOKEN"}
    proc = subprocess.Popen(
        [*argv, "--target", haproxy.frontend, "-q"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    try:
        wait_for(lambda: haproxy.server_weight("s2") == 4, what="the timeline ran", timeout=30)
        assert haproxy.server_status("s1") == "DRAIN"
        assert haproxy.server_status("s3") == "MAINT"
        os.kill(proc.pid, signal.SIGINT)
        assert proc.wait(30) == 130
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
    # rolled back before it exited (a server leaving MAINT reads UP once its check passes)
    wait_for(lambda: as_configured(haproxy) == [("UP", 1), ("UP", 1), ("UP", 1)], timeout=5)
