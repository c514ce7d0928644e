"""``[limits] store`` and its companions, and ``[balancer] name``: what is accepted, and that a
mistake names its key and what was expected."""

from __future__ import annotations

import pytest

from lbtui import config
from lbtui.config.store import parse_store
from lbtui.errors import ConfigError

B = [{"name": "a", "url": "http://127.0.0.1:9001"}]


def test_memory_is_the_default_and_local_the_fallback() -> None:
    c = config.from_dict({"backends": B})
    assert (c.limits.store, c.limits.on_store_error) == ("memory", "local")
    assert parse_store(c.limits.store) is None
    assert c.balancer.name is None


def test_a_redis_url_is_taken_apart_and_shown_without_its_password() -> None:
    c = config.from_dict(
        {"backends": B, "limits": {"store": "rediss://:s3cret@cache.example:6380/2"}}
    )
    a = parse_store(c.limits.store)
    assert a is not None
    assert (a.host, a.port, a.db, a.tls) == ("cache.example", 6380, 2, True)
    assert a.shown == "rediss://cache.example:6380/2"
    b = parse_store("redis://127.0.0.1")
    assert b is not None
    assert (b.port, b.db, b.tls) == (6379, 0, False)


@pytest.mark.parametrize(
    ("limits", "expected"),
    [
        ({"store": "http://127.0.0.1:6379"}, "limits.store: expected 'memory' or a URL"),
        ({"store": "redis://127.0.0.1:6379/99"}, "DB is a number from 0 to 15"),
        ({"store": "redis://127.0.0.1:99999"}, "limits.store: expected"),
        ({"on_store_error": "panic"}, "limits.on_store_error"),
        ({"store_sync_ms": 0}, "limits.store_sync_ms"),
        ({"store_prefix": "a b"}, "limits.store_prefix"),
    ],
)
def test_a_bad_store_setting_names_its_key(limits: dict[str, object], expected: str) -> None:
    with pytest.raises(ConfigError) as err:
        config.from_dict({"backends": B, "limits": limits}, "x.toml")
    assert str(err.value).startswith("x.toml: ")
    assert expected in str(err.value)


def test_a_replica_name_is_checked() -> None:
    assert config.from_dict({"backends": B, "balancer": {"name": "eu-1"}}).balancer.name == "eu-1"
    with pytest.raises(ConfigError) as err:
        config.from_dict({"backends": B, "balancer": {"name": "has space"}}, "x.toml")
    assert "balancer.name" in str(err.value)
