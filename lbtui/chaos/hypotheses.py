"""A scenario's ``[[checks]]``: the steady-state hypotheses, each a tagged table
(``kind = "error_rate_below"``) with a name. ``lbtui.chaos.checks`` judges them."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from lbtui.chaos.fields import BackendName, Duration, Percent, PositiveDuration, _Strict

Phase = Literal["before", "during", "after", "whole"]
ActionRef = Annotated[int, Field(ge=1)] | str
"""A timeline action: its 1-based number in the file, or its ``id``."""


class _Check(_Strict):
    name: Annotated[str, Field(min_length=1, max_length=120)]


class _Windowed(_Check):
    """A window of the run: a ``phase`` (``before`` the first action, ``during`` the
    timeline — from the first action to the end of the last, faults' durations included —
    ``after`` it, or the ``whole`` run), or explicit ``from`` / ``to`` times; ``settle`` skips
    the window's first seconds (time to recover: a reaction time, never scaled)."""

    phase: Phase = "whole"
    from_: Duration | None = Field(None, alias="from")
    to: Duration | None = None
    settle: Duration = 0.0


ErrorClass = Literal["5xx", "4xx", "429", "transport"]


def _default_count() -> list[ErrorClass]:
    return ["5xx", "transport"]


class ErrorRateBelow(_Windowed):
    """Client-side errors, in percent of requests answered or failed, at most ``percent``."""

    kind: Literal["error_rate_below"]
    percent: Percent
    count: list[ErrorClass] = Field(default_factory=_default_count)
    """What counts as an error: status classes, ``429`` alone, and ``transport`` (no answer:
    connect error, timeout, reset)."""


class P99Below(_Windowed):
    """Client-side p99 latency (from the intended send time) at most ``ms``."""

    kind: Literal["p99_below"]
    ms: Annotated[float, Field(gt=0)]
    min_requests: Annotated[int, Field(ge=1)] = 20


class P99Above(_Windowed):
    """Client-side p99 at least ``ms``: proof that a slowness fault did reach clients."""

    kind: Literal["p99_above"]
    ms: Annotated[float, Field(gt=0)]
    min_requests: Annotated[int, Field(ge=1)] = 20


class BreakerOpensWithin(_Check):
    """``backend``'s breaker opens within ``within`` of timeline action ``after``."""

    kind: Literal["breaker_opens_within"]
    backend: BackendName
    after: ActionRef
    within: PositiveDuration


class NoTrafficToKilledAfter(_Check):
    """The balancer sends no request to ``backend`` from ``after`` past its kill until it is
    restarted (or the run ends)."""

    kind: Literal["no_traffic_to_killed_after"]
    backend: BackendName
    after: Duration
    kill: ActionRef | None = None
    """Which kill (default: the first kill of ``backend``)."""
    max_requests: Annotated[int, Field(ge=0)] = 0


class TrafficResumesWithin(_Check):
    """``backend`` answers requests again within ``within`` of its restart (or of the
    ``action`` named: an enable, an add_backend, a clear_fault)."""

    kind: Literal["traffic_resumes_within"]
    backend: BackendName
    within: PositiveDuration
    action: ActionRef | None = None
    """Default: the first restart of ``backend``."""


class NoDuplicatePosts(_Check):
    """No request id reached a fleet backend twice (the fleet's own bookkeeping, every process
    incarnation of every backend summed)."""

    kind: Literal["no_duplicate_posts"]


class AdmittedRateWithin(_Windowed):
    """Requests the balancer admitted per second within ±``percent`` of ``rps`` (default: the
    global ``limits.rps`` in effect when the window starts)."""

    kind: Literal["admitted_rate_within"]
    percent: Percent
    rps: Annotated[float, Field(gt=0)] | None = None


class FallbackShareAbove(_Windowed):
    """Fallback responses, in percent of the balancer's requests, at least ``percent``."""

    kind: Literal["fallback_share_above"]
    percent: Percent


class RetryShareBelow(_Windowed):
    """Retries, in percent of the balancer's requests, at most ``percent`` (a retry budget
    that holds)."""

    kind: Literal["retry_share_below"]
    percent: Percent


Check = Annotated[
    ErrorRateBelow
    | P99Below
    | P99Above
    | BreakerOpensWithin
    | NoTrafficToKilledAfter
    | TrafficResumesWithin
    | NoDuplicatePosts
    | AdmittedRateWithin
    | FallbackShareAbove
    | RetryShareBelow,
    Field(discriminator="kind"),
]
