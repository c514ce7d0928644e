"""The shared limits zone's word layout, the fingerprint that finds a name or a client key in
it, and its lock (see :mod:`lbtui.balancer.shared` for the zone and why it exists).

Split from the zone so that the zone (``shared.py``: creating, attaching, closing) and the
limiters that read and write it (``shared_limiters.py``) share one statement of where each word
is. Offsets are in 8-byte words.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Hashable
from hashlib import blake2b
from multiprocessing.synchronize import Lock

MAGIC = 0x6C62747569534C31  # "lbtuiSL1"
LAYOUT = 1

# Header words.
H_MAGIC = 0
H_LAYOUT = 1
H_WORKERS = 2
H_NAMED = 3
H_CLIENTS = 4
C_MAX = 8  # concurrency cap, 0 = unlimited
C_PEAK = 9  # in flight at most, over all processes, while limited
K_CONFIGURED = 16
K_RATE = 17
K_BURST = 18
K_MAX_KEYS = 19
K_KEYS = 20
K_ALLOWED = 21
K_REJECTED = 22
K_EXPIRED = 23
K_EVICTED = 24
K_CURSOR = 25
HEADER_WORDS = 32

# A worker's row.
ROW_WORDS = 8
R_IN_FLIGHT = 0
R_PEAK = 1
R_ACQUIRED = 2
R_REJECTED = 3

# A named token bucket.
NAMED_WORDS = 8
N_FP = 0
N_RATE = 1
N_BURST = 2
N_TAT = 3
N_ALLOWED = 4
N_REJECTED = 5

WINDOW = 16
"""Slots a client key may sit in: its home slot and the next 15. The table has 15 spare slots
at the end, so a window never wraps. At ``max_keys`` live keys (a table at most half full) a
window is full, and a live bucket evicted, about once in 3,000 new keys at worst."""
SWEEP_SLOTS = 512
"""Client slots one :meth:`SharedKeyedLimiter.sweep` looks at (tens of microseconds)."""
MIN_CLIENT_SLOTS = 16
MAX_CLIENT_SLOTS = 1 << 21
"""32 MiB of client table; ``max_clients`` above a million gets a table more than half full."""
EMPTY_SLOT = struct.pack("=qd", 0, -math.inf)
"""An empty client slot: no fingerprint, and a ``tat`` below any ``now``."""
FP_CACHE = 8192
"""Client keys whose fingerprint a view remembers (cleared when full)."""


def fingerprint(key: Hashable) -> int:
    """A stable, non-zero signed 64-bit fingerprint: BLAKE2b of the string, or of ``repr()``
    for other keys (an int, a tuple of strings)."""
    if isinstance(key, str):
        data = key.encode("utf-8", "surrogatepass")
    else:
        data = b"\x00" + repr(key).encode("utf-8", "backslashreplace")
    fp = int.from_bytes(blake2b(data, digest_size=8).digest(), "little", signed=True)
    return fp or 1


def pow2_at_least(n: int) -> int:
    return 1 << max(0, n - 1).bit_length()


def positive_int(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a whole number of at least 1, got {value!r}")
    return value


LOCK_PATIENCE_S = 2.0
"""A lock held this long was left held by a process killed inside it (holders keep it for
microseconds; a reconfiguration of the largest client table for a fraction of a second)."""


class ZoneLock:
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
