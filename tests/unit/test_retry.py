"""Retry decisions (nginx proxy_next_upstream + Envoy) and the retry budget."""

from __future__ import annotations

import dataclasses
import itertools

import pytest

from lbtui.core.retry import (
    IDEMPOTENT_METHODS,
    FailureKind,
    RetryBudget,
    RetryBudgetStats,
    RetryDecision,
    RetryPolicy,
    RetryReason,
)

CONNECT, TIMEOUT, RESET, STATUS = (
    FailureKind.CONNECT,
    FailureKind.TIMEOUT,
    FailureKind.RESET,
    FailureKind.STATUS,
)
GATEWAY = frozenset({502, 503, 504})
METHODS = ["GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE", "POST", "PATCH", "CONNECT"]


def decide(
    method: str,
    failure: FailureKind,
    *,
    sent: bool,
    started: bool = False,
    replayable: bool = True,
    attempt: int = 1,
    status: int | None = None,
    policy: RetryPolicy | None = None,
) -> bool:
    policy = policy or RetryPolicy(attempts=1, retry_on_status=GATEWAY)
    return policy.may_retry(
        method,
        failure,
        attempt=attempt,
        request_sent=sent,
        response_started=started,
        body_replayable=replayable,
        status=status,
    )


# The table, read as a spec. sent/started refer to request bytes to the backend and response
# bytes to the client.
@pytest.mark.parametrize(
    ("method", "failure", "sent", "started", "expected"),
    [
        # connect failure: nothing reached a backend, any method goes elsewhere
        ("GET", CONNECT, False, False, True),
        ("POST", CONNECT, False, False, True),
        ("PATCH", CONNECT, False, False, True),
        # a timeout or reset before a byte went out: the same
        ("POST", TIMEOUT, False, False, True),
        ("POST", RESET, False, False, True),
        # reached a backend: idempotent only
        ("GET", TIMEOUT, True, False, True),
        ("GET", RESET, True, False, True),
        ("PUT", RESET, True, False, True),
        ("DELETE", TIMEOUT, True, False, True),
        ("HEAD", RESET, True, False, True),
        ("OPTIONS", TIMEOUT, True, False, True),
        ("TRACE", RESET, True, False, True),
        ("POST", TIMEOUT, True, False, False),
        ("POST", RESET, True, False, False),
        ("PATCH", RESET, True, False, False),
        ("CONNECT", RESET, True, False, False),
        ("PURGE", RESET, True, False, False),  # unknown methods are not assumed idempotent
        ("get", RESET, True, False, False),  # methods are case-sensitive (RFC 9110 §9.1)
        # inconsistent input (a connect failure that was sent): the safe reading wins
        ("POST", CONNECT, True, False, False),
        ("GET", CONNECT, True, False, True),
        # anything reached the client: never
        ("GET", TIMEOUT, True, True, False),
        ("GET", RESET, True, True, False),
        ("GET", CONNECT, False, True, False),
        ("POST", CONNECT, False, True, False),
    ],
)
def test_decision_table(
    method: str, failure: FailureKind, sent: bool, started: bool, expected: bool
) -> None:
    assert decide(method, failure, sent=sent, started=started) is expected


@pytest.mark.parametrize(
    ("method", "failure", "sent", "started"),
    list(itertools.product(METHODS, [CONNECT, TIMEOUT, RESET], [False, True], [False, True])),
)
def test_full_product_of_method_failure_sent_started(
    method: str, failure: FailureKind, sent: bool, started: bool
) -> None:
    """Every combination: retry iff nothing reached the client, and either nothing reached a
    backend or the method is idempotent."""
    expected = not started and (not sent or method in IDEMPOTENT_METHODS)
    assert decide(method, failure, sent=sent, started=started) is expected


@pytest.mark.parametrize(
    ("method", "status", "started", "expected"),
    [
        ("GET", 503, False, True),
        ("GET", 502, False, True),
        ("PUT", 504, False, True),
        ("DELETE", 503, False, True),
        ("GET", 500, False, False),  # not listed
        ("GET", 404, False, False),
        ("GET", 503, True, False),  # already streaming the 503 to the client
        ("POST", 503, False, False),  # a listed status only for idempotent methods
        ("PATCH", 502, False, False),
        ("GET", None, False, False),  # no status given: nothing to match
    ],
)
def test_status_retries(method: str, status: int | None, started: bool, expected: bool) -> None:
    assert decide(method, STATUS, sent=True, started=started, status=status) is expected


def test_status_implies_the_request_was_sent() -> None:
    assert not decide("POST", STATUS, sent=False, status=503)


def test_no_status_retry_with_an_empty_list() -> None:
    policy = RetryPolicy(attempts=3)
    assert not decide("GET", STATUS, sent=True, status=503, policy=policy)


@pytest.mark.parametrize("failure", [CONNECT, TIMEOUT, RESET])
def test_a_body_that_cannot_be_replayed_is_never_retried(failure: FailureKind) -> None:
    assert not decide("PUT", failure, sent=True, replayable=False)
    assert not decide("PUT", failure, sent=False, replayable=False)


def test_status_retry_needs_a_replayable_body() -> None:
    assert not decide("PUT", STATUS, sent=True, status=503, replayable=False)


@pytest.mark.parametrize(
    ("attempts", "attempt", "expected"),
    [
        (0, 1, False),  # retries off: not even a connect failure
        (1, 1, True),
        (1, 2, False),
        (2, 1, True),
        (2, 2, True),
        (2, 3, False),
        (5, 99, False),
    ],
)
def test_never_beyond_attempts(attempts: int, attempt: int, expected: bool) -> None:
    policy = RetryPolicy(attempts=attempts, retry_on_status=GATEWAY)
    assert decide("GET", CONNECT, sent=False, attempt=attempt, policy=policy) is expected
    assert decide("GET", RESET, sent=True, attempt=attempt, policy=policy) is expected
    assert decide("GET", STATUS, sent=True, status=502, attempt=attempt, policy=policy) is expected


def test_attempt_counts_from_one() -> None:
    with pytest.raises(ValueError, match="from 1"):
        decide("GET", CONNECT, sent=False, attempt=0)


def test_defaults() -> None:
    p = RetryPolicy()
    assert p.attempts == 1
    assert p.per_try_timeout_s is None
    assert p.retry_on_status == frozenset()
    assert p.retry_buffer_bytes == 64 * 1024
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.attempts = 3  # type: ignore[misc]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"attempts": -1}, "attempts must be 0 or more"),
        ({"attempts": 1.5}, "attempts must be a whole number"),
        ({"attempts": True}, "attempts must be a whole number"),
        ({"per_try_timeout_s": 0}, "per_try_timeout_s must be"),
        ({"per_try_timeout_s": -1.0}, "per_try_timeout_s must be"),
        ({"per_try_timeout_s": float("inf")}, "per_try_timeout_s must be"),
        ({"per_try_timeout_s": float("nan")}, "per_try_timeout_s must be"),
        ({"retry_on_status": {503}}, "must be a frozenset"),
        ({"retry_on_status": frozenset({503, 99, 600})}, "99, 600"),
        ({"retry_on_status": frozenset({"503"})}, "from 100 to 599"),
        ({"retry_buffer_bytes": -1}, "retry_buffer_bytes must be"),
        ({"retry_buffer_bytes": 1.0}, "retry_buffer_bytes must be"),
    ],
)
def test_policy_validates(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]


def test_failure_kinds_serialise_as_words() -> None:
    assert [k.value for k in FailureKind] == ["connect", "timeout", "reset", "status"]


# --- RetryBudget ------------------------------------------------------------------------------


def test_min_concurrency_applies_with_few_requests() -> None:
    b = RetryBudget(budget_percent=20.0, min_concurrency=3)
    assert [b.try_acquire(active_requests=5) for _ in range(4)] == [True, True, True, False]
    assert b.active_retries == 3
    assert b.stats() == RetryBudgetStats(
        budget_percent=20.0,
        min_concurrency=3,
        active_retries=3,
        acquired_total=3,
        exhausted_total=1,
    )


@pytest.mark.parametrize(
    ("active_requests", "limit"),
    [(0, 3), (10, 3), (14, 3), (20, 4), (24, 4), (25, 5), (100, 20), (1000, 200)],
)
def test_budget_is_a_share_of_active_requests(active_requests: int, limit: int) -> None:
    b = RetryBudget(budget_percent=20.0, min_concurrency=3)
    assert b.limit(active_requests) == limit
    granted = 0
    while b.try_acquire(active_requests):
        granted += 1
    assert granted == limit
    assert b.stats().exhausted_total == 1


def test_release_makes_room_again() -> None:
    b = RetryBudget(budget_percent=10.0, min_concurrency=1)
    assert b.try_acquire(0)
    assert not b.try_acquire(0)
    b.release()
    assert b.try_acquire(0)
    assert b.stats().acquired_total == 2


def test_peek_takes_nothing() -> None:
    b = RetryBudget(min_concurrency=1)
    assert b.peek(0)
    assert b.peek(0)
    assert b.try_acquire(0)
    assert not b.peek(0)
    s = b.stats()
    assert (s.acquired_total, s.exhausted_total, s.active_retries) == (1, 0, 1)


def test_release_without_acquire_is_an_error() -> None:
    b = RetryBudget()
    with pytest.raises(RuntimeError, match="without a matching try_acquire"):
        b.release()


def test_zero_budget_and_zero_minimum_allow_no_retries() -> None:
    b = RetryBudget(budget_percent=0.0, min_concurrency=0)
    assert not b.try_acquire(1_000_000)
    assert b.stats().exhausted_total == 1


def test_full_budget_allows_as_many_retries_as_requests() -> None:
    b = RetryBudget(budget_percent=100.0, min_concurrency=0)
    assert b.limit(7) == 7


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"budget_percent": -1.0}, "budget_percent must be"),
        ({"budget_percent": 101.0}, "budget_percent must be"),
        ({"budget_percent": float("nan")}, "budget_percent must be"),
        ({"min_concurrency": -1}, "min_concurrency must be 0 or more"),
    ],
)
def test_budget_validates(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RetryBudget(**kwargs)  # type: ignore[arg-type]


def test_budget_refuses_a_min_concurrency_of_the_wrong_type() -> None:
    # The compiled build checks argument types on entry (TypeError); pure Python, the validator.
    with pytest.raises(
        (TypeError, ValueError), match=r"min_concurrency must be a whole number|int object expected"
    ):
        RetryBudget(min_concurrency=2.5)  # type: ignore[arg-type]


# -- RetryPolicy.decide: the balancer's whole rule, with its reasons ---------------------------

R = RetryReason


def balancer_decides(
    method: str,
    failure: FailureKind,
    *,
    retries: int = 0,
    connect_failures: int = 0,
    broken_retried: bool = False,
    replayable: bool = True,
    status: int | None = None,
) -> RetryDecision:
    policy = RetryPolicy(attempts=1, retry_on_status=GATEWAY, connect_attempts=3)
    return policy.decide(
        method,
        failure,
        retries=retries,
        connect_failures=connect_failures,
        broken_retried=broken_retried,
        body_replayable=replayable,
        status=status,
    )


@pytest.mark.parametrize(
    ("method", "failure", "kwargs", "reason"),
    [
        # connect failures go elsewhere whatever the method, outside attempts and the budget
        ("POST", CONNECT, {"connect_failures": 1}, R.CONNECT_FAILED),
        ("GET", CONNECT, {"connect_failures": 2, "retries": 5}, R.CONNECT_FAILED),
        ("GET", CONNECT, {"connect_failures": 3}, R.CONNECT_LIMIT),
        # a broken connection: once a request, idempotent and replayable only
        ("GET", RESET, {"retries": 1}, R.BROKEN_ONCE),
        ("GET", RESET, {"broken_retried": True}, R.RETRYABLE),
        ("GET", RESET, {"broken_retried": True, "retries": 1}, R.ATTEMPTS_SPENT),
        ("POST", RESET, {}, R.NOT_IDEMPOTENT),
        ("PUT", RESET, {"replayable": False}, R.BODY_NOT_REPLAYABLE),
        # timeouts and listed statuses: the policy, within attempts
        ("GET", TIMEOUT, {}, R.RETRYABLE),
        ("PATCH", TIMEOUT, {}, R.NOT_IDEMPOTENT),
        ("GET", STATUS, {"status": 503}, R.RETRYABLE),
        ("GET", STATUS, {"status": 500}, R.STATUS_NOT_LISTED),
        ("POST", STATUS, {"status": 503}, R.NOT_IDEMPOTENT),
        ("GET", STATUS, {"status": 503, "retries": 1}, R.ATTEMPTS_SPENT),
        ("DELETE", STATUS, {"status": 502, "replayable": False}, R.BODY_NOT_REPLAYABLE),
    ],
)
def test_decide_gives_the_reason(
    method: str, failure: FailureKind, kwargs: dict[str, int | bool], reason: RetryReason
) -> None:
    d = balancer_decides(method, failure, **kwargs)  # type: ignore[arg-type]
    assert d.reason is reason
    assert d.retry is (reason in (R.CONNECT_FAILED, R.BROKEN_ONCE, R.RETRYABLE))
    # Only a policy retry counts against attempts and takes the budget.
    assert d.budgeted is (reason is R.RETRYABLE)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("failure", [TIMEOUT, RESET, STATUS])
def test_decide_agrees_with_may_retry_once_the_broken_retry_is_spent(
    method: str, failure: FailureKind
) -> None:
    """``decide`` adds two rules to ``may_retry``; past them it says the same for a request
    that reached a backend."""
    for retries, replayable in itertools.product((0, 1), (True, False)):
        d = balancer_decides(
            method,
            failure,
            retries=retries,
            broken_retried=True,
            replayable=replayable,
            status=503,
        )
        assert d.retry == decide(
            method, failure, sent=True, replayable=replayable, attempt=retries + 1, status=503
        )


def test_connect_attempts_is_validated() -> None:
    with pytest.raises(ValueError, match="connect_attempts"):
        RetryPolicy(connect_attempts=0)
