"""The admin API refuses a web page's requests before any handler runs (``control/guard.py``),
over real sockets: what a hostile page in the operator's browser could send is refused, and
nothing it asked for happens; lbtui's own client still works."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest

from lbtui import config as config_mod
from lbtui.balancer.server import BalancerServer
from lbtui.config import AdminConfig
from lbtui.control.api import AdminServer
from lbtui.control.client import HttpControl
from lbtui.control.local import LocalControl
from lbtui.control.model import SetAdmin, SetWeight

Make = Callable[..., Awaitable[tuple[AdminServer, httpx.AsyncClient]]]


@pytest.fixture
async def admin() -> AsyncIterator[Make]:
    """An admin API (no token, as by default) on a balancer whose two backends are never
    contacted, and a plain httpx client for it."""
    started: list[tuple[BalancerServer, AdminServer, httpx.AsyncClient]] = []

    async def make(**admin_config: Any) -> tuple[AdminServer, httpx.AsyncClient]:
        cfg = config_mod.from_dict(
            {
                "listener": {"address": "127.0.0.1:0"},
                "backends": [
                    {"name": "b1", "url": "http://127.0.0.1:9"},
                    {"name": "b2", "url": "http://127.0.0.1:19"},
                ],
            },
            "test",
        )
        lb = BalancerServer(cfg)
        await lb.start()
        server = AdminServer(
            AdminConfig(address="127.0.0.1:0", **admin_config), LocalControl(lb.proxy), environ={}
        )
        await server.start()
        http = httpx.AsyncClient(base_url=server.url, timeout=5.0, trust_env=False)
        started.append((lb, server, http))
        return server, http

    yield make
    for lb, server, http in started:
        await http.aclose()
        await server.stop()
        await lb.stop()


async def weight(http: httpx.AsyncClient, name: str) -> float:
    r = await http.get("/api/v1/state")
    assert r.status_code == 200, r.text
    return float(next(b for b in r.json()["backends"] if b["name"] == name)["weight_configured"])


async def names(http: httpx.AsyncClient) -> list[str]:
    r = await http.get("/api/v1/state")
    return [b["name"] for b in r.json()["backends"]]


def error(r: httpx.Response) -> dict[str, Any]:
    body = r.json()
    assert set(body["error"]) == {"status", "type", "message", "field"}, body
    return dict(body["error"])


async def test_cross_origin_text_plain_post_is_refused_and_changes_nothing(admin: Make) -> None:
    _server, http = await admin()
    r = await http.post(
        "/api/v1/backends/b1/weight",
        content=b'{"weight": 7}',
        headers={"Content-Type": "text/plain", "Origin": "http://evil.example"},
    )
    assert r.status_code == 403, r.text
    assert error(r)["field"] == "Origin"
    assert "foreign" in error(r)["message"]
    # the same body without an Origin (not a browser) but as text/plain: 415
    r = await http.post(
        "/api/v1/backends/b1/weight",
        content=b'{"weight": 7}',
        headers={"Content-Type": "text/plain;charset=UTF-8"},
    )
    assert r.status_code == 415, r.text
    assert error(r)["field"] == "Content-Type"
    assert await weight(http, "b1") == 1


async def test_form_encoded_add_backend_is_refused_and_adds_nothing(admin: Make) -> None:
    _server, http = await admin()
    r = await http.post(
        "/api/v1/backends", data={"name": "evil", "url": "http://203.0.113.9:80"}
    )  # httpx sends application/x-www-form-urlencoded
    assert r.status_code == 415, r.text
    assert "application/json" in error(r)["message"]
    assert await names(http) == ["b1", "b2"]


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/api/v1/state", None),
        ("GET", "/api/v1/events", None),
        ("GET", "/metrics", None),
        ("PUT", "/api/v1/backends/b1/fault", {"kind": "abort", "status": 503}),
        ("PUT", "/api/v1/limits", {"rps": 0.001}),
    ],
)
async def test_a_foreign_host_is_refused_even_for_reads(
    admin: Make, method: str, path: str, body: dict[str, Any] | None
) -> None:
    server, http = await admin()
    r = await http.request(method, path, json=body, headers={"Host": f"evil.example:{server.port}"})
    assert r.status_code == 403, r.text
    assert error(r)["field"] == "Host"
    assert "allowed_hosts" in error(r)["message"]
    state = (await http.get("/api/v1/state")).json()
    assert state["limits"]["config"]["rps"] is None
    assert all(b["fault"] is None for b in state["backends"])


async def test_allowed_hosts_admits_a_listed_name_and_own_names_pass(admin: Make) -> None:
    server, http = await admin(allowed_hosts=["lb.internal", "other.internal:1"])
    p = server.port
    for host in (f"lb.internal:{p}", "lb.internal", f"localhost:{p}", f"127.0.0.1:{p}"):
        r = await http.get("/api/v1/state", headers={"Host": host})
        assert r.status_code == 200, (host, r.text)
    for host in (f"other.internal:{p}", f"localhost:{p + 1}", f"lb.internal.evil:{p}"):
        r = await http.get("/api/v1/state", headers={"Host": host})
        assert r.status_code == 403, (host, r.text)


async def test_own_origin_may_act(admin: Make) -> None:
    server, http = await admin()
    r = await http.post(
        "/api/v1/backends/b1/weight",
        json={"weight": 5},
        headers={"Origin": f"http://127.0.0.1:{server.port}"},
    )
    assert r.status_code == 200, r.text
    r = await http.post(
        "/api/v1/backends/b1/weight", json={"weight": 6}, headers={"Origin": "null"}
    )
    assert r.status_code == 403
    assert await weight(http, "b1") == 5


async def test_lbtuis_own_client_still_acts(admin: Make) -> None:
    server, _http = await admin()
    control = HttpControl(server.url)
    try:
        await control.act(SetWeight(backend="b2", weight=3))
        await control.act(SetAdmin(backend="b2", state="draining"))
        snap = await control.snapshot()
    finally:
        await control.aclose()
    b2 = next(b for b in snap.backends if b.name == "b2")
    assert b2.weight_configured == 3


async def test_token_still_guards_and_metrics_follow_the_setting(admin: Make) -> None:
    _server, http = await admin(token="t0k")
    assert (await http.get("/api/v1/state")).status_code == 401
    assert (await http.get("/metrics")).status_code == 200  # metrics_need_token = false
    ok = await http.get("/api/v1/state", headers={"Authorization": "Bearer t0k"})
    assert ok.status_code == 200
    _server, http = await admin(token="t0k", metrics_need_token=True)
    assert (await http.get("/metrics")).status_code == 401
    r = await http.get("/metrics", headers={"Authorization": "Bearer t0k"})
    assert r.status_code == 200


async def test_hostile_bodies_get_4xx_and_the_server_keeps_answering(admin: Make) -> None:
    _server, http = await admin()
    deep = b'{"weight":' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    bodies = [
        deep[:60_000],  # unterminated, deep
        b'{"a":' * 5_000 + b"1" + b"}" * 5_000,
        b'{"weight": NaN}',
        b'{"weight": Infinity}',
        b"\xff\xfe",
        b"[1, 2]",
    ]
    for body in bodies:
        r = await http.post(
            "/api/v1/backends/b1/weight",
            content=body,
            headers={"Content-Type": "application/json"},
        )
        assert r.status_code == 422, (body[:40], r.status_code, r.text)
        assert error(r)["field"] == "body"
    r = await http.put(
        "/api/v1/limits", content=b"[" * 70_000, headers={"Content-Type": "application/json"}
    )
    assert r.status_code == 413, r.text
    assert await weight(http, "b1") == 1


@pytest.mark.parametrize(
    "url",
    [
        "http://admin:hunter2@127.0.0.1:9001",
        "http://127.0.0.1:9001/a b",
        "http://127.0.0.1:9001/a\r\nX-Evil: 1",
        "http://127.0.0.1:0",
    ],
)
async def test_add_backend_refuses_urls_lbtui_cannot_use(admin: Make, url: str) -> None:
    _server, http = await admin()
    r = await http.post("/api/v1/backends", json={"name": "c", "url": url})
    assert r.status_code == 422, r.text
    assert error(r)["field"] == "url"
    assert "hunter2" not in r.text
    assert await names(http) == ["b1", "b2"]
    events = (await http.get("/api/v1/events")).text
    state = (await http.get("/api/v1/state")).text
    assert "hunter2" not in events + state
