"""Routing rules compiled once: which rule a request matches, and which group it goes to.

ELB's listener rules and nginx's ``location`` blocks: a rule matches on path prefix or exact
path, host (``*.example.com`` wildcards, nginx's ``server_name``), methods, headers and query
parameters; the first rule that matches wins, the rules being in their evaluation order
already (``priority`` sorted by the caller). Everything a rule checks is prepared when it is
built (lower-cased host, suffix for wildcards, method set), so a request pays string
comparisons only; headers and query parameters, the costly checks, are read only for rules
that name them and only once the cheap checks passed.

:class:`Router` narrows the rules before checking them: they are bucketed by the first
character after ``/`` of their path (a rule whose prefix is ``/`` alone goes into every
bucket), so with 50 rules a request checks the few whose path could match, not all 50
(``bench/routing.py`` measures it). :class:`Shares` picks among a rule's forward targets by
nginx's smooth weighted round robin: weights 90 and 10 send exactly 9 of every 10 requests
to the first, interleaved rather than in runs.

Pure: no I/O, no clock; the balancer adapts a request to :class:`RequestFacts`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Final, Protocol
from urllib.parse import parse_qsl

ANY_VALUE: Final = "*"
"""A header or query value that matches any value, as long as the name is present."""


class RequestFacts(Protocol):
    """What the slower checks read of a request (header and query matching)."""

    @property
    def headers(self) -> Mapping[str, str]: ...

    @property
    def raw_path(self) -> str: ...

    @property
    def listener(self) -> str: ...


def host_of(host_header: str) -> str:
    """The host a rule compares: the ``Host`` value without its port, lower-cased."""
    if host_header.startswith("["):  # IPv6 literal
        return host_header.partition("]")[0].lower() + "]"
    return host_header.rsplit(":", 1)[0].lower() if ":" in host_header else host_header.lower()


class Rule:
    """One rule's match conditions, prepared for the request path; ``target`` is the caller's
    (what a match leads to)."""

    __slots__ = (
        "exact",
        "first",
        "headers",
        "host_exact",
        "host_suffix",
        "listeners",
        "methods",
        "prefix",
        "query",
        "slow",
        "target",
    )

    def __init__(
        self,
        target: object,
        *,
        prefix: str = "/",
        exact: str | None = None,
        host: str | None = None,
        methods: Sequence[str] = (),
        headers: Mapping[str, str] | None = None,
        query: Mapping[str, str] | None = None,
        listeners: Sequence[str] | None = None,
    ) -> None:
        self.target = target
        self.prefix = prefix
        self.exact = exact
        path = exact if exact is not None else prefix
        self.first = path[1:2]
        """The bucket: the path's first character after ``/`` ('' = every bucket)."""
        h = host.lower() if host else None
        self.host_exact: str | None = None
        self.host_suffix: str | None = None
        if h is not None and h.startswith("*."):
            self.host_suffix = h[1:]
        else:
            self.host_exact = h
        self.methods: frozenset[str] | None = (
            frozenset(m.upper() for m in methods) if methods else None
        )
        self.headers: list[tuple[str, str]] = list((headers or {}).items())
        self.query: list[tuple[str, str]] = list((query or {}).items())
        self.listeners: frozenset[str] | None = (
            frozenset(listeners) if listeners is not None else None
        )
        """The listeners the rule applies to (None: all)."""
        self.slow = bool(self.headers or self.query or self.listeners is not None)

    def matches(self, host: str, path: str, method: str, request: RequestFacts | None) -> bool:
        """Whether the request matches; ``host`` as :func:`host_of` gives it."""
        exact = self.exact
        if exact is not None:
            if path != exact:
                return False
        elif not path.startswith(self.prefix):
            return False
        host_exact = self.host_exact
        if host_exact is not None and host != host_exact:
            return False
        suffix = self.host_suffix
        if suffix is not None and (not host.endswith(suffix) or len(host) == len(suffix)):
            return False
        methods = self.methods
        if methods is not None and method not in methods:
            return False
        if self.slow:
            return request is not None and self.matches_request(request)
        return True

    def matches_request(self, request: RequestFacts) -> bool:
        """The listener, header and query conditions."""
        listeners = self.listeners
        if listeners is not None and request.listener not in listeners:
            return False
        if self.headers:
            got = request.headers
            for name, want in self.headers:
                value = got.get(name)
                if value is None or (want != ANY_VALUE and value != want):
                    return False
        if self.query:
            _, sep, qs = request.raw_path.partition("?")
            params: dict[str, str] = {}
            if sep:
                for k, v in parse_qsl(qs.partition("#")[0], keep_blank_values=True):
                    params.setdefault(k, v)
            for name, want in self.query:
                value = params.get(name)
                if value is None or (want != ANY_VALUE and value != want):
                    return False
        return True


class Router:
    """Rules in evaluation order, bucketed by their path's first character."""

    __slots__ = ("any_bucket", "buckets", "hosts", "rules")

    def __init__(self, rules: Sequence[Rule]) -> None:
        self.rules = list(rules)
        firsts = {r.first for r in self.rules if r.first}
        self.buckets: dict[str, list[Rule]] = {
            c: [r for r in self.rules if r.first in ("", c)] for c in firsts
        }
        self.any_bucket: list[Rule] = [r for r in self.rules if not r.first]
        """The rules for a path whose first character no rule names (and for ``/``)."""
        self.hosts = any(r.host_exact is not None or r.host_suffix is not None for r in self.rules)
        """Whether some rule reads the host (else it is not even normalised)."""

    def match(
        self, host_header: str, path: str, method: str, request: RequestFacts | None = None
    ) -> Rule | None:
        """The first rule the request matches, or None."""
        bucket = self.buckets.get(path[1:2], self.any_bucket)
        if not bucket:
            return None
        host = host_of(host_header) if self.hosts and host_header else ""
        for rule in bucket:
            if rule.matches(host, path, method, request):
                return rule
        return None


class Shares:
    """Smooth weighted round robin over a few targets (nginx): the next target's index."""

    __slots__ = ("current", "total", "weights")

    def __init__(self, weights: Sequence[float]) -> None:
        self.weights: list[float] = []
        self.current: list[float] = []
        self.total = 0.0
        self.set_weights(weights)

    def set_weights(self, weights: Sequence[float]) -> None:
        """New weights (the rotation starts over)."""
        if any(w < 0 for w in weights):
            raise ValueError(f"weights must not be negative, got {list(weights)}")
        self.weights = [float(w) for w in weights]
        self.current = [0.0] * len(self.weights)
        self.total = sum(self.weights)

    def next(self) -> int:
        """The index of the next target; -1 when every weight is 0 (nothing to send to)."""
        weights = self.weights
        if len(weights) == 1:
            return 0 if self.total > 0 else -1
        if self.total <= 0:
            return -1
        current = self.current
        best = 0
        best_value = -1.0
        for i in range(len(weights)):
            w = weights[i]
            if w <= 0:
                continue
            c = current[i] + w
            current[i] = c
            if c > best_value:
                best_value = c
                best = i
        current[best] -= self.total
        return best
