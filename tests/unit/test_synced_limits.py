"""Buckets decided locally and settled with a shared store (``balancer/synced_limits.py``),
against a store simulated here with the core's ``Gcra`` (the Redis script's arithmetic), on a
fake clock: what three replicas admit together, and what each mode does while the store is
lost."""

from __future__ import annotations

import math

import pytest

from lbtui.balancer.synced_limits import ALLOW, DENY, LOCAL, SYNCED, Link, SyncedBucket, SyncedKeys
from lbtui.core.limitstore import Gcra


class SharedBucket:
    """The store's side of one bucket: the Lua script's ``force`` settlement, in Python."""

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.g = Gcra(rate, burst)
        self.tat = now

    def settle(self, cost: float, now: float) -> float:
        self.tat = max(self.tat, now) + cost * self.g.interval
        return self.tat - now


def run_replicas(
    n: int, rate: float, burst: float, offered_each: float, seconds: float, sync_s: float
) -> int:
    """``n`` replicas, each offered ``offered_each`` req/s evenly, settling every ``sync_s``
    (staggered); returns how many they admitted together."""
    link = Link()
    shared = SharedBucket(rate, burst, 0.0)
    replicas = [SyncedBucket("k", rate, burst, 0.0, link) for _ in range(n)]
    step = 1.0 / offered_each
    admitted = 0
    t = 0.0
    next_sync = [sync_s * (i + 1) / n for i in range(n)]
    while t < seconds:
        for i, r in enumerate(replicas):
            now = t + step * i / n
            if now >= next_sync[i]:
                r.settle(shared.settle(r.take_pending(), now), now)
                next_sync[i] += sync_s
            admitted += r.allow(now)
        t += step
    return admitted


@pytest.mark.parametrize("sync_s", [0.02, 0.05, 0.1])
def test_three_replicas_admit_what_one_bucket_allows_within_ten_percent(sync_s: float) -> None:
    rate, burst, seconds = 100.0, 20.0, 20.0
    allowed = rate * seconds + burst
    admitted = run_replicas(3, rate, burst, offered_each=100.0, seconds=seconds, sync_s=sync_s)
    assert abs(admitted - allowed) / allowed < 0.10, (admitted, allowed)


def test_without_settling_three_replicas_would_admit_three_times_the_limit() -> None:
    """The baseline the settlement exists for (so the test above can fail)."""
    admitted = run_replicas(3, 100.0, 20.0, offered_each=100.0, seconds=20.0, sync_s=1e9)
    assert admitted > 2.5 * (100.0 * 20.0 + 20.0)


def test_a_settlement_takes_the_shared_debt_plus_what_was_admitted_meanwhile() -> None:
    link = Link()
    b = SyncedBucket("k", 10.0, 5.0, 0.0, link)
    assert all(b.allow(0.0) for _ in range(2))
    assert b.take_pending() == 2.0
    b.allow(0.0)  # admitted while the answer travels
    b.settle(0.4, 0.0)  # others spent too: the shared bucket is 0.4 s (4 tokens) behind
    assert b.tokens(0.0) == pytest.approx(0.0)  # 5 - 4 - 1
    assert not b.allow(0.0)
    assert b.take_pending() == 1.0


def test_a_lost_store_in_local_mode_enforces_this_replicas_share() -> None:
    link = Link()
    b = SyncedBucket("k", 90.0, 30.0, 0.0, link)
    link.peers = 3
    link.mode = LOCAL
    b.degrade(0.0)
    admitted = sum(b.allow(i / 1000) for i in range(10_000))  # 1,000 req/s for 10 s
    assert admitted == pytest.approx(30 * 10 + 10, abs=2)  # rate/3 for 10 s + burst/3
    assert b.take_pending() == 0.0  # nothing of the outage is sent later
    link.mode = SYNCED
    b.restore(10.0)
    assert b.rate == 90.0
    assert b.burst == 30.0
    assert sum(b.allow(10.0) for _ in range(40)) <= 30


def test_deny_refuses_with_a_retry_after_and_allow_admits_everything() -> None:
    link = Link()
    b = SyncedBucket("k", 1.0, 1.0, 0.0, link)
    link.mode = DENY
    d = b.decide(0.0)
    assert not d.allowed
    assert math.isfinite(d.retry_after_s)
    assert d.retry_after_s > 0
    link.mode = ALLOW
    assert all(b.allow(0.0) for _ in range(100))
    assert b.stats(0.0).allowed_total == 100
    assert b.stats(0.0).rejected_total == 1


def test_client_keys_settle_each_and_a_full_key_is_dropped() -> None:
    link = Link()
    k = SyncedKeys("p:{c:", 10.0, 2.0, link, max_keys=10)
    assert k.allow("a", 0.0)
    assert k.allow("a", 0.0)
    assert not k.allow("a", 0.0)
    assert k.allow("b", 0.0)
    sent = dict(k.take_pending())
    assert sent == {"a": 2.0, "b": 1.0}
    k.settle("a", 0.2, 0.0)
    k.settle("b", 0.0, 0.0)  # the shared bucket of b is full: nothing to keep here
    assert len(k) == 1
    assert k.remaining("a", 0.0) == pytest.approx(0.0)
    assert dict(k.take_pending()) == {"a": 0.0}  # held keys are read back with cost 0


def test_the_key_cap_evicts_the_least_recently_used() -> None:
    k = SyncedKeys("p:{c:", 1.0, 1.0, Link(), max_keys=2)
    for key in "abc":
        assert k.allow(key, 0.0)
    assert len(k) == 2
    assert k.stats(0.0).evicted_total == 1
