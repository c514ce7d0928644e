"""The Redis limit store against the memory store: accuracy over replicas, and what it costs.

Run: ``.venv/bin/python bench/limitstore.py`` (≈ 1½ min; ``--seconds 5`` for a quicker run).
Needs Debian's ``redis-server`` on the PATH (it starts one on a free port and stops it by its
PID); nginx if present serves as the static backend, else a demo backend process.

Four tables, every row of one run:

1. **Why the request path does not call Redis**: one decision in memory, on the synced local
   copy, one ``EVALSHA`` round trip through redis-py's asyncio client (CPU µs and latency), and
   one settlement of a few buckets (amortised per request at 1,000 req/s).
2. **Cost at 1,000 req/s**: ``lbtui serve`` with a global and a per-client limit (too high to
   refuse anything), memory store vs Redis store: CPU µs per request of the balancer process
   and client latency p50/p99 (``LoadGenerator``, open loop). Goal: ≤ 15 µs and ≤ 0.5 ms p99 more.
3. **Three replicas sharing one limit**: three ``lbtui serve`` processes, each offered twice the
   limit's share; admitted (200s) vs what one bucket allows (rate × elapsed + burst). Goal:
   within 5 %. The memory store's row shows what the replicas admit without sharing.
4. **Redis stopped for a third of the run and started again** with the three replicas
   (``on_store_error = "local"``): what clients saw — statuses, 5xx (goal 0), admitted vs
   allowed.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
import timeit
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import redis.asyncio as aioredis

from bench.common import BenchError, Proc, Procs, cpu_meter, have, log, table
from lbtui.balancer.redis_store import GCRA_LUA, RedisLimits
from lbtui.balancer.synced_limits import Link, SyncedBucket
from lbtui.config import LimitsConfig
from lbtui.config.store import parse_store
from lbtui.core.limiting import TokenBucket
from lbtui.fleet.redis_server import INSTALL_HINT, RedisServer, redis_server_path
from lbtui.loadgen import LoadGenerator, LoadReport

RATE = 1_000.0
"""Client load of table 2, req/s."""
SHARED_RPS = 150.0
"""The shared limit of tables 3 and 4 (each replica offered 2 × its third)."""
SHARED_BURST = 15.0


def us(seconds: float) -> str:
    return f"{seconds * 1e6:,.1f}"


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:.2f}"


# --- 1: the parts ------------------------------------------------------------------------------


def decision_us() -> tuple[float, float]:
    """µs per ``decide`` on a bucket that admits: memory vs the synced local copy."""
    n = 200_000
    mem = TokenBucket(1e9, 1e9, 0.0)
    syn = SyncedBucket("k", 1e9, 1e9, 0.0, Link())
    t_mem = min(timeit.repeat(lambda: mem.decide(1.0), number=n, repeat=5)) / n
    t_syn = min(timeit.repeat(lambda: syn.decide(1.0), number=n, repeat=5)) / n
    return t_mem, t_syn


async def evalsha_costs(url: str, n: int = 2_000) -> tuple[float, float, float]:
    """One EVALSHA per decision, awaited: CPU µs a call, latency p50 and p99."""
    r = aioredis.Redis.from_url(url)
    script = r.register_script(GCRA_LUA)
    await script(keys=["{bench}:b:direct"], args=["0", "", 1e6, 1e6, 1])
    lat: list[float] = []
    cpu0 = time.process_time()
    for _ in range(n):
        t = time.perf_counter()
        await script(keys=["{bench}:b:direct"], args=["0", "", 1e6, 1e6, 1])
        lat.append(time.perf_counter() - t)
    cpu = (time.process_time() - cpu0) / n
    await r.aclose()
    lat.sort()
    return cpu, lat[n // 2], lat[int(n * 0.99)]


async def settlement_us(url: str, n: int = 500) -> float:
    """CPU µs of one settlement of a global bucket, a backend cap and 20 client keys."""
    address = parse_store(url)
    assert address is not None
    cfg = LimitsConfig(store=url, store_prefix="bench")
    store = RedisLimits(cfg, address)
    store.name = "bench"
    store._client = aioredis.Redis.from_url(url)  # settle by hand: no background task
    await store._client.script_load(GCRA_LUA)
    now = time.monotonic()
    g = store.token_bucket("global", 1e6, 1e6, now)
    c = store.token_bucket("cap:b1", 1e6, 1e6, now)
    k = store.keyed_limiter(1e6, 1e6, max_keys=1000)
    cpu0 = time.process_time()
    for i in range(n):
        t = time.monotonic()
        g.allow(t)
        c.allow(t)
        for j in range(20):
            k.allow(f"10.0.0.{(i + j) % 20}", t)
        await store._settle()
    cpu = (time.process_time() - cpu0) / n
    await store._client.aclose()
    return cpu


# --- 2-4: real balancers -----------------------------------------------------------------------


def limits_toml(url: str | None, rps: float, burst: float, per_client: bool, name: str) -> str:
    text = f'[balancer]\nname = "{name}"\nalgorithm = "round_robin"\n\n[limits]\n'
    text += f"rps = {rps}\nburst = {burst}\n"
    if per_client:
        text += "per_client_rps = 1000000\nper_client_burst = 1000000\n"
    if url is not None:
        text += f'store = "{url}"\n'
    return text


async def load(urls: Sequence[str], rate_each: float, seconds: float) -> list[LoadReport]:
    gens = [LoadGenerator(u, rate_each, seconds, connections=64, timeout_s=5.0) for u in urls]
    return list(await asyncio.gather(*(g.run() for g in gens)))


def start_lbtui(procs: Procs, ports: list[int], toml: str, name: str) -> Proc:
    """``lbtui serve``, tried again on another port when a port picked free was taken
    meanwhile (other programs share this machine)."""
    for attempt in range(3):
        try:
            return procs.lbtui(ports, config=toml, name=name)
        except BenchError as exc:
            if "already in use" not in str(exc) or attempt == 2:
                raise
    raise AssertionError("unreachable")


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def cost_rows(
    procs: Procs, ports: list[int], redis_url: str, seconds: float, rounds: int
) -> list[list[str]]:
    """Both balancers up at once, runs alternating between them, medians of ``rounds``."""
    cases = [("memory", None), ("redis", redis_url)]
    lbs = {
        label: start_lbtui(procs, ports, limits_toml(url, 1e6, 1e6, True, label), label)
        for label, url in cases
    }
    figures: dict[str, list[tuple[float, float, float, float, int]]] = {k: [] for k in lbs}
    for proc in lbs.values():  # warm up connections and buckets
        asyncio.run(load([f"http://127.0.0.1:{proc.port}/"], RATE, 1.0))
    for _ in range(rounds):
        for label, proc in lbs.items():
            with cpu_meter([proc.pid]) as meter:
                (rep,) = asyncio.run(load([f"http://127.0.0.1:{proc.port}/"], RATE, seconds))
            bad = sum(n for s, n in rep.status_counts.items() if s != 200)
            figures[label].append(
                (
                    rep.achieved_rate,
                    meter.seconds / max(1, rep.completed),
                    rep.corrected.p50,
                    rep.corrected.p99,
                    bad + sum(rep.errors.values()),
                )
            )
    for proc in lbs.values():
        procs.stop(proc)
    return [
        [
            label,
            f"{median([f[0] for f in runs]):,.0f}",
            us(median([f[1] for f in runs])),
            ms(median([f[2] for f in runs])),
            ms(median([f[3] for f in runs])),
            " / ".join(ms(f[3]) for f in runs),
            str(sum(f[4] for f in runs)),
        ]
        for label, runs in figures.items()
    ]


def shared_rows(
    procs: Procs, ports: list[int], redis: RedisServer, seconds: float, outage: bool
) -> list[list[str]]:
    rows = []
    cases: list[tuple[str, str | None]] = [("redis, Redis stopped ⅓ of the run", redis.url)]
    if not outage:
        cases = [("memory (nothing shared)", None), ("redis", redis.url)]
    for label, url in cases:
        lbs = []
        for i in range(3):
            toml = limits_toml(url, SHARED_RPS, SHARED_BURST, False, f"r{i + 1}")
            if url is not None:
                toml += "store_sync_ms = 50\nstore_heartbeat_ms = 250\n"
            lbs.append(start_lbtui(procs, ports, toml, f"replica-{i + 1}"))
        time.sleep(1.0)  # heartbeats: every replica sees the other two
        urls = [f"http://127.0.0.1:{p.port}/" for p in lbs]
        t0 = time.monotonic()
        if outage:
            reports = asyncio.run(with_outage(urls, redis, seconds))
        else:
            reports = asyncio.run(load(urls, 2 * SHARED_RPS / 3, seconds))
        elapsed = time.monotonic() - t0
        for p in lbs:
            procs.stop(p)
        statuses: dict[int, int] = {}
        for rep in reports:
            for s, n in rep.status_counts.items():
                statuses[s] = statuses.get(s, 0) + n
        errors = sum(sum(rep.errors.values()) for rep in reports)
        admitted = statuses.get(200, 0)
        allowed = SHARED_RPS * elapsed + SHARED_BURST
        rows.append(
            [
                label,
                f"{sum(r.completed for r in reports):,}",
                f"{admitted:,}",
                f"{allowed:,.0f}",
                f"{(admitted - allowed) / allowed * 100:+.1f} %",
                f"{statuses.get(429, 0):,}",
                str(sum(n for s, n in statuses.items() if s >= 500) + errors),
            ]
        )
    return rows


async def with_outage(urls: Sequence[str], redis: RedisServer, seconds: float) -> list[LoadReport]:
    run = asyncio.ensure_future(load(urls, 2 * SHARED_RPS / 3, seconds))
    await asyncio.sleep(seconds / 3)
    log("  stopping redis-server")
    redis.stop()
    await asyncio.sleep(seconds / 3)
    log("  starting redis-server again")
    await asyncio.to_thread(redis.start)
    return await run


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="each loaded run (10)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating runs of table 2 (3)")
    args = parser.parse_args(argv)
    if redis_server_path() is None:
        print(f"skipped: {INSTALL_HINT}")
        return 2
    with RedisServer() as redis, Procs() as procs:
        if have("nginx"):
            _, ports = procs.static_backends(2)
        else:
            ports = [p.port for p in procs.fleet(2)]
        log("1/4 the parts")
        t_mem, t_syn = decision_us()
        cpu, p50, p99 = asyncio.run(evalsha_costs(redis.url))
        settle = asyncio.run(settlement_us(redis.url))
        print("\n1. One decision, and what calling Redis would cost\n")
        print(
            table(
                ["", "CPU µs", "latency p50 ms", "latency p99 ms", "per request at 1,000 req/s"],
                [
                    ["memory bucket decide", us(t_mem), "", "", us(t_mem)],
                    ["synced bucket decide (Redis store)", us(t_syn), "", "", us(t_syn)],
                    ["one EVALSHA awaited (redis-py asyncio)", us(cpu), ms(p50), ms(p99), us(cpu)],
                    [
                        "one settlement (2 buckets + 20 keys, pipelined)",
                        us(settle),
                        "",
                        "",
                        us(settle * 20 / RATE) + " (20 a second)",
                    ],
                ],
            )
        )
        log("2/4 cost at 1,000 req/s")
        rows = cost_rows(procs, ports, redis.url, args.seconds, args.rounds)
        print(
            f"\n2. lbtui serve at {RATE:,.0f} req/s, {args.rounds} alternating runs of "
            f"{args.seconds:g} s each (open loop); medians\n"
        )
        print(
            table(
                ["store", "req/s", "CPU µs/req", "p50 ms", "p99 ms", "p99 of each run", "non-200"],
                rows,
            )
        )
        mem_cpu, red_cpu = float(rows[0][2].replace(",", "")), float(rows[1][2].replace(",", ""))
        mem_p99, red_p99 = float(rows[0][4]), float(rows[1][4])
        print(
            f"\nRedis store − memory store: {red_cpu - mem_cpu:+.1f} µs CPU a request "
            f"(goal ≤ 15), {red_p99 - mem_p99:+.2f} ms p99 (goal ≤ 0.5)"
        )
        headers = ["three replicas", "answered", "admitted", "one bucket allows", "Δ", "429", "5xx"]
        log("3/4 three replicas sharing one limit")
        rows = shared_rows(procs, ports, redis, args.seconds, outage=False)
        print(
            f"\n3. Three replicas, one limit of {SHARED_RPS:g} req/s (burst {SHARED_BURST:g}), "
            f"each offered {2 * SHARED_RPS / 3:g} req/s for {args.seconds:g} s\n"
        )
        print(table(headers, rows))
        log("4/4 Redis stopped and started mid-run")
        rows = shared_rows(procs, ports, redis, args.seconds, outage=True)
        print(
            "\n4. The same with redis-server stopped after ⅓ of the run and started after ⅔ "
            '(on_store_error = "local": each replica enforces ⅓ of the limit meanwhile)\n'
        )
        print(table(headers, rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
