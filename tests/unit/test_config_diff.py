"""``config.diff``: what a reload changes, computed on two configs without a balancer."""

from __future__ import annotations

from typing import Any

from lbtui import config as config_mod
from lbtui.config.diff import (
    AlgorithmSwapped,
    BackendAdded,
    BackendRemoved,
    BackendReplaced,
    BackendReweighted,
    ListenerClosed,
    ListenerOpened,
    ListenerReplaced,
    NeedsRestart,
    TableChanged,
    applied,
    diff,
    summary,
)

BASE: dict[str, Any] = {
    "listener": {"address": "127.0.0.1:8080"},
    "balancer": {"algorithm": "round_robin"},
    "backends": [
        {"name": "b1", "url": "http://127.0.0.1:9001"},
        {"name": "b2", "url": "http://127.0.0.1:9002", "weight": 2},
    ],
}


def cfg(**changes: Any) -> config_mod.Config:
    return config_mod.from_dict({**BASE, **changes}, "test")


def test_the_same_file_changes_nothing() -> None:
    assert diff(cfg(), cfg()) == []
    assert summary([]) == "no change"


def test_a_backend_added_and_the_algorithm_swapped_read_as_the_event_says() -> None:
    new = cfg(
        balancer={"algorithm": "least_request"},
        backends=[*BASE["backends"], {"name": "b3", "url": "http://127.0.0.1:9003"}],
    )
    changes = diff(cfg(), new)
    assert changes == [
        BackendAdded(new.backends[2]),
        AlgorithmSwapped("round_robin", "least_request"),
    ]
    assert summary(changes) == "+b3, algorithm round_robin → least_request"


def test_backends_removed_reweighted_and_replaced_are_told_apart() -> None:
    new = cfg(
        backends=[
            {"name": "b1", "url": "http://127.0.0.1:9001", "weight": 5},
            {"name": "b3", "url": "http://127.0.0.1:9003"},
        ]
    )
    assert diff(cfg(), new) == [
        BackendRemoved("b2"),
        BackendReweighted("b1", 1.0, 5.0),
        BackendAdded(new.backends[1]),
    ]
    moved = cfg(
        backends=[
            {"name": "b1", "url": "http://127.0.0.1:9011", "max_rps": 50},
            BASE["backends"][1],
        ]
    )
    changes = diff(cfg(), moved)
    assert changes == [BackendReplaced(moved.backends[0], ("url", "max_rps"))]
    assert summary(changes) == "~b1 (url, max_rps)"


def test_live_tables_name_their_changed_keys() -> None:
    new = cfg(
        limits={"rps": 100, "burst": 20},
        breaker={"failure_rate": 30},
        health={"enabled": True, "path": "/health"},
        retries={"attempts": 2},
        balancer={"algorithm": "round_robin", "hash_on": "header:X-User"},
    )
    changes = diff(cfg(), new)
    assert TableChanged("limits", ("rps", "burst")) in changes
    assert TableChanged("breaker", ("failure_rate",)) in changes
    assert TableChanged("health", ("enabled", "path")) in changes
    assert TableChanged("retries", ("attempts",)) in changes
    assert TableChanged("balancer", ("hash_on",)) in changes
    assert all(isinstance(c, TableChanged) for c in changes)


def test_routes_and_fallback_are_live_too() -> None:
    new = cfg(
        routes=[{"path_prefix": "/api", "backends": ["b2"]}],
        fallback={"status": 503, "body": "{}"},
    )
    assert diff(cfg(), new) == [TableChanged("routes", ()), TableChanged("fallback", ())]


def test_the_admin_api_and_the_proxy_take_a_restart_and_are_not_applied() -> None:
    new = cfg(
        listener={"address": "127.0.0.1:8081"},
        admin={"address": "127.0.0.1:9911"},
        proxy={"read_timeout_ms": 500},
        limits={"rps": 5},
    )
    changes = diff(cfg(), new)
    restart = [c for c in changes if isinstance(c, NeedsRestart)]
    assert restart == [
        NeedsRestart("proxy", ("read_timeout_ms",)),
        NeedsRestart("admin", ("address",)),
    ]
    assert TableChanged("limits", ("rps",)) in applied(changes)
    assert restart[1].describe() == "admin.address not applied (takes a restart)"


def test_where_the_file_is_is_not_a_change() -> None:
    assert diff(cfg(base_dir="/a"), cfg(base_dir="/b")) == []


def test_where_limits_are_kept_takes_a_restart_but_the_limits_do_not() -> None:
    new = cfg(limits={"rps": 5, "store_prefix": "other"}, balancer={"name": "lb-2"})
    assert diff(cfg(), new) == [
        TableChanged("limits", ("rps",)),
        NeedsRestart("balancer", ("name",)),
        NeedsRestart("limits", ("store_prefix",)),
    ]


def test_listeners_opened_closed_and_replaced_by_name() -> None:
    two = cfg(
        listener={},
        listeners=[
            {"name": "web", "address": "127.0.0.1:8080"},
            {"name": "alt", "address": "127.0.0.1:8081"},
        ],
    )
    moved = cfg(
        listener={},
        listeners=[
            {"name": "web", "address": "127.0.0.1:8090"},
            {"name": "new", "address": "127.0.0.1:8082"},
        ],
    )
    changes = diff(two, moved)
    assert [c.describe() for c in changes] == [
        "-listener alt",
        "~listener web (address)",
        "+listener new (127.0.0.1:8082)",
    ]
    assert isinstance(changes[0], ListenerClosed)
    assert isinstance(changes[1], ListenerReplaced)
    assert isinstance(changes[2], ListenerOpened)


def test_the_shorthand_listeners_address_is_a_listener_and_its_engine_a_restart() -> None:
    new = cfg(listener={"address": "127.0.0.1:8081", "workers": 2})
    assert [c.describe() for c in diff(cfg(), new)] == [
        "~listener default (address)",
        "listener.workers not applied (takes a restart)",
    ]
