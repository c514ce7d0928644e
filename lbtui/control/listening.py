"""What the state API and the console say about each of lbtui's own listeners."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class ListenerView:
    """One listener (``[[listeners]]``) as the primary process serves it."""

    name: str
    address: str
    """As bound: the port a ``:0`` address got."""
    tls: bool
    """HTTPS (``certificates`` set)."""
    redirect_https: str | None = None
    """The HTTPS listener every request here is redirected to (308), if any."""
    connections: int = 0
    """Client connections open on it (in the primary process; workers keep their own)."""
    tunnels: int = 0
    """Upgraded connections (WebSocket) being tunnelled through it (the primary's)."""
    certificates: list[list[str]] = field(default_factory=list)
    """The names each certificate is for, the default first."""
