"""When a failed try may be sent again to another backend, and how many retries may run at once.

The decision copies nginx ``proxy_next_upstream`` and Envoy's retry policy:

- A request that never reached a backend (``request_sent`` False: connect refused, connect
  timeout, a reset before the first byte went out) may be retried whatever its method, even a
  POST: no backend saw it, so sending it elsewhere cannot do anything twice.
- Once a backend may have seen it, only idempotent methods (RFC 9110 §9.2.2: GET, HEAD,
  OPTIONS, PUT, DELETE, TRACE) are retried, on a reset or broken connection, a timeout, or a
  status listed in ``retry_on_status``. A POST or PATCH that reached a backend is never sent
  again (nginx's default without ``non_idempotent``).
- Never once anything has reached the client (``response_started``): a response cannot be taken
  back. Never when the request body cannot be sent again (``body_replayable`` False: more was
  streamed than ``retry_buffer_bytes`` could keep). Never beyond ``attempts`` retries.

Methods are compared as sent: HTTP methods are case-sensitive (RFC 9110 §9.1), so ``get`` is not
``GET`` and is not retried after it reached a backend.

What the balancer asks after a failed try is :meth:`RetryPolicy.decide`: the rule above plus
the two it adds, each with the reason it gives (:class:`RetryReason`):

- a **connect failure** is tried on another backend whatever the method, the retry settings and
  the budget (nothing was sent), up to ``connect_attempts`` backends a request;
- a **connection that broke** before any response byte (a killed backend, a stale keep-alive
  connection) sends an idempotent, replayable request once more elsewhere, whatever the retry
  settings and budget — nginx's ``proxy_next_upstream error`` default. Once a request, so a
  crashing fleet sees at most twice its load.

Only a ``RETRYABLE`` decision counts as a retry against ``attempts`` and the budget.

The budget copies Envoy's ``retry_budget``: a retry may start while the retries in flight are
fewer than ``max(min_concurrency, floor(budget_percent % of active requests))``. Under a general
outage every request fails; the budget keeps retries a small share of the traffic instead of
doubling it (a retry storm). No clock is needed: it counts what is in flight now.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field
from typing import Any, Final

from mypy_extensions import mypyc_attr

__all__ = [
    "IDEMPOTENT_METHODS",
    "FailureKind",
    "RetryBudget",
    "RetryBudgetStats",
    "RetryDecision",
    "RetryPolicy",
    "RetryReason",
]

IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})
"""RFC 9110 §9.2.2. CONNECT, POST and PATCH are not; unknown methods are assumed not to be."""


class FailureKind(enum.Enum):
    """How one try failed."""

    CONNECT = "connect"
    """No connection could be made; nothing was sent."""
    TIMEOUT = "timeout"
    """Connected, but no (complete) answer within the per-try timeout."""
    RESET = "reset"
    """The connection was reset or closed while the exchange was under way."""
    STATUS = "status"
    """The backend answered with a status the policy lists as retryable."""


class RetryReason(enum.Enum):
    """Why a failed try is, or is not, sent again."""

    CONNECT_FAILED = "connect_failed"
    """Retry: no connection was made, nothing was sent."""
    CONNECT_LIMIT = "connect_limit"
    """No: ``connect_attempts`` backends refused the connection already."""
    BROKEN_ONCE = "broken_once"
    """Retry, once a request and outside the budget: the connection broke before any answer."""
    RETRYABLE = "retryable"
    """Retry, if the budget allows: the policy lets this failure be tried again."""
    STATUS_NOT_LISTED = "status_not_listed"
    """No: the status is not in ``retry_on_status``."""
    NOT_IDEMPOTENT = "not_idempotent"
    """No: the backend may have acted on a request that must not be done twice."""
    ATTEMPTS_SPENT = "attempts_spent"
    """No: ``attempts`` retries were made already."""
    BODY_NOT_REPLAYABLE = "body_not_replayable"
    """No: the request body was streamed beyond what was kept."""


@dataclass(frozen=True, slots=True)
class RetryDecision:
    """What :meth:`RetryPolicy.decide` says, and why."""

    retry: bool
    reason: RetryReason
    budgeted: bool
    """A retry that counts against ``attempts`` and must take the retry budget."""


_DECISIONS: Final = {
    r: RetryDecision(
        r in (RetryReason.CONNECT_FAILED, RetryReason.BROKEN_ONCE, RetryReason.RETRYABLE),
        r,
        r is RetryReason.RETRYABLE,
    )
    for r in RetryReason
}


@mypyc_attr(native_class=False)  # validates what it is given (lbtui/build.py)
@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """When to send a failed request to another backend."""

    attempts: int = 1
    """Retries after the first try, each on a different backend; 0 turns retries off."""
    per_try_timeout_s: float | None = None
    """Time allowed to each try; ``None`` means only the route's overall timeout applies."""
    retry_on_status: frozenset[int] = field(default_factory=frozenset)
    """Statuses that make an idempotent request retryable, e.g. ``{502, 503, 504}``. Empty:
    any answer from a backend is final."""
    retry_buffer_bytes: int = 64 * 1024
    """Request body bytes kept so that the body can be sent again; a body streamed beyond
    this is not replayable and its request is not retried. 0: only bodiless requests are."""
    connect_attempts: int = 4
    """Backends tried at most for one request when connections fail (nothing was sent)."""

    def __post_init__(self) -> None:
        me: Any = self  # fields not checked yet: read untyped (lbtui/build.py)
        if isinstance(me.attempts, bool) or not isinstance(me.attempts, int):
            raise ValueError(f"attempts must be a whole number, got {me.attempts!r}")
        if me.attempts < 0:
            raise ValueError(f"attempts must be 0 or more (0 turns retries off), got {me.attempts}")
        t = me.per_try_timeout_s
        if t is not None and not (t > 0 and math.isfinite(t)):
            raise ValueError(
                f"per_try_timeout_s must be a number of seconds above 0, or None, got {t!r}"
            )
        if not isinstance(me.retry_on_status, frozenset):
            raise ValueError(
                f"retry_on_status must be a frozenset of statuses, got {me.retry_on_status!r}"
            )
        bad = [
            s
            for s in me.retry_on_status
            if isinstance(s, bool) or not isinstance(s, int) or not 100 <= s <= 599
        ]
        if bad:
            shown = ", ".join(sorted((repr(s) for s in bad), key=lambda r: (len(r), r)))
            raise ValueError(
                f"retry_on_status must hold HTTP statuses from 100 to 599, got {shown}"
            )
        b = me.retry_buffer_bytes
        if isinstance(b, bool) or not isinstance(b, int) or b < 0:
            raise ValueError(f"retry_buffer_bytes must be a whole number >= 0, got {b!r}")
        c = me.connect_attempts
        if isinstance(c, bool) or not isinstance(c, int) or c < 1:
            raise ValueError(f"connect_attempts must be a whole number >= 1, got {c!r}")

    def decide(
        self,
        method: str,
        failure: FailureKind,
        *,
        retries: int,
        connect_failures: int,
        broken_retried: bool,
        body_replayable: bool,
        status: int | None = None,
    ) -> RetryDecision:
        """The balancer's whole rule for a try that failed before anything reached the client.

        ``retries``: budgeted retries made so far for this request; ``connect_failures``: the
        connect failures so far, this one included; ``broken_retried``: the once-a-request
        retry of a broken connection was used; ``status``: the answer, for
        ``FailureKind.STATUS``. The retry budget is not checked here (:class:`RetryBudget`).
        """
        if failure is FailureKind.CONNECT:
            if connect_failures >= self.connect_attempts:
                return _DECISIONS[RetryReason.CONNECT_LIMIT]
            return _DECISIONS[RetryReason.CONNECT_FAILED]
        idempotent = method in IDEMPOTENT_METHODS
        if failure is FailureKind.RESET and not broken_retried and idempotent and body_replayable:
            return _DECISIONS[RetryReason.BROKEN_ONCE]
        if failure is FailureKind.STATUS and (status is None or status not in self.retry_on_status):
            return _DECISIONS[RetryReason.STATUS_NOT_LISTED]
        if not idempotent:
            return _DECISIONS[RetryReason.NOT_IDEMPOTENT]
        if retries >= self.attempts:
            return _DECISIONS[RetryReason.ATTEMPTS_SPENT]
        if not body_replayable:
            return _DECISIONS[RetryReason.BODY_NOT_REPLAYABLE]
        return _DECISIONS[RetryReason.RETRYABLE]

    def may_retry(
        self,
        method: str,
        failure: FailureKind,
        *,
        attempt: int,
        request_sent: bool,
        response_started: bool,
        body_replayable: bool,
        status: int | None = None,
    ) -> bool:
        """Whether the try that just failed may be sent again to another backend.

        ``attempt`` counts the tries made so far, the failed one included (1 after the first
        try), so a retry is allowed while ``attempt <= attempts``. ``request_sent``: any byte of
        the request went to the backend. ``response_started``: any byte of a response went to
        the client. ``body_replayable``: the whole request body can be sent again (true for a
        bodiless request, and for any request when nothing was read from the client yet).
        ``status`` is the backend's answer, for ``FailureKind.STATUS``.

        Budgets are not checked here: see :class:`RetryBudget`.
        """
        if attempt < 1:
            raise ValueError(f"attempt counts the tries made so far, from 1; got {attempt}")
        if attempt > self.attempts or response_started or not body_replayable:
            return False
        if failure is FailureKind.STATUS:
            # An answer means the backend saw the request, whatever request_sent says.
            return (
                status is not None
                and status in self.retry_on_status
                and method in IDEMPOTENT_METHODS
            )
        if not request_sent:
            return True
        return method in IDEMPOTENT_METHODS


@dataclass(frozen=True, slots=True)
class RetryBudgetStats:
    """What a retry budget reports to the control plane."""

    budget_percent: float
    min_concurrency: int
    active_retries: int
    acquired_total: int
    exhausted_total: int
    """Retries refused because the budget was spent: each is a failure the client saw."""


class RetryBudget:
    """Envoy's retry budget: retries in flight stay under a share of the requests in flight.

    ``try_acquire(active_requests)`` is called when a retry is about to start, with the requests
    in flight on the cluster (retries included, as Envoy counts them); a successful acquire
    counts the retry as active until :meth:`release`.
    """

    __slots__ = ("_acquired", "_active", "_exhausted", "_min", "_percent")

    def __init__(self, budget_percent: float = 20.0, min_concurrency: int = 3) -> None:
        if not (0.0 <= budget_percent <= 100.0):
            raise ValueError(
                f"budget_percent must be a percentage from 0 to 100, got {budget_percent!r}"
            )
        if isinstance(min_concurrency, bool) or not isinstance(min_concurrency, int):
            raise ValueError(f"min_concurrency must be a whole number, got {min_concurrency!r}")
        if min_concurrency < 0:
            raise ValueError(f"min_concurrency must be 0 or more, got {min_concurrency}")
        self._percent = float(budget_percent)
        self._min = min_concurrency
        self._active = 0
        self._acquired = 0
        self._exhausted = 0

    @property
    def active_retries(self) -> int:
        return self._active

    def reconfigure(self, budget_percent: float, min_concurrency: int) -> None:
        """New limits (a reload); the retries in flight and the counts are kept, so that each
        one in flight is still released once."""
        RetryBudget(budget_percent, min_concurrency)  # the same checks as a new budget
        self._percent = float(budget_percent)
        self._min = min_concurrency

    def limit(self, active_requests: int) -> int:
        """Most retries allowed in flight with ``active_requests`` requests in flight."""
        share = math.floor(active_requests * self._percent / 100.0 + 1e-9)
        return share if share > self._min else self._min

    def peek(self, active_requests: int) -> bool:
        """Whether :meth:`try_acquire` would succeed now; takes nothing, counts nothing."""
        return self._active < self.limit(active_requests)

    def try_acquire(self, active_requests: int) -> bool:
        """Start a retry if the budget allows it (decide: consumes)."""
        active = self._active
        if active < self._min or active < math.floor(
            active_requests * self._percent / 100.0 + 1e-9
        ):
            self._active += 1
            self._acquired += 1
            return True
        self._exhausted += 1
        return False

    def release(self) -> None:
        """A retry taken by :meth:`try_acquire` has finished."""
        if self._active <= 0:
            raise RuntimeError("RetryBudget.release() without a matching try_acquire()")
        self._active -= 1

    def stats(self) -> RetryBudgetStats:
        return RetryBudgetStats(
            self._percent, self._min, self._active, self._acquired, self._exhausted
        )
