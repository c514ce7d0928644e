"""Discovery through the real balancer: a file rewritten under load, a broken file, and DNS
answered by a tiny DNS server the test runs on a free UDP port."""

from __future__ import annotations

import asyncio
import collections
import socket
import struct
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from lbtui.balancer.discovery import plan
from lbtui.balancer.dns import TYPE_A, addresses, query
from lbtui.config import BackendConfig
from lbtui.core.events import BackendRemoved, DiscoveryChanged
from tests.integration.test_groups import eventually


def backends_toml(servers: list[Any]) -> str:
    return "".join(f'[[backends]]\nname = "{b.name}"\nurl = "{b.url}"\n' for b in servers)


def test_plan_adds_removes_and_replaces():
    a = BackendConfig(name="a", url="http://127.0.0.1:1")
    b = BackendConfig(name="b", url="http://127.0.0.1:2")
    b2 = BackendConfig(name="b", url="http://127.0.0.1:3")
    c = BackendConfig(name="c", url="http://127.0.0.1:4")
    add, remove = plan({"a": a, "b": b}, [b2, c])
    assert [x.name for x in add] == ["b", "c"]
    assert remove == ["a", "b"]
    assert plan({"a": a}, [a]) == ([], [])


def test_dns_messages_round_trip():
    q = query("svc.test", TYPE_A, 7)
    answer = bytearray(q)
    answer[2:4] = struct.pack("!H", 0x8180)
    answer[6:8] = struct.pack("!H", 2)
    for ip in ("10.0.0.1", "10.0.0.2"):
        answer += b"\xc0\x0c" + struct.pack("!HHIH", TYPE_A, 1, 5, 4) + socket.inet_aton(ip)
    assert addresses(bytes(answer), 7) == ["10.0.0.1", "10.0.0.2"]


async def test_file_rewritten_under_load_is_applied_within_3_s_without_errors(
    backends, balancer, client, tmp_path: Path
):
    b1, b2, b3 = await backends(3)
    file = tmp_path / "pool.toml"
    file.write_text(backends_toml([b1, b2]))
    lb = await balancer(
        [],
        backends=[],
        groups=[{"name": "d", "discovery": {"file": str(file)}}],
        routes=[{"forward": [{"group": "d"}]}],
    )
    await eventually(lambda: len(lb.proxy.state.groups["d"].backends) == 2)
    statuses: collections.Counter[int] = collections.Counter()
    served: list[tuple[float, str]] = []
    stop = asyncio.Event()

    async def load() -> None:
        while not stop.is_set():
            async with client.get(lb.url + "/") as r:
                statuses[r.status] += 1
                served.append((time.monotonic(), r.headers.get("X-Backend", "-")))
                await r.read()

    loader = asyncio.create_task(load())
    try:
        await eventually(lambda: len(served) > 50)
        t0 = time.monotonic()
        file.write_text(backends_toml([b2, b3]))
        await eventually(lambda: any(name == b3.name for _, name in served), timeout=10)
        delay = next(t for t, name in served if name == b3.name) - t0
        await eventually(lambda: len(served) > 50 + 100)
        cut = time.monotonic()
        await eventually(lambda: served[-1][0] > cut + 0.5)
    finally:
        stop.set()
        await loader
    assert delay < 3.0, f"applied after {delay:.2f} s"
    assert statuses == {200: sum(statuses.values())}  # nobody saw an error
    assert all(name != b1.name for t, name in served if t > cut)  # b1 drained and gone
    removed = [e for e in lb.proxy.events.since(0) if isinstance(e, BackendRemoved)]
    assert [e.backend for e in removed] == [b1.name]
    print(f"\nfile discovery: change served {delay * 1000:.0f} ms after the write, "
          f"{sum(statuses.values())} requests, 0 errors")  # fmt: skip

    # a broken file keeps the last good set and says why
    file.write_text("[[backends]]\nname = 'x'\nurl = 'ftp://nope'\n")
    await eventually(
        lambda: any(isinstance(e, DiscoveryChanged) and not e.ok for e in lb.proxy.events.since(0))
    )
    bad = next(e for e in lb.proxy.events.since(0) if isinstance(e, DiscoveryChanged) and not e.ok)
    assert "keeping the last good set (2 backends)" in bad.message
    assert "backends[0].url" in bad.message
    assert sorted(b.name for b in lb.proxy.state.groups["d"].backends) == [b2.name, b3.name]


class TinyDns(asyncio.DatagramProtocol):
    """Answers A queries for one name from ``records`` (changed by the test); AAAA: none."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.records: list[str] = []
        self.queries = 0
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.queries += 1
        qid, _, _, _, _, _ = struct.unpack("!HHHHHH", data[:12])
        qtype = struct.unpack("!H", data[-4:-2])[0]
        records = self.records if qtype == TYPE_A else []
        head = struct.pack("!HHHHHH", qid, 0x8180, 1, len(records), 0, 0)
        body = data[12:]
        for ip in records:
            body += b"\xc0\x0c" + struct.pack("!HHIH", TYPE_A, 1, 1, 4) + socket.inet_aton(ip)
        assert self.transport is not None
        self.transport.sendto(head + body, addr)


@pytest.fixture
async def tiny_dns() -> AsyncIterator[tuple[TinyDns, int]]:
    loop = asyncio.get_running_loop()
    transport, proto = await loop.create_datagram_endpoint(
        lambda: TinyDns("svc.test"), local_addr=("127.0.0.1", 0)
    )
    port = transport.get_extra_info("sockname")[1]
    yield proto, port
    transport.close()


async def serve_on(host: str, port: int, name: str) -> web.AppRunner:
    async def handle(request: web.Request) -> web.Response:
        return web.Response(text=name, headers={"X-Backend": name})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner


async def test_dns_discovery_follows_the_records(balancer, client, tiny_dns):
    dns, dns_port = tiny_dns
    with socket.socket() as s:
        s.bind(("127.0.0.2", 0))
        port = s.getsockname()[1]
    runners = [await serve_on(h, port, h) for h in ("127.0.0.2", "127.0.0.3")]
    try:
        dns.records = ["127.0.0.2"]
        lb = await balancer(
            [],
            backends=[],
            groups=[
                {
                    "name": "svc",
                    "discovery": {
                        "dns": f"svc.test:{port}",
                        "interval_s": 0.2,
                        "resolver": f"127.0.0.1:{dns_port}",
                    },
                }
            ],
            routes=[{"forward": [{"group": "svc"}]}],
        )
        await eventually(lambda: len(lb.proxy.state.groups["svc"].backends) == 1)

        async def who(n: int) -> collections.Counter[str]:
            seen: collections.Counter[str] = collections.Counter()
            for _ in range(n):
                async with client.get(lb.url + "/") as r:
                    assert r.status == 200
                    seen[r.headers["X-Backend"]] += 1
            return seen

        assert await who(6) == {"127.0.0.2": 6}
        dns.records = ["127.0.0.2", "127.0.0.3"]
        await eventually(lambda: len(lb.proxy.state.groups["svc"].backends) == 2)
        assert await who(6) == {"127.0.0.2": 3, "127.0.0.3": 3}
        dns.records = ["127.0.0.3"]
        await eventually(lambda: len(lb.proxy.state.groups["svc"].backends) == 1)
        assert await who(4) == {"127.0.0.3": 4}
        names = [b.name for b in lb.proxy.state.groups["svc"].backends]
        assert names == [f"svc-127.0.0.3:{port}"]
        # no records at all: the last good set stays, and an event says why
        dns.records = []
        await eventually(
            lambda: any(
                isinstance(e, DiscoveryChanged) and not e.ok for e in lb.proxy.events.since(0)
            )
        )
        assert await who(2) == {"127.0.0.3": 2}
    finally:
        for r in runners:
            await r.cleanup()


async def test_a_reload_that_changes_the_source_moves_the_group_to_it(backends, tmp_path: Path):
    from lbtui import config as config_mod
    from lbtui.control.runtime import run_balancer

    b1, b2 = await backends(2)
    (tmp_path / "one.toml").write_text(backends_toml([b1]))
    (tmp_path / "two.toml").write_text(backends_toml([b2]))
    path = tmp_path / "lbtui.toml"

    def write(source: str) -> None:
        path.write_text(
            '[listener]\naddress = "127.0.0.1:0"\n[admin]\nenabled = false\n'
            f'[[groups]]\nname = "d"\ndiscovery = {{ file = "{source}" }}\n'
            '[[routes]]\nforward = [{ group = "d" }]\n'
        )

    write("one.toml")
    rt = run_balancer(config_mod.load(path), loader=lambda: config_mod.load(path), source=str(path))
    await rt.start()
    try:
        groups = rt.server.proxy.state.groups
        await eventually(lambda: [b.name for b in groups["d"].backends] == [b1.name])
        write("two.toml")
        result = rt.reload()
        assert result.applied, result
        await eventually(
            lambda: [b.name for b in rt.server.proxy.state.groups["d"].backends] == [b2.name]
        )
        assert b1.name not in rt.server.proxy.backends  # the old source's backend left
    finally:
        await rt.stop()
