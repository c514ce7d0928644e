"""Admission limits: a token bucket, one bucket per client key, a concurrency limit, and the
IETF rate-limit response headers.

Token bucket as in Envoy's local rate limit (``rate`` tokens a second, up to ``burst`` held, the
bucket starts full), with a continuous refill instead of Envoy's ``fill_interval`` steps. It is
kept in GCRA form (the "generic cell rate algorithm" of ATM, as in redis-cell or throttled): the
state is one float, the *theoretical arrival time* ``tat`` at which the bucket will be full
again. ``tokens(now) = burst - (tat - now) * rate`` while ``tat > now``; a request of ``cost``
is admitted when ``max(tat, now) + cost / rate - now <= burst / rate`` and then pushes ``tat``
by ``cost / rate``. One float per bucket is what makes the keyed limiter cheap: a key whose
``tat <= now`` holds a full bucket, indistinguishable from a new one, so it can be dropped.

``rate`` must be > 0, as in Envoy (``tokens_per_fill`` > 0). A rate of 0 is refused rather than
given a meaning because both readings are common and opposite: Traefik reads ``average = 0`` as
"no limit", a token bucket reads it as "the first ``burst`` requests, then nothing ever". To turn
limiting off, configure no limiter; to refuse all traffic, use a fault or a forced state.
``burst`` must be >= 1: a request costs 1 by default and a smaller bucket could never admit it.

Nothing here reads a clock: every call takes ``now`` in monotonic seconds. A ``now`` earlier than
one already seen is tolerated (the bucket simply looks emptier), never an error.

Headers follow draft-ietf-httpapi-ratelimit-headers (the ``RateLimit-Policy`` / ``RateLimit``
pair, Structured Field lists of quoted policy names with parameters). A token bucket is
advertised as ``q = floor(burst)`` requests per window ``w = ceil(burst / rate)`` seconds: the
window is the time an empty bucket takes to fill. Why not ``q = rate`` per 1 s window: that
promise is false whenever ``burst < rate`` (100 requests sent at once against rate 100, burst 10
mostly fail), and a fractional rate (0.5/s) cannot be written as the integer ``q`` the draft
requires. "At most ``q`` in any ``w`` seconds" does imply conformance to the bucket (any span of
L seconds then holds at most ``q + q*L/w <= burst + rate*L``), so a client that paces itself by
the policy is never rejected. ``RateLimit`` then reports ``r = floor(tokens left)`` and
``t = ceil(seconds until the bucket is full again)``, so ``r`` grows back to ``q`` within ``t``.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any, Final, NamedTuple

from mypy_extensions import mypyc_attr

__all__ = [
    "REFUSED",
    "BucketStats",
    "ConcurrencyLimit",
    "ConcurrencyStats",
    "Gcra",
    "KeyedLimiter",
    "KeyedStats",
    "QuotaPolicy",
    "RateLimitDecision",
    "TokenBucket",
    "check_max_in_flight",
    "check_rate_burst",
    "ratelimit_headers",
    "retry_after_value",
]

EPS = _EPS = 1e-9
"""Slack in seconds for float rounding, so that a bucket of 5 at rate 10 admits all five at once
and a wait of 2.0000000001 s is still announced as 2 s. A nanosecond is far below any clock."""


def check_rate_burst(rate: float, burst: float) -> None:
    """Refuse a rate or burst no bucket can have (see the module's docstring)."""
    if not (rate > 0 and math.isfinite(rate)):
        raise ValueError(
            f"rate must be a finite number of requests per second above 0, got {rate!r} "
            "(to disable rate limiting configure no limiter)"
        )
    if not (burst >= 1 and math.isfinite(burst)):
        raise ValueError(
            f"burst must be a finite number of requests of at least 1, got {burst!r} "
            "(a bucket smaller than one request admits nothing)"
        )


@dataclass(frozen=True, slots=True)
class BucketStats:
    """What a token bucket reports to the control plane."""

    rate: float
    """Tokens (requests) added per second."""
    burst: float
    """Most tokens the bucket holds: the largest burst admitted at once."""
    tokens: float
    """Tokens available now (0 when empty)."""
    allowed_total: int
    rejected_total: int


@dataclass(frozen=True, slots=True)
class KeyedStats:
    """What a per-client limiter reports to the control plane."""

    rate: float
    burst: float
    max_keys: int
    """Most buckets held at once."""
    keys: int
    """Buckets held now. Idle keys are dropped lazily, so this may include some full ones."""
    allowed_total: int
    rejected_total: int
    expired_total: int
    """Buckets dropped because they had refilled to full: harmless, nothing was forgotten."""
    evicted_total: int
    """Buckets dropped at the ``max_keys`` cap while not yet full: those clients were handed a
    fresh burst. A rising figure means ``max_keys`` is too small for the client population."""


@dataclass(frozen=True, slots=True)
class ConcurrencyStats:
    """What a concurrency limit reports to the control plane."""

    max_in_flight: int | None
    """The cap; ``None`` means unlimited (requests are still counted)."""
    in_flight: int
    peak_in_flight: int
    """Highest ``in_flight`` seen since start."""
    acquired_total: int
    rejected_total: int


class RateLimitDecision(NamedTuple):
    """A consuming decision with the figures the response headers need.

    A named tuple rather than a frozen dataclass: it is built on the request path, and a tuple
    is built in a quarter of the time (as ``limits`` returns its ``WindowStats``)."""

    allowed: bool
    remaining: float
    """Tokens left after the decision (a request costs 1 by default)."""
    reset_s: float
    """Seconds until the bucket is full again; 0 when it is full now."""
    retry_after_s: float
    """0 when allowed; otherwise seconds until the same cost would be admitted, ``inf`` when it
    never can be (a cost above the burst)."""


def check_max_in_flight(max_in_flight: int | None) -> int | None:
    """A concurrency cap as given, or a clear error: a whole number of at least 1, or None."""
    if max_in_flight is None:
        return None
    if isinstance(max_in_flight, bool) or not isinstance(max_in_flight, int):
        raise ValueError(f"max_in_flight must be a whole number or None, got {max_in_flight!r}")
    if max_in_flight < 1:
        raise ValueError(
            f"max_in_flight must be at least 1, got {max_in_flight} (None means unlimited)"
        )
    return max_in_flight


REFUSED: Final = -math.inf
"""What :meth:`Gcra.take` returns for a request it refuses (no ``tat`` is ever -inf)."""


class Gcra:
    """The GCRA arithmetic of one ``(rate, burst)``, on a ``tat`` kept elsewhere.

    What every limiter runs on the one float it keeps per bucket (:class:`TokenBucket` and
    :class:`KeyedLimiter` in memory, the shared-memory zone of ``lbtui.balancer.shared``, the
    synced buckets of ``lbtui.balancer.synced_limits``): the algorithm lives here once, the
    keepers only keep ``tat`` and make a read-decide-write atomic."""

    __slots__ = ("burst", "interval", "limit", "rate", "tau")

    def __init__(self, rate: float, burst: float) -> None:
        check_rate_burst(rate, burst)
        self.rate = float(rate)
        self.burst = float(burst)
        self.interval = 1.0 / self.rate
        self.tau = self.burst / self.rate
        self.limit = self.tau + EPS

    def take(self, tat: float, now: float, cost: float) -> float:
        """The ``tat`` after admitting ``cost`` now, or :data:`REFUSED`."""
        new = (tat if tat > now else now) + cost * self.interval
        return new if new - now <= self.limit else REFUSED

    def peek(self, tat: float, now: float, cost: float) -> bool:
        return (tat if tat > now else now) + cost * self.interval - now <= self.limit

    def retry_after(self, tat: float, now: float, cost: float) -> float:
        if cost > self.burst:
            return math.inf
        wait = tat - now + cost * self.interval - self.tau
        return wait if wait > EPS else 0.0

    def reset_after(self, tat: float, now: float) -> float:
        wait = tat - now
        return wait if wait > EPS else 0.0

    def tokens(self, tat: float, now: float) -> float:
        debt = tat - now
        if debt <= 0:
            return self.burst
        left = self.burst - debt * self.rate
        return left if left > EPS else 0.0

    def decision(self, allowed: bool, tat: float, now: float, cost: float) -> RateLimitDecision:
        """What the response headers need after a decision left the bucket at ``tat``."""
        debt = tat - now
        if debt <= EPS:  # full: only a cost above the burst is refused
            return RateLimitDecision(allowed, self.burst, 0.0, 0.0 if allowed else math.inf)
        left = self.burst - debt * self.rate
        return RateLimitDecision(
            allowed,
            left if left > EPS else 0.0,
            debt,
            0.0 if allowed else self.retry_after(tat, now, cost),
        )

    def rescaled(self, tat: float, now: float, new: Gcra) -> float:
        """The ``tat`` under ``new`` settings that keeps the tokens held (capped to its burst)."""
        held = min(self.tokens(tat, now), new.burst)
        return now + (new.burst - held) / new.rate


class TokenBucket:
    """One token bucket: ``rate`` tokens a second, at most ``burst`` held; starts full. Its
    state is one float, the arithmetic its :class:`Gcra`'s."""

    __slots__ = ("_allowed", "_gcra", "_rejected", "_tat")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self._gcra = Gcra(rate, burst)
        self._tat = now
        self._allowed = 0
        self._rejected = 0

    @property
    def rate(self) -> float:
        return self._gcra.rate

    @property
    def burst(self) -> float:
        return self._gcra.burst

    def allow(self, now: float, cost: float = 1.0) -> bool:
        """Take ``cost`` tokens if they are there (decide: consumes). ``cost`` must be > 0."""
        tat = self._gcra.take(self._tat, now, cost)
        if tat != REFUSED:
            self._tat = tat
            self._allowed += 1
            return True
        self._rejected += 1
        return False

    def decide(self, now: float, cost: float = 1.0) -> RateLimitDecision:
        """As :meth:`allow`, returning what the response headers need."""
        allowed = self.allow(now, cost)
        return self._gcra.decision(allowed, self._tat, now, cost)

    def peek(self, now: float, cost: float = 1.0) -> bool:
        """Whether :meth:`allow` would admit ``cost`` now; takes nothing, counts nothing."""
        return self._gcra.peek(self._tat, now, cost)

    def retry_after(self, now: float, cost: float = 1.0) -> float:
        """Seconds until ``cost`` tokens are available: 0 if they are now, ``inf`` if never
        (``cost`` above the burst)."""
        return self._gcra.retry_after(self._tat, now, cost)

    def reset_after(self, now: float) -> float:
        """Seconds until the bucket is full again; 0 if it is full now."""
        return self._gcra.reset_after(self._tat, now)

    def tokens(self, now: float) -> float:
        """Tokens available now, from 0 to ``burst``."""
        return self._gcra.tokens(self._tat, now)

    def reconfigure(self, rate: float, burst: float, now: float) -> None:
        """Change rate and burst at run time; the tokens held are kept, capped to the new burst."""
        new = Gcra(rate, burst)
        self._tat = self._gcra.rescaled(self._tat, now, new)
        self._gcra = new

    def stats(self, now: float) -> BucketStats:
        g = self._gcra
        return BucketStats(g.rate, g.burst, self.tokens(now), self._allowed, self._rejected)


class KeyedLimiter:
    """One token bucket per client key (an IP, a header value, a tuple of both), in bounded
    memory.

    Each key holds one float (its GCRA ``tat``) in an ``OrderedDict`` kept in least-recently-used
    order: every decision moves its key to the end. A bucket that has refilled to full
    (``tat <= now``) is the same as no bucket, so it is dropped: whenever a new key is added, up
    to two full buckets are dropped from the least recently used end first, and :meth:`sweep`
    drops all of them there. At ``max_keys`` the least recently used bucket is evicted even if
    not full (``evicted_total`` counts that: its client gets a fresh burst). Since a key's
    ``tat`` is never more than ``burst / rate`` after its last use, every key idle for longer than
    that is full and gets dropped.
    """

    __slots__ = ("_allowed", "_evicted", "_expired", "_gcra", "_max_keys", "_rejected", "_tats")

    def __init__(self, rate: float, burst: float, *, max_keys: int = 100_000) -> None:
        gcra = Gcra(rate, burst)
        if isinstance(max_keys, bool) or not isinstance(max_keys, int) or max_keys < 1:
            raise ValueError(f"max_keys must be a whole number of at least 1, got {max_keys!r}")
        self._gcra = gcra
        """The arithmetic every key's bucket runs on (a key's state is its ``tat`` alone)."""
        self._max_keys = max_keys
        self._tats: OrderedDict[Hashable, float] = OrderedDict()
        self._allowed = 0
        self._rejected = 0
        self._expired = 0
        self._evicted = 0

    @property
    def rate(self) -> float:
        return self._gcra.rate

    @property
    def burst(self) -> float:
        return self._gcra.burst

    def __len__(self) -> int:
        """Buckets held now."""
        return len(self._tats)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._tats

    def allow(self, key: Hashable, now: float, cost: float = 1.0) -> bool:
        """Take ``cost`` tokens from ``key``'s bucket if they are there (decide: consumes)."""
        tats = self._tats
        gcra = self._gcra
        tat = tats.get(key)
        if tat is None:
            if cost > gcra.burst:
                self._rejected += 1
                return False
            self._add(key, now + cost * gcra.interval, now)
            self._allowed += 1
            return True
        tat = gcra.take(tat, now, cost)
        if tat != REFUSED:
            tats[key] = tat
            tats.move_to_end(key)
            self._allowed += 1
            return True
        tats.move_to_end(key)
        self._rejected += 1
        return False

    def decide(self, key: Hashable, now: float, cost: float = 1.0) -> RateLimitDecision:
        """As :meth:`allow`, returning what the response headers need."""
        allowed = self.allow(key, now, cost)
        return self._gcra.decision(allowed, self._tats.get(key, now), now, cost)

    def peek(self, key: Hashable, now: float, cost: float = 1.0) -> bool:
        """Whether :meth:`allow` would admit ``cost`` for ``key`` now; changes nothing."""
        return self._gcra.peek(self._tats.get(key, now), now, cost)

    def retry_after(self, key: Hashable, now: float, cost: float = 1.0) -> float:
        """Seconds until ``key`` has ``cost`` tokens: 0 if now, ``inf`` if never."""
        return self._gcra.retry_after(self._tats.get(key, now), now, cost)

    def reset_after(self, key: Hashable, now: float) -> float:
        """Seconds until ``key``'s bucket is full again; 0 if it is full now."""
        return self._gcra.reset_after(self._tats.get(key, now), now)

    def remaining(self, key: Hashable, now: float) -> float:
        """Tokens ``key`` has now, from 0 to ``burst`` (a key never seen has a full bucket)."""
        return self._gcra.tokens(self._tats.get(key, now), now)

    def sweep(self, now: float) -> int:
        """Drop the full buckets at the least recently used end; returns how many.

        Stops at the first bucket that is not full, so it is cheap to call on every tick; keys
        idle longer than ``burst / rate`` are all gone afterwards.
        """
        tats = self._tats
        dropped = 0
        while tats:
            oldest = next(iter(tats))
            if tats[oldest] > now:
                break
            del tats[oldest]
            dropped += 1
        self._expired += dropped
        return dropped

    def reconfigure(self, rate: float, burst: float, now: float) -> None:
        """Change rate and burst for every key; each keeps its tokens, capped to the new burst
        (a bucket that is then full is dropped).

        O(keys held): meant for an operator's change, not for the request path.
        """
        new = Gcra(rate, burst)
        old_rate, old_burst = self._gcra.rate, self._gcra.burst
        new_rate, new_burst = new.rate, new.burst
        refreshed: OrderedDict[Hashable, float] = OrderedDict()
        for key, tat in self._tats.items():
            debt = tat - now
            if debt <= 0:
                self._expired += 1
                continue
            held = max(old_burst - debt * old_rate, 0.0)
            if held >= new_burst:
                self._expired += 1  # full under the new burst: the same as no bucket
                continue
            refreshed[key] = now + (new_burst - held) / new_rate
        self._tats = refreshed
        self._gcra = new

    def stats(self, now: float) -> KeyedStats:
        """Counters and size; ``now`` is taken for the same signature as the other limiters."""
        return KeyedStats(
            self._gcra.rate,
            self._gcra.burst,
            self._max_keys,
            len(self._tats),
            self._allowed,
            self._rejected,
            self._expired,
            self._evicted,
        )

    def _add(self, key: Hashable, tat: float, now: float) -> None:
        tats = self._tats
        # Growth pays for shrinkage: drop up to two full buckets from the LRU end first.
        if tats:
            oldest = next(iter(tats))
            if tats[oldest] <= now:
                del tats[oldest]
                self._expired += 1
                if tats:
                    oldest = next(iter(tats))
                    if tats[oldest] <= now:
                        del tats[oldest]
                        self._expired += 1
        if len(tats) >= self._max_keys:
            # The oldest is not full (a full one was dropped above): its client loses its state.
            tats.popitem(last=False)
            self._evicted += 1
        tats[key] = tat


class ConcurrencyLimit:
    """At most ``max_in_flight`` requests at once; ``None`` means unlimited but still counted.

    Every successful :meth:`try_acquire` must be paired with exactly one :meth:`release`.
    """

    __slots__ = ("_acquired", "_in_flight", "_max", "_peak", "_rejected")

    def __init__(self, max_in_flight: int | None) -> None:
        self._max = self._checked(max_in_flight)
        self._in_flight = 0
        self._peak = 0
        self._acquired = 0
        self._rejected = 0

    @staticmethod
    def _checked(max_in_flight: int | None) -> int | None:
        return check_max_in_flight(max_in_flight)

    @property
    def max_in_flight(self) -> int | None:
        return self._max

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def try_acquire(self) -> bool:
        """Take a slot if one is free (decide: consumes)."""
        n = self._in_flight
        if self._max is not None and n >= self._max:
            self._rejected += 1
            return False
        n += 1
        self._in_flight = n
        if n > self._peak:
            self._peak = n
        self._acquired += 1
        return True

    def peek(self) -> bool:
        """Whether :meth:`try_acquire` would succeed now; takes nothing."""
        return self._max is None or self._in_flight < self._max

    def release(self) -> None:
        """Give back a slot taken by :meth:`try_acquire`."""
        if self._in_flight <= 0:
            raise RuntimeError("ConcurrencyLimit.release() without a matching try_acquire()")
        self._in_flight -= 1

    def reconfigure(self, max_in_flight: int | None) -> None:
        """Change the cap at run time; requests above a lowered cap finish, none is cut off."""
        self._max = self._checked(max_in_flight)

    def stats(self) -> ConcurrencyStats:
        return ConcurrencyStats(
            self._max, self._in_flight, self._peak, self._acquired, self._rejected
        )


# --- IETF RateLimit headers -----------------------------------------------------------------


def _sf_string(text: str) -> str:
    """``text`` as a Structured Field String (RFC 9651 §3.3.3)."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


@mypyc_attr(native_class=False)  # validates what it is given (lbtui/build.py)
@dataclass(frozen=True, slots=True)
class QuotaPolicy:
    """A quota policy as advertised in ``RateLimit-Policy``: ``quota`` requests per
    ``window_s`` seconds, under a name that ties it to the ``RateLimit`` field."""

    name: str
    """Policy name, printable ASCII; sent as a quoted Structured Field String."""
    quota: int
    """Requests per window (``q``)."""
    window_s: int
    """Window in whole seconds (``w``)."""
    policy_field: str = field(init=False, repr=False, compare=False)
    """The ``RateLimit-Policy`` member, ``"name";q=10;w=5``, rendered once."""
    quoted_name: str = field(init=False, repr=False, compare=False)
    """The name as a Structured Field String, rendered once."""

    def __post_init__(self) -> None:
        me: Any = self  # fields not checked yet: read untyped (lbtui/build.py)
        if not me.name or not all(" " <= ch <= "~" for ch in me.name):
            raise ValueError(
                f"a rate-limit policy name must be non-empty printable ASCII, got {me.name!r}"
            )
        if isinstance(me.quota, bool) or not isinstance(me.quota, int) or me.quota < 0:
            raise ValueError(f"quota must be a whole number of requests >= 0, got {me.quota!r}")
        if isinstance(me.window_s, bool) or not isinstance(me.window_s, int) or me.window_s < 1:
            raise ValueError(
                f"window_s must be a whole number of seconds >= 1, got {me.window_s!r}"
            )
        quoted = _sf_string(me.name)
        object.__setattr__(self, "quoted_name", quoted)
        object.__setattr__(self, "policy_field", f"{quoted};q={me.quota};w={me.window_s}")

    @classmethod
    def for_bucket(cls, name: str, rate: float, burst: float) -> QuotaPolicy:
        """The policy a token bucket can honestly promise: ``floor(burst)`` requests per
        ``ceil(burst / rate)`` seconds (see the module docstring for why)."""
        check_rate_burst(rate, burst)
        return cls(name, math.floor(burst + _EPS), max(1, math.ceil(burst / rate - _EPS)))


def retry_after_value(seconds: float) -> str:
    """``Retry-After`` for a rejection: whole seconds rounded up, never below 1."""
    return str(max(1, math.ceil(seconds - _EPS)))


def ratelimit_headers(policy: QuotaPolicy, decision: RateLimitDecision) -> list[tuple[str, str]]:
    """Response headers for a decision: ``RateLimit-Policy`` and ``RateLimit`` always, plus
    ``Retry-After`` on a rejection.

    ``r`` is the whole requests left (tokens rounded down), ``t`` the seconds until the bucket
    is full again rounded up. A rejection whose cost can never be admitted (``retry_after_s`` is
    ``inf``) carries no ``Retry-After``: there is no time to promise.
    """
    remaining = int(decision.remaining + _EPS)  # floor, for the non-negative
    if remaining < 0:
        remaining = 0
    reset = decision.reset_s
    reset_whole = math.ceil(reset - _EPS) if reset > _EPS else 0
    headers = [
        ("RateLimit-Policy", policy.policy_field),
        ("RateLimit", f"{policy.quoted_name};r={remaining};t={reset_whole}"),
    ]
    if not decision.allowed and math.isfinite(decision.retry_after_s):
        headers.append(("Retry-After", retry_after_value(decision.retry_after_s)))
    return headers
