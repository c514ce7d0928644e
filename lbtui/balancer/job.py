"""One client request on its way through the pipeline.

A :class:`Job` is what every step of the pipeline (``pipeline.py``, ``attempt.py``) reads and
writes: the request, the pool (target group) and fallback its route chose, the backends tried
so far, the last failure and the response flag. It holds no behaviour but the backend
connection's callback, which hands the attempt's answer back to the driver that sent it.
"""

from __future__ import annotations

from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, Protocol

from lbtui.balancer.connections import BackendConnection, HeadBlock
from lbtui.balancer.exchange import ClientRequest, Result
from lbtui.balancer.fallback import Fallback
from lbtui.balancer.pool import Backend, Pool
from lbtui.balancer.upstream import BackendResponse
from lbtui.core.faults import FaultDecision, FaultKind
from lbtui.errors import UpstreamError

if TYPE_CHECKING:
    from lbtui.balancer.pipeline import Pipeline


class Client(ClientRequest, Protocol):
    """A client whose listener takes the answer when it is ready (``finish``) and runs the
    rest of a request that must wait as a coroutine (``spawn``): what the one driver,
    ``Pipeline.serve``, talks to. ``nowait``: whether an attempt may be answered from the
    backend connection's callback (the fast listener), rather than from a coroutine: never for
    a request with a body (it is read or streamed by a coroutine), so that the usual request
    is decided by one look-up, not two."""

    @property
    def nowait(self) -> bool: ...

    def finish(self, result: Result) -> None: ...

    def spawn(self, rest: Coroutine[Any, Any, Result]) -> None: ...


Pending = tuple[Backend, float, BackendResponse | None]
"""An attempt sent: its backend, its start time, and its response head (None: it failed, and
the failure is recorded)."""


class Job:
    """One client request on its way through the pipeline: what it is, where it may go, and
    what it has been through so far."""

    __slots__ = (
        "admitted",
        "backend",
        "body",
        "budget_held",
        "client",
        "connect_failures",
        "cut",
        "driver",
        "drop_headers",
        "extra_headers",
        "fallback",
        "fault",
        "faulted",
        "flag",
        "headers",
        "key",
        "last",
        "method",
        "pool",
        "raw_path",
        "replayable",
        "request_id",
        "reset_retried",
        "retries",
        "route",
        "sent",
        "t0",
        "t_start",
        "tried",
        "upstream_s",
    )

    def __init__(
        self,
        client: Client,
        pool: Pool,
        fallback: Fallback | None,
        key: str | None,
        extra_headers: list[tuple[str, str]] | None,
        admitted: bool,
    ) -> None:
        self.client = client
        self.method = client.method
        self.raw_path = client.raw_path
        self.pool = pool
        self.fallback = fallback
        self.key = key
        self.extra_headers = extra_headers
        self.drop_headers: frozenset[str] | None = None
        """Lower-case names of backend response headers not passed on (a route's)."""
        self.admitted = admitted
        """It holds a concurrency slot, released when it is answered."""
        self.headers: HeadBlock | list[tuple[str, str]] = []
        self.body: Any = None
        """None, the whole body (bytes, replayable) or the client's body stream."""
        self.replayable = True
        self.tried: list[Backend] = []
        self.retries = 0
        self.connect_failures = 0
        self.budget_held = 0
        self.reset_retried = False
        self.last: UpstreamError | None = None
        self.flag: str | None = None
        self.fault: FaultDecision | None = None
        """The fault applied to the current attempt, if any."""
        self.faulted: list[tuple[str, FaultKind]] = []
        """Every fault applied to this request, as (backend, kind)."""
        self.cut = False
        """The client's response was cut mid-body."""
        self.request_id: str | None = None
        """``X-Request-Id``: the client's, or the one generated for it."""
        self.route: str | None = None
        """The path prefix of the route that placed it (None: the default pool)."""
        self.t_start = 0.0
        """When it arrived (read only while the access log is on)."""
        self.sent = 0
        """Response body bytes sent to the client."""
        self.upstream_s = -1.0
        """The answering attempt's time until its answer was read or streamed (below 0: no
        backend answered)."""
        self.t0: float
        """When the current attempt began (the clock's reading at its pick)."""
        # Set when an attempt is answered by the backend connection's callback:
        self.driver: Pipeline
        """Who sent it (a typed reference, not a bound method: compiled, the call back is a
        direct call, and no method object is made per request)."""
        self.backend: Backend

    def __call__(self, conn: BackendConnection, error: UpstreamError | None) -> None:
        """The backend connection's callback for an attempt sent without waiting."""
        self.driver.answered(self, conn, error)


class StatusFailure(UpstreamError):
    """An answer with a status listed in ``retries.retry_on_status``."""

    reason = "upstream_status"

    def __init__(self, backend: str, status: int) -> None:
        self.status = status
        super().__init__(backend, f"answered {status}")
