"""Balancing algorithms behind one small interface: ``pick(now, key, eligible) -> target | None``.

Each algorithm copies the system the field trusts for it:

- ``round_robin``: rotate over the usable targets; weights are ignored.
- ``weighted_round_robin``: nginx's *smooth* weighted round robin
  (``ngx_http_upstream_get_peer``): every pick adds each usable target's weight to its
  ``current``, takes the largest and subtracts the total from it, so weights 5, 1, 1 come out
  as a a b a c a a rather than a a a a a b c, and every ``sum(weights)`` picks give each
  target exactly its weight.
- ``least_connections``: nginx ``least_conn``: fewest ``in_flight / weight``; ties are shared
  out by the smooth weighted round robin above, so an idle pool still honours the weights.
- ``least_request``: Envoy's power of two random choices: sample two distinct usable
  targets, keep the one with the larger ``weight / (in_flight + 1)`` (with equal weights: the
  one with fewer in flight). Envoy switches to a weighted EDF schedule when weights differ;
  this keeps P2C, which is O(1) but at low concurrency sends a sampled pair's request to the
  heavier target, so it over-serves heavy targets when nothing is in flight.
- ``ip_hash`` / ``consistent_hash``: a ketama-style hash ring, 160 points per unit of weight,
  hashed with blake2b (stable across processes, unlike ``hash()``). Removing or adding one of
  N targets moves only the keys on that target's arcs, about 1/N. A key whose target is not
  usable walks on round the ring to the next distinct usable target, so the fallback is as
  stable as the first choice. Ring shares are set at ``update()`` from ``configured_weight``
  when the target has one (see ``Configured``), else from ``weight`` then: slow start and
  draining do not reshape the ring (as in nginx and Envoy, where slow start does not apply to
  hash balancing), they only exclude a target while its effective weight is <= 0. A share
  that is <= 0 counts as weight 1, so that the target's keys come back to it when it recovers.
  No key: round robin.
- ``random``: weighted random; rejection sampling, O(1) expected, exact scan as fallback.
- ``p2c_ewma``: Finagle's / Linkerd's peak EWMA with power of two choices:
  cost = latency estimate × (in_flight + 1) / weight, the lower of two random usable targets
  wins (dividing by weight lets configured weights and slow start count; as with
  least_request, when latencies and in-flight are equal the heavier target of a pair wins).
  A sample slower than the estimate replaces it at once; faster samples pull it down
  with weight ``1 - exp(-Δt / decay_s)``. A failure records ``max(latency, penalty_s)`` so a
  fast 503 does not look attractive. Targets without samples, and estimates that go stale
  (no sample for a while), are read as the pool's typical latency (a time-decayed EWMA of all
  successful samples): a new target is tried like its peers but not flooded, and a target
  avoided after failures is tried again after a few ``decay_s`` instead of never.
  A target with no sample for ``probe_after_s`` (or none yet) is *probed*: it gets one request
  at a time until an answer says what it is worth. Its estimate is a guess (the typical, or an
  old peak decayed towards it), and a guess that is wrong by 200 ms would otherwise draw a
  request per pick until the first answer comes back (up to 20 at 1,000 req/s over four
  targets, simulated): under open-loop load each of those waits the full 200 ms, and 10 in
  10,000 already move p99.9. Among two probed targets the costs decide as usual.

"Usable" means ``weight > 0`` and ``eligible(target)`` (the proxy excludes targets already
tried for this request, breaker-open, capped, down ...). Nothing here reads a clock or
the global random state: time comes in as ``now`` (monotonic seconds), randomness from the
injected ``random.Random``.
"""

from __future__ import annotations

import abc
import bisect
import math
import random
import struct
from collections.abc import Callable, Sequence
from hashlib import blake2b
from typing import Any, ClassVar, Final, Generic, Protocol, TypeVar

__all__ = [
    "ALGORITHMS",
    "Balancer",
    "Configured",
    "ConsistentHash",
    "IpHash",
    "LeastConnections",
    "LeastRequest",
    "PeakEwma",
    "RoundRobin",
    "Target",
    "WeightedRandom",
    "WeightedRoundRobin",
    "make_balancer",
]


class Target(Protocol):
    """What the algorithms read of a backend."""

    @property
    def name(self) -> str:
        """Unique and stable: per-target state is kept by name."""
        ...

    @property
    def weight(self) -> float:
        """Effective weight now (slow start may make it fractional); <= 0 takes no new traffic."""
        ...

    @property
    def in_flight(self) -> int:
        """Requests sent to this target and not yet finished."""
        ...


class Configured(Protocol):
    """Optional for a target: the weight it is configured with, which hash rings are shaped by
    (``weight`` is the effective weight, which slow start ramps and draining zeroes)."""

    @property
    def configured_weight(self) -> float: ...


T = TypeVar("T", bound=Target)

SAMPLE_TRIES = 8
"""Random draws before an O(1) sampler gives up on hitting a usable target and scans."""


class Balancer(abc.ABC, Generic[T]):
    """One balancing algorithm over an ordered pool of targets."""

    name: ClassVar[str]
    """The algorithm's name in the config."""

    def __init__(self, targets: Sequence[T] = (), *, rng: random.Random | None = None) -> None:
        self._rng = rng if rng is not None else random.Random()
        self._random = self._rng.random
        self._targets: list[T] = []
        self.update(targets)

    @property
    def targets(self) -> Sequence[T]:
        """The pool as last passed to ``update()``."""
        return tuple(self._targets)

    def update(self, targets: Sequence[T]) -> None:
        """Membership or configured weights changed. Per-target state is carried over by name."""
        names = {t.name for t in targets}
        if len(names) != len(targets):
            raise ValueError("target names must be unique")
        old = self._targets
        self._targets = list(targets)
        self._rebuild(old)

    def _rebuild(self, old: list[T]) -> None:
        """Hook: the pool changed from ``old`` to ``self._targets``."""

    @abc.abstractmethod
    def pick(
        self, now: float, key: str | None = None, eligible: Callable[[T], bool] | None = None
    ) -> T | None:
        """The target for the next attempt, or None when no target is usable."""

    def observe(self, target: T, latency_s: float, ok: bool, now: float) -> None:
        """Feedback after each attempt; most algorithms ignore it."""

    def describe(self, target: T, now: float) -> dict[str, float]:
        """The parts of the target's score, for the console; empty when there is no score."""
        return {}

    def _sample_two(self, eligible: Callable[[T], bool] | None) -> tuple[T | None, T | None]:
        """Two distinct usable targets uniformly at random: ``(a, b)``, ``(a, None)`` when only
        one is usable, ``(None, None)`` when none is. O(1) unless usable targets are rare."""
        targets = self._targets
        n = len(targets)
        if n > 1:
            rand = self._random
            for _ in range(SAMPLE_TRIES):
                i = int(rand() * n)
                a = targets[i]
                if a.weight > 0 and (eligible is None or eligible(a)):
                    for _ in range(SAMPLE_TRIES):
                        j = int(rand() * (n - 1))
                        if j >= i:
                            j += 1
                        b = targets[j]
                        if b.weight > 0 and (eligible is None or eligible(b)):
                            return a, b
                    break
        usable = [t for t in targets if t.weight > 0 and (eligible is None or eligible(t))]
        m = len(usable)
        if m == 0:
            return None, None
        if m == 1:
            return usable[0], None
        i = int(self._random() * m)
        j = int(self._random() * (m - 1))
        return usable[i], usable[j + 1 if j >= i else j]


def _rotate(
    targets: Sequence[T], start: int, eligible: Callable[[T], bool] | None
) -> tuple[T | None, int]:
    """The first usable target from index ``start`` on, wrapping; and the index after it."""
    n = len(targets)
    i = start if start < n else 0
    for _ in range(n):
        t = targets[i]
        i += 1
        if i == n:
            i = 0
        if t.weight > 0 and (eligible is None or eligible(t)):
            return t, i
    return None, start


def _carry_cursor(old: Sequence[Target], new: Sequence[Target], cursor: int) -> int:
    """Keep a rotation in place: the index in ``new`` of the target ``cursor`` meant in ``old``."""
    if not new:
        return 0
    if cursor < len(old):
        at = old[cursor].name
        for i, t in enumerate(new):
            if t.name == at:
                return i
    return cursor % len(new)


def _smooth_pick(targets: Sequence[T], current: list[float], among: Sequence[int]) -> T:
    """nginx's smooth weighted round robin step over the targets at indexes ``among``."""
    total = 0.0
    best = among[0]
    best_current = -math.inf
    for i in among:
        w = targets[i].weight
        c = current[i] + w
        current[i] = c
        total += w
        if c > best_current:
            best, best_current = i, c
    current[best] -= total
    return targets[best]


def _carry_current(
    old: Sequence[Target], current: list[float], new: Sequence[Target]
) -> list[float]:
    kept = {t.name: c for t, c in zip(old, current, strict=True)}
    return [kept.get(t.name, 0.0) for t in new]


class RoundRobin(Balancer[T]):
    """Rotate over the usable targets. Amortised O(1)."""

    name = "round_robin"

    def __init__(self, targets: Sequence[T] = (), *, rng: random.Random | None = None) -> None:
        self._next = 0
        super().__init__(targets, rng=rng)

    def _rebuild(self, old: list[T]) -> None:
        self._next = _carry_cursor(old, self._targets, self._next)

    def pick(
        self, now: float, key: str | None = None, eligible: Callable[[T], bool] | None = None
    ) -> T | None:
        t, self._next = _rotate(self._targets, self._next, eligible)
        return t


class WeightedRoundRobin(Balancer[T]):
    """nginx's smooth weighted round robin. O(n) a pick, as in nginx."""

    name = "weighted_round_robin"

    def __init__(self, targets: Sequence[T] = (), *, rng: random.Random | None = None) -> None:
        self._current: list[float] = []
        super().__init__(targets, rng=rng)

    def _rebuild(self, old: list[T]) -> None:
        self._current = _carry_current(old, self._current, self._targets)

    def pick(
        self, now: float, key: str | None = None, eligible: Callable[[T], bool] | None = None
    ) -> T | None:
        targets = self._targets
        usable = [
            i for i, t in enumerate(targets) if t.weight > 0 and (eligible is None or eligible(t))
        ]
        if not usable:
            return None
        return _smooth_pick(targets, self._current, usable)


class LeastConnections(Balancer[T]):
    """nginx ``least_conn``: fewest ``in_flight / weight``; ties by smooth WRR. O(n) a pick."""

    name = "least_connections"

    def __init__(self, targets: Sequence[T] = (), *, rng: random.Random | None = None) -> None:
        self._current: list[float] = []
        super().__init__(targets, rng=rng)

    def _rebuild(self, old: list[T]) -> None:
        self._current = _carry_current(old, self._current, self._targets)

    def pick(
        self, now: float, key: str | None = None, eligible: Callable[[T], bool] | None = None
    ) -> T | None:
        targets = self._targets
        tied: list[int] = []
        best_f = 0
        best_w = 1.0
        for i, t in enumerate(targets):
            w = t.weight
            if w <= 0 or (eligible is not None and not eligible(t)):
                continue
            f = t.in_flight
            # f / w < best_f / best_w, multiplied out (exact for integer weights)
            if not tied or f * best_w < best_f * w:
                best_f, best_w, tied = f, w, [i]
            elif f * best_w == best_f * w:
                tied.append(i)
        if not tied:
            return None
        if len(tied) == 1:
            return targets[tied[0]]
        return _smooth_pick(targets, self._current, tied)


class LeastRequest(Balancer[T]):
    """Envoy's least request: the better of two random choices by ``weight / (in_flight + 1)``."""

    name = "least_request"

    def pick(
        self, now: float, key: str | None = None, eligible: Callable[[T], bool] | None = None
    ) -> T | None:
        a, b = self._sample_two(eligible)
        if b is None or a is None:
            return a
        # b.weight / (b.in_flight + 1) > a.weight / (a.in_flight + 1), multiplied out
        return b if b.weight * (a.in_flight + 1) > a.weight * (b.in_flight + 1) else a


class WeightedRandom(Balancer[T]):
    """Weighted random: rejection sampling against the largest weight seen, O(1) expected."""

    name = "random"

    def __init__(self, targets: Sequence[T] = (), *, rng: random.Random | None = None) -> None:
        self._ceiling = 0.0
        super().__init__(targets, rng=rng)

    def _rebuild(self, old: list[T]) -> None:
        self._ceiling = max((t.weight for t in self._targets), default=0.0)

    def pick(
        self, now: float, key: str | None = None, eligible: Callable[[T], bool] | None = None
    ) -> T | None:
        targets = self._targets
        n = len(targets)
        rand = self._random
        for _ in range(SAMPLE_TRIES if n else 0):
            t = targets[int(rand() * n)]
            w = t.weight
            if w <= 0:
                continue
            if w > self._ceiling:  # an effective weight above every weight seen at update()
                self._ceiling = w
            if rand() * self._ceiling < w and (eligible is None or eligible(t)):
                return t
        # Exact scan. Mixing it with the sampler keeps the distribution exact: both pick in
        # proportion to weight among the usable targets.
        usable = [t for t in targets if t.weight > 0 and (eligible is None or eligible(t))]
        if not usable:
            return None
        r = rand() * sum(t.weight for t in usable)
        for t in usable:
            r -= t.weight
            if r < 0:
                return t
        return usable[-1]


POINTS_PER_WEIGHT = 160
"""Ring points per unit of weight (ketama's 160): each target's share is within a few % of
its weight share."""
MAX_RING_POINTS = 1 << 18
"""Beyond this, points are scaled down for every target (then removing one of N moves a little
more than 1/N of the keys)."""

_unpack_points = struct.Struct("<4Q").unpack


def _hash64(key: str) -> int:
    """A 64-bit hash of ``key`` that is the same in every process (``hash()`` is salted)."""
    digest = blake2b(key.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def _ring_share(t: Target) -> float:
    # ``Configured`` is looked for by attribute: a compiled build has no runtime protocols.
    configured: float | None = getattr(t, "configured_weight", None)
    w = t.weight if configured is None else configured
    return w if w > 0 else 1.0


class ConsistentHash(Balancer[T]):
    """Weighted consistent-hash ring keyed by ``key``. Pick O(log n); update O(points)."""

    name = "consistent_hash"

    def __init__(self, targets: Sequence[T] = (), *, rng: random.Random | None = None) -> None:
        self._points: list[int] = []
        self._owners: list[int] = []
        self._shape: tuple[tuple[str, float], ...] = ()
        self._next = 0
        super().__init__(targets, rng=rng)

    def _rebuild(self, old: list[T]) -> None:
        self._next = _carry_cursor(old, self._targets, self._next)
        shape = tuple((t.name, _ring_share(t)) for t in self._targets)
        if shape == self._shape:
            return
        self._shape = shape
        total = sum(share for _, share in shape)
        per_weight = min(float(POINTS_PER_WEIGHT), MAX_RING_POINTS / total) if total else 0.0
        points: list[int] = []
        owners: list[int] = []
        for owner, (name, share) in enumerate(shape):
            count = max(1, round(share * per_weight))
            prefix = name.encode("utf-8", "surrogatepass") + b"#"
            for k in range(0, count, 4):
                digest = blake2b(prefix + str(k // 4).encode(), digest_size=32).digest()
                chunk = _unpack_points(digest)[: count - k]
                points.extend(chunk)
                owners.extend([owner] * len(chunk))
        order = sorted(range(len(points)), key=points.__getitem__)
        self._points = [points[i] for i in order]
        self._owners = [owners[i] for i in order]

    def pick(
        self, now: float, key: str | None = None, eligible: Callable[[T], bool] | None = None
    ) -> T | None:
        if key is None:
            t, self._next = _rotate(self._targets, self._next, eligible)
            return t
        points = self._points
        if not points:
            return None
        i = bisect.bisect_left(points, _hash64(key))
        if i == len(points):
            i = 0
        t = self._targets[self._owners[i]]
        if t.weight > 0 and (eligible is None or eligible(t)):
            return t
        return self._walk(i, eligible)

    def _walk(self, start: int, eligible: Callable[[T], bool] | None) -> T | None:
        """The next distinct usable target clockwise from ring position ``start``."""
        targets = self._targets
        owners = self._owners
        size = len(owners)
        seen = {owners[start]}
        for step in range(1, size):
            owner = owners[(start + step) % size]
            if owner in seen:
                continue
            t = targets[owner]
            if t.weight > 0 and (eligible is None or eligible(t)):
                return t
            seen.add(owner)
            if len(seen) == len(targets):
                break
        return None


class IpHash(ConsistentHash[T]):
    """The hash ring keyed by the client address (every address is its own key; nginx's
    ``ip_hash`` would key on the first three octets of an IPv4 address)."""

    name = "ip_hash"


PROBING: Final = 1e9
"""Added to the cost of a target with a probe out: above any real cost (seconds × in-flight ÷
weight), and the same for both of a pair, so that two probed targets still compare by cost."""


class _Estimate:
    """Peak-EWMA state of one target, as of its last sample at ``stamp``."""

    __slots__ = ("est", "lat", "stamp")

    def __init__(self, est: float, lat: float, stamp: float) -> None:
        self.est = est
        """Latency estimate with failures recorded at the penalty (what the cost uses)."""
        self.lat = lat
        """The same estimate over the measured latencies only (for the console)."""
        self.stamp = stamp


class PeakEwma(Balancer[T]):
    """Finagle's / Linkerd's peak EWMA with power of two choices. O(1) a pick."""

    name = "p2c_ewma"

    def __init__(
        self,
        targets: Sequence[T] = (),
        *,
        rng: random.Random | None = None,
        decay_s: float = 10.0,
        penalty_s: float = 1.0,
        default_latency_s: float = 0.03,
        probe_after_s: float = 1.0,
    ) -> None:
        """``decay_s``: time constant over which faster samples (or no samples) pull an
        estimate back (Finagle's and Linkerd's 10 s). ``penalty_s``: the latency a failure
        records at least. ``default_latency_s``: the pool's typical latency until the first
        successful sample (Linkerd's default RTT estimate, 30 ms). ``probe_after_s``: a target
        with no sample for this long (or never) gets one request at a time; a target in use
        answers far more often than that."""
        if not decay_s > 0:
            raise ValueError(f"decay_s must be > 0, not {decay_s}")
        if not penalty_s >= 0:
            raise ValueError(f"penalty_s must be >= 0, not {penalty_s}")
        if not default_latency_s > 0:
            raise ValueError(f"default_latency_s must be > 0, not {default_latency_s}")
        if not probe_after_s > 0:
            raise ValueError(f"probe_after_s must be > 0, not {probe_after_s}")
        self._decay_s = decay_s
        self._probe_after_s = probe_after_s
        self._penalty_s = penalty_s
        self._states: dict[str, _Estimate] = {}
        self._names: set[str] = set()
        self._typical = default_latency_s
        self._typical_stamp: float | None = None
        super().__init__(targets, rng=rng)

    def _rebuild(self, old: list[T]) -> None:
        self._names = {t.name for t in self._targets}
        self._states = {k: s for k, s in self._states.items() if k in self._names}

    def pick(
        self, now: float, key: str | None = None, eligible: Callable[[T], bool] | None = None
    ) -> T | None:
        a, b = self._sample_two(eligible)
        if b is None or a is None:
            return a
        return b if self._cost(b, now) < self._cost(a, now) else a

    def _read(self, est: float, stamp: float, now: float) -> float:
        """An estimate as of ``now``: with no newer sample it decays towards the typical."""
        elapsed = now - stamp
        if elapsed <= 0:
            return est
        typical = self._typical
        return typical + (est - typical) * math.exp(-elapsed / self._decay_s)

    def _cost(self, t: T, now: float) -> float:
        """The cost picks compare; ``PROBING`` more while a probe is out (see the module)."""
        s = self._states.get(t.name)
        in_flight = t.in_flight
        if s is None:
            cost = self._typical * (in_flight + 1) / t.weight
            return cost + PROBING if in_flight else cost
        cost = self._read(s.est, s.stamp, now) * (in_flight + 1) / t.weight
        if in_flight and now - s.stamp > self._probe_after_s:
            return cost + PROBING
        return cost

    def observe(self, target: T, latency_s: float, ok: bool, now: float) -> None:
        name = target.name
        if name not in self._names:
            return  # an attempt that finished after its target left the pool
        lat = max(latency_s, 0.0)
        est = lat if ok else max(lat, self._penalty_s)
        s = self._states.get(name)
        if s is None:
            self._states[name] = _Estimate(est, lat, now)
        else:
            elapsed = now - s.stamp
            keep = math.exp(-elapsed / self._decay_s) if elapsed > 0 else 1.0
            s.est = est if est > s.est else s.est * keep + est * (1.0 - keep)
            s.lat = lat if lat > s.lat else s.lat * keep + lat * (1.0 - keep)
            s.stamp = max(s.stamp, now)
        if ok:
            if self._typical_stamp is None:
                self._typical = lat
                self._typical_stamp = now
            else:
                elapsed = now - self._typical_stamp
                keep = math.exp(-elapsed / self._decay_s) if elapsed > 0 else 1.0
                self._typical = self._typical * keep + lat * (1.0 - keep)
                self._typical_stamp = max(self._typical_stamp, now)

    def describe(self, target: T, now: float) -> dict[str, float]:
        """``ewma_ms`` (measured latency), ``penalty`` (ms the failures add), ``in_flight`` and
        ``cost`` = (ewma_ms + penalty) × (in_flight + 1) / weight, the figure picks compare."""
        s = self._states.get(target.name)
        if s is None:
            est = lat = self._typical
        else:
            est = self._read(s.est, s.stamp, now)
            lat = self._read(s.lat, s.stamp, now)
        w = target.weight
        in_flight = target.in_flight
        return {
            "ewma_ms": lat * 1e3,
            "penalty": (est - lat) * 1e3,
            "in_flight": float(in_flight),
            "cost": est * 1e3 * (in_flight + 1) / w if w > 0 else math.inf,
        }


ALGORITHMS: dict[str, type[Balancer[Any]]] = {
    cls.name: cls
    for cls in (
        RoundRobin,
        WeightedRoundRobin,
        LeastConnections,
        LeastRequest,
        IpHash,
        ConsistentHash,
        WeightedRandom,
        PeakEwma,
    )
}
"""Config name -> algorithm."""


def make_balancer(
    name: str, targets: Sequence[T], *, rng: random.Random | None = None
) -> Balancer[T]:
    """The algorithm called ``name`` in the config, over ``targets``."""
    try:
        cls = ALGORITHMS[name]
    except KeyError:
        valid = ", ".join(ALGORITHMS)
        raise ValueError(
            f"unknown balancing algorithm {name!r}; expected one of: {valid}"
        ) from None
    return cls(targets, rng=rng)
