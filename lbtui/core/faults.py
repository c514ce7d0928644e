"""Proxy-side fault injection, the decisions: which request gets which fault, and the proof.

Semantics of the Envoy fault filter and Toxiproxy, per backend, for any backend (remote ones
too, since the balancer plays the fault instead of the backend):

==========  ===================================================  ==============================
kind        what the balancer does for an affected request       parameters
==========  ===================================================  ==============================
down        acts as if the backend refused the connection        —
delay       waits, then forwards                                 ``ms``, ``jitter_ms``, ``ramp_s``
abort       answers ``status`` as if the backend had; no send    ``status`` (default 503)
hang        never answers; the read timeout turns it into one    —
reset       forwards, then cuts the response after ``after_b…``  ``after_bytes`` (default 0)
bandwidth   forwards, then streams the body at ``kbps``          ``kbps`` (KB/s, 1 KB = 1000 B)
==========  ===================================================  ==============================

Every fault takes ``percent`` (of eligible requests, default 100), ``duration_s`` (None: until
cleared; otherwise it ends by itself) and at most a few **shapes**: ``on_s``/``off_s`` (flap:
active for ``on_s`` out of every ``on_s + off_s``, starting with ``on``), ``first_n`` (only the
first N eligible requests, then the fault ends by itself) and ``ramp_s`` (delay only: the delay
grows linearly from 0 to ``ms`` over ``ramp_s``). A request is *eligible* when the fault is set,
not expired, in its ``on`` phase and within ``first_n``.

**Percent is exact, not random.** A per-fault error-diffusion accumulator (Bresenham) decides:
each eligible request adds ``percent`` to it, and a request is affected when it reaches 100.
After n eligible requests exactly ``round(n · percent / 100)`` (half up) were affected, at every
n: 50 % hits every other request, 33 % one in three, 100 % every one, and the first eligible
request is affected for any percent ≥ 50 (so a fault is visible at once). rng would only be
right on average: at 50 % over 20 requests it applies ≤ 6 or ≥ 14 about 11 % of the time, which
is exactly the "the fault has no effect" / "75 % instead of 50 %" confusion lbtui exists to end.
The price is periodicity: a client that alternates two kinds of request in lock-step could see
the fault always land on the same kind; the balancer interleaves all clients' requests to a
backend before the accumulator sees them, so in practice this does not arise. Resolution is
0.0001 %. The rng (injectable) is only used for the delay jitter.

Proof that a fault happened (PRODUCT.md point 3): for each fault the registry counts requests
seen while it was set, eligible ones and affected ones, and what clients finally observed (fed
back by the proxy through :meth:`Faults.observe`: a status, or ``"reset"``), and keeps the last
ended fault's figures per backend after it is cleared or expires.

Pure: no I/O, no asyncio; ``now`` is a monotonic time the caller passes in.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType

__all__ = [
    "FaultDecision",
    "FaultKind",
    "FaultSpec",
    "FaultStats",
    "Faults",
]

PPM = 1_000_000
"""Percent resolution: an accumulator unit is 1 / 1 000 000 of a request (0.0001 %)."""
MAX_DELAY_MS = 600_000.0
"""Ten minutes: longer than any client waits, short enough to stay bounded."""


class FaultKind(StrEnum):
    DOWN = "down"
    DELAY = "delay"
    ABORT = "abort"
    HANG = "hang"
    RESET = "reset"
    BANDWIDTH = "bandwidth"


_PARAMS: dict[FaultKind, tuple[str, ...]] = {
    FaultKind.DOWN: (),
    FaultKind.DELAY: ("ms", "jitter_ms", "ramp_s"),
    FaultKind.ABORT: ("status",),
    FaultKind.HANG: (),
    FaultKind.RESET: ("after_bytes",),
    FaultKind.BANDWIDTH: ("kbps",),
}
_KIND_ONLY = ("ms", "jitter_ms", "ramp_s", "status", "after_bytes", "kbps")


@dataclass(frozen=True, slots=True)
class FaultSpec:
    """One fault on one backend. Fields that do not apply to ``kind`` must stay None.

    ``kind`` may be given as a string (``"delay"``); it is stored as a :class:`FaultKind`.
    """

    kind: FaultKind
    percent: float = 100.0
    """Share of eligible requests affected, 0–100 (applied exactly, see the module doc)."""
    duration_s: float | None = None
    """The fault ends by itself this long after it is set; None: until cleared."""
    ms: float | None = None
    """delay: added latency in milliseconds (required)."""
    jitter_ms: float | None = None
    """delay: each delay is ``ms ± jitter_ms`` (uniform), never below 0."""
    ramp_s: float | None = None
    """delay: the delay (and its jitter) grows linearly from 0 to ``ms`` over this long."""
    status: int | None = None
    """abort: the status answered, 200–599 (default 503)."""
    after_bytes: int | None = None
    """reset: body bytes that reach the client before the cut (default 0: right after the head)."""
    kbps: float | None = None
    """bandwidth: body rate in kilobytes (1000 B) per second, like Toxiproxy's ``rate``."""
    on_s: float | None = None
    """flap: active for ``on_s`` …"""
    off_s: float | None = None
    """… then inactive for ``off_s``, repeating from the moment the fault is set."""
    first_n: int | None = None
    """Only the first N eligible requests; then the fault ends by itself."""

    def __post_init__(self) -> None:
        problems: list[str] = []
        kind: object = self.kind
        if not isinstance(kind, FaultKind):
            try:
                kind = FaultKind(str(kind))
            except ValueError:
                raise ValueError(
                    f"unknown fault kind {self.kind!r}; expected one of "
                    + ", ".join(k.value for k in FaultKind)
                ) from None
            object.__setattr__(self, "kind", kind)
        assert isinstance(kind, FaultKind)
        for name in _KIND_ONLY:
            if getattr(self, name) is not None and name not in _PARAMS[kind]:
                allowed = ", ".join(_PARAMS[kind]) or "no parameters of its own"
                problems.append(
                    f"{name} does not apply to {kind.value} faults (they take {allowed})"
                )
        _number(problems, "percent", self.percent, 0.0, 100.0)
        if self.duration_s is not None:
            _number(problems, "duration_s", self.duration_s, 0.0, math.inf, open_low=True)
        if kind is FaultKind.DELAY:
            if self.ms is None:
                problems.append("a delay fault needs ms (the added latency in milliseconds)")
            else:
                _number(problems, "ms", self.ms, 0.0, MAX_DELAY_MS)
            if self.jitter_ms is not None:
                _number(problems, "jitter_ms", self.jitter_ms, 0.0, MAX_DELAY_MS)
            if self.ramp_s is not None:
                _number(problems, "ramp_s", self.ramp_s, 0.0, math.inf, open_low=True)
            if not problems and (self.ms or 0.0) + (self.jitter_ms or 0.0) <= 0:
                problems.append("a delay of 0 ms with no jitter does nothing; give ms > 0")
        elif kind is FaultKind.ABORT:
            if self.status is None:
                object.__setattr__(self, "status", 503)
            elif not _is_int(self.status) or not 200 <= self.status <= 599:
                problems.append(
                    f"status must be an HTTP status from 200 to 599, got {self.status!r}"
                )
        elif kind is FaultKind.RESET:
            if self.after_bytes is None:
                object.__setattr__(self, "after_bytes", 0)
            elif not _is_int(self.after_bytes) or self.after_bytes < 0:
                problems.append(f"after_bytes must be a whole number ≥ 0, got {self.after_bytes!r}")
        elif kind is FaultKind.BANDWIDTH:
            if self.kbps is None:
                problems.append("a bandwidth fault needs kbps (kilobytes per second)")
            else:
                _number(problems, "kbps", self.kbps, 0.0, 10_000_000.0, open_low=True)
        if (self.on_s is None) != (self.off_s is None):
            problems.append("flap needs both on_s and off_s")
        elif self.on_s is not None and self.off_s is not None:
            _number(problems, "on_s", self.on_s, 0.0, math.inf, open_low=True)
            _number(problems, "off_s", self.off_s, 0.0, math.inf, open_low=True)
        if self.first_n is not None and (not _is_int(self.first_n) or self.first_n < 1):
            problems.append(f"first_n must be a whole number ≥ 1, got {self.first_n!r}")
        if problems:
            raise ValueError(f"invalid {kind.value} fault: " + "; ".join(problems))

    def describe(self) -> str:
        """One line for people: ``delay 200±50 ms on 100% for 30 s``,
        ``abort 503 on 25% (flap 5 s on / 25 s off)``."""
        kind = self.kind
        if kind is FaultKind.DELAY:
            what = f"delay {_g(self.ms or 0.0)}"
            if self.jitter_ms:
                what += f"±{_g(self.jitter_ms)}"
            what += " ms"
        elif kind is FaultKind.ABORT:
            what = f"abort {self.status}"
        elif kind is FaultKind.RESET:
            what = f"reset after {self.after_bytes} B"
        elif kind is FaultKind.BANDWIDTH:
            what = f"bandwidth {_g(self.kbps or 0.0)} KB/s"
        else:
            what = kind.value
        out = f"{what} on {_g(self.percent)}%"
        if self.duration_s is not None:
            out += f" for {_seconds(self.duration_s)}"
        shapes: list[str] = []
        if self.on_s is not None and self.off_s is not None:
            shapes.append(f"flap {_seconds(self.on_s)} on / {_seconds(self.off_s)} off")
        if self.first_n is not None:
            shapes.append(f"first {self.first_n} requests")
        if self.ramp_s is not None:
            shapes.append(f"ramp from 0 over {_seconds(self.ramp_s)}")
        if shapes:
            out += f" ({', '.join(shapes)})"
        return out

    def in_phase(self, elapsed_s: float) -> bool:
        """Whether the flap shape is in its ``on`` phase ``elapsed_s`` after the fault was set
        (always True without flap)."""
        if self.on_s is None or self.off_s is None:
            return True
        return max(elapsed_s, 0.0) % (self.on_s + self.off_s) < self.on_s


@dataclass(frozen=True, slots=True)
class FaultDecision:
    """What to do to one request. Only the fields of ``kind`` are set."""

    kind: FaultKind
    delay_s: float = 0.0
    """delay: seconds to wait before forwarding (jitter and ramp applied)."""
    status: int | None = None
    """abort: the status to answer."""
    kbps: float | None = None
    """bandwidth: body rate in KB/s (1000 B)."""
    after_bytes: int | None = None
    """reset: body bytes let through before the cut."""


@dataclass(frozen=True, slots=True)
class FaultStats:
    """Proof that a fault happened: what was asked, what was done, what clients saw."""

    backend: str
    spec: FaultSpec
    description: str
    owner: str | None
    """Who set it (a console session, a chaos run), for scoped undo."""
    set_at: float
    expires_at: float | None
    """When ``duration_s`` runs out (monotonic); None: until cleared."""
    active: bool
    """False once cleared, replaced, expired or exhausted (these are the final figures)."""
    ended_at: float | None
    ended: str | None
    """Why it ended: ``cleared``, ``replaced``, ``expired after 30 s``, ``first 10 requests
    done``."""
    requests_total: int
    """Requests to the backend that were checked while the fault was set."""
    eligible_total: int
    """Of those, the ones in the fault's scope (on phase, within first_n): the sample size."""
    applied_total: int
    """Of those, the ones the fault was applied to."""
    client_observed: Mapping[str, int]
    """For affected requests, what the client finally got: ``"503"``, ``"200"`` (a retry
    elsewhere succeeded), ``"reset"`` (the connection was cut), as the proxy reported."""

    @property
    def requested_percent(self) -> float:
        return self.spec.percent

    @property
    def applied_percent(self) -> float | None:
        """``applied / eligible × 100``; None before the first eligible request."""
        if not self.eligible_total:
            return None
        return 100.0 * self.applied_total / self.eligible_total

    @property
    def sample_size(self) -> int:
        return self.eligible_total

    def remaining_s(self, now: float) -> float | None:
        """Seconds until ``duration_s`` runs out; None without a duration or once ended."""
        if self.expires_at is None or not self.active:
            return None
        return max(self.expires_at - now, 0.0)

    def summary(self) -> str:
        """``applied 50 of 100 eligible (50% vs 50% requested)``."""
        applied = self.applied_percent
        got = "–" if applied is None else f"{applied:.3g}%"
        return (
            f"applied {self.applied_total} of {self.eligible_total} eligible "
            f"({got} vs {_g(self.spec.percent)}% requested)"
        )


class _Live:
    """A set fault and its counters (mutable, private to the registry)."""

    __slots__ = (
        "acc",
        "applied",
        "eligible",
        "ended",
        "ended_at",
        "expires_at",
        "fixed",
        "observed",
        "owner",
        "ppm",
        "seen",
        "set_at",
        "spec",
    )

    def __init__(self, spec: FaultSpec, now: float, owner: str | None) -> None:
        self.spec = spec
        self.owner = owner
        self.set_at = now
        self.expires_at = math.inf if spec.duration_s is None else now + spec.duration_s
        self.ppm = round(spec.percent * (PPM // 100))
        # Start half-way: after n eligible requests round(n·p/100) (half up) were affected.
        self.acc = PPM // 2
        self.seen = 0
        self.eligible = 0
        self.applied = 0
        self.observed: dict[str, int] = {}
        self.ended: str | None = None
        self.ended_at: float | None = None
        kind = spec.kind
        # Every kind but delay always yields the same decision: built once, shared.
        self.fixed: FaultDecision | None = (
            None
            if kind is FaultKind.DELAY
            else FaultDecision(
                kind, status=spec.status, kbps=spec.kbps, after_bytes=spec.after_bytes
            )
        )

    def exhausted(self) -> bool:
        n = self.spec.first_n
        return n is not None and self.eligible >= n

    def stats(self, backend: str) -> FaultStats:
        spec = self.spec
        return FaultStats(
            backend=backend,
            spec=spec,
            description=spec.describe(),
            owner=self.owner,
            set_at=self.set_at,
            expires_at=None if self.expires_at == math.inf else self.expires_at,
            active=self.ended is None,
            ended_at=self.ended_at,
            ended=self.ended,
            requests_total=self.seen,
            eligible_total=self.eligible,
            applied_total=self.applied,
            client_observed=MappingProxyType(dict(self.observed)),
        )


class Faults:
    """The faults set on backends (at most one per backend), deciding request by request."""

    def __init__(self, rng: random.Random | None = None) -> None:
        self._rng = rng or random.Random()
        self.live: dict[str, _Live] = {}
        """The faults in force, by backend. Empty (the usual case): ``decide`` need not be
        asked, which the request path checks first (a look-up, not a call)."""
        self._ended: dict[str, _Live] = {}
        self._applied: dict[tuple[str, FaultKind], int] = {}

    def __len__(self) -> int:
        return len(self.live)

    def __contains__(self, backend: object) -> bool:
        return backend in self.live

    # -- setting and undoing -------------------------------------------------------------------

    def set(self, backend: str, spec: FaultSpec, now: float, *, owner: str | None = None) -> None:
        """Set ``spec`` on ``backend``, replacing the fault it had (which ends as ``replaced``).

        ``owner`` tags who set it, so that :meth:`clear_all` can undo one session's faults."""
        if not backend:
            raise ValueError("a fault needs a backend name")
        if not isinstance(spec, FaultSpec):
            raise TypeError(f"expected a FaultSpec, got {type(spec).__name__}")
        self._end(backend, now, "replaced")
        self.live[backend] = _Live(spec, now, owner)

    def clear(self, backend: str, now: float) -> FaultSpec | None:
        """Remove the fault on ``backend``; the spec it had, or None if it had none."""
        live = self._end(backend, now, "cleared")
        return None if live is None else live.spec

    def clear_all(self, now: float, *, owner: str | None = None) -> list[str]:
        """Remove every fault (or only those set by ``owner``): the guaranteed undo at the end
        of a run or session. Returns the backends whose fault was removed."""
        names = [n for n, lv in self.live.items() if owner is None or lv.owner == owner]
        for name in names:
            self._end(name, now, "cleared")
        return names

    def expire(self, now: float) -> list[tuple[str, FaultSpec]]:
        """Remove the faults whose ``duration_s`` ran out or whose ``first_n`` is done; the
        owner turns each into an event (:meth:`stats` says why it ended)."""
        out: list[tuple[str, FaultSpec]] = []
        for name, live in list(self.live.items()):
            spec = live.spec
            if now >= live.expires_at:
                self._end(name, live.expires_at, f"expired after {_seconds(spec.duration_s or 0)}")
            elif live.exhausted():
                self._end(name, now, f"first {spec.first_n} requests done")
            else:
                continue
            out.append((name, spec))
        return out

    def _end(self, backend: str, now: float, why: str) -> _Live | None:
        live = self.live.pop(backend, None)
        if live is not None:
            live.ended = why
            live.ended_at = now
            self._ended[backend] = live
        return live

    # -- reading -------------------------------------------------------------------------------

    def get(self, backend: str) -> FaultSpec | None:
        live = self.live.get(backend)
        return None if live is None else live.spec

    def items(self) -> list[tuple[str, FaultSpec]]:
        """Every set fault, as ``(backend, spec)``."""
        return [(n, lv.spec) for n, lv in self.live.items()]

    def stats(self, backend: str) -> FaultStats | None:
        """The set fault's figures, else the last ended one's (final), else None."""
        live = self.live.get(backend) or self._ended.get(backend)
        return None if live is None else live.stats(backend)

    def applied_totals(self) -> dict[tuple[str, FaultKind], int]:
        """Faults applied since start, by ``(backend, kind)``; only ever grows (for
        ``lbtui_faults_injected_total{backend,kind}``)."""
        return dict(self._applied)

    # -- the hot path --------------------------------------------------------------------------

    def decide(self, backend: str, now: float) -> FaultDecision | None:
        """What to do to the next request to ``backend``: None (the usual answer, one dict
        lookup) or the fault to apply. Counts it as seen, eligible, applied."""
        live = self.live.get(backend)
        if live is None or now >= live.expires_at:
            return None
        live.seen += 1
        spec = live.spec
        elapsed = now - live.set_at
        if spec.on_s is not None and not spec.in_phase(elapsed):
            return None
        if spec.first_n is not None and live.eligible >= spec.first_n:
            return None
        live.eligible += 1
        acc = live.acc + live.ppm
        if acc < PPM:
            live.acc = acc
            return None
        live.acc = acc - PPM
        live.applied += 1
        key = (backend, spec.kind)
        self._applied[key] = self._applied.get(key, 0) + 1
        if live.fixed is not None:
            return live.fixed
        ms = spec.ms or 0.0
        jitter = spec.jitter_ms or 0.0
        if spec.ramp_s is not None:
            share = min(max(elapsed, 0.0) / spec.ramp_s, 1.0)
            ms *= share
            jitter *= share
        if jitter:
            ms += self._rng.uniform(-jitter, jitter)
        return FaultDecision(FaultKind.DELAY, delay_s=max(ms, 0.0) / 1e3)

    def observe(self, backend: str, kind: FaultKind | str, outcome: int | str) -> None:
        """What the client finally got for a request a ``kind`` fault on ``backend`` was applied
        to: a status (``503``; ``200`` if a retry elsewhere succeeded) or ``"reset"``. Counted on
        the set fault of that kind, else on the last ended one (a request outliving its fault)."""
        live = self.live.get(backend)
        if live is None or live.spec.kind != kind:
            live = self._ended.get(backend)
            if live is None or live.spec.kind != kind:
                return
        key = str(outcome)
        live.observed[key] = live.observed.get(key, 0) + 1


def _is_int(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _number(
    problems: list[str], name: str, x: object, lo: float, hi: float, *, open_low: bool = False
) -> None:
    if isinstance(x, bool) or not isinstance(x, int | float) or not math.isfinite(x):
        problems.append(f"{name} must be a finite number, got {x!r}")
        return
    if x < lo or (open_low and x == lo) or x > hi:
        low = f"> {_g(lo)}" if open_low else f"from {_g(lo)}"
        high = "" if hi == math.inf else (f" to {_g(hi)}" if not open_low else f" and ≤ {_g(hi)}")
        problems.append(f"{name} must be {low}{high}, got {_g(float(x))}")


def _g(x: float) -> str:
    return f"{x:g}"


def _seconds(s: float) -> str:
    if s < 1:
        return f"{s * 1e3:g} ms"
    if s >= 120 and s % 60 == 0:
        return f"{s / 60:g} min"
    return f"{s:g} s"
