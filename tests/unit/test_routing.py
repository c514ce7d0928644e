"""The compiled route matcher and the forward shares (pure, no sockets)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import pytest

from lbtui import config as config_mod
from lbtui.balancer.routing import order
from lbtui.core.routing import Router, Rule, Shares, host_of
from lbtui.errors import ConfigError


@dataclass
class Req:
    raw_path: str = "/"
    headers: Mapping[str, str] = field(default_factory=dict)


def first(router: Router, host: str, path: str, method: str = "GET", req: Req | None = None):
    rule = router.match(host, path, method, req or Req(path))
    return None if rule is None else rule.target


def test_first_match_in_order_and_prefix_vs_exact():
    router = Router(
        [
            Rule("exact", exact="/api"),
            Rule("api", prefix="/api/"),
            Rule("anything", prefix="/"),
        ]
    )
    assert first(router, "x", "/api") == "exact"
    assert first(router, "x", "/api/users") == "api"
    assert first(router, "x", "/apix") == "anything"
    assert first(router, "x", "/") == "anything"
    assert first(router, "x", "/zzz") == "anything"


def test_no_rule_matches():
    router = Router([Rule("a", prefix="/a"), Rule("b", exact="/b")])
    assert first(router, "x", "/c") is None
    assert first(router, "x", "/bb") is None
    assert first(router, "x", "/") is None


def test_hosts_exact_and_wildcard_ignore_port_and_case():
    router = Router(
        [
            Rule("star", host="*.example.com"),
            Rule("apex", host="Example.com"),
        ]
    )
    assert first(router, "API.example.com:8080", "/") == "star"
    assert first(router, "a.b.example.com", "/") == "star"
    assert first(router, "example.com:80", "/") == "apex"
    assert first(router, "badexample.com", "/") is None
    assert first(router, ".example.com", "/") is None
    assert host_of("[::1]:8080") == "[::1]"


def test_method_header_and_query_conditions():
    router = Router(
        [
            Rule("post", methods=["POST"]),
            Rule("beta", headers={"X-Beta": "1"}),
            Rule("any-debug", headers={"X-Debug": "*"}),
            Rule("v2", query={"version": "2"}),
            Rule("rest"),
        ]
    )
    assert first(router, "h", "/", "POST") == "post"
    assert first(router, "h", "/", "GET", Req("/", {"X-Beta": "1"})) == "beta"
    assert first(router, "h", "/", "GET", Req("/", {"X-Beta": "0"})) == "rest"
    assert first(router, "h", "/", "GET", Req("/", {"X-Debug": ""})) == "any-debug"
    assert first(router, "h", "/x", "GET", Req("/x?a=1&version=2")) == "v2"
    assert first(router, "h", "/x", "GET", Req("/x?version=3")) == "rest"
    # header rules need the request: without it they never match
    assert router.match("h", "/", "GET", None).target == "rest"  # type: ignore[union-attr]


def test_buckets_keep_evaluation_order_across_catch_alls():
    rules = [Rule("a1", prefix="/a"), Rule("root", prefix="/"), Rule("a2", prefix="/a/b")]
    router = Router(rules)
    assert first(router, "h", "/a/b") == "a1"
    assert first(router, "h", "/b") == "root"
    assert [r.target for r in router.buckets["a"]] == ["a1", "root", "a2"]


def test_fifty_rules_check_only_their_bucket():
    rules = [Rule(f"r{i}", prefix=f"/{chr(97 + i % 26)}{i}/") for i in range(50)]
    router = Router(rules)
    assert first(router, "h", "/z25/x") == "r25"
    assert max(len(b) for b in router.buckets.values()) <= 2


@pytest.mark.parametrize(
    ("weights", "n", "want"),
    [([90, 10], 1000, [900, 100]), ([1, 1, 2], 400, [100, 100, 200]), ([5, 0], 10, [10, 0])],
)
def test_shares_are_exact_over_a_cycle(weights, n, want):
    shares = Shares(weights)
    counts = [0] * len(weights)
    for _ in range(n):
        counts[shares.next()] += 1
    assert counts == want


def test_shares_interleave_and_all_zero_sends_nowhere():
    shares = Shares([2, 1])
    assert [shares.next() for _ in range(6)] == [0, 1, 0, 0, 1, 0]
    shares.set_weights([0, 0])
    assert shares.next() == -1
    with pytest.raises(ValueError, match="negative"):
        shares.set_weights([-1, 1])


def _cfg(**extra):
    data = {
        "backends": [
            {"name": "a", "url": "http://127.0.0.1:1"},
            {"name": "b", "url": "http://127.0.0.1:2"},
        ],
        **extra,
    }
    return config_mod.from_dict(data, "t.toml")


def test_priority_orders_routes_before_file_order():
    cfg = _cfg(
        routes=[
            {"backends": ["a"]},
            {"backends": ["b"], "priority": 5},
            {"backends": ["a"], "priority": 1},
        ]
    )
    assert order(cfg.routes) == [2, 1, 0]


def test_config_problems_name_groups_routes_and_zones():
    with pytest.raises(ConfigError) as err:
        _cfg(
            groups=[
                {"name": "g", "backends": ["a", "nope"], "cross_zone": False},
                {"name": "g"},
            ],
            routes=[
                {"forward": [{"group": "missing"}]},
                {"path_prefix": "/x"},
                {"backends": ["a"], "respond": {"status": 200}},
                {"host": "a/b", "backends": ["a"]},
            ],
        )
    text = str(err.value)
    assert "groups[0].backends[1]: no backend named 'nope'" in text
    assert "groups[1].name: duplicate group name 'g'" in text
    assert "routes[0].forward[0].group: no group named 'missing'" in text
    assert "routes[1]: a route needs exactly one of backends, forward, redirect or respond" in text
    assert "(got backends, respond)" in text
    assert "routes[3].host" in text
    assert "groups[0].cross_zone: false needs [balancer] zone" in text
