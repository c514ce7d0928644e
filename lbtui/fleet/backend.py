"""One demo backend: a small aiohttp app run as its own OS process, with fault knobs.

Run as ``python -m lbtui.fleet.backend --name api-1 --port 0 [--latency-ms 5 ...]``. Once it
listens it prints one line of JSON to stdout and flushes it —
``{"ready": true, "name": "api-1", "host": "127.0.0.1", "port": 41233, "pid": 1234}`` — so a
supervisor knows it is up and which port the kernel chose. The socket has ``SO_REUSEADDR``, so
a restart binds the same port at once.

Traffic (any method, any path outside ``/_fleet/``): the request body is streamed and counted,
never buffered; the answer comes after ``latency_ms ± jitter_ms`` (uniform, never negative)
with a JSON body of exactly ``size`` bytes naming the backend, method and path (padded; when
``size`` is smaller than that document, its first ``size`` bytes), and ``X-Backend: <name>``.
With probability ``error_rate`` the answer is ``error_status`` instead. ``?size=N`` overrides the
body size for one request; large bodies are written in chunks, in constant memory.

The fleet's own endpoints (never delayed, never failed, not counted as traffic):

- ``GET /_fleet/control`` → the knobs; ``POST /_fleet/control`` with a JSON object holding any
  subset of ``latency_ms, jitter_ms, error_rate, error_status, size, hang`` changes them at once
  and answers the new knobs (400 with ``problems`` when a value is wrong). ``hang: true`` makes
  the backend accept requests and hold them unanswered; ``hang: false`` releases the held ones.
- ``GET /_fleet/health`` → 200 ``ok``; 503 ``hang`` while hanging, 503 ``failing`` while
  ``error_rate`` is 1 — so an active health check sees what clients would.
- ``GET /_fleet/stats`` → JSON counts: requests by method and status, bytes in and out, and the
  ``X-Request-Id`` bookkeeping: distinct ids seen, ids seen more than once (a retry that
  re-sent a request), requests without an id.

SIGTERM or SIGINT: stop accepting, answer held requests 503, give the others up to 1 s, exit.
With ``--parent-pid`` (the supervisor passes its own) the process asks Linux to SIGKILL it when
its parent dies (``PR_SET_PDEATHSIG``), so a backend never outlives a killed supervisor.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import functools
import json
import os
import random
import signal
import socket
import sys
import time
from collections.abc import Sequence
from typing import Any

from aiohttp import web
from pydantic import ValidationError

from lbtui.fleet.spec import (
    Knobs,
    KnobsUpdate,
    describe_validation_error,
    is_loopback_host,
)

CHUNK = 64 * 1024
"""Write large bodies in pieces of this size (constant memory)."""
CACHED_BODY_MAX = 64 * 1024
"""Bodies up to this size are built once per (method, path, size) and reused."""
MAX_SIZE_OVERRIDE = 1 << 36
"""``?size=N`` accepts up to 64 GiB: streamed, so memory does not grow with it."""
MAX_TRACKED_IDS = 1_000_000
"""Distinct X-Request-Id values remembered; past that, new ids are no longer tracked."""
_PAD = b"." * CHUNK


def body_layout(name: str, method: str, path: str, size: int) -> tuple[bytes, int, bytes]:
    """A body of exactly ``size`` bytes as ``(head, pad_len, tail)``: ``head + "." * pad + tail``.

    The document is ASCII JSON (``json.dumps`` escapes the rest), so characters are bytes.
    """
    doc = json.dumps({"backend": name, "method": method, "path": path, "size": size})
    head = doc[:-1] + ', "pad": "'
    tail = '"}'
    fixed = len(head) + len(tail)
    if size >= fixed:
        return head.encode(), size - fixed, tail.encode()
    return (head + tail).encode()[:size], 0, b""


@functools.lru_cache(maxsize=512)
def small_body(name: str, method: str, path: str, size: int) -> bytes:
    head, pad, tail = body_layout(name, method, path, size)
    return head + b"." * pad + tail


class Stats:
    """Traffic counters; only the event loop touches them."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.requests_total = 0
        self.by_method: dict[str, int] = {}
        self.by_status: dict[int, int] = {}
        self.bytes_in = 0
        self.bytes_out = 0
        self.in_flight = 0
        self.held = 0
        self.ids_seen: set[str] = set()
        self.ids_repeated: set[str] = set()
        self.without_id = 0
        self.ids_capped = False

    def see_id(self, rid: str | None) -> None:
        if rid is None:
            self.without_id += 1
        elif rid in self.ids_seen:
            self.ids_repeated.add(rid)
        elif len(self.ids_seen) < MAX_TRACKED_IDS:
            self.ids_seen.add(rid)
        else:
            self.ids_capped = True

    def as_json(self, name: str) -> dict[str, Any]:
        return {
            "name": name,
            "pid": os.getpid(),
            "uptime_s": round(time.monotonic() - self.started, 3),
            "requests_total": self.requests_total,
            "by_method": dict(self.by_method),
            "by_status": {str(k): v for k, v in sorted(self.by_status.items())},
            "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out,
            "in_flight": self.in_flight,
            "held": self.held,
            "request_ids_distinct": len(self.ids_seen),
            "request_ids_repeated": len(self.ids_repeated),
            "requests_without_id": self.without_id,
            "request_ids_capped": self.ids_capped,
        }


class DemoBackend:
    """The app's state: name, knobs, counters, and the gate that holds requests while hanging."""

    def __init__(self, name: str, knobs: Knobs, rng: random.Random | None = None) -> None:
        self.name = name
        self.knobs = knobs
        self.stats = Stats()
        self._rng = rng or random.Random()
        self._released = asyncio.Event()
        self._closing = False
        self._apply_hang()
        self._headers = {"X-Backend": name}

    def close(self) -> None:
        """Shutting down: held requests are released and answered 503 at once."""
        self._closing = True
        self._released.set()

    def _apply_hang(self) -> None:
        if self.knobs.hang and not self._closing:
            self._released.clear()
        else:
            self._released.set()

    def app(self) -> web.Application:
        app = web.Application(client_max_size=1 << 20)
        app.router.add_get("/_fleet/control", self._get_control)
        app.router.add_post("/_fleet/control", self._post_control)
        app.router.add_get("/_fleet/health", self._health)
        app.router.add_get("/_fleet/stats", self._stats)
        app.router.add_route("*", "/{tail:.*}", self._serve)
        return app

    # --- the fleet's own endpoints

    async def _get_control(self, request: web.Request) -> web.Response:
        return web.json_response(self.knobs.model_dump(), headers=self._headers)

    async def _post_control(self, request: web.Request) -> web.Response:
        try:
            raw = await request.json()
        except ValueError as exc:
            return self._bad_request([f"body is not JSON: {exc}"])
        if not isinstance(raw, dict):
            return self._bad_request(["body: expected a JSON object of knobs"])
        try:
            update = KnobsUpdate.model_validate(raw)
        except ValidationError as exc:
            return self._bad_request(describe_validation_error(exc))
        self.knobs = update.apply(self.knobs)
        self._apply_hang()
        return web.json_response(self.knobs.model_dump(), headers=self._headers)

    def _bad_request(self, problems: list[str]) -> web.Response:
        return web.json_response(
            {"error": "bad knobs", "problems": problems}, status=400, headers=self._headers
        )

    async def _health(self, request: web.Request) -> web.Response:
        if self.knobs.hang:
            return web.Response(status=503, text="hang", headers=self._headers)
        if self.knobs.error_rate >= 1.0:
            return web.Response(status=503, text="failing", headers=self._headers)
        return web.Response(text="ok", headers=self._headers)

    async def _stats(self, request: web.Request) -> web.Response:
        return web.json_response(self.stats.as_json(self.name), headers=self._headers)

    # --- traffic

    async def _serve(self, request: web.Request) -> web.StreamResponse:
        st = self.stats
        method = request.method
        st.requests_total += 1
        st.by_method[method] = st.by_method.get(method, 0) + 1
        st.see_id(request.headers.get("X-Request-Id"))
        st.in_flight += 1
        try:
            size_override = _size_param(request)
            if request.body_exists:
                async for chunk in request.content.iter_any():
                    st.bytes_in += len(chunk)
            if not self._released.is_set():
                st.held += 1
                try:
                    await self._released.wait()
                finally:
                    st.held -= 1
                if self._closing:
                    return self._error(503, method)
            knobs = self.knobs
            delay = knobs.latency_ms
            if knobs.jitter_ms:
                delay += self._rng.uniform(-knobs.jitter_ms, knobs.jitter_ms)
            if delay > 0:
                await asyncio.sleep(delay / 1000.0)
            if knobs.error_rate and self._rng.random() < knobs.error_rate:
                return self._error(knobs.error_status, method)
            size = knobs.size if size_override is None else size_override
            return await self._answer(request, method, size)
        finally:
            st.in_flight -= 1

    def _error(self, status: int, method: str) -> web.Response:
        body = json.dumps({"backend": self.name, "error": status, "injected": True}).encode()
        self._count(status, len(body))
        return web.Response(
            status=status, body=body, content_type="application/json", headers=self._headers
        )

    async def _answer(self, request: web.Request, method: str, size: int) -> web.StreamResponse:
        self._count(200, size)
        if size <= CACHED_BODY_MAX:
            body = small_body(self.name, method, request.path, size)
            return web.Response(body=body, content_type="application/json", headers=self._headers)
        head, pad, tail = body_layout(self.name, method, request.path, size)
        resp = web.StreamResponse(headers=self._headers)
        resp.content_type = "application/json"
        resp.content_length = size
        await resp.prepare(request)
        if method == "HEAD":
            await resp.write_eof()
            return resp
        try:
            await resp.write(head)
            while pad > 0:  # bounded: pad // CHUNK + 1 writes
                n = min(pad, CHUNK)
                await resp.write(_PAD[:n] if n < CHUNK else _PAD)
                pad -= n
            await resp.write(tail)
            await resp.write_eof()
        except ConnectionResetError:  # the client went away mid-body: nothing more to do
            pass
        return resp

    def _count(self, status: int, nbytes: int) -> None:
        st = self.stats
        st.by_status[status] = st.by_status.get(status, 0) + 1
        st.bytes_out += nbytes


def _size_param(request: web.Request) -> int | None:
    raw = request.query.get("size")
    if raw is None:
        return None
    if not raw.isdigit() or int(raw) > MAX_SIZE_OVERRIDE:
        raise web.HTTPBadRequest(text=f"size: expected an integer from 0 to {MAX_SIZE_OVERRIDE}")
    return int(raw)


# --- the process ------------------------------------------------------------------------------


def die_with_parent(parent_pid: int) -> None:
    """Ask Linux to SIGKILL this process when its parent dies; exit now if it already has."""
    if sys.platform != "linux":
        return
    pr_set_pdeathsig = 1
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(pr_set_pdeathsig, int(signal.SIGKILL), 0, 0, 0)
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket with SO_REUSEADDR (so a restart gets the same port at once)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(1024)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


async def serve(name: str, host: str, port: int, knobs: Knobs) -> int:
    try:
        sock = bind_socket(host, port)
    except OSError as exc:
        print(f"{name}: cannot listen on {host}:{port}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    backend = DemoBackend(name, knobs)
    # on SIGTERM: stop accepting, give in-flight answers up to 1 s, then cancel the rest
    runner = web.AppRunner(
        backend.app(), access_log=None, handler_cancellation=True, shutdown_timeout=1.0
    )
    await runner.setup()
    site = web.SockSite(runner, sock)
    await site.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    bound = sock.getsockname()[1]
    ready = {"ready": True, "name": name, "host": host, "port": bound, "pid": os.getpid()}
    sys.stdout.write(json.dumps(ready) + "\n")
    sys.stdout.flush()
    try:
        await stop.wait()
    finally:
        backend.close()
        await runner.cleanup()
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m lbtui.fleet.backend", description=__doc__)
    p.add_argument("--name", required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--latency-ms", type=float, default=5.0)
    p.add_argument("--jitter-ms", type=float, default=0.0)
    p.add_argument("--error-rate", type=float, default=0.0)
    p.add_argument("--error-status", type=int, default=500)
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--parent-pid", type=int, default=None, help="die when this parent dies")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.parent_pid is not None:
        die_with_parent(args.parent_pid)
    if not is_loopback_host(args.host):
        print(f"--host: expected a loopback address, got {args.host!r}", file=sys.stderr)
        return 2
    try:
        knobs = Knobs(
            latency_ms=args.latency_ms,
            jitter_ms=args.jitter_ms,
            error_rate=args.error_rate,
            error_status=args.error_status,
            size=args.size,
        )
    except ValidationError as exc:
        for problem in describe_validation_error(exc):
            print(problem, file=sys.stderr)
        return 2
    coro = serve(args.name, args.host.strip("[]"), args.port, knobs)
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


if __name__ == "__main__":
    raise SystemExit(main())
