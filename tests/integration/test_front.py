"""Several listeners, TLS termination with SNI, and the redirect to HTTPS, through real sockets
(certificates made by ``openssl`` in the test)."""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from lbtui import config as config_mod
from lbtui.balancer.server import BalancerServer
from lbtui.control.snapshot import build_snapshot
from lbtui.errors import ConfigError
from tests.integration.certs import Cert, client_context, make_cert
from tests.integration.conftest import TestBackend

Make = Callable[..., Awaitable[BalancerServer]]


@pytest.fixture
async def lb() -> AsyncIterator[Make]:
    started: list[BalancerServer] = []

    async def make(
        servers: list[TestBackend], listeners: list[dict[str, Any]], engine: str = "fast"
    ) -> BalancerServer:
        data: dict[str, Any] = {
            "listener": {"engine": engine},
            "listeners": listeners,
            "backends": [{"name": b.name, "url": b.url} for b in servers],
        }
        server = BalancerServer(config_mod.from_dict(data, "test"))
        await server.start()
        started.append(server)
        return server

    yield make
    for s in started:
        await s.stop()


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Cert]:
    d = tmp_path_factory.mktemp("certs")
    return {
        "a": make_cert(d, "a", "a.test", "www.a.test"),
        "b": make_cert(d, "b", "*.b.test"),
    }


def port_of(server: BalancerServer, name: str) -> int:
    assert server.listeners is not None
    return server.listeners.open_ones[name].port


async def peer_names(port: int, sni: str | None, trust: ssl.SSLContext) -> tuple[str, str | None]:
    """The CN of the certificate the listener shows for ``sni``, and the ALPN it chose."""
    ctx = trust
    if sni is None:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["h2", "http/1.1"])
    _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx, server_hostname=sni or "")
    sslobj = writer.get_extra_info("ssl_object")
    der = sslobj.getpeercert(binary_form=True)
    alpn = sslobj.selected_alpn_protocol()
    version = sslobj.version()
    writer.close()
    pem = ssl.DER_cert_to_PEM_cert(der)
    return _cn(pem), f"{alpn} {version}"


def _cn(pem: str) -> str:
    import tempfile

    with tempfile.NamedTemporaryFile("w", suffix=".pem") as f:
        f.write(pem)
        f.flush()
        decoded = ssl._ssl._test_decode_cert(f.name)  # type: ignore[attr-defined]
    return str(dict(x[0] for x in decoded["subject"])["commonName"])


@pytest.mark.parametrize("engine", ["fast", "aiohttp"])
async def test_two_plain_listeners_serve_and_show(
    backends: Callable[[int], Awaitable[list[TestBackend]]], lb: Make, engine: str
) -> None:
    servers = await backends(1)
    server = await lb(
        servers,
        [
            {"name": "public", "address": "127.0.0.1:0"},
            {"name": "internal", "address": "127.0.0.1:0"},
        ],
        engine,
    )
    assert len(set(server.urls)) == 2
    async with aiohttp.ClientSession() as s:
        for url in server.urls:
            async with s.get(url + "/x") as resp:
                assert resp.status == 200
                assert (await resp.json())["raw_path"] == "/x"
    assert servers[0].hits == 2
    shown = {v.name: v for v in build_snapshot(server.proxy).listeners}
    assert sorted(shown) == ["internal", "public"]
    assert shown["public"].address == f"127.0.0.1:{port_of(server, 'public')}"
    assert not shown["public"].tls


async def test_https_with_sni_alpn_and_forwarded_proto(
    backends: Callable[[int], Awaitable[list[TestBackend]]],
    lb: Make,
    certs: dict[str, Cert],
) -> None:
    servers = await backends(1)
    server = await lb(
        servers,
        [
            {
                "name": "secure",
                "address": "127.0.0.1:0",
                "certificates": [certs["a"].table(), certs["b"].table()],
            }
        ],
    )
    port = port_of(server, "secure")
    trust = client_context(certs["a"], certs["b"])
    # SNI picks by SAN, exact and wildcard; no SNI or an unknown name gets the default (first)
    assert await peer_names(port, "www.a.test", trust) == ("a.test", "http/1.1 TLSv1.3")
    assert (await peer_names(port, "api.b.test", trust))[0] == "*.b.test"
    assert (await peer_names(port, None, trust))[0] == "a.test"
    # TLS 1.2 is offered too (1.1 and older are not: minimum_version, and OpenSSL 3 refuses
    # them at its default security level anyway, so no client here could show it)
    tls12 = client_context(certs["a"])
    tls12.maximum_version = ssl.TLSVersion.TLSv1_2
    assert (await peer_names(port, "a.test", tls12))[1] == "http/1.1 TLSv1.2"
    # keep-alive HTTPS requests reach the backend as https
    async with aiohttp.ClientSession() as s:
        for _ in range(3):
            async with s.get(
                f"https://127.0.0.1:{port}/p?q=1", ssl=trust, server_hostname="x.b.test"
            ) as resp:
                assert resp.status == 200
                seen = dict((await resp.json())["headers"])
                assert seen["X-Forwarded-Proto"] == "https"
                assert seen["Host"] == f"127.0.0.1:{port}"
    shown = build_snapshot(server.proxy).listeners[0]
    assert shown.tls
    assert shown.certificates == [["a.test", "www.a.test"], ["*.b.test"]]


async def test_plain_listener_redirects_to_https(
    backends: Callable[[int], Awaitable[list[TestBackend]]],
    lb: Make,
    certs: dict[str, Cert],
) -> None:
    servers = await backends(1)
    server = await lb(
        servers,
        [
            {"name": "web", "address": "127.0.0.1:0", "redirect_https": "secure"},
            {"name": "secure", "address": "127.0.0.1:0", "certificates": [certs["a"].table()]},
        ],
    )
    plain, secure = port_of(server, "web"), port_of(server, "secure")
    async with aiohttp.ClientSession() as s:
        async with s.post(
            f"http://127.0.0.1:{plain}/a/b?c=d",
            data=b"body",
            headers={"Host": "www.a.test:8080"},
            allow_redirects=False,
        ) as resp:
            assert resp.status == 308
            assert resp.headers["Location"] == f"https://www.a.test:{secure}/a/b?c=d"
        async with s.get(f"http://127.0.0.1:{plain}/", allow_redirects=False) as resp:
            assert resp.status == 308
            assert resp.headers["Location"] == f"https://127.0.0.1:{secure}/"
    assert servers[0].hits == 0  # nothing of the plain listener's reached a backend


def test_bad_certificate_or_key_is_a_config_error_naming_the_file(
    tmp_path: Path, certs: dict[str, Cert]
) -> None:
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    cases = [
        ({"cert": str(tmp_path / "missing.crt"), "key": str(certs["a"].key)}, "missing.crt"),
        ({"cert": str(junk), "key": str(certs["a"].key)}, "junk.pem"),
        ({"cert": str(certs["a"].cert), "key": str(junk)}, "junk.pem"),
        ({"cert": str(certs["a"].cert), "key": str(certs["b"].key)}, "b.key"),
    ]
    for pair, named in cases:
        data = {
            "listeners": [{"name": "s", "address": "127.0.0.1:0", "certificates": [pair]}],
            "backends": [{"name": "b1", "url": "http://127.0.0.1:9"}],
        }
        with pytest.raises(ConfigError) as info:
            config_mod.from_dict(data, "lbtui.toml")
        text = str(info.value)
        assert "listeners[0].certificates[0]" in text
        assert named in text, text


def test_listener_table_checks() -> None:
    def problems(listeners: list[dict[str, Any]], **extra: Any) -> str:
        data = {"listeners": listeners, "backends": [{"name": "b", "url": "http://h:1"}]}
        data.update(extra)
        with pytest.raises(ConfigError) as info:
            config_mod.from_dict(data, "lbtui.toml")
        return str(info.value)

    a = {"name": "a", "address": "127.0.0.1:8001"}
    assert "duplicate listener name 'a'" in problems([a, {**a, "address": "127.0.0.1:8002"}])
    assert "another listener's" in problems([a, {**a, "name": "b"}])
    assert "no listener named 'nope'" in problems([{**a, "redirect_https": "nope"}])
    assert "has no certificates" in problems(
        [{**a, "redirect_https": "b"}, {"name": "b", "address": "127.0.0.1:8002"}]
    )
    assert "listener.address" in problems([a], listener={"address": "127.0.0.1:9"})
    # the shorthand alone is one listener named default
    cfg = config_mod.from_dict({"listener": {"address": "127.0.0.1:7"}}, "t")
    assert [(s.name, s.address) for s in cfg.all_listeners] == [("default", "127.0.0.1:7")]
    assert json.loads(cfg.model_dump_json())["listeners"] == []


async def test_workers_serve_every_listener(
    backends: Callable[[int], Awaitable[list[TestBackend]]], certs: dict[str, Cert]
) -> None:
    from lbtui.control.runtime import run_balancer

    servers = await backends(1)
    data: dict[str, Any] = {
        "listener": {"workers": 2},
        "listeners": [
            {"name": "web", "address": "127.0.0.1:0"},
            {"name": "secure", "address": "127.0.0.1:0", "certificates": [certs["a"].table()]},
        ],
        "backends": [{"name": b.name, "url": b.url} for b in servers],
    }
    rt = run_balancer(config_mod.from_dict(data, "test"))
    await rt.start()
    try:
        web, secure = port_of(rt.server, "web"), port_of(rt.server, "secure")
        trust = client_context(certs["a"])
        connector = aiohttp.TCPConnector(force_close=True)  # the kernel spreads new connections
        async with aiohttp.ClientSession(connector=connector) as s:
            for _ in range(40):
                async with s.get(f"http://127.0.0.1:{web}/") as resp:
                    assert resp.status == 200
                async with s.get(
                    f"https://127.0.0.1:{secure}/", ssl=trust, server_hostname="a.test"
                ) as resp:
                    assert resp.status == 200
                    seen = dict((await resp.json())["headers"])
                    assert seen["X-Forwarded-Proto"] == "https"
        deadline = asyncio.get_running_loop().time() + 15
        while True:  # both processes took some of both listeners' 80 requests
            workers = build_snapshot(rt.server.proxy).workers
            if sum(w.requests_total for w in workers) == 80:
                break
            assert asyncio.get_running_loop().time() < deadline, workers
            await asyncio.sleep(0.05)
        assert all(w.requests_total > 0 for w in workers), workers
    finally:
        await rt.stop()


@pytest.mark.parametrize("engine", ["fast", "aiohttp"])
async def test_a_route_applies_to_the_listeners_it_names(
    backends: Callable[[int], Awaitable[list[TestBackend]]], engine: str
) -> None:
    b1, b2 = await backends(2)
    data: dict[str, Any] = {
        "listener": {"engine": engine},
        "listeners": [
            {"name": "public", "address": "127.0.0.1:0"},
            {"name": "internal", "address": "127.0.0.1:0"},
        ],
        "backends": [{"name": b.name, "url": b.url} for b in (b1, b2)],
        "routes": [
            {"path_prefix": "/admin", "listeners": ["internal"], "backends": ["b2"]},
            {"path_prefix": "/", "backends": ["b1"]},
        ],
    }
    server = BalancerServer(config_mod.from_dict(data, "test"))
    await server.start()
    try:
        public, internal = server.urls
        async with aiohttp.ClientSession() as s:
            async with s.get(public + "/admin/x") as resp:
                assert resp.headers["X-Backend"] == "b1"
            async with s.get(internal + "/admin/x") as resp:
                assert resp.headers["X-Backend"] == "b2"
            async with s.get(internal + "/other") as resp:
                assert resp.headers["X-Backend"] == "b1"
    finally:
        await server.stop()
    data["routes"][0]["listeners"] = ["nope"]
    with pytest.raises(ConfigError, match=r"routes\[0\].listeners\[0\]: no listener named 'nope'"):
        config_mod.from_dict(data, "lbtui.toml")
