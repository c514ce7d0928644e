"""Fuzzing the data plane with raw request bytes (issue #19): a real balancer and a real backend
on 127.0.0.1, each case sent on its own socket. Every answer is a valid status line or a clean
close; nothing is logged as an error (no traceback); after each case no request is in flight
and no client connection is left; after all of them the process holds no more fds than before.

Cases mix well-formed heads with hostile framing (Content-Length / Transfer-Encoding conflicts,
bad chunk sizes, bodies cut short, CR/LF/NUL in names, values and targets, odd versions and
methods, absolute-form targets, duplicate Host) and plain random bytes; most end with a
half-close, the rest are left open to meet the client timeouts (set short here). Bounded: 200
cases, a few seconds, the same ones on every run (``FUZZ_EXAMPLES=N`` explores N new ones)."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lbtui import config as config_mod
from lbtui.balancer.server import BalancerServer
from tests.integration.hardening import open_fds

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "200"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,  # each case is bounded by its own socket timeouts instead
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    derandomize="FUZZ_EXAMPLES" not in os.environ,
)
STATUS_LINE = re.compile(rb"HTTP/1\.[01] [1-5]\d\d [^\r\n]*\r\n")


class Errors(logging.Handler):
    """Every record at ERROR or above from lbtui or asyncio (a traceback is one)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.name.startswith(("lbtui", "asyncio")):
            self.records.append(record)


class Rig:
    """A backend and the balancer on their own loop in a thread (hypothesis tests are sync)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.lb: BalancerServer | None = None
        self.runner: web.AppRunner | None = None
        self.errors = Errors()
        self.loop_errors: list[dict[str, Any]] = []

    async def _backend(self, request: web.Request) -> web.Response:
        body = await request.read()
        return web.Response(body=b"ok %d" % len(body), content_type="text/plain")

    async def start(self) -> None:
        self.loop.set_exception_handler(lambda _loop, ctx: self.loop_errors.append(ctx))
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._backend)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        cfg = config_mod.from_dict(
            {
                "listener": {"address": "127.0.0.1:0"},
                "proxy": {
                    "client_header_timeout_s": 0.3,
                    "client_body_timeout_s": 0.3,
                    "max_body_bytes": 100_000,
                },
                "limits": {"max_in_flight": 20},
                "routes": [{"path_prefix": "/a", "backends": ["b1"]}, {"backends": ["b1"]}],
                "backends": [{"name": "b1", "url": f"http://127.0.0.1:{port}"}],
            },
            "fuzz",
        )
        self.lb = BalancerServer(cfg)
        await self.lb.start()
        fast = self.lb._fast
        assert fast is not None
        # Keep-alive (75 s in serve) short too, so that a case left open ends in a moment.
        fast.keepalive_timeout_s = fast.tick_s = 0.3

    async def stop(self) -> None:
        if self.lb is not None:
            await self.lb.stop()
        if self.runner is not None:
            await self.runner.cleanup()

    def quiet(self) -> bool:
        lb = self.lb
        assert lb is not None
        assert lb._fast is not None
        return lb.proxy.record.in_flight == 0 and not lb._fast.connections


@pytest.fixture(scope="module")
def rig() -> Iterator[Rig]:
    rig = Rig()
    logging.getLogger().addHandler(rig.errors)
    thread = threading.Thread(target=rig.loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(rig.start(), rig.loop).result(30)
    try:
        yield rig
    finally:
        asyncio.run_coroutine_threadsafe(rig.stop(), rig.loop).result(30)
        rig.loop.call_soon_threadsafe(rig.loop.stop)
        thread.join(10)
        rig.loop.close()
        logging.getLogger().removeHandler(rig.errors)


# -- the cases -------------------------------------------------------------------------------------

nasty = st.sampled_from(["", " ", "\t", "\r", "\n", "\x00", "\r\n", ":", ",", "\x7f", "é"])
token = st.text(alphabet="abcxyzABC-_0123456789", min_size=1, max_size=12)
methods = st.sampled_from(
    ["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "CONNECT", "TRACE", "BREW", "get"]
)
targets = st.one_of(
    st.sampled_from(["/", "/a", "/a/../b", "/a/%2e%2e/x", "*", "http://h.example/p?q", "//x"]),
    st.builds(lambda a, b: "/" + a + b, token, nasty),
    st.text(max_size=20),
)
versions = st.sampled_from(
    ["HTTP/1.1", "HTTP/1.0", "HTTP/0.9", "HTTP/2.0", "HTTP/1.2", "", "HTTP/"]
)
plain_headers = st.tuples(
    st.sampled_from(["Host", "X-A", "Connection", "Expect", "Upgrade", "Via", "X-Forwarded-For"]),
    st.sampled_from(["lb", "close", "keep-alive", "100-continue", "websocket", "1.1 x", "a, b"]),
)
odd_headers = st.tuples(st.builds(str.__add__, token, nasty), st.builds(str.__add__, nasty, token))


@st.composite
def framing(draw: st.DrawFn) -> tuple[list[tuple[str, str]], bytes]:
    """Body headers and body bytes: honest, lying or broken."""
    body = draw(st.binary(max_size=300))
    kind = draw(st.sampled_from(["none", "length", "lying", "chunked", "bad-chunk", "both"]))
    if kind == "none":
        return [], b""
    if kind == "length":
        return [("Content-Length", str(len(body)))], body
    if kind == "lying":
        n = draw(st.sampled_from(["-1", "abc", "1e3", str(len(body) + 50), "999999999999999999"]))
        return [("Content-Length", n)], body
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in [body[:100], body[100:]] if c)
    chunked = chunks + b"0\r\n\r\n"
    if kind == "chunked":
        return [("Transfer-Encoding", "chunked")], chunked
    if kind == "bad-chunk":
        junk = draw(st.sampled_from([b"zz\r\n", b"5\r\nab", b"-1\r\n", b"5\nhello\n", b"\x00"]))
        return [("Transfer-Encoding", "chunked")], chunks + junk
    return [("Transfer-Encoding", "chunked"), ("Content-Length", "5")], chunked


@st.composite
def requests(draw: st.DrawFn) -> bytes:
    if draw(st.integers(0, 9)) == 0:
        return draw(st.binary(min_size=1, max_size=400))  # anything at all
    headers = draw(st.lists(plain_headers | odd_headers, max_size=5))
    if draw(st.booleans()):
        headers.insert(0, ("Host", "lb"))
    body_headers, body = draw(framing())
    head = f"{draw(methods)} {draw(targets)} {draw(versions)}\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in headers + body_headers) + "\r\n"
    raw = head.encode("utf-8", "surrogateescape") + body
    if draw(st.integers(0, 4)) == 0:
        raw = raw[: draw(st.integers(0, len(raw)))]  # cut anywhere
    return raw * draw(st.sampled_from([1, 1, 1, 2]))  # sometimes pipelined twice


def _send(port: int, raw: bytes, half_close: bool) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=3) as s:
        try:
            s.sendall(raw)
            if half_close:
                s.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # refused mid-send (the listener closed): what came back still counts
        out = b""
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            try:
                chunk = s.recv(65536)
            except TimeoutError:
                break
            except OSError:
                break  # reset: a clean enough close
            if not chunk:
                break
            out += chunk
        return out


def _wait(cond: Any, what: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, what
        time.sleep(0.01)


@FUZZ
@given(raw=requests(), half_close=st.sampled_from([True] * 7 + [False]))
def test_raw_requests(rig: Rig, raw: bytes, half_close: bool) -> None:
    assert rig.lb is not None
    got = _send(rig.lb.port, raw, half_close)
    if got:
        assert STATUS_LINE.match(got), (raw[:200], got[:200])
    _wait(rig.quiet, f"a request in flight or a connection left after {raw[:200]!r}")
    assert not rig.errors.records, [r.getMessage() for r in rig.errors.records]
    assert not rig.loop_errors, rig.loop_errors


BAD_CHUNK = b"POST / HTTP/1.1\r\nHost: lb\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"


def test_no_fd_leaked_after_fuzzing(rig: Rig) -> None:
    """Runs after the fuzz test (file order): fds settle back near where a fresh rig is."""
    assert rig.lb is not None
    before = open_fds()
    for _ in range(50):
        _send(rig.lb.port, BAD_CHUNK, True)
    _wait(rig.quiet, "quiet after malformed bodies")
    _wait(lambda: open_fds() <= before + 4, f"fds back near {before}")
