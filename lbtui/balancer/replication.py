"""Adopting what another process of this balancer saw (``[listener] workers``).

Each process keeps its own breakers and ejections, as Envoy instances do, but a breaker trip or
close and an ejection made by traffic in one are adopted by all the others, so that a failing
backend is avoided everywhere at once (``State.on_sync`` sends them; ``workers.py`` carries
them). What is adopted is not sent back, and its reason names the process it came from.
"""

from __future__ import annotations

from lbtui.balancer.state import State, SyncMessage
from lbtui.core.breaker import BreakerState


def adopt(state: State, message: SyncMessage, origin: str) -> None:
    """Take over a breaker transition or an ejection another process made (``on_sync``'s
    message); ``origin`` names that process in the reason shown here."""
    now = state.clock()
    kind, name = message[0], message[1]
    backend = state.backends.get(name)
    if backend is None:
        return
    state.adopting = True
    try:
        if kind == "breaker" and backend.breaker is not None:
            _, _, breaker_state, until, reason, at = message
            backend.breaker.adopt(
                BreakerState(breaker_state), now, f"{reason} ({origin})", open_until=until, at=at
            )
        elif kind == "eject":
            _, _, until, times, reason = message
            if state.outliers.adopt(name, now, until, times, f"{reason} ({origin})"):
                state.refresh_pools(now)
    finally:
        state.adopting = False
