"""The open-loop load generator against real fleet backends on 127.0.0.1."""

from __future__ import annotations

import asyncio
import bisect
import itertools
import random
import socket
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from lbtui.errors import UsageError
from lbtui.fleet.supervisor import BackendSpec, Fleet
from lbtui.loadgen import MAX_RATE, LoadGenerator, LoadReport, RequestSpec

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
async def fleet() -> AsyncIterator[Fleet]:
    specs = [
        BackendSpec("fast", latency_ms=1, size=256),
        BackendSpec("slow", latency_ms=50, size=256),
    ]
    async with Fleet(specs) as f:
        yield f


async def until(cond: object, timeout_s: float, what: str) -> None:
    """Wait for ``cond()`` to be true, within a deadline."""
    assert callable(cond)
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout_s} s: {what}")
        await asyncio.sleep(0.01)


def assert_adds_up(r: LoadReport) -> None:
    assert r.scheduled == r.sent + r.unsent
    assert r.sent == r.completed + sum(r.errors.values())
    assert r.completed == sum(r.status_counts.values())
    assert r.corrected.count == r.raw.count == r.completed
    # corrected latency counts from the intended time, raw from the actual send: never less
    for q in ("p50", "p90", "p99", "p999", "max"):
        assert getattr(r.corrected, q) >= getattr(r.raw, q)


async def test_steady_rate_is_achieved_and_counts_add_up(fleet: Fleet) -> None:
    gen = LoadGenerator(fleet.url("fast") + "/steady", 200, 2.0, connections=32)
    r = await gen.run()
    assert_adds_up(r)
    assert r.scheduled == 400
    assert r.offered_rate == pytest.approx(200, rel=0.02)
    assert r.achieved_rate == pytest.approx(200, rel=0.10)
    assert r.unsent == 0
    assert r.status_counts == {200: r.completed}
    assert r.bytes_in == 256 * r.completed
    assert 0.001 <= r.corrected.p50 < 0.5
    stats = await fleet.stats("fast")
    assert stats.requests_total == r.sent
    assert stats.request_ids_distinct == r.sent
    assert stats.request_ids_repeated == 0


async def test_set_rate_takes_effect_at_once(fleet: Fleet) -> None:
    gen = LoadGenerator(fleet.url("fast"), 100, 2.0, connections=32)
    task = asyncio.create_task(gen.run())
    await until(lambda: gen.live().elapsed_s >= 1.0, 5.0, "one second of load")
    switched_at = gen.live().elapsed_s
    early = gen.live()
    assert early.target_rate == 100
    assert early.achieved_rate == pytest.approx(100, rel=0.25)
    gen.set_rate(300)
    await until(lambda: gen.live().elapsed_s >= 1.9, 5.0, "nearly two seconds of load")
    assert gen.live().target_rate == 300
    r = await asyncio.wait_for(task, 15)
    assert_adds_up(r)
    expected = 100 * switched_at + 300 * (2.0 - switched_at)
    assert r.scheduled == pytest.approx(expected, rel=0.10)
    assert r.achieved_rate == pytest.approx(expected / 2.0, rel=0.10)


async def test_a_full_ceiling_shows_in_corrected_latency_not_raw(fleet: Fleet) -> None:
    # one connection, 50 ms per answer, a request every 20 ms: the queue grows all run long
    gen = LoadGenerator(fleet.url("slow"), 50, 1.0, connections=1)
    r = await gen.run()
    assert_adds_up(r)
    assert r.completed == r.scheduled == 50
    assert r.raw.p99 < 0.2
    assert r.corrected.max > 1.0  # the last request waited behind ~49 × 30 ms of backlog
    assert r.corrected.p50 > 5 * r.raw.p50
    assert r.late_starts >= 40
    assert r.ceiling_hits >= 40
    assert r.max_start_delay_s > 1.0


async def test_spread_sends_every_other_request_to_each_origin(fleet: Fleet) -> None:
    """Replicas of one service (``spread``): request i goes to origin i mod n, same path."""
    gen = LoadGenerator(fleet.url("fast") + "/x", 100, 1.0, spread=[fleet.url("slow")])
    r = await gen.run()
    assert_adds_up(r)
    assert r.completed == r.scheduled == 100
    fast, slow = await fleet.stats("fast"), await fleet.stats("slow")
    assert (fast.requests_total, slow.requests_total) == (50, 50)
    with pytest.raises(UsageError):
        LoadGenerator(fleet.url("fast"), 10, 1.0, spread=["http://192.0.2.1:80"])


async def test_mix_follows_weights_from_the_injected_rng(fleet: Fleet) -> None:
    mix = [
        RequestSpec("GET", "/read", weight=3),
        RequestSpec("POST", "/write", weight=1, body=b"x" * 100),
    ]
    gen = LoadGenerator(fleet.url("fast"), 200, 1.0, mix=mix, rng=random.Random(7))
    r = await gen.run()
    assert_adds_up(r)
    assert r.completed == r.scheduled
    # replay the same rng: the backend saw exactly that sequence's share of POSTs
    rng = random.Random(7)
    cum = list(itertools.accumulate([3.0, 1.0]))
    posts = sum(bisect.bisect_right(cum, rng.random() * cum[-1]) == 1 for _ in range(r.sent))
    stats = await fleet.stats("fast")
    assert stats.by_method.get("POST", 0) == posts
    assert stats.by_method["GET"] == r.sent - posts
    assert stats.bytes_in == 100 * posts
    assert 0.1 < posts / r.sent < 0.4


async def test_failures_are_counted_by_kind(fleet: Fleet) -> None:
    with socket.socket() as s:  # a port that nothing listens on
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
    r = await LoadGenerator(f"http://127.0.0.1:{closed_port}/", 50, 0.3).run()
    assert_adds_up(r)
    assert r.errors["connect"] == r.sent > 0
    assert r.completed == 0
    assert "connect" in r.error_examples

    await fleet.set_knobs("slow", hang=True)
    r = await LoadGenerator(fleet.url("slow"), 20, 0.3, timeout_s=0.2).run()
    assert_adds_up(r)
    assert r.errors["timeout"] == r.sent > 0
    await fleet.set_knobs("slow", hang=False)

    await fleet.set_knobs("fast", error_rate=1.0, error_status=503)
    r = await LoadGenerator(fleet.url("fast"), 100, 0.3).run()
    assert_adds_up(r)
    assert r.status_counts == {503: r.completed}


async def test_stop_ends_the_run_early(fleet: Fleet) -> None:
    gen = LoadGenerator(fleet.url("fast"), 100, 60.0)
    task = asyncio.create_task(gen.run())
    await until(lambda: gen.live().completed >= 20, 5.0, "some answers")
    t = time.monotonic()
    gen.stop()
    r = await asyncio.wait_for(task, 5)
    assert time.monotonic() - t < 1.0
    assert_adds_up(r)
    assert r.elapsed_s < 5.0
    assert r.offered_rate == pytest.approx(100, rel=0.1)
    assert 20 <= r.scheduled < 500


@pytest.mark.parametrize(
    "url",
    [
        "http://10.0.0.1/",
        "http://192.168.1.1:8080/",
        "http://example.com/",
        "http://[2001:db8::1]:80/",
        "ftp://127.0.0.1/",
        "not a url",
    ],
)
def test_non_loopback_targets_are_refused(url: str) -> None:
    with pytest.raises(UsageError):
        LoadGenerator(url, 10, 1.0)


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:9/", "http://127.3.2.1/x", "http://localhost/", "http://[::1]:9/"]
)
def test_loopback_targets_are_accepted(url: str) -> None:
    assert LoadGenerator(url, 10, 1.0).url.startswith("http://")


def test_rate_and_duration_are_bounded() -> None:
    url = "http://127.0.0.1:9/"
    with pytest.raises(UsageError, match="rate"):
        LoadGenerator(url, MAX_RATE + 1, 1.0)
    with pytest.raises(UsageError, match="duration"):
        LoadGenerator(url, 10, 0)
    with pytest.raises(UsageError, match="connections"):
        LoadGenerator(url, 10, 1.0, connections=0)
    with pytest.raises(UsageError, match="path"):
        LoadGenerator(url, 10, 1.0, mix=[RequestSpec("GET", "no-slash")])
    gen = LoadGenerator(url, 10, 1.0)
    with pytest.raises(UsageError, match="rate"):
        gen.set_rate(-1)


async def test_lbtui_load_command_prints_a_summary(fleet: Fleet) -> None:
    url = fleet.url("fast") + "/cmd"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "lbtui", "load", url, "--rate", "100", "--duration", "500ms",
        "--connections", "8",
        cwd=REPO,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        out, err = await asyncio.wait_for(proc.communicate(), 30)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0, err.decode()
    text = out.decode()
    assert f"target     {url}" in text
    assert "offered 100.0/s" in text
    assert "status     200: 50" in text
    assert "corrected" in text
    assert "raw" in text
    stats = await fleet.stats("fast")
    assert stats.requests_total == 50
