"""The guardrails: when the system has gone too far for the run to go on (exit 3).

Judged on the client's side only, over the sliding window the scenario names, from what the
:class:`~lbtui.chaos.recording.Recording` holds so far: a pure function of the recording, so
the sampler calls it after every sample and a test calls it on a hand-made recording.
"""

from __future__ import annotations

from lbtui.chaos.recording import Recording
from lbtui.chaos.scenario import Guardrails


def tripped(rec: Recording, g: Guardrails) -> str | None:
    """Why the run must stop now, or ``None`` while every guardrail holds (or too little is
    recorded to judge: under 10 requests in the window)."""
    if g.error_rate_above is None and g.p99_above_ms is None:
        return None
    now = rec.end
    if now < g.for_:
        return None
    start = now - g.for_
    if g.error_rate_above is not None:
        counts = rec.client_counts(start, now)
        total = sum(counts.values())
        errors = counts["5xx"] + counts["transport"]
        if total >= 10 and 100.0 * errors / total > g.error_rate_above:
            return (
                f"client error rate {100.0 * errors / total:.1f} % "
                f"({errors} of {total}) > {g.error_rate_above:g} % "
                f"for {g.for_:g} s (at {now:.1f} s)"
            )
    if g.p99_above_ms is not None:
        p99, n = rec.client_p99_ms(start, now)
        if n >= 10 and p99 > g.p99_above_ms:
            return (
                f"client p99 {p99:.0f} ms > {g.p99_above_ms:g} ms for {g.for_:g} s (at {now:.1f} s)"
            )
    return None
