"""One attempt on one backend: pick it, send the request, record what came of it, answer.

The steps the driver (``pipeline.py``) runs for each try, whether it waits on them or not:

- **pick**: the pool's algorithm over the backends that can take the request now: active, not
  down by health checks, not ejected, breaker admitting, under ``max_rps``; when too few are
  available (Envoy's panic threshold) health and ejection are ignored; backends tried already
  are not picked again;
- **start**: the attempt is counted (a retry, if it is not the first) and its injected fault,
  if any, decided;
- **send** and **respond**: a small answer with a known length is read whole and answered in
  one write; anything else is streamed with back-pressure; an injected fault takes the same
  paths as a real failure;
- **record**: each attempt's outcome goes once to the backend's record and, through
  ``State.outcome``, to its breaker, the outlier detector and the algorithm.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from multidict import CIMultiDict

from lbtui.balancer.exchange import Answer, Result, response_pairs
from lbtui.balancer.faults import before_send, body_fault
from lbtui.balancer.job import Job
from lbtui.balancer.lean_upstream import LeanUpstream
from lbtui.balancer.pool import Backend, Pool, sticky_id
from lbtui.balancer.state import State
from lbtui.balancer.upstream import BackendResponse, Upstream
from lbtui.balancer.zones import set_spilling
from lbtui.core.faults import FaultKind
from lbtui.core.record import FailureKind
from lbtui.errors import ClientBodyError, UpstreamConnectError, UpstreamError, UpstreamTimeout

SMALL_RESPONSE_BYTES: Final = 256 * 1024
"""Responses up to this size (with a Content-Length) are read whole and sent in one write."""
_SHAPING = (FaultKind.RESET, FaultKind.BANDWIDTH)
"""Faults that act on the body: their answers are always streamed."""


def whole(job: Job, status: int, length: int | None) -> bool:
    """Whether a response (``status``, ``length``: its Content-Length) is answered in one
    write: a body of a known, small length, no fault shaping it. (Its figures, not the
    response: read through the ``BackendResponse`` protocol they would be looked up by name.)"""
    fault = job.fault
    return (
        length is not None
        and length <= SMALL_RESPONSE_BYTES
        and status >= 200
        and status != 204
        and status != 304
        and job.method != "HEAD"
        and (fault is None or fault.kind not in _SHAPING)
    )


class Attempts:
    """The steps of one attempt, over the balancer's :class:`State` and its upstream."""

    def __init__(
        self, state: State, upstream: LeanUpstream | Upstream, per_try_timeout_s: float | None
    ) -> None:
        self.state = state
        self.clock = state.clock
        self.upstream = upstream
        self.per_try_timeout_s = per_try_timeout_s
        self.read_timeout_s = per_try_timeout_s or upstream.read_timeout_s
        """The timeout of one attempt (per try, else the upstream's read timeout)."""

    # -- pick and start --------------------------------------------------------------------

    def _eligible(
        self, pool: Pool, job: Job, now: float, capped: list[Backend] | None = None
    ) -> Callable[[Backend], bool]:
        """Who may take the pick. A backend at its ``max_rps`` may still be picked (the pick
        is its demand, counted by ``pick``), unless it is in ``capped`` (refused already)."""
        tried = job.tried
        outliers = self.state.outliers
        panic = pool.panic

        def eligible(b: Backend) -> bool:
            if tried and b in tried:
                return False
            if capped and b in capped:
                return False
            if not panic and (not b.healthy() or outliers.is_ejected(b.name, now)):
                return False
            breaker = b.breaker
            return breaker is None or breaker.peek(now)

        return eligible

    def pick(self, job: Job) -> Backend | None:
        """Pick the backend for the next attempt (its breaker admitting it), or None; a
        sticky group's first attempt goes to the client's backend while it may take it. The
        clock's reading the pick was made at is the attempt's start (``job.t0``)."""
        pool = job.pool
        if pool.sticky_cookie is None:
            return self._pick(job, pool)
        backend = self._sticky(job, pool) if not job.tried else None
        if backend is None:
            backend = self._pick(job, pool)
            if backend is not None:
                self._stick(job, pool, backend)
        return backend

    def _pick(self, job: Job, pool: Pool) -> Backend | None:
        clock = self.clock
        clear = self.state.clear_pools
        capped: list[Backend] | None = None
        while True:
            now = clock()
            if pool in clear and not job.tried:
                backend = pool.pick(now, job.key, None)  # every backend may take it
            elif pool.zone is not None:
                backend = self._pick_zoned(job, pool, now, capped)
            else:
                backend = pool.pick(now, job.key, self._eligible(pool, job, now, capped))
            if backend is None:
                return None
            cap = backend.cap
            if cap is not None and not cap.allow(now):
                backend.record.refused_at_cap(now)  # demand above R_max: counts toward M
                capped = [*capped, backend] if capped else [backend]
                continue
            job.tried.append(backend)
            breaker = backend.breaker
            if breaker is not None and not breaker.allow(now):
                continue  # lost a half-open permit race: pick again
            job.t0 = now
            return backend

    def _pick_zoned(
        self, job: Job, pool: Pool, now: float, capped: list[Backend] | None
    ) -> Backend | None:
        """A group that stays in the balancer's zone while it has an eligible backend there;
        else it spills to the other zones (Envoy's zone-aware routing). Whether it spills is
        judged on first attempts, so that one request's retries do not flap it."""
        eligible = self._eligible(pool, job, now, capped)
        zone = pool.zone

        def local(b: Backend) -> bool:
            return b.zone == zone and eligible(b)

        backend = None if pool.zone_degraded else pool.pick(now, job.key, local)
        if backend is None:
            backend = pool.pick(now, job.key, eligible)
            if backend is not None and not job.tried and not pool.spilling:
                set_spilling(self.state.events, pool, True, now)
        elif pool.spilling and not job.tried:
            set_spilling(self.state.events, pool, False, now)
        return backend

    def _sticky(self, job: Job, pool: Pool) -> Backend | None:
        """The backend the client's sticky cookie names, if it may take this request now."""
        cookie = pool.sticky_cookie
        assert cookie is not None
        value = job.client.cookie(cookie)
        backend = pool.sticky_ids.get(value) if value else None
        if backend is None or backend.weight <= 0:
            return None
        now = self.clock()
        if not self._eligible(pool, job, now)(backend):
            return None
        cap = backend.cap
        if cap is not None and not cap.allow(now):
            backend.record.refused_at_cap(now)
            return None
        breaker = backend.breaker
        if breaker is not None and not breaker.allow(now):
            return None
        job.tried.append(backend)
        job.t0 = now
        return backend

    def _stick(self, job: Job, pool: Pool, backend: Backend) -> None:
        """Tell the client (``Set-Cookie``) which backend it sticks to from now on."""
        cookie = f"{pool.sticky_cookie}={sticky_id(backend.name)}; Path=/; HttpOnly"
        if pool.sticky_ttl_s > 0:
            cookie += f"; Max-Age={int(pool.sticky_ttl_s)}"
        mine = f"{pool.sticky_cookie}="
        extra = [
            (k, v)
            for k, v in job.extra_headers or ()
            if not (k == "Set-Cookie" and v.startswith(mine))  # a retry's earlier pick
        ]
        extra.append(("Set-Cookie", cookie))
        job.extra_headers = extra

    def start(self, job: Job, backend: Backend) -> float:
        """An attempt on ``backend`` begins: counted, and its fault (if any) decided. Its time
        is its pick's (``job.t0``): the two follow each other with nothing between, and the
        clock is not read twice for one instant."""
        t0 = job.t0
        state = self.state
        brec = backend.record
        brec.started(t0)
        if len(job.tried) > 1:
            brec.retries_total += 1
            state.record.count_retry(t0)
        faults = state.faults
        fault = job.fault = faults.decide(backend.name, t0) if faults.live else None
        if fault is not None:
            job.faulted.append((backend.name, fault.kind))
        return t0

    # -- send --------------------------------------------------------------------------------

    async def send(self, job: Job, backend: Backend, t0: float) -> BackendResponse | None:
        """One attempt's request: the response head, or None if it failed (recorded)."""
        fault = job.fault
        try:
            up: BackendResponse | None = None
            if fault is not None:
                # Injected faults take the same paths as real ones: down raises a connect error,
                # hang a timeout, abort is an answer the backend "gave", delay just waits.
                up = await before_send(fault, backend.name, self.read_timeout_s)
            if up is None:
                up = await self.upstream.send(
                    backend,
                    job.method,
                    job.raw_path,
                    job.headers,  # type: ignore[arg-type]  # a HeadBlock only for the lean one
                    job.body,
                    read_timeout_s=self.per_try_timeout_s,
                )
        except UpstreamError as exc:
            self.failed(job, backend, exc, t0)
            return None
        except ClientBodyError:
            # The client's body broke off mid-upload: the attempt ends unblamed (the backend's
            # in-flight count and any half-open permit given back) and so does the request.
            backend.record.in_flight -= 1
            if backend.breaker is not None:
                backend.breaker.release(self.clock())
            raise
        return up

    def failed(self, job: Job, backend: Backend, exc: UpstreamError, t0: float) -> None:
        """An attempt got no response head: recorded, and remembered for the retry decision."""
        now = self.clock()
        kind = (
            FailureKind.CONNECT
            if isinstance(exc, UpstreamConnectError)
            else FailureKind.TIMEOUT
            if isinstance(exc, UpstreamTimeout)
            else FailureKind.RESET
        )
        backend.record.failed(kind, now - t0, 0, now)
        self.state.outcome(backend, job.pool, True, now - t0, now)
        if kind is FailureKind.CONNECT:
            job.connect_failures += 1
        job.last = exc

    def dropped(self, job: Job, backend: Backend, up: BackendResponse, t0: float) -> None:
        """An answer dropped for a retry (its connection is not reused): recorded."""
        up.close()
        now = self.clock()
        status = up.status
        backend.record.finished(status, now - t0, 0, 0, now)
        self.state.outcome(backend, job.pool, self.state.is_failure(status), now - t0, now)

    # -- respond -----------------------------------------------------------------------------

    async def respond(
        self, job: Job, backend: Backend, up: BackendResponse, t0: float
    ) -> Result | UpstreamError:
        """Answer the client from ``up``: the result, or the error of a small body that broke
        off before anything was sent (recorded; the caller answers the failure)."""
        is_failure = self.state.is_failure(up.status)
        if whole(job, up.status, up.content_length):
            try:
                data = await up.read()
            except UpstreamError as exc:
                self.body_failed(job, backend, up, t0, exc)
                return exc
            now = self.clock()
            answer = self.respond_whole(
                job, backend, up, up.status, up.reason, t0, is_failure, data, now
            )
            up.release()
            return answer
        return await self.stream(job, backend, up, t0, is_failure)

    async def stream(
        self, job: Job, backend: Backend, up: BackendResponse, t0: float, is_failure: bool
    ) -> Result:
        """A response streamed to the client with back-pressure."""
        client = job.client
        status = up.status
        no_body = job.method == "HEAD" or status in (204, 304) or status < 200
        shaped = job.fault  # reset and bandwidth act on the body
        if shaped is not None and shaped.kind not in _SHAPING:
            shaped = None
        brec = backend.record
        headers = client.response_headers(up, job.extra_headers, job.drop_headers)
        bytes_in = client.content_length or 0
        sent = 0
        chunks = up.chunks()
        if shaped is not None:
            chunks = body_fault(shaped, chunks, backend.name)
        stream = client.open_stream(status, up.reason, headers, up.content_length)
        try:
            await client.start_stream()
            # An injected reset cuts even a body-less answer: an applied fault never escapes.
            if not no_body or shaped is not None:
                async for chunk in chunks:
                    await client.write(chunk)
                    sent += len(chunk)
            await client.finish_stream()
        except UpstreamError:
            # The head is out: the only honest signal left is to cut the client connection.
            job.cut = True
            now = self.clock()
            job.sent, job.upstream_s = sent, now - t0
            brec.failed(FailureKind.RESET, now - t0, bytes_in, now)
            self.state.outcome(backend, job.pool, True, now - t0, now)
            up.close()
            client.cut()
            return stream
        except ConnectionError:
            # The client went away mid-response: not the backend's fault.
            up.close()
            now = self.clock()
            job.sent, job.upstream_s = sent, now - t0
            brec.finished(status, now - t0, bytes_in, sent, now)
            if backend.breaker is not None:
                backend.breaker.release(now)
            return stream
        up.release()
        now = self.clock()
        job.sent, job.upstream_s = sent, now - t0
        brec.finished(status, now - t0, bytes_in, sent, now)
        self.state.outcome(backend, job.pool, is_failure, now - t0, now)
        return stream

    def body_failed(
        self, job: Job, backend: Backend, up: BackendResponse, t0: float, exc: UpstreamError
    ) -> None:
        """A small body broke off or timed out before the head went out: recorded."""
        now = self.clock()
        kind = FailureKind.TIMEOUT if isinstance(exc, UpstreamTimeout) else FailureKind.RESET
        backend.record.failed(kind, now - t0, job.client.content_length or 0, now)
        self.state.outcome(backend, job.pool, True, now - t0, now)
        up.close()

    def respond_whole(
        self,
        job: Job,
        backend: Backend,
        up: BackendResponse,
        status: int,
        reason: str | None,
        t0: float,
        is_failure: bool,
        data: bytes,
        now: float,
    ) -> Answer:
        """A small response (``up``'s ``status`` and ``reason``, given: the caller knows its
        type, this only its protocol) read whole by ``now``: recorded, and the answer to send
        in one write. The caller releases ``up`` after."""
        client = job.client
        state = self.state
        headers = client.response_headers(up, job.extra_headers, job.drop_headers)
        fallback = job.fallback
        stale_headers = None
        if (
            state.stale_wanted
            and status == 200
            and job.method == "GET"
            and fallback is not None
            and fallback.keeps_stale
        ):
            stale_headers = CIMultiDict(response_pairs(up, job.drop_headers))
            for k, v in job.extra_headers or ():
                stale_headers.add(k, v)
        answer = Answer(status, reason, headers, data)
        job.sent, job.upstream_s = len(data), now - t0
        backend.record.finished(status, now - t0, client.content_length or 0, len(data), now)
        state.outcome(backend, job.pool, is_failure, now - t0, now)
        if stale_headers is not None and fallback is not None:
            fallback.remember(client.host + job.raw_path, status, stale_headers, data, now)
        return answer
