"""``lbtui chaos run`` as a process: exit codes, one-line setup errors, and the guaranteed undo
when the run is interrupted — no fault left on the balancer, no fleet process left alive
(checked by PID)."""

from __future__ import annotations

import asyncio
import json
import re
import signal
from pathlib import Path

import psutil  # type: ignore[import-untyped, unused-ignore]
import pytest

from lbtui import config as config_mod
from lbtui.cli import main
from lbtui.control.runtime import run_balancer
from lbtui.fleet.spec import BackendSpec
from lbtui.fleet.supervisor import Fleet
from tests.chaos.conftest import LBTUI, ROOT, run_cli

DEADLINE_S = 30.0


def test_bad_scenario_is_one_line_naming_file_key_and_expectation(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(
        '[[system.backends]]\nname = "a"\n[load]\nrate = 10\nduration = "5s"\n'
        '[[checks]]\nname = "x"\nkind = "error_rate_below"\npercent = "low"\n'
    )
    r = run_cli("chaos", "run", str(bad))
    assert r.returncode == 2
    assert r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith(f"lbtui: {bad}: checks[0].percent: expected a valid number")


def test_unreachable_target_is_a_setup_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    scenario = tmp_path / "attach.toml"
    scenario.write_text(
        '[load]\nrate = 10\nduration = "2s"\ntarget = "http://127.0.0.1:9"\n'
        '[[checks]]\nname = "x"\nkind = "error_rate_below"\npercent = 1\n'
    )
    assert main(["chaos", "run", str(scenario), "--attach", "http://127.0.0.1:9"]) == 2
    err = capsys.readouterr().err
    assert "lbtui: chaos: --attach http://127.0.0.1:9: " in err
    assert "unreachable" in err


async def _until_line(stream: asyncio.StreamReader, needle: str, seen: list[str]) -> None:
    """Read lines until one holds ``needle`` (bounded by the caller's deadline)."""
    while True:
        line = (await stream.readline()).decode()
        if not line:
            raise AssertionError(f"{needle!r} never came; stderr was: {''.join(seen)}")
        seen.append(line)
        if needle in line:
            return


async def _interrupt(args: list[str], needle: str) -> tuple[int, str, str]:
    """Start ``lbtui ARGS``, SIGINT it once ``needle`` is on its stderr, wait for its end."""
    proc = await asyncio.create_subprocess_exec(
        *LBTUI,
        *args,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stderr is not None
    assert proc.stdout is not None
    seen: list[str] = []
    try:
        await asyncio.wait_for(_until_line(proc.stderr, needle, seen), DEADLINE_S)
        proc.send_signal(signal.SIGINT)
        out, err = await asyncio.wait_for(proc.communicate(), DEADLINE_S)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    return proc.returncode or 0, out.decode(), "".join(seen) + err.decode()


def _gone(pid: int) -> bool:
    try:
        return bool(psutil.Process(pid).status() == psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return True


async def test_sigint_mid_run_stops_every_fleet_process(tmp_path: Path) -> None:
    scenario = tmp_path / "local.toml"
    scenario.write_text(
        '[[system.backends]]\nname = "a"\n[[system.backends]]\nname = "b"\n'
        '[load]\nrate = 50\nduration = "30s"\n'
        '[[timeline]]\nat = "100ms"\naction = "kill"\nbackend = "b"\n'
        '[[timeline]]\nat = "200ms"\naction = "fault"\nbackend = "a"\nfault = "delay"\n'
        'delay = "5ms"\n'
        '[[checks]]\nname = "x"\nkind = "error_rate_below"\npercent = 100\n'
    )
    report = tmp_path / "run.json"
    args = ["chaos", "run", str(scenario), "--json", str(report)]
    code, out, err = await _interrupt(args, "#2 delay 5 ms")
    assert code == 130, err
    doc = json.loads(report.read_text())
    assert doc["verdict"] == "interrupted"
    pids = [m["pid"] for m in doc["system"]["members"]]
    pids += [p["pid"] for p in doc["fleet_processes"]]
    assert len(set(pids)) == 2
    assert all(_gone(pid) for pid in pids), pids
    assert doc["rollback_ok"] is True
    assert "INTERRUPTED" in out
    assert "chaos: interrupted: stopping the load and rolling back" in err


async def test_sigint_mid_run_leaves_no_fault_on_an_attached_balancer(tmp_path: Path) -> None:
    """The balancer outlives the run here (``--attach``): the fault the run set must be gone."""
    scenario = tmp_path / "attached.toml"
    scenario.write_text(
        '[load]\nrate = 50\nduration = "30s"\n'
        '[[timeline]]\nat = "200ms"\naction = "fault"\nbackend = "b1"\nfault = "abort"\n'
        "status = 503\npercent = 50\n"
        '[[timeline]]\nat = "300ms"\naction = "weight"\nbackend = "b2"\nweight = 3\n'
        '[[checks]]\nname = "x"\nkind = "error_rate_below"\npercent = 100\n'
    )
    specs = [BackendSpec("b1", latency_ms=1), BackendSpec("b2", latency_ms=1)]
    async with Fleet(specs) as fleet:
        cfg = config_mod.from_dict(
            {
                "backends": [{"name": m.name, "url": m.url} for m in fleet.backends],
                "listener": {"address": "127.0.0.1:0"},
                "admin": {"address": "127.0.0.1:0"},
            }
        )
        async with run_balancer(cfg, fleet=fleet) as rt:
            assert rt.admin is not None
            args = ["chaos", "run", str(scenario), "--attach", rt.admin.url]
            args += ["--target", rt.server.url]
            code, out, err = await _interrupt(args, "#2 weight b2")
            assert code == 130, err
            proxy = rt.server.proxy
            assert len(proxy.faults) == 0, proxy.faults.items()
            stats = proxy.faults.stats("b1")
            assert stats is not None
            assert stats.ended == "cleared"
            assert stats.spec.duration_s is not None  # bounded even had the run been killed
            assert proxy.backends["b2"].configured_weight == 1.0
            assert "clear faults (cleared on b1)" in out
            assert "weight b2 1" in out


def test_guardrail_aborts_with_exit_3(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    scenario = tmp_path / "guard.toml"
    scenario.write_text(
        '[[system.backends]]\nname = "a"\nlatency = "1ms"\n'
        '[load]\nrate = 100\nduration = "20s"\n'
        '[[timeline]]\nat = "500ms"\naction = "fault"\nbackend = "a"\nfault = "abort"\n'
        '[[checks]]\nname = "x"\nkind = "error_rate_below"\npercent = 100\n'
        '[guardrails]\nerror_rate_above = 50\nfor = "1s"\n'
    )
    assert main(["chaos", "run", str(scenario), "-q"]) == 3
    out = capsys.readouterr().out
    assert "ABORTED by a guardrail" in out
    assert re.search(r"client error rate \d+\.\d % \(\d+ of \d+\) > 50 % for 1 s", out)
