"""A real HAProxy for the source tests: origins as OS processes, HAProxy with a generated
configuration on free ports, its stats socket in a temporary folder, stopped by PID.

One rig is shared by a test module (starting HAProxy costs ~100 ms, the origins ~50 ms each);
a test that changes a server puts it back (``reset``) so the next one finds it as configured.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ORIGIN = r"""
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

name, port = sys.argv[1], int(sys.argv[2])

class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        status = 503 if self.path.startswith("/fail") else 200
        body = name.encode()
        self.send_response(status)
        self.send_header("X-Backend", name)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass

ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()
"""

HAPROXY = shutil.which("haproxy") or (
    "/usr/sbin/haproxy" if Path("/usr/sbin/haproxy").exists() else None
)
SKIP_REASON = "haproxy is not installed (apt-get install haproxy; .ci/run does)"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(cond: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not met within {timeout} s")
        time.sleep(0.02)


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


@dataclass
class HaproxyRig:
    """HAProxy fronting ``servers`` (name → origin port) in backend ``be_app``."""

    folder: Path
    servers: dict[str, int]
    frontend_port: int = 0
    exporter_port: int = 0
    process: subprocess.Popen[bytes] | None = None
    origins: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def socket_path(self) -> Path:
        return self.folder / "admin.sock"

    @property
    def url(self) -> str:
        return f"unix://{self.socket_path}"

    @property
    def frontend(self) -> str:
        return f"http://127.0.0.1:{self.frontend_port}"

    @property
    def exporter(self) -> str:
        return f"127.0.0.1:{self.exporter_port}"

    def config(self) -> str:
        lines = [
            "global",
            f"    stats socket {self.socket_path} mode 600 level admin",
            "defaults",
            "    mode http",
            "    timeout connect 1s",
            "    timeout client 10s",
            "    timeout server 10s",
            "frontend fe_main",
            f"    bind 127.0.0.1:{self.frontend_port}",
            "    default_backend be_app",
            "frontend fe_metrics",
            f"    bind 127.0.0.1:{self.exporter_port}",
            "    http-request use-service prometheus-exporter if { path /metrics }",
            "backend be_app",
            "    balance roundrobin",
        ]
        for name, port in self.servers.items():
            lines.append(f"    server {name} 127.0.0.1:{port} check inter 200ms fall 1 rise 1")
        return "\n".join(lines) + "\n"

    def start(self) -> None:
        for name in self.servers:
            self.start_origin(name)
        self.frontend_port = free_port()
        self.exporter_port = free_port()
        cfg = self.folder / "haproxy.cfg"
        cfg.write_text(self.config())
        assert HAPROXY is not None
        self.process = subprocess.Popen(
            [HAPROXY, "-f", str(cfg), "-db"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for(
            lambda: self.socket_path.exists() and _listening(self.frontend_port),
            what="HAProxy listening",
        )

    def start_origin(self, name: str) -> None:
        self.origins[name] = subprocess.Popen(
            [sys.executable, "-c", ORIGIN, name, str(self.servers[name])],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for(lambda: _listening(self.servers[name]), what=f"origin {name} listening")

    def stop_origin(self, name: str) -> None:
        proc = self.origins.pop(name, None)
        if proc is not None:
            _stop(proc)

    def command(self, line: str) -> str:
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(3)
            s.connect(str(self.socket_path))
            s.sendall(line.encode() + b"\n")
            chunks = []
            while chunk := s.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks).decode()

    def server_status(self, server: str) -> str:
        """HAProxy's status word of ``be_app/server`` read straight from the socket."""
        lines = self.command("show stat").splitlines()
        header = lines[0][2:].split(",")
        for line in lines[1:]:
            row = dict(zip(header, line.split(","), strict=False))
            if row.get("pxname") == "be_app" and row.get("svname") == server:
                return row["status"]
        raise KeyError(server)

    def server_weight(self, server: str) -> int:
        for line in self.command("show servers state be_app").splitlines():
            parts = line.split()
            if len(parts) > 8 and parts[3] == server:
                return int(parts[7])
        raise KeyError(server)

    def get(self, path: str = "/") -> str:
        """One GET through the frontend: the origin that answered (or the status)."""
        try:
            with urllib.request.urlopen(self.frontend + path, timeout=5) as r:
                return str(r.headers.get("X-Backend"))
        except urllib.error.HTTPError as exc:
            return str(exc.code)

    def reset(self) -> None:
        """Every server ready at weight 1 and its origin running, as configured."""
        for name in self.servers:
            if name not in self.origins:
                self.start_origin(name)
            self.command(f"set server be_app/{name} state ready")
            self.command(f"set server be_app/{name} weight 1")
        wait_for(
            lambda: all(self.server_status(n) == "UP" for n in self.servers),
            what="every server UP",
        )

    def stop(self) -> None:
        for name in list(self.origins):
            self.stop_origin(name)
        if self.process is not None:
            _stop(self.process)
            self.process = None


def _stop(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(proc.pid, signal.SIGTERM)
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(5)


def start_haproxy(folder: Path, names: tuple[str, ...] = ("s1", "s2", "s3")) -> HaproxyRig:
    rig = HaproxyRig(folder, {n: free_port() for n in names})
    try:
        rig.start()
        rig.reset()
    except BaseException:
        rig.stop()
        raise
    return rig
