"""The demo fleet as real processes on real sockets: answers, knobs, kill, restart, stop.

No mocks: every backend is a ``python -m lbtui.fleet.backend`` process on 127.0.0.1, and every
wait is for a condition with a deadline.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import statistics
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import aiohttp
import psutil  # type: ignore[import-untyped, unused-ignore]
import pytest

from lbtui.errors import ConfigError
from lbtui.fleet.spec import expand, load_fleet, parse_fleet
from lbtui.fleet.supervisor import BackendSpec, Fleet, FleetError

REPO = Path(__file__).resolve().parents[2]
T = TypeVar("T")


# --- helpers -----------------------------------------------------------------------------------


async def eventually(
    probe: Callable[[], Awaitable[T | None]], timeout_s: float, what: str, every_s: float = 0.005
) -> T:
    """Await ``probe()`` until it returns something other than None/False, within a deadline."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = await probe()
        if result is not None and result is not False:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout_s} s: {what}")
        await asyncio.sleep(every_s)


async def connect_refused(port: int) -> bool:
    """True when a TCP connect to 127.0.0.1:port is refused right now."""
    try:
        _reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except ConnectionRefusedError:
        return True
    writer.close()
    await writer.wait_closed()
    return False


def gone(pid: int) -> bool:
    """The process no longer runs (reaped, or a zombie waiting for a reaper that is not us)."""
    try:
        return bool(psutil.Process(pid).status() == psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return True


async def all_gone(pids: list[int], timeout_s: float) -> None:
    async def probe() -> bool:
        return all(gone(p) for p in pids)

    await eventually(probe, timeout_s, f"processes {pids} gone", every_s=0.02)


SPECS = [
    BackendSpec("api-1", latency_ms=1, size=512, character="fast"),
    BackendSpec("api-2", latency_ms=1, jitter_ms=1, size=1000, character="other"),
]


@pytest.fixture
async def fleet() -> AsyncIterator[Fleet]:
    async with Fleet(SPECS) as f:
        yield f


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as s:
        yield s


async def timed_get(http: aiohttp.ClientSession, url: str) -> float:
    t = time.monotonic()
    async with http.get(url) as resp:
        await resp.read()
        assert resp.status == 200
    return time.monotonic() - t


# --- answers -----------------------------------------------------------------------------------


async def test_backends_answer_with_their_size_and_name(
    fleet: Fleet, http: aiohttp.ClientSession
) -> None:
    members = fleet.backends
    assert [m.name for m in members] == ["api-1", "api-2"]
    assert len({m.port for m in members}) == 2
    assert all(m.alive and m.port > 0 and m.pid for m in members)
    for m in members:
        async with http.get(m.url + "/some/path?q=1") as resp:
            body = await resp.read()
            assert resp.status == 200
            assert resp.headers["X-Backend"] == m.name
        assert len(body) == m.spec.size
        doc = json.loads(body)
        assert (doc["backend"], doc["method"], doc["path"]) == (m.name, "GET", "/some/path")

    # a large body on request, streamed and exact
    url = members[0].url + "/big?size=5000000"
    async with http.get(url) as resp:
        n = 0
        async for chunk in resp.content.iter_chunked(1 << 16):
            n += len(chunk)
    assert n == 5_000_000

    # a request body is read and counted, not echoed
    async with http.post(members[1].url + "/up", data=b"x" * 300_000) as resp:
        assert resp.status == 200
        assert len(await resp.read()) == 1000
    stats = await fleet.stats("api-2")
    assert stats.bytes_in == 300_000
    assert stats.by_method == {"GET": 1, "POST": 1}

    ps = {p.name: p for p in fleet.process_stats()}
    assert ps["api-1"].alive
    assert ps["api-1"].pid == members[0].pid
    assert ps["api-1"].rss_bytes > 1_000_000


async def test_large_bodies_stream_in_constant_memory(
    fleet: Fleet, http: aiohttp.ClientSession
) -> None:
    size = 256 << 20
    chunk = b"u" * (1 << 20)

    async def upload() -> AsyncIterator[bytes]:
        for _ in range(size // len(chunk)):
            yield chunk

    rss_before = fleet.process_stats()[0].rss_bytes
    async with http.post(fleet.url("api-1") + "/upload", data=upload()) as resp:
        assert resp.status == 200
        await resp.read()
    n = 0
    async with http.get(fleet.url("api-1") + f"/download?size={size}") as resp:
        assert resp.headers["Content-Length"] == str(size)
        async for piece in resp.content.iter_chunked(1 << 20):
            n += len(piece)
    assert n == size
    assert (await fleet.stats("api-1")).bytes_in == size
    grown = fleet.process_stats()[0].rss_bytes - rss_before
    assert grown < 48 << 20, f"backend RSS grew {grown >> 20} MiB for 2 × 256 MiB of bodies"


# --- knobs -------------------------------------------------------------------------------------


async def test_latency_knob_raises_latency(fleet: Fleet, http: aiohttp.ClientSession) -> None:
    url = fleet.url("api-1")
    before = statistics.median([await timed_get(http, url) for _ in range(5)])
    knobs = await fleet.set_knobs("api-1", latency_ms=80)
    assert knobs["latency_ms"] == 80
    assert (await fleet.get_knobs("api-1"))["latency_ms"] == 80
    after = statistics.median([await timed_get(http, url) for _ in range(5)])
    assert after >= 0.075
    assert after - before >= 0.07


async def test_error_rate_one_answers_error_status_and_health_says_so(
    fleet: Fleet, http: aiohttp.ClientSession
) -> None:
    url = fleet.url("api-2")
    await fleet.set_knobs("api-2", error_rate=1.0, error_status=503)
    statuses = []
    for _ in range(20):
        async with http.get(url + "/") as resp:
            await resp.read()
            statuses.append(resp.status)
            assert resp.headers["X-Backend"] == "api-2"
    assert statuses == [503] * 20
    async with http.get(url + "/_fleet/health") as resp:
        assert resp.status == 503
    await fleet.set_knobs("api-2", error_rate=0.0)
    async with http.get(url + "/") as resp:
        assert resp.status == 200
    async with http.get(url + "/_fleet/health") as resp:
        assert resp.status == 200
        assert await resp.text() == "ok"


async def test_hang_holds_requests_until_cleared(fleet: Fleet, http: aiohttp.ClientSession) -> None:
    url = fleet.url("api-1")
    await fleet.set_knobs("api-1", hang=True)
    with pytest.raises(asyncio.TimeoutError):
        async with http.get(url + "/", timeout=aiohttp.ClientTimeout(total=0.3)) as resp:
            await resp.read()
    async with http.get(url + "/_fleet/health") as resp:
        assert resp.status == 503

    async def held_request() -> int:
        async with http.get(url + "/held") as resp:
            await resp.read()
            return resp.status

    held = asyncio.create_task(held_request())

    async def is_held() -> bool:
        return (await fleet.stats("api-1")).held >= 1

    await eventually(is_held, 5.0, "the request is held")
    assert not held.done()
    await fleet.set_knobs("api-1", hang=False)
    assert await asyncio.wait_for(held, 5.0) == 200
    async with http.get(url + "/") as resp:
        assert resp.status == 200


async def test_bad_knobs_are_refused(fleet: Fleet, http: aiohttp.ClientSession) -> None:
    with pytest.raises(FleetError, match="error_rate"):
        await fleet.set_knobs("api-1", error_rate=2.0)
    with pytest.raises(FleetError, match="unknown key"):
        await fleet.set_knobs("api-1", latency=3)
    async with http.post(fleet.url("api-1") + "/_fleet/control", json={"size": -1}) as resp:
        assert resp.status == 400
        assert "size" in (await resp.json())["problems"][0]
    with pytest.raises(FleetError, match="no such backend"):
        await fleet.kill("api-9")


# --- kill, restart, stop ---------------------------------------------------------------------


async def test_kill_closes_the_port_at_once_and_restart_reuses_it(
    fleet: Fleet, http: aiohttp.ClientSession
) -> None:
    before = fleet.member("api-1")
    assert before.pid is not None
    assert not await connect_refused(before.port)

    t0 = time.monotonic()
    await fleet.kill("api-1")
    await eventually(lambda: connect_refused(before.port), 1.0, "port refuses", every_s=0.001)
    refused_after = time.monotonic() - t0
    assert refused_after < 0.1, f"port still accepted {refused_after * 1000:.0f} ms after kill"
    assert gone(before.pid)
    assert not fleet.member("api-1").alive
    assert fleet.member("api-2").alive

    t1 = time.monotonic()
    after = await fleet.restart("api-1")

    async def answers() -> bool:
        try:
            return await timed_get(http, after.url + "/") >= 0
        except aiohttp.ClientError:
            return False

    await eventually(answers, 2.0, "restarted backend answers")
    answered_after = time.monotonic() - t1
    assert answered_after < 2.0
    assert after.port == before.port
    assert after.pid != before.pid
    assert after.alive
    assert after.restarts == 1


async def test_stop_leaves_no_process() -> None:
    fleet = Fleet(SPECS)
    await fleet.start()
    pids = [m.pid for m in fleet.backends if m.pid is not None]
    assert len(pids) == 2
    assert not any(gone(p) for p in pids)
    t = time.monotonic()
    await fleet.stop()
    assert time.monotonic() - t < 5.0
    assert all(gone(p) for p in pids)
    assert not any(m.alive for m in fleet.backends)
    await fleet.stop()  # idempotent


async def test_children_die_when_the_supervisor_is_killed() -> None:
    script = (
        "import asyncio, json\n"
        "from lbtui.fleet.supervisor import BackendSpec, Fleet\n"
        "async def main():\n"
        "    async with Fleet([BackendSpec('a'), BackendSpec('b')]) as f:\n"
        "        print(json.dumps([m.pid for m in f.backends]), flush=True)\n"
        "        await asyncio.sleep(60)\n"
        "asyncio.run(main())\n"
    )
    sup = await asyncio.create_subprocess_exec(
        sys.executable, "-c", script, stdout=asyncio.subprocess.PIPE
    )
    try:
        assert sup.stdout is not None
        line = await asyncio.wait_for(sup.stdout.readline(), 20)
        pids = json.loads(line)
        assert len(pids) == 2
        assert not any(gone(p) for p in pids)
        os.kill(sup.pid, signal.SIGKILL)
        await asyncio.wait_for(sup.wait(), 5)
        await all_gone(pids, 5.0)
    finally:
        if sup.returncode is None:
            sup.kill()
            await sup.wait()


async def test_a_backend_that_cannot_start_is_a_clear_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        fleet = Fleet([BackendSpec("ok-1"), BackendSpec("busy", port=port)])
        with pytest.raises(FleetError, match=rf"busy.*cannot listen on 127\.0\.0\.1:{port}"):
            await fleet.start()
    assert not any(m.alive for m in fleet.backends)
    pids = [m.pid for m in fleet.backends if m.pid is not None]
    await all_gone(pids, 5.0)


# --- request-id bookkeeping ------------------------------------------------------------------


async def test_stats_count_request_ids_and_repeats(
    fleet: Fleet, http: aiohttp.ClientSession
) -> None:
    url = fleet.url("api-2") + "/orders"
    for rid in ["a", "b", "c", "a", "a", "b"]:
        async with http.post(url, data=b"{}", headers={"X-Request-Id": rid}) as resp:
            assert resp.status == 200
    async with http.get(url) as resp:
        assert resp.status == 200
    await http.get(fleet.url("api-2") + "/_fleet/stats")  # not traffic: not counted
    stats = await fleet.stats("api-2")
    assert stats.requests_total == 7
    assert stats.by_method == {"POST": 6, "GET": 1}
    assert stats.request_ids_distinct == 3
    assert stats.request_ids_repeated == 2
    assert stats.requests_without_id == 1
    assert stats.by_status == {200: 7}


# --- the fleet file ------------------------------------------------------------------------------


def test_demo_fleet_file_has_four_characters() -> None:
    spec = load_fleet(REPO / "demo" / "fleet.toml")
    assert spec.host == "127.0.0.1"
    by = {b.character: b for b in spec.backends}
    assert set(by) == {"fast", "slow", "heavy", "flaky"}
    assert by["fast"].latency_ms < by["heavy"].latency_ms < by["slow"].latency_ms
    assert by["heavy"].size > by["fast"].size
    assert by["flaky"].error_rate == pytest.approx(0.05)


def test_bad_fleet_file_names_the_key(tmp_path: Path) -> None:
    bad = tmp_path / "fleet.toml"
    bad.write_text(
        '[[backend]]\nname = "a"\nlatency = "2ms"\n\n'
        '[[backend]]\nname = "b"\nerror_rate = 1.5\nlatncy = "3ms"\n\n'
        '[[backend]]\nname = "c"\nlatency = 40\n'
    )
    with pytest.raises(ConfigError) as info:
        load_fleet(bad)
    err = info.value
    assert err.source == str(bad)
    text = "\n".join(err.problems)
    assert "backend[1].error_rate: input should be less than or equal to 1 (got 1.5)" in text
    assert "backend[1].latncy: unknown key" in text
    assert 'backend[2].latency: expected a duration string such as "40ms"' in text
    assert len(err.problems) == 3

    with pytest.raises(ConfigError, match="invalid TOML"):
        parse_fleet("[[backend]\n", "x.toml")
    with pytest.raises(ConfigError, match=r"backend\[1\]\.name: 'a' is already used"):
        parse_fleet('[[backend]]\nname = "a"\n[[backend]]\nname = "a"\n', "x.toml")
    with pytest.raises(ConfigError, match="host: expected a loopback"):
        parse_fleet('host = "10.0.0.1"\n[[backend]]\nname = "a"\n', "x.toml")
    with pytest.raises(ConfigError, match="No such file or directory"):
        load_fleet(tmp_path / "missing.toml")


def test_expand_repeats_characters_over_count_and_ports() -> None:
    base = load_fleet(REPO / "demo" / "fleet.toml").backends
    six = expand(base, count=6, base_port=19_500)
    assert [b.name for b in six] == [f"api-{i}" for i in range(1, 7)]
    assert [b.port for b in six] == list(range(19_500, 19_506))
    assert [b.character for b in six] == ["fast", "slow", "heavy", "flaky", "fast", "slow"]
    assert [b.port for b in expand(base, count=2)] == [0, 0]
    assert [b.name for b in expand(base)] == [b.name for b in base]
    with pytest.raises(ValueError, match="not all valid TCP ports"):
        expand(base, count=3, base_port=65_534)


# --- the command ---------------------------------------------------------------------------------


async def test_lbtui_fleet_command_starts_prints_and_stops(http: aiohttp.ClientSession) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "lbtui", "fleet", "--count", "2",
        cwd=REPO,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        header = await asyncio.wait_for(proc.stdout.readline(), 20)
        assert header.split() == [b"NAME", b"URL", b"PID", b"CHARACTER"]
        rows = [(await asyncio.wait_for(proc.stdout.readline(), 5)).decode() for _ in range(2)]
        names, urls, pids = [], [], []
        for row in rows:
            name, url, pid, character, *_ = row.split()
            names.append(name)
            urls.append(url)
            pids.append(int(pid))
            assert character in {"fast", "slow"}
        assert names == ["api-1", "api-2"]
        for name, url in zip(names, urls, strict=True):
            async with http.get(url + "/") as resp:
                assert resp.status == 200
                assert resp.headers["X-Backend"] == name
        children = {c.pid for c in psutil.Process(proc.pid).children()}
        assert set(pids) <= children
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 10) == 0
        await all_gone(pids, 5.0)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
