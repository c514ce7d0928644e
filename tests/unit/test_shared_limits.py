"""Limiters in shared memory: one quota for several processes, on a fake clock."""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
from collections.abc import Iterator
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Event
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lbtui.balancer import shared_layout
from lbtui.balancer.admission import Admission
from lbtui.balancer.shared import SharedLimits, SharedLimitsHandle
from lbtui.config import LimitsConfig
from lbtui.core.limiting import KeyedLimiter, TokenBucket

SPAWN = multiprocessing.get_context("spawn")
SHM = Path("/dev/shm")


@pytest.fixture
def zone() -> Iterator[SharedLimits]:
    z = SharedLimits.create(workers=3, max_clients=64, named_slots=8)
    yield z
    z.close()


@pytest.fixture
def worker(zone: SharedLimits) -> Iterator[SharedLimits]:
    w = SharedLimits.attach(zone.handle, 1)
    yield w
    w.close()


# --- token bucket -----------------------------------------------------------------------------

_ops = st.lists(
    st.tuples(
        st.sampled_from(["decide", "allow", "peek", "reconfigure"]),
        st.floats(-0.05, 1.0),  # time step; a step back is tolerated
        st.sampled_from([1.0, 1.0, 1.0, 0.5, 2.5, 40.0]),  # cost
        st.sampled_from([(10.0, 5.0), (3.0, 7.0), (0.5, 2.0), (100.0, 1.0)]),  # reconfigure to
    ),
    max_size=60,
)


@settings(max_examples=60, deadline=None)
@given(ops=_ops)
def test_shared_bucket_decides_exactly_like_token_bucket(
    ops: list[tuple[str, float, float, tuple[float, float]]],
) -> None:
    with SharedLimits.create(workers=2, max_clients=1) as z:
        w = SharedLimits.attach(z.handle, 1)
        try:
            plain = TokenBucket(4.0, 3.0, 0.0)
            views = [z.token_bucket("global", 4.0, 3.0, 0.0), w.token_bucket("global", 4, 3, 0.0)]
            now = 0.0
            for i, (op, step, cost, (rate, burst)) in enumerate(ops):
                now += step
                shared = views[i % 2]
                if op == "decide":
                    assert shared.decide(now, cost) == plain.decide(now, cost)
                elif op == "allow":
                    assert shared.allow(now, cost) == plain.allow(now, cost)
                elif op == "peek":
                    assert shared.peek(now, cost) == plain.peek(now, cost)
                elif (rate, burst) != (plain.rate, plain.burst):  # a repeat changes nothing
                    shared.reconfigure(rate, burst, now)
                    plain.reconfigure(rate, burst, now)
                other = views[(i + 1) % 2]
                assert other.tokens(now) == plain.tokens(now)
                assert other.retry_after(now, cost) == plain.retry_after(now, cost)
                assert other.reset_after(now) == plain.reset_after(now)
                assert (other.rate, other.burst) == (plain.rate, plain.burst)
                assert other.stats(now) == plain.stats(now)
        finally:
            w.close()


def test_two_views_share_one_quota(zone: SharedLimits, worker: SharedLimits) -> None:
    a = zone.token_bucket("global", 1.0, 10.0, 0.0)
    b = worker.token_bucket("global", 1.0, 10.0, 0.0)
    admitted = sum((a if i % 2 else b).allow(0.0) for i in range(30))
    assert admitted == 10
    for view in (a, b):
        stats = view.stats(0.0)
        assert (stats.allowed_total, stats.rejected_total, stats.tokens) == (10, 20, 0.0)
    assert b.decide(1.0).allowed  # one token back a second later, for either view
    assert not a.decide(1.0).allowed


def test_a_bucket_made_again_attaches_instead_of_starting_full(
    zone: SharedLimits, worker: SharedLimits
) -> None:
    a = zone.token_bucket("cap:web-1", 2.0, 5.0, 0.0)
    assert all(a.allow(0.0) for _ in range(4))
    assert worker.token_bucket("cap:web-1", 2.0, 5.0, 0.0).tokens(0.0) == 1.0
    assert zone.token_bucket("cap:web-2", 2.0, 5.0, 0.0).tokens(0.0) == 5.0  # another name
    # Made again with another rate and burst: reconfigured, the tokens held kept.
    c = worker.token_bucket("cap:web-1", 4.0, 3.0, 0.0)
    assert (a.rate, a.burst, a.tokens(0.0)) == (4.0, 3.0, 1.0)
    assert c.stats(0.0).allowed_total == 4


def test_reconfigure_repeated_by_every_process_keeps_the_tokens_held(
    zone: SharedLimits, worker: SharedLimits
) -> None:
    a = zone.token_bucket("global", 1.0, 10.0, 0.0)
    b = worker.token_bucket("global", 1.0, 10.0, 0.0)
    plain = TokenBucket(1.0, 10.0, 0.0)
    for _ in range(7):
        assert (a.allow(0.0), plain.allow(0.0)) == (True, True)
    a.reconfigure(2.0, 5.0, 0.5)
    b.reconfigure(2.0, 5.0, 0.6)  # the same change arriving at the next process
    plain.reconfigure(2.0, 5.0, 0.5)
    assert a.tokens(1.0) == b.tokens(1.0) == plain.tokens(1.0) == 4.5
    a.reconfigure(2.0, 2.0, 1.0)  # a burst below the tokens held caps them
    b.reconfigure(2.0, 2.0, 1.0)
    assert b.tokens(1.0) == 2.0


def test_named_slots_run_out_with_a_clear_error(zone: SharedLimits) -> None:
    for i in range(zone.handle.named_slots):
        zone.token_bucket(f"cap:b{i}", 1.0, 2.0, 0.0)
    with pytest.raises(RuntimeError, match="named_slots"):
        zone.token_bucket("one-too-many", 1.0, 2.0, 0.0)
    with pytest.raises(ValueError, match="rate must be"):
        zone.token_bucket("cap:b0", 0.0, 2.0, 0.0)


def _take_from_global(handle: SharedLimitsHandle, go: Event, out: Queue[int]) -> None:
    """In a worker process: as many tokens of "global" as it can get at one instant."""
    zone = SharedLimits.attach(handle, 1)
    try:
        bucket = zone.token_bucket("global", 1.0, 500.0, 0.0)
        go.wait(30)
        out.put(sum(bucket.allow(0.0) for _ in range(1000)))
    finally:
        zone.close()


def test_a_second_process_takes_from_the_same_bucket() -> None:
    with SharedLimits.create(workers=2, max_clients=16) as z:
        bucket = z.token_bucket("global", 1.0, 500.0, 0.0)
        assert sum(bucket.allow(0.0) for _ in range(20)) == 20  # before the worker attaches
        go = SPAWN.Event()
        out: Queue[int] = SPAWN.Queue()
        child = SPAWN.Process(target=_take_from_global, args=(z.handle, go, out), daemon=True)
        child.start()
        try:
            go.set()
            here = sum(bucket.allow(0.0) for _ in range(1000))
            there = out.get(timeout=60)
            child.join(30)
            assert child.exitcode == 0
        finally:
            if child.is_alive() and child.pid is not None:
                os.kill(child.pid, signal.SIGKILL)
                child.join(10)
            out.close()
            out.join_thread()
        assert 20 + here + there == 500
        stats = bucket.stats(0.0)
        assert (stats.allowed_total, stats.rejected_total) == (500, 2020 - 500)


# --- per-client buckets -----------------------------------------------------------------------


def test_keyed_decides_like_keyed_limiter_with_keys_independent(
    zone: SharedLimits, worker: SharedLimits
) -> None:
    views = [zone.keyed_limiter(2.0, 3.0, max_keys=64), worker.keyed_limiter(2, 3, max_keys=64)]
    plain = KeyedLimiter(2.0, 3.0, max_keys=64)
    steps = [("a", 0.0), ("a", 0.0), ("a", 0.0), ("a", 0.0), ("b", 0.0), ("a", 0.25)]
    steps += [("a", 0.5), ("b", 0.5), ("c", 0.6), ("a", 0.6), ("c", 9.0), ("a", 9.0)]
    for i, (key, now) in enumerate(steps):
        assert views[i % 2].decide(key, now) == plain.decide(key, now)
        for key2 in "abcd":
            other = views[(i + 1) % 2]
            assert other.remaining(key2, now) == plain.remaining(key2, now)
            assert other.retry_after(key2, now) == plain.retry_after(key2, now)
            assert other.reset_after(key2, now) == plain.reset_after(key2, now)
            assert other.peek(key2, now) == plain.peek(key2, now)
            assert (key2 in other) == (key2 in plain)
    assert not views[0].allow("a", 9.0, cost=4.0)  # above the burst: never
    stats, expected = views[1].stats(9.0), plain.stats(9.0)
    assert (stats.allowed_total, stats.rejected_total) == (
        expected.allowed_total,
        expected.rejected_total + 1,
    )
    assert (stats.keys, len(views[0]), stats.max_keys) == (3, 3, 64)


def test_keyed_table_is_bounded_evicts_live_buckets_and_reuses_full_ones() -> None:
    with SharedLimits.create(workers=1, max_clients=4) as z:
        assert z.handle.client_slots == 16
        limiter = z.keyed_limiter(1.0, 5.0, max_keys=4)
        assert all(limiter.allow(f"10.0.0.{i}", 0.0) for i in range(200))
        stats = limiter.stats(0.0)
        assert stats.evicted_total > 0  # the table was full of live buckets
        assert stats.keys == len(limiter) <= 16 + 15
        assert stats.expired_total == 0
        # A thousand seconds on every bucket is full again, the same as none: 15 new clients
        # (fewer than a window) take free or full slots, and no live bucket is evicted.
        assert all(limiter.allow(f"10.0.1.{i}", 1000.0) for i in range(15))
        later = limiter.stats(1000.0)
        assert later.evicted_total == stats.evicted_total
        assert later.expired_total + (later.keys - stats.keys) == 15
        assert later.expired_total > 0


def test_sweep_frees_full_buckets_a_bounded_slice_at_a_time() -> None:
    with SharedLimits.create(workers=1, max_clients=1024) as z:
        limiter = z.keyed_limiter(1.0, 5.0, max_keys=1024)
        for i in range(600):
            limiter.allow(f"client-{i}", 0.0)
        assert len(limiter) == 600
        slots = z.handle.client_slots + 15
        for _ in range(-(-slots // 512)):  # a whole round: nobody is full again yet
            assert limiter.sweep(0.5) == 0
        assert len(limiter) == 600
        dropped = []
        for _ in range(-(-slots // 512)):
            dropped.append(limiter.sweep(100.0))
        assert max(dropped) <= 512
        assert sum(dropped) == 600
        assert len(limiter) == 0
        assert limiter.stats(100.0).expired_total == 600
        assert "client-1" not in limiter
        assert limiter.remaining("client-1", 100.0) == 5.0


def test_keyed_reconfigure_repeated_by_every_process_keeps_the_tokens_held(
    zone: SharedLimits, worker: SharedLimits
) -> None:
    a = zone.keyed_limiter(1.0, 5.0, max_keys=64)
    b = worker.keyed_limiter(1.0, 5.0, max_keys=64)
    plain = KeyedLimiter(1.0, 5.0)
    for _ in range(3):
        assert (a.allow("x", 0.0), plain.allow("x", 0.0)) == (True, True)
    a.allow("y", 0.0)
    plain.allow("y", 0.0)
    a.reconfigure(2.0, 4.0, 0.0)
    b.reconfigure(2.0, 4.0, 0.1)
    plain.reconfigure(2.0, 4.0, 0.0)
    assert a.remaining("x", 0.0) == b.remaining("x", 0.0) == plain.remaining("x", 0.0) == 2.0
    assert "y" not in b  # 4 of 5 held: full under the new burst, dropped
    assert "y" not in plain
    assert (b.rate, b.burst, len(b)) == (2.0, 4.0, 1)
    # keyed_limiter with the table's own rate and burst attaches; with others, starts afresh.
    assert worker.keyed_limiter(2.0, 4.0, max_keys=64).remaining("x", 0.0) == 2.0
    assert worker.keyed_limiter(3.0, 4.0, max_keys=64).remaining("x", 0.0) == 4.0
    assert len(a) == 0


# --- concurrency ------------------------------------------------------------------------------


def test_concurrency_cap_holds_across_processes(zone: SharedLimits, worker: SharedLimits) -> None:
    a = zone.concurrency_limit(3)
    b = worker.concurrency_limit(3)
    results = [(a if i % 2 else b).try_acquire() for i in range(6)]
    assert results == [True, True, True, False, False, False]
    assert (a.peek(), b.peek()) == (False, False)
    stats = a.stats()
    assert (stats.max_in_flight, stats.in_flight, stats.peak_in_flight) == (3, 3, 3)
    assert (stats.acquired_total, stats.rejected_total) == (3, 3)
    b.release()
    assert a.try_acquire()  # a slot freed by the other process
    a.release()
    a.release()
    assert b.in_flight == 1
    with pytest.raises(RuntimeError, match="without a matching"):
        a.release()  # a process gives back only what it took
    b.reconfigure(1)
    assert a.max_in_flight == 1
    assert not a.try_acquire()


def test_unlimited_concurrency_still_counts(zone: SharedLimits, worker: SharedLimits) -> None:
    a = zone.concurrency_limit(None)
    b = worker.concurrency_limit(None)
    assert all(v.try_acquire() for v in (a, b, a, b, b))
    stats = b.stats()
    assert (stats.max_in_flight, stats.in_flight, stats.acquired_total) == (None, 5, 5)
    assert stats.peak_in_flight >= 5  # the sum of each process's peak: an upper bound
    assert a.peek()
    for v in (a, b, a, b, b):
        v.release()
    assert a.in_flight == 0


def test_a_restarted_worker_does_not_keep_its_predecessors_slots(zone: SharedLimits) -> None:
    old = SharedLimits.attach(zone.handle, 2)
    limit = old.concurrency_limit(2)
    assert (limit.try_acquire(), limit.try_acquire()) == (True, True)
    old.close()  # died with two requests in flight
    assert not zone.concurrency_limit(2).try_acquire()
    new = SharedLimits.attach(zone.handle, 2)
    try:
        assert new.concurrency_limit(2).in_flight == 0
        assert zone.concurrency_limit(2).try_acquire()
    finally:
        new.close()


# --- the zone ---------------------------------------------------------------------------------


@pytest.mark.skipif(not SHM.is_dir(), reason="POSIX shared memory is not under /dev/shm here")
def test_close_leaves_nothing_behind() -> None:
    z = SharedLimits.create(workers=2, max_clients=8)
    w = SharedLimits.attach(z.handle, 1)
    path = SHM / z.handle.shm_name
    bucket = w.token_bucket("global", 1.0, 2.0, 0.0)
    w.close()
    assert path.exists()  # a worker leaving does not remove the zone
    w.close()
    z.close()
    z.close()
    assert not path.exists()
    with pytest.raises(ValueError, match="released"):
        bucket.allow(0.0)


def test_attach_checks_the_worker_index(zone: SharedLimits) -> None:
    for index in (0, 3, -1):
        with pytest.raises(ValueError, match="worker must be from 1 to 2"):
            SharedLimits.attach(zone.handle, index)


def test_admission_over_two_processes_is_one_limit(
    zone: SharedLimits, worker: SharedLimits
) -> None:
    config = LimitsConfig(rps=100, burst=4, per_client_rps=1, per_client_burst=2, max_in_flight=2)
    views = [Admission(config, 0.0, zone), Admission(config, 0.0, worker)]
    scopes = []
    for i, ip in enumerate(["10.0.0.1"] * 3 + ["10.0.0.2"] * 2):
        rejection, _ = views[i % 2].admit(ip, None, 0.0)
        scopes.append(rejection.scope if rejection else None)
        if rejection is None:
            views[i % 2].release()
    assert scopes == [None, None, "client", None, "global"]
    for view in views:  # every process gets the same change; the repeat changes nothing
        view.reconfigure(config.model_copy(update={"rps": 50.0, "max_clients": 32}), 0.0)
    bucket = views[1].bucket
    assert bucket is not None
    assert (bucket.tokens(0.0), bucket.rate) == (0.0, 50.0)
    clients = views[1].clients
    assert clients is not None
    assert clients.remaining("10.0.0.1", 0.0) == 0.0
    assert views[0].admit("10.0.0.3", None, 0.01)[0] is not None  # half a token: not yet
    holders = [views[0], views[1]]
    for view in holders:
        assert view.admit("10.0.0.4", None, 10.0)[0] is None
    rejection, _ = views[0].admit("10.0.0.5", None, 10.0)
    assert rejection is not None
    assert rejection.scope == "concurrency"
    for view in holders:
        view.release()
    assert views[0].concurrency.stats().in_flight == 0


def _hold_the_lock(handle: SharedLimitsHandle, holding: Event, never: Event) -> None:
    """In a worker process: take the zone's lock and wait to be killed."""
    zone = SharedLimits.attach(handle, 1)
    handle.lock.acquire()
    holding.set()
    never.wait(60)
    zone.close()


def _killed_holding_the_lock(zone: SharedLimits) -> None:
    """A worker process takes the zone's lock and is SIGKILLed holding it."""
    holding, never = SPAWN.Event(), SPAWN.Event()
    child = SPAWN.Process(target=_hold_the_lock, args=(zone.handle, holding, never), daemon=True)
    child.start()
    try:
        assert holding.wait(60)
    finally:
        if child.pid is not None:
            os.kill(child.pid, signal.SIGKILL)
        child.join(30)
    assert child.exitcode == -signal.SIGKILL


def test_unstick_frees_the_lock_of_a_process_killed_holding_it(zone: SharedLimits) -> None:
    bucket = zone.token_bucket("global", 1.0, 5.0, 0.0)
    assert not zone.unstick(0.05)  # nobody holds it: nothing to do
    _killed_holding_the_lock(zone)
    assert zone.unstick(0.05)
    assert bucket.allow(0.0)
    assert bucket.stats(0.0).allowed_total == 1


def test_a_lock_left_by_a_killed_process_is_taken_over_on_the_request_path(
    zone: SharedLimits, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without anybody calling ``unstick``: the next decision waits ``LOCK_PATIENCE_S`` once,
    then goes on, instead of every process blocking for good."""
    monkeypatch.setattr(shared_layout, "LOCK_PATIENCE_S", 0.2)
    bucket = zone.token_bucket("global", 1.0, 5.0, 0.0)
    _killed_holding_the_lock(zone)
    t0 = time.monotonic()
    assert bucket.allow(0.0)
    assert 0.15 <= time.monotonic() - t0 < 5.0
    assert bucket.allow(0.0)  # and the lock works as before
    assert bucket.stats(0.0).allowed_total == 2


def test_admission_takes_the_lock_once_for_all_its_limiters(
    zone: SharedLimits, worker: SharedLimits
) -> None:
    """The zone's lock is held once a decision (global, client and concurrency inside it), and
    a second process waits for the whole decision, not between two limiters."""
    config = LimitsConfig(
        rps=100.0, burst=2, per_client_rps=100.0, per_client_burst=5, max_in_flight=8
    )
    here, there = Admission(config, 0.0, zone), Admission(config, 0.0, worker)
    t0 = time.monotonic()
    with zone.guard:  # held by this process: its own decisions go on inside it
        assert here.admit("10.0.0.1", None, 0.0)[0] is None
        assert here.admit("10.0.0.1", None, 0.0)[0] is None
    assert time.monotonic() - t0 < shared_layout.LOCK_PATIENCE_S / 2
    rejection, _ = there.admit("10.0.0.2", None, 0.0)  # the other process: the quota is one
    assert rejection is not None
    assert rejection.scope == "global"
    assert zone.concurrency_limit(8).stats().in_flight == 2
