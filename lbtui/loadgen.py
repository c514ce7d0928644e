"""Open-loop load at a constant arrival rate, measured without coordinated omission.

Request *i* is intended at ``t0 + i / rate`` and goes out then, whether or not earlier ones
have come back (wrk2, vegeta, oha's ``-q``): a slow server cannot slow the load down and so hide
its own slowness. Its latency is counted from that intended time (*corrected*), and also from
the moment it was actually sent (*raw*, what a closed-loop tool would report; oha#211 asks for
both). A request waits before it is sent only when all ``connections`` are busy (the
concurrency ceiling); such waits are counted (``late_starts``: started more than
``LATE_START_S`` after the intended time; ``ceiling_hits``: due while every connection was
busy) and show up as the gap between corrected and raw latency.

Timing precision: asyncio's epoll wait rounds its timeout up to whole milliseconds, so on an
idle loop a request starts 0–1 ms (uniformly) after its intended time; that slop is part of the
corrected latency, as in wrk2. ``LATE_START_S`` is therefore 2 ms, not 1: at 1 ms, 10–25 % of
requests counted as late with no ceiling in sight (measured at 200/s, 64 connections, on a
2-core machine).

Shape: one timer callback (the dispatcher) fires at each intended time (or at once when
:meth:`set_rate` or :meth:`stop` re-plans), puts every request now due on a queue with its
intended time, and sets the timer for the next one;
``connections`` worker coroutines take them off, one request at a time each, over one aiohttp
session whose connector holds the same number of keep-alive connections. No task per request;
memory stays bounded (at most ``MAX_BACKLOG`` queued requests; past that a due request is not
queued but counted as ``unsent``).

Traffic goes to loopback only (127.0.0.0/8, ``localhost``, ``::1``): anything else is refused.
Figures use :mod:`lbtui.core.window` (log-bucketed histograms: quantiles within ±2.2 %).
Latency is of requests that got an HTTP answer (any status); failures are counted by kind.
"""

from __future__ import annotations

import asyncio
import bisect
import gc
import itertools
import os
import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import aiohttp
from yarl import URL

from lbtui.core.window import LatencyHistogram, RollingCounter, RollingHistogram
from lbtui.errors import UsageError
from lbtui.fleet.spec import is_loopback_host

MAX_RATE = 50_000.0
"""Requests per second, at most."""
MAX_DURATION_S = 24 * 3600.0
MAX_CONNECTIONS = 4096
MAX_BACKLOG = 100_000
"""Due requests waiting for a free connection, at most; more are counted as unsent."""
MAX_BATCH = 1000
"""Requests the dispatcher queues in one go before it lets the workers run."""
LATE_START_S = 0.002
"""A request that starts this much after its intended time counts as a late start (twice the
loop's timer granularity, so that only real waits count)."""
ERROR_KINDS = ("connect", "timeout", "other")
STATUS_CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx", "error")


@dataclass(frozen=True)
class RequestSpec:
    """One kind of request in the mix; chosen with probability ``weight / sum(weights)``."""

    method: str = "GET"
    path: str = "/"
    """Path (and query) joined to the target's origin; must start with ``/``."""
    weight: float = 1.0
    body: bytes | None = None


@dataclass(frozen=True)
class LatencySummary:
    """Quantiles in seconds (0.0 when there was no sample); ``max`` is exact."""

    p50: float
    p90: float
    p99: float
    p999: float
    max: float
    count: int

    @classmethod
    def of(cls, hist: LatencyHistogram, max_s: float) -> LatencySummary:
        q = hist.quantile
        return cls(q(0.5), q(0.9), q(0.99), q(0.999), max_s, hist.count)


@dataclass(frozen=True)
class LoadReport:
    """The outcome of one run. ``scheduled = sent + unsent``; ``sent = completed + errors``."""

    url: str
    duration_s: float
    """The run's configured duration."""
    elapsed_s: float
    """From the start to the last answer (or to the end of sending, if later)."""
    offered_rate: float
    """Requests scheduled per second of sending (the time-weighted target rate)."""
    achieved_rate: float
    """Requests answered (any status) per second of ``elapsed_s``."""
    scheduled: int
    sent: int
    completed: int
    """Requests that got an HTTP answer, whatever its status."""
    unsent: int
    """Scheduled but never sent: stopped first, backlog full, or still queued at the end."""
    status_counts: Mapping[int, int]
    errors: Mapping[str, int]
    """Requests without an answer, by kind: connect, timeout, other."""
    error_examples: Mapping[str, str]
    """The first error message seen of each kind."""
    late_starts: int
    ceiling_hits: int
    max_start_delay_s: float
    bytes_in: int
    corrected: LatencySummary
    """Latency from each request's intended send time: what a user of the service saw."""
    raw: LatencySummary
    """Latency from the actual send: hides the waits behind a full concurrency ceiling."""

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["status_counts"] = {str(k): v for k, v in sorted(self.status_counts.items())}
        return d


@dataclass(frozen=True)
class LiveFigures:
    """What a console shows while a run goes on; rates and quantiles over the last
    ``window_s`` seconds (or since the start, if shorter)."""

    elapsed_s: float
    target_rate: float
    achieved_rate: float
    sent: int
    completed: int
    errors: int
    in_flight: int
    backlog: int
    status_rates: Mapping[str, float] = field(default_factory=dict)
    """Answers per second by class (``2xx``, ``5xx``, …, and ``error`` for failures)."""
    p50_s: float = 0.0
    p99_s: float = 0.0
    window_s: float = 0.0


def check_loopback(url: str) -> URL:
    """The parsed URL, if it is http(s) to a loopback host; else :class:`UsageError`."""
    try:
        u = URL(url)
    except (ValueError, TypeError) as exc:
        raise UsageError(f"not a URL: {url!r} ({exc})") from None
    if u.scheme not in ("http", "https") or not u.host:
        raise UsageError(f"expected an http:// URL with a host, got {url!r}")
    if not is_loopback_host(u.host):
        raise UsageError(
            f"refusing to send load to {u.host}: only loopback targets "
            "(127.0.0.0/8, localhost, ::1) are allowed"
        )
    return u


class LoadGenerator:
    """Drive ``rate`` requests per second at ``url`` for ``duration_s`` seconds, open-loop."""

    def __init__(
        self,
        url: str,
        rate: float,
        duration_s: float,
        *,
        connections: int = 64,
        mix: Sequence[RequestSpec] | None = None,
        timeout_s: float = 10.0,
        headers: Mapping[str, str] | None = None,
        request_ids: bool = True,
        rng: random.Random | None = None,
        live_window_s: float = 5.0,
        spread: Sequence[str] = (),
    ) -> None:
        """``spread``: more loopback origins (other replicas of one service); request i goes to
        origin ``i mod (1 + len(spread))``, ``url``'s first, with the same path."""
        target = check_loopback(url)
        _check_rate(rate)
        if not 0 < duration_s <= MAX_DURATION_S:
            raise UsageError(f"duration must be above 0 and at most {MAX_DURATION_S:g} s")
        if not 1 <= connections <= MAX_CONNECTIONS:
            raise UsageError(f"connections must be from 1 to {MAX_CONNECTIONS}")
        if not 0 < timeout_s <= 3600:
            raise UsageError("timeout must be above 0 and at most 1 h")
        if mix is None:
            mix = (RequestSpec("GET", target.raw_path_qs or "/"),)
        if not mix:
            raise UsageError("the request mix is empty")
        for spec in mix:
            if not spec.path.startswith("/"):
                raise UsageError(f"a path must start with '/', got {spec.path!r}")
            if not spec.weight > 0:
                raise UsageError(f"a weight must be above 0, got {spec.weight!r} for {spec.path}")
            if not spec.method.isalpha():
                raise UsageError(f"not an HTTP method: {spec.method!r}")
        self.url = str(target)
        self.duration_s = float(duration_s)
        self.connections = connections
        self.timeout_s = timeout_s
        self._mix = tuple(RequestSpec(s.method.upper(), s.path, s.weight, s.body) for s in mix)
        origins = [target.origin(), *(check_loopback(u).origin() for u in spread)]
        self._by_origin = [
            [URL(str(origin) + s.path, encoded=True) for s in self._mix] for origin in origins
        ]
        self._urls = self._by_origin[0]
        self._cum = list(itertools.accumulate(s.weight for s in self._mix))
        self._rng = rng or random.Random()
        self._headers = dict(headers or {})
        self._run_id = os.urandom(4).hex() if request_ids else None
        self._live_window_s = live_window_s

        self._rate = float(rate)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._t0 = 0.0
        self._end = 0.0
        self._seg_t0 = 0.0
        self._seg_i0 = 0
        self._next_i = 0
        self._timer: asyncio.Handle | None = None
        self._dispatched: asyncio.Future[None] | None = None
        self._stopping = False
        self._accepting = True
        self._started = False
        self._send_end: float | None = None
        self._perf_offset = 0.0
        self._last_done = 0.0
        self._queue: asyncio.Queue[tuple[int, float, int] | None] = asyncio.Queue()

        self._sent = 0
        self._completed = 0
        self._unsent = 0
        self._busy = 0
        self._late = 0
        self._ceiling_hits = 0
        self._max_delay = 0.0
        self._bytes_in = 0
        self._status: dict[int, int] = {}
        self._errors: dict[str, int] = dict.fromkeys(ERROR_KINDS, 0)
        self._error_examples: dict[str, str] = {}
        self._corrected = LatencyHistogram()
        self._raw = LatencyHistogram()
        self._max_corrected = 0.0
        self._max_raw = 0.0
        self._live_done = RollingCounter(live_window_s, 10)
        self._live_classes = {c: RollingCounter(live_window_s, 10) for c in STATUS_CLASSES}
        self._live_latency = RollingHistogram(live_window_s, 10)

    # --- control

    @property
    def rate(self) -> float:
        return self._rate

    def set_rate(self, rate: float) -> None:
        """Change the arrival rate from now on (0 pauses); the next request follows at once."""
        _check_rate(rate)
        if self._loop is not None and self._send_end is None:
            self._seg_t0 = self._loop.time()
            self._seg_i0 = self._next_i
        self._rate = float(rate)
        self._wake()

    def stop(self) -> None:
        """Send nothing more; queued requests are dropped (unsent), in-flight ones finish."""
        self._stopping = True
        self._accepting = False
        self._wake()

    def _wake(self) -> None:
        """Re-plan at once (after a change of rate, or to stop)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._dispatched is not None and not self._dispatched.done():
            self._tick()

    def _intended(self, i: int) -> float:
        if self._rate <= 0:
            return float("inf")
        return self._seg_t0 + (i - self._seg_i0) / self._rate

    # --- the run

    async def run(self) -> LoadReport:
        """Run to the end of the duration (or :meth:`stop`) and return the report."""
        if self._started:
            raise RuntimeError("a LoadGenerator runs once; make a new one")
        self._started = True
        loop = self._loop = asyncio.get_running_loop()
        connector = aiohttp.TCPConnector(limit=self.connections, limit_per_host=0)
        session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=self.timeout_s),
            cookie_jar=aiohttp.DummyCookieJar(),
            auto_decompress=False,
        )
        # What exists before the run lives through it: out of the collector's scans, so that
        # the generator's own pauses, which it would count as the target's latency, stay short
        # (a full collection of an unfrozen bench process took 14 ms mid-run). Undone at the end;
        # no collection first, which would delay the first request (freeze alone is instant).
        gc.freeze()
        self._t0 = self._seg_t0 = loop.time()
        # Latencies are timed with perf_counter: uvloop's loop.time() moves in whole
        # milliseconds, which would round every latency of a fast backend. Intended send
        # times live on the loop's clock; this offset carries them over.
        self._perf_offset = time.perf_counter() - loop.time()
        self._end = self._t0 + self.duration_s
        workers = [asyncio.create_task(self._worker(session)) for _ in range(self.connections)]
        try:
            self._dispatched = loop.create_future()
            self._tick()
            await self._dispatched
            self._send_end = min(loop.time(), self._end)
            for _ in workers:
                self._queue.put_nowait(None)
            # queued requests are still owed: give them one timeout to go out, then drop the rest
            _done, pending = await asyncio.wait(workers, timeout=self.timeout_s)
            if pending:
                self._accepting = False
                _done, pending = await asyncio.wait(pending, timeout=self.timeout_s + 1.0)
        finally:
            for w in workers:
                w.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
            while not self._queue.empty():  # bounded by the queue's length
                if self._queue.get_nowait() is not None:
                    self._unsent += 1
            await session.close()
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            gc.unfreeze()
        return self.report()

    def _tick(self) -> None:
        """Timer callback: queue every request now due, then set the timer for the next one.

        A callback rather than a task: a due request reaches an idle worker one loop
        iteration sooner.
        """
        self._timer = None
        done = self._dispatched
        loop = self._loop
        if done is None or done.done() or loop is None:
            return
        try:
            now = loop.time()
            if self._stopping:
                done.set_result(None)
                return
            end = self._end
            queue = self._queue
            cum = self._cum
            n_kinds = len(cum)
            i = self._next_i
            t = self._intended(i)
            batch = 0
            # a request intended before the end is owed even when this tick fires after it
            while t <= now and t < end and batch < MAX_BATCH:
                if self._busy + queue.qsize() >= self.connections:
                    self._ceiling_hits += 1
                if queue.qsize() >= MAX_BACKLOG:
                    self._unsent += 1
                else:
                    k = 0
                    if n_kinds > 1:
                        k = min(bisect.bisect_right(cum, self._rng.random() * cum[-1]), n_kinds - 1)
                    queue.put_nowait((i, t, k))
                i += 1
                batch += 1
                t = self._intended(i)
            self._next_i = i
            if batch == MAX_BATCH:  # far behind: let the workers run, then come back
                self._timer = loop.call_soon(self._tick)
            elif now >= end:
                done.set_result(None)
            else:
                self._timer = loop.call_at(min(t, end), self._tick)
        except Exception as exc:  # a bug here must end the run, not hang it
            done.set_exception(exc)

    async def _worker(self, session: aiohttp.ClientSession) -> None:
        queue = self._queue
        while True:  # ends at its sentinel (None); the queue holds a bounded schedule
            item = await queue.get()
            if item is None:
                return
            if not self._accepting:
                self._unsent += 1
                continue
            await self._send(session, *item)

    async def _send(self, session: aiohttp.ClientSession, i: int, intended: float, k: int) -> None:
        loop = self._loop
        assert loop is not None
        intended += self._perf_offset
        start = time.perf_counter()
        delay = start - intended
        if delay > LATE_START_S:
            self._late += 1
        if delay > self._max_delay:
            self._max_delay = delay
        spec = self._mix[k]
        headers = self._headers
        if self._run_id is not None:
            headers = {**headers, "X-Request-Id": f"{self._run_id}-{i}"}
        self._sent += 1
        self._busy += 1
        status = 0
        kind = ""
        try:
            by_origin = self._by_origin
            url = by_origin[i % len(by_origin)][k] if len(by_origin) > 1 else self._urls[k]
            async with session.request(spec.method, url, data=spec.body, headers=headers) as resp:
                n = 0
                async for chunk in resp.content.iter_any():
                    n += len(chunk)
                self._bytes_in += n
                status = resp.status
        except TimeoutError as exc:
            kind = self._failed("timeout", exc)
        except aiohttp.ClientConnectorError as exc:
            kind = self._failed("connect", exc)
        except (aiohttp.ClientError, OSError) as exc:
            kind = self._failed("other", exc)
        except asyncio.CancelledError as exc:  # only at the very end of a run that overran
            self._failed("other", exc)
            raise
        finally:
            self._busy -= 1
        done = time.perf_counter()
        self._last_done = loop.time()
        rel = self._last_done - self._t0
        self._live_done.add(1, rel)
        if kind:
            self._live_classes["error"].add(1, rel)
            return
        self._completed += 1
        self._status[status] = self._status.get(status, 0) + 1
        cls = f"{status // 100}xx"
        if cls in self._live_classes:
            self._live_classes[cls].add(1, rel)
        corrected = done - intended
        raw = done - start
        self._corrected.record(corrected)
        self._raw.record(raw)
        if corrected > self._max_corrected:
            self._max_corrected = corrected
        if raw > self._max_raw:
            self._max_raw = raw
        self._live_latency.record(corrected, rel)

    def _failed(self, kind: str, exc: BaseException) -> str:
        self._errors[kind] += 1
        if kind not in self._error_examples:
            self._error_examples[kind] = f"{type(exc).__name__}: {exc}"[:300]
        return kind

    # --- figures

    def latency_counts(self) -> list[int]:
        """Bucket counts of the corrected-latency histogram since the start (the buckets of
        ``lbtui.core.window``): what a quantile over any span of the run is computed from."""
        return list(self._corrected.counts)

    def live(self) -> LiveFigures:
        """Current figures over the last few seconds, for a console; cheap enough for 10 Hz."""
        loop = self._loop
        if loop is None or not self._started:
            return LiveFigures(0.0, self._rate, 0.0, 0, 0, 0, 0, 0, window_s=self._live_window_s)
        rel = loop.time() - self._t0
        span = max(min(rel, self._live_window_s), 1e-3)
        p50, p99 = self._live_latency.quantiles((0.5, 0.99), rel)
        return LiveFigures(
            elapsed_s=rel,
            target_rate=self._rate,
            achieved_rate=self._live_done.total(rel) / span,
            sent=self._sent,
            completed=self._completed,
            errors=sum(self._errors.values()),
            in_flight=self._busy,
            backlog=self._queue.qsize(),
            status_rates={c: r.total(rel) / span for c, r in self._live_classes.items()},
            p50_s=p50,
            p99_s=p99,
            window_s=self._live_window_s,
        )

    def report(self) -> LoadReport:
        """The figures so far (final once :meth:`run` has returned)."""
        send_end = self._send_end if self._send_end is not None else self._end
        send_window = max(send_end - self._t0, 1e-9) if self._started else 0.0
        elapsed = max(send_window, self._last_done - self._t0) if self._started else 0.0
        scheduled = self._next_i
        return LoadReport(
            url=self.url,
            duration_s=self.duration_s,
            elapsed_s=elapsed,
            offered_rate=scheduled / send_window if send_window else 0.0,
            achieved_rate=self._completed / elapsed if elapsed else 0.0,
            scheduled=scheduled,
            sent=self._sent,
            completed=self._completed,
            unsent=self._unsent,
            status_counts=dict(sorted(self._status.items())),
            errors=dict(self._errors),
            error_examples=dict(self._error_examples),
            late_starts=self._late,
            ceiling_hits=self._ceiling_hits,
            max_start_delay_s=self._max_delay,
            bytes_in=self._bytes_in,
            corrected=LatencySummary.of(self._corrected, self._max_corrected),
            raw=LatencySummary.of(self._raw, self._max_raw),
        )


def _check_rate(rate: float) -> None:
    if not 0 <= rate <= MAX_RATE:
        raise UsageError(f"rate must be from 0 to {MAX_RATE:g} requests per second, got {rate!r}")
