"""Several processes serving every listener (``[listener] workers = N``).

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
back); a worker whose primary is gone stops. Messages are pickled over one non-blocking channel
per worker (``_Channel``).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import gc
import logging
import multiprocessing
import os
import pickle
import signal
import socket
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import TYPE_CHECKING, Any, cast

from lbtui.balancer import operations as ops
from lbtui.balancer.operations import HealthResult, Operation
from lbtui.balancer.pool import AdminState
from lbtui.balancer.proxy import Proxy
from lbtui.balancer.shared import SharedLimits, SharedLimitsHandle
from lbtui.balancer.state import SyncMessage
from lbtui.config import Config, ListenerSpec, RouteConfig
from lbtui.core.breaker import BreakerState
from lbtui.core.events import (
    BreakerChanged,
    EjectionChanged,
    Event,
    FallbackServed,
    RetryBudgetExhausted,
    WorkerExited,
    WorkerRestarted,
)

if TYPE_CHECKING:
    from lbtui.balancer.server import BalancerServer

log = logging.getLogger("lbtui.workers")

SPAWN = multiprocessing.get_context("spawn")
REPORT_S = 0.25
"""How often a worker sends its records to the primary."""
READY_TIMEOUT_S = 30.0
REPORT_BACKLOG = 1 << 20
"""A worker skips a report while this much it sent is still unread by the primary."""
STUCK_BACKLOG = 16 << 20
"""A worker that leaves this much unread has stopped: it is killed and started again."""
RESTART_BACKOFF_S = (0.5, 1.0, 2.0, 5.0)
"""Delay before restarting a worker that died, by how many times it died in the last minute."""


def _worth_forwarding(event: Event) -> bool:
    """Events a worker's traffic made. Everything else (actions, faults, limits, health, and the
    timer-made changes: half-open, readmission on expiry, panic) happens identically in the
    primary, which tells it once."""
    match event:
        case BreakerChanged(new=new):
            return new != "half_open"
        case EjectionChanged(change=change):
            return change in ("ejected", "ejection_skipped")
        case FallbackServed() | RetryBudgetExhausted():
            return True
    return False


def bound_config(config: Config, listeners: list[ListenerSpec]) -> Config:
    """``config`` with every listener at the address the primary bound (a port 0 made
    concrete), which each worker binds in its turn with ``SO_REUSEPORT``."""
    listener = config.listener.model_copy(update={"address": listeners[0].address})
    update: dict[str, Any] = {"listener": listener}
    if config.listeners:
        update["listeners"] = listeners
    return config.model_copy(update=update)


@dataclass(frozen=True)
class WorkerArgs:
    config_json: str
    """The primary's config, with the listener's port fixed to the one it bound."""
    index: int
    shared: SharedLimitsHandle
    replay: list[Operation]
    """Operations that bring a (re)started worker to the primary's current state
    (``WorkerGroup._catch_up``)."""
    adopt: list[SyncMessage] = dataclasses.field(default_factory=list)
    """Breaker trips and ejections in force, to adopt as the primary's."""


class _Channel(asyncio.Protocol):
    """Pickled messages, each after its length (4 bytes), over one end of the socket pair
    ``multiprocessing.Pipe`` made. Sending never blocks the event loop: a process that stops
    reading (``SIGSTOP``, a hang) fills a buffer here, not a pipe the sender waits on; the
    sender reads ``backlog`` and decides (the primary kills such a worker; a worker drops
    record reports, which are whole totals each time, so nothing is lost but freshness)."""

    def __init__(
        self, on_message: Callable[[tuple[Any, ...]], None], on_lost: Callable[[], None]
    ) -> None:
        self._on_message = on_message
        self._on_lost = on_lost
        self._buf = bytearray()
        self.transport: asyncio.Transport | None = None
        self.closed = asyncio.Event()

    @classmethod
    async def open(
        cls,
        conn: Connection,
        on_message: Callable[[tuple[Any, ...]], None],
        on_lost: Callable[[], None],
    ) -> _Channel:
        sock = socket.socket(fileno=os.dup(conn.fileno()))
        conn.close()
        sock.setblocking(False)
        loop = asyncio.get_running_loop()
        _, channel = await loop.connect_accepted_socket(lambda: cls(on_message, on_lost), sock)
        return channel

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        buf = self._buf
        buf += data
        start = 0
        while len(buf) - start >= 4:
            size = int.from_bytes(buf[start : start + 4], "big")
            end = start + 4 + size
            if len(buf) < end:
                break
            message = pickle.loads(buf[start + 4 : end])
            start = end
            try:
                self._on_message(message)
            except Exception:  # one bad message must not end the channel
                log.exception("handling %r failed", message[0])
        del buf[:start]

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.closed.set()
        self._on_lost()

    def send(self, message: tuple[Any, ...]) -> None:
        if self.transport is not None and not self.transport.is_closing():
            data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
            self.transport.write(len(data).to_bytes(4, "big") + data)

    @property
    def backlog(self) -> int:
        """Bytes written and not yet taken by the other process."""
        return self.transport.get_write_buffer_size() if self.transport is not None else 0

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


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
    """A worker's channel to the primary."""

    def __init__(self, proxy: Proxy, index: int) -> None:
        self.channel: _Channel | None = None
        self.proxy = proxy
        self.index = index
        self.muted = False
        self.stop = asyncio.Event()
        self.grace_s: float | None = None
        self.server: BalancerServer | None = None
        """Set once it is built: a reload changes its listeners too."""

    def send(self, message: tuple[Any, ...]) -> None:
        if self.channel is not None:
            self.channel.send(message)

    def report(self) -> None:
        """Send this process's records, unless the primary has not taken the last ones yet
        (each report is whole totals: skipping one loses nothing but freshness)."""
        if self.channel is not None and self.channel.backlog < REPORT_BACKLOG:
            self.channel.send(("records", self.proxy.records()))

    def sync(self, message: tuple[Any, ...]) -> None:
        self.send(("sync", message))

    def event(self, event: Event) -> None:
        if not self.muted and _worth_forwarding(event):
            self.send(("event", event))

    def apply(self, op: Operation) -> None:
        """Apply an operation the primary applied (its events are the primary's to tell); a
        reload opens and closes this worker's listeners too."""
        self.muted = True
        try:
            self.proxy.act(op)
            if isinstance(op, ops.Reload) and self.server is not None:
                self.server.after_reload(op.config, op.changes)
        except Exception as exc:  # the primary did it already; it cannot fail differently here
            log.warning("applying %r failed: %s", op, exc)
        finally:
            self.muted = False

    def received(self, message: tuple[Any, ...]) -> None:
        kind = message[0]
        if kind == "apply":
            self.apply(message[1])
        elif kind == "adopt":
            self.proxy.adopt(message[1], message[2])
        elif kind == "stop":
            self.grace_s = message[1]
            self.stop.set()


async def _serve_worker(config: Config, args: WorkerArgs, conn: Connection) -> None:
    from lbtui.balancer.server import BalancerServer

    shared = SharedLimits.attach(args.shared, args.index)
    proxy = Proxy(config, shared=shared)
    link = _PrimaryLink(proxy, args.index)
    for op in args.replay:
        link.apply(op)
    for sync in args.adopt:
        proxy.adopt(sync, "worker 0")
    proxy.on_sync = link.sync
    proxy.events.subscribe(link.event)
    server = BalancerServer(config, proxy, worker_index=args.index)
    link.server = server
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, link.stop.set)
    loop.add_signal_handler(signal.SIGUSR1, server.reopen_access_log)
    await server.start()
    gc.collect()
    gc.freeze()
    # The primary gone (its end closed): stop.
    link.channel = await _Channel.open(conn, link.received, link.stop.set)
    link.send(("ready", os.getpid()))

    async def report() -> None:
        while True:
            await asyncio.sleep(REPORT_S)
            try:
                link.report()
            except Exception:  # a report that cannot be made must not end the next ones
                log.exception("worker %d: reporting failed", args.index)

    reporter = asyncio.create_task(report())
    try:
        await link.stop.wait()
    finally:
        await server.stop(link.grace_s)
        reporter.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reporter
        link.send(("records", proxy.records()))
        channel = link.channel
        if channel is not None:
            channel.close()  # after what is written: the last records reach the primary
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(channel.closed.wait(), 5.0)
        shared.close()


# -- the primary side ------------------------------------------------------------------------


class _Worker:
    def __init__(self, index: int, process: BaseProcess) -> None:
        self.index = index
        self.process = process
        self.channel: _Channel | None = None
        self.pending: list[tuple[Any, ...]] = []
        self.ready: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.exited = False
        """The process has ended (its sentinel)."""
        self.eof = False
        """Its channel has ended: everything it sent has been read."""
        self.gone = asyncio.Event()
        """Set once it has ended and everything it sent has been read (``_exited``)."""

    @property
    def alive(self) -> bool:
        return not self.gone.is_set()


class WorkerGroup:
    """The primary's view of its workers: starts them, relays between them, stops them."""

    def __init__(
        self,
        config: Config,
        proxy: Proxy,
        shared: SharedLimits,
        count: int,
        listeners: list[ListenerSpec],
    ) -> None:
        self.proxy = proxy
        self.shared = shared
        self.count = count
        self._config = bound_config(config, listeners)
        self._backend_configs = {b.name: b for b in config.backends}
        """Every backend's config, those added at run time included."""
        self._workers: dict[int, _Worker] = {}
        self._health: dict[str, deque[HealthResult]] = {}
        self._health_keep = max(config.health.rise, config.health.fall)
        self._deaths: dict[int, deque[float]] = {}
        self._restarts: set[asyncio.Task[None]] = set()
        self._stopping = False
        self._started = False

    @property
    def pids(self) -> dict[int, int]:
        """The process ids of the workers serving, by index (the primary, 0, is not in it)."""
        return dict(self.proxy.peer_pids)

    async def start(self) -> None:
        self.proxy.replicate = self.replicate
        self.proxy.on_sync = self._primary_sync
        started = [await self._spawn(i) for i in range(1, self.count)]
        try:
            await asyncio.wait_for(asyncio.gather(*(w.ready for w in started)), READY_TIMEOUT_S)
        except BaseException:
            await self.stop(0.0)
            raise
        self._started = True

    async def _spawn(self, index: int) -> _Worker:
        loop = asyncio.get_running_loop()
        here, there = SPAWN.Pipe(duplex=True)
        config, replay, adopt = self._catch_up()
        args = WorkerArgs(config.model_dump_json(), index, self.shared.handle, replay, adopt)
        process = SPAWN.Process(
            target=worker_main, args=(args, there), name=f"lbtui-worker-{index}", daemon=True
        )
        process.start()
        there.close()
        worker = _Worker(index, process)
        self._workers[index] = worker
        loop.add_reader(process.sentinel, self._sentinel, worker)
        worker.channel = await _Channel.open(
            here, functools.partial(self._handle, worker), functools.partial(self._eof, worker)
        )
        for message in worker.pending:  # sent while the channel was being opened
            worker.channel.send(message)
        worker.pending.clear()
        return worker

    # messages from workers

    def _handle(self, worker: _Worker, message: tuple[Any, ...]) -> None:
        kind = message[0]
        if kind == "records":
            self.proxy.peer_records[worker.index] = message[1]
        elif kind == "event":
            event: Event = message[1]
            self.proxy.events.emit(dataclasses.replace(event, worker=worker.index), at=event.at)
        elif kind == "sync":
            origin = f"worker {worker.index}"
            self.proxy.adopt(message[1], origin)
            self._send_all(("adopt", message[1], origin), but=worker.index)
        elif kind == "ready" and not worker.ready.done():
            self.proxy.peer_pids[worker.index] = message[1]
            worker.ready.set_result(message[1])

    def _sentinel(self, worker: _Worker) -> None:
        asyncio.get_running_loop().remove_reader(worker.process.sentinel)
        worker.exited = True
        if worker.eof or worker.channel is None:
            self._exited(worker)

    def _eof(self, worker: _Worker) -> None:
        """Its channel ended: at its exit (after its last messages), or it closed it."""
        worker.eof = True
        if worker.exited:
            self._exited(worker)

    def _exited(self, worker: _Worker) -> None:
        """The worker has ended and everything it sent has been read."""
        if not worker.alive:
            return
        loop = asyncio.get_running_loop()
        with contextlib.suppress(ValueError, OSError):
            loop.remove_reader(worker.process.sentinel)
        if worker.channel is not None:
            worker.channel.close()
        worker.process.join(1.0)  # it has exited: this reaps it
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
            WorkerExited(
                message=f"worker {worker.index} (pid {worker.process.pid}) exited with code "
                f"{code}; starting it again in {delay:g} s",
                worker=worker.index,
                pid=worker.process.pid,
                exit_code=code,
            )
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
        worker = await self._spawn(index)
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
            WorkerRestarted(
                message=f"worker {index} started again (pid {pid})", worker=index, pid=pid
            )
        )

    def _routes_now(self) -> list[RouteConfig]:
        """The config's routes as they are now: removed backends left out, forward weights as
        the operator set them."""
        p = self.proxy
        routes = []
        weights = {r.name: r.weights() for r in p.state.routes}
        for i, r in enumerate(self._config.routes):
            if r.backends is not None:
                kept = [n for n in r.backends if n in p.backends]
                if kept:  # a route whose backends were all removed sends nothing anywhere
                    routes.append(r.model_copy(update={"backends": kept}))
            elif r.forward is not None:
                now_w = weights.get(r.name or f"routes[{i}]", {})
                forward = [f.model_copy(update={"weight": now_w.get(f.group, f.weight)})
                           for f in r.forward]  # fmt: skip
                routes.append(r.model_copy(update={"forward": forward}))
            else:
                routes.append(r)
        return routes

    def _catch_up(self) -> tuple[Config, list[Operation], list[SyncMessage]]:
        """What a worker (re)started now needs to be where the primary is: the current state,
        not the history of actions (a history would bring back expired faults and old limits,
        and grow without end). The config carries the backends (with their weights), the
        limits and the algorithm; the operations and adopted trips and ejections, the rest."""
        p = self.proxy
        now = p.clock()
        names = [n for n in p.backends if n in self._backend_configs]
        backends = [
            self._backend_configs[n].model_copy(update={"weight": p.backends[n].configured_weight})
            for n in names
        ]
        routes = self._routes_now()
        live = p.state.groups
        groups = [  # members as they are now: removed ones gone, added ones in
            g.model_copy(
                update={
                    "backends": [b.name for b in live[g.name].backends] if g.name in live else []
                }
            )
            for g in self._config.groups
        ]
        config = self._config.model_copy(
            update={
                "backends": backends,
                "groups": groups,
                "routes": routes,
                "limits": p.admission.config,
                "balancer": self._config.balancer.model_copy(
                    update={"algorithm": p.default_pool.algorithm}
                ),
            }
        )
        calls: list[Operation] = []
        adopt: list[SyncMessage] = []
        for name in names:
            b = p.backends[name]
            if b.admin is not AdminState.ACTIVE:
                calls.append(ops.SetAdmin(name, b.admin))
            if b.breaker is not None and b.breaker_enabled:
                state = b.breaker.state
                if state is BreakerState.FORCED_OPEN:
                    calls.append(ops.ForceBreaker(name, "open"))
                elif state is BreakerState.DISABLED:
                    calls.append(ops.ForceBreaker(name, "disabled"))
                elif state is BreakerState.OPEN:
                    st = b.breaker.stats(now)
                    # No time: the new breaker has nothing newer than this to keep.
                    adopt.append(("breaker", name, "open", st.open_until, st.reason, None))
            ej = p.outliers.stats(name, now)
            if ej.ejected and ej.ejected_until is not None:
                adopt.append(("eject", name, ej.ejected_until, ej.times_ejected, ej.reason))
            fault = p.faults.stats(name)
            if fault is not None and fault.active:
                spec = fault.spec
                if fault.expires_at is not None:
                    left = fault.expires_at - now
                    if left <= 0:
                        continue
                    spec = dataclasses.replace(spec, duration_s=left)
                calls.append(ops.SetFault(name, spec, fault.owner))
        for name in names:
            calls.extend(self._health.get(name, ()))
        return config, calls, adopt

    # to workers

    def _send_all(self, message: tuple[Any, ...], but: int | None = None) -> None:
        for i, w in self._workers.items():
            if not w.alive or i == but:
                continue
            if w.channel is None:
                w.pending.append(message)
                continue
            w.channel.send(message)
            if w.channel.backlog > STUCK_BACKLOG and w.process.pid is not None:
                # It has stopped reading (stopped, hung): it is started again rather than
                # left to grow this buffer, or to serve with a state it no longer follows.
                log.warning("worker %d reads nothing: killing it to start it again", i)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(w.process.pid, signal.SIGKILL)

    def replicate(self, op: Operation) -> None:
        """Send an operation applied here to every worker (remembering what a worker started
        later needs: backends added, the last health results)."""
        match op:
            case HealthResult(backend=name):
                self._health.setdefault(name, deque(maxlen=self._health_keep)).append(op)
            case ops.AddBackend(config=config):
                self._backend_configs[config.name] = config
            case ops.RemoveBackend(backend=name):
                self._health.pop(name, None)
                self._backend_configs.pop(name, None)
            case ops.Reload(config=config):
                # A worker started from now on starts from the new file (on the bound port).
                self._config = config.model_copy(
                    update={
                        "listener": self._config.listener,
                        "listeners": self._config.listeners,
                    }
                )
                self._backend_configs.update((b.name, b) for b in config.backends)
        self._send_all(("apply", op))

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
