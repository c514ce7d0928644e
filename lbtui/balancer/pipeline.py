"""The request pipeline: admit → route → pick → attempt → answer → record, with one driver.

:meth:`Pipeline.serve` is the only entry point, behind both listeners. It runs the steps as
plain calls for as long as none has to wait; at the first that does (a body to read, a connect,
an injected fault, a failure to retry, a streamed answer), the rest of the request continues
as the coroutine :meth:`Pipeline.rest`, handed to the listener through ``client.spawn``. The
answer goes to ``client.finish`` (or is returned by ``rest``) once.

Whether an attempt may be answered without any coroutine is the one strategy in it: with the
fast listener and the lean upstream (``client.nowait``), the usual request (no body, no fault,
an idle keep-alive connection to the picked backend, a small whole answer) is sent with
``LeanUpstream`` callbacks and answered from the backend connection's ``data_received``. The
decisions are the same functions either way: ``attempt.py`` for the attempt's steps and what an
answer is, ``core/retry.py`` for whether to try again, ``answers.py`` for what a failure says.

Retries (nginx ``proxy_next_upstream``, Envoy's retry policy): a connect failure moves the
request to another backend (nothing was sent: always safe); an idempotent request whose
connection broke or timed out before any response byte reached the client, or that got a
listed status, is tried again elsewhere, within ``retries.attempts`` and the retry budget; a
POST or PATCH that reached a backend is never sent twice. A failure answers the route's
fallback if one is configured, else 502, 503 or 504 (``answers.py``).
"""

from __future__ import annotations

import asyncio
import logging
from typing import cast

from lbtui.balancer.accesslog import (
    AccessLog,
    RequestIds,
    bare_entry,
    job_entry,
    with_request_id,
)
from lbtui.balancer.answers import (
    Flag,
    failure_reason,
    final_failure,
    gateway_error,
    internal_error,
)
from lbtui.balancer.attempt import Attempts, whole
from lbtui.balancer.connections import BackendConnection, HeadBlock
from lbtui.balancer.exchange import Answer, ClientRequest, Result
from lbtui.balancer.job import Client, Job, Pending, StatusFailure
from lbtui.balancer.lean_upstream import LeanResponse, LeanUpstream
from lbtui.balancer.pool import Backend
from lbtui.balancer.routing import Route
from lbtui.balancer.state import HASHING, State
from lbtui.balancer.upstream import BackendResponse, Upstream
from lbtui.core.events import FallbackServed, RateLimited, RetryBudgetExhausted
from lbtui.core.record import BalancerRecord
from lbtui.core.retry import FailureKind as RetryFailure
from lbtui.core.retry import RetryBudget, RetryDecision, RetryPolicy, RetryReason
from lbtui.errors import UpstreamConnectError, UpstreamError, UpstreamTimeout

log = logging.getLogger("lbtui.proxy")


def failure_answer(
    state: State, record: BalancerRecord, job: Job, last: UpstreamError | None, tried: list[Backend]
) -> tuple[Answer, str]:
    """The route's fallback, else the gateway error, for a request no backend answered (with
    its flag); a fallback served starts an episode on the timeline."""
    now = state.clock()
    last = final_failure(last)
    breaker_open = (
        last is None
        and not tried
        and any(b.breaker is not None and not b.breaker.peek(now) for b in job.pool.backends)
    )
    reason = failure_reason(last, breaker_open)
    fallback = job.fallback
    if fallback is not None:
        client = job.client
        stale_key = (client.host + client.raw_path) if client.method == "GET" else None
        flags = f"{Flag.FALLBACK},{reason}" if state.flags_header else None
        answer, why = fallback.respond(reason, stale_key, now, flags)
        if state.episode(f"fallback:{why}", now):
            state.events.emit(
                FallbackServed(message=f"serving fallback responses ({why})", reason=why)
            )
        record.count_fallback(why, now)
        return answer, Flag.FALLBACK
    answer = gateway_error(last, tried, reason, state.flags_header)
    if isinstance(last, UpstreamTimeout) and job.flag == Flag.RETRY_BUDGET:
        return answer, Flag.RETRY_BUDGET
    return answer, reason


def observe_faults(state: State, job: Job, status: int) -> None:
    """Proof: what the client finally got for a request faults were applied to."""
    outcome: int | str = "reset" if job.cut else status
    faults = state.faults
    for name, kind in job.faulted:
        faults.observe(name, kind, outcome)


class Pipeline:
    """The one driver of a client request, over the balancer's :class:`State`."""

    def __init__(self, state: State) -> None:
        config = state.config
        self.state = state
        self.clock = state.clock
        self.record = state.record
        self.admission = state.admission
        r = config.retries
        self.retry_policy = RetryPolicy(
            attempts=r.attempts,
            per_try_timeout_s=r.per_try_timeout_ms / 1e3 if r.per_try_timeout_ms else None,
            retry_on_status=frozenset(r.retry_on_status),
            retry_buffer_bytes=r.retry_buffer_bytes,
            connect_attempts=config.proxy.max_attempts,
        )
        self.retry_budget = RetryBudget(r.budget_percent, r.budget_min)
        p = config.proxy
        self.upstream: LeanUpstream | Upstream
        if p.upstream == "lean":
            self.upstream = LeanUpstream(
                connect_timeout_s=p.connect_timeout_ms / 1e3,
                read_timeout_s=p.read_timeout_ms / 1e3,
                max_idle_per_backend=p.keepalive_per_backend,
                max_header_bytes=p.max_upstream_header_bytes,
            )
        else:
            self.upstream = Upstream(
                connect_timeout_s=p.connect_timeout_ms / 1e3,
                read_timeout_s=p.read_timeout_ms / 1e3,
            )
        self.lean = isinstance(self.upstream, LeanUpstream)
        """The strategy: attempts may be sent and answered without a coroutine."""
        self.attempts = Attempts(state, self.upstream, self.retry_policy.per_try_timeout_s)
        self.retry_statuses = self.retry_policy.retry_on_status
        self.ids = RequestIds()
        self.access_log: AccessLog | None = None
        """Set by the server when ``[access_log]`` is on (``accesslog.py``)."""

    # -- the driver -------------------------------------------------------------------------

    def serve(self, client: Client) -> None:
        """The whole pipeline for one client request; its answer goes to ``client.finish``,
        or the rest of it to ``client.spawn`` at the first step that must wait."""
        self.record.started()
        admitted = False
        t_start = self.clock() if self.access_log is not None else 0.0
        try:
            extra: list[tuple[str, str]] | None = None
            if self.admission.active:
                rejection, extra = self.admit(client)
                if rejection is not None:
                    now = self.clock()
                    self.record.answered(429, Flag.RATE_LIMITED, now)
                    if (log := self.access_log) is not None:
                        log.add(bare_entry(log, client, rejection, Flag.RATE_LIMITED, t_start, now))
                    client.finish(rejection)
                    return
                admitted = True
            route = self.state.route(client) if self.state.router is not None else None
            if route is not None and route.fixed is not None:
                # A redirect or a fixed response: no backend, no body read.
                self._end_fixed(client, route.fixed, admitted, t_start)
                client.finish(route.fixed)
                return
            job = self.job(client, extra, admitted, route)
            job.t_start = t_start
            if not (self.lean and client.nowait):  # (a request with a body is not nowait)
                client.spawn(self.rest(job, read_body=client.body_exists))
                return
            self._first_attempt(job)
        except Exception as exc:
            client.finish(self._crashed(client, exc, admitted))

    def _first_attempt(self, job: Job) -> None:
        """The first attempt, sent on an idle connection without waiting when it can be."""
        client = job.client
        backend = self.attempts.pick(job)
        if backend is None:
            result, flag = self.failed(job)
            self._end(job, result.status, flag)
            client.finish(result)
            return
        t0 = self.attempts.start(job, backend)
        upstream = self.upstream
        assert type(upstream) is LeanUpstream
        conn = upstream.idle_connection(backend.host, backend.port) if job.fault is None else None
        if conn is None:
            client.spawn(self.rest(job, start=(backend, t0)))
            return
        head, _ = upstream.head(
            job.method, backend.base_path + job.raw_path, job.headers,
            backend.host, backend.port, None,
        )  # fmt: skip
        job.driver = self
        job.backend = backend
        conn.send_nowait(head, job.method == "HEAD", self.attempts.read_timeout_s, job)

    def answered(self, job: Job, conn: BackendConnection, error: UpstreamError | None) -> None:
        """The backend connection's callback for an attempt sent without waiting: a whole
        small answer is recorded and handed to the client here; anything else goes on as
        :meth:`rest`."""
        backend, t0 = job.backend, job.t0
        client = job.client
        try:
            if error is not None:
                self.attempts.failed(job, backend, error, t0)
                client.spawn(self.rest(job, pending=(backend, t0, None)))
                return
            up = LeanResponse(conn, cast(LeanUpstream, self.upstream), self.attempts.read_timeout_s)
            status = up.status
            is_whole = conn.complete and whole(job, status, up.content_length)
            if is_whole and status not in self.retry_statuses:
                now = self.clock()
                failure, data = self.state.is_failure(status), conn.take_body()
                answer = self.attempts.respond_whole(
                    job, backend, up, status, up.reason, t0, failure, data, now
                )
                up.release()
                # ``succeeded`` and ``_end``, written out: this is the usual request's path.
                flag = job.flag
                if job.faulted:
                    observe_faults(self.state, job, status)
                    flag = flag or Flag.FAULT
                if job.admitted:
                    self.admission.release()
                self.record.answered(status, flag, now)
                if self.access_log is not None:
                    self.access_log.add(job_entry(self.access_log, job, status, flag, now))
                client.finish(answer)
                return
            client.spawn(self.rest(job, pending=(backend, t0, up)))
        except Exception as exc:
            client.finish(self._crashed(client, exc, job.admitted))

    async def rest(
        self,
        job: Job,
        *,
        read_body: bool = False,
        start: tuple[Backend, float] | None = None,
        pending: Pending | None = None,
    ) -> Result:
        """The pipeline from a routed job on: read a small body, attempts, the answer; the
        request is recorded as answered (and its admission released) once, here."""
        status, flag = 0, None
        try:
            if read_body:
                client = job.client
                length = client.content_length
                if length is not None and length <= self.retry_policy.retry_buffer_bytes:
                    job.body = await client.read()
                else:
                    job.body = client.content
                    job.replayable = False
            result, flag = await self.run_attempts(job, start, pending)
            status = result.status
            return result
        except (ConnectionError, asyncio.CancelledError):
            raise
        except Exception as exc:
            flag = Flag.INTERNAL_ERROR
            status = 500
            answer = self._internal_error(job.client, exc)
            job.sent = len(answer.body)
            return answer
        finally:
            self._end(job, status, flag)

    async def run_attempts(
        self, job: Job, start: tuple[Backend, float] | None, pending: Pending | None
    ) -> tuple[Result, str | None]:
        """Attempts on backends until one answers or no other may be tried. ``start`` is an
        attempt the caller began (picked and counted, not sent); ``pending`` one it sent."""
        attempts = self.attempts
        try:
            while True:
                if pending is not None:
                    backend, t0, up = pending
                    pending = None
                else:
                    if start is not None:
                        backend, t0 = start
                        start = None
                    else:
                        picked = attempts.pick(job)
                        if picked is None:
                            break
                        backend = picked
                        t0 = attempts.start(job, backend)
                    up = await attempts.send(job, backend, t0)
                if up is not None and not self.retry_on_status(job, backend, up, t0):
                    answered = await attempts.respond(job, backend, up, t0)
                    if isinstance(answered, UpstreamError):
                        answered = self.failure(job, answered, [backend])[0]
                    return self.succeeded(job, answered)
                if not self.may_go_on(job):
                    break
        finally:
            for _ in range(job.budget_held):
                self.retry_budget.release()
            job.budget_held = 0
        return self.failed(job)

    # -- admission, routing, ending -----------------------------------------------------------

    def admit(self, client: ClientRequest) -> tuple[Answer | None, list[tuple[str, str]]]:
        """Admission for one client request (the concurrency slot is taken when admitted):
        ``(the 429 to send, or None; headers for a successful response)``."""
        admission = self.admission
        now = self.clock()
        rejection, ok_headers = admission.admit(
            client.remote, client.headers if admission.client_header else None, now
        )
        if rejection is None:
            return None, ok_headers
        state = self.state
        if state.episode(f"limit:{rejection.scope}", now):
            state.events.emit(
                RateLimited(
                    message=f"rate limiting started ({rejection.scope} limit)",
                    scope=rejection.scope,
                )
            )
        self.record.count_rejection(rejection.scope, now)
        return rejection.answer(state.flags_header), ok_headers

    def job(
        self,
        client: Client,
        extra_headers: list[tuple[str, str]] | None,
        admitted: bool,
        route: Route | None = None,
    ) -> Job:
        """Place a routed request (group, fallback, hash key) and rewrite its headers for the
        backend. A route whose every forward weight is 0 leaves its requests to no group:
        they get its fallback, else 503."""
        state = self.state
        if route is not None:
            pool = route.pool() or state.no_group
            fallback = route.fallback
        else:
            pool, fallback = state.default_pool, state.fallback
        key = state.key(client) if pool.algorithm in HASHING else None
        job = Job(client, pool, fallback, key, extra_headers or None, admitted)
        headers = client.forward_headers(client.scheme)
        headers, job.request_id = with_request_id(client, headers, self.ids)
        if route is not None:
            headers = route.rewrite(job, headers, client)
        if type(headers) is HeadBlock and not self.lean:
            headers = headers.items()  # the aiohttp client wants text pairs
        job.headers = headers
        job.route = route.name if route is not None else None
        return job

    def _end_fixed(
        self, client: ClientRequest, answer: Answer, admitted: bool, t_start: float
    ) -> None:
        if admitted:
            self.admission.release()
        now = self.clock()
        self.record.answered(answer.status, None, now)
        if (log := self.access_log) is not None:
            log.add(bare_entry(log, client, answer, None, t_start, now))

    def succeeded(self, job: Job, result: Result) -> tuple[Result, str | None]:
        if job.faulted:
            observe_faults(self.state, job, result.status)
            return result, job.flag or Flag.FAULT
        return result, job.flag

    def failed(self, job: Job) -> tuple[Result, str | None]:
        """No backend answered (or none may be tried): the failure answer."""
        answer, flag = self.failure(job, job.last, job.tried)
        job.sent = len(answer.body)
        if job.faulted:
            observe_faults(self.state, job, answer.status)
        return answer, flag

    def failure(
        self, job: Job, last: UpstreamError | None, tried: list[Backend]
    ) -> tuple[Answer, str]:
        """The route's fallback, else the gateway error, for a request no backend answered."""
        return failure_answer(self.state, self.record, job, last, tried)

    def _end(self, job: Job, status: int, flag: str | None) -> None:
        if job.admitted:
            self.admission.release()
        now = self.clock()
        self.record.answered(status, flag, now)
        if self.access_log is not None:
            self.access_log.add(job_entry(self.access_log, job, status, flag, now))

    def _internal_error(self, client: ClientRequest, exc: BaseException) -> Answer:
        """A defect of lbtui's own: the client still gets a JSON answer, and it is logged."""
        log.error(
            "internal error while proxying %s %s",
            client.method,
            client.path,
            exc_info=(type(exc), exc, exc.__traceback__),
        )
        return internal_error(exc, self.state.flags_header)

    def _crashed(self, client: ClientRequest, exc: Exception, admitted: bool) -> Answer:
        if admitted:
            self.admission.release()
        now = self.clock()
        self.record.answered(500, Flag.INTERNAL_ERROR, now)
        answer = self._internal_error(client, exc)
        if self.access_log is not None:
            self.access_log.add(
                bare_entry(self.access_log, client, answer, Flag.INTERNAL_ERROR, None, now)
            )
        return answer

    # -- retries --------------------------------------------------------------------------------

    def _decide(self, job: Job, failure: RetryFailure, status: int | None) -> RetryDecision:
        return self.retry_policy.decide(
            job.method,
            failure,
            retries=job.retries,
            connect_failures=job.connect_failures,
            broken_retried=job.reset_retried,
            body_replayable=job.replayable,
            status=status,
        )

    def retry_on_status(self, job: Job, backend: Backend, up: BackendResponse, t0: float) -> bool:
        """True when the answer's status is worth another backend: then it is dropped (its
        connection is not reused) and recorded."""
        status = up.status
        if status not in self.retry_statuses:
            return False
        decision = self._decide(job, RetryFailure.STATUS, status)
        if decision.retry and self._budget_allows(job):
            self.attempts.dropped(job, backend, up, t0)
            job.last = StatusFailure(backend.name, status)
            return True
        return False

    def may_go_on(self, job: Job) -> bool:
        """After a failed attempt: is another backend tried? (``RetryPolicy.decide``, then
        the retry budget for a retry that takes it.)"""
        last = job.last
        if last is None:
            return True
        status: int | None = None
        if isinstance(last, StatusFailure):
            kind = RetryFailure.STATUS
            status = last.status
        elif isinstance(last, UpstreamConnectError):
            kind = RetryFailure.CONNECT
        elif isinstance(last, UpstreamTimeout):
            kind = RetryFailure.TIMEOUT
        else:
            kind = RetryFailure.RESET
        decision = self._decide(job, kind, status)
        reason = decision.reason
        if not decision.retry:
            if reason is RetryReason.ATTEMPTS_SPENT:
                job.flag = Flag.RETRY_LIMIT
            return False
        if reason is RetryReason.CONNECT_FAILED:
            job.flag = job.flag or Flag.RETRIED
            return True
        if reason is RetryReason.BROKEN_ONCE:
            job.reset_retried = True
            job.flag = Flag.RETRIED
            return True
        if not self._budget_allows(job) or not self.retry_budget.try_acquire(self.record.in_flight):
            return False
        job.budget_held += 1
        job.retries += 1
        job.flag = Flag.RETRIED
        return True

    def _budget_allows(self, job: Job) -> bool:
        """Whether the retry budget has room for one more retry (taken if so); an exhausted
        budget sets the request's flag and is reported as an event when it starts."""
        if self.retry_budget.peek(self.record.in_flight):
            return True
        self.retry_budget.try_acquire(self.record.in_flight)  # counts the exhaustion
        job.flag = Flag.RETRY_BUDGET
        now = self.clock()
        state = self.state
        if state.episode("retry_budget", now):
            st = self.retry_budget.stats()
            state.events.emit(
                RetryBudgetExhausted(
                    message=f"retry budget exhausted: {st.active_retries} retries in flight "
                    f"(budget {st.budget_percent:g}% of {self.record.in_flight} requests, "
                    f"min {st.min_concurrency})"
                )
            )
        return False
