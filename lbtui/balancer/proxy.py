"""The data plane of one balancer process, assembled from its parts.

Semantics copied from nginx and Envoy, each in the module named for it:

- ``state.py``: the backends, pools and routes, and what changes a backend's standing (breaker
  transitions, health flips, ejections, panic mode); every change is one event;
- ``pipeline.py``: the one request driver — admit → route → pick → attempt → answer → record —
  with the retry decisions; ``attempt.py``: the steps of one attempt; ``answers.py``: the
  answers the balancer writes itself (429, 5xx, fallback);
- ``operator.py``: operator actions (add, remove, reweigh, drain, force a breaker, faults,
  algorithm, limits);
- ``replication.py`` and ``records.py``: with several processes serving, what they adopt from
  each other and the records summed over all of them.

Headers (in ``exchange.py``): hop-by-hop headers (``Connection`` and the headers it names,
``Keep-Alive``, ``TE``, ``Trailer``, ``Transfer-Encoding``, ``Upgrade``, ``Proxy-*``) are dropped
both ways; ``X-Forwarded-For`` is appended to, ``X-Forwarded-Proto`` and ``X-Forwarded-Host``
are set, ``Via`` gets ``1.1 lbtui`` appended; ``Host``, the raw path and query, repeated headers
and the status pass through untouched. Bodies stream both ways with back-pressure (constant
memory); a small body with a known length is buffered so that it can be sent again.

:class:`Proxy` holds the parts together and gives the control plane, the listeners and the
workers the names they use; it decides nothing itself.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, cast

from aiohttp import web

from lbtui.balancer import operations as ops
from lbtui.balancer.answers import Flag, error_answer
from lbtui.balancer.exchange import (
    HOP_BY_HOP,
    VIA,
    handle_aiohttp,
    request_headers,
    response_headers,
)
from lbtui.balancer.operations import Operation
from lbtui.balancer.operator import Operator, Replicate
from lbtui.balancer.pipeline import Pipeline
from lbtui.balancer.pool import AdminState, Backend
from lbtui.balancer.reconfigure import apply_reload
from lbtui.balancer.records import PeerRecords, Records
from lbtui.balancer.replication import adopt
from lbtui.balancer.routing import Route
from lbtui.balancer.state import State, SyncMessage
from lbtui.config import BackendConfig, Config, LimitsConfig
from lbtui.core.faults import FaultSpec
from lbtui.core.record import BackendRecord, BalancerRecord

if TYPE_CHECKING:
    from lbtui.balancer.listeners import Listeners
    from lbtui.balancer.shared import SharedLimits

__all__ = [
    "HOP_BY_HOP",
    "VIA",
    "Flag",
    "PeerRecords",
    "Proxy",
    "Route",
    "error_answer",
    "request_headers",
    "response_headers",
]


class Proxy:
    """One balancer process's data plane: :attr:`state`, :attr:`pipeline` (behind both
    listeners), :attr:`operator` (the actions), :attr:`peers` (other processes' records)."""

    def __init__(
        self,
        config: Config,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        shared: SharedLimits | None = None,
    ) -> None:
        state = self.state = State(config, clock=clock, wall_clock=wall_clock, shared=shared)
        self.pipeline = Pipeline(state)
        self.operator = Operator(state)
        self.operator.on_reload = self._reload
        self.peers = Records(state, self.pipeline.upstream)
        # What the control plane reads, by the names it knows (the same objects):
        self.config = config
        self.clock = clock
        self.shared = shared
        self.events = state.events
        self.record = state.record
        self.faults = state.faults
        self.backends = state.backends
        self.outliers = state.outliers
        self.admission = state.admission
        self.default_pool = state.default_pool
        self.upstream = self.pipeline.upstream
        self.peer_records = self.peers.peer_records
        self.peer_pids = self.peers.peer_pids
        self.listeners: Listeners | None = None
        """The listeners serving this proxy (set by ``BalancerServer``; ``None`` embedded)."""

    # -- several processes ------------------------------------------------------------------

    @property
    def replicate(self) -> Replicate | None:
        """Set by the primary of several processes: operator actions done here go to the
        others (``workers.py``)."""
        return self.operator.replicate

    @replicate.setter
    def replicate(self, fn: Replicate | None) -> None:
        self.operator.replicate = fn

    @property
    def on_sync(self) -> Callable[[SyncMessage], None] | None:
        """Set when several processes serve: breaker trips and ejections made here by traffic
        go to the others, which :meth:`adopt` them."""
        return self.state.on_sync

    @on_sync.setter
    def on_sync(self, fn: Callable[[SyncMessage], None] | None) -> None:
        self.state.on_sync = fn

    def adopt(self, message: SyncMessage, origin: str) -> None:
        adopt(self.state, message, origin)

    def records(self) -> PeerRecords:
        return self.peers.records()

    def merged_record(self) -> BalancerRecord:
        return self.peers.merged_record()

    def merged_backend_record(self, backend: Backend) -> BackendRecord:
        return self.peers.merged_backend_record(backend)

    # -- lifecycle and upkeep -----------------------------------------------------------------

    async def start(self) -> None:
        await self.upstream.start()

    async def close(self) -> None:
        self.operator.clear_faults()  # the guaranteed undo; BalancerServer.stop may call it earlier
        await self.upstream.close()
        if self.state.limit_store is not None:
            await self.state.limit_store.close()

    def tick(self) -> None:
        """Periodic upkeep (a few times a second): readmissions, faults that end, slow-start
        weights, panic."""
        self.state.tick(self.operator.expire_faults)

    async def handle(
        self, request: web.BaseRequest, listener: str = "default"
    ) -> web.StreamResponse:
        """The aiohttp listener's handler: the same driver as the fast listener's."""
        return await handle_aiohttp(
            self.pipeline.serve, request, self.config.proxy.max_body_bytes, listener
        )

    def backend(self, name: str) -> Backend:
        return self.state.backend(name)

    # -- operator actions (``operator.py``): each one a typed operation ----------------------

    def act(self, op: Operation) -> object:
        """Apply ``op`` here (and in every worker): what its handler returns."""
        return self.operator.apply(op)

    def _reload(self, op: ops.Reload) -> None:
        apply_reload(self.operator, self.pipeline, op)
        self.config = op.config

    def on_membership(self, fn: Callable[[Backend, bool], None]) -> None:
        self.operator.on_membership(fn)

    def health_result(self, backend: Backend, ok: bool, detail: str) -> None:
        """An active check finished (the health checker's callback)."""
        self.operator.apply(ops.HealthResult(backend.name, ok, detail))

    # The same operations by name, for embedding code and tests.

    def add_backend(self, config: BackendConfig) -> Backend:
        return cast(Backend, self.act(ops.AddBackend(config)))

    def remove_backend(self, name: str) -> Backend:
        return cast(Backend, self.act(ops.RemoveBackend(name)))

    def set_weight(self, name: str, weight: float) -> None:
        self.act(ops.SetWeight(name, weight))

    def set_admin(self, name: str, state: AdminState) -> None:
        self.act(ops.SetAdmin(name, state))

    def force_breaker(self, name: str, mode: str) -> None:
        self.act(ops.ForceBreaker(name, mode))

    def set_fault(self, name: str, spec: FaultSpec, *, owner: str | None = None) -> None:
        self.act(ops.SetFault(name, spec, owner))

    def clear_fault(self, name: str) -> FaultSpec | None:
        return cast("FaultSpec | None", self.act(ops.ClearFault(name)))

    def clear_faults(self, owner: str | None = None) -> list[str]:
        return cast("list[str]", self.act(ops.ClearFaults(owner)))

    def change_algorithm(self, algorithm: str) -> None:
        self.act(ops.SetAlgorithm(algorithm))

    def set_limits(self, limits: LimitsConfig) -> None:
        self.act(ops.SetLimits(limits))
