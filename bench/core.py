"""Cost of the core's per-request policy calls, in nanoseconds per operation.

Run: ``.venv/bin/python bench/core.py [--quick]``. Each case times a loop that advances a fake
clock by 1 µs per operation, with the methods bound to locals as a hot path would hold them,
and subtracts the cost of the same loop without the calls; the best of several repeats is
shown. Every figure stands beside its target: 2 µs per operation, the share of the proxy's
≈ 40 µs per request that admission, retry and breaker policy may take together.
"""

from __future__ import annotations

import argparse
import sys
import timeit
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from lbtui.core.limiting import (
    ConcurrencyLimit,
    KeyedLimiter,
    QuotaPolicy,
    TokenBucket,
    ratelimit_headers,
)
from lbtui.core.retry import FailureKind, RetryBudget, RetryPolicy

TARGET_NS = 2000.0

LOOP = """
for i in range(n):
    t += 0.000001
"""


@dataclass(frozen=True)
class Case:
    name: str
    body: str
    """Loop body after the clock step; sees ``t``, ``i`` and whatever ``make`` returns."""
    make: Callable[[], dict[str, Any]]


def _bucket() -> dict[str, Any]:
    b = TokenBucket(rate=1e9, burst=1e9, now=0.0)  # always admits: the common path
    return {"allow": b.allow}


def _bucket_rejecting() -> dict[str, Any]:
    b = TokenBucket(rate=1.0, burst=1.0, now=0.0)
    b.allow(0.0)
    return {"allow": b.allow}


def _bucket_headers() -> dict[str, Any]:
    b = TokenBucket(rate=1e6, burst=1e6, now=0.0)
    return {
        "decide": b.decide,
        "headers": ratelimit_headers,
        "policy": QuotaPolicy.for_bucket("default", 1e6, 1e6),
    }


def _keyed() -> dict[str, Any]:
    k = KeyedLimiter(rate=1e6, burst=1e6)
    keys = [f"10.0.{i >> 8}.{i & 255}" for i in range(10_000)]
    for key in keys:
        k.allow(key, 0.0)
    return {"allow": k.allow, "keys": keys}


def _keyed_churn() -> dict[str, Any]:
    k = KeyedLimiter(rate=1.0, burst=10.0, max_keys=10_000)
    return {"allow": k.allow}


def _concurrency() -> dict[str, Any]:
    c = ConcurrencyLimit(1000)
    return {"acquire": c.try_acquire, "release": c.release}


def _budget() -> dict[str, Any]:
    b = RetryBudget()
    return {"acquire": b.try_acquire, "release": b.release}


def _may_retry() -> dict[str, Any]:
    p = RetryPolicy(attempts=2, retry_on_status=frozenset({502, 503, 504}))
    return {"may_retry": p.may_retry, "RESET": FailureKind.RESET}


def _breaker() -> dict[str, Any] | None:
    try:
        from lbtui.core.breaker import BreakerConfig, CircuitBreaker
    except ImportError:
        return None
    b = CircuitBreaker(BreakerConfig(), 0.0)
    return {"allow": b.allow, "record": b.record}


CASES = [
    Case("TokenBucket.allow, admitted", "allow(t)", _bucket),
    Case("TokenBucket.allow, rejected", "allow(0.5)", _bucket_rejecting),
    Case(
        "TokenBucket.decide + ratelimit_headers",
        "headers(policy, decide(t))",
        _bucket_headers,
    ),
    Case("KeyedLimiter.allow, 10k keys held", "allow(keys[i % 10000], t)", _keyed),
    Case("KeyedLimiter.allow, a new key each time (cap 10k)", "allow(i, t)", _keyed_churn),
    Case("ConcurrencyLimit acquire + release", "acquire()\n    release()", _concurrency),
    Case("RetryBudget acquire + release", "acquire(100)\n    release()", _budget),
    Case(
        "RetryPolicy.may_retry",
        "may_retry('GET', RESET, attempt=1, request_sent=True,"
        " response_started=False, body_replayable=True)",
        _may_retry,
    ),
]


def measure(body: str, names: dict[str, Any], n: int, repeat: int) -> float:
    """Best ns per iteration of ``body`` minus the bare loop."""
    stmt = LOOP + "    " + body + "\n"
    env = {**names, "n": n, "t": 0.0}
    # The loop runs in a function so that locals are fast locals, as in a real hot path.
    src = "def run(" + ", ".join(env) + "):\n" + "\n".join("    " + ln for ln in stmt.splitlines())
    bare = "def run(" + ", ".join(env) + "):\n" + "\n".join("    " + ln for ln in LOOP.splitlines())
    ns_with: dict[str, Any] = {}
    ns_bare: dict[str, Any] = {}
    exec(src, ns_with)
    exec(bare, ns_bare)
    run_with, run_bare = ns_with["run"], ns_bare["run"]
    args = list(env.values())
    with_s = min(timeit.repeat(lambda: run_with(*args), number=1, repeat=repeat))
    bare_s = min(timeit.repeat(lambda: run_bare(*args), number=1, repeat=repeat))
    return max(0.0, (with_s - bare_s) / n * 1e9)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer iterations (a smoke run)")
    args = parser.parse_args(argv)
    n, repeat = (20_000, 3) if args.quick else (200_000, 5)

    cases = list(CASES)
    if _breaker() is not None:
        cases.append(
            Case(
                "CircuitBreaker allow + record (closed)",
                "allow(t)\n    record(i % 7 == 0, 0.002, t)",
                lambda: _breaker() or {},
            )
        )
    rows = [(c.name, measure(c.body, c.make(), n, repeat)) for c in cases]
    if _breaker() is None:
        rows.append(("CircuitBreaker allow + record: lbtui.core.breaker not importable", -1.0))

    width = max(len(name) for name, _ in rows)
    print(f"{'operation':<{width}}  {'ns/op':>8}  {'target':>8}  verdict")
    print(f"{'-' * width}  {'-' * 8}  {'-' * 8}  -------")
    over = 0
    for name, ns in rows:
        if ns < 0:
            print(f"{name:<{width}}  {'—':>8}  {TARGET_NS:>8.0f}  skipped")
            continue
        ok = ns < TARGET_NS
        over += not ok
        print(f"{name:<{width}}  {ns:>8.0f}  {TARGET_NS:>8.0f}  {'ok' if ok else 'OVER'}")
    print(f"\n{n} operations a case, best of {repeat}; Python {sys.version.split()[0]}")
    return 1 if over else 0


if __name__ == "__main__":
    raise SystemExit(main())
