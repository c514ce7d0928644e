"""Cost of the breaker's hot path: one ``allow`` + ``record`` pair in the closed state.

Run: ``.venv/bin/python bench/breaker.py``. Each case times a loop that advances a fake clock
by 100 µs per pair (so a time window moves through its buckets and expires old ones) and
subtracts the cost of the same loop without the breaker calls. The budget is 2 µs a pair.
"""

from __future__ import annotations

import timeit
from typing import Literal

from lbtui.core.breaker import BreakerConfig, CircuitBreaker

BUDGET_NS = 2000.0
N = 200_000
REPEAT = 5

LOOP = """
for i in range(n):
    t += 0.0001
"""
PAIR = """
for i in range(n):
    t += 0.0001
    allow(t)
    record(i % every == 0, 0.002, t)
"""


def per_pair_ns(window: Literal["count", "time"], fail_every: int) -> tuple[float, float]:
    """Best-of-REPEAT ns per pair, gross and with the bare loop subtracted."""
    config = BreakerConfig(window=window, window_size=20 if window == "count" else 10)
    breaker = CircuitBreaker(config, 0.0)
    names = {"allow": breaker.allow, "record": breaker.record, "n": N, "every": fail_every}
    gross = min(timeit.repeat(PAIR, "t = 0.0", globals=names, number=1, repeat=REPEAT)) / N
    bare = min(timeit.repeat(LOOP, "t = 0.0", globals=names, number=1, repeat=REPEAT)) / N
    assert breaker.state == "closed", "the bench must stay in the closed state"
    return gross * 1e9, (gross - bare) * 1e9


def main() -> None:
    print(f"{'window':<8}{'failures':>10}{'ns/pair':>10}{'net ns':>9}{'budget':>9}")
    for window in ("count", "time"):
        for every, label in ((1_000_000_000, "none"), (10, "10%")):
            gross, net = per_pair_ns(window, every)
            verdict = "ok" if net < BUDGET_NS else "OVER"
            print(f"{window:<8}{label:>10}{gross:>10.0f}{net:>9.0f}{verdict:>9}")


if __name__ == "__main__":
    main()
