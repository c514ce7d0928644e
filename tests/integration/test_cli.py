"""The ``lbtui`` command as a user runs it: a real process, real signals, real sockets."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.integration.test_proxy import free_port

LBTUI = [sys.executable, "-m", "lbtui"]


def run(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*LBTUI, *args], capture_output=True, text=True, timeout=timeout)


def test_help_and_version():
    r = run("--help")
    assert r.returncode == 0
    assert "serve" in r.stdout
    r = run("--version")
    assert r.returncode == 0
    assert r.stdout.startswith("lbtui ")
    r = run("serve", "--help")
    assert r.returncode == 0
    assert "--backend" in r.stdout


GOOD_BACKEND = '[[backends]]\nname = "a"\nurl = "http://127.0.0.1:9001"\n'

BAD_CONFIGS = [
    (
        "unknown key",
        '[listener]\naddress = "127.0.0.1:0"\nport = 3\n' + GOOD_BACKEND,
        "listener.port: unknown key",
    ),
    (
        "wrong type",
        '[[backends]]\nname = "a"\nurl = "http://127.0.0.1:9001"\nweight = "heavy"\n',
        "backends[0].weight: expected a valid number",
    ),
    (
        "bad url",
        '[[backends]]\nname = "a"\nurl = "ftp://files"\n',
        "backends[0].url: expected an http:// URL with a host and a port, got 'ftp://files'",
    ),
    (
        "duplicate name",
        GOOD_BACKEND + GOOD_BACKEND.replace("9001", "9002"),
        "backends[1].name: duplicate backend name 'a'",
    ),
    (
        "missing route backend",
        GOOD_BACKEND + '[[routes]]\npath_prefix = "/s"\nbackends = ["zz"]\n',
        "routes[0].backends[0]: no backend named 'zz' (known: a)",
    ),
    ("invalid toml", "[listener\n", "invalid TOML: "),
    (
        "bad algorithm",
        '[balancer]\nalgorithm = "fastest"\n' + GOOD_BACKEND,
        "balancer.algorithm: expected one of 'round_robin'",
    ),
    (
        "bad hash_on",
        '[balancer]\nhash_on = "body"\n' + GOOD_BACKEND,
        "balancer.hash_on: expected 'client_ip', 'header:NAME' or 'cookie:NAME', got 'body'",
    ),
    ("missing url", '[[backends]]\nname = "a"\n', "backends[0].url: required key is missing"),
]


@pytest.mark.parametrize(("case", "text", "expected"), BAD_CONFIGS, ids=[c[0] for c in BAD_CONFIGS])
def test_bad_config_is_one_clear_line(tmp_path: Path, case: str, text: str, expected: str):
    path = tmp_path / "lbtui.toml"
    path.write_text(text)
    r = run("serve", "--config", str(path))
    assert r.returncode == 2, r
    assert "Traceback" not in r.stderr
    assert r.stderr.startswith(f"lbtui: {path}: "), r.stderr
    assert expected in r.stderr, r.stderr


def test_unreadable_config(tmp_path: Path):
    missing = tmp_path / "nope.toml"
    r = run("serve", "--config", str(missing))
    assert r.returncode == 2
    assert r.stderr.strip() == f"lbtui: {missing}: cannot read the file: No such file or directory"


def test_no_backends_is_a_usage_error():
    r = run("serve", "--listen", "127.0.0.1:0")
    assert r.returncode == 2
    assert "no backends" in r.stderr
    assert "Traceback" not in r.stderr


def test_bad_flag_values():
    r = run("serve", "--listen", "127.0.0.1:99999", "--backend", "http://127.0.0.1:1")
    assert r.returncode == 2
    assert "listener.address: expected HOST:PORT" in r.stderr
    r = run("serve", "--backend", "a=notaurl")
    assert r.returncode == 2
    assert "backends[0].url" in r.stderr


def _wait_listening(port: int, proc: subprocess.Popen[str], deadline_s: float = 15) -> None:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        try:
            httpx.get(f"http://127.0.0.1:{port}/_probe", timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.05)
    raise AssertionError("balancer did not start listening")


def test_serve_flags_override_file_and_drain_on_sigterm(tmp_path: Path):
    """A slow request in flight when SIGTERM arrives still completes; then the process exits 0."""
    from aiohttp import web

    got: list[str] = []

    async def slow(request: web.Request) -> web.Response:
        import asyncio

        got.append(request.path)
        if request.path == "/slow":
            await asyncio.sleep(1.0)
        return web.Response(text="done")

    import asyncio

    backend_port = free_port()
    loop = asyncio.new_event_loop()
    runner_box: list[web.AppRunner] = []

    async def start_backend() -> None:
        app = web.Application()
        app.router.add_get("/{tail:.*}", slow)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", backend_port).start()
        runner_box.append(runner)

    loop.run_until_complete(start_backend())
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    cfg = tmp_path / "lbtui.toml"
    cfg.write_text('[listener]\naddress = "127.0.0.1:1"\n' + GOOD_BACKEND)
    port = free_port()
    proc = subprocess.Popen(
        [
            *LBTUI,
            "serve",
            "--config",
            str(cfg),
            "--listen",
            f"127.0.0.1:{port}",
            "--backend",
            f"real=http://127.0.0.1:{backend_port}",
            "--admin",
            "127.0.0.1:0",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_listening(port, proc)
        result: list[httpx.Response] = []
        t = threading.Thread(
            target=lambda: result.append(httpx.get(f"http://127.0.0.1:{port}/slow", timeout=10))
        )
        t.start()
        end = time.monotonic() + 5
        while "/slow" not in got and time.monotonic() < end:
            time.sleep(0.01)
        assert "/slow" in got
        proc.send_signal(signal.SIGTERM)
        t.join(10)
        assert result
        assert result[0].status_code == 200
        assert result[0].text == "done"
        assert proc.wait(10) == 0
        _, err = proc.communicate()
        assert "Traceback" not in err
        assert "with round_robin; admin API http://127.0.0.1:" in err
        assert (
            "lbtui: SIGTERM received: no new connections; draining 1 in-flight request "
            "(grace 10 s)…" in err
        ), err
        assert re.search(r"lbtui: stopped after \d+\.\d s\n$", err), err
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
        asyncio.run_coroutine_threadsafe(runner_box[0].cleanup(), loop).result(5)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()


def test_serve_exposes_the_admin_api_and_metrics(tmp_path: Path):
    port = free_port()
    admin_port = free_port()
    proc = subprocess.Popen(
        [
            *LBTUI,
            "serve",
            "--listen",
            f"127.0.0.1:{port}",
            "--admin",
            f"127.0.0.1:{admin_port}",
            "--backend",
            f"dead=http://127.0.0.1:{free_port()}",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_listening(port, proc)
        state = httpx.get(f"http://127.0.0.1:{admin_port}/api/v1/state", timeout=5).json()
        assert [b["name"] for b in state["backends"]] == ["dead"]
        metrics = httpx.get(f"http://127.0.0.1:{admin_port}/metrics", timeout=5).text
        assert "lbtui_requests_total" in metrics
        # the proxy listener never serves admin paths
        r = httpx.get(f"http://127.0.0.1:{port}/api/v1/state", timeout=5)
        assert r.status_code == 502
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
