"""Per-backend circuit breaker: an explicit state machine that reports every transition.

Semantics are resilience4j's ``CircuitBreakerStateMachine``: a count- or time-based sliding
window of outcomes, a failure-rate and a slow-call-rate threshold (both trip at ``>=``), no
judgement before ``min_calls`` calls, a wait in ``open`` before a bounded number of half-open
probe calls, and the operator states ``forced_open`` and ``disabled``. Where lbtui differs:

- The proxy owns the I/O, so calls are not wrapped: the proxy asks :meth:`CircuitBreaker.allow`,
  then reports the outcome with :meth:`~CircuitBreaker.record` (or gives the permit back with
  :meth:`~CircuitBreaker.release` when the client went away before there was an outcome).
- Half-open is strict: the first failed or slow probe re-opens at once, and the breaker closes
  only when every probe succeeded (resilience4j waits for all probes and compares their rate).
- ``open`` turns ``half_open`` inside the first :meth:`~CircuitBreaker.allow` after the wait, as
  resilience4j does without ``automaticTransitionFromOpenToHalfOpenEnabled``: no timer needed.
- Every transition carries a reason a person can read (``failure rate 62% >= 50% over 20
  calls``) and goes, synchronously and in order, to the listener; ``record`` and ``force`` also
  return it. Operator actions are transitions too.

Nothing here reads a clock: every call takes ``now`` in monotonic seconds. The closed-state hot
path (``allow`` + ``record``) allocates nothing: windows are rings with running totals.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Literal

from mypy_extensions import mypyc_attr

__all__ = [
    "BreakerConfig",
    "BreakerState",
    "BreakerStats",
    "CircuitBreaker",
    "ForceMode",
    "Transition",
]

ForceMode = Literal["open", "closed", "disabled", "auto"]
"""What an operator can ask for: see :meth:`CircuitBreaker.force`."""

OPERATOR_REASON = "forced by operator"


class BreakerState(StrEnum):
    """A breaker's state; the value is the name used in events, metrics and JSON."""

    CLOSED = "closed"
    """Calls pass; outcomes fill the window, which trips to ``open`` past a threshold."""
    OPEN = "open"
    """Calls are refused until ``open_s`` has elapsed; then the next ``allow`` probes."""
    HALF_OPEN = "half_open"
    """Up to ``half_open_calls`` probes pass; one failure re-opens, all succeeding closes."""
    FORCED_OPEN = "forced_open"
    """The operator refuses every call, until forced otherwise."""
    DISABLED = "disabled"
    """The operator lets every call pass and nothing is recorded, until forced otherwise."""


_CLOSED = BreakerState.CLOSED
_OPEN = BreakerState.OPEN
_HALF_OPEN = BreakerState.HALF_OPEN
_FORCED_OPEN = BreakerState.FORCED_OPEN
_DISABLED = BreakerState.DISABLED


@mypyc_attr(native_class=False)  # validates what it is given (lbtui/build.py)
@dataclass(frozen=True, slots=True)
class BreakerConfig:
    """How a breaker judges a backend. Validated on construction (``ValueError``)."""

    window: Literal["count", "time"] = "count"
    """``count``: the last ``window_size`` calls; ``time``: the calls of the last
    ``window_size`` seconds, in one-second buckets."""
    window_size: int = 20
    """Calls (count window) or seconds (time window) the window holds; at least 1."""
    min_calls: int = 10
    """No judgement before the window holds this many calls; at least 1, and for a count window
    at most ``window_size`` (otherwise the breaker could never trip)."""
    failure_rate: float = 50.0
    """Percent of failed calls in the window that trips the breaker (``>=``); in (0, 100]."""
    slow_call_rate: float = 100.0
    """Percent of slow calls in the window that trips the breaker (``>=``); in (0, 100].
    100 means only a window of nothing but slow calls trips."""
    slow_call_s: float = 1.0
    """A call is slow when it took at least this many seconds, whether or not it failed; > 0."""
    open_s: float = 10.0
    """Seconds to stay open before probing; 0 means the next ``allow`` probes at once."""
    half_open_calls: int = 3
    """Probe calls admitted in half-open; all must succeed to close. At least 1."""

    def __post_init__(self) -> None:
        me: Any = self  # fields not checked yet: read untyped (lbtui/build.py)
        problems: list[str] = []
        if me.window not in ("count", "time"):
            problems.append(f"window must be 'count' or 'time', got {me.window!r}")
        for name in ("window_size", "min_calls", "half_open_calls"):
            value = getattr(me, name)
            if not _is_int(value) or value < 1:
                problems.append(f"{name} must be an integer >= 1, got {value!r}")
        for name in ("failure_rate", "slow_call_rate"):
            value = getattr(me, name)
            if not _is_number(value) or not 0.0 < value <= 100.0:
                problems.append(f"{name} must be a percentage in (0, 100], got {value!r}")
        if not _is_number(me.slow_call_s) or not me.slow_call_s > 0.0:
            problems.append(f"slow_call_s must be a number of seconds > 0, got {me.slow_call_s!r}")
        if not _is_number(me.open_s) or not me.open_s >= 0.0:
            problems.append(f"open_s must be a number of seconds >= 0, got {me.open_s!r}")
        if (
            me.window == "count"
            and _is_int(me.min_calls)
            and _is_int(me.window_size)
            and 1 <= me.window_size < me.min_calls
        ):
            problems.append(
                f"min_calls ({me.min_calls}) must not exceed window_size ({me.window_size})"
                " for a count window, or the breaker could never trip"
            )
        if problems:
            raise ValueError("invalid breaker config: " + "; ".join(problems))


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True, slots=True)
class Transition:
    """One change of state, as an event: from ``old`` to ``new`` at ``at``, and why."""

    old: BreakerState
    new: BreakerState
    at: float
    """Monotonic seconds, the ``now`` of the call that caused it."""
    reason: str
    """A sentence a person reads, e.g. ``failure rate 62% >= 50% over 20 calls``."""


@dataclass(frozen=True, slots=True)
class BreakerStats:
    """What a breaker shows: plain JSON-friendly values (``state`` is a ``str`` enum).

    The window figures are live while closed. Outside closed the window is frozen as it was
    when the breaker tripped, so an open breaker still shows the calls that opened it; it
    starts empty again when the breaker closes or the operator forces a state.
    """

    state: BreakerState
    since: float
    """Monotonic seconds when the current state began."""
    reason: str
    """Why the breaker is in this state: the reason of the transition that entered it."""
    window: Literal["count", "time"]
    window_size: int
    calls: int
    """Calls in the window."""
    failures: int
    slow_calls: int
    failure_rate: float | None
    """Percent of failed calls in the window; ``None`` while the window holds fewer than
    ``min_calls`` calls, because no judgement is made then."""
    slow_call_rate: float | None
    """Percent of slow calls in the window; ``None`` below ``min_calls`` as above."""
    failure_rate_threshold: float
    slow_call_rate_threshold: float
    slow_call_s: float
    min_calls: int
    open_until: float | None
    """When open: monotonic seconds from which the next ``allow`` probes; otherwise ``None``."""
    retry_in_s: float | None
    """When open: seconds until probing (0 once due); otherwise ``None``."""
    half_open_permits: int | None
    """When half-open: probe permits not yet handed out; otherwise ``None``."""
    probes_succeeded: int | None
    """When half-open: probes that succeeded so far; otherwise ``None``."""
    times_opened: int
    """Times the breaker tripped to ``open`` by itself (operator forcing not counted)."""


_FAIL = 1
_SLOW = 2
_SEEN = 4


class _CountWindow:
    """The last ``size`` outcomes in a ring of bit flags, with running totals: O(1) per add."""

    __slots__ = ("_i", "_ring", "_size", "calls", "failures", "slow")

    def __init__(self, size: int) -> None:
        self._size = size
        self._ring = bytearray(size)
        self._i = 0
        self.calls = 0
        self.failures = 0
        self.slow = 0

    def add(self, failure: bool, slow: bool, now: float) -> None:
        ring = self._ring
        i = self._i
        old = ring[i]
        if old:
            if old & _FAIL:
                self.failures -= 1
            if old & _SLOW:
                self.slow -= 1
        else:
            self.calls += 1
        new = _SEEN
        if failure:
            new |= _FAIL
            self.failures += 1
        if slow:
            new |= _SLOW
            self.slow += 1
        ring[i] = new
        i += 1
        self._i = 0 if i == self._size else i

    def advance(self, now: float) -> None:
        """Nothing expires by time in a count window."""

    def reset(self, now: float) -> None:
        self._ring[:] = bytes(self._size)
        self._i = self.calls = self.failures = self.slow = 0


_floor = math.floor


class _TimeWindow:
    """The outcomes of the last ``size`` seconds in one-second buckets, with running totals.

    Bucket ``s % size`` holds second ``s``; ``_head`` is the newest second covered, so the
    window is seconds ``(_head - size, _head]``. Moving ``now`` forward clears the buckets it
    passes: each second is cleared at most once, so adds are O(1) amortised.
    """

    __slots__ = ("_calls", "_fails", "_head", "_size", "_slows", "calls", "failures", "slow")

    def __init__(self, size: int, now: float) -> None:
        self._size = size
        self._calls = [0] * size
        self._fails = [0] * size
        self._slows = [0] * size
        self._head = _floor(now)
        self.calls = 0
        self.failures = 0
        self.slow = 0

    def advance(self, now: float) -> None:
        sec = _floor(now)
        head = self._head
        if sec <= head:
            return
        size = self._size
        if sec - head >= size:
            self.reset(now)
            return
        calls, fails, slows = self._calls, self._fails, self._slows
        for s in range(head + 1, sec + 1):
            j = s % size
            if calls[j]:
                self.calls -= calls[j]
                self.failures -= fails[j]
                self.slow -= slows[j]
                calls[j] = fails[j] = slows[j] = 0
        self._head = sec

    def add(self, failure: bool, slow: bool, now: float) -> None:
        if now >= self._head + 1:
            self.advance(now)
        # An outcome stamped before the newest second (clocks only move forward, so this is a
        # late report) counts in the newest bucket rather than in one that was already reused.
        j = self._head % self._size
        self._calls[j] += 1
        self.calls += 1
        if failure:
            self._fails[j] += 1
            self.failures += 1
        if slow:
            self._slows[j] += 1
            self.slow += 1

    def reset(self, now: float) -> None:
        size = self._size
        self._calls[:] = [0] * size
        self._fails[:] = [0] * size
        self._slows[:] = [0] * size
        self._head = _floor(now)
        self.calls = self.failures = self.slow = 0


class CircuitBreaker:
    """One backend's breaker. Not thread-safe: it lives on the proxy's event loop.

    ``listener`` is called synchronously with every :class:`Transition`, in order, after the
    state has changed; an exception it raises propagates to the caller of the method that
    caused the transition.
    """

    __slots__ = (
        "_fail_pct",
        "_half_open_calls",
        "_listener",
        "_min_calls",
        "_open_s",
        "_open_until",
        "_probes_ok",
        "_probes_out",
        "_reason",
        "_since",
        "_slow_pct",
        "_slow_s",
        "_state",
        "_times_opened",
        "_window",
        "config",
    )

    def __init__(
        self,
        config: BreakerConfig,
        now: float,
        *,
        listener: Callable[[Transition], None] | None = None,
    ) -> None:
        self.config = config
        self._listener = listener
        self._state = _CLOSED
        self._since = now
        self._reason = "initial state"
        self._window: _CountWindow | _TimeWindow = (
            _CountWindow(config.window_size)
            if config.window == "count"
            else _TimeWindow(config.window_size, now)
        )
        # Copies of the config the hot path reads, to save an attribute lookup per call.
        self._min_calls = config.min_calls
        self._fail_pct = float(config.failure_rate)
        self._slow_pct = float(config.slow_call_rate)
        self._slow_s = float(config.slow_call_s)
        self._open_s = float(config.open_s)
        self._half_open_calls = config.half_open_calls
        self._open_until = 0.0
        self._probes_out = 0
        """Half-open: probes admitted whose outcome has not been reported."""
        self._probes_ok = 0
        """Half-open: probes that succeeded."""
        self._times_opened = 0

    @property
    def state(self) -> BreakerState:
        return self._state

    # -- decide ---------------------------------------------------------------------------

    def allow(self, now: float) -> bool:
        """May a call go to this backend now? ``True`` admits it (and takes a probe permit in
        half-open): the caller must then :meth:`record` its outcome or :meth:`release` it."""
        state = self._state
        if state is _CLOSED or state is _DISABLED:
            return True
        if state is _HALF_OPEN:
            if self._probes_out + self._probes_ok < self._half_open_calls:
                self._probes_out += 1
                return True
            return False
        if state is _OPEN and now >= self._open_until:
            self._to_half_open(now)
            return True
        return False

    def peek(self, now: float) -> bool:
        """What :meth:`allow` would answer now, without taking a permit or changing state."""
        state = self._state
        if state is _CLOSED or state is _DISABLED:
            return True
        if state is _HALF_OPEN:
            return self._probes_out + self._probes_ok < self._half_open_calls
        if state is _OPEN:
            return now >= self._open_until
        return False

    # -- report ---------------------------------------------------------------------------

    def record(self, failure: bool, duration_s: float, now: float) -> Transition | None:
        """Report the outcome of an admitted call; returns the transition it caused, if any.

        Closed: the outcome enters the window (slow when ``duration_s >= slow_call_s``,
        independently of ``failure``), and once the window holds ``min_calls`` calls the
        breaker trips if either rate reaches its threshold. Half-open: a failed or slow probe
        re-opens at once; the last of ``half_open_calls`` successful probes closes. Open,
        forced-open and disabled ignore outcomes, as does half-open when no probe is out (the
        call was admitted before the breaker opened). While a probe is out, such a late outcome
        cannot be told from the probe's (no ticket is passed) and counts as a probe's.
        """
        if self._state is not _CLOSED:
            if self._state is _HALF_OPEN:
                return self._record_probe(failure, duration_s, now)
            return None
        slow = duration_s >= self._slow_s
        w = self._window
        w.add(failure, slow, now)
        n = w.calls
        if n < self._min_calls:
            return None
        if w.failures * 100.0 >= self._fail_pct * n or w.slow * 100.0 >= self._slow_pct * n:
            return self._trip(now)
        return None

    def release(self, now: float) -> None:
        """An admitted call ended without an outcome (the client went away): in half-open,
        its probe permit is given back; in any other state nothing changes."""
        if self._state is _HALF_OPEN and self._probes_out > 0:
            self._probes_out -= 1

    def force(self, mode: ForceMode, now: float) -> Transition | None:
        """An operator's override; returns the transition, or ``None`` when nothing changes.

        - ``open``: ``forced_open``, every call refused.
        - ``disabled``: every call admitted, nothing recorded.
        - ``closed``: closed with a fresh window, from any state (from closed: a reset, still
          reported as a closed → closed transition).
        - ``auto``: leave ``forced_open`` or ``disabled`` for closed with a fresh window; a
          breaker already running by itself (closed, open, half-open) is left alone.

        The window starts empty after every force. The reason is always ``forced by operator``.
        """
        state = self._state
        if mode == "open":
            new = _FORCED_OPEN
        elif mode == "disabled":
            new = _DISABLED
        elif mode == "closed":
            new = _CLOSED
        elif mode == "auto":
            if state is not _FORCED_OPEN and state is not _DISABLED:
                return None
            new = _CLOSED
        else:
            raise ValueError(
                f"force mode must be 'open', 'closed', 'disabled' or 'auto', got {mode!r}"
            )
        if new is state and new is not _CLOSED:
            return None
        self._window.reset(now)
        self._probes_out = self._probes_ok = 0
        return self._move(new, now, OPERATOR_REASON)

    def adopt(
        self,
        state: BreakerState,
        now: float,
        reason: str,
        *,
        open_until: float | None = None,
        at: float | None = None,
    ) -> Transition | None:
        """Take over a transition the same backend's breaker made in another process of this
        balancer (``[listener] workers``), so that one trip stops every process sending.

        ``open``: open until ``open_until`` (all processes then probe at the same time);
        ``closed``: closed with a fresh window (the probes succeeded there). Half-open is never
        adopted: it follows from the shared deadline. An operator's forced state is kept, and
        so is an open breaker whose own deadline is later, and any state this breaker entered
        after ``at`` (when the other process made its transition: one clock for all on Linux),
        so that crossed messages cannot undo a newer state. Returns the transition made here.
        """
        current = self._state
        if current is _FORCED_OPEN or current is _DISABLED:
            return None
        if at is not None and at < self._since:
            return None
        if state is _OPEN:
            until = open_until if open_until is not None else now + self._open_s
            if current is _OPEN:
                self._open_until = max(self._open_until, until)
                return None
            self._open_until = until
            self._times_opened += 1
            self._probes_out = self._probes_ok = 0
            return self._move(_OPEN, now, reason)
        if state is _CLOSED and current is not _CLOSED:
            self._probes_out = self._probes_ok = 0
            self._window.reset(now)
            return self._move(_CLOSED, now, reason)
        return None

    @property
    def open_until(self) -> float | None:
        """When an open breaker lets its first probe through; ``None`` unless open."""
        return self._open_until if self._state is _OPEN else None

    # -- show -----------------------------------------------------------------------------

    def stats(self, now: float) -> BreakerStats:
        """A frozen, JSON-friendly picture of the breaker at ``now``."""
        state = self._state
        w = self._window
        if state is _CLOSED:
            w.advance(now)
        n = w.calls
        judged = n >= self._min_calls
        is_open = state is _OPEN
        half_open = state is _HALF_OPEN
        config = self.config
        return BreakerStats(
            state=state,
            since=self._since,
            reason=self._reason,
            window=config.window,
            window_size=config.window_size,
            calls=n,
            failures=w.failures,
            slow_calls=w.slow,
            failure_rate=w.failures * 100.0 / n if judged else None,
            slow_call_rate=w.slow * 100.0 / n if judged else None,
            failure_rate_threshold=self._fail_pct,
            slow_call_rate_threshold=self._slow_pct,
            slow_call_s=self._slow_s,
            min_calls=self._min_calls,
            open_until=self._open_until if is_open else None,
            retry_in_s=max(0.0, self._open_until - now) if is_open else None,
            half_open_permits=(
                self._half_open_calls - self._probes_out - self._probes_ok if half_open else None
            ),
            probes_succeeded=self._probes_ok if half_open else None,
            times_opened=self._times_opened,
        )

    # -- transitions ----------------------------------------------------------------------

    def _move(self, new: BreakerState, now: float, reason: str) -> Transition:
        transition = Transition(self._state, new, now, reason)
        self._state = new
        self._since = now
        self._reason = reason
        if self._listener is not None:
            self._listener(transition)
        return transition

    def _open(self, now: float, reason: str) -> Transition:
        self._open_until = now + self._open_s
        self._times_opened += 1
        self._probes_out = self._probes_ok = 0
        return self._move(_OPEN, now, reason)

    def _trip(self, now: float) -> Transition:
        w = self._window
        n = w.calls
        parts: list[str] = []
        if w.failures * 100.0 >= self._fail_pct * n:
            parts.append(f"failure rate {_pct(w.failures * 100.0 / n)} >= {_pct(self._fail_pct)}")
        if w.slow * 100.0 >= self._slow_pct * n:
            parts.append(
                f"slow-call rate {_pct(w.slow * 100.0 / n)} >= {_pct(self._slow_pct)}"
                f" (calls >= {_ms(self._slow_s)})"
            )
        over = f"over {_calls(n)}"
        if self.config.window == "time":
            over += f" in the last {self.config.window_size} s"
        return self._open(now, f"{' and '.join(parts)} {over}")

    def _to_half_open(self, now: float) -> None:
        """Open → half-open inside ``allow``, whose call takes the first probe permit."""
        self._probes_out = 1
        self._probes_ok = 0
        self._move(
            _HALF_OPEN,
            now,
            f"open for {now - self._since:.1f} s; probing with {_calls(self._half_open_calls)}",
        )

    def _record_probe(self, failure: bool, duration_s: float, now: float) -> Transition | None:
        if self._probes_out == 0:
            return None
        self._probes_out -= 1
        if failure:
            return self._open(now, "probe call failed")
        if duration_s >= self._slow_s:
            return self._open(now, f"probe call slow: {_ms(duration_s)} >= {_ms(self._slow_s)}")
        self._probes_ok += 1
        if self._probes_ok < self._half_open_calls:
            return None
        n = self._half_open_calls
        self._probes_ok = 0
        self._window.reset(now)
        word = "call" if n == 1 else "calls"
        return self._move(_CLOSED, now, f"{n} of {n} probe {word} succeeded")


def _pct(value: float) -> str:
    """``62%``, ``62.5%``: whole percentages without a decimal, others with one."""
    rounded = round(value, 1)
    return f"{rounded:.0f}%" if rounded == int(rounded) else f"{rounded:.1f}%"


def _ms(seconds: float) -> str:
    """``1000 ms``, ``250 ms``, ``0.5 ms``."""
    return f"{round(seconds * 1000.0, 3):g} ms"


def _calls(n: int) -> str:
    return f"{n} call" if n == 1 else f"{n} calls"
