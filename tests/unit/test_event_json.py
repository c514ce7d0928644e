"""The JSON of every kind of event, pinned byte for byte (``events_pinned.jsonl``).

Reports (``chaos`` JSON), ``lbtui attach`` against an older or newer balancer, and anything that
reads ``GET /api/v1/events`` depend on this shape: ``{"id", "at", "wall", "kind", "backend",
"message", "data"}`` with each kind's own ``data`` keys. The events are made here by the code
that makes them in a balancer (operator actions, breaker, health, ejection and panic, fallback,
retry budget, admission), on a fake clock, so a change to an event's type or to its emitter that
changes a byte fails this test: the guard for moving events to one dataclass per kind.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

from lbtui import config as config_mod
from lbtui.balancer.job import Job
from lbtui.balancer.pool import AdminState
from lbtui.balancer.proxy import Proxy
from lbtui.config import BackendConfig, LimitsConfig
from lbtui.control.model import event_to_json_bytes
from lbtui.control.reload import Reloader
from lbtui.core.events import EventKind
from lbtui.core.faults import FaultKind, FaultSpec
from lbtui.errors import ConfigError

PINNED = Path(__file__).with_name("events_pinned.jsonl").read_text().splitlines()
CONFIG = {
    "listener": {"address": "127.0.0.1:0"},
    "backends": [
        {"name": "b1", "url": "http://127.0.0.1:9"},
        {"name": "b2", "url": "http://127.0.0.1:10"},
    ],
    "balancer": {"algorithm": "round_robin"},
    "health": {"enabled": True, "slow_start_s": 5, "fall": 1, "rise": 1},
    "ejection": {"consecutive_failures": 2, "max_percent": 100, "panic_percent": 60},
    "retries": {"budget_percent": 0, "budget_min": 0},
    "fallback": {"status": 503, "body": "{}"},
}


def _broken() -> config_mod.Config:
    raise ConfigError("t.toml", ["limits.rps: expected a number, got 'x'"])


def events_of_every_kind() -> list[bytes]:
    now = [100.0]
    p = Proxy(
        config_mod.from_dict(CONFIG, "test"),
        clock=lambda: now[0],
        wall_clock=lambda: 1_800_000_000.0 + now[0],
    )
    b1, b2 = p.backends["b1"], p.backends["b2"]
    client = SimpleNamespace(method="GET", raw_path="/x", host="h", remote="1.2.3.4")
    job = Job(client, p.default_pool, p.state.fallback, None, None, False)  # type: ignore[arg-type]
    abort = FaultSpec(kind=FaultKind.ABORT, status=502, percent=50, duration_s=30)
    steps: list[Callable[[], object]] = [
        lambda: p.change_algorithm("least_request"),
        lambda: p.set_weight("b1", 3),
        lambda: p.set_admin("b2", AdminState.DRAINING),
        lambda: p.set_admin("b2", AdminState.ACTIVE),
        lambda: p.add_backend(BackendConfig(name="b3", url="http://127.0.0.1:11")),
        lambda: p.remove_backend("b3"),
        lambda: p.set_limits(LimitsConfig(rps=10)),
        lambda: p.set_fault("b1", abort, owner="me"),
        lambda: p.clear_fault("b1"),
        lambda: p.force_breaker("b1", "open"),
        lambda: p.force_breaker("b1", "auto"),
        lambda: p.health_result(b2, False, "connect refused"),
        lambda: p.health_result(b2, True, "200 OK"),
        lambda: p.state.outcome(b1, p.default_pool, True, 0.01, now[0]),
        lambda: p.state.outcome(b1, p.default_pool, True, 0.01, now[0]),
        lambda: p.pipeline.failure(job, None, []),
        lambda: p.pipeline._budget_allows(job),
        lambda: [p.pipeline.admit(client) for _ in range(13)],  # type: ignore[arg-type]
        lambda: p.events.emit(
            EventKind.FLEET, "process killed (SIGKILL, pid 4242)", backend="b2", action="kill"
        ),
        lambda: Reloader(
            lambda: config_mod.from_dict({**CONFIG, "retries": {"attempts": 2}}, "t.toml"),
            p,
            "t.toml",
        ).reload(),
        lambda: Reloader(_broken, p, "t.toml").reload(),
    ]
    for step in steps:
        now[0] += 1.5
        step()
    return [event_to_json_bytes(e) for e in p.events]


def test_every_kind_is_pinned():
    assert {json.loads(line)["kind"] for line in PINNED} == {k.value for k in EventKind}


def test_events_json_is_byte_identical():
    assert [line.decode() for line in events_of_every_kind()] == PINNED
