"""The Redis limit store: one bucket across every replica that names the same store.

A :class:`~lbtui.core.limitstore.LimitStore` (``[limits] store = "redis://…"``). The buckets
are :mod:`~lbtui.balancer.synced_limits`' (decided here, settled with Redis every
``store_sync_ms``); this module does the talking, through redis-py's asyncio client as the
issue asks, not a protocol of our own:

- **GCRA in Lua** (:data:`GCRA_LUA`): one atomic ``EVALSHA`` settles every bucket of this
  replica (up to :data:`MAX_KEYS_A_CALL` keys a call, the calls pipelined: one round trip).
  The script runs the core's arithmetic (:class:`~lbtui.core.limitstore.Gcra`: ``tat``,
  ``interval = 1/rate``, ``limit = burst/rate + 1e-9``) on Redis's clock (``TIME``), so replicas
  on machines whose clocks differ agree; it answers the debt, a duration, never an absolute
  time. Asked to decide rather than settle, it decides as ``Gcra`` does
  (``tests/integration/test_redis_store.py`` checks both over a sequence).
- **Redis Cluster**: every key of one ``store_prefix`` carries the same hash tag
  (``{lbtui}:b:global``, ``{lbtui}:c:10.0.0.7``, ``{lbtui}:replicas``), so they live in one slot
  and one script may touch them all. The cost: one prefix's limits load one node of a cluster.
  A pipeline of one call a bucket would spread them but costs ≈ 35 µs of redis-py CPU a bucket
  (measured: 0.8 ms a settlement of 22 buckets), a third of the request budget at 1,000 req/s.
- **Replicas**: each says it is alive every ``store_heartbeat_ms`` in a sorted set scored by
  Redis's clock (:data:`BEAT_LUA`); the members seen within three beats are the live peers,
  shown in the state API, and the divisor of ``on_store_error = "local"``.
- **Losing the store** (a refused connection, a timeout, any Redis error) is an event and
  ``lbtui_limit_store_up`` 0; the buckets decide as ``on_store_error`` says; the store is
  tried again every :data:`RETRY_S` until it answers, then the buckets settle again: no restart.
  Requests never wait for Redis, so its loss can slow no request and fail none with a 5xx.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from collections.abc import Callable, Hashable
from typing import Any, Final

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import NoScriptError, RedisError

from lbtui.balancer.synced_limits import MODES, SYNCED, Link, SyncedBucket, SyncedKeys
from lbtui.config import LimitsConfig
from lbtui.config.store import StoreAddress
from lbtui.core.events import Event, LimitStoreChanged
from lbtui.core.limiting import ConcurrencyLimit

__all__ = ["BEAT_LUA", "GCRA_LUA", "RedisLimits"]

Send = tuple["SyncedBucket | SyncedKeys", Hashable, str, float, float, float]
"""One bucket of a settlement: its owner, its client key (None for a bucket), its key in Redis,
rate, burst, and the cost to add."""

GCRA_LUA: Final = """
-- KEYS: buckets. ARGV[1]: '1' to add each cost whatever the bucket holds (a settlement of
-- requests already admitted), else decide; ARGV[2]: now in seconds (empty: Redis's clock);
-- then rate, burst, cost for each key. The arithmetic of lbtui.core.limitstore.Gcra.
local force = ARGV[1] == '1'
local now
if ARGV[2] ~= '' then
  now = tonumber(ARGV[2])
else
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local out = {string.format('%.17g', now)}
for i, key in ipairs(KEYS) do
  local j = i * 3
  local rate = tonumber(ARGV[j])
  local burst = tonumber(ARGV[j + 1])
  local cost = tonumber(ARGV[j + 2])
  local interval = 1 / rate
  local limit = burst / rate + 1e-9
  local tat = now
  local held = redis.call('GET', key)
  if held then tat = tonumber(held) end
  local base = tat
  if base < now then base = now end
  local new = base + cost * interval
  local allowed = 1
  if not force and new - now > limit then
    allowed = 0
  elseif cost > 0 then
    tat = new
    redis.call('SET', key, string.format('%.17g', tat), 'PX', math.ceil((tat - now) * 1000) + 1000)
  end
  out[#out + 1] = allowed
  out[#out + 1] = string.format('%.17g', tat)
end
return out
"""
"""GCRA over several buckets in one atomic call: ``{now, allowed₁, tat₁, allowed₂, …}``
(times as ``%.17g`` strings: exact)."""

BEAT_LUA: Final = """
-- KEYS[1]: the replicas' sorted set. ARGV: this replica's name, seconds a beat stays alive.
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local alive = tonumber(ARGV[2])
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - alive)
redis.call('PEXPIRE', KEYS[1], math.ceil(alive * 2000))
return redis.call('ZRANGE', KEYS[1], 0, -1)
"""
"""A heartbeat: record this replica, forget the silent, answer the live names."""

RETRY_S: Final = 0.5
"""While the store is lost, it is tried again this often."""
TIMEOUT_S: Final = 0.5
"""A settlement or heartbeat not answered within this is a loss of the store."""
BEATS_ALIVE: Final = 3
"""A replica silent for this many heartbeats is no longer counted."""
MAX_KEYS_A_CALL: Final = 512
"""Buckets settled by one script call (a call blocks Redis while it runs: keep each short)."""
MAX_KEY_CHARS: Final = 128
"""A client key longer than this (a long header value) is stored under its SHA-1."""


class RedisLimits:
    """The limiters of one replica, sharing their state through Redis (see the module)."""

    def __init__(
        self,
        config: LimitsConfig,
        address: StoreAddress,
        *,
        emit: Callable[[Event], object] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.address = address
        self.clock = clock
        self.emit = emit
        self.on_error = MODES[config.on_store_error]
        self.sync_s = config.store_sync_ms / 1e3
        self.beat_s = config.store_heartbeat_ms / 1e3
        self.prefix = config.store_prefix
        self.link = Link()
        self.name: str | None = None
        """This replica's name in the store, set by :meth:`start`."""
        self.up: bool | None = None
        """Whether the store answered last time; ``None`` before the first try."""
        self.peers: tuple[str, ...] = ()
        """The live replicas' names as last seen (this one included)."""
        self.since = clock()
        """When ``up`` last changed."""
        self.reason = ""
        """Why the store was lost, while it is."""
        self.settled_total = 0
        """Settlement round trips that succeeded."""
        self.buckets: dict[str, SyncedBucket] = {}
        """By key; a bucket whose limit was removed stays (settling it costs one command)."""
        self.keyed: list[SyncedKeys] = []
        self._client: Any = None
        self._sha = hashlib.sha1(GCRA_LUA.encode()).hexdigest()
        self._task: asyncio.Task[None] | None = None

    # -- LimitStore ----------------------------------------------------------------------------

    def token_bucket(self, name: str, rate: float, burst: float, now: float) -> SyncedBucket:
        """The bucket ``name`` (one per name: asked again, the same one, reconfigured)."""
        key = f"{{{self.prefix}}}:b:{name}"
        bucket = self.buckets.get(key)
        if bucket is not None:
            bucket.reconfigure(rate, burst, now)
            return bucket
        bucket = self.buckets[key] = SyncedBucket(key, rate, burst, now, self.link)
        if self.link.mode != SYNCED:
            bucket.degrade(now)
        return bucket

    def keyed_limiter(self, rate: float, burst: float, *, max_keys: int) -> SyncedKeys:
        """The per-client buckets (one set a balancer: a new one replaces the last)."""
        keys = SyncedKeys(f"{{{self.prefix}}}:c:", rate, burst, self.link, max_keys=max_keys)
        if self.link.mode != SYNCED:
            keys.degrade(self.clock())
        self.keyed = [keys]
        return keys

    def concurrency_limit(self, max_in_flight: int | None) -> ConcurrencyLimit:
        """Requests in flight are this replica's own (a count held in Redis would outlive a
        replica that dies with requests in flight)."""
        return ConcurrencyLimit(max_in_flight)

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self, name: str) -> None:
        """Connect and keep settling and beating until :meth:`close` (a store that does not
        answer yet is a loss like any other: the balancer starts anyway)."""
        self.name = name
        self.peers = (name,)
        a = self.address
        self._client = aioredis.Redis(
            host=a.host,
            port=a.port,
            db=a.db,
            ssl=a.tls,
            username=_credential(a.url, "username"),
            password=_credential(a.url, "password"),
            socket_timeout=TIMEOUT_S,
            socket_connect_timeout=TIMEOUT_S,
            retry=Retry(NoBackoff(), 0),
        )
        self._task = asyncio.create_task(self._run(), name="lbtui-limit-store")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._client is not None:
            if self.up and self.name is not None:  # leave at once rather than in three beats
                with contextlib.suppress(TimeoutError, RedisError, OSError):
                    await asyncio.wait_for(self._client.zrem(self._peers_key, self.name), 0.2)
            await self._client.aclose()
            self._client = None

    @property
    def _peers_key(self) -> str:
        return f"{{{self.prefix}}}:replicas"

    async def _run(self) -> None:
        next_beat = 0.0
        while True:
            try:
                now = self.clock()
                if now >= next_beat or not self.up:
                    await asyncio.wait_for(self._beat(), TIMEOUT_S)
                    next_beat = now + self.beat_s
                await asyncio.wait_for(self._settle(), TIMEOUT_S)
                if not self.up:
                    self._changed(True, "")
            except asyncio.CancelledError:
                raise
            except (TimeoutError, RedisError, OSError) as exc:
                reason = str(exc) or type(exc).__name__
                if self.up is not False:
                    self._changed(False, reason)
                await asyncio.sleep(RETRY_S)
                continue
            await asyncio.sleep(self.sync_s)

    async def _beat(self) -> None:
        names = await self._client.eval(
            BEAT_LUA, 1, self._peers_key, self.name, BEATS_ALIVE * self.beat_s
        )
        peers = tuple(sorted(n.decode() if isinstance(n, bytes) else str(n) for n in names))
        self.peers = peers
        if self.link.mode == SYNCED:
            self.link.peers = max(1, len(peers))

    async def _settle(self) -> None:
        """One round trip: every bucket's pending cost sent, every debt read back."""
        sends: list[Send] = []
        for b in self.buckets.values():
            sends.append((b, None, b.key, b.rate, b.burst, b.take_pending()))
        for k in self.keyed:
            for key, cost in k.take_pending():
                sends.append((k, key, k.prefix + _client_key(key), k.rate, k.burst, cost))
        if not sends:
            await self._client.ping()
            return
        try:
            replies = await self._call(sends)
        except NoScriptError:  # a restarted or flushed Redis: load the script, once
            await self._client.script_load(GCRA_LUA)
            replies = await self._call(sends)
        now = self.clock()
        for (owner, key, _, _, _, _), debt in zip(sends, replies, strict=True):
            if isinstance(owner, SyncedBucket):
                owner.settle(debt, now)
            else:
                owner.settle(key, debt, now)
        self.settled_total += 1

    async def _call(self, sends: list[Send]) -> list[float]:
        """The debts after adding each cost: one script call a :data:`MAX_KEYS_A_CALL` keys,
        pipelined (one round trip)."""
        pipe = self._client.pipeline(transaction=False)
        for i in range(0, len(sends), MAX_KEYS_A_CALL):
            chunk = sends[i : i + MAX_KEYS_A_CALL]
            args: list[str] = ["1", ""]
            for _, _, _, rate, burst, cost in chunk:
                args += (repr(rate), repr(burst), repr(cost))
            pipe.evalsha(self._sha, len(chunk), *(name for _, _, name, _, _, _ in chunk), *args)
        debts: list[float] = []
        for reply in await pipe.execute():
            now = float(reply[0])
            debts.extend(float(tat) - now for tat in reply[2::2])
        return debts

    def _changed(self, up: bool, reason: str) -> None:
        now = self.clock()
        self.up = up
        self.since = now
        self.reason = reason
        self.link.mode = SYNCED if up else self.on_error
        for b in self.buckets.values():
            (b.restore if up else b.degrade)(now)
        for k in self.keyed:
            (k.restore if up else k.degrade)(now)
        if self.emit is None:
            return
        store = self.address.shown
        if up:
            message = f"limit store {store} answers: limits shared by {len(self.peers)} replicas"
        else:
            mode = {1: "admitting all", 2: "refusing all", 3: f"1/{self.link.peers} each"}
            message = (
                f"limit store {store} lost ({reason}): limits {mode[self.link.mode]} "
                "until it answers"
            )
        self.emit(
            LimitStoreChanged(
                message=message, store=store, up=up, peers=len(self.peers), reason=reason
            )
        )


def _client_key(key: Hashable) -> str:
    text = str(key)
    if len(text) > MAX_KEY_CHARS:
        return "sha1:" + hashlib.sha1(text.encode()).hexdigest()
    return text


def _credential(url: str, part: str) -> str | None:
    """The URL's ``username`` or ``password`` (Redis 6 ACL: ``redis://USER:PASSWORD@…``)."""
    from urllib.parse import unquote, urlsplit

    raw: str | None = getattr(urlsplit(url), part)
    return unquote(raw) if raw else None
