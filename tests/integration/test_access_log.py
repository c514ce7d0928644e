"""The access log and request ids through real sockets, on both listeners: what each line says,
``X-Request-Id`` kept or generated and given to the backend, ``traceparent`` passed on, the
combined format, a 429 and a retried request, SIGUSR1 reopening a rotated file on a real
``lbtui serve``, and a path that cannot be opened refused naming it."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import pytest

from lbtui import config as config_mod
from lbtui.balancer.server import BalancerServer
from lbtui.errors import ConfigError
from tests.integration.conftest import TestBackend
from tests.integration.test_cli import LBTUI, free_port
from tests.integration.test_workers import until

Backends = Callable[[int], Awaitable[list[TestBackend]]]
Balancer = Callable[..., Awaitable[BalancerServer]]
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def received(backend: TestBackend, i: int) -> dict[str, str]:
    return {k.lower(): v for k, v in backend.requests[i]["headers"]}


async def test_json_lines_say_what_happened_and_ids_reach_the_backend(
    backends: Backends, balancer: Balancer, tmp_path: Path
) -> None:
    (b1,) = await backends(1)
    log = tmp_path / "access.log"
    lb = await balancer([b1], access_log={"path": str(log), "flush_ms": 10})
    async with aiohttp.ClientSession() as s:
        headers = {"X-Request-Id": "client-id-1", "traceparent": TRACEPARENT}
        async with s.get(lb.url + "/a/b?x=1", headers=headers) as r:
            first = await r.read()
        async with s.post(lb.url + "/up", data=b"0123456789") as r:
            await r.read()
    assert received(b1, 0)["x-request-id"] == "client-id-1"
    assert received(b1, 0)["traceparent"] == TRACEPARENT
    generated = received(b1, 1)["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{8}-[0-9]+", generated), generated
    await until(lambda: len(lines(log)) == 2, 10, "two log lines")
    one, two = (json.loads(line) for line in lines(log))
    assert list(one) == [
        "time", "client", "method", "path", "status", "bytes_in", "bytes_out", "duration_ms",
        "upstream", "upstream_addr", "upstream_ms", "retries", "flags", "route", "listener",
        "request_id",
    ]  # fmt: skip
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", one["time"])
    assert one["client"] == "127.0.0.1"
    assert (one["method"], one["path"], one["status"]) == ("GET", "/a/b?x=1", 200)
    assert (one["bytes_in"], one["bytes_out"]) == (0, len(first))
    assert one["upstream"] == "b1"
    assert one["upstream_addr"] == f"127.0.0.1:{b1.port}"
    assert 0 < one["upstream_ms"] <= one["duration_ms"]
    assert (one["retries"], one["flags"], one["route"]) == (0, None, None)
    assert one["listener"] == "default"
    assert one["request_id"] == "client-id-1"
    assert (two["method"], two["bytes_in"], two["request_id"]) == ("POST", 10, generated)


async def test_refused_retried_and_routed_requests_carry_their_flags(
    backends: Backends, balancer: Balancer, tmp_path: Path
) -> None:
    (b1,) = await backends(1)
    dead = f"http://127.0.0.1:{free_port()}"
    log = tmp_path / "access.log"
    lb = await balancer(
        [b1],
        backends=[{"name": "dead", "url": dead}, {"name": "b1", "url": b1.url}],
        routes=[{"name": "r", "path_prefix": "/r", "backends": ["dead", "b1"]}],
        limits={"rps": 1, "burst": 3},
        access_log={"path": str(log), "flush_ms": 10},
    )
    statuses = []
    async with aiohttp.ClientSession() as s:
        for _ in range(4):
            async with s.get(lb.url + "/r/x") as r:
                await r.read()
                statuses.append(r.status)
    assert statuses[-1] == 429
    await until(lambda: len(lines(log)) == 4, 10, "four log lines")
    entries = [json.loads(line) for line in lines(log)]
    retried = [e for e in entries if e["retries"] == 1]
    assert retried, entries
    assert retried[0]["flags"] == "retried"
    assert retried[0]["upstream"] == "b1"
    assert retried[0]["status"] == 200
    assert all(e["route"] == "r" for e in entries[:3])
    refused = entries[-1]
    assert (refused["status"], refused["flags"], refused["upstream"]) == (429, "rate_limited", None)
    assert refused["bytes_out"] > 0


async def test_the_combined_format(backends: Backends, balancer: Balancer, tmp_path: Path) -> None:
    (b1,) = await backends(1)
    log = tmp_path / "access.log"
    lb = await balancer([b1], access_log={"path": str(log), "format": "combined", "flush_ms": 10})
    async with (
        aiohttp.ClientSession() as s,
        s.get(lb.url + "/c", headers={"User-Agent": 'ua "q"', "Referer": "http://r/"}) as r,
    ):
        body = await r.read()
    await until(lambda: len(lines(log)) == 1, 10, "a log line")
    line = lines(log)[0]
    pattern = (
        r'127\.0\.0\.1 - - \[\d\d/[A-Z][a-z]{2}/\d{4}:\d\d:\d\d:\d\d \+0000\] "GET /c HTTP/1\.1" '
        rf'200 {len(body)} "http://r/" "ua \\"q\\"" rt=\d+\.\d{{3}} upstream=b1 '
        rf"upstream_addr=127\.0\.0\.1:{b1.port} upstream_time=\d+\.\d{{3}} retries=0 flags=- "
        r"route=- listener=default request_id=[0-9a-f]{8}-[0-9]+ bytes_in=0"
    )
    assert re.fullmatch(pattern, line), line


async def test_a_path_that_cannot_be_opened_is_a_config_error(tmp_path: Path) -> None:
    cfg = config_mod.from_dict(
        {
            "listener": {"address": "127.0.0.1:0"},
            "backends": [{"name": "b", "url": "http://127.0.0.1:9"}],
            "access_log": {"path": str(tmp_path / "no" / "such" / "dir.log")},
        },
        "t.toml",
    )
    server = BalancerServer(cfg)
    with pytest.raises(ConfigError, match=r"access_log.*path: cannot open .*dir\.log"):
        await server.start()


def test_sigusr1_reopens_the_file_after_rotation(tmp_path: Path) -> None:
    from tests.integration.test_cli import _wait_listening

    port = free_port()
    log = tmp_path / "access.log"
    path = tmp_path / "lbtui.toml"
    dead = f"http://127.0.0.1:{free_port()}"
    path.write_text(
        f'[listener]\naddress = "127.0.0.1:{port}"\n[admin]\nenabled = false\n'
        f'[access_log]\npath = "access.log"\nflush_ms = 20\n'
        f'[[backends]]\nname = "d"\nurl = "{dead}"\n'
    )
    proc = subprocess.Popen(
        [*LBTUI, "serve", "--config", str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )

    def wait(what: Callable[[], Any]) -> None:
        end = time.monotonic() + 10
        while not what():
            assert time.monotonic() < end
            time.sleep(0.02)

    try:
        _wait_listening(port, proc)
        wait(lambda: len(lines(log)) >= 1)  # the probe, answered 502
        os.rename(log, tmp_path / "access.log.1")
        httpx.get(f"http://127.0.0.1:{port}/before", timeout=5)
        wait(lambda: "/before" in (tmp_path / "access.log.1").read_text())
        proc.send_signal(signal.SIGUSR1)
        wait(lambda: log.exists())
        httpx.get(f"http://127.0.0.1:{port}/after", timeout=5)
        wait(lambda: "/after" in log.read_text())
        assert "/after" not in (tmp_path / "access.log.1").read_text()
        entry = json.loads(lines(log)[-1])
        assert (entry["method"], entry["path"], entry["upstream"]) == ("GET", "/after", "d")
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=15)
    assert proc.returncode == 0, err
    assert "Traceback" not in err
