"""Routes as the data plane runs them: a compiled rule, and its action.

A :class:`Route` is one ``[[routes]]`` entry ready for the request path: its match conditions
compiled into a :class:`lbtui.core.routing.Rule` (the :class:`~lbtui.core.routing.Router`
finds the first that matches), and what it does — forward to groups by weight
(:class:`~lbtui.core.routing.Shares`, changed at run time by ``set_forward``), answer a
redirect or a fixed response — plus its header changes. Built once from the config by
:func:`build_routes`; the state keeps them.

Request header changes (nginx's ``proxy_set_header``) are applied to the header block the
listener rendered, only on routes that ask for them: the usual route pays nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from lbtui.balancer.connections import HeadBlock
from lbtui.balancer.exchange import Answer, ClientRequest
from lbtui.balancer.fallback import Fallback
from lbtui.balancer.pool import Backend, Pool
from lbtui.config import GroupConfig, HeaderRewrite, RouteConfig
from lbtui.core.routing import Router, Rule, Shares

if TYPE_CHECKING:
    from lbtui.balancer.job import Job


class Rewrite:
    """Header changes: removed names, set pairs (replacing), added pairs; values may name
    ``$remote_addr`` and ``$host``."""

    __slots__ = ("add", "drop", "set")

    def __init__(self, config: HeaderRewrite) -> None:
        self.set: list[tuple[str, str]] = list(config.set.items())
        self.add: list[tuple[str, str]] = list(config.add.items())
        self.drop = frozenset(n.lower() for n in [*config.remove, *config.set])

    def apply(self, pairs: list[tuple[str, str]], client: ClientRequest) -> list[tuple[str, str]]:
        drop = self.drop
        out = [(k, v) for k, v in pairs if k.lower() not in drop]
        for k, v in self.set:
            out.append((k, _expand(v, client)))
        for k, v in self.add:
            out.append((k, _expand(v, client)))
        return out

    def request(
        self, headers: HeadBlock | list[tuple[str, str]], client: ClientRequest
    ) -> HeadBlock | list[tuple[str, str]]:
        """The request headers for the backend, changed (a header block stays a block)."""
        if type(headers) is not HeadBlock:
            return self.apply(list(headers), client)  # type: ignore[arg-type]
        pairs = self.apply(headers.items(), client)
        block = b"".join(
            k.encode("latin-1") + b": " + v.encode("utf-8", "surrogateescape") + b"\r\n"
            for k, v in pairs
        )
        names = {k.lower() for k, _ in pairs}
        return HeadBlock(block, "host" in names, "content-length" in names)


def _expand(value: str, client: ClientRequest) -> str:
    if "$" not in value:
        return value
    host = client.host
    return value.replace("$remote_addr", client.remote).replace(
        "$host", host.rsplit(":", 1)[0] if host and not host.endswith("]") else host
    )


class Route:
    """One routing rule and its action."""

    __slots__ = (
        "fallback",
        "fixed",
        "forward",
        "label",
        "match",
        "name",
        "request_rewrite",
        "response_add",
        "response_drop",
        "shares",
        "single",
    )

    def __init__(
        self,
        name: str,
        match: str,
        forward: list[tuple[Pool, float]],
        fallback: Fallback | None,
        *,
        fixed: Answer | None = None,
        request_rewrite: Rewrite | None = None,
        response_add: list[tuple[str, str]] | None = None,
        response_drop: frozenset[str] | None = None,
    ) -> None:
        self.name = name
        self.label = name
        self.match = match
        """What it matches, for people (``*.example.com/api/ GET``)."""
        self.forward = forward
        """The groups it forwards to, with their weights (empty for a fixed answer)."""
        self.shares = Shares([w for _, w in forward] or [0.0])
        self.single: Pool | None = forward[0][0] if len(forward) == 1 else None
        self.fallback = fallback
        self.fixed = fixed
        """A redirect or fixed response: answered without any backend."""
        self.request_rewrite = request_rewrite
        self.response_add = response_add
        """Headers appended to the client's response (``set`` and ``add``)."""
        self.response_drop = response_drop
        """Lower-case names of the backend's response headers not passed on (``remove`` and
        ``set``)."""

    def rewrite(
        self, job: Job, headers: HeadBlock | list[tuple[str, str]], client: ClientRequest
    ) -> HeadBlock | list[tuple[str, str]]:
        """This route's header changes on ``job``: the response's kept on it, the request's
        ``headers`` for the backend returned."""
        if self.response_add is not None:
            job.extra_headers = [*(job.extra_headers or ()), *self.response_add]
        job.drop_headers = self.response_drop
        if self.request_rewrite is not None:
            return self.request_rewrite.request(headers, client)
        return headers

    def pool(self) -> Pool | None:
        """The group the next request goes to (None: every forward weight is 0)."""
        single = self.single
        if single is not None and self.shares.total > 0:
            return single
        i = self.shares.next()
        return self.forward[i][0] if i >= 0 else None

    def set_weights(self, weights: Mapping[str, float]) -> None:
        """New forward weights by group name (groups left out keep theirs)."""
        unknown = set(weights) - {p.name for p, _ in self.forward}
        if unknown:
            raise KeyError(
                f"route {self.name!r} does not forward to {', '.join(sorted(unknown))} "
                f"(it forwards to {', '.join(p.name for p, _ in self.forward) or 'nothing'})"
            )
        self.forward = [(p, float(weights.get(p.name, w))) for p, w in self.forward]
        self.shares.set_weights([w for _, w in self.forward])

    def weights(self) -> dict[str, float]:
        return {p.name: w for p, w in self.forward}


def group_pool(g: GroupConfig, members: list[Backend], algorithm: str, zone: str | None) -> Pool:
    """The pool of target group ``g`` (``algorithm``: the balancer's, for a group without its
    own; ``zone``: the balancer's)."""
    pool = Pool(members, g.algorithm or algorithm, name=g.name)
    shape(pool, g, algorithm, zone)
    return pool


def shape(pool: Pool, g: GroupConfig, algorithm: str, zone: str | None) -> None:
    """Give ``pool`` group ``g``'s name, algorithm, stickiness and zone."""
    sticky = g.sticky
    pool.name = g.name
    pool.own_algorithm = g.algorithm is not None
    if (g.algorithm or algorithm) != pool.algorithm:
        pool.set_algorithm(g.algorithm or algorithm)
    pool.sticky_cookie = sticky.cookie if sticky is not None else None
    pool.sticky_ttl_s = sticky.ttl_s if sticky is not None else 0.0
    pool.zone = None if g.cross_zone else zone
    pool.reindex()


def describe(rc: RouteConfig) -> str:
    """What a route matches, in one line for people."""
    where = (rc.host or "*") + (rc.path if rc.path is not None else rc.path_prefix + "*")
    parts = [where]
    if rc.methods:
        parts.append("|".join(rc.methods))
    parts += [f"{k}: {v}" for k, v in rc.headers.items()]
    parts += [f"?{k}={v}" for k, v in rc.query.items()]
    return " ".join(parts)


def fixed_answer(rc: RouteConfig) -> Answer | None:
    """A redirect's or fixed response's answer (the same bytes for every request)."""
    if rc.redirect is not None:
        r = rc.redirect
        body = f'{{"redirect": "{r.location}"}}'.encode()
        headers = [("Location", r.location), ("Content-Type", "application/json")]
        return Answer(r.status, None, headers, body)
    if rc.respond is not None:
        f = rc.respond
        return Answer(f.status, None, [("Content-Type", f.content_type)], f.body.encode())
    return None


def order(routes: list[RouteConfig]) -> list[int]:
    """The evaluation order: routes with a priority first, lowest first; then the others in
    file order (a stable sort)."""
    return sorted(
        range(len(routes)),
        key=lambda i: (0, routes[i].priority) if routes[i].priority is not None else (1, i),
    )


def build_routes(
    configs: list[RouteConfig],
    groups: Mapping[str, Pool],
    implicit: Callable[[int, RouteConfig], Pool],
    fallback: Callable[[RouteConfig], Fallback | None],
) -> tuple[list[Route], Router | None]:
    """The routes in evaluation order and their router (None when there are none).
    ``implicit(i, config)``: the unnamed group of a route's ``backends``."""
    routes: list[Route] = []
    rules: list[Rule] = []
    for i in order(configs):
        rc = configs[i]
        name = rc.name or f"routes[{i}]"
        if rc.backends is not None:
            forward = [(implicit(i, rc), 1.0)]
        elif rc.forward is not None:
            forward = [(groups[f.group], f.weight) for f in rc.forward]
        else:
            forward = []
        route = Route(
            name,
            describe(rc),
            forward,
            fallback(rc),
            fixed=fixed_answer(rc),
            request_rewrite=Rewrite(rc.request_headers) if rc.request_headers else None,
            response_add=response_add(rc),
            response_drop=response_drop(rc),
        )
        routes.append(route)
        rules.append(
            Rule(
                route,
                prefix=rc.path_prefix,
                exact=rc.path,
                host=rc.host,
                methods=rc.methods,
                headers=rc.headers,
                query=rc.query,
                listeners=rc.listeners,
            )
        )
    return routes, (Router(rules) if rules else None)


def response_add(rc: RouteConfig) -> list[tuple[str, str]] | None:
    """The headers a route appends to its responses: those it sets, then those it adds."""
    h = rc.response_headers
    if h is None or not (h.set or h.add):
        return None
    return [*h.set.items(), *h.add.items()]


def response_drop(rc: RouteConfig) -> frozenset[str] | None:
    """The backend response headers a route does not pass on: removed, and replaced by ``set``."""
    h = rc.response_headers
    if h is None or not (h.remove or h.set):
        return None
    return frozenset(n.lower() for n in (*h.remove, *h.set))
