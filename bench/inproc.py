"""The Python cost of one proxied request, without sockets: fake transports on both sides.

Run: ``.venv/bin/python bench/inproc.py [--requests 64000] [--rounds 5] [--limits] [LABEL=DIR ...]``

``--limits`` adds a global and a per-client rate limit that admit everything, so that every
request also runs admission (both token buckets and the rate-limit headers).

The fast listener's ``ClientConnection`` and the lean upstream's connections run for real (llhttp
parsing, the whole pipeline: admission, pick, breaker, records, header rewriting, the answer's
rendering), but their transports are in-memory: a request written to a backend connection is
answered on the next loop iteration with a canned 64-byte nginx answer, and every answer written
to a client triggers that client's next request. 64 clients run at once, so that each loop
iteration carries many events, as under wrk. What is left out is the kernel (about 10 µs a
request on the 2-core machine: two sends, two receives, epoll) and uvloop's reading.

The figure is process CPU time per request, the best of 5 runs in one process. Given source
trees (``LABEL=DIR``, as ``bench/ab.py`` takes them; ``--src DIR`` too), each round runs every
tree once, each in its own process, in turn (ABAB…), and the table gives the min and median of
the rounds and each tree's median over the first's — how the pipeline changes were measured
while the shared machine was too noisy for wrk. A compiled tree is one built in place
(``python setup.py build_ext --inplace`` in a copy: ``git worktree add /tmp/t HEAD``). Trees
from before ``lean_upstream.py`` (the pools were in ``connections.py``) are measured too.

Example::

    .venv/bin/python bench/inproc.py --rounds 6 base=/tmp/base final=/tmp/final
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import time
from typing import Any

RESP = (
    b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Thu, 26 Nov 2026 12:51:04 GMT\r\n"
    b"Content-Type: text/plain\r\nContent-Length: 64\r\nConnection: keep-alive\r\n\r\n"
    + b"x" * 63
    + b"\n"
)
REQ = b"GET / HTTP/1.1\r\nHost: 127.0.0.1:18080\r\n\r\n"
CLIENTS = 64


class _BackendTransport:
    def __init__(self, loop: asyncio.AbstractEventLoop, proto: Any) -> None:
        self.loop, self.proto, self.closed = loop, proto, False

    def write(self, data: bytes) -> None:
        self.loop.call_soon(self.proto.data_received, RESP)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default

    def abort(self) -> None:
        self.closed = True

    close = abort

    def pause_reading(self) -> None:
        pass

    resume_reading = pause_reading


class _ClientTransport(_BackendTransport):
    def __init__(self, loop: asyncio.AbstractEventLoop, proto: Any, n: int, done: Any) -> None:
        super().__init__(loop, proto)
        self.n, self.done = n, done

    def write(self, data: bytes) -> None:
        self.n -= 1
        if self.n <= 0:
            self.done.set_result(None)
        else:
            self.loop.call_soon(self.proto.data_received, REQ)

    def writelines(self, parts: Any) -> None:
        self.write(b"".join(parts))

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 5555), "sockname": ("127.0.0.1", 18080)}.get(name)


LIMITS = {"rps": 1e8, "burst": 1e8, "per_client_rps": 1e8, "per_client_burst": 1e8}
"""``--limits``: a global and a per-client bucket that admit everything, so that the admission
path (both token buckets, the rate-limit headers) runs on every request."""


async def run(n: int, access_log: dict[str, Any] | None = None, limits: bool = False) -> float:
    """CPU µs a request; with ``access_log`` (an ``[access_log]`` table) the log is on, and
    the time its writer thread takes to write every entry is counted too; with ``limits``,
    admission runs too (:data:`LIMITS`)."""
    from lbtui import config as config_mod
    from lbtui.balancer import connections

    try:
        from lbtui.balancer.lean_upstream import LeanUpstream
    except ImportError:  # a tree from before lean_upstream.py: the pools were in connections.py
        LeanUpstream = connections.LeanUpstream  # type: ignore[attr-defined,misc]
    from lbtui.balancer.listener import ClientConnection, FastListener
    from lbtui.balancer.proxy import Proxy

    data = {
        "listener": {"address": "127.0.0.1:0"},
        "admin": {"enabled": False},
        **({"limits": LIMITS} if limits else {}),
        "backends": [{"name": f"b{i}", "url": f"http://127.0.0.1:{29001 + i}"} for i in range(4)],
    }
    if access_log is not None:
        data["access_log"] = access_log
    cfg = config_mod.from_dict(data, "inproc")
    proxy = Proxy(cfg)
    await proxy.start()
    log = None
    if access_log is not None:  # (imported only then: older trees, measured too, have none)
        from lbtui.balancer.accesslog import AccessLog

        log = AccessLog(cfg.access_log)
        log.open()
        proxy.pipeline.access_log = log
    loop = asyncio.get_running_loop()
    upstream = proxy.upstream
    assert isinstance(upstream, LeanUpstream)
    for b in proxy.backends.values():  # idle keep-alive connections, ready for reuse
        pool = upstream._pool(b.host, b.port)
        for _ in range(CLIENTS):
            conn = connections._Conn(b.name, pool, loop)
            conn.connection_made(_BackendTransport(loop, conn))  # type: ignore[arg-type]
            conn._done = conn._keep_alive = conn._head_in = True
            conn.idle_since = loop.time()
            pool.idle.append(conn)
    listener = FastListener(proxy)
    clients, dones = [], []
    for _ in range(CLIENTS):
        done = loop.create_future()
        c = ClientConnection(listener)
        c.connection_made(_ClientTransport(loop, c, n // CLIENTS, done))  # type: ignore[arg-type]
        clients.append(c)
        dones.append(done)
    t0 = time.process_time()
    for c in clients:
        c.data_received(REQ)
    await asyncio.gather(*dones)
    if log is not None:
        await log.close()  # every entry formatted and written, inside the measured time
        assert log.written >= n // CLIENTS * CLIENTS, log.written
    return (time.process_time() - t0) / (n // CLIENTS * CLIENTS) * 1e6


def measure(n: int, access_log: dict[str, Any] | None = None, limits: bool = False) -> float:
    from lbtui.runtime import run_async

    return min(run_async(run(n, access_log, limits)) for _ in range(5))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--requests", type=int, default=64_000)
    p.add_argument("trees", nargs="*", metavar="LABEL=DIR", help="source trees to compare")
    p.add_argument("--src", action="append", default=[], help="a source tree (labelled by path)")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--limits", action="store_true", help="with a global and a per-client limit")
    args = p.parse_args()
    trees = [_tree(t) for t in args.trees] + [(s, s) for s in args.src]
    if not trees:
        us = measure(args.requests, limits=args.limits)
        print(f"{us:.2f} µs/request (CPU, best of 5, {args.requests} requests)")
        return 0
    got: dict[str, list[float]] = {label: [] for label, _ in trees}
    for r in range(args.rounds):
        for label, src in trees:
            got[label].append(_measure_tree(src, args.requests, args.limits))
            print(f"round {r + 1}: {label} {got[label][-1]:.2f} µs", file=sys.stderr)
    first = statistics.median(got[trees[0][0]])
    width = max(len(label) for label, _ in trees)
    with_limits = ", limits on" if args.limits else ""
    print(
        f"CPU µs per request, {args.rounds} rounds alternating, "
        f"{args.requests} requests each{with_limits}"
    )
    print(f"{'tree':{width}}  {'min':>6}  {'median':>6}  {'× ' + trees[0][0]:>8}  source")
    for label, src in trees:
        xs = got[label]
        med = statistics.median(xs)
        print(f"{label:{width}}  {min(xs):6.2f}  {med:6.2f}  {med / first:8.3f}  {src}")
    return 0


def _tree(text: str) -> tuple[str, str]:
    label, eq, src = text.partition("=")
    if not eq or not label or not src:
        raise SystemExit(f"expected LABEL=DIR, got {text!r}")
    return label, src


def _measure_tree(src: str, requests: int, limits: bool) -> float:
    """One best-of-5 figure for the tree at ``src``, in a process of its own."""
    code = (
        f"import sys; sys.path.insert(0, {src!r}); sys.path.insert(1, {sys.path[0]!r}); "
        f"import inproc, json; print(json.dumps(inproc.measure({requests}, limits={limits})))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    return float(json.loads(out))


if __name__ == "__main__":
    raise SystemExit(main())
