"""Balancer replicas and their shared limit store as real processes: ``lbtui demo --replicas``.

The demo's first replica runs in the demo's data-plane process (it carries the fleet and the
load, and its admin API takes the chaos actions); every other replica is an ``lbtui serve``
process of its own, with a generated config naming the same backends, the same limits and the
same Redis, on a port picked once so that a restart comes back where clients expect it. The
store is a ``redis-server`` on a free port (``redis_server.py``).

What chaos does to them is what happens to them in production: a replica is SIGKILLed by its
PID (no drain: in-flight requests are cut, its clients get connection errors), and started
again with the same config; the store is stopped (SIGTERM) and started again empty, as a Redis
without persistence comes back. Every process is stopped by its PID when the demo ends.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from lbtui.fleet.redis_server import RedisServer, free_port

__all__ = ["Replica", "ReplicaError", "ReplicaSet"]

START_TIMEOUT_S: Final = 20.0
RESTART_WAIT_S: Final = 2.0
"""A restart answers after this long at most (an admin API call waits on it): a replica still
starting then comes up on its own, and a console shows it unreachable until it does."""


class ReplicaError(RuntimeError):
    """A replica or the store could not be acted on (unknown name, not running, …)."""


@dataclass
class Replica:
    """One ``lbtui serve`` replica: where it listens and its process while it runs."""

    name: str
    port: int
    admin_port: int
    config: Path
    proc: subprocess.Popen[bytes] | None = None
    restarts: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


def toml_value(value: Any) -> str:
    """A TOML value for what a config dict holds (strings, numbers, booleans, lists, tables)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"cannot write {value!r} as TOML")


def toml_text(data: dict[str, Any]) -> str:
    """A config dict as a TOML file: top-level tables, then arrays of tables."""
    lines: list[str] = []
    for key, value in data.items():
        if isinstance(value, dict):
            lines.append(f"[{key}]")
            lines += [f"{k} = {toml_value(v)}" for k, v in value.items() if v is not None]
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            for item in value:
                lines.append(f"[[{key}]]")
                lines += [f"{k} = {toml_value(v)}" for k, v in item.items() if v is not None]
        elif value is not None:
            lines.insert(0, f"{key} = {toml_value(value)}")
        lines.append("")
    return "\n".join(lines)


class ReplicaSet:
    """The store and the out-of-process replicas of a demo (see the module)."""

    def __init__(self, redis: RedisServer | None) -> None:
        self.redis = redis
        self.replicas: dict[str, Replica] = {}
        self._dir = Path(tempfile.mkdtemp(prefix="lbtui-replicas-"))

    def add(self, name: str, config: dict[str, Any]) -> Replica:
        """A replica of ``config`` (its listener and admin addresses are set here), not started."""
        port, admin_port = free_port(), free_port()
        data = dict(config)
        data["listener"] = {**data.get("listener", {}), "address": f"127.0.0.1:{port}"}
        data["admin"] = {**data.get("admin", {}), "address": f"127.0.0.1:{admin_port}"}
        data["balancer"] = {**data.get("balancer", {}), "name": name}
        path = self._dir / f"{name}.toml"
        path.write_text(toml_text(data))
        replica = self.replicas[name] = Replica(name, port, admin_port, path)
        return replica

    async def start(self, name: str, wait_s: float = START_TIMEOUT_S) -> Replica:
        """Start replica ``name`` and wait until it serves (a clear error if it does not), or
        at most ``wait_s``: a replica still starting then is left to come up."""
        r = self._replica(name)
        if r.alive:
            raise ReplicaError(f"replica {name} is running (pid {r.proc.pid if r.proc else '?'})")
        argv = [sys.executable, "-m", "lbtui", "serve", "--config", str(r.config)]
        log = (self._dir / f"{name}.log").open("ab")
        r.proc = subprocess.Popen(  # noqa: ASYNC220 (starting it does not wait for it)
            argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log
        )
        log.close()
        t0 = time.monotonic()
        while not (_answers(r.port) and _answers(r.admin_port)):
            if not r.alive:
                raise ReplicaError(f"replica {name} exited at start: {self._tail(name)}")
            waited = time.monotonic() - t0
            if waited > START_TIMEOUT_S:
                self._signal(r, signal.SIGKILL)
                raise ReplicaError(f"replica {name} did not listen within {START_TIMEOUT_S:g} s")
            if waited > wait_s:
                break
            await asyncio.sleep(0.05)
        return r

    async def kill(self, name: str) -> int:
        """SIGKILL replica ``name``; its PID."""
        r = self._replica(name)
        if not r.alive or r.proc is None:
            raise ReplicaError(f"replica {name} is not running")
        pid = r.proc.pid
        self._signal(r, signal.SIGKILL)
        return pid

    async def restart(self, name: str) -> Replica:
        r = self._replica(name)
        if r.alive:
            raise ReplicaError(f"replica {name} is running: kill it first")
        r.restarts += 1
        return await self.start(name, RESTART_WAIT_S)

    async def stop_store(self) -> int:
        if self.redis is None:
            raise ReplicaError("this demo keeps its limits in memory: there is no store to stop")
        if not self.redis.running or self.redis.pid is None:
            raise ReplicaError("the limit store is not running")
        pid = self.redis.pid
        await asyncio.to_thread(self.redis.stop)
        return pid

    async def start_store(self) -> int:
        if self.redis is None:
            raise ReplicaError("this demo keeps its limits in memory: there is no store to start")
        if self.redis.running:
            raise ReplicaError("the limit store is running")
        await asyncio.to_thread(self.redis.start)
        assert self.redis.pid is not None
        return self.redis.pid

    async def stop(self) -> None:
        """Stop every replica (SIGTERM, then SIGKILL) and the store, by PID."""
        for r in self.replicas.values():
            self._signal(r, signal.SIGTERM)
        for r in self.replicas.values():
            if r.proc is not None:
                try:
                    await asyncio.to_thread(r.proc.wait, 10)
                except subprocess.TimeoutExpired:
                    self._signal(r, signal.SIGKILL)
        if self.redis is not None:
            await asyncio.to_thread(self.redis.stop)
        shutil.rmtree(self._dir, ignore_errors=True)

    def _replica(self, name: str) -> Replica:
        r = self.replicas.get(name)
        if r is None:
            known = ", ".join(sorted(self.replicas)) or "none"
            raise ReplicaError(f"no replica named {name!r} in this process's care (known: {known})")
        return r

    def _signal(self, r: Replica, sig: signal.Signals) -> None:
        if r.proc is not None and r.proc.poll() is None:
            os.kill(r.proc.pid, sig)
            if sig == signal.SIGKILL:
                r.proc.wait(5)

    def _tail(self, name: str) -> str:
        try:
            text = (self._dir / f"{name}.log").read_text(errors="replace").strip()
        except OSError:
            return "no output"
        return text.splitlines()[-1] if text else "no output"


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False
