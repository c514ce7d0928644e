"""The balancing algorithms: what each one picks, and what all of them promise alike."""

from __future__ import annotations

import heapq
import random
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lbtui.core.balancing import (
    ALGORITHMS,
    Balancer,
    ConsistentHash,
    PeakEwma,
    make_balancer,
)


@dataclass
class FakeTarget:
    name: str
    weight: float = 1.0
    in_flight: int = 0


def pool(*weights: float) -> list[FakeTarget]:
    return [FakeTarget(chr(ord("a") + i), w) for i, w in enumerate(weights)]


def many(n: int, weight: float = 1.0) -> list[FakeTarget]:
    return [FakeTarget(f"backend-{i}", weight) for i in range(n)]


def build(name: str, targets: Sequence[FakeTarget], seed: int = 7) -> Balancer[FakeTarget]:
    return make_balancer(name, targets, rng=random.Random(seed))


def names(balancer: Balancer[FakeTarget], picks: int, **kw: Any) -> str:
    out = []
    for _ in range(picks):
        t = balancer.pick(0.0, **kw)
        assert t is not None
        out.append(t.name)
    return "".join(out)


def counts(
    balancer: Balancer[FakeTarget],
    picks: int,
    keys: bool = False,
    eligible: Callable[[FakeTarget], bool] | None = None,
) -> Counter[str]:
    seen: Counter[str] = Counter()
    for i in range(picks):
        t = balancer.pick(
            0.0, key=f"10.0.{i // 256}.{i % 256}" if keys else None, eligible=eligible
        )
        assert t is not None
        seen[t.name] += 1
    return seen


def excluding(name: str) -> Callable[[FakeTarget], bool]:
    return lambda t: t.name != name


HASHES = ["ip_hash", "consistent_hash"]
ALL = sorted(ALGORITHMS)


# --- registry --------------------------------------------------------------------------------


def test_registry_holds_every_config_name() -> None:
    assert set(ALGORITHMS) == {
        "round_robin",
        "weighted_round_robin",
        "least_connections",
        "least_request",
        "ip_hash",
        "consistent_hash",
        "random",
        "p2c_ewma",
    }
    for name, cls in ALGORITHMS.items():
        assert cls.name == name
        assert isinstance(make_balancer(name, pool(1, 1)), cls)


def test_unknown_name_lists_the_valid_ones() -> None:
    with pytest.raises(ValueError, match=r"round_robin.*p2c_ewma") as info:
        make_balancer("roundrobin", pool(1))
    assert "'roundrobin'" in str(info.value)


@pytest.mark.parametrize("name", ALL)
def test_duplicate_names_are_refused(name: str) -> None:
    with pytest.raises(ValueError, match="unique"):
        build(name, [FakeTarget("a"), FakeTarget("a")])


# --- what every algorithm promises ---------------------------------------------------------


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("keyed", [False, True])
def test_empty_pool_gives_none(name: str, keyed: bool) -> None:
    assert build(name, []).pick(0.0, key="k" if keyed else None) is None


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("keyed", [False, True])
def test_nothing_eligible_gives_none(name: str, keyed: bool) -> None:
    balancer = build(name, many(50))
    key = "10.1.2.3" if keyed else None
    assert balancer.pick(0.0, key=key, eligible=lambda t: False) is None


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("keyed", [False, True])
def test_all_weights_zero_gives_none(name: str, keyed: bool) -> None:
    balancer = build(name, many(10, weight=0.0))
    assert balancer.pick(0.0, key="10.1.2.3" if keyed else None) is None


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("keyed", [False, True])
def test_weight_zero_takes_no_traffic(name: str, keyed: bool) -> None:
    targets = pool(1, 0, 1, 0)
    seen = counts(build(name, targets), 2000, keys=keyed)
    assert set(seen) == {"a", "c"}
    # ... and so does a weight that drops to 0 after update() (draining, slow start at 0)
    balancer = build(name, targets)
    targets[0].weight = 0.0
    assert set(counts(balancer, 500, keys=keyed)) == {"c"}
    targets[0].weight = 1.0  # back, without an update()
    assert set(counts(balancer, 2000, keys=keyed)) == {"a", "c"}


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("keyed", [False, True])
def test_only_eligible_targets_are_picked(name: str, keyed: bool) -> None:
    allowed = {"backend-3", "backend-7", "backend-11"}
    balancer = build(name, many(20))
    seen = counts(balancer, 3000, keys=keyed, eligible=lambda t: t.name in allowed)
    assert set(seen) == allowed


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("keyed", [False, True])
def test_a_lone_eligible_target_in_a_large_pool_is_found(name: str, keyed: bool) -> None:
    """Samplers that keep missing fall back to a scan instead of giving up."""
    balancer = build(name, many(1000))
    for i in range(20):
        key = f"client-{i}" if keyed else None
        t = balancer.pick(0.0, key=key, eligible=lambda t: t.name == "backend-999")
        assert t is not None
        assert t.name == "backend-999"


@pytest.mark.parametrize("name", ALL)
def test_excluding_the_tried_target_gives_another(name: str) -> None:
    """The proxy's retry: the same request never lands on the same backend twice."""
    balancer = build(name, many(5))
    for i in range(200):
        key = f"10.9.0.{i}"
        first = balancer.pick(0.0, key=key)
        assert first is not None
        second = balancer.pick(0.0, key=key, eligible=excluding(first.name))
        assert second is not None
        assert second.name != first.name


@pytest.mark.parametrize("name", ALL)
def test_every_target_gets_traffic_when_all_are_equal(name: str) -> None:
    seen = counts(build(name, many(8)), 4000, keys=name in HASHES)
    assert len(seen) == 8
    assert min(seen.values()) > 4000 / 8 * 0.6


@pytest.mark.parametrize("name", ALL)
def test_update_adds_and_removes_targets(name: str) -> None:
    targets = pool(1, 1, 1)
    balancer = build(name, targets)
    counts(balancer, 100, keys=name in HASHES)
    balancer.update(targets[1:])
    assert "a" not in counts(balancer, 1000, keys=name in HASHES)
    balancer.update([*targets[1:], FakeTarget("d")])
    assert set(counts(balancer, 1000, keys=name in HASHES)) == {"b", "c", "d"}
    assert [t.name for t in balancer.targets] == ["b", "c", "d"]
    balancer.update([])
    assert balancer.pick(0.0) is None


@pytest.mark.parametrize("name", ALL)
def test_observe_and_describe_accept_any_target(name: str) -> None:
    targets = pool(1, 1)
    balancer = build(name, targets)
    balancer.observe(targets[0], 0.01, True, 1.0)
    balancer.observe(targets[1], 0.5, False, 1.0)
    balancer.observe(FakeTarget("gone"), 0.5, False, 1.0)
    described = balancer.describe(targets[0], 2.0)
    assert all(isinstance(v, float) for v in described.values())
    if name == "p2c_ewma":
        assert set(described) == {"ewma_ms", "in_flight", "penalty", "cost"}
    else:
        assert described == {}


def test_core_imports_no_io_or_ui() -> None:
    code = (
        "import sys, lbtui.core.balancing\n"
        "bad = {'asyncio', 'aiohttp', 'textual', 'rich', 'httpx'} & set(sys.modules)\n"
        "bad |= {m for m in sys.modules if m.startswith('lbtui.')} - {'lbtui.core',"
        " 'lbtui.core.balancing'}\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# --- round_robin -----------------------------------------------------------------------------


def test_round_robin_rotates_and_ignores_weights() -> None:
    assert names(build("round_robin", pool(5, 1, 1)), 7) == "abcabca"


def test_round_robin_skips_the_ineligible_without_losing_its_place() -> None:
    balancer = build("round_robin", pool(1, 1, 1, 1))
    assert names(balancer, 2) == "ab"
    assert names(balancer, 3, eligible=lambda t: t.name != "c") == "dab"
    assert names(balancer, 3) == "cda"


def test_round_robin_keeps_its_place_across_update() -> None:
    targets = pool(1, 1, 1, 1)
    balancer = build("round_robin", targets)
    assert names(balancer, 2) == "ab"
    balancer.update([targets[0], *targets[2:]])  # b leaves; c is still next
    assert names(balancer, 4) == "cdac"


# --- weighted_round_robin --------------------------------------------------------------------


def test_smooth_wrr_interleaves_as_nginx() -> None:
    balancer = build("weighted_round_robin", pool(5, 1, 1))
    assert names(balancer, 14) == "aabacaa" * 2


def test_smooth_wrr_takes_fractional_weights() -> None:
    balancer = build("weighted_round_robin", pool(0.5, 0.25, 0.25))
    seen = Counter(names(balancer, 400))
    assert seen == {"a": 200, "b": 100, "c": 100}


def test_smooth_wrr_shares_out_only_among_the_eligible() -> None:
    balancer = build("weighted_round_robin", pool(3, 2, 1))
    seen = Counter(names(balancer, 300, eligible=lambda t: t.name != "a"))
    assert seen == {"b": 200, "c": 100}


def test_smooth_wrr_reads_the_effective_weight_at_each_pick() -> None:
    targets = pool(1, 1)
    balancer = build("weighted_round_robin", targets)
    targets[1].weight = 3.0  # slow start ramping up without an update()
    assert Counter(names(balancer, 400)) == {"a": 100, "b": 300}


@settings(max_examples=60, deadline=None)
@given(
    weights=st.lists(st.integers(min_value=1, max_value=12), min_size=1, max_size=8),
    rounds=st.integers(min_value=1, max_value=4),
)
def test_smooth_wrr_gives_exactly_weight_times_k(weights: list[int], rounds: int) -> None:
    balancer = build("weighted_round_robin", pool(*map(float, weights)))
    seen = Counter(names(balancer, sum(weights) * rounds))
    assert seen == {chr(ord("a") + i): w * rounds for i, w in enumerate(weights)}


# --- least_connections -----------------------------------------------------------------------


def test_least_connections_prefers_fewer_in_flight() -> None:
    targets = pool(1, 1, 1)
    targets[0].in_flight, targets[1].in_flight, targets[2].in_flight = 4, 1, 2
    assert names(build("least_connections", targets), 5) == "bbbbb"


def test_least_connections_divides_by_weight() -> None:
    targets = pool(4, 1)
    targets[0].in_flight, targets[1].in_flight = 3, 1  # 0.75 against 1.0
    balancer = build("least_connections", targets)
    assert names(balancer, 3) == "aaa"
    targets[0].in_flight = 5  # 1.25 against 1.0
    assert names(balancer, 3) == "bbb"


def test_least_connections_rotates_ties() -> None:
    targets = pool(1, 1, 1)
    balancer = build("least_connections", targets)
    assert names(balancer, 6) == "abcabc"
    targets[0].in_flight = 1
    assert names(balancer, 4) in {"bcbc", "cbcb"}


def test_least_connections_shares_ties_by_weight() -> None:
    """nginx shares out equally loaded peers by smooth WRR, so an idle pool honours weights."""
    balancer = build("least_connections", pool(3, 1))
    assert Counter(names(balancer, 400)) == {"a": 300, "b": 100}


def test_least_connections_balances_in_flight_when_requests_stay_open() -> None:
    targets = pool(1, 1, 2)
    balancer = build("least_connections", targets)
    for _ in range(40):
        t = balancer.pick(0.0)
        assert t is not None
        t.in_flight += 1
    assert [t.in_flight for t in targets] == [10, 10, 20]


# --- least_request ---------------------------------------------------------------------------


def test_least_request_never_picks_the_busier_of_two() -> None:
    targets = pool(1, 1)
    targets[0].in_flight = 3
    assert set(names(build("least_request", targets), 200)) == {"b"}


def test_least_request_never_picks_the_single_busiest() -> None:
    """P2C samples two distinct targets, so the busiest one always loses."""
    targets = many(6)
    targets[2].in_flight = 9
    seen = counts(build("least_request", targets), 6000)
    assert "backend-2" not in seen
    assert min(seen.values()) > 6000 / 5 * 0.8


def test_least_request_compares_weight_over_in_flight_plus_one() -> None:
    targets = pool(3, 1)
    balancer = build("least_request", targets)
    targets[0].in_flight = 1  # 3/2 against 1/1: a
    assert set(names(balancer, 50)) == {"a"}
    targets[0].in_flight = 3  # 3/4 against 1/1: b
    assert set(names(balancer, 50)) == {"b"}


def test_least_request_balances_in_flight_when_requests_stay_open() -> None:
    targets = many(10)
    balancer = build("least_request", targets)
    for _ in range(1000):
        t = balancer.pick(0.0)
        assert t is not None
        t.in_flight += 1
    loads = [t.in_flight for t in targets]
    assert max(loads) - min(loads) <= 3  # power of two choices: a tight spread


# --- random ----------------------------------------------------------------------------------


def test_random_follows_the_weights() -> None:
    seen = counts(build("random", pool(1, 2, 3, 4)), 40_000)
    for name, weight in zip("abcd", (1, 2, 3, 4), strict=True):
        assert seen[name] / 40_000 == pytest.approx(weight / 10, abs=0.01)


def test_random_follows_the_weights_when_one_dwarfs_the_rest() -> None:
    """Rejection sampling rarely accepts here; the exact scan keeps the shares right."""
    targets = [*many(99), FakeTarget("big", 99.0)]
    seen = counts(build("random", targets), 20_000)
    assert seen["big"] / 20_000 == pytest.approx(0.5, abs=0.02)


def test_random_follows_an_effective_weight_above_every_configured_one() -> None:
    targets = pool(1, 1)
    balancer = build("random", targets)
    targets[1].weight = 3.0
    assert counts(balancer, 20_000)["b"] / 20_000 == pytest.approx(0.75, abs=0.015)


def test_random_is_reproducible_with_a_seeded_rng() -> None:
    assert names(build("random", pool(1, 2, 3), seed=1), 50) == names(
        build("random", pool(1, 2, 3), seed=1), 50
    )


# --- ip_hash and consistent_hash -------------------------------------------------------------

KEYS = [f"10.{i // 65536}.{i // 256 % 256}.{i % 256}" for i in range(3000)]


def mapping(balancer: Balancer[FakeTarget], keys: Sequence[str] = KEYS) -> dict[str, str]:
    out = {}
    for key in keys:
        t = balancer.pick(0.0, key=key)
        assert t is not None
        out[key] = t.name
    return out


@pytest.mark.parametrize("name", HASHES)
def test_same_key_same_target_in_any_process(name: str) -> None:
    """A golden mapping: the hash is stable across processes, Python versions and pool order
    (``hash()`` is salted per process and would break this)."""
    targets = many(5)
    first = mapping(build(name, targets, seed=1))
    again = mapping(build(name, list(reversed(targets)), seed=2))
    assert first == again
    golden = {"10.0.0.0": "backend-2", "10.0.0.1": "backend-4", "10.0.0.2": "backend-1"}
    assert {k: first[k] for k in golden} == golden


@pytest.mark.parametrize("name", HASHES)
def test_hash_shares_follow_the_weights(name: str) -> None:
    seen = Counter(mapping(build(name, pool(1, 2, 3, 4))).values())
    for target, weight in zip("abcd", (1, 2, 3, 4), strict=True):
        assert seen[target] / len(KEYS) == pytest.approx(weight / 10, rel=0.2)


@pytest.mark.parametrize("name", HASHES)
def test_hash_shares_are_even_with_equal_weights(name: str) -> None:
    seen = Counter(mapping(build(name, many(4))).values())
    assert len(seen) == 4
    for n in seen.values():
        assert n / len(KEYS) == pytest.approx(0.25, rel=0.2)


def test_hash_keeps_its_ring_share_when_the_effective_weight_moves() -> None:
    """Ring shares come from update(); a ramping weight neither reshapes nor strands keys."""
    targets = many(4)
    balancer = build("consistent_hash", targets)
    before = mapping(balancer)
    targets[0].weight = 0.1
    assert mapping(balancer) == before


@dataclass
class ConfiguredTarget(FakeTarget):
    configured_weight: float = 1.0


def test_a_configured_weight_shapes_the_ring_whatever_the_effective_weight_at_update() -> None:
    """Draining or slow start at the moment of an update() does not move any key."""
    targets = [ConfiguredTarget(f"backend-{i}") for i in range(4)]
    balancer = build("consistent_hash", targets)
    before = mapping(balancer)
    targets[1].weight = 0.25  # slow start
    targets[2].weight = 0.0  # draining
    balancer.update(list(targets))
    targets[1].weight = targets[2].weight = 1.0
    assert mapping(balancer) == before
    targets[3].configured_weight = 3.0
    balancer.update(list(targets))
    share = Counter(mapping(balancer).values())["backend-3"] / len(KEYS)
    assert share == pytest.approx(0.5, rel=0.2)


@settings(max_examples=25, deadline=None)
@given(n=st.integers(min_value=2, max_value=30), data=st.data())
def test_removing_one_of_n_moves_only_its_keys(n: int, data: st.DataObject) -> None:
    targets = many(n)
    balancer = build("consistent_hash", targets)
    before = mapping(balancer)
    gone = data.draw(st.sampled_from(targets)).name
    balancer.update([t for t in targets if t.name != gone])
    after = mapping(balancer)
    moved = [k for k in KEYS if before[k] != after[k]]
    assert all(before[k] == gone for k in moved)
    assert len(moved) / len(KEYS) <= 1 / n * 1.35 + 0.02


@settings(max_examples=25, deadline=None)
@given(n=st.integers(min_value=1, max_value=30))
def test_adding_one_to_n_moves_only_keys_to_it(n: int) -> None:
    targets = many(n)
    balancer = build("ip_hash", targets)
    before = mapping(balancer)
    balancer.update([*targets, FakeTarget("newcomer")])
    after = mapping(balancer)
    moved = [k for k in KEYS if before[k] != after[k]]
    assert all(after[k] == "newcomer" for k in moved)
    assert len(moved) / len(KEYS) <= 1 / (n + 1) * 1.35 + 0.02


@settings(max_examples=25, deadline=None)
@given(weights=st.lists(st.integers(min_value=1, max_value=5), min_size=3, max_size=12))
def test_removing_a_weighted_target_moves_about_its_share(weights: list[int]) -> None:
    targets = many(len(weights))
    for t, w in zip(targets, weights, strict=True):
        t.weight = float(w)
    balancer = build("consistent_hash", targets)
    before = mapping(balancer)
    balancer.update(targets[1:])
    moved = sum(before[k] != v for k, v in mapping(balancer).items())
    assert moved / len(KEYS) <= weights[0] / sum(weights) * 1.35 + 0.02


@pytest.mark.parametrize("name", HASHES)
def test_an_ineligible_keys_fallback_is_stable_and_spread(name: str) -> None:
    balancer = build(name, many(6))
    before = mapping(balancer)

    def not_two(t: FakeTarget) -> bool:
        return t.name != "backend-2"

    fallback = {k: balancer.pick(0.0, key=k, eligible=not_two) for k in KEYS}
    again = {k: balancer.pick(0.0, key=k, eligible=not_two) for k in KEYS}
    assert fallback == again
    for k, t in fallback.items():
        assert t is not None
        if before[k] != "backend-2":
            assert t.name == before[k]  # keys of usable targets stay put
    spread = Counter(t.name for k, t in fallback.items() if t and before[k] == "backend-2")
    assert len(spread) >= 4  # the orphaned keys spread out, not all onto one neighbour


@pytest.mark.parametrize("name", HASHES)
def test_an_ineligible_keys_fallback_matches_removal(name: str) -> None:
    """Walking on round the ring lands where removing the target would have sent the key."""
    targets = many(6)
    balancer = build(name, targets)
    fallback = {
        k: balancer.pick(0.0, key=k, eligible=lambda t: t.name != "backend-4") for k in KEYS
    }
    balancer.update([t for t in targets if t.name != "backend-4"])
    assert {k: t.name for k, t in fallback.items() if t} == mapping(balancer)


@pytest.mark.parametrize("name", HASHES)
def test_no_key_falls_back_to_round_robin(name: str) -> None:
    balancer = build(name, pool(1, 1, 1))
    assert names(balancer, 6) == "abcabc"
    assert names(balancer, 2, eligible=lambda t: t.name != "a") == "bc"


def test_keys_that_are_not_clean_unicode_hash() -> None:
    balancer = build("consistent_hash", many(3))
    assert balancer.pick(0.0, key="caf\udce9") is not None  # surrogateescape'd header bytes
    assert balancer.pick(0.0, key="") is not None


def test_a_ring_rebuild_is_skipped_when_nothing_changed() -> None:
    targets = many(4)
    balancer = build("consistent_hash", targets)
    assert isinstance(balancer, ConsistentHash)
    ring = balancer._points
    balancer.update(list(targets))
    assert balancer._points is ring


# --- p2c_ewma --------------------------------------------------------------------------------


def ewma(targets: Sequence[FakeTarget], **kw: float) -> PeakEwma[FakeTarget]:
    return PeakEwma(targets, rng=random.Random(3), **kw)


def feed(
    balancer: PeakEwma[FakeTarget],
    target: FakeTarget,
    latency_s: float,
    start: float,
    end: float,
    every: float = 0.1,
    ok: bool = True,
) -> None:
    t = start
    while t < end:
        balancer.observe(target, latency_s, ok, t)
        t += every


def test_p2c_ewma_prefers_the_fast_target() -> None:
    fast1, fast2, slow = targets = many(3)
    balancer = ewma(targets)
    feed(balancer, fast1, 0.010, 0, 5)
    feed(balancer, fast2, 0.012, 0, 5)
    feed(balancer, slow, 0.200, 0, 5)
    seen = Counter(t.name for t in (balancer.pick(5.0) for _ in range(1000)) if t)
    assert seen["backend-2"] == 0
    # the slightly faster of the two fast ones wins whenever both are drawn: 2/3 against 1/3
    assert seen["backend-0"] == pytest.approx(667, abs=50)
    assert seen["backend-1"] == pytest.approx(333, abs=50)


def test_p2c_ewma_weighs_latency_against_in_flight() -> None:
    fast, slow = targets = many(2)
    balancer = ewma(targets)
    feed(balancer, fast, 0.010, 0, 5)
    feed(balancer, slow, 0.040, 0, 5)
    fast.in_flight = 2  # 10 ms × 3 < 40 ms × 1
    assert balancer.pick(5.0) is fast
    fast.in_flight = 4  # 10 ms × 5 > 40 ms × 1
    assert balancer.pick(5.0) is slow


def test_p2c_ewma_a_slow_sample_counts_at_once() -> None:
    a, b = targets = many(2)
    balancer = ewma(targets)
    feed(balancer, a, 0.010, 0, 5)
    feed(balancer, b, 0.020, 0, 5)
    balancer.observe(a, 0.300, True, 5.0)
    assert balancer.describe(a, 5.0)["ewma_ms"] == pytest.approx(300)
    assert balancer.pick(5.0) is b


def test_p2c_ewma_faster_samples_decay_the_peak_with_the_time_constant() -> None:
    a, b = targets = many(2)
    balancer = ewma(targets, decay_s=10.0)
    balancer.observe(a, 0.200, True, 0.0)
    feed(balancer, a, 0.010, 0.1, 10.05)  # one time constant of fast samples
    # 10 ms + 190 ms × e⁻¹ ≈ 80 ms
    assert balancer.describe(a, 10.0)["ewma_ms"] == pytest.approx(10 + 190 * 0.3679, rel=0.02)
    feed(balancer, a, 0.010, 10.05, 60)
    assert balancer.describe(a, 60.0)["ewma_ms"] == pytest.approx(10 + 190 * 0.0025, rel=0.02)
    feed(balancer, b, 0.020, 0, 60)
    assert balancer.pick(60.0) is a  # decayed back below the 20 ms target


def test_p2c_ewma_penalises_a_fast_failure() -> None:
    failing, healthy = targets = many(2)
    balancer = ewma(targets, penalty_s=1.0)
    feed(balancer, healthy, 0.050, 0, 5)
    feed(balancer, failing, 0.002, 0, 5, ok=False)  # fast 503s
    assert all(balancer.pick(5.0) is healthy for _ in range(50))
    parts = balancer.describe(failing, 5.0)
    assert parts["ewma_ms"] == pytest.approx(2)
    assert parts["penalty"] == pytest.approx(998)
    assert parts["cost"] == pytest.approx(1000)


def test_p2c_ewma_tries_a_penalised_target_again_after_a_while() -> None:
    """With no new samples, an estimate regresses to the pool's typical latency."""
    failed, healthy = targets = many(2)
    balancer = ewma(targets, decay_s=10.0)
    feed(balancer, healthy, 0.020, 0, 2)
    balancer.observe(failed, 0.005, False, 1.0)
    assert balancer.pick(2.0) is healthy
    balancer.observe(healthy, 0.020, True, 120.0)
    assert balancer.describe(failed, 120.0)["cost"] == pytest.approx(20, rel=0.01)
    healthy.in_flight = 1
    assert balancer.pick(120.0) is failed


def pick_and_hold(balancer: PeakEwma[FakeTarget], now: float, n: int) -> Counter[str]:
    """``n`` picks at ``now``, each left in flight (no answer yet)."""
    seen: Counter[str] = Counter()
    for _ in range(n):
        t = balancer.pick(now)
        assert t is not None
        t.in_flight += 1
        seen[t.name] += 1
    return seen


def test_p2c_ewma_new_targets_are_probed_one_request_at_a_time() -> None:
    old1, old2 = many(2)
    new = FakeTarget("new")
    balancer = ewma([old1, old2])
    feed(balancer, old1, 0.010, 0, 5)
    feed(balancer, old2, 0.010, 0, 5)
    balancer.update([old1, old2, new])
    assert balancer.describe(new, 5.0)["ewma_ms"] == pytest.approx(10, rel=0.01)
    # read as the typical latency, but nothing is known of it: one request until it answers
    assert pick_and_hold(balancer, 5.0, 300)["new"] == 1
    balancer.observe(new, 0.010, True, 5.0)
    for t in (old1, old2, new):
        t.in_flight = 0
    # once it has answered like its peers, it takes its share
    assert pick_and_hold(balancer, 5.0, 300)["new"] == pytest.approx(100, abs=5)


def test_p2c_ewma_probes_a_target_avoided_for_a_while_one_request_at_a_time() -> None:
    slow, fast = targets = many(2)
    balancer = ewma(targets, decay_s=10.0, probe_after_s=1.0)
    balancer.observe(slow, 0.200, True, 0.0)
    feed(balancer, fast, 0.001, 0, 120)
    fast.in_flight = 3  # its estimate (1 ms) × 4 is above the slow one's, decayed to ~1 ms
    assert balancer.pick(120.0) is slow
    slow.in_flight = 1  # the probe is out: whatever the fast one's load, nothing more goes
    fast.in_flight = 50
    assert all(balancer.pick(120.1) is fast for _ in range(20))
    balancer.observe(slow, 0.200, True, 120.2)  # its answer: 200 ms again
    slow.in_flight = 0
    assert balancer.describe(slow, 120.2)["ewma_ms"] == pytest.approx(200)
    fast.in_flight = 3
    assert balancer.pick(120.2) is fast


def test_p2c_ewma_a_target_in_use_is_never_probed() -> None:
    """Targets that answer more often than ``probe_after_s`` compare by cost alone."""
    a, b = targets = many(2)
    balancer = ewma(targets, probe_after_s=1.0)
    feed(balancer, a, 0.010, 0, 5, every=0.5)
    feed(balancer, b, 0.050, 0, 5, every=0.5)
    a.in_flight = 9  # 10 ms × 10 > 50 ms × 1
    assert balancer.pick(5.0) is b


def test_p2c_ewma_two_probed_targets_still_compare_by_cost() -> None:
    a, b = targets = many(2)
    balancer = ewma(targets)
    balancer.observe(a, 0.010, True, 0.0)
    balancer.observe(b, 0.100, True, 0.0)
    a.in_flight = b.in_flight = 1
    assert all(balancer.pick(60.0) is a for _ in range(20))  # both stale, both probed


def simulate_one_slow(seconds: float, seed: int) -> list[float]:
    """Issue 20's slow-backend run as pure logic: 1,000 requests a second, open loop, over
    three targets answering in 0.5–3 ms (a 50 ms stall every 2,000 requests, as a busy
    machine gives) and one answering in 200 ms; each answer is observed when it comes back.
    Returns the times at which the slow one was picked."""
    slow = FakeTarget("slow")
    targets = [slow, *many(3)]
    balancer = PeakEwma(targets, rng=random.Random(seed))
    rng = random.Random(seed + 1000)
    pending: list[tuple[float, int, FakeTarget, float]] = []
    picked = []
    for i in range(int(seconds * 1000)):
        now = i / 1000
        while pending and pending[0][0] <= now:
            end, _, t, latency = heapq.heappop(pending)
            t.in_flight -= 1
            balancer.observe(t, latency, True, end)
        t = balancer.pick(now)
        assert t is not None
        if t is slow:
            latency = 0.200
            picked.append(now)
        else:
            latency = 0.0005 + rng.expovariate(2000) + (0.05 if rng.random() < 0.0005 else 0)
        t.in_flight += 1
        heapq.heappush(pending, (now + latency, i, t, latency))
    return picked


@pytest.mark.parametrize("seed", [0, 16])
def test_p2c_ewma_sends_the_slow_target_too_little_to_move_p999(seed: int) -> None:
    """p99.9 of 10 s at 1,000 req/s is the 10th-worst request: a run keeps it fast when the
    slow target gets fewer than 10. Seed 16 sent 20 before its first answer came back when
    unknown targets were not probed one request at a time."""
    picked = simulate_one_slow(60.0, seed)
    assert sum(1 for t in picked if t < 0.2) == 1  # before its first answer
    worst = max(sum(1 for t in picked if w <= t < w + 10.0) for w in range(0, 51))
    assert worst <= 3


def test_p2c_ewma_default_latency_until_the_first_success() -> None:
    a = FakeTarget("a")
    balancer = ewma([a], default_latency_s=0.05)
    assert balancer.describe(a, 0.0) == {
        "ewma_ms": pytest.approx(50),
        "penalty": 0.0,
        "in_flight": 0.0,
        "cost": pytest.approx(50),
    }


def test_p2c_ewma_state_survives_update_and_leaves_with_its_target() -> None:
    a, b = targets = many(2)
    balancer = ewma(targets)
    balancer.observe(b, 0.01, True, 0.0)  # the first success sets the typical latency
    balancer.observe(a, 0.3, True, 0.0)
    balancer.update([a, b, FakeTarget("c")])
    assert balancer.describe(a, 0.0)["ewma_ms"] == pytest.approx(300)
    balancer.update([b])
    balancer.update([a, b])
    assert balancer.describe(a, 0.0)["ewma_ms"] == pytest.approx(10)  # forgotten: typical


def test_p2c_ewma_cost_divides_by_weight() -> None:
    a = FakeTarget("a", weight=0.5, in_flight=1)
    balancer = ewma([a])
    balancer.observe(a, 0.010, True, 0.0)
    assert balancer.describe(a, 0.0)["cost"] == pytest.approx(10 * 2 / 0.5)


@pytest.mark.parametrize(
    "kw",
    [{"decay_s": 0.0}, {"penalty_s": -1.0}, {"default_latency_s": 0.0}, {"probe_after_s": 0.0}],
)
def test_p2c_ewma_refuses_nonsense_settings(kw: dict[str, float]) -> None:
    with pytest.raises(ValueError, match=next(iter(kw))):
        ewma(many(2), **kw)
