"""The detail pane's reasons: every state of a backend that is not simply "up and serving",
each with since when, why and what comes next (PRODUCT.md, gap 2). Pure, from the snapshot:
the widget (``lbtui.tui.widgets.detail``) only lays the lines out.
"""

from __future__ import annotations

from dataclasses import dataclass

from lbtui.control.model import BackendView, BreakerView, Snapshot
from lbtui.tui.numbers import (
    clock_text,
    human_duration,
    num,
    rate_text,
    wall_of,
)
from lbtui.tui.view import breaker_forced_closed, fault_proof, process_dead

# --- the detail pane: every non-normal state with its reason -----------------------------------


@dataclass(frozen=True, slots=True)
class Reason:
    title: str
    """``OPEN``, ``EJECTED`` … in capitals."""
    style: str
    text: str
    """The rest of the line: since when, why, and what comes next."""


def _since(snapshot: Snapshot, at: float) -> str:
    return f"since {clock_text(wall_of(snapshot, at))}"


def breaker_reason(br: BreakerView, snapshot: Snapshot) -> Reason | None:
    since = _since(snapshot, br.since)
    match br.state:
        case "open":
            if br.retry_in_s is None:
                nxt = ""
            elif br.retry_in_s <= 0:
                nxt = "; half-open probe due"
            else:
                nxt = f"; half-open probe in {human_duration(br.retry_in_s)}"
            return Reason("OPEN", "bold red", f"{since} — {br.reason}{nxt}")
        case "half_open":
            permits = (
                f"; {br.half_open_permits} probe calls left"
                if br.half_open_permits is not None
                else ""
            )
            return Reason("HALF-OPEN", "yellow", f"{since} — {br.reason}{permits}")
        case "forced_open":
            return Reason("OPEN (forced)", "bold red", f"{since} — {br.reason}; b → auto")
        case "disabled":
            return Reason(
                "OFF (forced)", "bright_black", f"{since} — {br.reason}: no breaker; b → auto"
            )
        case "closed" if breaker_forced_closed(br):
            return Reason(
                "CLOSED (forced)", "cyan", f"{since} — {br.reason}; judging again from here"
            )
    return None


def state_reasons(b: BackendView, snapshot: Snapshot) -> list[Reason]:
    """Why ``b`` is not simply up and serving, one line per state (PRODUCT.md, gap 2)."""
    out: list[Reason] = []
    if b.admin == "disabled":
        since = f"{_since(snapshot, b.admin_since)} " if b.admin_since else ""
        out.append(Reason("DISABLED", "bright_black", f"{since}by the operator; x enables it"))
    if process_dead(b):
        pid = b.process.pid if b.process is not None else None
        out.append(Reason("PROCESS DEAD", "bold red", f"pid {pid} is gone; r restarts it"))
    if b.health is not None and b.health.state == "down":
        h = b.health
        detail = (
            f"; last check: {h.last_check_detail}"
            if h.last_check_detail and h.last_check_detail not in h.reason
            else ""
        )
        out.append(Reason("DOWN", "bold red", f"{_since(snapshot, h.since)} — {h.reason}{detail}"))
    if b.ejected:
        if b.ejected_until is None:
            back = "until further notice"
        else:
            back = f"readmitted in {human_duration(b.ejected_until - snapshot.at)}"
        out.append(Reason("EJECTED", "magenta", f"{b.ejection_reason}; {back}"))
    if b.breaker is not None:
        r = breaker_reason(b.breaker, snapshot)
        if r is not None:
            out.append(r)
    if b.admin == "draining":
        since = f"{_since(snapshot, b.admin_since)} — " if b.admin_since else ""
        left = (
            "drained: nothing in flight"
            if b.in_flight == 0
            else f"{b.in_flight} request{'s' if b.in_flight != 1 else ''} in flight left"
        )
        out.append(Reason("DRAINING", "yellow", f"{since}no new requests; {left}"))
    if b.health is not None and (factor := b.health.slow_start_factor) is not None:
        h = b.health
        left = (
            f"; {human_duration(h.slow_start_remaining_s)} to full weight"
            if h.slow_start_remaining_s is not None
            else ""
        )
        out.append(Reason("SLOW START", "cyan", f"{factor * 100:.0f} % of weight{left}"))
    if b.eligible and b.max_rps is not None and b.demand_rps > b.max_rps:
        out.append(
            Reason(
                "OVER CAP",
                "bold red",
                f"demand {rate_text(b.demand_rps)} req/s > max_rps {num(b.max_rps)}: "
                f"carries {rate_text(b.rps)}, the cap refused the rest (counts in M)",
            )
        )
    if b.fault is not None and b.fault.active:
        out.append(Reason("FAULT", "bold dark_orange", fault_proof(b.fault)))
    elif b.fault is not None:
        out.append(Reason("FAULT ENDED", "bright_black", fault_proof(b.fault)))
    return out


def breaker_window(br: BreakerView) -> str:
    """The breaker's window against its thresholds."""

    def rate(r: float | None) -> str:
        return "–" if r is None else f"{r:.0f} %"

    judged = "" if br.calls >= br.min_calls else f"; not judged below {br.min_calls} calls"
    return (
        f"{br.window} window of {br.window_size}: {br.calls} calls, "
        f"failures {br.failures} = {rate(br.failure_rate)} (opens at ≥ "
        f"{num(br.failure_rate_threshold)} %), slow {br.slow_calls} = "
        f"{rate(br.slow_call_rate)} (≥ {num(br.slow_call_rate_threshold)} % over "
        f"{human_duration(br.slow_call_s)}){judged}; opened {br.times_opened}× since start"
    )


def score_text(score: dict[str, float | None]) -> str:
    """p2c_ewma's cost and its parts (PRODUCT.md: the score's parts)."""

    def f(key: str) -> str:
        v = score.get(key)
        return "∞" if v is None else num(round(v, 2))

    known = ("ewma_ms", "in_flight", "penalty", "cost")
    if all(k in score for k in known):
        text = (
            f"cost {f('cost')} = ewma {f('ewma_ms')} ms × (in-flight {f('in_flight')} + 1)"
            f", penalty {f('penalty')}"
        )
    else:
        text = ""
    extra = [f"{k} {f(k)}" for k in score if k not in known]
    return "; ".join(x for x in [text, ", ".join(extra)] if x)
