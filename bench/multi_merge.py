"""What a console over several balancers costs itself: merging their snapshots into one.

``lbtui attach URL URL…`` merges every balancer's snapshot each refresh (``lbtui.control.merge``).
Pure CPU, no sockets: the recorded snapshot's busiest backend copied to N names, the same
snapshot from B balancers. Two rows, side by side in one run: every row moved since the last
merge (each view a new object: a busy fleet), and none did (the views ``HttpControl`` keeps for
backends a delta answer did not mention: a quiet fleet, rows reused).

    .venv/bin/python bench/multi_merge.py [--backends 1000] [--balancers 3] [--rounds 10]
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

from lbtui.control.merge import Merger, Part
from lbtui.control.model import Snapshot

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", type=int, default=1000)
    parser.add_argument("--balancers", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    recorded = Snapshot.from_json((ROOT / "fixtures/snapshots/main.json").read_bytes())
    busiest = max(recorded.backends, key=lambda b: b.rps)

    def fleet() -> Snapshot:
        views = [dataclasses.replace(busiest, name=f"b{i}") for i in range(args.backends)]
        return dataclasses.replace(recorded, backends=views, pools=[])

    def parts(snapshot: Snapshot) -> list[Part]:
        return [Part(f"lb{i}", snapshot) for i in range(args.balancers)]

    moved = [parts(fleet()) for _ in range(args.rounds + 1)]
    merger = Merger()
    merger.merge(moved[0], at=recorded.at, wall=recorded.wall, last_event_id=0)
    started = time.perf_counter()
    for p in moved[1:]:
        merger.merge(p, at=recorded.at, wall=recorded.wall, last_event_id=0)
    busy = (time.perf_counter() - started) / args.rounds
    quiet_parts = moved[-1]
    started = time.perf_counter()
    for _ in range(args.rounds):
        merger.merge(quiet_parts, at=recorded.at, wall=recorded.wall, last_event_id=0)
    quiet = (time.perf_counter() - started) / args.rounds
    print(f"{args.balancers} balancers × {args.backends} backends, {args.rounds} merges each")
    print("| case | ms per merge |")
    print("|---|---|")
    print(f"| every row moved (busy fleet) | {busy * 1000:.1f} |")
    print(f"| no row moved (quiet fleet, rows reused) | {quiet * 1000:.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
