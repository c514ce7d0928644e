"""Discovery: a target group's backends kept in step with a file or DNS.

One task per group with a ``discovery`` source, in the primary process (operations reach the
workers as any operator's do). Each round reads the source — a file when its size or time
changed (looked at every ``FILE_POLL_S``), DNS every ``interval_s`` — and makes the group's
discovered members that set: new ones added (``AddBackend`` into the group), gone ones removed
(they drain: requests in flight on them finish), changed ones replaced. A source that fails
(a broken file, a name that does not resolve) changes nothing: the last good set stays, and
one ``DiscoveryChanged`` event says why (again only when the problem changes).

The decision is :func:`plan`, pure; :class:`Discovery` does the reading and the waiting.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

from lbtui.balancer import operations as ops
from lbtui.balancer.dns import DnsError, resolve
from lbtui.balancer.proxy import Proxy
from lbtui.config import BackendConfig, DiscoveryConfig, read_backends
from lbtui.config.model import resolve_file
from lbtui.core.events import DiscoveryChanged
from lbtui.errors import ConfigError
from lbtui.units import parse_hostport

log = logging.getLogger("lbtui.discovery")

FILE_POLL_S = 0.5
"""How often a discovery file's size and time are looked at."""


def plan(
    current: Mapping[str, BackendConfig], wanted: Sequence[BackendConfig]
) -> tuple[list[BackendConfig], list[str]]:
    """``(to add, to remove)`` that turn ``current`` into ``wanted``; a backend whose keys
    changed is removed and added again."""
    want = {b.name: b for b in wanted}
    remove = [n for n, b in current.items() if want.get(n) != b]
    add = [b for n, b in want.items() if current.get(n) != b]
    return add, remove


def dns_backends(group: str, addresses: Sequence[str], port: int) -> list[BackendConfig]:
    """A backend for each address: named ``GROUP-ADDRESS:PORT``."""
    out = []
    for a in addresses:
        host = f"[{a}]" if ":" in a else a
        out.append(BackendConfig(name=f"{group}-{a}:{port}", url=f"http://{host}:{port}"))
    return out


class Discovery:
    """The discovery task of one group."""

    def __init__(
        self, proxy: Proxy, group: str, config: DiscoveryConfig, base: Path | None
    ) -> None:
        self.proxy = proxy
        self.group = group
        self.config = config
        self.path = resolve_file(config.file, base) if config.file is not None else None
        self.source = f"file {self.path}" if self.path is not None else f"dns {config.dns}"
        self.owned: dict[str, BackendConfig] = {}
        """The backends this source added, as it added them."""
        self.problem: str | None = None
        self._seen: tuple[int, int] | None = None
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.task = asyncio.create_task(self._run(), name=f"lbtui-discovery-{self.group}")

    def cancel(self) -> None:
        """Stop without waiting (a reload replaces this task)."""
        if self.task is not None:
            self.task.cancel()
            self.task = None

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
            self.task = None

    async def _run(self) -> None:
        while True:
            try:
                await self.round()
            except asyncio.CancelledError:
                raise
            except Exception:  # a defect of ours: logged, and the next round tries again
                log.exception("discovery of group %s failed", self.group)
            await asyncio.sleep(FILE_POLL_S if self.path is not None else self.config.interval_s)

    async def round(self) -> None:
        """Read the source once (a file only when it changed) and apply what it says."""
        try:
            wanted = await self._read()
        except (ConfigError, DnsError, OSError, ValueError) as exc:
            self._failed(str(exc))
            return
        if wanted is None:
            return
        self.apply(wanted)

    async def _read(self) -> list[BackendConfig] | None:
        if self.path is not None:
            try:
                st = self.path.stat()
                seen: tuple[int, int] | None = (st.st_mtime_ns, st.st_size)
            except OSError:
                seen = None
            if seen is not None and seen == self._seen:
                return None  # unchanged since the last good or failed read
            self._seen = seen
            return read_backends(self.path)
        assert self.config.dns is not None
        name, port = parse_hostport(self.config.dns)
        server = parse_hostport(self.config.resolver) if self.config.resolver else None
        found = await resolve(name, port, server)
        if not found:
            raise DnsError(f"{name} has no A or AAAA record")
        return dns_backends(self.group, found, port)

    def _failed(self, problem: str) -> None:
        if problem == self.problem:
            return
        self.problem = problem
        self.proxy.events.emit(
            DiscoveryChanged(
                message=f"group {self.group}: {self.source} failed, keeping the last good set "
                f"({len(self.owned)} backends): {problem}",
                group=self.group,
                source=self.source,
                ok=False,
            )
        )

    def apply(self, wanted: Sequence[BackendConfig]) -> None:
        """Make this source's members of the group ``wanted``."""
        add, remove = plan(self.owned, wanted)
        recovered = self.problem is not None
        self.problem = None
        if not add and not remove:
            if recovered:
                self._note("readable again, nothing changed")
            return
        backends = self.proxy.backends
        for name in remove:
            if name in backends:
                self.proxy.act(ops.RemoveBackend(name))
            self.owned.pop(name, None)
        added = []
        for bc in add:
            if bc.name in backends:  # a name the config or an operator already uses
                self._failed(f"backend {bc.name!r} exists already: not added")
                continue
            self.proxy.act(ops.AddBackend(bc, self.group))
            self.owned[bc.name] = bc
            added.append(bc.name)
        parts = ([f"+{n}" for n in added]) + [f"-{n}" for n in remove]
        self._note(", ".join(parts))

    def _note(self, what: str) -> None:
        self.proxy.events.emit(
            DiscoveryChanged(
                message=f"group {self.group}: {self.source}: {what}",
                group=self.group,
                source=self.source,
                ok=True,
            )
        )
