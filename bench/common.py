"""Shared pieces of the benchmarks: processes, generated nginx/HAProxy configs, wrk, CPU meters.

Everything listens on 127.0.0.1. Every process started here is a ``Proc`` and is stopped by its
PID (SIGTERM, then SIGKILL after a grace period); ``Procs`` is a context manager that stops all
of its processes on the way out, even when the benchmark fails half-way. Every wait has a
deadline and every wrk run is bounded by its ``-d`` plus a hard subprocess timeout.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import psutil

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
_VENV = ROOT / ".venv" / "bin"
PYTHON = str(_VENV / "python") if (_VENV / "python").exists() else sys.executable
LBTUI = str(_VENV / "lbtui") if (_VENV / "lbtui").exists() else shutil.which("lbtui") or "lbtui"
HOST = "127.0.0.1"
STATIC_BODY = "x" * 63 + "\n"
"""What the static nginx backends answer: 64 bytes, like the demo backends' ``--size 64``."""


class BenchError(RuntimeError):
    """A benchmark could not run (a tool is missing, a process did not start in time)."""


def have(name: str) -> bool:
    """Whether the tool ``name`` (nginx, haproxy, wrk) is on the PATH."""
    return shutil.which(name) is not None


def require_tools(*names: str) -> None:
    missing = [n for n in names if shutil.which(n) is None]
    if missing:
        hint = "apt-get install -y nginx haproxy wrk (see bench/README.md)"
        raise BenchError(f"missing {', '.join(missing)}: {hint}")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the kernel's choice)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def wait_until(cond: Callable[[], bool], timeout: float, what: str, interval: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(interval)
    raise BenchError(f"timed out after {timeout:.0f} s waiting for {what}")


def port_answers(port: int, host: str = HOST) -> bool:
    """True when ``host:port`` answers a ``GET /`` with an HTTP status line."""
    try:
        with socket.create_connection((host, port), timeout=0.5) as s:
            s.sendall(b"GET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
            return s.recv(12).startswith(b"HTTP/1.")
    except OSError:
        return False


def wait_port(port: int, timeout: float = 10.0, host: str = HOST) -> None:
    wait_until(lambda: port_answers(port, host), timeout, f"{host}:{port} to answer HTTP")


# --- processes ---------------------------------------------------------------------------------


@dataclass
class Proc:
    """A process this benchmark started, with its output in files under the run's temp dir."""

    name: str
    popen: subprocess.Popen[bytes]
    stdout_path: Path
    stderr_path: Path
    port: int = 0

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def output(self) -> str:
        return self.stdout_path.read_text(errors="replace") + self.stderr_path.read_text(
            errors="replace"
        )

    def kill(self) -> None:
        """SIGKILL by PID (the fault in the kill test)."""
        if self.alive():
            os.kill(self.pid, signal.SIGKILL)
            self.popen.wait(timeout=5)

    def stop(self, grace: float = 5.0) -> None:
        """SIGTERM by PID, wait up to ``grace`` seconds, then SIGKILL; reaps the process. Its
        descendants (nginx workers, lbtui's worker processes) that outlive it by ``grace`` are
        SIGKILLed by PID too, so that none of them loads the machine during the next run."""
        if not self.alive():
            self.popen.wait()
            return
        descendants = _descendants(self.pid)
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGTERM)
        try:
            self.popen.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
            self.popen.wait(timeout=5)
        with contextlib.suppress(BenchError):
            wait_until(lambda: all(map(_gone, descendants)), grace, "descendants")
        for p in descendants:
            if not _gone(p):
                log(f"{self.name}: process {p.pid} outlived its parent; SIGKILL")
                with contextlib.suppress(psutil.Error):
                    p.kill()  # psutil checks that the PID is still the same process


@dataclass
class Procs:
    """The processes of one benchmark run and its temp dir; stops everything on exit."""

    tmp: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="lbtui-bench-")))
    procs: list[Proc] = field(default_factory=list)
    keep_tmp: bool = False

    def __enter__(self) -> Procs:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop_all()
        if not self.keep_tmp:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def start(self, name: str, argv: Sequence[str], port: int = 0) -> Proc:
        safe = re.sub(r"[^A-Za-z0-9_.-]", "_", name)
        out, err = self.tmp / f"{safe}.out", self.tmp / f"{safe}.err"
        with out.open("wb") as fo, err.open("wb") as fe:
            popen = subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=fo, stderr=fe)
        proc = Proc(name, popen, out, err, port)
        self.procs.append(proc)
        return proc

    def stop(self, proc: Proc) -> None:
        proc.stop()
        with contextlib.suppress(ValueError):
            self.procs.remove(proc)

    def stop_all(self) -> None:
        # Reverse order: proxies before the backends behind them.
        for proc in reversed(list(self.procs)):
            proc.stop()
        self.procs.clear()

    def _wait_ready(self, proc: Proc, cond: Callable[[], bool], timeout: float, what: str) -> None:
        def ready() -> bool:
            if not proc.alive():
                raise BenchError(f"{proc.name} exited early:\n{proc.output()[-2000:]}")
            return cond()

        try:
            wait_until(ready, timeout, what)
        except BenchError:
            self.stop(proc)
            raise

    # --- the things under test

    def fleet_backend(
        self, name: str, size: int = 64, latency_ms: float = 0.0, error_rate: float = 0.0
    ) -> Proc:
        """One demo backend process (``lbtui.fleet.backend``) on a kernel-chosen port."""
        argv = [
            PYTHON, "-m", "lbtui.fleet.backend", "--name", name, "--host", HOST, "--port", "0",
            "--latency-ms", str(latency_ms), "--jitter-ms", "0", "--size", str(size),
            "--error-rate", str(error_rate), "--parent-pid", str(os.getpid()),
        ]  # fmt: skip
        proc = self.start(name, argv)

        def ready() -> bool:
            line, newline, _ = proc.stdout_path.read_text().partition("\n")
            if not newline or not line.startswith("{"):
                return False
            proc.port = int(json.loads(line)["port"])
            return True

        self._wait_ready(proc, ready, 15.0, f"backend {name} to print its ready line")
        return proc

    def fleet(self, n: int, size: int = 64) -> list[Proc]:
        return [self.fleet_backend(f"api-{i + 1}", size=size) for i in range(n)]

    def static_backends(self, n: int) -> tuple[Proc, list[int]]:
        """One nginx worker answering ``return 200`` (64 bytes) on ``n`` ports."""
        ports = [free_port() for _ in range(n)]
        listens = "\n".join(f"    listen {HOST}:{p};" for p in ports)
        server = f"""  server {{
{listens}
    location / {{ return 200 "{STATIC_BODY.rstrip()}\\n"; }}
  }}"""
        proc = self.nginx("static-backends", server, ports[0])
        return proc, ports

    def nginx(
        self,
        name: str,
        servers: str,
        port: int,
        upstreams: str = "",
        connections: int = 4096,
        workers: int = 1,
    ) -> Proc:
        require_tools("nginx")
        prefix = self.tmp / name
        for sub in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
            (prefix / "tmp" / sub).mkdir(parents=True, exist_ok=True)
        conf = prefix / "nginx.conf"
        conf.write_text(nginx_conf(prefix, servers, upstreams, connections, workers))
        argv = ["nginx", "-c", str(conf), "-p", str(prefix), "-e", str(prefix / "error.log")]
        proc = self.start(name, [*argv, "-g", "daemon off;"], port)
        self._wait_ready(proc, lambda: port_answers(port), 10.0, f"{name} on :{port}")
        return proc

    def nginx_proxy(
        self,
        backend_ports: Sequence[int],
        method: str = "",
        next_upstream: str | None = None,
        connections: int = 4096,
        workers: int = 1,
    ) -> Proc:
        """nginx in front of ``backend_ports``: round robin, or ``method`` (``least_conn``);
        ``next_upstream`` replaces ``proxy_next_upstream``'s default (``error timeout``);
        ``workers`` worker processes (more than one: ``listen … reuseport``)."""
        port = free_port()
        upstream, server = nginx_proxy_blocks(
            backend_ports, port, method, next_upstream, reuseport=workers > 1
        )
        return self.nginx("nginx", server, port, upstream, connections, workers)

    def haproxy(
        self,
        backend_ports: Sequence[int],
        hardened: bool,
        health_path: str = "/",
        balance: str = "roundrobin",
        extra: str = "",
        maxconn: int = 4096,
        threads: int = 1,
    ) -> Proc:
        require_tools("haproxy")
        port = free_port()
        name = "haproxy-hardened" if hardened else "haproxy-defaults"
        cfg = self.tmp / f"{name}.cfg"
        cfg.write_text(
            haproxy_cfg(
                backend_ports,
                port,
                hardened=hardened,
                health_path=health_path,
                balance=balance,
                extra=extra,
                maxconn=maxconn,
                threads=threads,
            )
        )
        proc = self.start(name, ["haproxy", "-f", str(cfg), "-db"], port)
        self._wait_ready(proc, lambda: port_answers(port), 10.0, f"{name} on :{port}")
        return proc

    def lbtui(
        self,
        backend_ports: Sequence[int],
        algorithm: str = "round_robin",
        config: str = "",
        name: str = "lbtui",
        workers: int = 1,
    ) -> Proc:
        """``lbtui serve`` in front of ``backend_ports``; ``config`` is TOML added to the
        generated file (its admin API listens on a free port unless ``config`` says
        otherwise, so that a console or demo already on 9901 does not get in the way).
        ``workers`` > 1 sets ``[listener] workers``; ready once that many of its processes
        listen on the port."""
        port = free_port()
        text = f'[listener]\naddress = "{HOST}:{port}"\n'
        if workers != 1:
            text += f"workers = {workers}\n"
        text = (
            (config.replace("[listener]", text.strip(), 1) + "\n")
            if "[listener]" in config
            else (text + "\n" + config + "\n")
        )
        if "[admin]" not in text:
            text += f'\n[admin]\naddress = "{HOST}:{free_port()}"\n'
        if "[balancer]" not in text:
            text += f'\n[balancer]\nalgorithm = "{algorithm}"\n'
        for i, p in enumerate(backend_ports):
            text += f'\n[[backends]]\nname = "b{i + 1}"\nurl = "http://{HOST}:{p}"\n'
        conf = self.tmp / f"{re.sub(r'[^A-Za-z0-9_.-]', '_', name)}.toml"
        conf.write_text(text)
        proc = self.start(name, [LBTUI, "serve", "--config", str(conf)], port)
        self._wait_ready(
            proc, lambda: "lbtui: balancing" in proc.output(), 15.0, "lbtui serve to listen"
        )
        self._wait_ready(
            proc,
            lambda: listening_processes(proc.pid, port) >= workers,
            15.0,
            f"{workers} lbtui processes to listen on :{port}",
        )
        wait_port(port)
        return proc

    def naive_proxy(self, backend_ports: Sequence[int]) -> Proc:
        port = free_port()
        argv = [PYTHON, str(BENCH / "naive_proxy.py"), "--port", str(port)]
        argv += [f"http://{HOST}:{p}" for p in backend_ports]
        proc = self.start("naive-proxy", argv, port)
        self._wait_ready(proc, lambda: port_answers(port), 15.0, "naive proxy to listen")
        return proc


# --- generated configs -------------------------------------------------------------------------


def nginx_conf(
    prefix: Path, servers: str, upstreams: str = "", connections: int = 4096, workers: int = 1
) -> str:
    """A self-contained nginx.conf: ``workers`` workers (1 unless asked), pid and logs in
    ``prefix``, access log off."""
    return f"""worker_processes {workers};
worker_rlimit_nofile {connections + 1024};
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections {connections}; }}
http {{
  access_log off;
  keepalive_requests 1000000;
  client_body_temp_path {prefix}/tmp/body;
  proxy_temp_path {prefix}/tmp/proxy;
  fastcgi_temp_path {prefix}/tmp/fastcgi;
  uwsgi_temp_path {prefix}/tmp/uwsgi;
  scgi_temp_path {prefix}/tmp/scgi;
{upstreams}
{servers}
}}
"""


def nginx_proxy_blocks(
    backend_ports: Sequence[int],
    port: int,
    method: str = "",
    next_upstream: str | None = None,
    reuseport: bool = False,
) -> tuple[str, str]:
    """The ``upstream`` (round robin unless ``method``, keepalive 64) and ``server`` blocks of
    the nginx proxy; ``reuseport``: one listening socket a worker (``SO_REUSEPORT``)."""
    servers = "\n".join(f"    server {HOST}:{p};" for p in backend_ports)
    balance = f"    {method};\n" if method else ""
    nxt = f"      proxy_next_upstream {next_upstream};\n" if next_upstream else ""
    upstream = f"""  upstream backends {{
{balance}{servers}
    keepalive 64;
    keepalive_requests 1000000;
  }}"""
    server = f"""  server {{
    listen {HOST}:{port}{" reuseport" if reuseport else ""};
    location / {{
      proxy_pass http://backends;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
{nxt}    }}
  }}"""
    return upstream, server


def haproxy_cfg(
    backend_ports: Sequence[int],
    port: int,
    *,
    hardened: bool,
    health_path: str = "/",
    balance: str = "roundrobin",
    extra: str = "",
    maxconn: int = 4096,
    threads: int = 1,
) -> str:
    """haproxy.cfg with ``threads`` threads (1 unless asked). ``hardened`` adds ``option
    redispatch`` and active checks (``inter 500 fall 1 rise 2``); the defaults variant has
    neither, all else equal. ``extra`` lines go into the backend section (e.g. ``retry-on 500
    502 503 504``)."""
    check = " check inter 500 fall 1 rise 2" if hardened else ""
    servers = "\n".join(f"  server s{i + 1} {HOST}:{p}{check}" for i, p in enumerate(backend_ports))
    redispatch = "  option redispatch\n" if hardened else ""
    httpchk = f"  option httpchk GET {health_path}\n" if hardened else ""
    ulimit = ""
    if maxconn > 4096:
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        # Idle clients need one descriptor each, not the two HAProxy reckons per connection:
        # run with what the system allows rather than refuse to start.
        ulimit = f"\n  ulimit-n {min(soft, 2 * maxconn + 1024)}\n  no strict-limits"
    return f"""global
  maxconn {maxconn}{ulimit}
  nbthread {threads}

defaults
  mode http
  timeout connect 1s
  timeout client 30s
  timeout server 30s
  retries 3
  http-reuse always
{redispatch}
frontend fe
  bind {HOST}:{port}
  default_backend be

backend be
  balance {balance}
{httpchk}{extra}{servers}
"""


# --- wrk ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WrkResult:
    requests: int
    seconds: float
    rps: float
    non_2xx_3xx: int
    connect_errors: int
    read_errors: int
    write_errors: int
    timeout_errors: int
    raw: str
    statuses: dict[int, int] = field(default_factory=dict)
    """Error statuses (≥ 400) and their counts, when wrk ran with ``STATUS_SCRIPT``."""
    first_error: str = ""
    """The first error response's status and body start, when wrk ran with ``STATUS_SCRIPT``."""

    @property
    def socket_errors(self) -> int:
        return self.connect_errors + self.read_errors + self.write_errors + self.timeout_errors

    def socket_errors_text(self) -> str:
        if not self.socket_errors:
            return "0"
        parts = [
            f"{k} {v}"
            for k, v in (
                ("connect", self.connect_errors),
                ("read", self.read_errors),
                ("write", self.write_errors),
                ("timeout", self.timeout_errors),
            )
            if v
        ]
        return f"{self.socket_errors} ({', '.join(parts)})"


def parse_wrk(out: str) -> WrkResult:
    m = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m)", out)
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if m is None or rps is None:
        raise BenchError(f"cannot parse wrk output:\n{out}")
    scale = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}[m.group(3)]
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    c, r, w, t = (int(x) for x in sock.groups()) if sock else (0, 0, 0, 0)
    return WrkResult(
        requests=int(m.group(1)),
        seconds=float(m.group(2)) * scale,
        rps=float(rps.group(1)),
        non_2xx_3xx=int(non2xx.group(1)) if non2xx else 0,
        connect_errors=c,
        read_errors=r,
        write_errors=w,
        timeout_errors=t,
        raw=out,
        statuses={int(k): int(v) for k, v in re.findall(r"^STATUS (\d+) (\d+)$", out, re.M)},
        first_error=first.group(1) if (first := re.search(r"^FIRST (.*)$", out, re.M)) else "",
    )


STATUS_SCRIPT = """
-- Count non-2xx/3xx statuses and keep the first such body (costs wrk some speed).
-- Globals, not locals: done() reads them from each thread with thread:get().
counts = {}
first = nil
threads = {}
function setup(thread) table.insert(threads, thread) end
function response(status, headers, body)
  if status >= 400 then
    counts[status] = (counts[status] or 0) + 1
    if first == nil then first = status .. " " .. string.sub(body or "", 1, 300) end
  end
end
function done(summary, latency, requests)
  for _, t in ipairs(threads) do
    local c = t:get("counts") or {}
    for k, v in pairs(c) do io.write("STATUS ", k, " ", v, "\\n") end
    local f = t:get("first")
    if f ~= nil then io.write("FIRST ", f, "\\n") end
  end
end
"""


def start_wrk(
    url: str,
    duration: float,
    connections: int = 64,
    threads: int = 1,
    script: Path | None = None,
) -> subprocess.Popen[str]:
    require_tools("wrk")
    if not url.startswith(f"http://{HOST}:"):
        raise BenchError(f"refusing to load anything but {HOST}: {url}")
    argv = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration:g}s", url]
    if script is not None:
        argv += ["-s", str(script)]
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish_wrk(popen: subprocess.Popen[str], duration: float) -> WrkResult:
    """Wait for wrk (hard limit: its duration + 30 s, then SIGKILL by PID) and parse it."""
    try:
        out, _ = popen.communicate(timeout=duration + 30)
    except subprocess.TimeoutExpired:
        os.kill(popen.pid, signal.SIGKILL)
        popen.communicate()
        raise BenchError("wrk did not finish in time") from None
    return parse_wrk(out)


def run_wrk(url: str, duration: float, connections: int = 64, threads: int = 1) -> WrkResult:
    return finish_wrk(start_wrk(url, duration, connections, threads), duration)


# --- CPU ---------------------------------------------------------------------------------------


def _tree(pid: int) -> list[psutil.Process]:
    root = psutil.Process(pid)
    return [root, *root.children(recursive=True)]


def _gone(p: psutil.Process) -> bool:
    """Exited (a zombie counts: nothing left to stop)."""
    try:
        return not p.is_running() or p.status() == psutil.STATUS_ZOMBIE
    except psutil.Error:
        return True


def _descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return []


def listening_processes(pid: int, port: int) -> int:
    """How many processes of the tree rooted at ``pid`` hold a socket listening on ``port``
    (their own with ``SO_REUSEPORT``, or one they share)."""
    n = 0
    for p in _tree(pid):
        with contextlib.suppress(psutil.Error):
            conns = p.net_connections(kind="tcp")
            n += any(c.status == psutil.CONN_LISTEN and c.laddr.port == port for c in conns)
    return n


def cpu_seconds(pids: Sequence[int]) -> dict[int, float]:
    """user+system CPU seconds of each process in the trees rooted at ``pids`` (nginx and
    HAProxy workers, lbtui's worker processes included), keyed by PID so that a meter
    compares the same processes."""
    seen: dict[int, float] = {}
    for pid in pids:
        for p in _tree(pid):
            with contextlib.suppress(psutil.Error):
                t = p.cpu_times()
                seen[p.pid] = t.user + t.system
    return seen


@dataclass
class CpuMeter:
    """CPU seconds the process trees rooted at ``pids`` spend between ``start`` and ``stop``.

    Every process of the trees counts, whenever it appears: one already there at ``start``
    from its figure then, one born later from zero. The trees are sampled every ``interval``
    seconds in between, so that a process that exits before ``stop`` still counts with its
    last sample (losing at most ``interval`` of its CPU)."""

    pids: Sequence[int]
    interval: float = 0.5
    _before: dict[int, float] = field(default_factory=dict)
    _last: dict[int, float] = field(default_factory=dict)
    _done: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    seconds: float = 0.0
    processes: int = 0
    """How many processes counted."""

    def _sample(self) -> None:
        for pid, v in cpu_seconds(self.pids).items():
            self._last[pid] = max(v, self._last.get(pid, 0.0))

    def _run(self) -> None:
        while not self._done.wait(self.interval):
            with contextlib.suppress(psutil.Error):
                self._sample()

    def start(self) -> None:
        self._before = cpu_seconds(self.pids)
        self._last = dict(self._before)
        self._done.clear()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def stop(self) -> float:
        self._done.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._sample()
        self.seconds = sum(v - self._before.get(pid, 0.0) for pid, v in self._last.items())
        self.processes = len(self._last)
        return self.seconds


@contextlib.contextmanager
def cpu_meter(pids: Sequence[int]) -> Iterator[CpuMeter]:
    meter = CpuMeter(pids)
    meter.start()
    try:
        yield meter
    finally:
        meter.stop()


# --- output ------------------------------------------------------------------------------------


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A Markdown table with right-aligned columns after the first."""
    widths = [max(len(str(r[i])) for r in [headers, *rows]) for i in range(len(headers))]

    def line(cells: Sequence[str]) -> str:
        out = [str(cells[0]).ljust(widths[0])]
        out += [str(c).rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True)]
        return "| " + " | ".join(out) + " |"

    rules = [("-" * (w + 1) + ":") if i else "-" * (w + 2) for i, w in enumerate(widths)]
    sep = "|" + "|".join(rules) + "|"
    return "\n".join([line(headers), sep, *(line(r) for r in rows)])


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)
