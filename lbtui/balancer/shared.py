"""Limiter state in shared memory, for several processes serving one listener.

With ``workers = N`` the kernel spreads *connections* over the processes (``SO_REUSEPORT``), not
clients: one client's connections land on any of them, and so do the requests that make up the
global rate. Per-process quotas (each process enforcing ``rps / N``) would therefore be wrong
both ways: a client on a busy process is refused early, one spread over all of them gets up to N
times its share. So, as nginx keeps ``limit_req_zone`` and ``limit_conn_zone`` in shared memory
zones, the limiters' state lives in one shared segment that every process reads and writes:
the limits stay exact across processes, whatever the kernel's spread.

The segment is one ``multiprocessing.shared_memory`` block of 8-byte words (read as ``int64``
or ``float64`` through two casts of the same buffer), created by the primary (worker 0), with
one lock from the ``spawn`` context; the workers attach through a picklable
:class:`SharedLimitsHandle`. Layout, in words::

    header   32                    magic, layout, sizes; concurrency cap and peak; the client
                                   table's rate, burst, max_keys, keys, counters, sweep cursor
    rows     8 × workers           per process: in_flight, peak, acquired, rejected
                                   (a 64-byte line each: a row has one writer)
    named    8 × named_slots       token buckets by name ("global", "cap:<backend>"):
                                   fingerprint, rate, burst, tat, allowed, rejected
    clients  2 × (capacity + 15)   per-client buckets: fingerprint, tat

A bucket is its GCRA ``tat`` (see :mod:`lbtui.core.limiting`): one float per bucket is the whole
shared state, and the arithmetic on it is the core's (:class:`~lbtui.core.limitstore.Gcra`), for
the named buckets and the client table alike: this module keeps state, the core decides. Names
and client keys are found by a 64-bit BLAKE2b fingerprint (not ``hash()``, which is salted per
process); two keys share a bucket only if their fingerprints collide, with odds of about
``n² / 2⁶⁵`` for ``n`` keys.

Every change is made under the one lock, held for a microsecond or two of arithmetic, never
across I/O. Reads that only report (a token bucket's ``peek``, ``tokens``, ``retry_after``,
``reset_after``) take no lock: aligned 8-byte words are never torn, and a read racing a
reconfiguration may see the new burst with the old rate once. The unlimited concurrency count
takes no lock either: each process writes only its own row. A view is for one thread, as the
plain limiters are. A process killed while it holds the lock (a ``SIGKILL`` in that
microsecond) leaves it held and the others waiting: nginx frees a dead worker's zone mutex by
the pid it records; here the primary calls :meth:`SharedLimits.unstick`.

The limiters here are this zone's side of the core's storage seam
(:class:`~lbtui.core.limitstore.LimitStore`: ``token_bucket``, ``keyed_limiter``,
``concurrency_limit``), the same results for the same calls as the memory store's (the client
table evicts differently at capacity), with the counters of their ``stats`` summed over all
processes. They subclass nothing and read nothing private of the core. As in the core,
nothing reads a clock: every call takes ``now``.

Workers must be started with ``multiprocessing`` (they then share the primary's resource
tracker, which forgets the segment when the primary unlinks it and removes it if the primary
dies first).
"""

from __future__ import annotations

import contextlib
import secrets
from dataclasses import dataclass
from multiprocessing import get_context
from multiprocessing.shared_memory import SharedMemory
from multiprocessing.synchronize import Lock
from types import TracebackType
from typing import Any

from mypy_extensions import mypyc_attr

from lbtui.balancer.shared_layout import (
    EMPTY_SLOT,
    H_CLIENTS,
    H_LAYOUT,
    H_MAGIC,
    H_NAMED,
    H_WORKERS,
    HEADER_WORDS,
    K_BURST,
    K_CONFIGURED,
    K_CURSOR,
    K_KEYS,
    K_MAX_KEYS,
    K_RATE,
    LAYOUT,
    MAGIC,
    MAX_CLIENT_SLOTS,
    MIN_CLIENT_SLOTS,
    N_ALLOWED,
    N_BURST,
    N_FP,
    N_RATE,
    N_REJECTED,
    N_TAT,
    NAMED_WORDS,
    R_IN_FLIGHT,
    ROW_WORDS,
    WINDOW,
    ZoneLock,
    fingerprint,
    positive_int,
    pow2_at_least,
)
from lbtui.balancer.shared_limiters import (
    SharedConcurrencyLimit,
    SharedKeyedLimiter,
    SharedTokenBucket,
)
from lbtui.core.limitstore import Gcra

__all__ = [
    "SharedConcurrencyLimit",
    "SharedKeyedLimiter",
    "SharedLimits",
    "SharedLimitsHandle",
    "SharedTokenBucket",
]


@mypyc_attr(native_class=False)  # unpickled in the worker, which a frozen native class refuses
@dataclass(frozen=True)
class SharedLimitsHandle:
    """What a worker needs to attach: pass it as an argument of a ``multiprocessing`` process
    (the lock can be pickled only while a process is being started)."""

    shm_name: str
    lock: Lock
    workers: int
    client_slots: int
    """Capacity of the client table (a power of two, not counting the 15 spare slots)."""
    named_slots: int


class SharedLimits:
    """One shared segment and its lock, seen from one process (``worker`` 0 is the primary).

    Made by :meth:`create` (the primary) or :meth:`attach` (a worker); a context manager that
    closes it."""

    def __init__(
        self, shm: SharedMemory, handle: SharedLimitsHandle, worker: int, owner: bool
    ) -> None:
        self._shm = shm
        self._handle = handle
        self._worker = worker
        self._owner = owner
        self._closed = False
        self._raw_lock = handle.lock
        self.lock = ZoneLock(handle.lock)
        buf = shm.buf
        if buf is None:
            raise ValueError(f"shared memory {shm.name!r} is closed")
        self._buf = buf
        self.ints = buf.cast("q")
        # ``Any``: typeshed calls every memoryview item an int, and a compiled build would check
        # these floats against that.
        self.floats: Any = buf.cast("d")
        self.rows_start = HEADER_WORDS
        self.named_start = self.rows_start + handle.workers * ROW_WORDS
        self.clients_start = self.named_start + handle.named_slots * NAMED_WORDS
        self._end = self.clients_start + (handle.client_slots + WINDOW - 1) * 2

    @staticmethod
    def _words(workers: int, named_slots: int, client_slots: int) -> int:
        return (
            HEADER_WORDS
            + workers * ROW_WORDS
            + named_slots * NAMED_WORDS
            + (client_slots + WINDOW - 1) * 2
        )

    @classmethod
    def create(cls, *, workers: int, max_clients: int, named_slots: int = 4096) -> SharedLimits:
        """A new zone for ``workers`` processes (the primary included), with a client table
        for ``max_clients`` keys (twice as many slots) and ``named_slots`` token buckets. The
        creator owns the segment: its :meth:`close` unlinks it."""
        positive_int("workers", workers)
        positive_int("max_clients", max_clients)
        positive_int("named_slots", named_slots)
        clients = min(max(pow2_at_least(2 * max_clients), MIN_CLIENT_SLOTS), MAX_CLIENT_SLOTS)
        named = pow2_at_least(named_slots)
        size = cls._words(workers, named, clients) * 8
        shm = SharedMemory(f"lbtui_{secrets.token_hex(8)}", create=True, size=size)
        try:
            handle = SharedLimitsHandle(
                shm.name, get_context("spawn").Lock(), workers, clients, named
            )
            zone = cls(shm, handle, 0, True)
        except BaseException:
            shm.close()
            shm.unlink()
            raise
        q = zone.ints
        q[H_LAYOUT] = LAYOUT
        q[H_WORKERS] = workers
        q[H_NAMED] = named
        q[H_CLIENTS] = clients
        q[K_MAX_KEYS] = max_clients
        zone.clear_clients()
        q[H_MAGIC] = MAGIC
        return zone

    @classmethod
    def attach(cls, handle: SharedLimitsHandle, worker: int) -> SharedLimits:
        """The zone ``handle`` names, seen from worker ``worker`` (1 to ``workers - 1``).

        The worker takes over its row: a process that had it before is gone, and so are its
        requests, so the row's ``in_flight`` starts again from 0 (its totals are kept).
        """
        if isinstance(worker, bool) or not isinstance(worker, int):
            raise ValueError(f"worker must be a whole number, got {worker!r}")
        if not 1 <= worker < handle.workers:
            raise ValueError(f"worker must be from 1 to {handle.workers - 1}, got {worker}")
        shm = SharedMemory(handle.shm_name)
        size = cls._words(handle.workers, handle.named_slots, handle.client_slots) * 8
        zone = cls(shm, handle, worker, False)
        q = zone.ints
        if shm.size < size or (
            q[H_MAGIC],
            q[H_LAYOUT],
            q[H_WORKERS],
            q[H_NAMED],
            q[H_CLIENTS],
        ) != (MAGIC, LAYOUT, handle.workers, handle.named_slots, handle.client_slots):
            zone.close()
            raise ValueError(f"shared memory {handle.shm_name!r} is not this limits zone")
        with zone.lock:
            q[zone.row + R_IN_FLIGHT] = 0
        return zone

    @property
    def handle(self) -> SharedLimitsHandle:
        return self._handle

    def forget_worker(self, worker: int) -> None:
        """Worker ``worker`` is gone, and so are its requests: its ``in_flight`` stops
        counting against the concurrency cap (its totals are kept). For the primary."""
        with self.lock:
            self.ints[self.rows_start + worker * ROW_WORDS + R_IN_FLIGHT] = 0

    @property
    def worker(self) -> int:
        return self._worker

    @property
    def row(self) -> int:
        return self.rows_start + self._worker * ROW_WORDS

    @property
    def guard(self) -> ZoneLock:
        """The lock, to hold across several decisions (``with zone.guard:``): the views'
        own taking of it inside is then a counter, not a semaphore."""
        return self.lock

    def unstick(self, timeout_s: float = 2.0) -> bool:
        """Free the lock if a dead process left it held; returns whether it had to.

        For the primary, after a worker died by a signal. The lock is held for microseconds
        (a client-table reconfigure of a large table: a fraction of a second), so one not
        free within ``timeout_s`` is taken to be held by the dead. The bucket it was changing
        keeps a consistent ``tat``; a counter may miss that one request.
        """
        if self._raw_lock.acquire(timeout=timeout_s):
            self._raw_lock.release()
            return False
        self._raw_lock.release()
        return True

    def close(self) -> None:
        """Detach; the creator also unlinks the segment. Views made here stop working."""
        if self._closed:
            return
        self._closed = True
        self.ints.release()
        self.floats.release()
        self._shm.close()
        if self._owner:
            with contextlib.suppress(FileNotFoundError):
                self._shm.unlink()

    def __enter__(self) -> SharedLimits:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- views ---------------------------------------------------------------------------

    def token_bucket(self, name: str, rate: float, burst: float, now: float) -> SharedTokenBucket:
        """The bucket called ``name``: created full if no process has made it yet, otherwise
        attached as it is (then set to ``rate`` and ``burst`` as ``TokenBucket.reconfigure``
        would, if they differ)."""
        inner = Gcra(rate, burst)  # checks rate and burst
        fp = fingerprint(name)
        q, d = self.ints, self.floats
        n = self._handle.named_slots
        home = fp & (n - 1)
        with self.lock:
            for probe in range(n):  # slots are never freed: linear probing to the first empty
                slot = self.named_start + ((home + probe) & (n - 1)) * NAMED_WORDS
                found = q[slot + N_FP]
                if found == fp:
                    break
                if found == 0:
                    d[slot + N_RATE] = inner.rate
                    d[slot + N_BURST] = inner.burst
                    d[slot + N_TAT] = now
                    q[slot + N_ALLOWED] = 0
                    q[slot + N_REJECTED] = 0
                    q[slot + N_FP] = fp
                    break
            else:
                raise RuntimeError(f"all {n} shared token buckets are in use (named_slots)")
        bucket = SharedTokenBucket(self, slot, inner)
        bucket.reconfigure(rate, burst, now)
        return bucket

    def keyed_limiter(self, rate: float, burst: float, *, max_keys: int) -> SharedKeyedLimiter:
        """The per-client limiter (there is one client table per zone).

        With the ``rate`` and ``burst`` the table already has, this attaches to its buckets;
        with others it starts the table afresh, as a new ``KeyedLimiter`` would (to change them
        keeping the buckets, use :meth:`SharedKeyedLimiter.reconfigure`). ``max_keys`` is
        recorded for the stats; the table's size was fixed by ``create``'s ``max_clients``.
        """
        limiter = SharedKeyedLimiter(self, rate, burst, max_keys)
        q, d = self.ints, self.floats
        rate, burst = float(rate), float(burst)
        with self.lock:
            if not q[K_CONFIGURED] or d[K_RATE] != rate or d[K_BURST] != burst:
                if q[K_CONFIGURED]:
                    self.clear_clients()
                d[K_RATE] = rate
                d[K_BURST] = burst
                q[K_CONFIGURED] = 1
            q[K_MAX_KEYS] = max_keys
        return limiter

    def concurrency_limit(self, max_in_flight: int | None) -> SharedConcurrencyLimit:
        """The concurrency limit over all processes, counted in this process's row; sets the
        cap for every process."""
        limit = SharedConcurrencyLimit(self, max_in_flight)
        limit.reconfigure(max_in_flight)
        return limit

    def clear_clients(self) -> None:
        self._buf[self.clients_start * 8 : self._end * 8] = EMPTY_SLOT * (
            self._handle.client_slots + WINDOW - 1
        )
        self.ints[K_KEYS] = 0
        self.ints[K_CURSOR] = 0
