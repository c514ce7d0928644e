"""What this balancer has counted, summed over every process serving (``[listener] workers``).

Each process keeps its own :class:`~lbtui.core.record.BalancerRecord` and backend records (as
Envoy instances do); the others report theirs to the primary a few times a second as
:class:`PeerRecords`, and what the control plane shows is the sum, read here.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from lbtui.balancer.lean_upstream import LeanUpstream
from lbtui.balancer.pool import Backend
from lbtui.balancer.state import State
from lbtui.balancer.upstream import Upstream
from lbtui.core.faults import FaultKind, FaultStats
from lbtui.core.record import BackendRecord, BalancerRecord


@dataclass(slots=True)
class PeerRecords:
    """What another process of this balancer last reported (``[listener] workers``)."""

    balancer: BalancerRecord
    backends: dict[str, BackendRecord]
    connections: dict[str, int]
    """Connections open to each backend from that process."""
    faults: dict[str, FaultStats] = field(default_factory=dict)
    """Its proxy-side faults' figures, by backend (the same fault is set in every process)."""
    fault_applied: dict[tuple[str, FaultKind], int] = field(default_factory=dict)
    """Faults it applied since it started, by (backend, kind)."""


class Records:
    """This process's records and the other processes' last reports."""

    def __init__(self, state: State, upstream: LeanUpstream | Upstream) -> None:
        self.state = state
        self.upstream = upstream
        self.peer_records: dict[int, PeerRecords] = {}
        """The other processes' records, by worker index, as last reported (a worker that
        has exited keeps its last ones under a negative index, for the totals)."""
        self.peer_pids: dict[int, int] = {}
        """The live workers' process ids, by index."""

    def merged_record(self) -> BalancerRecord:
        """The balancer's record summed over every process serving."""
        if not self.peer_records:
            return self.state.record
        return BalancerRecord.merged(
            [self.state.record, *(p.balancer for p in self.peer_records.values())]
        )

    def merged_backend_record(self, backend: Backend) -> BackendRecord:
        """``backend``'s record summed over every process serving."""
        if not self.peer_records:
            return backend.record
        name = backend.name
        parts = [p.backends[name] for p in self.peer_records.values() if name in p.backends]
        return BackendRecord.merged([backend.record, *parts]) if parts else backend.record

    def records(self) -> PeerRecords:
        """This process's records, to send to the primary."""
        upstream = self.upstream
        backends = self.state.backends.values()
        faults = self.state.faults
        return PeerRecords(
            self.state.record,
            {b.name: b.record for b in backends},
            {b.name: upstream.open_connections(b.host, b.port) for b in backends}
            if isinstance(upstream, LeanUpstream)
            else {},
            {
                b.name: replace(st, client_observed=dict(st.client_observed))  # picklable
                for b in backends
                if (st := faults.stats(b.name)) is not None
            },
            faults.applied_totals(),
        )
