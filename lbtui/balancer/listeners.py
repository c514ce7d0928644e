"""The balancer's listeners: each ``[[listeners]]`` entry bound, served, and closed on its own.

:class:`Listeners` owns every open listener of one process. ``open(spec)`` binds its address
(with ``SO_REUSEPORT`` when several processes serve it, the primary also claiming the address
so no stranger joins the group), makes its TLS contexts when it has certificates, and starts
the fast listener (or aiohttp's server) on it; ``close(name, grace_s)`` stops accepting there
and lets that listener's requests finish, as a reload that removes a listener needs. Every
listener feeds the same pipeline: a request differs only in its scheme (``X-Forwarded-Proto``)
and in a redirect to HTTPS, both the listener's.

What needs the fast listener (the config refuses it with ``engine = "aiohttp"``): TLS and
``redirect_https``. Several plain listeners work with either engine.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import socket
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from aiohttp import web

from lbtui.balancer.listener import FastListener
from lbtui.balancer.tls import ServerTls
from lbtui.config import Config, ListenerSpec
from lbtui.units import parse_hostport

if TYPE_CHECKING:
    from lbtui.balancer.proxy import Proxy


@dataclass(frozen=True, slots=True)
class ListenerInfo:
    """What the state API and the console say about a listener."""

    name: str
    address: str
    """As bound (the port a ``:0`` address got)."""
    tls: bool
    redirect_https: str | None
    connections: int
    """Client connections open on it in this process."""
    tunnels: int
    """Upgraded connections (WebSocket) tunnelled through it in this process."""
    tunnels_closed: int
    """Tunnels through it that have ended."""
    certificates: list[list[str]]
    """The names each certificate is for, the default first (empty for plain HTTP)."""


class OpenListener:
    """One bound listener: its socket, its server, its TLS."""

    def __init__(self, spec: ListenerSpec, sock: socket.socket, claim: socket.socket | None):
        self.spec = spec
        self.sock = sock
        self.claim = claim
        self.host, _ = parse_hostport(spec.address)
        self.port: int = sock.getsockname()[1]
        self.tls: ServerTls | None = None
        self.fast: FastListener | None = None
        self.runner: web.ServerRunner | None = None

    @property
    def address(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        scheme = "https" if self.spec.tls else "http"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{host}:{self.port}"


class Listeners:
    """Every listener this process serves, by name."""

    def __init__(
        self,
        proxy: Proxy,
        config: Config,
        *,
        processes: int,
        primary: bool,
        keepalive_s: float,
    ) -> None:
        self.proxy = proxy
        self.config = config
        self.processes = processes
        self.primary = primary
        self.keepalive_s = keepalive_s
        self.open_ones: dict[str, OpenListener] = {}

    # -- opening -------------------------------------------------------------------------------

    def bind(self, spec: ListenerSpec) -> OpenListener:
        """The listening socket, bound (and the address claimed by the primary of several);
        an ``OSError`` that says which listener, which address and why."""
        host, port = parse_hostport(spec.address)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if self.processes > 1:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            sock.close()
            msg = f"listener {spec.name!r} cannot listen on {host}:{port}: {exc.strerror}"
            raise OSError(exc.errno, msg) from exc
        claim = None
        if self.processes > 1 and self.primary:
            try:
                claim = self._claim(host, sock.getsockname()[1])
            except OSError:
                sock.close()
                raise
        return OpenListener(spec, sock, claim)

    def _claim(self, host: str, port: int) -> socket.socket | None:
        """With ``SO_REUSEPORT`` a second balancer of the same user could bind the same port
        and silently take half its connections: the primary also holds an abstract Unix
        socket named after the address, which only one process can bind (Linux; released
        when the process ends, however it ends)."""
        if not sys.platform.startswith("linux"):
            return None
        claim = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            claim.bind(f"\0lbtui-listener:{host}:{port}")
        except OSError:
            claim.close()
            raise OSError(
                errno.EADDRINUSE,
                f"cannot listen on {host}:{port}: another lbtui with workers listens there",
            ) from None
        return claim

    async def open(self, spec: ListenerSpec) -> OpenListener:
        """Bind and serve ``spec`` (a name already open is an error)."""
        if spec.name in self.open_ones:
            raise ValueError(f"listener {spec.name!r} is open already")
        one = self.bind(spec)
        try:
            await self._serve(one)
        except BaseException:
            one.sock.close()
            if one.claim is not None:
                one.claim.close()
            raise
        self.open_ones[spec.name] = one
        self._link_redirects()
        return one

    async def _serve(self, one: OpenListener) -> None:
        sock = one.sock
        sock.listen(4096)
        sock.setblocking(False)
        spec = one.spec
        if spec.tls:
            base = self.config.base_dir
            one.tls = ServerTls(spec.certificates, Path(base) if base else None)
        if self.config.listener.engine == "fast":
            fast = one.fast = FastListener(
                self.proxy,
                keepalive_timeout_s=self.keepalive_s,
                name=spec.name,
                scheme="https" if spec.tls else "http",
            )
            await fast.start(sock, one.tls.context if one.tls is not None else None)
            return
        proxy, name = self.proxy, spec.name

        async def handle(request: web.BaseRequest) -> web.StreamResponse:
            return await proxy.handle(request, name)

        server = web.Server(
            handle,
            access_log=None,
            auto_decompress=False,
            keepalive_timeout=self.keepalive_s,
            max_field_size=16_384,
        )
        runner = one.runner = web.ServerRunner(
            server, handle_signals=False, shutdown_timeout=self.config.proxy.shutdown_grace_s
        )
        await runner.setup()
        await web.SockSite(runner, sock).start()

    def _link_redirects(self) -> None:
        """Each plain listener redirecting to HTTPS learns its target's port (it may have
        been bound after it, or on a free port)."""
        for one in self.open_ones.values():
            target = one.spec.redirect_https
            if one.fast is None:
                continue
            dest = self.open_ones.get(target) if target is not None else None
            one.fast.redirect_port = dest.port if dest is not None else 0

    # -- closing -------------------------------------------------------------------------------

    async def close(self, name: str, grace_s: float) -> None:
        """Stop accepting on ``name``; its in-flight requests finish within ``grace_s``."""
        one = self.open_ones.pop(name)
        self._link_redirects()
        await self._stop(one, grace_s)

    async def _stop(self, one: OpenListener, grace_s: float) -> None:
        if one.fast is not None:
            await one.fast.shutdown(grace_s)
            one.fast = None
        if one.runner is not None:
            await one.runner.cleanup()
            one.runner = None
        with contextlib.suppress(OSError):
            one.sock.close()
        if one.claim is not None:
            one.claim.close()
            one.claim = None

    async def shutdown(self, grace_s: float) -> None:
        """Every listener at once: stop accepting, drain up to ``grace_s``, abort the rest."""
        ones = list(self.open_ones.values())
        self.open_ones.clear()
        for one in ones:
            if one.fast is not None:
                one.fast.redirect_port = 0
        await asyncio.gather(*(self._stop(one, grace_s) for one in ones))

    # -- reading -------------------------------------------------------------------------------

    def first(self) -> OpenListener:
        return next(iter(self.open_ones.values()))

    def resolved(self) -> list[ListenerSpec]:
        """The specs with the ports they were bound to (what workers bind in their turn)."""
        return [
            one.spec.model_copy(update={"address": one.address}) for one in self.open_ones.values()
        ]

    def infos(self) -> list[ListenerInfo]:
        out = []
        for one in self.open_ones.values():
            fast = one.fast
            out.append(
                ListenerInfo(
                    name=one.spec.name,
                    address=one.address,
                    tls=one.spec.tls,
                    redirect_https=one.spec.redirect_https,
                    connections=len(fast.connections) if fast is not None else 0,
                    tunnels=fast.tunnels if fast is not None else 0,
                    tunnels_closed=fast.tunnels_total if fast is not None else 0,
                    certificates=one.tls.names if one.tls is not None else [],
                )
            )
        return out
