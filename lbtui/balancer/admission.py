"""Admission: the global token bucket, the per-client buckets and the concurrency limit, checked
before a request is routed. A rejection is a 429 with ``Retry-After`` and the IETF
``RateLimit-Policy`` / ``RateLimit`` headers and never reaches a backend.

Limits can be changed at run time through ``reconfigure`` (the control plane's one entry point);
the buckets keep their state across a change, capped to the new burst.

With several processes serving (``workers``), the limiters are views of one shared-memory zone
(:mod:`lbtui.balancer.shared`) so that the limits hold over all processes together; each
process gets the same ``reconfigure`` calls, and the second and later ones change nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from lbtui.balancer.answers import json_answer
from lbtui.balancer.exchange import Answer
from lbtui.config import LimitsConfig
from lbtui.core.limiting import QuotaPolicy, RateLimitDecision, ratelimit_headers
from lbtui.core.limitstore import Bucket, Concurrency, KeyedBuckets, LimitStore, MemoryLimits

if TYPE_CHECKING:
    from lbtui.balancer.shared import SharedLimits


@dataclass(frozen=True, slots=True)
class Rejection:
    scope: str
    """``global``, ``client`` or ``concurrency``."""
    headers: list[tuple[str, str]]
    retry_after_s: float

    def answer(self, flags_header: bool) -> Answer:
        """The 429, with its JSON body and rate-limit headers."""
        body: dict[str, object] = {
            "error": "rate limited",
            "scope": self.scope,
            "retry_after_s": round(self.retry_after_s, 3),
        }
        return json_answer(429, body, self.headers, "rate_limited" if flags_header else None)


class Admission:
    """The admission limits of one balancer; with ``shared``, limits over all its processes."""

    def __init__(
        self,
        config: LimitsConfig,
        now: float,
        shared: SharedLimits | None = None,
        *,
        store: LimitStore | None = None,
    ) -> None:
        self.config = config
        self.shared = shared
        local: LimitStore = shared if shared is not None else MemoryLimits()
        self.store: LimitStore = store if store is not None else local
        """Where the buckets keep their state: this process, the shared zone, or Redis."""
        self.bucket: Bucket | None = None
        self.global_policy: QuotaPolicy | None = None
        self.clients: KeyedBuckets | None = None
        self.client_policy: QuotaPolicy | None = None
        self.concurrency: Concurrency = local.concurrency_limit(config.max_in_flight)
        """This balancer's own (its processes' together): in-flight counts are not shared
        between replicas."""
        kind, _, name = config.client_key.partition(":")
        self.client_header: str | None = name if kind == "header" else None
        self._lock_once = False
        self._build(config, now)

    def _build(self, c: LimitsConfig, now: float) -> None:
        if c.rps is not None:
            burst = c.burst if c.burst is not None else max(1.0, c.rps)
            if self.bucket is not None:
                self.bucket.reconfigure(c.rps, burst, now)
            else:
                self.bucket = self.store.token_bucket("global", c.rps, burst, now)
            self.global_policy = QuotaPolicy.for_bucket("global", c.rps, burst)
        else:
            self.bucket = None
            self.global_policy = None
        if c.per_client_rps is not None:
            pburst = (
                c.per_client_burst if c.per_client_burst is not None else max(1.0, c.per_client_rps)
            )
            if self.clients is not None:
                self.clients.reconfigure(c.per_client_rps, pburst, now)
            else:
                self.clients = self.store.keyed_limiter(
                    c.per_client_rps, pburst, max_keys=c.max_clients
                )
            self.client_policy = QuotaPolicy.for_bucket("per-client", c.per_client_rps, pburst)
        else:
            self.clients = None
            self.client_policy = None
        self.concurrency.reconfigure(c.max_in_flight)
        locking = (
            (self.bucket is not None)
            + (self.clients is not None)
            + (self.concurrency.max_in_flight is not None)
        )
        self._lock_once = self.shared is not None and self.store is self.shared and locking > 1

    def reconfigure(self, config: LimitsConfig, now: float) -> None:
        kind, _, name = config.client_key.partition(":")
        self.client_header = name if kind == "header" else None
        if self.clients is not None and config.max_clients != self.config.max_clients:
            if self.shared is None or self.store is not self.shared:
                self.clients = None  # a new table of the new size
            else:  # the shared table's size is fixed: keep its buckets, record the new cap
                self.clients = self.shared.keyed_limiter(
                    self.clients.rate, self.clients.burst, max_keys=config.max_clients
                )
        self.config = config
        self._build(config, now)

    @property
    def active(self) -> bool:
        return (
            self.bucket is not None
            or self.clients is not None
            or self.concurrency.max_in_flight is not None
        )

    def admit(
        self, client_ip: str, headers: Mapping[str, str] | None, now: float
    ) -> tuple[Rejection | None, list[tuple[str, str]]]:
        """Decide one request: ``(rejection or None, headers for a successful response)``.

        On admission the concurrency slot is taken; the caller must ``release()`` it. When
        several limiters are in the shared zone, the zone's lock is taken once for all of them.
        """
        if self._lock_once:
            assert self.shared is not None
            with self.shared.guard:
                return self._admit(client_ip, headers, now)
        return self._admit(client_ip, headers, now)

    def _admit(
        self, client_ip: str, headers: Mapping[str, str] | None, now: float
    ) -> tuple[Rejection | None, list[tuple[str, str]]]:
        ok_headers: list[tuple[str, str]] = []
        decision: RateLimitDecision
        if self.bucket is not None:
            decision = self.bucket.decide(now)
            assert self.global_policy is not None
            if not decision.allowed:
                return Rejection(
                    "global",
                    ratelimit_headers(self.global_policy, decision),
                    decision.retry_after_s,
                ), ok_headers
            if self.config.headers_on_success:
                ok_headers = ratelimit_headers(self.global_policy, decision)
        if self.clients is not None:
            key: str = client_ip
            if self.client_header is not None and headers is not None:
                key = headers.get(self.client_header) or client_ip
            decision = self.clients.decide(key, now)
            assert self.client_policy is not None
            if not decision.allowed:
                return Rejection(
                    "client",
                    ratelimit_headers(self.client_policy, decision),
                    decision.retry_after_s,
                ), ok_headers
            if self.config.headers_on_success:
                ok_headers = ratelimit_headers(self.client_policy, decision)
        if not self.concurrency.try_acquire():
            return Rejection("concurrency", [("Retry-After", "1")], 1.0), ok_headers
        return None, ok_headers

    def release(self) -> None:
        self.concurrency.release()
