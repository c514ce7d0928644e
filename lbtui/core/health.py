"""Active health of one backend: HAProxy's rise/fall state machine, and slow start.

Semantics are HAProxy's ``check``/``inter``/``rise``/``fall``: a backend goes down after
``fall`` consecutive failed checks and comes back after ``rise`` consecutive passed ones; any
result of the other kind starts the count again (HAProxy's single ``health`` counter between
0 and ``rise + fall - 1`` behaves exactly so). Where lbtui differs or chooses:

- A new backend starts **up**, as HAProxy's servers do by default (its ``init-state up``): it
  takes traffic from the first request and needs ``fall`` failed checks to be taken out. A fleet
  that is still starting therefore shows a few failed checks rather than refusing all traffic
  for ``rise × interval`` seconds.
- The I/O layer runs the checks (``path``, ``interval_s``, ``timeout_s``, ``expect_status``
  are carried for it) and reports each result with :meth:`HealthState.record_check`; a passive
  signal such as "the process is known dead" goes through :meth:`HealthState.mark_down`, like
  HAProxy's ``observe`` with ``on-error mark-down``.
- Slow start (HAProxy ``slowstart``, Envoy ``slow_start_config``): for ``slow_start_s`` after a
  recovery the weight factor ramps linearly from a floor to 1. HAProxy grows the weight from
  its smallest step and Envoy clamps at ``min_weight_percent`` (default 10 %); lbtui starts at
  ``slow_start_floor`` (default 0.1, Envoy's default) and ramps from there, so the factor is
  continuous and rises from the first instant. A backend that is up at start is not ramped.
- Every transition carries a reason a person can read (``3 consecutive checks failed:
  connection refused``) and goes, synchronously and in order, to the listener;
  ``record_check`` and ``mark_down`` also return it.

Nothing here reads a clock: every call takes ``now`` in monotonic seconds.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

__all__ = [
    "DEFAULT_SLOW_START_FLOOR",
    "HealthConfig",
    "HealthState",
    "HealthStats",
    "HealthStatus",
    "HealthTransition",
]

DEFAULT_SLOW_START_FLOOR = 0.1
"""Where the slow-start ramp begins: Envoy's default ``min_weight_percent`` of 10 %."""

INITIAL_REASON = "assumed up until checks fail"


class HealthStatus(StrEnum):
    """A backend's health; the value is the name used in events, metrics and JSON."""

    UP = "up"
    """Takes traffic; ``fall`` consecutive failed checks take it down."""
    DOWN = "down"
    """Takes no traffic (unless the pool panics); ``rise`` consecutive passed checks bring it
    back up."""


_UP = HealthStatus.UP
_DOWN = HealthStatus.DOWN
_NEVER = -math.inf


@dataclass(frozen=True, slots=True)
class HealthConfig:
    """How a backend is checked. Validated on construction (``ValueError``)."""

    path: str = "/"
    """Path the check requests; must start with ``/``. Not used by the state machine."""
    interval_s: float = 2.0
    """Seconds from the start of one check to the start of the next; > 0."""
    timeout_s: float = 1.0
    """Seconds a check may take before it counts as failed; > 0 and at most ``interval_s``,
    so that checks of one backend never overlap."""
    rise: int = 2
    """Consecutive passed checks that bring a down backend up; at least 1."""
    fall: int = 3
    """Consecutive failed checks that take an up backend down; at least 1."""
    expect_status: tuple[int, int] = (200, 399)
    """Inclusive range of HTTP statuses that pass; within 100..599."""
    slow_start_s: float = 0.0
    """Seconds over which a recovered backend's weight ramps up to full; 0 turns slow start
    off (full weight at once)."""

    def __post_init__(self) -> None:
        problems: list[str] = []
        if not isinstance(self.path, str) or not self.path.startswith("/"):
            problems.append(f"path must be a string starting with '/', got {self.path!r}")
        for name in ("interval_s", "timeout_s"):
            value = getattr(self, name)
            if not _is_number(value) or not value > 0.0:
                problems.append(f"{name} must be a number of seconds > 0, got {value!r}")
        if (
            _is_number(self.interval_s)
            and _is_number(self.timeout_s)
            and 0.0 < self.interval_s < self.timeout_s
        ):
            problems.append(
                f"timeout_s ({self.timeout_s}) must not exceed interval_s ({self.interval_s}),"
                " or checks of one backend would overlap"
            )
        for name in ("rise", "fall"):
            value = getattr(self, name)
            if not _is_int(value) or value < 1:
                problems.append(f"{name} must be an integer >= 1, got {value!r}")
        expect = self.expect_status
        if (
            not isinstance(expect, tuple)
            or len(expect) != 2
            or not all(_is_int(v) for v in expect)
            or not 100 <= expect[0] <= expect[1] <= 599
        ):
            problems.append(
                "expect_status must be an inclusive (low, high) range of HTTP statuses"
                f" with 100 <= low <= high <= 599, got {expect!r}"
            )
        if not _is_number(self.slow_start_s) or not self.slow_start_s >= 0.0:
            problems.append(
                f"slow_start_s must be a number of seconds >= 0, got {self.slow_start_s!r}"
            )
        if problems:
            raise ValueError("invalid health config: " + "; ".join(problems))

    def passes(self, status: int) -> bool:
        """Does a check answered with HTTP ``status`` pass?"""
        low, high = self.expect_status
        return low <= status <= high


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True, slots=True)
class HealthTransition:
    """One change of health, as an event: from ``old`` to ``new`` at ``at``, and why."""

    old: HealthStatus
    new: HealthStatus
    at: float
    """Monotonic seconds, the ``now`` of the call that caused it."""
    reason: str
    """A sentence a person reads, e.g. ``3 consecutive checks failed: connection refused``."""


@dataclass(frozen=True, slots=True)
class HealthStats:
    """What a backend's health shows: plain JSON-friendly values (``state`` is a ``str``
    enum)."""

    state: HealthStatus
    since: float
    """Monotonic seconds when the current state began."""
    reason: str
    """Why the backend is in this state: the reason of the transition that entered it."""
    rise: int
    fall: int
    consecutive_successes: int
    """Passed checks in a row, up to now (0 after a failed check or ``mark_down``)."""
    consecutive_failures: int
    """Failed checks in a row, up to now (0 after a passed check)."""
    last_check_ok: bool | None
    """The result of the latest check; ``None`` before the first."""
    last_check_detail: str
    """What the I/O layer said about the latest check (``HTTP 503``, ``timeout``); empty
    before the first or when it said nothing."""
    last_check_at: float | None
    """Monotonic seconds of the latest check; ``None`` before the first."""
    checks_total: int
    failures_total: int
    """Failed checks since the state was created."""
    slow_start_remaining_s: float | None
    """Seconds of slow start left; ``None`` when the weight is not ramping."""
    slow_start_factor: float | None
    """The current weight factor while ramping (``floor`` … 1); ``None`` when not ramping."""


class HealthState:
    """One backend's health. Not thread-safe: it lives on the proxy's event loop.

    ``listener`` is called synchronously with every :class:`HealthTransition`, in order, after
    the state has changed; an exception it raises propagates to the caller of the method that
    caused the transition.
    """

    __slots__ = (
        "_checks",
        "_fail_run",
        "_failures",
        "_fall",
        "_floor",
        "_last_at",
        "_last_detail",
        "_last_ok",
        "_listener",
        "_ok_run",
        "_ramp_from",
        "_ramp_until",
        "_reason",
        "_rise",
        "_since",
        "_slow_s",
        "_state",
        "config",
    )

    def __init__(
        self,
        config: HealthConfig,
        now: float,
        *,
        listener: Callable[[HealthTransition], None] | None = None,
        slow_start_floor: float = DEFAULT_SLOW_START_FLOOR,
    ) -> None:
        """``slow_start_floor`` is the weight factor at the first instant of slow start, in
        (0, 1]; 1 makes slow start a no-op."""
        if not _is_number(slow_start_floor) or not 0.0 < slow_start_floor <= 1.0:
            raise ValueError(f"slow_start_floor must be in (0, 1], got {slow_start_floor!r}")
        self.config = config
        self._listener = listener
        self._rise = config.rise
        self._fall = config.fall
        self._slow_s = float(config.slow_start_s)
        self._floor = float(slow_start_floor)
        self._state = _UP
        self._since = now
        self._reason = INITIAL_REASON
        self._ok_run = 0
        self._fail_run = 0
        self._checks = 0
        self._failures = 0
        self._last_ok: bool | None = None
        self._last_detail = ""
        self._last_at: float | None = None
        self._ramp_from = _NEVER
        self._ramp_until = _NEVER
        """Slow start runs while ``now < _ramp_until``; ``-inf`` when not ramping."""

    @property
    def state(self) -> HealthStatus:
        return self._state

    @property
    def is_up(self) -> bool:
        return self._state is _UP

    @property
    def checks_total(self) -> int:
        """Checks reported so far: a view of this state is stale once it has moved."""
        return self._checks

    # -- report ---------------------------------------------------------------------------

    def record_check(self, ok: bool, now: float, detail: str = "") -> HealthTransition | None:
        """Report one check's result; returns the transition it caused, if any.

        Up: the ``fall``-th failed check in a row takes the backend down. Down: the ``rise``-th
        passed check in a row brings it up, and slow start begins. A result of the other kind
        resets the run. ``detail`` (``connection refused``, ``HTTP 503``) is kept as the last
        check's and quoted in the reason of a fall.
        """
        self._checks += 1
        self._last_ok = ok
        self._last_detail = detail
        self._last_at = now
        if ok:
            self._ok_run += 1
            self._fail_run = 0
            if self._state is _DOWN and self._ok_run >= self._rise:
                return self._recover(now)
            return None
        self._failures += 1
        self._fail_run += 1
        self._ok_run = 0
        if self._state is _UP and self._fail_run >= self._fall:
            reason = f"{_checks(self._fall)} failed"
            return self._move(_DOWN, now, f"{reason}: {detail}" if detail else reason)
        return None

    def mark_down(self, now: float, reason: str) -> HealthTransition | None:
        """Take the backend down at once on a passive signal (the process is known dead):
        ``rise`` passed checks are needed again to bring it up. ``None`` when already down."""
        self._ok_run = 0
        if self._state is _DOWN:
            return None
        return self._move(_DOWN, now, reason)

    # -- decide ---------------------------------------------------------------------------

    def weight_factor(self, now: float) -> float:
        """What to multiply the backend's weight by: 1 except during slow start, where it
        ramps linearly from ``slow_start_floor`` to 1 over ``slow_start_s``.

        It does not drop to 0 when the backend is down: whether a backend takes traffic is
        :attr:`is_up`'s answer, and a pool in panic still balances over its down backends by
        weight.
        """
        if now >= self._ramp_until:
            return 1.0
        return self._ramp(now)

    # -- show -----------------------------------------------------------------------------

    def stats(self, now: float) -> HealthStats:
        """A frozen, JSON-friendly picture of the backend's health at ``now``."""
        ramping = now < self._ramp_until
        return HealthStats(
            state=self._state,
            since=self._since,
            reason=self._reason,
            rise=self._rise,
            fall=self._fall,
            consecutive_successes=self._ok_run,
            consecutive_failures=self._fail_run,
            last_check_ok=self._last_ok,
            last_check_detail=self._last_detail,
            last_check_at=self._last_at,
            checks_total=self._checks,
            failures_total=self._failures,
            slow_start_remaining_s=self._ramp_until - now if ramping else None,
            slow_start_factor=self._ramp(now) if ramping else None,
        )

    # -- transitions ----------------------------------------------------------------------

    def _ramp(self, now: float) -> float:
        progress = (now - self._ramp_from) / self._slow_s
        return min(1.0, self._floor + (1.0 - self._floor) * max(0.0, progress))

    def _recover(self, now: float) -> HealthTransition:
        if self._slow_s > 0.0 and self._floor < 1.0:
            self._ramp_from = now
            self._ramp_until = now + self._slow_s
        reason = f"{_checks(self._rise)} passed"
        if self._slow_s > 0.0:
            reason += f"; slow start over {self._slow_s:g} s"
        return self._move(_UP, now, reason)

    def _move(self, new: HealthStatus, now: float, reason: str) -> HealthTransition:
        transition = HealthTransition(self._state, new, now, reason)
        self._state = new
        self._since = now
        self._reason = reason
        if new is _DOWN:
            self._ramp_from = self._ramp_until = _NEVER
        if self._listener is not None:
            self._listener(transition)
        return transition


def _checks(n: int) -> str:
    return "1 check" if n == 1 else f"{n} consecutive checks"
