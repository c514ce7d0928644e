"""The control plane's handle on proxy-side faults: the balancer's ``lbtui.core.faults.Faults``
registry, read and changed on the proxy's clock.

The registry lives in the data plane (the proxy asks it about every request and counts what it
did); the control plane sets and clears faults and reads those counts: ``view`` for the
snapshot (requested vs applied, with the sample size, and what clients saw), and
``applied_totals`` for ``lbtui_faults_injected_total``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import TYPE_CHECKING

from lbtui.control.model import FaultSpec, FaultView
from lbtui.core.faults import Faults, FaultStats

if TYPE_CHECKING:
    from lbtui.balancer.proxy import PeerRecords

SAME_FAULT_S = 5.0
"""Another process's fault on the same backend with the same spec, set at most this long before
the one here (or any time after: a restarted worker's copy), is this fault (the primary replays
every action in its workers within milliseconds)."""


class FaultLink:
    """``registry`` on the clock ``clock`` (the proxy's)."""

    def __init__(
        self,
        registry: Faults,
        clock: Callable[[], float],
        *,
        owner: str | None = None,
        peers: Callable[[], Iterable[PeerRecords]] | None = None,
    ) -> None:
        self.registry = registry
        self.clock = clock
        self.peers = peers
        """The other processes' reports (``[listener] workers``): their counts are added."""
        self.owner = owner
        """Tag on every fault set through this link, so that one session's faults can be
        undone together (``Faults.clear_all(owner=...)``)."""

    def set(self, name: str, spec: FaultSpec) -> None:
        self.registry.set(name, spec, self.clock(), owner=self.owner)

    def clear(self, name: str) -> FaultSpec | None:
        """Clear ``name``'s fault; the spec it had, or ``None``."""
        return self.registry.clear(name, self.clock())

    def get(self, name: str) -> FaultSpec | None:
        return self.registry.get(name)

    def view(self, name: str, now: float) -> FaultView | None:
        st = self.registry.stats(name)
        if st is None:
            return None
        requests, eligible, applied = st.requests_total, st.eligible_total, st.applied_total
        observed = Counter(st.client_observed)
        for other in self._same_fault(name, st):
            requests += other.requests_total
            eligible += other.eligible_total
            applied += other.applied_total
            observed.update(other.client_observed)
        remaining = (
            max(0.0, st.expires_at - now) if st.active and st.expires_at is not None else None
        )
        return FaultView(
            spec=st.spec,
            description=st.description,
            active=st.active,
            ended=st.ended,
            set_at=st.set_at,
            remaining_s=remaining,
            requests=requests,
            eligible=eligible,
            applied=applied,
            applied_percent=100.0 * applied / eligible if eligible else None,
            client_observed=dict(observed),
        )

    def _same_fault(self, name: str, st: FaultStats) -> list[FaultStats]:
        if self.peers is None:
            return []
        found = []
        for peer in self.peers():
            other = peer.faults.get(name)
            # A worker started later got the fault with the time it had left: same fault.
            if (
                other is not None
                and replace(other.spec, duration_s=None) == replace(st.spec, duration_s=None)
                and other.set_at > st.set_at - SAME_FAULT_S
            ):
                found.append(other)
        return found

    def applied_totals(self) -> dict[tuple[str, str], int]:
        """Faults applied since start by ``(backend, kind)``; only ever grows."""
        totals = Counter(self.registry.applied_totals())
        for peer in self.peers() if self.peers is not None else ():
            totals.update(peer.fault_applied)
        return {(b, k.value): n for (b, k), n in totals.items()}
