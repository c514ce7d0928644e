"""Config edge cases that need no process."""

from __future__ import annotations

import pytest

from lbtui import config
from lbtui.errors import ConfigError

B = [{"name": "a", "url": "http://127.0.0.1:9001"}]


def test_health_timeout_defaults_to_the_interval_when_shorter():
    c = config.from_dict({"backends": B, "health": {"enabled": True, "interval_ms": 500}})
    assert c.health.effective_timeout_ms == 500
    c = config.from_dict({"backends": B, "health": {"interval_ms": 5000}})
    assert c.health.effective_timeout_ms == 1000


def test_model_level_problems_name_their_key_not_top_level():
    with pytest.raises(ConfigError) as err:
        config.from_dict(
            {"backends": B, "health": {"interval_ms": 500, "timeout_ms": 900}}, "x.toml"
        )
    assert str(err.value) == (
        "x.toml: health.timeout_ms: expected at most health.interval_ms (500), got 900"
    )


def test_expect_status_range_is_checked():
    with pytest.raises(ConfigError) as err:
        config.from_dict({"backends": B, "health": {"expect_status": [399, 200]}}, "x.toml")
    assert "health.expect_status" in str(err.value)


def test_fallback_file_must_be_readable(tmp_path):
    with pytest.raises(ConfigError) as err:
        config.from_dict({"backends": B, "fallback": {"file": str(tmp_path / "none.json")}}, "x")
    assert "fallback.file: cannot read" in str(err.value)


def test_flags_override_the_file(tmp_path):
    path = tmp_path / "l.toml"
    path.write_text(
        '[balancer]\nalgorithm = "random"\n[[backends]]\nname = "a"\nurl = "http://127.0.0.1:1"\n'
    )
    c = config.load(
        path, algorithm="p2c_ewma", listen="127.0.0.1:0", backends=["b=http://127.0.0.1:2"]
    )
    assert c.balancer.algorithm == "p2c_ewma"
    assert [b.name for b in c.backends] == ["b"]
    assert c.listener.port == 0


def test_the_example_config_is_valid():
    root = __import__("pathlib").Path(__file__).resolve().parents[2]
    c = config.load(root / "fixtures" / "configs" / "example.toml")
    assert c.routes[0].backends == ["static-1", "static-2"]
    assert c.fallback is not None
    assert c.fallback.body_bytes(root / "fixtures" / "configs").startswith(b'{"status"')
    d = config.load(root / "demo" / "lbtui.toml", backends=["http://127.0.0.1:1"])
    assert d.health.enabled


def test_config_names_every_algorithm_the_core_has():
    from typing import get_args

    from lbtui.core.balancing import ALGORITHMS

    assert set(config.ALGORITHM_NAMES) == set(ALGORITHMS)
    assert set(get_args(config.Algorithm)) == set(ALGORITHMS)


@pytest.mark.parametrize(
    ("table", "key", "value"),
    [
        ("breaker", "open_s", 1e12),
        ("proxy", "read_timeout_ms", 10**15),
        ("health", "interval_ms", 10**12),
        ("ejection", "max_s", 1e9),
    ],
)
def test_a_duration_longer_than_a_day_is_refused_naming_the_key(
    table: str, key: str, value: float
) -> None:
    with pytest.raises(ConfigError) as exc:
        config.from_dict({"backends": B, table: {key: value}}, "x.toml")
    text = str(exc.value)
    assert f"{table}.{key}" in text
    assert "86400" in text
