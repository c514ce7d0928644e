"""The system a chaos run works on: the fleet and balancer it starts, or the balancer it
attaches to, and what the fleet's processes say about themselves.

Split from the runner so that :class:`~lbtui.chaos.runner.Experiment` is the run's clock and
phases only; this owns every process and connection the run opens, and closes them in
:meth:`System.stop` whatever happened (every fleet process by its PID, SIGTERM then SIGKILL).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx

from lbtui import config as config_mod
from lbtui.chaos.recording import ProcessTally, Recording, RollbackStep
from lbtui.chaos.scenario import Scenario, ScenarioFile
from lbtui.chaos.steps import AddBackendStep, describe_step, step_action, step_backend
from lbtui.control.client import HttpControl
from lbtui.control.errors import ControlError
from lbtui.control.interface import Control
from lbtui.control.model import Announce, Snapshot
from lbtui.control.runtime import BalancerRuntime, run_balancer
from lbtui.errors import LbtuiError
from lbtui.fleet.spec import is_loopback_host
from lbtui.fleet.supervisor import BackendStats, Fleet, FleetError
from lbtui.loadgen import check_loopback
from lbtui.sources import open_control

if TYPE_CHECKING:
    from lbtui.demo_replicas import ReplicaDemo

ANNOUNCE_TIMEOUT_S = 20.0
"""How long a run waits for the balancer to take its start or end line."""


class SetupError(LbtuiError):
    """The experiment could not start: nothing was measured (exit 2)."""


@dataclass(frozen=True, slots=True)
class Member:
    name: str
    url: str
    pid: int | None
    character: str


class System:
    """What one run starts or attaches to: ``await start(...)``, then ``await stop()``."""

    def __init__(
        self, sf: ScenarioFile, sc: Scenario, rec: Recording, log: Callable[[str], None]
    ) -> None:
        self.sf = sf
        self.sc = sc
        self.rec = rec
        self.log = log
        self.fleet: Fleet | None = None
        self.runtime: BalancerRuntime | None = None
        self.replicas: ReplicaDemo | None = None
        """``[system] replicas``: the store and the replicas the run started."""
        self.spread: list[str] = []
        """The other replicas' listeners: the load is spread over them and ``target``."""
        self.control: Control | None = None
        self.target = ""
        self.admin_url: str | None = None
        self.urls: dict[str, str] = {}
        """Each backend's URL by name, for the fleet's own bookkeeping and for added backends."""
        self._http: httpx.AsyncClient | None = None

    # --- setup and teardown ----------------------------------------------------------------------

    async def start(self, attach: str | None, token: str | None, target: str | None) -> Snapshot:
        """Attach to ``attach`` (an admin API, or HAProxy's Runtime API at ``unix://`` or
        ``tcp://``) or start the scenario's fleet and balancer; the balancer's first snapshot.
        A timeline action the attached balancer cannot do (a fault on HAProxy) stops the run
        before it starts, naming the step and the reason."""
        sc = self.sc
        if attach:
            try:
                control = open_control(attach, token=token, origin=f"chaos {self.sf.name}")
            except LbtuiError as exc:
                raise SetupError(f"--attach {attach}: {exc}") from None
            self.control = control
            self.admin_url = control.base_url if isinstance(control, HttpControl) else attach
            try:
                snap = await control.snapshot()
            except ControlError as exc:
                raise SetupError(f"--attach {attach}: {exc}") from None
            self._check_capabilities(snap)
            target = target or sc.load.target
            if target is None:
                raise SetupError(
                    "--attach needs the balancer's listener URL: give --target URL or [load] target"
                )
            check_loopback(target)
            self.target = target.rstrip("/")
            known = {b.name for b in snap.backends}
            added = {s.backend for s in sc.timeline if isinstance(s, AddBackendStep)}
            for i, step in enumerate(sc.timeline):
                name = step_backend(step)
                if name is not None and name not in known | added:
                    raise SetupError(
                        f"{self.sf.path}: timeline[{i}].backend: the balancer has no backend "
                        f"named {name!r} (it has {', '.join(sorted(known))})"
                    )
            self.urls = {
                b.name: b.url if "://" in b.url else f"http://{b.url}" for b in snap.backends
            }
            self._http = httpx.AsyncClient(timeout=1.0, trust_env=False)
            self.log(f"chaos: attached to {self.admin_url}; load to {self.target}")
            system = sc.system
            if system.fleet or system.backends or system.config or system.balancer:
                self.log("chaos: --attach: the scenario's [system] is not started")
            return snap
        specs = list(self.sf.fleet)
        self.log(f"chaos: starting a fleet of {len(specs)} ({self.sf.fleet_source})")
        self.fleet = Fleet(specs)
        try:
            await self.fleet.start()
        except FleetError as exc:
            raise SetupError(f"the fleet could not start: {exc}") from None
        pids = ", ".join(f"{m.name} pid {m.pid}" for m in self.fleet.backends)
        self.log(f"chaos: fleet up: {pids}")
        self.urls = {m.name: m.url for m in self.fleet.backends}
        standby = set(sc.system.standby)
        data = dict(self.sf.balancer or {})
        data["backends"] = [
            {"name": m.name, "url": m.url} for m in self.fleet.backends if m.name not in standby
        ]
        if sc.system.replicas > 1:
            await self._start_replicas(data)
        else:
            cfg = config_mod.from_dict(data, self.sf.config_source)
            self.runtime = run_balancer(cfg, fleet=self.fleet)
            await self.runtime.start()
        assert self.runtime is not None
        self.control = self.runtime.control
        if self.replicas is not None:
            self.control = self._fleet_control(self.runtime.control)
        self.target = self.runtime.server.url
        if self.runtime.admin is not None:
            self.admin_url = self.runtime.admin.url
        self.log(
            f"chaos: balancer {self.target}"
            + (f" (watch it: lbtui attach {self.admin_url})" if self.admin_url else "")
        )
        return await self.control.snapshot()

    async def _start_replicas(self, data: dict[str, Any]) -> None:
        """``[system] replicas``: the store and the replicas; the first is this run's balancer."""
        from lbtui.demo_replicas import ReplicaDemo

        data.setdefault("admin", {})["address"] = "127.0.0.1:0"
        demo = self.replicas = ReplicaDemo(
            data, self.sc.system.replicas, 0.0, self.sf.config_source
        )
        try:
            self.runtime = await demo.build(self.fleet)
            await demo.start(load=False)
        except Exception as exc:
            await demo.stop()
            self.runtime = self.replicas = None
            raise SetupError(f"the replicas could not start: {exc}") from None
        self.log(f"chaos: {self.sc.system.replicas} replicas, {demo.store_note}")

    def _fleet_control(self, first: Control) -> Control:
        """``[system] replicas``: one control over every replica, so that the checks read the
        fleet's figures summed; actions go to the first, which acts on the others and the
        store."""
        from lbtui.control.multi import MultiControl

        assert self.replicas is not None
        assert self.replicas.replicas is not None
        others = list(self.replicas.replicas.replicas.values())
        self.spread = [r.url for r in others]
        multi = MultiControl(
            [("replica-1", first), *((r.name, HttpControl(r.admin_url)) for r in others)]
        )
        multi.select("replica-1")
        return multi

    def _check_capabilities(self, snap: Snapshot) -> None:
        assert self.control is not None
        for i, step in enumerate(self.sc.timeline):
            action = step_action(step, {})
            if action is None:
                continue
            reason = snap.unavailable.get(action.kind)
            if self.control.read_only:
                reason = f"{self.admin_url} only watches (read-only source)"
            if reason:
                raise SetupError(
                    f"{self.sf.path}: timeline[{i}].action: {describe_step(step)} is not "
                    f"possible on {self.admin_url}: {reason}"
                )

    def members(self) -> list[Member]:
        if self.fleet is None:
            return [Member(n, u, None, "") for n, u in self.urls.items()]
        return [
            Member(m.name, m.url, m.pid, m.spec.character or m.spec.describe())
            for m in self.fleet.backends
        ]

    async def announce(self, text: str) -> None:
        """Put ``text`` on the balancer's event timeline, where every console and
        ``/api/v1/events`` see it (a run's start and end); a balancer that cannot take it does
        not stop the run."""
        if self.control is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.control.act(Announce(text=text)), ANNOUNCE_TIMEOUT_S)

    async def stop(self) -> None:
        """Stop what was started and close what was opened; the fleet's stop is recorded as
        the last rollback step."""
        if self.replicas is not None:  # the replicas (the first is self.runtime), the store
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.replicas.stop(), 60)
            self.replicas = None
            self.runtime = None
        if self.runtime is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.runtime.stop(), 30)
            self.runtime = None
        if self.fleet is not None:
            pids = [m.pid for m in self.fleet.backends if m.pid is not None]
            await self.fleet.stop()
            self.rec.rollback.append(
                RollbackStep("fleet stopped", True, "pids " + ", ".join(str(p) for p in pids))
            )
            self.fleet = None
        if self.control is not None and (self.runtime is None or self.spread):
            with contextlib.suppress(Exception):
                await self.control.aclose()
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    # --- the fleet's own bookkeeping ------------------------------------------------------------

    async def stats(self, name: str) -> BackendStats | None:
        if self.fleet is not None:
            member = next((m for m in self.fleet.backends if m.name == name), None)
            if member is None or not member.alive:
                return None
            try:
                return await self.fleet.stats(name)
            except FleetError:
                return None
        url = self.urls.get(name)
        if url is None or self._http is None or not _loopback_url(url):
            return None
        try:
            resp = await self._http.get(url + "/_fleet/stats")
            if resp.status_code != 200:
                return None
            return BackendStats.from_json(resp.json())
        except (httpx.HTTPError, ValueError, KeyError, TypeError):
            return None

    async def tally(self, name: str) -> None:
        """Record a backend process's request-id bookkeeping (kept per PID, so a process the
        run kills keeps its last figures)."""
        st = await self.stats(name)
        if st is not None:
            self.rec.processes[(name, st.pid)] = ProcessTally(
                backend=name,
                pid=st.pid,
                requests=st.requests_total,
                by_method=dict(st.by_method),
                request_ids_repeated=st.request_ids_repeated,
                request_ids_capped=st.request_ids_capped,
            )

    async def tally_all(self) -> None:
        names = list(self.urls)
        await asyncio.gather(*(self.tally(n) for n in names))

    async def knobs(self, name: str) -> dict[str, Any] | None:
        """A fleet backend's knobs before the run changes them (attached only: a fleet the
        run started is stopped at the end anyway)."""
        url = self.urls.get(name)
        if self.fleet is not None or self._http is None or url is None or not _loopback_url(url):
            return None
        try:
            resp = await self._http.get(url + "/_fleet/control")
            data = resp.json()
            return data if resp.status_code == 200 and isinstance(data, dict) else None
        except (httpx.HTTPError, ValueError):
            return None


def _loopback_url(url: str) -> bool:
    host = httpx.URL(url).host
    return bool(host) and is_loopback_host(host)
