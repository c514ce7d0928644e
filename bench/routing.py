"""Cost of the routing decision: one route against 50 routes over 20 groups.

Run: ``.venv/bin/python bench/routing.py``. Each case builds the balancer's real ``State``
from a config and times what the pipeline does to route one request: ``State.route`` (the
:class:`~lbtui.core.routing.Router` over the compiled rules) and ``Route.pool`` (the forward
weights' smooth round robin). The request is a small object with the attributes the pipeline
reads. Figures are the best of 7 runs, in process CPU time, per decision; the last column is
the cost over the one-route case. The goal (issue 15): at most 2 µs more with 50 routes and
20 groups. Whether ``lbtui.core.routing`` and ``lbtui.balancer.routing`` run compiled is
printed: the default build compiles them with the rest of the request path.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from lbtui import config as config_mod
from lbtui.balancer.state import State

REPEAT = 7
N = 20_000
BUDGET_US = 2.0


@dataclass
class Req:
    """What routing reads of a client request."""

    host: str
    path: str
    method: str = "GET"
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def raw_path(self) -> str:
        return self.path


def backends(n: int) -> list[dict[str, Any]]:
    return [{"name": f"b{i}", "url": f"http://127.0.0.1:{20000 + i}"} for i in range(n)]


def one_route() -> dict[str, Any]:
    return {"backends": backends(4), "routes": [{"path_prefix": "/", "backends": ["b0", "b1"]}]}


def fifty_routes(hosts: bool) -> dict[str, Any]:
    """50 routes over 20 groups of 2 backends: API-like prefixes, some with hosts, methods,
    a header rule and canary splits, as a real front would have."""
    groups = [{"name": f"g{i}", "backends": [f"b{2 * i}", f"b{2 * i + 1}"]} for i in range(20)]
    routes: list[dict[str, Any]] = []
    words = ["api", "users", "orders", "cart", "search", "static", "img", "auth", "admin", "v2"]
    for i in range(49):
        route: dict[str, Any] = {
            "path_prefix": f"/{words[i % 10]}/{i}/",
            "forward": [
                {"group": f"g{i % 20}", "weight": 90},
                {"group": f"g{(i + 1) % 20}", "weight": 10},
            ],
        }
        if hosts and i % 3 == 0:
            route["host"] = f"*.svc{i}.example.com"
        if i % 7 == 0:
            route["methods"] = ["GET", "HEAD"]
        if i % 11 == 0:
            route["headers"] = {"X-Canary": "1"}
        routes.append(route)
    routes.append({"path_prefix": "/", "forward": [{"group": "g0"}]})
    return {"backends": backends(40), "groups": groups, "routes": routes}


def per_decision_us(cfg: dict[str, Any], req: Req) -> float:
    state = State(config_mod.from_dict(cfg, "bench"))
    route_of = state.route
    reqs = [req] * N
    best = float("inf")
    for _ in range(REPEAT):
        t0 = time.process_time()
        for r in reqs:
            route = route_of(r)  # type: ignore[arg-type]
            if route is not None:
                route.pool()
        best = min(best, time.process_time() - t0)
    return best / N * 1e6


def compiled(module: str) -> bool:
    import importlib

    return not (importlib.import_module(module).__file__ or "").endswith(".py")


def main() -> None:
    print(
        f"lbtui.core.routing compiled: {compiled('lbtui.core.routing')}; "
        f"lbtui.balancer.routing compiled: {compiled('lbtui.balancer.routing')}"
    )
    base = per_decision_us(one_route(), Req("example.com", "/users/1"))
    cases = [
        ("1 route, 1 group", one_route(), Req("example.com", "/users/1")),
        (
            "50 routes, 20 groups: first rule of its bucket",
            fifty_routes(False),
            Req("a", "/api/0/x"),
        ),
        (
            "50 routes, 20 groups: last rule of its bucket",
            fifty_routes(False),
            Req("a", "/v2/49/x"),
        ),
        (
            "50 routes, 20 groups: no prefix matches (catch-all)",
            fifty_routes(False),
            Req("a", "/zzz"),
        ),
        (
            "50 routes with hosts, methods, headers: busiest bucket",
            fifty_routes(True),
            Req("x.svc48.example.com", "/admin/48/x"),
        ),
    ]
    print()
    print("| case | µs per decision | over 1 route |")
    print("|---|---:|---:|")
    worst = 0.0
    for name, cfg, req in cases:
        us = per_decision_us(cfg, req) if name != cases[0][0] else base
        worst = max(worst, us - base)
        print(f"| {name} | {us:.2f} | {us - base:+.2f} |")
    verdict = "within" if worst <= BUDGET_US else "OVER"
    print(f"\nworst extra cost {worst:.2f} µs: {verdict} the {BUDGET_US:g} µs budget")


if __name__ == "__main__":
    main()
