"""The admin API over real HTTP: every endpoint with good, bad (422), unknown (404) and
unauthorized (401) input; the SSE stream and its resume; the refusal to expose the API."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest

from lbtui.config import AdminConfig
from lbtui.control.api import AdminServer
from lbtui.control.local import LocalControl
from lbtui.errors import ConfigError
from lbtui.fleet.supervisor import BackendSpec, Fleet

TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


class Admin:
    """A balancer on real backends with its admin API, and an httpx client for it."""

    def __init__(self, lb: Any, server: AdminServer, http: httpx.AsyncClient) -> None:
        self.lb = lb
        self.server = server
        self.http = http

    @property
    def proxy(self) -> Any:
        return self.lb.proxy

    async def state(self) -> dict[str, Any]:
        r = await self.http.get("/api/v1/state", headers=AUTH)
        assert r.status_code == 200, r.text
        return dict(r.json())

    async def backend(self, name: str) -> dict[str, Any]:
        for b in (await self.state())["backends"]:
            if b["name"] == name:
                return dict(b)
        raise KeyError(name)


@pytest.fixture
async def admin(backends, balancer) -> AsyncIterator[Callable[..., Awaitable[Admin]]]:
    servers: list[AdminServer] = []
    clients: list[httpx.AsyncClient] = []

    async def make(
        n: int = 2, *, fleet: Fleet | None = None, admin_config: dict[str, Any] | None = None
    ) -> Admin:
        bs = await backends(n)
        lb = await balancer(bs)
        control = LocalControl(lb.proxy, fleet=fleet)
        cfg = AdminConfig(address="127.0.0.1:0", token=TOKEN, **(admin_config or {}))
        server = AdminServer(cfg, control, keepalive_s=0.2, environ={})
        await server.start()
        servers.append(server)
        http = httpx.AsyncClient(base_url=server.url, timeout=5.0, trust_env=False)
        clients.append(http)
        return Admin(lb, server, http)

    yield make
    for c in clients:
        await c.aclose()
    for s in servers:
        await s.stop()


async def eventually(cond: Callable[[], Awaitable[bool]], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not await cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met before the deadline")
        await asyncio.sleep(0.01)


def error_of(r: httpx.Response) -> dict[str, Any]:
    body = r.json()
    assert set(body) == {"error"}, body
    return dict(body["error"])


# --- every action endpoint: good, bad, unknown backend, no token --------------------------------

ENDPOINTS: list[tuple[str, str, dict[str, Any] | None, dict[str, Any] | None, str | None]] = [
    # method, path ({b} = a backend), good body, bad body, the field the 422 names
    ("POST", "/api/v1/backends/{b}/weight", {"weight": 3}, {"weight": -1}, "weight"),
    ("POST", "/api/v1/backends/{b}/drain", None, {"bogus": 1}, "bogus"),
    ("POST", "/api/v1/backends/{b}/disable", None, {"bogus": 1}, "bogus"),
    ("POST", "/api/v1/backends/{b}/enable", None, {"bogus": 1}, "bogus"),
    ("POST", "/api/v1/backends/{b}/breaker", {"mode": "open"}, {"mode": "ajar"}, "mode"),
    ("PUT", "/api/v1/backends/{b}/fault", {"kind": "delay", "ms": 5}, {"kind": "delay"}, "ms"),
    ("DELETE", "/api/v1/backends/{b}/fault", None, {"bogus": 1}, "bogus"),
    ("DELETE", "/api/v1/backends/{b}", None, {"bogus": 1}, "bogus"),
]


@pytest.mark.parametrize(("method", "path", "good", "bad", "field"), ENDPOINTS)
async def test_backend_action_endpoint(admin, method, path, good, bad, field):
    a = await admin(2)
    name = a.proxy.backends and next(iter(a.proxy.backends))
    url = path.format(b=name)

    r = await a.http.request(method, url, json=good)
    assert r.status_code == 401
    assert r.headers["WWW-Authenticate"].startswith("Bearer")
    assert error_of(r)["type"] == "Unauthorized"
    r = await a.http.request(method, url, json=good, headers={"Authorization": "Bearer wrong"})
    assert r.status_code == 401

    r = await a.http.request(method, path.format(b="nope"), json=good, headers=AUTH)
    assert r.status_code == 404, r.text
    assert "nope" in error_of(r)["message"]

    before = a.proxy.events.last_id
    r = await a.http.request(method, url, json=bad, headers=AUTH)
    assert r.status_code == 422, r.text
    err = error_of(r)
    assert err["field"] == field
    assert field in err["message"]
    assert a.proxy.events.last_id == before  # nothing was applied

    r = await a.http.request(method, url, json=good, headers=AUTH)
    assert r.status_code == 200, r.text
    assert r.json()["ok"] is True
    assert a.proxy.events.last_id > before  # every action is an event
    assert r.json()["last_event_id"] == a.proxy.events.last_id


async def test_actions_take_effect(admin):
    a = await admin(2)
    b1, b2 = list(a.proxy.backends)
    h = a.http

    assert (
        await h.post(f"/api/v1/backends/{b1}/weight", json={"weight": 4}, headers=AUTH)
    ).is_success
    assert (await a.backend(b1))["weight_configured"] == 4

    assert (await h.post(f"/api/v1/backends/{b2}/drain", headers=AUTH)).is_success
    assert (await a.backend(b2))["admin"] == "draining"
    assert (await h.post(f"/api/v1/backends/{b2}/disable", headers=AUTH)).is_success
    assert (await a.backend(b2))["admin"] == "disabled"
    assert (await a.backend(b2))["weight_effective"] == 0
    assert (await h.post(f"/api/v1/backends/{b2}/enable", headers=AUTH)).is_success
    assert (await a.backend(b2))["admin"] == "active"

    r = await h.post(f"/api/v1/backends/{b1}/breaker", json={"mode": "open"}, headers=AUTH)
    assert r.is_success
    breaker = (await a.backend(b1))["breaker"]
    assert breaker["state"] == "forced_open"
    assert breaker["reason"] == "forced by operator"
    await h.post(f"/api/v1/backends/{b1}/breaker", json={"mode": "auto"}, headers=AUTH)
    assert (await a.backend(b1))["breaker"]["state"] == "closed"

    fault = {"kind": "abort", "status": 502, "percent": 50, "duration_s": 60}
    assert (await h.put(f"/api/v1/backends/{b1}/fault", json=fault, headers=AUTH)).is_success
    view = (await a.backend(b1))["fault"]
    assert view["active"] is True
    assert view["spec"]["kind"] == "abort"
    assert view["spec"]["status"] == 502
    assert view["description"] == "abort 502 on 50% for 60 s"
    assert 0 < view["remaining_s"] <= 60
    assert (await h.delete(f"/api/v1/backends/{b1}/fault", headers=AUTH)).is_success
    view = (await a.backend(b1))["fault"]
    assert view["active"] is False
    assert view["ended"] == "cleared"

    assert (await h.delete(f"/api/v1/backends/{b2}", headers=AUTH)).is_success
    assert [b["name"] for b in (await a.state())["backends"]] == [b1]

    messages = [e.message for e in a.proxy.events.since(0)]
    assert "weight 1 → 4" in messages
    assert "fault injected: abort 502 on 50% for 60 s" in messages
    assert any(
        m.startswith("fault cleared: abort 502 on 50% for 60 s; applied 0 of 0") for m in messages
    )
    assert "backend removed" in messages


async def test_add_backend(admin):
    a = await admin(1)
    h = a.http
    url = next(iter(a.proxy.backends.values())).url
    body = {"name": "extra", "url": url, "weight": 2}
    assert (await h.post("/api/v1/backends", json=body)).status_code == 401
    r = await h.post("/api/v1/backends", json=body, headers=AUTH)
    assert r.status_code == 201, r.text
    view = await a.backend("extra")
    assert view["url"] == url
    assert view["weight_configured"] == 2
    r = await h.post("/api/v1/backends", json=body, headers=AUTH)
    assert r.status_code == 409
    assert error_of(r)["field"] == "name"
    for bad, field in [
        ({"name": "x", "url": "ftp://nowhere"}, "url"),
        ({"name": "bad name!", "url": url}, "name"),
        ({"name": "y", "url": url, "weight": 5000}, "weight"),
        ({"url": url}, "name"),
        ({"name": "z", "url": url, "colour": "red"}, "colour"),
    ]:
        r = await h.post("/api/v1/backends", json=bad, headers=AUTH)
        assert r.status_code == 422, (bad, r.text)
        assert error_of(r)["field"] == field, (bad, r.text)
    r = await h.post(
        "/api/v1/backends",
        content=b"{not json",
        headers={**AUTH, "Content-Type": "application/json"},
    )
    assert r.status_code == 422
    assert error_of(r)["field"] == "body"


async def test_algorithm_and_limits(admin):
    a = await admin(2)
    h = a.http
    assert (await h.put("/api/v1/algorithm", json={"algorithm": "p2c_ewma"})).status_code == 401
    r = await h.put("/api/v1/algorithm", json={"algorithm": "p2c_ewma"}, headers=AUTH)
    assert r.status_code == 200, r.text
    state = await a.state()
    assert state["algorithm"] == "p2c_ewma"
    assert set(state["backends"][0]["score"]) == {"ewma_ms", "penalty", "in_flight", "cost"}
    r = await h.put("/api/v1/algorithm", json={"algorithm": "fastest"}, headers=AUTH)
    assert r.status_code == 422
    assert error_of(r)["field"] == "algorithm"

    assert (await h.put("/api/v1/limits", json={"rps": 5})).status_code == 401
    r = await h.put("/api/v1/limits", json={"rps": 5, "burst": 2}, headers=AUTH)
    assert r.status_code == 200, r.text
    assert r.json()["limits"]["rps"] == 5
    limits = (await a.state())["limits"]
    assert limits["config"]["rps"] == 5
    assert limits["config"]["burst"] == 2
    assert limits["global_tokens"] is not None
    for bad, field in [({"rps": -1}, "rps"), ({"rps_per_hour": 1}, "rps_per_hour")]:
        r = await h.put("/api/v1/limits", json=bad, headers=AUTH)
        assert r.status_code == 422, r.text
        assert error_of(r)["field"] == field
    assert a.proxy.admission.config.rps == 5  # a refused change leaves the limits as they were
    r = await h.put("/api/v1/limits", json={"rps": None}, headers=AUTH)
    assert r.is_success
    assert (await a.state())["limits"]["global_tokens"] is None


async def test_fleet_endpoints_without_a_fleet_answer_503(admin):
    a = await admin(1)
    name = next(iter(a.proxy.backends))
    for tail, body in [("kill", None), ("restart", None), ("knobs", {"latency_ms": 5})]:
        r = await a.http.post(f"/api/v1/backends/{name}/fleet/{tail}", json=body, headers=AUTH)
        assert r.status_code == 503, r.text
        assert "fleet" in error_of(r)["message"]


async def test_fleet_endpoints_on_real_processes(backends, balancer):
    async with Fleet([BackendSpec("f1", latency_ms=0.0)], ready_timeout_s=20) as fleet:
        lb = await balancer([], backends=[{"name": "f1", "url": fleet.url("f1")}])
        control = LocalControl(lb.proxy, fleet=fleet)
        cfg = AdminConfig(address="127.0.0.1:0", token=TOKEN)
        async with (
            AdminServer(cfg, control, environ={}) as server,
            httpx.AsyncClient(base_url=server.url, timeout=20.0, trust_env=False) as h,
        ):
            base = "/api/v1/backends/f1/fleet"
            assert (await h.post(f"{base}/kill")).status_code == 401
            assert (await h.post("/api/v1/backends/zz/fleet/kill", headers=AUTH)).status_code == 404

            r = await h.post(
                f"{base}/knobs", json={"latency_ms": 3, "error_rate": 0.5}, headers=AUTH
            )
            assert r.status_code == 200, r.text
            assert r.json()["knobs"]["latency_ms"] == 3
            assert r.json()["knobs"]["error_rate"] == 0.5
            r = await h.post(f"{base}/knobs", json={"error_rate": 7}, headers=AUTH)
            assert r.status_code == 422
            assert error_of(r)["field"] == "error_rate"

            pid = fleet.member("f1").pid
            r = await h.post(f"{base}/kill", headers=AUTH)
            assert r.status_code == 200, r.text
            assert not fleet.member("f1").alive
            snap = json.loads((await h.get("/api/v1/state", headers=AUTH)).content)
            assert snap["backends"][0]["process"]["alive"] is False
            r = await h.post(f"{base}/restart", headers=AUTH)
            assert r.status_code == 200, r.text
            member = fleet.member("f1")
            assert member.alive
            assert member.pid != pid
            snap = json.loads((await h.get("/api/v1/state", headers=AUTH)).content)
            assert snap["backends"][0]["process"]["pid"] == member.pid
            fleet_events = [e for e in lb.proxy.events.since(0) if e.kind == "fleet"]
            assert [e.data["action"] for e in fleet_events] == ["knobs", "kill", "restart"]


# --- reading ---------------------------------------------------------------------------------


async def test_state_and_events_need_the_token(admin):
    a = await admin(1)
    for path in ("/api/v1/state", "/api/v1/events", "/api/v1/nothing-here"):
        assert (await a.http.get(path)).status_code == 401
        r = await a.http.get(path, headers={"Authorization": f"Basic {TOKEN}"})
        assert r.status_code == 401
    r = await a.http.get("/api/v1/state", headers=AUTH)
    assert r.status_code == 200
    timing = r.headers["Server-Timing"]
    assert re.fullmatch(r'state;dur=[\d.]+;desc="longest slice [\d.]+ ms"', timing)
    r = await a.http.get("/api/v1/nothing-here", headers=AUTH)
    assert r.status_code == 404
    assert error_of(r)["type"] == "NotFound"


async def test_events_page(admin):
    a = await admin(2)
    b1, b2 = list(a.proxy.backends)
    await a.http.post(f"/api/v1/backends/{b1}/drain", headers=AUTH)
    await a.http.post(f"/api/v1/backends/{b2}/weight", json={"weight": 2}, headers=AUTH)
    r = await a.http.get("/api/v1/events", headers=AUTH)
    page = r.json()
    assert [(e["backend"], e["kind"]) for e in page["events"]] == [(b1, "action"), (b2, "action")]
    first = page["events"][0]["id"]
    assert page["last_id"] == page["events"][-1]["id"]
    r = await a.http.get(f"/api/v1/events?since={first}", headers=AUTH)
    assert [e["backend"] for e in r.json()["events"]] == [b2]
    r = await a.http.get("/api/v1/events?since=-1", headers=AUTH)
    assert r.status_code == 422
    assert error_of(r)["field"] == "since"
    r = await a.http.get("/api/v1/events?since=x", headers=AUTH)
    assert r.status_code == 422


async def test_an_announcement_is_one_line_on_the_timeline_with_its_origin(admin):
    """What a chaos run sends at its start and end: a line that changes nothing but the
    timeline, with the sender's origin; control characters cannot forge a second line."""
    a = await admin(2)
    before = (await a.http.get("/api/v1/state", headers=AUTH)).json()["algorithm"]
    r = await a.http.post(
        "/api/v1/actions",
        json={"kind": "announce", "text": "chaos x started\n[12:00:00] fake line"},
        headers={**AUTH, "X-Lbtui-Origin": "chaos x"},
    )
    assert r.status_code == 200, r.text
    events = (await a.http.get("/api/v1/events", headers=AUTH)).json()["events"]
    assert [(e["kind"], e["message"], e["data"]) for e in events] == [
        ("action", "chaos x started [12:00:00] fake line", {"origin": "chaos x"})
    ]
    assert (await a.http.get("/api/v1/state", headers=AUTH)).json()["algorithm"] == before
    for bad in ("", "x" * 501):
        r = await a.http.post(
            "/api/v1/actions", json={"kind": "announce", "text": bad}, headers=AUTH
        )
        assert r.status_code == 422
        assert error_of(r)["field"] == "text"


async def sse_lines(response: httpx.Response) -> AsyncIterator[str]:
    async for line in response.aiter_lines():
        yield line


async def read_sse_events(lines: AsyncIterator[str], n: int) -> tuple[list[dict[str, Any]], int]:
    """The next ``n`` events of an SSE stream, and how many keep-alive comments came first."""
    events: list[dict[str, Any]] = []
    comments = 0
    event_id: str | None = None
    async with asyncio.timeout(10):
        async for line in lines:
            if line.startswith(":"):
                comments += 1
            elif line.startswith("id: "):
                event_id = line[4:]
            elif line.startswith("data: "):
                data = json.loads(line[6:])
                assert str(data["id"]) == event_id
                events.append(data)
                if len(events) == n:
                    return events, comments
    raise AssertionError("stream ended early")


async def test_sse_stream_and_resume(admin):
    a = await admin(2)
    b1, b2 = list(a.proxy.backends)
    headers = {**AUTH, "Accept": "text/event-stream"}
    async with a.http.stream("GET", "/api/v1/events", headers=headers) as r:
        assert r.status_code == 200
        assert r.headers["Content-Type"].startswith("text/event-stream")
        lines = sse_lines(r)
        # nothing happened yet: keep-alive comments only (0.2 s apart here, 15 s by default)
        await a.http.post(f"/api/v1/backends/{b1}/drain", headers=AUTH)
        (ev,), _ = await read_sse_events(lines, 1)
        assert (ev["kind"], ev["backend"], ev["data"]["action"]) == ("action", b1, "draining")
        await a.http.post(f"/api/v1/backends/{b2}/weight", json={"weight": 5}, headers=AUTH)
        (ev2,), _ = await read_sse_events(lines, 1)
        assert ev2["id"] == ev["id"] + 1
        assert ev2["message"] == "weight 1 → 5"
        await lines.aclose()

    # the client went away; two more things happen; it comes back with Last-Event-ID
    await a.http.post(f"/api/v1/backends/{b1}/enable", headers=AUTH)
    await a.http.post(f"/api/v1/backends/{b2}/disable", headers=AUTH)
    resume = {**headers, "Last-Event-ID": str(ev2["id"])}
    async with a.http.stream("GET", "/api/v1/events", headers=resume) as r:
        lines = sse_lines(r)
        got, _ = await read_sse_events(lines, 2)
        assert [(e["backend"], e["data"]["action"]) for e in got] == [
            (b1, "active"),
            (b2, "disabled"),
        ]
        assert got[0]["id"] == ev2["id"] + 1
        # quiet again: the keep-alive comment arrives
        async with asyncio.timeout(5):
            async for line in lines:
                if line.startswith(":"):
                    break
        await lines.aclose()


async def test_sse_streams_end_when_the_server_stops(admin):
    a = await admin(1)
    headers = {**AUTH, "Accept": "text/event-stream"}
    async with a.http.stream("GET", "/api/v1/events", headers=headers) as r:
        lines = sse_lines(r)
        await eventually(lambda: _streams(a.server), timeout=5)
        async with asyncio.timeout(10):
            await a.server.stop()
            async for _line in lines:
                pass  # ends: the server closed the stream


async def _streams(server: AdminServer) -> bool:
    return bool(server._streams)


# --- metrics and exposure --------------------------------------------------------------------


async def test_metrics_open_by_default_and_closed_on_request(admin):
    a = await admin(1)
    r = await a.http.get("/metrics")
    assert r.status_code == 200
    assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    assert "lbtui_requests_total" in r.text
    assert r.headers["Server-Timing"].startswith("metrics;dur=")
    b = await admin(1, admin_config={"metrics_need_token": True})
    assert (await b.http.get("/metrics")).status_code == 401
    assert (await b.http.get("/metrics", headers=AUTH)).status_code == 200


async def test_non_loopback_without_token_is_refused(balancer, backends):
    lb = await balancer(await backends(1))
    control = LocalControl(lb.proxy)
    for address in ("0.0.0.0:9901", "10.1.2.3:0", "[::]:9901"):
        with pytest.raises(ConfigError, match="without a token"):
            AdminServer(AdminConfig(address=address), control, environ={})
    # a token (from the config or the environment) makes it acceptable; loopback never needs one
    AdminServer(AdminConfig(address="0.0.0.0:0", token="t"), control, environ={})
    s = AdminServer(AdminConfig(address="0.0.0.0:0"), control, environ={"LBTUI_ADMIN_TOKEN": "t"})
    assert s.needs_token
    s = AdminServer(AdminConfig(address="127.0.0.1:0"), control, environ={})
    assert not s.needs_token
    async with s, httpx.AsyncClient(base_url=s.url, trust_env=False) as h:
        assert (await h.get("/api/v1/state")).status_code == 200


async def test_token_from_environment(balancer, backends):
    lb = await balancer(await backends(1))
    s = AdminServer(
        AdminConfig(address="127.0.0.1:0"),
        LocalControl(lb.proxy),
        environ={"LBTUI_ADMIN_TOKEN": "e"},
    )
    async with s, httpx.AsyncClient(base_url=s.url, trust_env=False) as h:
        assert (await h.get("/api/v1/state")).status_code == 401
        r = await h.get("/api/v1/state", headers={"Authorization": "Bearer e"})
        assert r.status_code == 200


def test_control_plane_does_not_import_the_console():
    code = (
        "import sys, lbtui.control.api, lbtui.control.client, lbtui.control.runtime; "
        "print('\\n'.join(sorted(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    mods = set(out.stdout.split())
    assert "lbtui.tui" not in mods
    assert "textual" not in mods
