"""Target groups and routing rules through the real balancer: canary shares, stickiness,
zone spill, fixed answers and header rewrites, and the run-time forward weights."""

from __future__ import annotations

import asyncio
import collections
import json
import time
from collections.abc import Callable
from typing import Any

import httpx

from lbtui import config as config_mod
from lbtui.balancer import operations as ops
from lbtui.config import AdminConfig
from lbtui.config.diff import applied, diff
from lbtui.control.api import AdminServer
from lbtui.control.local import LocalControl
from lbtui.control.model import SetAdmin, Snapshot
from lbtui.core.events import ForwardChanged, ZoneSpill

TOKEN = "groups-token"


def canary_config(bs: list[Any]) -> dict[str, Any]:
    return {
        "groups": [
            {"name": "stable", "backends": [bs[0].name, bs[1].name]},
            {"name": "canary", "backends": [bs[2].name], "algorithm": "least_request"},
        ],
        "routes": [
            {
                "name": "api",
                "path_prefix": "/api/",
                "forward": [{"group": "stable", "weight": 90}, {"group": "canary", "weight": 10}],
            }
        ],
    }


async def hits_by_backend(
    client: Any, url: str, n: int, headers: dict[str, str] | None = None
) -> collections.Counter[str]:
    seen: collections.Counter[str] = collections.Counter()
    for _ in range(n):
        async with client.get(url, headers=headers) as r:
            assert r.status == 200
            seen[r.headers["X-Backend"]] += 1
            await r.read()
    return seen


async def eventually(cond: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met before the deadline")
        await asyncio.sleep(0.02)


async def test_canary_share_over_a_thousand_requests_then_shifted_at_run_time(
    backends, balancer, client
):
    bs = await backends(4)
    lb = await balancer(bs, **canary_config(bs))
    seen = await hits_by_backend(client, lb.url + "/api/x", 1000)
    assert seen[bs[2].name] == 100  # smooth WRR over the groups: exactly 10 %
    assert seen[bs[0].name] + seen[bs[1].name] == 900
    assert bs[3].hits == 0  # in no group the route forwards to
    # unrouted requests go to the default group: every backend
    other = await hits_by_backend(client, lb.url + "/other", 40)
    assert sorted(other.values()) == [10, 10, 10, 10]

    control = LocalControl(lb.proxy)
    server = AdminServer(
        AdminConfig(address="127.0.0.1:0", token=TOKEN), control, keepalive_s=0.2, environ={}
    )
    await server.start()
    try:
        async with httpx.AsyncClient(
            base_url=server.url, headers={"Authorization": f"Bearer {TOKEN}"}, trust_env=False
        ) as http:
            r = await http.post(
                "/api/v1/actions",
                json={"kind": "set_forward", "route": "api", "weights": {"canary": 90}},
            )
            assert r.status_code in (200, 204), r.text
            bad = await http.post(
                "/api/v1/actions",
                json={"kind": "set_forward", "route": "api", "weights": {"nope": 1}},
            )
            assert bad.status_code == 422
            assert "does not forward to it" in bad.text
            missing = await http.post(
                "/api/v1/actions",
                json={"kind": "set_forward", "route": "zzz", "weights": {"canary": 1}},
            )
            assert missing.status_code == 404
            state = Snapshot.from_json((await http.get("/api/v1/state")).content)
    finally:
        await server.stop()
    shifted = await hits_by_backend(client, lb.url + "/api/x", 180)
    assert shifted[bs[2].name] == 90  # canary 90 : stable 90
    events = [e for e in lb.proxy.events.since(0) if isinstance(e, ForwardChanged)]
    assert events
    assert events[-1].weights == "stable=90, canary=90"
    route = next(r for r in state.routes if r.name == "api")
    assert route.forward == {"stable": 90.0, "canary": 90.0}
    groups = {p.name: p for p in state.pools}
    assert groups["canary"].algorithm == "least_request"
    assert groups["canary"].route == "api"
    assert groups["stable"].backends == [bs[0].name, bs[1].name]


async def test_sticky_cookie_keeps_a_client_on_its_backend_until_it_is_drained(
    backends, balancer, client
):
    bs = await backends(3)
    lb = await balancer(
        bs,
        groups=[{"name": "web", "backends": [b.name for b in bs], "sticky": {"cookie": "lb"}}],
        routes=[{"forward": [{"group": "web"}]}],
    )
    async with client.get(lb.url + "/") as r:
        first = r.headers["X-Backend"]
        cookie = r.headers["Set-Cookie"]
        await r.read()
    assert cookie.startswith("lb=")
    assert "HttpOnly" in cookie
    value = cookie.split(";")[0]
    for _ in range(30):
        async with client.get(lb.url + "/", headers={"Cookie": value}) as r:
            assert r.headers["X-Backend"] == first
            assert "Set-Cookie" not in r.headers  # already stuck: nothing to say
            await r.read()
    await LocalControl(lb.proxy).act(SetAdmin(backend=first, state="draining"))
    async with client.get(lb.url + "/", headers={"Cookie": value}) as r:
        moved = r.headers["X-Backend"]
        renewed = r.headers["Set-Cookie"].split(";")[0]
        await r.read()
    assert moved != first
    assert renewed != value
    async with client.get(lb.url + "/", headers={"Cookie": renewed}) as r:
        assert r.headers["X-Backend"] == moved
        await r.read()


async def test_rules_answer_redirects_and_fixed_responses_and_rewrite_headers(
    backends, balancer, client
):
    bs = await backends(2)
    lb = await balancer(
        bs,
        routes=[
            {"path": "/old", "redirect": {"location": "/new", "status": 301}},
            {"path_prefix": "/health", "methods": ["GET"], "respond": {"body": "ok"}},
            {"host": "*.example.com", "backends": [bs[1].name]},
            {"headers": {"X-Beta": "1"}, "query": {"v": "2"}, "backends": [bs[1].name]},
            {
                "path_prefix": "/",
                "backends": [bs[0].name],
                "request_headers": {
                    "set": {"X-Real-IP": "$remote_addr", "X-Forwarded-Server": "$host"},
                    "remove": ["X-Drop-Me"],
                },
                "response_headers": {"add": {"X-Route": "main"}},
            },
        ],
    )
    async with client.get(lb.url + "/old", allow_redirects=False) as r:
        assert r.status == 301
        assert r.headers["Location"] == "/new"
    async with client.get(lb.url + "/health") as r:
        assert r.status == 200
        assert await r.text() == "ok"
    assert bs[0].hits == bs[1].hits == 0  # answered by the balancer itself
    async with client.get(lb.url + "/x", headers={"Host": "shop.example.com"}) as r:
        assert r.headers["X-Backend"] == bs[1].name
    async with client.get(lb.url + "/x?v=2", headers={"X-Beta": "1"}) as r:
        assert r.headers["X-Backend"] == bs[1].name
    async with client.get(lb.url + "/x?v=3", headers={"X-Beta": "1", "X-Drop-Me": "1"}) as r:
        assert r.headers["X-Backend"] == bs[0].name
        assert r.headers["X-Route"] == "main"
        info = json.loads(await r.read())
    sent = {k.lower(): v for k, v in info["headers"]}
    assert sent["x-real-ip"] == "127.0.0.1"
    assert sent["x-forwarded-server"] == "127.0.0.1"
    assert "x-drop-me" not in sent
    assert sent["x-forwarded-for"] == "127.0.0.1"  # the usual rewriting still happened


async def test_a_route_sets_and_removes_the_backends_response_headers(backends, balancer, client):
    """nginx's ``proxy_hide_header`` and a replacing ``add_header``: the client sees the
    route's value in place of the backend's, and none of a removed header."""
    bs = await backends(1)
    lb = await balancer(
        bs,
        routes=[
            {
                "path_prefix": "/",
                "backends": [bs[0].name],
                "response_headers": {
                    "set": {"X-Backend": "hidden"},
                    "remove": ["Set-Cookie"],
                    "add": {"X-Route": "main"},
                },
            }
        ],
        retries={"attempts": 0, "retry_on_status": []},
    )
    for path in ("/cookies", "/big?size=1000"):  # a whole answer and a streamed one
        async with client.get(lb.url + path) as r:
            assert r.status == 200
            assert r.headers.getall("X-Backend") == ["hidden"]
            assert "Set-Cookie" not in r.headers
            assert r.headers["X-Route"] == "main"
            await r.read()


async def test_zone_spill_when_the_local_zone_dies_costs_no_client_error(
    backends, balancer, client
):
    bs = await backends(4)
    zones = ["a", "a", "b", "b"]
    lb = await balancer(
        bs,
        balancer={"zone": "a"},
        backends=[
            {"name": b.name, "url": b.url, "zone": z} for b, z in zip(bs, zones, strict=True)
        ],
        groups=[{"name": "g", "backends": [b.name for b in bs], "cross_zone": False}],
        routes=[{"forward": [{"group": "g"}]}],
        retries={"attempts": 2},
    )
    before = await hits_by_backend(client, lb.url + "/", 40)
    assert set(before) == {bs[0].name, bs[1].name}  # the local zone only
    t0 = time.monotonic()
    t0_wall = time.time()
    await bs[0].stop()
    await bs[1].stop()
    statuses: collections.Counter[int] = collections.Counter()
    served: collections.Counter[str] = collections.Counter()
    for _ in range(200):
        async with client.get(lb.url + "/") as r:
            statuses[r.status] += 1
            served[r.headers.get("X-Backend", "-")] += 1
            await r.read()
    assert statuses == {200: 200}  # idempotent GETs: retried into the other zone
    assert set(served) <= {bs[2].name, bs[3].name}
    await eventually(lambda: any(isinstance(e, ZoneSpill) for e in lb.proxy.events.since(0)))
    spill = next(e for e in lb.proxy.events.since(0) if isinstance(e, ZoneSpill))
    assert spill.spilling
    assert spill.group == "g"
    assert spill.zone == "a"
    assert time.monotonic() - t0 < 30
    spill_s = spill.wall - t0_wall
    print(
        f"\nzone spill: 200 GETs after the zone died, 0 errors; spill event {spill_s:.2f} s after"
    )
    pool = lb.proxy.state.groups["g"]
    assert pool.spilling


async def test_admin_add_backend_joins_a_group_with_its_zone_and_cap(backends, balancer, client):
    bs = await backends(3)
    lb = await balancer(
        bs[:2],
        groups=[{"name": "api", "backends": [bs[0].name]}],
        routes=[{"path_prefix": "/api/", "forward": [{"group": "api"}]}],
    )
    control = LocalControl(lb.proxy)
    server = AdminServer(
        AdminConfig(address="127.0.0.1:0", token=TOKEN), control, keepalive_s=0.2, environ={}
    )
    await server.start()
    try:
        async with httpx.AsyncClient(
            base_url=server.url, headers={"Authorization": f"Bearer {TOKEN}"}, trust_env=False
        ) as http:
            body = {"name": "new", "url": bs[2].url, "group": "api", "zone": "z9", "max_rps": 500}
            r = await http.post("/api/v1/backends", json=body)
            assert r.status_code == 201, r.text
            unknown = await http.post(
                "/api/v1/backends", json={"name": "x", "url": bs[2].url, "group": "nope"}
            )
            assert unknown.status_code == 404
            assert "no group named 'nope'" in unknown.text
            view = Snapshot.from_json((await http.get("/api/v1/state")).content)
    finally:
        await server.stop()
    added = view.backend("new")
    assert added.zone == "z9"
    assert added.max_rps == 500
    groups = {p.name: p for p in view.pools}
    assert groups["api"].backends == [bs[0].name, "new"]
    assert "new" in groups["default"].backends  # the default group is every backend
    seen = await hits_by_backend(client, lb.url + "/api/x", 20)
    assert seen == {bs[0].name: 10, bs[2].name: 10}


async def test_forward_weights_follow_the_file_on_a_reload(backends, balancer, client):
    bs = await backends(2)
    groups = [
        {"name": "blue", "backends": [bs[0].name]},
        {"name": "green", "backends": [bs[1].name]},
    ]

    def routes(blue: float, green: float) -> list[dict[str, Any]]:
        fwd = [{"group": "blue", "weight": blue}, {"group": "green", "weight": green}]
        return [{"name": "web", "forward": fwd}]

    lb = await balancer(bs, groups=groups, routes=routes(100, 0))
    assert await hits_by_backend(client, lb.url + "/", 10) == {bs[0].name: 10}
    old = lb.proxy.config
    new = config_mod.from_dict(
        {**old.model_dump(exclude_none=True), "routes": routes(0, 100)}, "test"
    )
    lb.proxy.act(ops.Reload(new, tuple(applied(diff(old, new)))))
    assert await hits_by_backend(client, lb.url + "/", 10) == {bs[1].name: 10}
    assert lb.proxy.state.routes[0].weights() == {"blue": 0.0, "green": 100.0}


async def test_a_groups_own_health_checks_take_its_failing_backend_out(backends, balancer, client):
    bs = await backends(3)
    lb = await balancer(
        bs,
        groups=[
            {
                "name": "checked",
                "backends": [bs[0].name, bs[1].name],
                "health": {"enabled": True, "interval_ms": 50, "fall": 1, "rise": 1},
            }
        ],
        routes=[{"forward": [{"group": "checked"}]}],
    )
    state = lb.proxy.state
    assert state.backends[bs[2].name].health is None  # [health] is off: not checked
    bs[0].status = 503
    await eventually(lambda: not state.backends[bs[0].name].healthy())
    seen = await hits_by_backend(client, lb.url + "/", 10)
    assert seen == {bs[1].name: 10}
    bs[0].status = 200
    await eventually(lambda: state.backends[bs[0].name].healthy())


async def test_a_zone_below_the_panic_share_spills_with_its_reason(backends, balancer, client):
    bs = await backends(8)
    zones = ["a"] * 4 + ["b"] * 4
    lb = await balancer(
        bs,
        balancer={"zone": "a"},
        ejection={"panic_percent": 50},
        backends=[
            {"name": b.name, "url": b.url, "zone": z} for b, z in zip(bs, zones, strict=True)
        ],
        groups=[
            {
                "name": "g",
                "backends": [b.name for b in bs],
                "cross_zone": False,
                "health": {"enabled": True, "interval_ms": 50, "fall": 1, "rise": 1},
            }
        ],
        routes=[{"forward": [{"group": "g"}]}],
    )
    assert set(await hits_by_backend(client, lb.url + "/", 8)) == {b.name for b in bs[:4]}
    for b in bs[:3]:
        b.status = 503  # fails its checks: 1 of the zone's 4 left, under 50 %
    state = lb.proxy.state
    await eventually(lambda: state.groups["g"].zone_degraded)
    seen = await hits_by_backend(client, lb.url + "/", 10)
    assert set(seen) == {b.name for b in bs[3:]}  # the last local one and zone b
    spill = next(e for e in lb.proxy.events.since(0) if isinstance(e, ZoneSpill))
    assert "below the panic threshold" in spill.message
