"""HTTPS: lbtui's TLS listener against nginx with the same certificate, side by side.

Run alone: ``.venv/bin/python bench/tls.py [--duration 10] [--rounds 3]``, or as the ``https``
scenario of ``python -m bench``.

One self-signed ECDSA P-256 certificate (``openssl req``, made in the run's temp dir) is served
by both: nginx (one worker, ``ssl_protocols TLSv1.2 TLSv1.3``, upstream keepalive) and lbtui
(one process, a ``[[listeners]]`` entry with ``certificates``), each in front of the same static
nginx backends. Two loads, each ``wrk -t1 -c64`` against 127.0.0.1, rounds alternating:

- **keep-alive HTTPS GETs**: what a TLS listener costs per request once connections are up
  (the goal: lbtui ≥ 0.5 × nginx);
- **new TLS handshakes per second**: the same GETs with ``Connection: close``, so that every
  request is a new TCP connection and a full handshake (wrk does not resume sessions).

The proxy's CPU per request is measured over the run, as in the throughput scenario.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import ssl
import statistics
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from common import (
    HOST,
    PYTHON,
    BenchError,
    Proc,
    Procs,
    WrkResult,
    cpu_meter,
    free_port,
    log,
    nginx_proxy_blocks,
    parse_wrk,
    require_tools,
    table,
    wait_until,
)


def make_cert(folder: Path) -> tuple[Path, Path]:
    """A self-signed ECDSA P-256 certificate for ``bench.test`` (and its key)."""
    require_tools("openssl")
    cert, key = folder / "bench.crt", folder / "bench.key"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
            "-nodes", "-days", "2", "-subj", "/CN=bench.test",
            "-addext", "subjectAltName=DNS:bench.test", "-keyout", str(key), "-out", str(cert),
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


def tls_answers(port: int) -> bool:
    """True when ``HOST:port`` completes a TLS handshake and answers ``GET /``."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    try:
        with (
            socket.create_connection((HOST, port), timeout=0.5) as raw,
            ctx.wrap_socket(raw, server_hostname="bench.test") as s,
        ):
            s.sendall(b"GET / HTTP/1.1\r\nHost: bench.test\r\nConnection: close\r\n\r\n")
            return s.recv(12).startswith(b"HTTP/1.")
    except OSError:
        return False


def nginx_tls(procs: Procs, ports: list[int], cert: Path, key: Path) -> Proc:
    port = free_port()
    upstream, server = nginx_proxy_blocks(ports, port)
    server = server.replace(
        f"listen {HOST}:{port};",
        f"listen {HOST}:{port} ssl;\n    ssl_certificate {cert};\n    ssl_certificate_key {key};"
        "\n    ssl_protocols TLSv1.2 TLSv1.3;",
    )
    return procs.nginx("nginx-tls", server, port, upstream)


def lbtui_tls(procs: Procs, ports: list[int], cert: Path, key: Path) -> Proc:
    port = free_port()
    text = (
        f'[[listeners]]\nname = "secure"\naddress = "{HOST}:{port}"\n'
        f'certificates = [{{ cert = "{cert}", key = "{key}" }}]\n'
        f'\n[admin]\naddress = "{HOST}:{free_port()}"\n'
    )
    for i, p in enumerate(ports):
        text += f'\n[[backends]]\nname = "b{i + 1}"\nurl = "http://{HOST}:{p}"\n'
    conf = procs.tmp / "lbtui-tls.toml"
    conf.write_text(text)
    proc = procs.start("lbtui-tls", [PYTHON, "-m", "lbtui", "serve", "--config", str(conf)], port)

    def ready() -> bool:
        if not proc.alive():
            raise BenchError(f"lbtui exited early:\n{proc.output()[-2000:]}")
        return tls_answers(port)

    wait_until(ready, 20.0, "lbtui's TLS listener to answer")
    return proc


def wrk_https(port: int, duration: float, close: bool) -> WrkResult:
    """``wrk -t1 -c64`` against ``https://HOST:port/`` (``close``: a connection a request)."""
    require_tools("wrk")
    argv = ["wrk", "-t1", "-c64", f"-d{duration:g}s", f"https://{HOST}:{port}/"]
    if close:
        argv[1:1] = ["-H", "Connection: close"]
    popen = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        out, _ = popen.communicate(timeout=duration + 30)
    except subprocess.TimeoutExpired:
        os.kill(popen.pid, signal.SIGKILL)
        popen.communicate()
        raise BenchError("wrk did not finish in time") from None
    return parse_wrk(out)


SYSTEMS: dict[str, Callable[[Procs, list[int], Path, Path], Proc]] = {
    "nginx, 1 worker": nginx_tls,
    "lbtui, 1 process": lbtui_tls,
}


def measure(
    duration: float, rounds: int, backends: int = 4
) -> tuple[list[list[str]], dict[str, dict[str, float]]]:
    """The table rows and each system's medians (``rps``, ``hs``, ``cpu_us``, ``hs_cpu_us``)."""
    got: dict[str, dict[str, list[float]]] = {}
    with Procs() as procs:
        cert, key = make_cert(procs.tmp)
        _, ports = procs.static_backends(backends)
        for rnd in range(rounds):
            for name, start in SYSTEMS.items():
                log(f"https [{rnd + 1}/{rounds}]: {name} …")
                proc = start(procs, ports, cert, key)
                try:
                    wrk_https(proc.port, 1.0, False)  # warm-up
                    figures = got.setdefault(name, {})
                    for close, label in ((False, "rps"), (True, "hs")):
                        with cpu_meter([proc.pid]) as meter:
                            res = wrk_https(proc.port, duration, close)
                        if res.socket_errors or res.non_2xx_3xx:
                            log(f"  errors: {res.socket_errors_text()}, non-2xx {res.non_2xx_3xx}")
                        figures.setdefault(label, []).append(res.rps)
                        cpu = meter.seconds * 1e6 / res.requests if res.requests else 0.0
                        figures.setdefault(f"{label}_cpu_us", []).append(cpu)
                        log(f"  {label}: {res.rps:,.0f}/s, {cpu:.0f} µs CPU each")
                finally:
                    procs.stop(proc)
    med = {n: {k: statistics.median(v) for k, v in f.items()} for n, f in got.items()}
    base = med.get("nginx, 1 worker", {})
    rows = []
    for name, m in med.items():
        rows.append(
            [
                name,
                f"{m['rps']:,.0f}",
                f"{m['rps'] / base['rps']:.2f}" if base.get("rps") else "-",
                f"{m['rps_cpu_us']:.0f}",
                f"{m['hs']:,.0f}",
                f"{m['hs'] / base['hs']:.2f}" if base.get("hs") else "-",
                f"{m['hs_cpu_us']:.0f}",
            ]
        )
    return rows, med


HEADERS = [
    "system",
    "keep-alive HTTPS req/s",
    "÷ nginx",
    "CPU µs/req",
    "new TLS handshakes/s",
    "÷ nginx",
    "CPU µs/handshake",
]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--duration", type=float, default=10.0, help="seconds of each measured run")
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args(argv)
    rows, med = measure(args.duration, args.rounds)
    print(table(HEADERS, rows))
    lb, ng = med.get("lbtui, 1 process"), med.get("nginx, 1 worker")
    if lb and ng:
        got = lb["rps"] / ng["rps"]
        print(f"\n{'PASS' if got >= 0.5 else 'MISS'}: keep-alive HTTPS at {got:.2f} × nginx")
    return 0


if __name__ == "__main__":
    sys.exit(main())
