"""Cost of one ``pick`` for every balancing algorithm, at 4 and at 1,000 targets.

Run: ``.venv/bin/python bench/picks.py``. Each case times a loop of picks with a fresh key per
pick (a client address, for the hash algorithms) and targets that carry a few requests in
flight; the cost of the bare loop is subtracted. Figures are the best of 7 runs in process CPU
time, so that other work on a shared machine inflates them less. ``+eligible`` adds the
callback the proxy passes (it excludes one target, as after a first failed attempt).
``update ms`` is one ``update()`` at 1,000 targets (the hash ring is rebuilt there). The budget
is 5 µs a pick at 1,000 targets for least_request, p2c_ewma and consistent_hash; the O(n)
algorithms (weighted_round_robin, least_connections, as in nginx) are shown for comparison.
"""

from __future__ import annotations

import random
import time
import timeit
from dataclasses import dataclass

from lbtui.core.balancing import ALGORITHMS, Balancer, make_balancer

BUDGET_US = 5.0
BUDGETED = {"least_request", "p2c_ewma", "consistent_hash"}
KEYS = 20_000
REPEAT = 7
SECONDS_PER_RUN = 0.05

LOOP = """
for key in keys:
    pass
"""
PICK = """
for key in keys:
    pick(1.0, key, eligible)
"""


@dataclass
class BenchTarget:
    name: str
    weight: float = 1.0
    in_flight: int = 0


def targets(n: int, rng: random.Random) -> list[BenchTarget]:
    return [BenchTarget(f"10.0.{i // 256}.{i % 256}:8080", 1.0, rng.randrange(5)) for i in range(n)]


def balancer(name: str, pool: list[BenchTarget]) -> Balancer[BenchTarget]:
    rng = random.Random(1)
    b = make_balancer(name, pool, rng=rng)
    for t in pool:  # give p2c_ewma a history; a no-op for the others
        b.observe(t, rng.uniform(0.002, 0.02), True, 0.5)
    return b


def per_pick_us(name: str, n: int, with_eligible: bool) -> float:
    """Best-of-REPEAT µs per pick, the bare loop subtracted."""
    rng = random.Random(2)
    pool = targets(n, rng)
    b = balancer(name, pool)
    excluded = pool[0].name
    keys = [f"192.168.{rng.randrange(256)}.{rng.randrange(256)}" for _ in range(KEYS)]
    names = {
        "pick": b.pick,
        "keys": keys[:100],
        "eligible": (lambda t: t.name != excluded) if with_eligible else None,
    }
    # size the run to about SECONDS_PER_RUN, so the O(n) algorithms do not take minutes
    trial = timeit.timeit(PICK, timer=time.process_time, globals=names, number=1) / 100
    picks = max(100, min(KEYS, int(SECONDS_PER_RUN / trial)))
    names["keys"] = keys[:picks]
    gross = (
        min(timeit.repeat(PICK, time.process_time, globals=names, number=1, repeat=REPEAT)) / picks
    )
    bare = (
        min(timeit.repeat(LOOP, time.process_time, globals=names, number=1, repeat=REPEAT)) / picks
    )
    return (gross - bare) * 1e6


def update_ms(name: str, n: int) -> float:
    rng = random.Random(3)
    b = balancer(name, targets(n, rng))
    fresh = [targets(n, rng) for _ in range(3)]  # same names, new objects: rebuilt each time
    for pool in fresh:
        pool[0].weight = rng.uniform(1, 2)  # a changed weight defeats the ring's no-op check
    return (
        min(timeit.repeat(lambda: b.update(fresh.pop()), time.process_time, number=1, repeat=3))
        * 1e3
    )


def main() -> None:
    header = f"{'algorithm':<22}{'4 µs':>8}{'1000 µs':>10}{'+eligible':>11}{'update ms':>11}"
    print(header + f"{'budget':>9}")
    for name in ALGORITHMS:
        small = per_pick_us(name, 4, False)
        large = per_pick_us(name, 1000, False)
        large_eligible = per_pick_us(name, 1000, True)
        rebuild = update_ms(name, 1000)
        verdict = ""
        if name in BUDGETED:
            verdict = "ok" if max(large, large_eligible) < BUDGET_US else "OVER"
        print(
            f"{name:<22}{small:>8.2f}{large:>10.2f}{large_eligible:>11.2f}{rebuild:>11.1f}"
            f"{verdict:>9}"
        )


if __name__ == "__main__":
    main()
