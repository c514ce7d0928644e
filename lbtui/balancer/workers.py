"""Several processes serving one listener (``[listener] workers = N``).

One Python process tops out at one core. With ``workers = N`` the process that ``lbtui serve``
started (the *primary*, worker 0) starts N - 1 *workers*, and every one of them binds the
listener with ``SO_REUSEPORT``: the kernel spreads new connections over them (nginx's
``listen ... reuseport``). Each process runs the whole pipeline on its own event loop; what
must be one balancer rather than N is shared:

- **Rate limits and the concurrency cap** live in shared memory behind one lock
  (``shared.py``), like nginx's ``limit_req_zone``: a client's connections land on any process,
  so per-process quotas would be wrong.
- **Breaker trips and ejections** made by traffic in one process are adopted by all the others
  (a message through the primary), so a failing backend stops getting traffic from every
  process, not only from the one that noticed. Each process still judges the calls it saw;
  half-open probes start together, from the shared deadline, one set per process.
- **Operator actions and health checks**: the admin API and the active checks run only in the
  primary; every action (weights, drain, faults, limits, algorithm, breaker overrides,
  backends added or removed) and every check result is replayed in each worker.
- **Records and events**: each worker sends its outcome records four times a second and its
  traffic-made events as they happen; the primary's admin API, ``/metrics`` and consoles show
  the sum, events carry ``worker=N``.

Workers are started with ``multiprocessing``'s ``spawn``: a program embedding the balancer with
workers must start it under ``if __name__ == "__main__":``, as ``multiprocessing`` requires
(``lbtui serve`` does). The primary also claims the address (``BalancerServer._claim_port``),
so that no second balancer joins the ``SO_REUSEPORT`` group by mistake.

A worker that dies is started again (its last records kept in the totals, so counters never go
back); a worker whose primary is gone stops. Messages are pickled over one pipe per worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import logging
import multiprocessing
import os
import signal
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

from lbtui.balancer.pool import AdminState
from lbtui.balancer.proxy import Proxy
from lbtui.balancer.shared import SharedLimits, SharedLimitsHandle
from lbtui.config import Config
from lbtui.core.breaker import BreakerState
from lbtui.core.events import Event, EventKind

log = logging.getLogger("lbtui.workers")

SPAWN = multiprocessing.get_context("spawn")
REPORT_S = 0.25
"""How often a worker sends its records to the primary."""
READY_TIMEOUT_S = 30.0
RESTART_BACKOFF_S = (0.5, 1.0, 2.0, 5.0)
"""Delay before restarting a worker that died, by how many times it died in the last minute."""

_FORWARDED = {EventKind.BREAKER, EventKind.EJECTION, EventKind.FALLBACK, EventKind.RETRY_BUDGET}


def _worth_forwarding(event: Event) -> bool:
    """Events a worker's traffic made. Everything else (actions, faults, limits, health, and the
    timer-made changes: half-open, readmission on expiry, panic) happens identically in the
    primary, which tells it once."""
    if event.kind not in _FORWARDED:
        return False
    if event.kind is EventKind.BREAKER:
        return event.data.get("new") != "half_open"
    if event.kind is EventKind.EJECTION:
        return event.data.get("change") in ("ejected", "ejection_skipped")
    return True


@dataclass(frozen=True)
class WorkerArgs:
    config_json: str
    """The primary's config, with the listener's port fixed to the one it bound."""
    index: int
    shared: SharedLimitsHandle
    replay: list[tuple[str, tuple[Any, ...]]]
    """The actions and check results replicated so far, to catch up when (re)started."""


# -- the worker side -------------------------------------------------------------------------


def worker_main(args: WorkerArgs, conn: Connection) -> None:
    """A worker process's entry point (started with multiprocessing's ``spawn``)."""
    # Ctrl-C reaches the whole process group: the primary decides when workers stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.basicConfig(level=logging.WARNING, format=f"lbtui worker {args.index}: %(message)s")
    from lbtui.runtime import run_async

    config = Config.model_validate_json(args.config_json)
    run_async(_serve_worker(config, args, conn))


class _PrimaryLink:
    """A worker's pipe to the primary."""

    def __init__(self, conn: Connection, proxy: Proxy, index: int) -> None:
        self.conn = conn
        self.proxy = proxy
        self.index = index
        self.muted = False
        self.stop = asyncio.Event()
        self.grace_s: float | None = None

    def send(self, message: tuple[Any, ...]) -> None:
        try:
            self.conn.send(message)
        except (OSError, ValueError):  # the primary is gone
            self.stop.set()

    def sync(self, message: tuple[Any, ...]) -> None:
        self.send(("sync", message))

    def event(self, event: Event) -> None:
        if not self.muted and _worth_forwarding(event):
            self.send(
                ("event", event.kind.value, event.message, event.backend, event.at, event.data)
            )

    def call(self, method: str, args: tuple[Any, ...]) -> None:
        self.muted = True
        try:
            getattr(self.proxy, method)(*args)
        except Exception as exc:  # the primary did it already; it cannot fail differently here
            log.warning("replaying %s%r failed: %s", method, args, exc)
        finally:
            self.muted = False

    def readable(self) -> None:
        try:
            while self.conn.poll():
                message = self.conn.recv()
                kind = message[0]
                if kind == "call":
                    self.call(message[1], message[2])
                elif kind == "adopt":
                    self.proxy.adopt(message[1], message[2])
                elif kind == "stop":
                    self.grace_s = message[1]
                    self.stop.set()
        except (EOFError, OSError):  # the primary is gone: stop
            self.stop.set()


async def _serve_worker(config: Config, args: WorkerArgs, conn: Connection) -> None:
    from lbtui.balancer.server import BalancerServer

    shared = SharedLimits.attach(args.shared, args.index)
    proxy = Proxy(config, shared=shared)
    link = _PrimaryLink(conn, proxy, args.index)
    for method, call_args in args.replay:
        link.call(method, call_args)
    proxy.on_sync = link.sync
    proxy.events.subscribe(link.event)
    server = BalancerServer(config, proxy, worker_index=args.index)
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, link.stop.set)
    await server.start()
    gc.collect()
    gc.freeze()
    loop.add_reader(conn.fileno(), link.readable)
    link.send(("ready", os.getpid()))

    async def report() -> None:
        while True:
            await asyncio.sleep(REPORT_S)
            link.send(("records", proxy.records()))

    reporter = asyncio.create_task(report())
    try:
        await link.stop.wait()
    finally:
        loop.remove_reader(conn.fileno())
        await server.stop(link.grace_s)
        reporter.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reporter
        link.send(("records", proxy.records()))
        link.send(("stopped",))
        conn.close()
        shared.close()


# -- the primary side ------------------------------------------------------------------------


class _Worker:
    def __init__(self, index: int, process: BaseProcess, conn: Connection) -> None:
        self.index = index
        self.process = process
        self.conn = conn
        self.ready: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.alive = True
        self.gone = asyncio.Event()


class WorkerGroup:
    """The primary's view of its workers: starts them, relays between them, stops them."""

    def __init__(
        self, config: Config, proxy: Proxy, shared: SharedLimits, count: int, port: int
    ) -> None:
        self.proxy = proxy
        self.shared = shared
        self.count = count
        host = config.listener.host
        address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        listener = config.listener.model_copy(update={"address": address})
        self._config = config.model_copy(update={"listener": listener})
        self._backend_configs = {b.name: b for b in config.backends}
        """Every backend's config, those added at run time included."""
        self._workers: dict[int, _Worker] = {}
        self._health: dict[str, deque[tuple[str, tuple[Any, ...]]]] = {}
        self._health_keep = max(config.health.rise, config.health.fall)
        self._deaths: dict[int, deque[float]] = {}
        self._restarts: set[asyncio.Task[None]] = set()
        self._stopping = False
        self._started = False
        self.on_change: Callable[[], None] | None = None

    @property
    def pids(self) -> dict[int, int]:
        """The process ids of the workers serving, by index (the primary, 0, is not in it)."""
        return dict(self.proxy.peer_pids)

    async def start(self) -> None:
        self.proxy.replicate = self.replicate
        self.proxy.on_sync = self._primary_sync
        started = [self._spawn(i) for i in range(1, self.count)]
        try:
            await asyncio.wait_for(asyncio.gather(*(w.ready for w in started)), READY_TIMEOUT_S)
        except BaseException:
            await self.stop(0.0)
            raise
        self._started = True

    def _spawn(self, index: int) -> _Worker:
        loop = asyncio.get_running_loop()
        here, there = SPAWN.Pipe(duplex=True)
        config, replay = self._catch_up()
        args = WorkerArgs(config.model_dump_json(), index, self.shared.handle, replay)
        process = SPAWN.Process(
            target=worker_main, args=(args, there), name=f"lbtui-worker-{index}", daemon=True
        )
        process.start()
        there.close()
        worker = _Worker(index, process, here)
        self._workers[index] = worker
        loop.add_reader(here.fileno(), self._readable, worker)
        loop.add_reader(process.sentinel, self._exited, worker)
        return worker

    # messages from workers

    def _readable(self, worker: _Worker) -> None:
        try:
            while worker.conn.poll():
                self._handle(worker, worker.conn.recv())
        except (EOFError, OSError):
            asyncio.get_running_loop().remove_reader(worker.conn.fileno())

    def _handle(self, worker: _Worker, message: tuple[Any, ...]) -> None:
        kind = message[0]
        if kind == "records":
            self.proxy.peer_records[worker.index] = message[1]
        elif kind == "event":
            _, ev_kind, text, backend, at, data = message
            self.proxy.events.emit(
                EventKind(ev_kind), text, backend=backend, at=at, worker=worker.index, **data
            )
        elif kind == "sync":
            origin = f"worker {worker.index}"
            self.proxy.adopt(message[1], origin)
            self._send_all(("adopt", message[1], origin), but=worker.index)
        elif kind == "ready" and not worker.ready.done():
            self.proxy.peer_pids[worker.index] = message[1]
            worker.ready.set_result(message[1])

    def _exited(self, worker: _Worker) -> None:
        loop = asyncio.get_running_loop()
        loop.remove_reader(worker.process.sentinel)
        with contextlib.suppress(EOFError, OSError):
            self._readable(worker)  # its last records
        with contextlib.suppress(ValueError, OSError):
            loop.remove_reader(worker.conn.fileno())
        worker.conn.close()
        worker.process.join(1.0)  # it has exited: this reaps it
        worker.alive = False
        worker.gone.set()
        self.proxy.peer_pids.pop(worker.index, None)
        code = worker.process.exitcode
        self._retire(worker.index)
        self.shared.forget_worker(worker.index)
        if not worker.ready.done():
            worker.ready.set_exception(
                RuntimeError(f"worker {worker.index} exited with code {code} before it listened")
            )
            worker.ready.exception()  # retrieved: a restart's failure is told by an event
            if not self._started:
                return  # the start fails, and says why
        if self._stopping:
            return
        now = loop.time()
        deaths = self._deaths.setdefault(worker.index, deque(maxlen=len(RESTART_BACKOFF_S)))
        while deaths and now - deaths[0] > 60.0:
            deaths.popleft()
        deaths.append(now)
        delay = RESTART_BACKOFF_S[len(deaths) - 1]
        self.proxy.events.emit(
            EventKind.CONFIG,
            f"worker {worker.index} (pid {worker.process.pid}) exited with code {code}; "
            f"starting it again in {delay:g} s",
            worker=worker.index,
            pid=worker.process.pid,
            exit_code=code,
        )
        task = loop.create_task(self._restart(worker.index, delay))
        self._restarts.add(task)
        task.add_done_callback(self._restarts.discard)

    def _retire(self, index: int) -> None:
        """Keep a gone worker's counts in the totals under a key of their own, so that no
        counter goes back; it has nothing in flight any more."""
        records = self.proxy.peer_records.pop(index, None)
        if records is None:
            return
        records.balancer.in_flight = 0
        for rec in records.backends.values():
            rec.in_flight = 0
        records.connections.clear()
        key = -1 - len([k for k in self.proxy.peer_records if k < 0])
        self.proxy.peer_records[key] = records

    async def _restart(self, index: int, delay: float) -> None:
        await asyncio.sleep(delay)
        if self._stopping:
            return
        worker = self._spawn(index)
        try:
            pid = await asyncio.wait_for(asyncio.shield(worker.ready), READY_TIMEOUT_S)
        except Exception as exc:
            # Died (``_exited`` schedules the next try) or hangs: then it is killed, same thing.
            log.warning("worker %d did not start again: %s", index, exc)
            if worker.alive and worker.process.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(worker.process.pid, signal.SIGKILL)
            return
        self.proxy.events.emit(
            EventKind.CONFIG, f"worker {index} started again (pid {pid})", worker=index, pid=pid
        )

    def _catch_up(self) -> tuple[Config, list[tuple[str, tuple[Any, ...]]]]:
        """What a worker (re)started now needs to be where the primary is: the current state,
        not the history of actions (a history would bring back expired faults and old limits,
        and grow without end). The config carries the backends (with their weights), the
        limits and the algorithm; the calls, the rest."""
        p = self.proxy
        now = p.clock()
        names = [n for n in p.backends if n in self._backend_configs]
        backends = [
            self._backend_configs[n].model_copy(update={"weight": p.backends[n].configured_weight})
            for n in names
        ]
        routes = []
        for r in self._config.routes:
            kept = [n for n in r.backends if n in p.backends]
            if kept:  # a route whose backends were all removed sends nothing anywhere
                routes.append(r.model_copy(update={"backends": kept}))
        config = self._config.model_copy(
            update={
                "backends": backends,
                "routes": routes,
                "limits": p.admission.config,
                "balancer": self._config.balancer.model_copy(
                    update={"algorithm": p.default_pool.algorithm}
                ),
            }
        )
        calls: list[tuple[str, tuple[Any, ...]]] = []
        msg: tuple[Any, ...]
        for name in names:
            b = p.backends[name]
            if b.admin is not AdminState.ACTIVE:
                calls.append(("set_admin", (name, b.admin)))
            if b.breaker is not None and b.breaker_enabled:
                state = b.breaker.state
                if state is BreakerState.FORCED_OPEN:
                    calls.append(("force_breaker", (name, "open")))
                elif state is BreakerState.DISABLED:
                    calls.append(("force_breaker", (name, "disabled")))
                elif state is BreakerState.OPEN:
                    st = b.breaker.stats(now)
                    # No time: the new breaker has nothing newer than this to keep.
                    msg = ("breaker", name, "open", st.open_until, st.reason, None)
                    calls.append(("adopt", (msg, "worker 0")))
            ej = p.outliers.stats(name, now)
            if ej.ejected and ej.ejected_until is not None:
                msg = ("eject", name, ej.ejected_until, ej.times_ejected, ej.reason)
                calls.append(("adopt", (msg, "worker 0")))
            fault = p.faults.stats(name)
            if fault is not None and fault.active:
                spec = fault.spec
                if fault.expires_at is not None:
                    left = fault.expires_at - now
                    if left <= 0:
                        continue
                    spec = dataclasses.replace(spec, duration_s=left)
                calls.append(("set_fault_of", (name, spec, fault.owner)))
        for name in names:
            calls.extend(self._health.get(name, ()))
        return config, calls

    # to workers

    def _send_all(self, message: tuple[Any, ...], but: int | None = None) -> None:
        for i, w in self._workers.items():
            if w.alive and i != but:
                with contextlib.suppress(OSError, ValueError):
                    w.conn.send(message)

    def replicate(self, method: str, args: tuple[Any, ...]) -> None:
        if method == "health_result_of":
            kept = self._health.setdefault(args[0], deque(maxlen=self._health_keep))
            kept.append((method, args))
        elif method == "add_backend":
            self._backend_configs[args[0].name] = args[0]
        elif method == "remove_backend":
            self._health.pop(args[0], None)
            self._backend_configs.pop(args[0], None)
        self._send_all(("call", method, args))

    def _primary_sync(self, message: tuple[Any, ...]) -> None:
        self._send_all(("adopt", message, "worker 0"))

    async def stop(self, grace_s: float) -> None:
        """Ask every worker to drain within ``grace_s``; kill the ones still there after."""
        self._stopping = True
        for task in list(self._restarts):
            task.cancel()
        self._send_all(("stop", grace_s))
        gone = [w.gone.wait() for w in self._workers.values() if w.alive]
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*gone), grace_s + 5.0)
        for w in self._workers.values():
            if w.alive and w.process.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(w.process.pid, signal.SIGKILL)
                w.process.join(1.0)
                self._exited(w)
        self.proxy.replicate = None
        self.proxy.on_sync = None
