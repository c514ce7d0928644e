"""The supervisor: start demo backends as real OS processes, break them, heal them, stop them.

Every backend is ``sys.executable -m lbtui.fleet.backend ...`` in its own session (so a Ctrl-C
at the terminal reaches the supervisor, which then stops its children in order). A backend
announces itself with one JSON line on stdout; :meth:`Fleet.start` waits for it with a deadline
and records the port the kernel chose, which :meth:`Fleet.restart` binds again.

Children never outlive the supervisor:

- each child asks Linux for ``PR_SET_PDEATHSIG`` = SIGKILL (``--parent-pid``), so even a
  SIGKILLed supervisor takes its fleet with it. The signal follows the *thread* that spawned
  the child: run the fleet's event loop in a thread that lives as long as the fleet;
- an ``atexit`` hook SIGKILLs whatever a Fleet still has running at interpreter exit;
- :meth:`Fleet.stop` (and ``async with``) sends SIGTERM, then SIGKILL after a deadline, and
  reaps every child.

The supervisor installs no signal handlers of its own: the application owns those (the
``lbtui fleet`` command turns SIGINT/SIGTERM into :meth:`Fleet.stop`).

Knob changes go to each backend's ``/_fleet/control`` endpoint. They last until the process
does: a restarted backend starts again from its :class:`BackendSpec` — a fresh process.
"""

from __future__ import annotations

import asyncio
import atexit
import collections
import contextlib
import json
import os
import signal
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import aiohttp
import psutil  # type: ignore[import-untyped, unused-ignore]
from pydantic import ValidationError

from lbtui.errors import LbtuiError
from lbtui.fleet.spec import BackendSpec, KnobsUpdate, describe_validation_error, is_loopback_host

__all__ = ["BackendSpec", "BackendStats", "Fleet", "FleetError", "Member", "ProcessStats"]

STDERR_TAIL_LINES = 20
"""Lines of a backend's stderr kept to explain why it failed."""

# pids this interpreter spawned and has not reaped yet; the atexit hook SIGKILLs them
_LIVE_PIDS: set[int] = set()


def _kill_leftovers() -> None:
    for pid in list(_LIVE_PIDS):
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    _LIVE_PIDS.clear()


atexit.register(_kill_leftovers)


class FleetError(LbtuiError):
    """A backend could not be started, reached or controlled; names the backend and why."""

    def __init__(self, backend: str, detail: str) -> None:
        self.backend = backend
        self.detail = detail
        super().__init__(f"backend {backend}: {detail}")


@dataclass(frozen=True)
class Member:
    """One backend of the fleet as it is now."""

    name: str
    url: str
    """``http://127.0.0.1:PORT`` (no trailing slash)."""
    port: int
    pid: int | None
    """The current process's pid; None before the first start."""
    alive: bool
    spec: BackendSpec
    restarts: int


@dataclass(frozen=True)
class ProcessStats:
    """One backend's OS-level figures (psutil). ``cpu_percent`` is since the previous call
    (0.0 on the first), 100 = one core."""

    name: str
    pid: int | None
    alive: bool
    cpu_percent: float
    rss_bytes: int


@dataclass(frozen=True)
class BackendStats:
    """A backend's ``GET /_fleet/stats``: what the process itself counted since it started."""

    name: str
    pid: int
    uptime_s: float
    requests_total: int
    by_method: dict[str, int]
    by_status: dict[int, int]
    bytes_in: int
    bytes_out: int
    in_flight: int
    held: int
    request_ids_distinct: int
    request_ids_repeated: int
    """Ids seen more than once: a request delivered twice (for "no POST sent twice" checks)."""
    requests_without_id: int
    request_ids_capped: bool

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> BackendStats:
        return cls(
            name=str(d["name"]),
            pid=int(d["pid"]),
            uptime_s=float(d["uptime_s"]),
            requests_total=int(d["requests_total"]),
            by_method={str(k): int(v) for k, v in d["by_method"].items()},
            by_status={int(k): int(v) for k, v in d["by_status"].items()},
            bytes_in=int(d["bytes_in"]),
            bytes_out=int(d["bytes_out"]),
            in_flight=int(d["in_flight"]),
            held=int(d["held"]),
            request_ids_distinct=int(d["request_ids_distinct"]),
            request_ids_repeated=int(d["request_ids_repeated"]),
            requests_without_id=int(d["requests_without_id"]),
            request_ids_capped=bool(d["request_ids_capped"]),
        )


ExitCallback = Callable[[str, int, bool], None]
"""``on_exit(name, returncode, expected)``: a backend process ended; ``expected`` is False when
it was not :meth:`Fleet.kill`, :meth:`Fleet.restart` or :meth:`Fleet.stop` that ended it."""


class _Slot:
    """The supervisor's bookkeeping for one backend (mutable; never handed out)."""

    def __init__(self, spec: BackendSpec, host: str) -> None:
        self.spec = spec
        self.host = host
        self.port = spec.port
        self.proc: asyncio.subprocess.Process | None = None
        self.ps: Any = None  # psutil.Process of the current child
        self.stderr_tail: collections.deque[str] = collections.deque(maxlen=STDERR_TAIL_LINES)
        self.tasks: list[asyncio.Task[None]] = []
        self.expect_exit = False
        self.restarts = 0
        self.lock = asyncio.Lock()

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def member(self) -> Member:
        return Member(
            name=self.spec.name,
            url=self.url,
            port=self.port,
            pid=self.proc.pid if self.proc else None,
            alive=self.alive,
            spec=self.spec,
            restarts=self.restarts,
        )


class Fleet:
    """Demo backends as real processes: ``async with Fleet(specs) as fleet: ...``."""

    def __init__(
        self,
        specs: Sequence[BackendSpec],
        *,
        host: str = "127.0.0.1",
        ready_timeout_s: float = 15.0,
        stop_timeout_s: float = 3.0,
        control_timeout_s: float = 2.0,
        on_exit: ExitCallback | None = None,
    ) -> None:
        if not specs:
            raise ValueError("a fleet needs at least one backend")
        names = [s.name for s in specs]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"backend names must be unique; repeated: {', '.join(dupes)}")
        if not is_loopback_host(host):
            raise ValueError(f"the fleet listens on loopback only, not {host!r}")
        self._host = host.strip("[]")
        self._slots: dict[str, _Slot] = {s.name: _Slot(s, self._host) for s in specs}
        self.ready_timeout_s = ready_timeout_s
        self.stop_timeout_s = stop_timeout_s
        self.control_timeout_s = control_timeout_s
        self._on_exit = on_exit
        self._session: aiohttp.ClientSession | None = None

    # --- lifecycle

    async def __aenter__(self) -> Fleet:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        """Spawn every backend at once and wait for each one's ready line.

        On any failure every backend already started is stopped and :class:`FleetError` raised.
        """
        running = [slot.spec.name for slot in self._slots.values() if slot.alive]
        if running:
            raise FleetError(running[0], "is already running: start() a fleet once")
        try:
            results = await asyncio.gather(
                *(self._spawn(slot) for slot in self._slots.values()), return_exceptions=True
            )
            for r in results:
                if isinstance(r, BaseException):
                    raise r
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        """SIGTERM every backend, SIGKILL what is left after ``stop_timeout_s``, reap all."""
        for slot in self._slots.values():
            slot.expect_exit = True
            if slot.alive and slot.proc is not None:
                with contextlib.suppress(ProcessLookupError):
                    slot.proc.terminate()
        slots = self._slots.values()
        await asyncio.gather(*(self._reap(slot, self.stop_timeout_s) for slot in slots))
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def kill(self, name: str) -> None:
        """SIGKILL one backend and wait until the process is reaped (its port then refuses)."""
        slot = self._slot(name)
        async with slot.lock:
            await self._kill(slot)

    async def restart(self, name: str) -> Member:
        """Respawn one backend on the port it had (killing it first if it runs); wait ready."""
        slot = self._slot(name)
        async with slot.lock:
            await self._kill(slot)
            slot.restarts += 1
            await self._spawn(slot)
            return slot.member()

    # --- views

    @property
    def backends(self) -> list[Member]:
        return [slot.member() for slot in self._slots.values()]

    def member(self, name: str) -> Member:
        return self._slot(name).member()

    def url(self, name: str) -> str:
        return self._slot(name).url

    def process_stats(self) -> list[ProcessStats]:
        out: list[ProcessStats] = []
        for name, slot in self._slots.items():
            cpu, rss = 0.0, 0
            if slot.alive and slot.ps is not None:
                try:
                    with slot.ps.oneshot():
                        cpu = float(slot.ps.cpu_percent(interval=None))
                        rss = int(slot.ps.memory_info().rss)
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    pass
            pid = slot.proc.pid if slot.proc else None
            out.append(ProcessStats(name, pid, slot.alive, cpu, rss))
        return out

    # --- the backends' own endpoints

    async def set_knobs(self, name: str, **knobs: float | int | bool) -> dict[str, Any]:
        """Change a running backend's knobs (any of latency_ms, jitter_ms, error_rate,
        error_status, size, hang); returns the knobs the backend now has."""
        try:
            update = KnobsUpdate.model_validate(knobs)
        except ValidationError as exc:
            raise FleetError(name, "; ".join(describe_validation_error(exc))) from None
        body = update.model_dump(exclude_none=True)
        return await self._call(name, "POST", "/_fleet/control", body)

    async def get_knobs(self, name: str) -> dict[str, Any]:
        return await self._call(name, "GET", "/_fleet/control")

    async def stats(self, name: str) -> BackendStats:
        return BackendStats.from_json(await self._call(name, "GET", "/_fleet/stats"))

    async def _call(
        self, name: str, method: str, path: str, body: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        slot = self._slot(name)
        if not slot.alive:
            raise FleetError(name, "is not running")
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.control_timeout_s)
            )
        try:
            async with self._session.request(method, slot.url + path, json=body) as resp:
                data = await resp.json()
                if resp.status != 200:
                    raise FleetError(name, f"{method} {path} → {resp.status}: {data}")
                if not isinstance(data, dict):
                    raise FleetError(name, f"{method} {path}: expected a JSON object")
                return data
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise FleetError(name, f"{method} {path} failed: {exc!r}") from exc

    # --- processes

    def _slot(self, name: str) -> _Slot:
        try:
            return self._slots[name]
        except KeyError:
            raise FleetError(name, f"no such backend (have {', '.join(self._slots)})") from None

    async def _spawn(self, slot: _Slot) -> None:
        spec = slot.spec
        argv = [
            sys.executable, "-m", "lbtui.fleet.backend",
            "--name", spec.name,
            "--host", slot.host,
            "--port", str(slot.port),
            "--latency-ms", repr(spec.latency_ms),
            "--jitter-ms", repr(spec.jitter_ms),
            "--error-rate", repr(spec.error_rate),
            "--error-status", str(spec.error_status),
            "--size", str(spec.size),
            "--parent-pid", str(os.getpid()),
        ]  # fmt: skip
        slot.stderr_tail.clear()
        slot.expect_exit = False
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
        )
        slot.proc = proc
        _LIVE_PIDS.add(proc.pid)
        try:
            slot.ps = psutil.Process(proc.pid)
            slot.ps.cpu_percent(interval=None)  # prime: the next call measures from here
        except psutil.Error:
            slot.ps = None
        assert proc.stdout is not None
        assert proc.stderr is not None
        stderr_task = asyncio.create_task(_drain(proc.stderr, slot.stderr_tail))
        try:
            ready = await self._read_ready(slot, proc, stderr_task)
        except BaseException:
            slot.expect_exit = True
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await self._reap(slot, self.stop_timeout_s)
            stderr_task.cancel()
            raise
        slot.port = int(ready["port"])
        slot.tasks = [
            stderr_task,
            asyncio.create_task(_drain(proc.stdout, None)),
            asyncio.create_task(self._watch(slot, proc)),
        ]

    async def _read_ready(
        self, slot: _Slot, proc: asyncio.subprocess.Process, stderr_task: asyncio.Task[None]
    ) -> dict[str, Any]:
        name = slot.spec.name
        assert proc.stdout is not None
        try:
            line = await asyncio.wait_for(proc.stdout.readline(), self.ready_timeout_s)
        except TimeoutError:
            raise FleetError(
                name, f"not ready within {self.ready_timeout_s:g} s{_tail(slot)}"
            ) from None
        if not line:
            # the child is gone or going: let its stderr reach EOF so the reason is complete
            await asyncio.wait([stderr_task], timeout=1.0)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proc.wait(), 1.0)
            raise FleetError(name, f"exited with code {proc.returncode} before ready{_tail(slot)}")
        try:
            ready = json.loads(line)
            if not (isinstance(ready, dict) and ready.get("ready") and "port" in ready):
                raise ValueError("not a ready line")
        except ValueError:
            raise FleetError(name, f"unexpected first line {line[:200]!r}") from None
        return ready

    async def _watch(self, slot: _Slot, proc: asyncio.subprocess.Process) -> None:
        code = await proc.wait()
        _LIVE_PIDS.discard(proc.pid)
        if self._on_exit is not None:
            self._on_exit(slot.spec.name, code, slot.expect_exit)

    async def _kill(self, slot: _Slot) -> None:
        slot.expect_exit = True
        if slot.alive and slot.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                slot.proc.kill()
        await self._reap(slot, self.stop_timeout_s)

    async def _reap(self, slot: _Slot, timeout_s: float) -> None:
        """Wait for the current process to end (SIGKILL after ``timeout_s``); end its tasks."""
        proc = slot.proc
        if proc is not None:
            try:
                await asyncio.wait_for(proc.wait(), timeout_s)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await asyncio.wait_for(proc.wait(), timeout_s)
            _LIVE_PIDS.discard(proc.pid)
        tasks, slot.tasks = slot.tasks, []
        if tasks:
            # the pipes close with the process, so the drains end by themselves; bounded anyway
            _done, pending = await asyncio.wait(tasks, timeout=1.0)
            for t in pending:
                t.cancel()
            if pending:
                await asyncio.wait(pending, timeout=1.0)


async def _drain(stream: asyncio.StreamReader, keep: collections.deque[str] | None) -> None:
    """Read a child's pipe until EOF (the child's exit), keeping the last lines if asked."""
    while True:  # ends at EOF, which comes when the process exits
        line = await stream.readline()
        if not line:
            return
        if keep is not None:
            keep.append(line.decode(errors="replace").rstrip())


def _tail(slot: _Slot) -> str:
    if not slot.stderr_tail:
        return ""
    return "; stderr: " + " | ".join(slot.stderr_tail)
