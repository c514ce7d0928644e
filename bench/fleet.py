"""How fast the fleet breaks and heals: kill → port refuses, restart → answers, per round.

    .venv/bin/python bench/fleet.py [--rounds 5]

Starts one demo backend (port 0), then for each round SIGKILLs it and measures until a TCP
connect to its port is refused (target: 100 ms), and restarts it on the same port and measures
until it answers 200 (target: 2 s). Prints each round beside the target, then the worst, and
exits 1 if a target was missed. Everything stays on 127.0.0.1 and every process is stopped.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time

import aiohttp

from lbtui.fleet.supervisor import BackendSpec, Fleet

KILL_TARGET_S = 0.1
RESTART_TARGET_S = 2.0


async def refused(port: int) -> bool:
    try:
        _r, w = await asyncio.open_connection("127.0.0.1", port)
    except ConnectionRefusedError:
        return True
    w.close()
    await w.wait_closed()
    return False


async def answers(http: aiohttp.ClientSession, url: str) -> bool:
    try:
        async with http.get(url) as resp:
            await resp.read()
            return resp.status == 200
    except aiohttp.ClientError:
        return False


async def poll_until(probe: object, deadline_s: float) -> float:
    """Seconds until ``await probe()`` is true; raises after ``deadline_s``."""
    assert callable(probe)
    t0 = time.monotonic()
    for _ in range(1_000_000):  # bounded in count and by the deadline
        if await probe():
            return time.monotonic() - t0
        if time.monotonic() - t0 > deadline_s:
            break
        await asyncio.sleep(0.0005)
    raise TimeoutError(f"not within {deadline_s} s")


async def main(rounds: int) -> int:
    kills: list[float] = []
    restarts: list[float] = []
    timeout = aiohttp.ClientTimeout(total=1.0)
    async with (
        Fleet([BackendSpec("bench-1", latency_ms=0)]) as fleet,
        aiohttp.ClientSession(timeout=timeout) as http,
    ):
        port = fleet.member("bench-1").port
        url = fleet.url("bench-1") + "/"
        print(f"backend bench-1 on 127.0.0.1:{port}; {rounds} rounds")
        print(
            f"{'round':>5}  {'kill→refused':>14}  {'target':>8}  {'restart→200':>13}  {'target':>8}"
        )
        for i in range(1, rounds + 1):
            t0 = time.monotonic()
            await fleet.kill("bench-1")
            await poll_until(lambda: refused(port), 5.0)
            k = time.monotonic() - t0
            t1 = time.monotonic()
            await fleet.restart("bench-1")
            await poll_until(lambda: answers(http, url), 10.0)
            r = time.monotonic() - t1
            assert fleet.member("bench-1").port == port
            kills.append(k)
            restarts.append(r)
            print(
                f"{i:>5}  {k * 1000:>11.1f} ms  {KILL_TARGET_S * 1000:>5.0f} ms"
                f"  {r * 1000:>10.0f} ms  {RESTART_TARGET_S * 1000:>5.0f} ms"
            )
    worst_k, worst_r = max(kills), max(restarts)
    ok = worst_k <= KILL_TARGET_S and worst_r <= RESTART_TARGET_S
    print(
        f"worst  {worst_k * 1000:>11.1f} ms  {KILL_TARGET_S * 1000:>5.0f} ms"
        f"  {worst_r * 1000:>10.0f} ms  {RESTART_TARGET_S * 1000:>5.0f} ms"
        f"   {'ok' if ok else 'MISSED'}"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    a = ap.parse_args()
    if not 1 <= a.rounds <= 100:
        sys.exit("--rounds must be from 1 to 100")
    sys.exit(asyncio.run(main(a.rounds)))
