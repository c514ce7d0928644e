"""The control plane's handle on proxy-side faults: the balancer's ``lbtui.core.faults.Faults``
registry, read and changed on the proxy's clock.

The registry lives in the data plane (the proxy asks it about every request and counts what it
did); the control plane sets and clears faults and reads those counts: ``view`` for the
snapshot (requested vs applied, with the sample size, and what clients saw), and
``applied_totals`` for ``lbtui_faults_injected_total``.
"""

from __future__ import annotations

from collections.abc import Callable

from lbtui.control.model import FaultSpec, FaultView
from lbtui.core.faults import Faults


class FaultLink:
    """``registry`` on the clock ``clock`` (the proxy's)."""

    def __init__(
        self, registry: Faults, clock: Callable[[], float], *, owner: str | None = None
    ) -> None:
        self.registry = registry
        self.clock = clock
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
            requests=st.requests_total,
            eligible=st.eligible_total,
            applied=st.applied_total,
            applied_percent=st.applied_percent,
            client_observed=dict(st.client_observed),
        )

    def applied_totals(self) -> dict[tuple[str, str], int]:
        """Faults applied since start by ``(backend, kind)``; only ever grows."""
        return {(b, k.value): n for (b, k), n in self.registry.applied_totals().items()}
