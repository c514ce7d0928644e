"""The access log: one line per request, written off the request path (``[access_log]``).

What a request costs the log is a tuple appended to a list (:meth:`AccessLog.add`): no
formatting, no clock read, no system call. A timer on the event loop (every ``flush_ms``), or
the list reaching ``buffer_entries``, hands the list to a writer thread, which formats it (JSON
or the combined format) and writes it with one ``os.write`` per batch to a file opened with
``O_APPEND`` — so the worker processes of one balancer can share the file without tearing
lines — and reopens the file when asked (SIGUSR1, after logrotate moved it, as nginx does).
Timestamps are the monotonic end of the request turned into wall-clock time with one offset
taken at start, and the ISO second is formatted once a second, as nginx caches its time.

Fields (JSON keys): ``time``, ``client``, ``method``, ``path``, ``status``, ``bytes_in``,
``bytes_out``, ``duration_ms``, ``upstream``, ``upstream_addr``, ``upstream_ms`` (the last
attempt's, until its answer was read or streamed), ``retries``, ``flags`` (Envoy-style
response flags, ``answers.Flag``), ``route`` (its name), ``listener`` (its name),
``request_id``.

Request ids (:class:`RequestIds`): a request without ``X-Request-Id`` gets one, a random
per-process prefix and a counter (unique across processes and restarts without a ``uuid4``
per request: ``3f9a1c2e-000000000000001a``), and the backend receives it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import queue
import threading
import time
from json.encoder import encode_basestring
from pathlib import Path
from typing import Final

from lbtui.balancer.connections import HeadBlock
from lbtui.balancer.exchange import Answer, ClientRequest
from lbtui.balancer.job import Job
from lbtui.balancer.pool import Backend
from lbtui.config import AccessLogConfig
from lbtui.errors import ConfigError

log = logging.getLogger("lbtui.accesslog")

Entry = tuple[
    float,  # 0 the request's end (monotonic seconds)
    str,  # 1 client address
    str,  # 2 method
    str,  # 3 path (raw, with the query)
    int,  # 4 status (0: the client went away first)
    int,  # 5 bytes in (request body)
    int,  # 6 bytes out (response body)
    float,  # 7 duration (seconds)
    Backend | None,  # 8 the backend of the last attempt
    float,  # 9 upstream time (seconds; below 0: none)
    int,  # 10 retries
    str | None,  # 11 response flag
    str | None,  # 12 route (its name)
    str | None,  # 13 request id
    str,  # 14 the listener's name
    str | None,  # 15 Referer (combined format only)
    str | None,  # 16 User-Agent (combined format only)
]
"""One request, as the pipeline hands it over: formatted later, in the writer thread."""

_MONTHS: Final = (
    "Jan",
    "Feb",
    "Mar",
    "Apr",
    "May",
    "Jun",
    "Jul",
    "Aug",
    "Sep",
    "Oct",
    "Nov",
    "Dec",
)
_REOPEN: Final = "reopen"
_STOP: Final = "stop"


class RequestIds:
    """``X-Request-Id`` values: a random per-process prefix and a counter."""

    def __init__(self) -> None:
        self.prefix = os.urandom(4).hex() + "-"
        self.n = 0

    def next(self) -> str:
        # decimal: ``str`` of an int is native code compiled, a ``:016x`` format spec is not
        # (440 ns a request, 6 % of what the whole request path costs)
        self.n += 1
        return self.prefix + str(self.n)


def with_request_id(
    client: ClientRequest, headers: HeadBlock | list[tuple[str, str]], ids: RequestIds
) -> tuple[HeadBlock | list[tuple[str, str]], str]:
    """The backend's request headers and the request id: the client's ``X-Request-Id`` (in
    the headers already), or a new one added to them."""
    rid = client.request_id
    if rid is not None:
        return headers, rid
    rid = ids.next()
    if type(headers) is HeadBlock:
        raw = rid.encode()
        pairs = headers.pairs
        if pairs is not None:
            pairs = [*pairs, (b"X-Request-Id", raw)]
        block = headers.block + b"X-Request-Id: " + raw + b"\r\n"
        return HeadBlock(block, headers.has_host, headers.has_length, pairs), rid
    assert type(headers) is list
    headers.append(("X-Request-Id", rid))
    return headers, rid


def job_entry(log: AccessLog, job: Job, status: int, flag: str | None, now: float) -> Entry:
    """A routed request's entry (every field read as it is: formatting waits for the thread)."""
    client = job.client
    body = job.body
    tried = job.tried
    referer = agent = None
    if log.combined:
        h = client.headers
        referer, agent = h.get("Referer"), h.get("User-Agent")
    return (
        now, client.remote, job.method, job.raw_path, status,
        len(body) if type(body) is bytes else client.content_length or 0,
        job.sent, now - job.t_start, tried[-1] if tried else None, job.upstream_s,
        len(tried) - 1 if tried else 0, flag, job.route, job.request_id, client.listener,
        referer, agent,
    )  # fmt: skip


def bare_entry(
    log: AccessLog,
    client: ClientRequest,
    answer: Answer,
    flag: str | None,
    t_start: float | None,
    now: float,
) -> Entry:
    """The entry of a request answered without a backend being picked: a 429, a route's
    redirect or fixed answer, a defect's 500."""
    referer = agent = None
    if log.combined:
        h = client.headers
        referer, agent = h.get("Referer"), h.get("User-Agent")
    return (
        now, client.remote, client.method, client.raw_path, answer.status,
        client.content_length or 0, len(answer.body),
        now - t_start if t_start is not None else 0.0, None, -1.0, 0, flag, None,
        client.request_id, client.listener, referer, agent,
    )  # fmt: skip


def _q(value: str | None) -> str:
    return "null" if value is None else encode_basestring(value)


def _field(value: str | None) -> str:
    """A combined-format quoted field: ``"-"`` when absent, quotes and controls escaped."""
    if value is None:
        return '"-"'
    return '"' + value.encode("unicode_escape").decode("ascii").replace('"', '\\"') + '"'


def _pad3(n: int) -> str:
    """``n`` (0–999) in three digits. Format specs (``:03d``, ``:.3f``) cost four times as much
    as ``str`` and a concatenation once compiled: these run per line."""
    return ("00" if n < 10 else "0" if n < 100 else "") + str(n)


def _thousandths(x: float) -> str:
    """``x`` with three decimals (``0.123``), truncated (no rounding: a log, not a bill)."""
    n = int(x * 1000)
    return str(n // 1000) + "." + _pad3(n % 1000)


CACHE_MAX: Final = 4096
"""Texts kept per kind (clients, methods, routes, backends) before the cache starts over."""


class Formatter:
    """Entries to lines, in the writer thread. What repeats from request to request (the
    second, a client's address, the backend's name and address, the method, the route) is
    formatted once and kept; the rest is one f-string a line."""

    def __init__(self, offset: float, combined: bool) -> None:
        self.offset = offset
        """Wall-clock minus monotonic time, taken once."""
        self.combined = combined
        self.second = -1
        self.stamp = ""
        """The current second, ISO 8601 (JSON) or the combined format's."""
        self.texts: dict[str | None, str] = {}
        """Quoted JSON strings (or ``null``) of clients, methods, routes, flags, listeners."""
        self.upstreams: dict[Backend | None, str] = {}
        """A backend's ``"name","upstream_addr":"host:port"`` (both ``null`` for none)."""

    def _text(self, key: str | None, text: str) -> str:
        if len(self.texts) >= CACHE_MAX:
            self.texts.clear()
        self.texts[key] = text
        return text

    def _stamp(self, second: int) -> None:
        t = time.gmtime(second)
        self.second = second
        if self.combined:
            self.stamp = (
                f"{t.tm_mday:02d}/{_MONTHS[t.tm_mon - 1]}/{t.tm_year:04d}:"
                f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} +0000"
            )
        else:
            self.stamp = (
                f"{t.tm_year:04d}-{t.tm_mon:02d}-{t.tm_mday:02d}T"
                f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d}"
            )

    def lines(self, batch: list[Entry]) -> str:
        fmt = self.combined_line if self.combined else self.json_line
        return "".join([fmt(e) for e in batch])

    def json_line(self, e: Entry) -> str:
        wall = e[0] + self.offset
        second = int(wall)
        if second != self.second:
            self._stamp(second)
        texts = self.texts
        b = e[8]
        up = self.upstreams.get(b)
        if up is None:
            if len(self.upstreams) >= CACHE_MAX:
                self.upstreams.clear()
            up = self.upstreams[b] = (
                'null,"upstream_addr":null'
                if b is None
                else f'{encode_basestring(b.name)},"upstream_addr":"{b.host}:{b.port}"'
            )
        client = texts.get(e[1]) or self._text(e[1], encode_basestring(e[1]))
        method = texts.get(e[2]) or self._text(e[2], encode_basestring(e[2]))
        route = texts.get(e[12]) or self._text(e[12], _q(e[12]))
        flags = texts.get(e[11]) or self._text(e[11], _q(e[11]))
        listener = texts.get(e[14]) or self._text(e[14], encode_basestring(e[14]))
        up_s = e[9]
        up_ms = _thousandths(up_s * 1e3) if up_s >= 0 else "null"
        return (
            f'{{"time":"{self.stamp}.{_pad3(int((wall - second) * 1000))}Z","client":{client},'
            f'"method":{method},"path":{encode_basestring(e[3])},"status":{e[4]},'
            f'"bytes_in":{e[5]},"bytes_out":{e[6]},"duration_ms":{_thousandths(e[7] * 1e3)},'
            f'"upstream":{up},"upstream_ms":{up_ms},"retries":{e[10]},"flags":{flags},'
            f'"route":{route},"listener":{listener},"request_id":{_q(e[13])}}}\n'
        )

    def combined_line(self, e: Entry) -> str:
        wall = e[0] + self.offset
        second = int(wall)
        if second != self.second:
            self._stamp(second)
        b = e[8]
        name, addr = (b.name, f"{b.host}:{b.port}") if b is not None else ("-", "-")
        up_s = _thousandths(e[9]) if e[9] >= 0 else "-"
        return (
            f"{e[1] or '-'} - - [{self.stamp}] {_field(f'{e[2]} {e[3]} HTTP/1.1')} {e[4]} {e[6]} "
            f"{_field(e[15])} {_field(e[16])} rt={_thousandths(e[7])} upstream={name} "
            f"upstream_addr={addr} upstream_time={up_s} retries={e[10]} flags={e[11] or '-'} "
            f"route={e[12] or '-'} listener={e[14]} request_id={e[13] or '-'} "
            f"bytes_in={e[5]}\n"
        )


class AccessLog:
    """The log of one balancer process: entries in, lines out in a thread of its own."""

    def __init__(
        self,
        config: AccessLogConfig,
        *,
        base: Path | None = None,
        wall_offset: float | None = None,
    ) -> None:
        self.config = config
        self.combined = config.format == "combined"
        """Whether entries carry Referer and User-Agent (read only for this format)."""
        self.path: Path | None = None
        if config.path != "-":
            p = Path(config.path)
            self.path = base / p if base is not None and not p.is_absolute() else p
        self.entries: list[Entry] = []
        self.cap = config.buffer_entries
        self.flush_s = config.flush_ms / 1e3
        self.offset = time.time() - time.monotonic() if wall_offset is None else wall_offset
        self._queue: queue.SimpleQueue[list[Entry] | str] = queue.SimpleQueue()
        self._writer: threading.Thread | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._fd = -1
        self.written = 0
        """Lines written so far (the writer thread's count)."""

    # -- the request path ----------------------------------------------------------------------

    def add(self, entry: Entry) -> None:
        entries = self.entries
        entries.append(entry)
        if len(entries) >= self.cap:
            self.flush()

    # -- around it -----------------------------------------------------------------------------

    def open(self) -> None:
        """Open the file (a clear error naming it if that fails) and start the writer."""
        self._fd = self._open_fd()
        self._writer = threading.Thread(target=self._write_forever, name="lbtui-access-log")
        self._writer.daemon = True
        self._writer.start()
        self._arm()

    def _open_fd(self) -> int:
        if self.path is None:
            return 1
        try:
            return os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise ConfigError(
                "[access_log]", [f"path: cannot open {str(self.path)!r}: {exc.strerror or exc}"]
            ) from None

    def _arm(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self._timer = loop.call_later(self.flush_s, self._tick)

    def _tick(self) -> None:
        self.flush()
        self._arm()

    def flush(self) -> None:
        """Hand the waiting entries to the writer."""
        if self.entries:
            batch = self.entries
            self.entries = []
            self._queue.put(batch)

    def reopen(self) -> None:
        """Reopen the file by its name (SIGUSR1): logrotate has moved the old one."""
        self._queue.put(_REOPEN)

    async def close(self) -> None:
        """Write what waits, stop the writer, close the file."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.flush()
        thread = self._writer
        if thread is None:
            return
        self._queue.put(_STOP)
        await asyncio.get_running_loop().run_in_executor(None, thread.join, 10.0)
        self._writer = None

    # -- the writer thread ---------------------------------------------------------------------

    def _write_forever(self) -> None:
        formatter = Formatter(self.offset, self.combined)
        while True:
            item = self._queue.get()
            if isinstance(item, str):
                if item == _STOP:
                    break
                self._reopen_fd()
                continue
            try:
                data = formatter.lines(item).encode("utf-8", "replace")
                self._write(data)
                self.written += len(item)
            except Exception:  # a log that cannot be written must not stop the next batches
                log.exception("access log: writing %d entries failed", len(item))
        if self._fd > 2:
            os.close(self._fd)
        self._fd = -1

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            n = os.write(self._fd, view)
            view = view[n:]

    def _reopen_fd(self) -> None:
        if self.path is None:
            return
        try:
            fd = self._open_fd()
        except ConfigError as exc:
            log.warning("access log: cannot reopen: %s", exc)
            return
        old, self._fd = self._fd, fd
        if old > 2:
            os.close(old)
