"""``lbtui demo --replicas N``: N balancers in front of one fleet, sharing their limits through
a ``redis-server`` the demo starts, with the load spread over them.

The first replica runs in the demo's data-plane process, with the fleet; the others are
``lbtui serve`` processes (``fleet/replicas.py``), so killing one is a real SIGKILL. The first
replica's admin API also takes the chaos actions on the others and on the store
(``replica_kill``, ``replica_restart``, ``store_stop``, ``store_start``). The console watches all
of them at once through ``MultiControl``: a balancers panel, figures summed, events merged.

Without ``redis-server`` on the PATH the demo says how to install it and runs with the memory
store: every replica then enforces the whole limit on its own (N × the limit in total), which
the console shows plainly.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import Sequence
from typing import Any, Final

from lbtui import config as config_mod
from lbtui.control.merge import sum_rates
from lbtui.control.runtime import BalancerRuntime, run_balancer
from lbtui.fleet.redis_server import INSTALL_HINT, RedisServer, redis_server_path
from lbtui.fleet.replicas import ReplicaSet
from lbtui.loadgen import LiveFigures, LoadGenerator

__all__ = ["DEMO_LIMIT_RPS", "ReplicaDemo", "merged_figures"]

DEMO_LIMIT_RPS: Final = 150.0
"""The global limit the replicas share when the demo's config sets none: under the demo's
default 200 req/s, so that 429s show the one shared bucket at work."""
MAX_REPLICAS: Final = 8


def replica_name(i: int) -> str:
    return f"replica-{i + 1}"


class ReplicaDemo:
    """The replicas, the store and the load of one demo (see the module)."""

    def __init__(self, base: dict[str, Any], count: int, rate: float, source: str) -> None:
        if not 2 <= count <= MAX_REPLICAS:
            raise ValueError(f"--replicas must be from 2 to {MAX_REPLICAS}, got {count}")
        self.base = base
        """The demo's config as a dict, backends filled in from the fleet."""
        self.count = count
        self.rate = rate
        self.source = source
        self.redis: RedisServer | None = None
        self.store_note = ""
        """Where the limits are kept, for the console's title and the ready line."""
        self.replicas: ReplicaSet | None = None
        self.first: BalancerRuntime | None = None
        self.gens: list[LoadGenerator] = []
        self._tasks: list[asyncio.Task[Any]] = []

    def _data(self, name: str, store: str) -> dict[str, Any]:
        data = {k: (dict(v) if isinstance(v, dict) else v) for k, v in self.base.items()}
        limits = data.setdefault("limits", {})
        limits.setdefault("rps", DEMO_LIMIT_RPS)
        limits["store"] = store
        limits.setdefault("store_sync_ms", 50)
        limits.setdefault("store_heartbeat_ms", 500)
        data.setdefault("balancer", {})["name"] = name
        return data

    async def build(self, fleet: Any) -> BalancerRuntime:
        """Start the store (when it can) and build the first replica, not yet started (its
        admin API may get routes first); its control gets the replica set."""
        store = "memory"
        if redis_server_path() is not None:
            self.redis = RedisServer()
            await asyncio.to_thread(self.redis.start)
            store = self.redis.url
            self.store_note = f"limits shared through {store}"
        else:
            self.store_note = f"limits in memory, not shared: {INSTALL_HINT}"
            print(f"lbtui demo: {INSTALL_HINT}; each replica keeps its own limits", file=sys.stderr)
        self.replicas = ReplicaSet(self.redis)
        cfg = config_mod.from_dict(self._data(replica_name(0), store), self.source)
        self.first = run_balancer(cfg, fleet=fleet)
        self.first.control.replicas = self.replicas
        for i in range(1, self.count):
            name = replica_name(i)
            self.replicas.add(name, self._data(name, store))
        return self.first

    async def start(self, load: bool = True) -> None:
        """Start the replicas, then (``load``) the load spread over them."""
        assert self.first is not None
        assert self.replicas is not None
        await self.first.start()
        await asyncio.gather(*(self.replicas.start(n) for n in self.replicas.replicas))
        if not load:
            return
        share = self.rate / self.count
        for url in self.urls:
            gen = LoadGenerator(url + "/", share, 8 * 3600.0)
            self.gens.append(gen)
            self._tasks.append(asyncio.create_task(gen.run(), name=f"demo-load {url}"))

    @property
    def urls(self) -> list[str]:
        assert self.first is not None
        assert self.replicas is not None
        return [self.first.server.url] + [r.url for r in self.replicas.replicas.values()]

    def members(self) -> list[dict[str, str]]:
        """Each replica's name, listener and admin API (the ready line: the console's list)."""
        assert self.first is not None
        assert self.replicas is not None
        first = self.first
        out = [
            {
                "name": replica_name(0),
                "url": first.server.url,
                "admin": first.admin.url if first.admin is not None else "",
            }
        ]
        out += [
            {"name": r.name, "url": r.url, "admin": r.admin_url}
            for r in self.replicas.replicas.values()
        ]
        return out

    def live(self) -> LiveFigures:
        return merged_figures([g.live() for g in self.gens])

    def set_rate(self, rate: float) -> None:
        """The demo's rate, spread evenly over the replicas."""
        for g in self.gens:
            g.set_rate(rate / max(1, len(self.gens)))

    async def stop(self) -> None:
        for g in self.gens:
            g.stop()
        for t in self._tasks:
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(t, 5)
        if self.first is not None:
            with contextlib.suppress(Exception):
                await self.first.control.rollback()
            with contextlib.suppress(Exception):
                await self.first.stop()
        if self.replicas is not None:
            await self.replicas.stop()  # the replicas and the store, by PID
        elif self.redis is not None:
            await asyncio.to_thread(self.redis.stop)


def merged_figures(parts: Sequence[LiveFigures]) -> LiveFigures:
    """The load panel's figures over several generators: rates and counts summed, the slowest
    quantiles (a console's p99 never hides a replica)."""
    if not parts:
        return LiveFigures(0.0, 0.0, 0.0, 0, 0, 0, 0, 0)
    return LiveFigures(
        elapsed_s=max(p.elapsed_s for p in parts),
        target_rate=sum(p.target_rate for p in parts),
        achieved_rate=sum(p.achieved_rate for p in parts),
        sent=sum(p.sent for p in parts),
        completed=sum(p.completed for p in parts),
        errors=sum(p.errors for p in parts),
        in_flight=sum(p.in_flight for p in parts),
        backlog=sum(p.backlog for p in parts),
        status_rates=sum_rates(p.status_rates for p in parts),
        p50_s=max(p.p50_s for p in parts),
        p99_s=max(p.p99_s for p in parts),
        window_s=max(p.window_s for p in parts),
    )
