"""Where the rate limits keep their state: ``[limits] store``, and what to do when it fails.

``store = "memory"`` (the default) keeps every bucket in this balancer (shared memory between
its workers). ``store = "redis://HOST:PORT/DB"`` (``rediss://`` for TLS, ``redis://:PASSWORD@…``
with a password) makes the global, per-client and per-backend buckets one bucket across every
balancer that names the same store and ``store_prefix``: Envoy's global rate limit service,
Kong and Traefik keep their counters in Redis the same way. How a replica stays cheap on the
request path and what that costs in accuracy is in :mod:`lbtui.balancer.synced_limits`.

The store is chosen when the balancer starts; a run-time ``set_limits`` changes the limits, not
where they are kept.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Final, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, Field

STORE_KEYS: Final = frozenset(
    {"store", "on_store_error", "store_sync_ms", "store_heartbeat_ms", "store_prefix"}
)
"""The ``[limits]`` keys read once at start: a run-time ``set_limits`` does not change them (and
events do not repeat them: the URL may hold a password)."""

OnStoreError = Literal["allow", "deny", "local"]
"""While the store does not answer: ``allow`` admits everything the limits would have checked,
``deny`` answers 429 to it, ``local`` (the default) has each replica enforce its share of each
limit: the limit divided by the live replicas it last saw."""


@dataclass(frozen=True, slots=True)
class StoreAddress:
    """A Redis URL taken apart, for the balancer and for messages (never the password)."""

    url: str
    host: str
    port: int
    db: int
    tls: bool

    @property
    def shown(self) -> str:
        """The URL without credentials, for events, the state API and logs."""
        scheme = "rediss" if self.tls else "redis"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{host}:{self.port}/{self.db}"


def parse_store(value: str) -> StoreAddress | None:
    """``None`` for ``memory``; the Redis address otherwise; a ``ValueError`` saying what is
    expected for anything else."""
    if value == "memory":
        return None
    expected = "expected 'memory' or a URL 'redis://HOST:PORT/DB' (or 'rediss://…')"
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError:
        raise ValueError(f"{expected}, got {value!r}") from None
    if parts.scheme not in ("redis", "rediss") or not parts.hostname:
        raise ValueError(f"{expected}, got {value!r}")
    if parts.query or parts.fragment:
        raise ValueError(f"{expected} (no query or fragment), got {value!r}")
    path = parts.path.strip("/")
    if path and not (path.isdigit() and int(path) <= 15):
        raise ValueError(f"{expected}: DB is a number from 0 to 15, got {path!r}")
    return StoreAddress(
        url=value,
        host=parts.hostname,
        port=port if port is not None else 6379,
        db=int(path) if path else 0,
        tls=parts.scheme == "rediss",
    )


def _store(value: str) -> str:
    parse_store(value)
    return value


StoreUrl = Annotated[str, AfterValidator(_store)]
"""``memory`` or a Redis URL (see :func:`parse_store`)."""

SyncMs = Annotated[int, Field(ge=5, le=1_000)]
"""How often a replica settles its buckets with the store, in milliseconds."""

HeartbeatMs = Annotated[int, Field(ge=100, le=60_000)]
"""How often a replica says it is alive in the store, in milliseconds."""

Prefix = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:\-]+$")]
"""The first part of every key: balancers with another prefix share nothing."""

ReplicaName = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:@\-]+$")]
"""``[balancer] name``: letters, digits and ``_.:@-`` (a ``HOST:PORT`` fits)."""


def shown_store(value: str) -> str:
    """``[limits] store`` as it may be shown (state API, answers): never its password."""
    address = parse_store(value)
    return address.shown if address is not None else value
