"""One contract for every limiter store (``LimitStore``: this process's memory, the shared
zone of several processes, Redis), as ``limits`` runs its strategies' tests over every storage:
the same calls give the same decisions, whichever store keeps the state. The Redis store decides
locally between settlements, so here (no settlement) it must decide as memory does; what it
shares through a real Redis is ``tests/integration/test_redis_store.py``'s."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from lbtui.balancer.redis_store import RedisLimits
from lbtui.balancer.shared import SharedLimits
from lbtui.config import LimitsConfig
from lbtui.config.store import parse_store
from lbtui.core.limitstore import LimitStore, MemoryLimits


@pytest.fixture(params=["memory", "shared", "redis"])
def store(request: pytest.FixtureRequest) -> Iterator[LimitStore]:
    if request.param == "memory":
        yield MemoryLimits()
        return
    if request.param == "redis":
        address = parse_store("redis://127.0.0.1:1/0")
        assert address is not None
        yield RedisLimits(LimitsConfig(store=address.url), address)  # not started: no I/O
        return
    with SharedLimits.create(workers=1, max_clients=64) as zone:
        yield zone


def test_a_bucket_admits_its_burst_then_its_rate(store: LimitStore) -> None:
    b = store.token_bucket("global", 10.0, 5.0, 100.0)
    assert [b.allow(100.0) for _ in range(6)] == [True] * 5 + [False]
    d = b.decide(100.0)
    assert (d.allowed, d.remaining) == (False, 0.0)
    assert d.retry_after_s == pytest.approx(0.1)
    assert b.allow(100.1)  # one token back after 1/rate
    assert b.stats(100.1).rejected_total == 2


def test_a_reconfigured_bucket_keeps_its_tokens_capped(store: LimitStore) -> None:
    b = store.token_bucket("global", 10.0, 10.0, 0.0)
    for _ in range(4):
        b.allow(0.0)
    b.reconfigure(1.0, 3.0, 0.0)  # 6 held, capped to the new burst of 3
    assert b.tokens(0.0) == pytest.approx(3.0)
    assert (b.rate, b.burst) == (1.0, 3.0)


def test_client_keys_have_buckets_of_their_own(store: LimitStore) -> None:
    k = store.keyed_limiter(1.0, 2.0, max_keys=16)
    assert [k.allow("a", 0.0) for _ in range(3)] == [True, True, False]
    assert k.allow("b", 0.0)
    assert k.remaining("a", 0.0) == 0.0
    assert k.remaining("never seen", 0.0) == 2.0
    assert k.decide("a", 1.0).allowed


def test_the_concurrency_cap_holds_and_releases(store: LimitStore) -> None:
    c = store.concurrency_limit(2)
    assert [c.try_acquire() for _ in range(3)] == [True, True, False]
    c.release()
    assert c.in_flight == 1
    assert c.try_acquire()
    c.reconfigure(None)
    assert c.max_in_flight is None
    assert c.try_acquire()
