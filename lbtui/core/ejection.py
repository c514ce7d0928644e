"""Passive ejection of a pool's backends: Envoy's outlier detection, consecutive-failure rule.

Semantics are Envoy's ``outlier_detection`` with ``consecutive_5xx``: a backend that fails
``consecutive_failures`` requests in a row (a success resets the run) is ejected for
``base_s × times_ejected``, capped at ``max_s``; no ejection may take the ejected share of the
pool past ``max_percent``, except that one backend may always be ejected (Envoy: "will eject at
least one host regardless of the value"). A pool whose available share falls below
``panic_percent`` balances over every backend (Envoy's ``healthy_panic_threshold``): see
:meth:`OutlierDetector.panic`. What counts as a failure (5xx, connect error, timeout) is the
proxy's choice. Where lbtui differs or chooses:

- Expiry needs no timer. :meth:`OutlierDetector.is_ejected` compares ``now`` with the deadline
  and so stops refusing the backend the moment it expires, without allocating; the owner calls
  :meth:`OutlierDetector.tick` at its own pace (Envoy's ``interval``) to collect the
  ``readmitted`` events, stamped with the deadline at which they happened.
- A run that reaches the threshold while ``max_percent`` forbids ejecting reports an
  ``ejection_skipped`` event, so the console can show it, and starts counting again: the next
  attempt comes after another full run, not on every further failure.
- While a backend is ejected its outcomes (late answers to requests sent before) are ignored.
- The multiplier decays: Envoy lowers ``times_ejected`` by one for every interval the host
  spends un-ejected; lbtui resets it to 0 once the backend has stayed readmitted for ``max_s``,
  so a backend that flaps within five minutes keeps doubling its time out, and one that
  behaved for five minutes starts again from ``base_s``.
- Operators may :meth:`~OutlierDetector.eject` and :meth:`~OutlierDetector.readmit` by hand.
  An operator's ejection ignores ``max_percent`` and leaves ``times_ejected`` alone, but counts
  towards the share that limits automatic ejections.

Nothing here reads a clock: every call takes ``now`` in monotonic seconds. The per-request
calls (``record`` of a success, ``is_ejected``) are a dict lookup and a compare.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from mypy_extensions import mypyc_attr

__all__ = [
    "EjectionConfig",
    "EjectionEvent",
    "EjectionKind",
    "EjectionStats",
    "OutlierDetector",
]

OPERATOR_EJECT_REASON = "ejected by operator"
OPERATOR_READMIT_REASON = "readmitted by operator"

_NEVER = -math.inf
_FOREVER = math.inf


@mypyc_attr(native_class=False)  # validates what it is given (lbtui/build.py)
@dataclass(frozen=True, slots=True)
class EjectionConfig:
    """When a pool ejects its backends. Validated on construction (``ValueError``)."""

    consecutive_failures: int = 5
    """Failed requests in a row that eject a backend; 0 turns passive ejection off."""
    base_s: float = 30.0
    """Seconds of the first ejection; the n-th lasts ``n × base_s``. > 0."""
    max_s: float = 300.0
    """Longest ejection, in seconds; also how long a readmitted backend must stay in before
    its ``times_ejected`` resets to 0. At least ``base_s``."""
    max_percent: float = 50.0
    """Most of the pool, in percent, that may be ejected at once; in [0, 100]. One backend
    may always be ejected, so 0 means "at most one"."""
    panic_percent: float = 50.0
    """Below this percentage of available backends the pool balances over all of them,
    ignoring health and ejection; in [0, 100]. 0 turns panic off."""

    def __post_init__(self) -> None:
        me: Any = self  # fields not checked yet: read untyped (lbtui/build.py)
        problems: list[str] = []
        value = me.consecutive_failures
        if not _is_int(value) or value < 0:
            problems.append(f"consecutive_failures must be an integer >= 0, got {value!r}")
        for name in ("base_s", "max_s"):
            value = getattr(me, name)
            if not _is_number(value) or not value > 0.0:
                problems.append(f"{name} must be a number of seconds > 0, got {value!r}")
        if _is_number(me.base_s) and _is_number(me.max_s) and 0.0 < me.max_s < me.base_s:
            problems.append(f"max_s ({me.max_s}) must not be less than base_s ({me.base_s})")
        for name in ("max_percent", "panic_percent"):
            value = getattr(me, name)
            if not _is_number(value) or not 0.0 <= value <= 100.0:
                problems.append(f"{name} must be a percentage in [0, 100], got {value!r}")
        if problems:
            raise ValueError("invalid ejection config: " + "; ".join(problems))


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


class EjectionKind(StrEnum):
    """What happened to a backend; the value is the name used in events and JSON."""

    EJECTED = "ejected"
    READMITTED = "readmitted"
    EJECTION_SKIPPED = "ejection_skipped"
    """The backend reached the threshold, but ejecting it would exceed ``max_percent``."""


_EJECTED = EjectionKind.EJECTED
_READMITTED = EjectionKind.READMITTED
_SKIPPED = EjectionKind.EJECTION_SKIPPED


@dataclass(frozen=True, slots=True)
class EjectionEvent:
    """One ejection, readmission or skipped ejection of backend ``name``."""

    kind: EjectionKind
    name: str
    at: float
    """Monotonic seconds when it happened; for a readmission on expiry, the deadline (even
    when :meth:`OutlierDetector.tick` noticed it later)."""
    until: float | None
    """For ``ejected``: the deadline, or ``None`` when an operator ejected it until further
    notice. ``None`` for the other kinds."""
    reason: str
    """A sentence a person reads, e.g. ``5 consecutive failures (2nd ejection, 60 s)``."""


@dataclass(frozen=True, slots=True)
class EjectionStats:
    """What passive ejection shows for one backend: plain JSON-friendly values."""

    name: str
    ejected: bool
    ejected_at: float | None
    """Monotonic seconds when the current ejection began; ``None`` when not ejected."""
    ejected_until: float | None
    """The current ejection's deadline; ``None`` when not ejected, or ejected by an operator
    until further notice."""
    remaining_s: float | None
    """Seconds until readmission; ``None`` as for ``ejected_until``."""
    times_ejected: int
    """Automatic ejections since the multiplier last reset (see the decay rule)."""
    consecutive_failures: int
    """The current run of failures (0 while ejected: outcomes are ignored then)."""
    reason: str
    """The reason of the backend's latest event, or ``never ejected``."""


class _Host:
    """One backend's outlier state. ``until`` is what the hot path reads."""

    __slots__ = ("ejected", "ejected_at", "failures", "free_since", "reason", "times", "until")

    def __init__(self) -> None:
        self.failures = 0
        self.times = 0
        self.ejected = False
        """Ejected and not yet readmitted (the deadline may have passed: see ``tick``)."""
        self.ejected_at = _NEVER
        self.until = _NEVER
        """Refused while ``now < until``; ``-inf`` when not ejected, ``inf`` until readmitted
        by an operator."""
        self.free_since = _NEVER
        """When the backend was last readmitted; the decay of ``times`` counts from here."""
        self.reason = "never ejected"


class OutlierDetector:
    """Passive ejection for one pool, by backend name. Not thread-safe: it lives on the
    proxy's event loop.

    Outcomes and queries for a name that is not a member (a late outcome of a removed
    backend) are ignored: ``record`` returns ``None`` and ``is_ejected`` ``False``; ``stats``,
    ``eject`` and ``readmit`` raise ``KeyError``.

    ``listener`` is called synchronously with every :class:`EjectionEvent`, in order. Methods
    also return the events they cause; readmissions on expiry are returned by :meth:`tick`.
    """

    __slots__ = (
        "_base_s",
        "_ejected",
        "_hosts",
        "_listener",
        "_max_pct",
        "_max_s",
        "_next_deadline",
        "_pending",
        "_threshold",
        "config",
    )

    def __init__(
        self,
        config: EjectionConfig,
        members: Sequence[str] = (),
        *,
        listener: Callable[[EjectionEvent], None] | None = None,
    ) -> None:
        self.config = config
        self._listener = listener
        self._threshold = config.consecutive_failures
        self._base_s = float(config.base_s)
        self._max_s = float(config.max_s)
        self._max_pct = float(config.max_percent)
        self._hosts: dict[str, _Host] = {}
        self._ejected = 0
        """Hosts with ``ejected`` set, expired or not."""
        self._next_deadline = _FOREVER
        """No ejection expires before this: ``tick`` has nothing to do until then."""
        self._pending: list[EjectionEvent] = []
        """Readmissions found outside ``tick``, for the next ``tick`` to return."""
        self.set_members(members)

    @property
    def members(self) -> tuple[str, ...]:
        return tuple(self._hosts)

    def set_members(self, names: Sequence[str]) -> None:
        """The pool is now ``names``: new backends start clean, known ones keep their state,
        and removed ones are forgotten (their ejection ends without an event)."""
        wanted = dict.fromkeys(names)
        for name in [n for n in self._hosts if n not in wanted]:
            if self._hosts.pop(name).ejected:
                self._ejected -= 1
        for name in wanted:
            if name not in self._hosts:
                self._hosts[name] = _Host()

    # -- decide ---------------------------------------------------------------------------

    def is_ejected(self, name: str, now: float) -> bool:
        """Is ``name`` refused at ``now``? ``False`` from the deadline on, even before
        :meth:`tick` reports the readmission."""
        host = self._hosts.get(name)
        return host is not None and now < host.until

    def panic(self, available: int, total: int) -> bool:
        """Should a pool with ``available`` of ``total`` backends usable (up and not ejected)
        balance over all ``total`` instead? True when the available share is below
        ``panic_percent``; never for an empty pool or with ``panic_percent`` 0."""
        return total > 0 and available * 100.0 < self.config.panic_percent * total

    # -- report ---------------------------------------------------------------------------

    def record(self, name: str, failure: bool, now: float) -> EjectionEvent | None:
        """Report one request's outcome on ``name``; returns the ejection (or skipped
        ejection) it caused, if any. A success resets the run of failures."""
        host = self._hosts.get(name)
        if host is None:
            return None
        if not failure:
            host.failures = 0
            return None
        if self._threshold == 0 or now < host.until:
            return None
        host.failures += 1
        if host.failures < self._threshold:
            return None
        return self._on_threshold(name, host, now)

    def tick(self, now: float) -> list[EjectionEvent]:
        """Readmit every backend whose ejection has expired by ``now`` and return those
        readmissions (and any found since the last tick), oldest deadline first."""
        self._expire(now)
        events, self._pending = self._pending, []
        return events

    def eject(
        self,
        name: str,
        now: float,
        reason: str = OPERATOR_EJECT_REASON,
        *,
        duration_s: float | None = None,
    ) -> EjectionEvent:
        """An operator ejects ``name`` for ``duration_s`` (``None``: until :meth:`readmit`),
        replacing any current ejection. ``max_percent`` does not apply."""
        host = self._host(name)
        if duration_s is not None and (not _is_number(duration_s) or duration_s <= 0.0):
            raise ValueError(f"duration_s must be a number of seconds > 0, got {duration_s!r}")
        self._expire(now)
        until = _FOREVER if duration_s is None else now + duration_s
        return self._eject(name, host, now, until, reason)

    def adopt(
        self, name: str, now: float, until: float, times: int, reason: str
    ) -> EjectionEvent | None:
        """Take over an ejection another process of this balancer made (``[listener]
        workers``): ejected until ``until``, its ``times`` kept for the next one's length.
        ``None`` when ``name`` is not a member, or is already ejected at least that long."""
        host = self._hosts.get(name)
        if host is None or (host.ejected and host.until >= until):
            return None
        self._expire(now)
        host.times = max(host.times, times)
        return self._eject(name, host, now, until, reason)

    def readmit(
        self, name: str, now: float, reason: str = OPERATOR_READMIT_REASON
    ) -> EjectionEvent | None:
        """Readmit ``name`` now (an operator, or a passing active health check: say which in
        ``reason``); ``None`` when it is not ejected (or its ejection has already expired:
        :meth:`tick` reports that readmission)."""
        host = self._host(name)
        self._expire(now)
        if not host.ejected:
            return None
        return self._readmit(name, host, now, reason)

    # -- show -----------------------------------------------------------------------------

    def stats(self, name: str, now: float) -> EjectionStats:
        """A frozen, JSON-friendly picture of ``name`` at ``now``; changes nothing."""
        host = self._host(name)
        ejected = now < host.until
        bounded = ejected and host.until != _FOREVER
        times = host.times
        reason = host.reason
        if not ejected:
            free_since = host.free_since
            if host.ejected:  # expired, and tick has not readmitted it yet
                free_since = host.until
                reason = _ended(host)
            if now - free_since >= self._max_s:
                times = 0
        return EjectionStats(
            name=name,
            ejected=ejected,
            ejected_at=host.ejected_at if ejected else None,
            ejected_until=host.until if bounded else None,
            remaining_s=round(host.until - now, 9) if bounded else None,
            times_ejected=times,
            consecutive_failures=host.failures,
            reason=reason,
        )

    # -- transitions ----------------------------------------------------------------------

    def _host(self, name: str) -> _Host:
        host = self._hosts.get(name)
        if host is None:
            raise KeyError(f"{name!r} is not a member of this pool")
        return host

    def _on_threshold(self, name: str, host: _Host, now: float) -> EjectionEvent:
        host.failures = 0
        self._expire(now)
        if now - host.free_since >= self._max_s:
            host.times = 0
        k = self._threshold
        run = "1 failure" if k == 1 else f"{k} consecutive failures"
        n = len(self._hosts)
        count = self._ejected
        if count > 0 and (count + 1) * 100.0 > self._max_pct * n:
            reason = (
                f"{run}; not ejected: {count} of {n} backends already ejected,"
                f" max {_pct(self._max_pct)}"
            )
            host.reason = reason
            return self._emit(EjectionEvent(_SKIPPED, name, now, None, reason))
        host.times += 1
        duration = min(self._base_s * host.times, self._max_s)
        reason = f"{run} ({_ordinal(host.times)} ejection, {duration:g} s)"
        return self._eject(name, host, now, now + duration, reason)

    def _eject(
        self, name: str, host: _Host, now: float, until: float, reason: str
    ) -> EjectionEvent:
        if not host.ejected:
            host.ejected = True
            self._ejected += 1
        host.failures = 0
        host.ejected_at = now
        host.until = until
        host.reason = reason
        self._next_deadline = min(self._next_deadline, until)
        return self._emit(
            EjectionEvent(_EJECTED, name, now, None if until == _FOREVER else until, reason)
        )

    def _readmit(self, name: str, host: _Host, at: float, reason: str) -> EjectionEvent:
        host.ejected = False
        self._ejected -= 1
        host.until = _NEVER
        host.ejected_at = _NEVER
        host.free_since = at
        host.failures = 0
        host.reason = reason
        return self._emit(EjectionEvent(_READMITTED, name, at, None, reason))

    def _expire(self, now: float) -> None:
        """Readmit the backends whose deadline has passed, queueing the events for ``tick``."""
        if now < self._next_deadline:
            return
        due = sorted(
            ((host.until, name, host) for name, host in self._hosts.items() if host.ejected),
            key=lambda item: (item[0], item[1]),
        )
        next_deadline = _FOREVER
        for until, name, host in due:
            if until > now:
                next_deadline = min(next_deadline, until)
                continue
            self._pending.append(self._readmit(name, host, until, _ended(host)))
        self._next_deadline = next_deadline

    def _emit(self, event: EjectionEvent) -> EjectionEvent:
        if self._listener is not None:
            self._listener(event)
        return event


def _ended(host: _Host) -> str:
    return f"ejection of {host.until - host.ejected_at:g} s ended"


def _pct(value: float) -> str:
    """``50%``, ``33.3%``: whole percentages without a decimal, others with one."""
    rounded = round(value, 1)
    return f"{rounded:.0f}%" if rounded == int(rounded) else f"{rounded:.1f}%"


_SUFFIXES = {1: "st", 2: "nd", 3: "rd"}


def _ordinal(n: int) -> str:
    """``1st``, ``2nd``, ``3rd``, ``4th``, ``11th``, ``22nd``."""
    teen = 10 <= n % 100 <= 20
    return f"{n}{'th' if teen else _SUFFIXES.get(n % 10, 'th')}"
