"""Scenario files: validation at the edge, errors that name file, key path and expectation,
and the duration scale."""

from __future__ import annotations

from pathlib import Path

import pytest

from lbtui.chaos.hypotheses import P99Below
from lbtui.chaos.scenario import Scenario, load_scenario, parse_scenario
from lbtui.chaos.steps import Fault, describe_step, step_action
from lbtui.control.model import FleetKill, SetAdmin, SetFault
from lbtui.errors import ConfigError
from tests.chaos.conftest import FIXTURES, SCENARIOS

BASE = """
[[system.backends]]
name = "a"
[[system.backends]]
name = "b"
[load]
rate = 50
duration = "10s"
"""
CHECK = """
[[checks]]
name = "ok"
kind = "error_rate_below"
percent = 1
"""


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_scenario(text, "x.toml")
    assert info.value.source == "x.toml"
    return info.value.problems


def test_every_ready_made_scenario_and_fixture_is_valid() -> None:
    files = sorted(SCENARIOS.glob("*.toml")) + sorted(FIXTURES.glob("*.toml"))
    assert len(files) >= 8
    for path in files:
        sf = load_scenario(path)
        assert sf.scenario.checks, path
        assert sf.fleet, path


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ('[load]\nrate = 5\nduration = "1s"\nspeed = 3\n' + CHECK, "load.speed: unknown key"),
        (BASE.replace('"10s"', '"10"') + CHECK, "load.duration: expected a duration with a unit"),
        (BASE + CHECK.replace("percent = 1", "percent = 200"), "checks[0].percent: expected"),
        (
            BASE + CHECK + '[[timeline]]\nat = "1s"\naction = "explode"\n',
            "timeline[0].action: expected one of 'kill', 'restart'",
        ),
        (
            BASE + CHECK + '[[timeline]]\nat = "1s"\naction = "kill"\n',
            "timeline[0].backend: required key is missing",
        ),
        (
            BASE + CHECK + '[[timeline]]\nat = "1s"\naction = "kill"\nbackend = "zz"\n',
            "timeline[0].backend: no backend named 'zz' (known: a, b)",
        ),
        (
            BASE + CHECK + '[[timeline]]\nat = "12s"\naction = "kill"\nbackend = "a"\n',
            "timeline[0].at: expected a time before the end of the load (10 s), got 12 s",
        ),
        (
            BASE
            + '[[checks]]\nname = "x"\nkind = "breaker_opens_within"\nbackend = "a"\n'
            + 'after = "nope"\nwithin = "1s"\n',
            "checks[0].after: no timeline action with id 'nope'",
        ),
        (
            BASE + "[system.balancer.retries]\natempts = 1\n" + CHECK,
            "system.balancer.retries.atempts: unknown key",
        ),
        (
            BASE
            + CHECK
            + '[[timeline]]\nat = "1s"\naction = "fault"\nbackend = "a"\n'
            + 'fault = "delay"\n',
            'timeline[0].delay: a delay fault needs delay = "200ms"',
        ),
        (BASE, "checks: required key is missing"),
        ("[load\n", "invalid TOML"),
    ],
)
def test_bad_scenarios_name_the_key_and_the_expectation(body: str, expected: str) -> None:
    found = problems(body)
    assert any(expected in p for p in found), found


def test_system_is_required_unless_attached() -> None:
    text = '[load]\nrate = 5\nduration = "2s"\n' + CHECK
    assert any(p.startswith("system: expected fleet") for p in problems(text))
    sf = parse_scenario(text, "x.toml", attach=True)
    assert sf.fleet == ()
    assert sf.balancer is None


def test_files_are_found_beside_the_scenario_then_in_the_tree(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_text(
        '[system]\nfleet = "demo/fleet.toml"\n[load]\nrate = 50\nduration = "10s"\n' + CHECK
    )
    sf = load_scenario(path)
    assert [b.name for b in sf.fleet] == ["api-1", "api-2", "api-3", "api-4"]
    path.write_text('[system]\nfleet = "nowhere.toml"\n[load]\nrate = 1\nduration = "1s"\n' + CHECK)
    with pytest.raises(ConfigError, match=r"system.fleet: file not found: 'nowhere.toml'"):
        load_scenario(path)
    with pytest.raises(ConfigError, match="No such file or directory"):
        load_scenario(tmp_path / "missing.toml")


def test_scale_shrinks_the_experiment_not_the_reaction_bounds() -> None:
    sf = load_scenario(SCENARIOS / "flapping-backend.toml")
    sc = sf.scenario.scaled(0.5)
    assert sc.load.duration == sf.scenario.load.duration / 2
    fault = sc.timeline[0]
    assert isinstance(fault, Fault)
    assert (fault.at, fault.on, fault.off, fault.duration) == (1.0, 1.0, 2.0, 6.0)
    spec = fault.spec()
    assert (spec.on_s, spec.off_s, spec.duration_s) == (1.0, 2.0, 6.0)
    original = sf.scenario.checks[0]
    assert sc.checks[0] == original  # breaker_opens_within: `within` measures a reaction
    assert sc.guardrails.for_ == sf.scenario.guardrails.for_ / 2
    slow = load_scenario(SCENARIOS / "slow-one-backend.toml").scenario
    check = slow.scaled(0.5).checks[0]
    assert (check.from_, check.to) == (1.5, 4.0)  # type: ignore[union-attr]
    check = slow.scaled(0.5).checks[1]
    assert isinstance(check, P99Below)
    assert (check.settle, check.ms) == (1.0, 150)  # a reaction time: not scaled


def test_steps_become_control_actions() -> None:
    sc = Scenario.model_validate(
        {
            "load": {"rate": 1, "duration": "10s"},
            "timeline": [
                {"at": "1s", "action": "kill", "backend": "a"},
                {"at": "2s", "action": "drain", "backend": "a"},
                {
                    "at": "3s",
                    "action": "fault",
                    "backend": "a",
                    "fault": "abort",
                    "percent": 25,
                    "on": "5s",
                    "off": "25s",
                },
            ],
            "checks": [{"name": "x", "kind": "no_duplicate_posts"}],
        }
    )
    kill, drain, fault = (step_action(s, {}) for s in sc.timeline)
    assert kill == FleetKill(backend="a")
    assert drain == SetAdmin(backend="a", state="draining")
    assert isinstance(fault, SetFault)
    assert fault.fault.status == 503
    assert describe_step(sc.timeline[2]) == "abort 503 on 25% (flap 5 s on / 25 s off) → a"
