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
import math
import secrets
import struct
from collections.abc import Hashable
from dataclasses import dataclass
from hashlib import blake2b
from multiprocessing import get_context
from multiprocessing.shared_memory import SharedMemory
from multiprocessing.synchronize import Lock
from types import TracebackType
from typing import Any

from mypy_extensions import mypyc_attr

from lbtui.core.limiting import (
    BucketStats,
    ConcurrencyStats,
    KeyedStats,
    RateLimitDecision,
    check_max_in_flight,
    check_rate_burst,
)
from lbtui.core.limitstore import REFUSED, Gcra

__all__ = [
    "SharedConcurrencyLimit",
    "SharedKeyedLimiter",
    "SharedLimits",
    "SharedLimitsHandle",
    "SharedTokenBucket",
]

_MAGIC = 0x6C62747569534C31  # "lbtuiSL1"
_LAYOUT = 1

# Header words.
_H_MAGIC = 0
_H_LAYOUT = 1
_H_WORKERS = 2
_H_NAMED = 3
_H_CLIENTS = 4
_C_MAX = 8  # concurrency cap, 0 = unlimited
_C_PEAK = 9  # in flight at most, over all processes, while limited
_K_CONFIGURED = 16
_K_RATE = 17
_K_BURST = 18
_K_MAX_KEYS = 19
_K_KEYS = 20
_K_ALLOWED = 21
_K_REJECTED = 22
_K_EXPIRED = 23
_K_EVICTED = 24
_K_CURSOR = 25
_HEADER_WORDS = 32

# A worker's row.
_ROW_WORDS = 8
_R_IN_FLIGHT = 0
_R_PEAK = 1
_R_ACQUIRED = 2
_R_REJECTED = 3

# A named token bucket.
_NAMED_WORDS = 8
_N_FP = 0
_N_RATE = 1
_N_BURST = 2
_N_TAT = 3
_N_ALLOWED = 4
_N_REJECTED = 5

_WINDOW = 16
"""Slots a client key may sit in: its home slot and the next 15. The table has 15 spare slots
at the end, so a window never wraps. At ``max_keys`` live keys (a table at most half full) a
window is full, and a live bucket evicted, about once in 3,000 new keys at worst."""
_SWEEP_SLOTS = 512
"""Client slots one :meth:`SharedKeyedLimiter.sweep` looks at (tens of microseconds)."""
_MIN_CLIENT_SLOTS = 16
_MAX_CLIENT_SLOTS = 1 << 21
"""32 MiB of client table; ``max_clients`` above a million gets a table more than half full."""
_EMPTY_SLOT = struct.pack("=qd", 0, -math.inf)
"""An empty client slot: no fingerprint, and a ``tat`` below any ``now``."""
_FP_CACHE = 8192
"""Client keys whose fingerprint a view remembers (cleared when full)."""


def _fingerprint(key: Hashable) -> int:
    """A stable, non-zero signed 64-bit fingerprint: BLAKE2b of the string, or of ``repr()``
    for other keys (an int, a tuple of strings)."""
    if isinstance(key, str):
        data = key.encode("utf-8", "surrogatepass")
    else:
        data = b"\x00" + repr(key).encode("utf-8", "backslashreplace")
    fp = int.from_bytes(blake2b(data, digest_size=8).digest(), "little", signed=True)
    return fp or 1


def _pow2_at_least(n: int) -> int:
    return 1 << max(0, n - 1).bit_length()


def _positive_int(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a whole number of at least 1, got {value!r}")
    return value


LOCK_PATIENCE_S = 2.0
"""A lock held this long was left held by a process killed inside it (holders keep it for
microseconds; a reconfiguration of the largest client table for a fraction of a second)."""


class _Guard:
    """The zone's lock, held again without cost by the process holding it (so that admission
    takes it once for all its limiters), and taken over when a process killed inside it
    (``SIGKILL`` in that microsecond) left it held: without that, every other process would
    wait for good."""

    __slots__ = ("_depth", "_lock", "_release", "_try")

    def __init__(self, lock: Lock) -> None:
        self._lock = lock
        self._try = lock.acquire
        self._release = lock.release
        self._depth = 0

    def acquire(self) -> None:
        if self._depth:
            self._depth += 1
            return
        if not self._try(True, LOCK_PATIENCE_S):
            self._release()
            self._try()
        self._depth = 1

    def release(self) -> None:
        self._depth -= 1
        if not self._depth:
            self._release()

    def __enter__(self) -> None:
        self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


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
        self.lock = _Guard(handle.lock)
        buf = shm.buf
        if buf is None:
            raise ValueError(f"shared memory {shm.name!r} is closed")
        self._buf = buf
        self.ints = buf.cast("q")
        # ``Any``: typeshed calls every memoryview item an int, and a compiled build would check
        # these floats against that.
        self.floats: Any = buf.cast("d")
        self.rows_start = _HEADER_WORDS
        self.named_start = self.rows_start + handle.workers * _ROW_WORDS
        self.clients_start = self.named_start + handle.named_slots * _NAMED_WORDS
        self._end = self.clients_start + (handle.client_slots + _WINDOW - 1) * 2

    @staticmethod
    def _words(workers: int, named_slots: int, client_slots: int) -> int:
        return (
            _HEADER_WORDS
            + workers * _ROW_WORDS
            + named_slots * _NAMED_WORDS
            + (client_slots + _WINDOW - 1) * 2
        )

    @classmethod
    def create(cls, *, workers: int, max_clients: int, named_slots: int = 4096) -> SharedLimits:
        """A new zone for ``workers`` processes (the primary included), with a client table
        for ``max_clients`` keys (twice as many slots) and ``named_slots`` token buckets. The
        creator owns the segment: its :meth:`close` unlinks it."""
        _positive_int("workers", workers)
        _positive_int("max_clients", max_clients)
        _positive_int("named_slots", named_slots)
        clients = min(max(_pow2_at_least(2 * max_clients), _MIN_CLIENT_SLOTS), _MAX_CLIENT_SLOTS)
        named = _pow2_at_least(named_slots)
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
        q[_H_LAYOUT] = _LAYOUT
        q[_H_WORKERS] = workers
        q[_H_NAMED] = named
        q[_H_CLIENTS] = clients
        q[_K_MAX_KEYS] = max_clients
        zone.clear_clients()
        q[_H_MAGIC] = _MAGIC
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
            q[_H_MAGIC],
            q[_H_LAYOUT],
            q[_H_WORKERS],
            q[_H_NAMED],
            q[_H_CLIENTS],
        ) != (_MAGIC, _LAYOUT, handle.workers, handle.named_slots, handle.client_slots):
            zone.close()
            raise ValueError(f"shared memory {handle.shm_name!r} is not this limits zone")
        with zone.lock:
            q[zone.row + _R_IN_FLIGHT] = 0
        return zone

    @property
    def handle(self) -> SharedLimitsHandle:
        return self._handle

    def forget_worker(self, worker: int) -> None:
        """Worker ``worker`` is gone, and so are its requests: its ``in_flight`` stops
        counting against the concurrency cap (its totals are kept). For the primary."""
        with self.lock:
            self.ints[self.rows_start + worker * _ROW_WORDS + _R_IN_FLIGHT] = 0

    @property
    def worker(self) -> int:
        return self._worker

    @property
    def row(self) -> int:
        return self.rows_start + self._worker * _ROW_WORDS

    @property
    def guard(self) -> _Guard:
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
        fp = _fingerprint(name)
        q, d = self.ints, self.floats
        n = self._handle.named_slots
        home = fp & (n - 1)
        with self.lock:
            for probe in range(n):  # slots are never freed: linear probing to the first empty
                slot = self.named_start + ((home + probe) & (n - 1)) * _NAMED_WORDS
                found = q[slot + _N_FP]
                if found == fp:
                    break
                if found == 0:
                    d[slot + _N_RATE] = inner.rate
                    d[slot + _N_BURST] = inner.burst
                    d[slot + _N_TAT] = now
                    q[slot + _N_ALLOWED] = 0
                    q[slot + _N_REJECTED] = 0
                    q[slot + _N_FP] = fp
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
            if not q[_K_CONFIGURED] or d[_K_RATE] != rate or d[_K_BURST] != burst:
                if q[_K_CONFIGURED]:
                    self.clear_clients()
                d[_K_RATE] = rate
                d[_K_BURST] = burst
                q[_K_CONFIGURED] = 1
            q[_K_MAX_KEYS] = max_keys
        return limiter

    def concurrency_limit(self, max_in_flight: int | None) -> SharedConcurrencyLimit:
        """The concurrency limit over all processes, counted in this process's row; sets the
        cap for every process."""
        limit = SharedConcurrencyLimit(self, max_in_flight)
        limit.reconfigure(max_in_flight)
        return limit

    def clear_clients(self) -> None:
        self._buf[self.clients_start * 8 : self._end * 8] = _EMPTY_SLOT * (
            self._handle.client_slots + _WINDOW - 1
        )
        self.ints[_K_KEYS] = 0
        self.ints[_K_CURSOR] = 0


class SharedTokenBucket:
    """A token bucket (``lbtui.core.limitstore.Bucket``) whose ``tat``, rate, burst and counters
    are in shared memory; the arithmetic is the core's :class:`Gcra`, run under the lock for a
    decision."""

    __slots__ = ("_acquire", "_d", "_g", "_lock", "_q", "_release", "_s", "_zone")

    def __init__(self, zone: SharedLimits, slot: int, gcra: Gcra) -> None:
        self._zone = zone  # the segment stays mapped while a view is alive
        self._d = zone.floats
        self._q = zone.ints
        self._lock = zone.lock
        self._acquire = zone.lock.acquire
        self._release = zone.lock.release
        self._s = slot
        self._g = gcra

    def _gcra(self) -> Gcra:
        """The arithmetic for the rate and burst in shared memory (another process may have
        changed them)."""
        d, s, g = self._d, self._s, self._g
        rate, burst = d[s + _N_RATE], d[s + _N_BURST]
        if rate != g.rate or burst != g.burst:
            g = self._g = Gcra(rate, burst)
        return g

    @property
    def rate(self) -> float:
        return float(self._d[self._s + _N_RATE])

    @property
    def burst(self) -> float:
        return float(self._d[self._s + _N_BURST])

    def _take(self, now: float, cost: float) -> tuple[bool, float, Gcra]:
        """Decide under the lock: (allowed, ``tat`` afterwards, the arithmetic used)."""
        s, d = self._s, self._d
        self._acquire()  # not ``with``: the lock's __enter__ and __exit__ are Python calls
        try:
            g = self._gcra()
            tat = d[s + _N_TAT]
            new = g.take(tat, now, cost)
            allowed = new != REFUSED
            if allowed:
                d[s + _N_TAT] = tat = new
            self._q[s + (_N_ALLOWED if allowed else _N_REJECTED)] += 1
        finally:
            self._release()
        return allowed, tat, g

    def allow(self, now: float, cost: float = 1.0) -> bool:
        return self._take(now, cost)[0]

    def decide(self, now: float, cost: float = 1.0) -> RateLimitDecision:
        allowed, tat, g = self._take(now, cost)
        return g.decision(allowed, tat, now, cost)

    def peek(self, now: float, cost: float = 1.0) -> bool:
        return self._gcra().peek(self._d[self._s + _N_TAT], now, cost)

    def retry_after(self, now: float, cost: float = 1.0) -> float:
        return self._gcra().retry_after(self._d[self._s + _N_TAT], now, cost)

    def reset_after(self, now: float) -> float:
        return self._gcra().reset_after(self._d[self._s + _N_TAT], now)

    def tokens(self, now: float) -> float:
        return self._gcra().tokens(self._d[self._s + _N_TAT], now)

    def reconfigure(self, rate: float, burst: float, now: float) -> None:
        """As ``TokenBucket.reconfigure``, for every process; a call that changes nothing
        (the same change made again by another process) keeps the state as it is."""
        new = Gcra(rate, burst)
        s, d = self._s, self._d
        with self._lock:
            g = self._gcra()
            if g.rate == new.rate and g.burst == new.burst:
                return
            d[s + _N_TAT] = g.rescaled(d[s + _N_TAT], now, new)
            d[s + _N_BURST] = new.burst
            d[s + _N_RATE] = new.rate
            self._g = new

    def stats(self, now: float) -> BucketStats:
        g, q, s = self._gcra(), self._q, self._s
        tokens = g.tokens(self._d[s + _N_TAT], now)
        return BucketStats(g.rate, g.burst, tokens, q[s + _N_ALLOWED], q[s + _N_REJECTED])


class SharedKeyedLimiter:
    """A keyed limiter (``lbtui.core.limitstore.KeyedBuckets``) whose buckets are a fixed
    open-addressing table in shared memory.

    A key lives in one of the ``16`` slots from its home slot (its fingerprint modulo the
    capacity). A new key takes an empty slot of that window, else one whose bucket is full
    again (``tat <= now``: the same as no bucket, counted as expired), else it evicts the bucket
    nearest to full (counted as evicted). With the table at least twice ``max_keys``, evictions
    of live buckets stay rare until about ``max_keys`` clients are active at once; ``keys`` can
    pass ``max_keys`` (up to the capacity) rather than evict early. :meth:`sweep` frees full
    buckets a slice of the table at a time, from a cursor shared by all processes.
    """

    __slots__ = (
        "_acquire",
        "_base",
        "_cap",
        "_d",
        "_fps",
        "_g",
        "_lock",
        "_mask",
        "_q",
        "_release",
        "_zone",
    )

    def __init__(self, zone: SharedLimits, rate: float, burst: float, max_keys: int) -> None:
        _positive_int("max_keys", max_keys)
        self._g = Gcra(rate, burst)  # checks rate and burst
        self._zone = zone
        self._d = zone.floats
        self._q = zone.ints
        self._lock = zone.lock
        self._acquire = zone.lock.acquire
        self._release = zone.lock.release
        self._base = zone.clients_start
        self._cap = zone.handle.client_slots
        self._mask = self._cap - 1
        self._fps: dict[Hashable, int] = {}

    def _fp(self, key: Hashable) -> int:
        fps = self._fps
        fp = fps.get(key)
        if fp is None:
            if len(fps) >= _FP_CACHE:
                fps.clear()
            fp = fps[key] = _fingerprint(key)
        return fp

    def _sync(self) -> Gcra:
        """The arithmetic for the rate and burst in shared memory (another process may have
        changed them)."""
        d, g = self._d, self._g
        rate, burst = d[_K_RATE], d[_K_BURST]
        if rate != g.rate or burst != g.burst:
            g = self._g = Gcra(rate, burst)
        return g

    def _find(self, fp: int) -> int:
        """The word index of ``fp``'s slot, or -1."""
        q = self._q
        home = self._base + (fp & self._mask) * 2
        if q[home] == fp:
            return home
        window = q[home : home + 2 * _WINDOW : 2].tolist()
        if fp in window:
            return home + 2 * window.index(fp)
        return -1

    def _tat(self, key: Hashable, now: float) -> float:
        """``key``'s ``tat``, or ``now`` (a full bucket) when it has none. Under the lock."""
        self._sync()
        slot = self._find(self._fp(key))
        return self._d[slot + 1] if slot >= 0 else now

    def _take(self, fp: int, now: float, cost: float) -> tuple[bool, float]:
        """Decide under the lock: (allowed, the key's ``tat`` afterwards or ``now``)."""
        g = self._sync()
        q, d = self._q, self._d
        slot = self._find(fp)
        if slot >= 0:
            tat = d[slot + 1]
            new = g.take(tat, now, cost)
            if new != REFUSED:
                d[slot + 1] = new
                q[_K_ALLOWED] += 1
                return True, new
            q[_K_REJECTED] += 1
            return False, tat
        if cost > g.burst:
            q[_K_REJECTED] += 1
            return False, now
        home = self._base + (fp & self._mask) * 2
        tats = d[home + 1 : home + 2 * _WINDOW : 2].tolist()
        lowest = min(tats)  # an empty slot's is -inf
        slot = home + 2 * tats.index(lowest)
        if q[slot] == 0:
            q[_K_KEYS] += 1
        elif lowest <= now:
            q[_K_EXPIRED] += 1
        else:
            q[_K_EVICTED] += 1
        new = now + cost * g.interval
        d[slot + 1] = new
        q[slot] = fp
        q[_K_ALLOWED] += 1
        return True, new

    @property
    def rate(self) -> float:
        return float(self._d[_K_RATE])

    @property
    def burst(self) -> float:
        return float(self._d[_K_BURST])

    def __len__(self) -> int:
        return self._q[_K_KEYS]

    def __contains__(self, key: Hashable) -> bool:
        fp = self._fp(key)
        with self._lock:
            return self._find(fp) >= 0

    def allow(self, key: Hashable, now: float, cost: float = 1.0) -> bool:
        fp = self._fp(key)
        self._acquire()
        try:
            return self._take(fp, now, cost)[0]
        finally:
            self._release()

    def decide(self, key: Hashable, now: float, cost: float = 1.0) -> RateLimitDecision:
        fp = self._fp(key)
        self._acquire()
        try:
            allowed, tat = self._take(fp, now, cost)
        finally:
            self._release()
        return self._g.decision(allowed, tat, now, cost)

    def _tat_and_gcra(self, key: Hashable, now: float) -> tuple[float, Gcra]:
        with self._lock:
            return self._tat(key, now), self._g

    def peek(self, key: Hashable, now: float, cost: float = 1.0) -> bool:
        tat, g = self._tat_and_gcra(key, now)
        return g.peek(tat, now, cost)

    def retry_after(self, key: Hashable, now: float, cost: float = 1.0) -> float:
        tat, g = self._tat_and_gcra(key, now)
        return g.retry_after(tat, now, cost)

    def reset_after(self, key: Hashable, now: float) -> float:
        tat, g = self._tat_and_gcra(key, now)
        return g.reset_after(tat, now)

    def remaining(self, key: Hashable, now: float) -> float:
        tat, g = self._tat_and_gcra(key, now)
        return g.tokens(tat, now)

    def sweep(self, now: float) -> int:
        """Free the full buckets in the next 512 slots of the table (round robin over all
        processes' calls); returns how many. A bounded step, cheap on every tick."""
        q, d = self._q, self._d
        slots = self._cap + _WINDOW - 1
        dropped = 0
        with self._lock:
            start = q[_K_CURSOR]
            end = min(start + _SWEEP_SLOTS, slots)
            a, b = self._base + 2 * start, self._base + 2 * end
            fps = q[a:b:2].tolist()
            tats = d[a + 1 : b : 2].tolist()
            for i, fp in enumerate(fps):
                if fp and tats[i] <= now:
                    q[a + 2 * i] = 0
                    d[a + 2 * i + 1] = -math.inf
                    dropped += 1
            q[_K_CURSOR] = end if end < slots else 0
            q[_K_KEYS] -= dropped
            q[_K_EXPIRED] += dropped
        return dropped

    def reconfigure(self, rate: float, burst: float, now: float) -> None:
        """As :meth:`KeyedLimiter.reconfigure`, for every process; a call that changes nothing
        (the same change made again by another process) keeps the buckets as they are.

        O(capacity) under the lock: an operator's action, not for the request path.
        """
        check_rate_burst(rate, burst)
        new_rate, new_burst = float(rate), float(burst)
        q, d = self._q, self._d
        with self._lock:
            old = self._sync()
            old_rate, old_burst = old.rate, old.burst
            if (old_rate, old_burst) == (new_rate, new_burst):
                return
            slots = self._cap + _WINDOW - 1
            chunk = 1 << 16
            dropped = 0
            for first in range(0, slots, chunk):
                a = self._base + 2 * first
                b = self._base + 2 * min(first + chunk, slots)
                fps = q[a:b:2].tolist()
                tats = d[a + 1 : b : 2].tolist()
                for i, fp in enumerate(fps):
                    if not fp:
                        continue
                    debt = tats[i] - now
                    held = max(old_burst - debt * old_rate, 0.0)
                    if debt <= 0 or held >= new_burst:  # full, now or under the new burst
                        q[a + 2 * i] = 0
                        d[a + 2 * i + 1] = -math.inf
                        dropped += 1
                    else:
                        d[a + 2 * i + 1] = now + (new_burst - held) / new_rate
            q[_K_KEYS] -= dropped
            q[_K_EXPIRED] += dropped
            d[_K_RATE] = new_rate
            d[_K_BURST] = new_burst
            self._sync()

    def stats(self, now: float) -> KeyedStats:
        q, d = self._q, self._d
        return KeyedStats(
            d[_K_RATE],
            d[_K_BURST],
            q[_K_MAX_KEYS],
            q[_K_KEYS],
            q[_K_ALLOWED],
            q[_K_REJECTED],
            q[_K_EXPIRED],
            q[_K_EVICTED],
        )


class SharedConcurrencyLimit:
    """A concurrency limit (``lbtui.core.limitstore.Concurrency``) over all processes: one row
    of counts per process.

    Unlimited, :meth:`try_acquire` and :meth:`release` touch only this process's row, without
    the lock. With a cap, :meth:`try_acquire` sums ``in_flight`` over the rows under the lock;
    :meth:`release` still only lowers its own row, so a sum racing it errs on the safe side.
    ``peak_in_flight`` is the peak over all processes while a cap is set, and the sum of the
    rows' peaks (an upper bound) while unlimited.
    """

    __slots__ = ("_acquire", "_lock", "_q", "_release", "_row", "_rows_end", "_rows_start", "_zone")

    def __init__(self, zone: SharedLimits, max_in_flight: int | None) -> None:
        check_max_in_flight(max_in_flight)
        self._zone = zone
        self._q = zone.ints
        self._lock = zone.lock
        self._acquire = zone.lock.acquire
        self._release = zone.lock.release
        self._row = zone.row
        self._rows_start = zone.rows_start
        self._rows_end = zone.named_start

    def _column(self, offset: int) -> list[int]:
        start = self._rows_start + offset
        column: list[int] = self._q[start : self._rows_end : _ROW_WORDS].tolist()
        return column

    @property
    def max_in_flight(self) -> int | None:
        return self._q[_C_MAX] or None

    @property
    def in_flight(self) -> int:
        return sum(self._column(_R_IN_FLIGHT))

    def try_acquire(self) -> bool:
        q, row = self._q, self._row
        cap = q[_C_MAX]
        if not cap:
            n = q[row] + 1
            q[row] = n
            if n > q[row + _R_PEAK]:
                q[row + _R_PEAK] = n
            q[row + _R_ACQUIRED] += 1
            return True
        self._acquire()
        try:
            total = sum(q[self._rows_start : self._rows_end : _ROW_WORDS].tolist())
            if total >= cap:
                q[row + _R_REJECTED] += 1
                return False
            n = q[row] + 1
            q[row] = n
            if n > q[row + _R_PEAK]:
                q[row + _R_PEAK] = n
            q[row + _R_ACQUIRED] += 1
            if total >= q[_C_PEAK]:
                q[_C_PEAK] = total + 1
        finally:
            self._release()
        return True

    def peek(self) -> bool:
        cap = self._q[_C_MAX]
        return not cap or self.in_flight < cap

    def release(self) -> None:
        q, row = self._q, self._row
        n = q[row]
        if n <= 0:
            raise RuntimeError("ConcurrencyLimit.release() without a matching try_acquire()")
        q[row] = n - 1

    def reconfigure(self, max_in_flight: int | None) -> None:
        """Change the cap for every process; requests above a lowered cap finish."""
        cap = check_max_in_flight(max_in_flight)
        with self._lock:
            self._q[_C_MAX] = cap or 0

    def stats(self) -> ConcurrencyStats:
        q = self._q
        cap = q[_C_MAX]
        peaks = self._column(_R_PEAK)
        return ConcurrencyStats(
            cap or None,
            sum(self._column(_R_IN_FLIGHT)),
            q[_C_PEAK] if cap else sum(peaks),
            sum(self._column(_R_ACQUIRED)),
            sum(self._column(_R_REJECTED)),
        )
