"""What a foreign balancer (HAProxy) says that lbtui's own model has no field for: a server's
status in HAProxy's words, its checks, queue and error counters, and the frontends. Parts of the
``Snapshot`` (``BackendView.server``, ``Snapshot.frontends``), kept apart from ``model.py`` so
that lbtui's model reads on its own; ``None`` and empty for lbtui's own balancer.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class ServerView:
    """A server of a foreign balancer (HAProxy) in that balancer's own words: the figures it
    has and lbtui's model has not, for the columns and the detail of that source."""

    group: str
    """The HAProxy backend (proxy) the server belongs to; rows are grouped by it."""
    status: str
    """As HAProxy says it: ``UP``, ``DOWN``, ``MAINT``, ``DRAIN``, ``NOLB``, ``UP 1/3``
    (going down after one failed check of three)…"""
    since: float
    """When ``status`` last changed (monotonic, on the snapshot's clock)."""
    check_status: str | None
    """The last check's result code (``L4OK``, ``L4CON``, ``L7STS``…); ``None`` when the
    server is not checked."""
    check_detail: str
    """The check's description and output (``Layer4 connection problem: Connection
    refused``)."""
    check_duration_ms: float | None
    queue: int
    """Requests waiting for a slot on this server (HAProxy's ``qcur``)."""
    error_rates: dict[str, float]
    """Per second over the "now" window: ``connect`` (``econ``), ``response`` (``eresp``),
    ``5xx`` (``hrsp_5xx``), ``retry`` (``wretr``), ``check`` (``chkfail``)."""
    average_ms: dict[str, float] = field(default_factory=dict)
    """HAProxy's own averages over the last 1,024 requests (``qtime``, ``ctime``, ``rtime``,
    ``ttime``): averages, not percentiles, shown as such."""


@dataclass(frozen=True, slots=True)
class FrontendView:
    """A foreign balancer's listener (an HAProxy frontend) for the frontends panel."""

    name: str
    status: str
    """``OPEN``, ``STOP``, ``FULL``."""
    rps: float
    """Requests per second over the "now" window."""
    connections: int
    """Current sessions (``scur``)."""
    connection_rate: float
    error_ratio: float
    """5xx answers and denied requests over requests, "now"."""
    requests_total: int
