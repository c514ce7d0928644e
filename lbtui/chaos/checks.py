"""Steady-state hypotheses, judged on what the run recorded.

Each check becomes a ``CheckResult``: whether it held, and the figure that decided it, in
words (``0.08 % errors (3 of 4000: 5xx, transport) ≤ 1 %``) and as numbers (``figures``), with
the window it looked at. A check that has nothing to judge (no request in its window, an
action that never happened) does not hold: a verdict must never pass for lack of data
(chaostoolkit once exited 0 for a failed experiment, chaostoolkit/chaostoolkit PR#68).

Pure: reads a :class:`~lbtui.chaos.recording.Recording`, no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from lbtui.chaos.hypotheses import (
    AdmittedRateWithin,
    BreakerOpensWithin,
    Check,
    ErrorRateBelow,
    FallbackShareAbove,
    NoDuplicatePosts,
    NoTrafficToKilledAfter,
    P99Above,
    P99Below,
    RetryShareBelow,
    TrafficResumesWithin,
    _Windowed,
)
from lbtui.chaos.recording import ActionRecord, Recording
from lbtui.chaos.scenario import Scenario
from lbtui.chaos.steps import step_end
from lbtui.core.events import BreakerChanged

OPEN_STATES = ("open", "forced_open")


@dataclass(frozen=True, slots=True)
class CheckResult:
    name: str
    kind: str
    passed: bool
    figure: str
    """The deciding figure, for people."""
    window: tuple[float, float] | None = None
    """The run seconds it looked at."""
    figures: dict[str, float | int | str | None] = field(default_factory=dict)
    """The same figure as numbers, for machines."""


@dataclass(frozen=True, slots=True)
class Phases:
    """The run split by its timeline: before the first action, during it (to the end of the
    last action's effect), after it."""

    first: float
    last: float
    end: float

    @classmethod
    def of(cls, scenario: Scenario, end: float) -> Phases:
        if not scenario.timeline:
            return cls(end, end, end)
        first = min(s.at for s in scenario.timeline)
        last = max(step_end(s) for s in scenario.timeline)
        return cls(min(first, end), min(max(last, first), end), end)

    def window(self, check: _Windowed) -> tuple[float, float]:
        start, stop = {
            "before": (0.0, self.first),
            "during": (self.first, self.last),
            "after": (self.last, self.end),
            "whole": (0.0, self.end),
        }[check.phase]
        if check.from_ is not None:
            start = check.from_
        if check.to is not None:
            stop = check.to
        start = min(start + check.settle, self.end)
        return start, min(stop, self.end)


def _pct(n: int, d: int) -> float:
    return 100.0 * n / d if d else 0.0


def _window_text(w: tuple[float, float]) -> str:
    return f"{w[0]:.1f}–{w[1]:.1f} s"


def _action(recording: Recording, scenario: Scenario, ref: int | str) -> ActionRecord | None:
    idx = scenario.step_index(ref)
    if idx is None:
        return None
    return next((a for a in recording.actions if a.number == idx + 1 and a.ok), None)


def _first_action(
    recording: Recording, kinds: Sequence[str], backend: str, after: float = -1.0
) -> ActionRecord | None:
    return next(
        (
            a
            for a in recording.actions
            if a.ok and a.action in kinds and a.backend == backend and a.at > after
        ),
        None,
    )


def evaluate(check: Check, recording: Recording, scenario: Scenario) -> CheckResult:
    """Judge one check."""
    phases = Phases.of(scenario, recording.end)
    match check:
        case ErrorRateBelow():
            return _error_rate(check, recording, phases)
        case P99Below() | P99Above():
            return _p99(check, recording, phases)
        case BreakerOpensWithin():
            return _breaker_opens(check, recording, scenario)
        case NoTrafficToKilledAfter():
            return _no_traffic(check, recording, scenario)
        case TrafficResumesWithin():
            return _resumes(check, recording, scenario)
        case NoDuplicatePosts():
            return _duplicates(check, recording)
        case AdmittedRateWithin():
            return _admitted(check, recording, phases)
        case FallbackShareAbove() | RetryShareBelow():
            return _shares(check, recording, phases)
    raise TypeError(f"not a check: {check!r}")  # pragma: no cover - the union is closed


def evaluate_all(recording: Recording, scenario: Scenario) -> list[CheckResult]:
    return [evaluate(c, recording, scenario) for c in scenario.checks]


def _error_rate(check: ErrorRateBelow, rec: Recording, phases: Phases) -> CheckResult:
    w = phases.window(check)
    counts = rec.client_counts(*w)
    total = sum(counts.values())
    errors = sum(counts[c] for c in dict.fromkeys(check.count))
    what = ", ".join(dict.fromkeys(check.count))
    nums: dict[str, float | int | str | None] = {
        "errors": errors,
        "requests": total,
        "limit_percent": check.percent,
    }
    if total == 0:
        return CheckResult(
            check.name, check.kind, False, f"no requests completed in {_window_text(w)}", w, nums
        )
    rate = _pct(errors, total)
    nums["percent"] = round(rate, 4)
    ok = rate <= check.percent
    sign = "≤" if ok else ">"
    figure = (
        f"{rate:.2f} % errors ({errors} of {total}: {what}) {sign} {check.percent:g} % "
        f"over {_window_text(w)}"
    )
    return CheckResult(check.name, check.kind, ok, figure, w, nums)


def _p99(check: P99Below | P99Above, rec: Recording, phases: Phases) -> CheckResult:
    w = phases.window(check)
    p99, n = rec.client_p99_ms(*w)
    nums: dict[str, float | int | str | None] = {
        "p99_ms": round(p99, 3),
        "requests": n,
        "limit_ms": check.ms,
    }
    if n < check.min_requests:
        return CheckResult(
            check.name,
            check.kind,
            False,
            f"only {n} answers in {_window_text(w)} (need {check.min_requests} for a p99)",
            w,
            nums,
        )
    ok = p99 <= check.ms if isinstance(check, P99Below) else p99 >= check.ms
    sign = ("≤" if ok else ">") if isinstance(check, P99Below) else ("≥" if ok else "<")
    figure = f"client p99 {p99:.1f} ms {sign} {check.ms:g} ms ({n} answers, {_window_text(w)})"
    return CheckResult(check.name, check.kind, ok, figure, w, nums)


def _breaker_opens(check: BreakerOpensWithin, rec: Recording, sc: Scenario) -> CheckResult:
    act = _action(rec, sc, check.after)
    if act is None:
        return CheckResult(
            check.name, check.kind, False, f"timeline action {check.after} was not carried out"
        )
    opened = next(
        (
            e
            for e in rec.events
            if isinstance(e.event, BreakerChanged)
            and e.backend == check.backend
            and e.event.new in OPEN_STATES
            and e.t >= act.at - 0.05
        ),
        None,
    )
    nums: dict[str, float | int | str | None] = {
        "action_at": round(act.at, 3),
        "within_s": check.within,
    }
    w = (act.at, act.at + check.within)
    if opened is None:
        return CheckResult(
            check.name,
            check.kind,
            False,
            f"{check.backend}'s breaker never opened after #{act.number} ({act.description})",
            w,
            nums,
        )
    after = max(opened.t - act.at, 0.0)
    nums["opened_after_s"] = round(after, 3)
    ok = after <= check.within
    sign = "≤" if ok else ">"
    figure = (
        f"{check.backend}'s breaker opened {after:.2f} s after #{act.number} "
        f"({act.description}) {sign} {check.within:g} s"
    )
    return CheckResult(check.name, check.kind, ok, figure, w, nums)


def _no_traffic(check: NoTrafficToKilledAfter, rec: Recording, sc: Scenario) -> CheckResult:
    if check.kill is not None:
        act = _action(rec, sc, check.kill)
    else:
        act = _first_action(rec, ("kill",), check.backend)
    if act is None:
        return CheckResult(check.name, check.kind, False, f"no kill of {check.backend} happened")
    back = _first_action(rec, ("restart", "enable", "add_backend"), check.backend, after=act.at)
    start = act.at + check.after
    stop = back.at if back is not None else rec.end
    nums: dict[str, float | int | str | None] = {"after_s": check.after}
    if stop <= start:
        came = "came back" if back is not None else "the run ended"
        return CheckResult(
            check.name,
            check.kind,
            False,
            f"{check.backend}: {came} {stop - act.at:.2f} s after the kill, "
            f"nothing to judge {check.after:g} s after it",
            (start, stop),
            nums,
        )
    attempts, _errors = rec.backend_delta(check.backend, start, stop)
    nums["requests"] = attempts
    ok = attempts <= check.max_requests
    until = f"#{back.number} ({back.description})" if back is not None else "the end"
    figure = (
        f"{attempts} requests sent to {check.backend} from {check.after:g} s after "
        f"#{act.number} ({act.description}) until {until}"
        + ("" if check.max_requests == 0 else f" (at most {check.max_requests})")
    )
    return CheckResult(check.name, check.kind, ok, figure, (start, stop), nums)


def _resumes(check: TrafficResumesWithin, rec: Recording, sc: Scenario) -> CheckResult:
    if check.action is not None:
        act = _action(rec, sc, check.action)
    else:
        act = _first_action(rec, ("restart",), check.backend)
    if act is None:
        return CheckResult(check.name, check.kind, False, f"no restart of {check.backend} happened")
    base = rec.at_or_before(act.at)
    prev = base.backends.get(check.backend) if base is not None else None
    answered_before = (prev.requests - prev.errors) if prev is not None else 0
    nums: dict[str, float | int | str | None] = {"within_s": check.within}
    w = (act.at, act.at + check.within)
    for s in rec.samples:
        if s.t <= act.at:
            continue
        b = s.backends.get(check.backend)
        if b is not None and b.requests - b.errors > answered_before:
            after = s.t - act.at
            nums["resumed_after_s"] = round(after, 3)
            ok = after <= check.within
            sign = "≤" if ok else ">"
            figure = (
                f"{check.backend} answered again {after:.2f} s after #{act.number} "
                f"({act.description}) {sign} {check.within:g} s"
            )
            return CheckResult(check.name, check.kind, ok, figure, w, nums)
    return CheckResult(
        check.name,
        check.kind,
        False,
        f"{check.backend} answered nothing after #{act.number} ({act.description}) "
        f"to the end ({rec.end - act.at:.1f} s)",
        w,
        nums,
    )


def _duplicates(check: NoDuplicatePosts, rec: Recording) -> CheckResult:
    tallies = list(rec.processes.values())
    if not tallies:
        return CheckResult(
            check.name, check.kind, False, "no fleet bookkeeping could be read (no fleet?)"
        )
    repeated = sum(t.request_ids_repeated for t in tallies)
    posts = sum(t.by_method.get("POST", 0) for t in tallies)
    capped = any(t.request_ids_capped for t in tallies)
    nums: dict[str, float | int | str | None] = {
        "request_ids_repeated": repeated,
        "posts_received": posts,
        "processes": len(tallies),
    }
    worst = [
        f"{t.backend} (pid {t.pid}): {t.request_ids_repeated}"
        for t in tallies
        if t.request_ids_repeated
    ]
    figure = (
        f"{repeated} request ids seen twice by a backend ({posts} POSTs received, "
        f"{len(tallies)} processes)"
    )
    if worst:
        figure += "; " + ", ".join(worst)
    if capped:
        figure += "; id tracking capped: not every id was checked"
    return CheckResult(check.name, check.kind, repeated == 0 and not capped, figure, None, nums)


def _admitted(check: AdmittedRateWithin, rec: Recording, phases: Phases) -> CheckResult:
    w = phases.window(check)
    span = w[1] - w[0]
    first = rec.at_or_before(w[0])
    limit = check.rps if check.rps is not None else (first.limits_rps if first else None)
    nums: dict[str, float | int | str | None] = {"tolerance_percent": check.percent}
    if limit is None:
        return CheckResult(
            check.name, check.kind, False, "no global rate limit in effect and no rps given", w
        )
    if span <= 0:
        return CheckResult(check.name, check.kind, False, "empty window", w, nums)
    a, b = rec.window(*w)
    if a is None or b is None or b.t <= a.t:
        return CheckResult(check.name, check.kind, False, "no samples in the window", w, nums)
    admitted = b.admitted - a.admitted
    rate = admitted / (b.t - a.t)  # over the samples' own times: no edge error
    off = 100.0 * abs(rate - limit) / limit
    nums.update(admitted=admitted, rate=round(rate, 3), limit_rps=limit, off_percent=round(off, 3))
    ok = off <= check.percent
    sign = "≤" if ok else ">"
    figure = (
        f"admitted {rate:.1f}/s vs limit {limit:g}/s: {off:.1f} % off {sign} ±{check.percent:g} % "
        f"({admitted} in {_window_text(w)})"
    )
    return CheckResult(check.name, check.kind, ok, figure, w, nums)


def _shares(
    check: FallbackShareAbove | RetryShareBelow, rec: Recording, phases: Phases
) -> CheckResult:
    w = phases.window(check)
    d = rec.totals_delta(*w)
    total = d["balancer_requests"]
    part = d["fallbacks"] if isinstance(check, FallbackShareAbove) else d["retries"]
    what = "fallbacks" if isinstance(check, FallbackShareAbove) else "retries"
    nums: dict[str, float | int | str | None] = {
        what: part,
        "requests": total,
        "limit_percent": check.percent,
    }
    if total == 0:
        return CheckResult(
            check.name,
            check.kind,
            False,
            f"no requests reached the balancer in {_window_text(w)}",
            w,
            nums,
        )
    share = _pct(part, total)
    nums["percent"] = round(share, 4)
    if isinstance(check, FallbackShareAbove):
        ok = share >= check.percent
        sign = "≥" if ok else "<"
    else:
        ok = share <= check.percent
        sign = "≤" if ok else ">"
    figure = (
        f"{share:.1f} % {what} ({part} of {total} requests) {sign} {check.percent:g} % "
        f"over {_window_text(w)}"
    )
    return CheckResult(check.name, check.kind, ok, figure, w, nums)
