"""Before/after, side by side: lbtui variants (source trees and/or configs) in alternating rounds.

Run: ``.venv/bin/python bench/ab.py [--rounds 3] [--duration 5] VARIANT ...``

A variant is ``LABEL=SRC[:TOML]``: ``SRC`` a directory holding an ``lbtui`` package (``.`` for
this tree; ``git worktree add /tmp/base HEAD~1`` or ``git archive HEAD | tar -x -C /tmp/base``
for an older one), ``TOML`` an optional config file whose sections are added (its
``[listener]`` address and its backends are replaced). Every variant fronts the same four static
nginx backends; each round runs every variant once (``wrk -t1 -c64`` after a warm-up) and the
table gives medians of req/s and of lbtui's CPU µs per request. On a noisy 2-core machine the
rounds alternate so that drift hits every variant alike; compare only within one run.

Example::

    git archive HEAD | tar -x -C /tmp/base
    .venv/bin/python bench/ab.py before=/tmp/base after=. aiohttp=.:bench/configs/aiohttp.toml
"""

from __future__ import annotations

import argparse
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path

from common import HOST, PYTHON, BenchError, Procs, cpu_meter, free_port, log, run_wrk, table


@dataclass(frozen=True)
class Variant:
    label: str
    src: Path
    toml: Path | None


def parse_variant(text: str) -> Variant:
    label, eq, rest = text.partition("=")
    if not eq or not label:
        raise argparse.ArgumentTypeError(f"expected LABEL=SRC[:TOML], got {text!r}")
    src, _, toml = rest.partition(":")
    path = Path(src or ".").resolve()
    if not (path / "lbtui" / "__init__.py").exists():
        raise argparse.ArgumentTypeError(f"{path} holds no lbtui package")
    return Variant(label, path, Path(toml).resolve() if toml else None)


def config_text(v: Variant, port: int, backends: list[int]) -> str:
    text = f'[listener]\naddress = "{HOST}:{port}"\n'
    if v.toml is not None:
        extra = v.toml.read_text()
        lines = []
        section = ""
        for line in extra.splitlines():
            s = line.strip()
            if s.startswith("["):
                section = s
            if section == "[listener]" and s.startswith("address"):
                continue
            lines.append(line)
        extra = "\n".join(lines)
        if "[listener]" in extra:
            text = extra.replace("[listener]", text.strip(), 1) + "\n"
        else:
            text += "\n" + extra + "\n"
    text += "\n[admin]\nenabled = false\n" if "[admin]" not in text else ""
    for i, p in enumerate(backends):
        text += f'\n[[backends]]\nname = "b{i + 1}"\nurl = "http://{HOST}:{p}"\n'
    return text


def run_variant(
    procs: Procs, v: Variant, backends: list[int], duration: float, warmup: float
) -> tuple[float, float, int]:
    port = free_port()
    conf = procs.tmp / f"{v.label}.toml"
    conf.write_text(config_text(v, port, backends))
    env_src = str(v.src)
    code = f"import sys; sys.path.insert(0, {env_src!r}); from lbtui.cli import main; main()"
    argv = [PYTHON, "-c", code, "serve", "--config", str(conf)]
    proc = procs.start(f"lbtui-{v.label}", argv, port)
    try:
        procs._wait_ready(
            proc, lambda: "lbtui: balancing" in proc.output(), 15.0, f"{v.label} to listen"
        )
        url = f"http://{HOST}:{port}/"
        run_wrk(url, warmup)
        with cpu_meter([proc.pid]) as meter:
            res = run_wrk(url, duration)
        errors = res.non_2xx_3xx + res.socket_errors
        return res.rps, meter.seconds * 1e6 / max(res.requests, 1), errors
    finally:
        procs.stop(proc)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("variants", nargs="+", type=parse_variant, metavar="LABEL=SRC[:TOML]")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--duration", type=float, default=5.0)
    p.add_argument("--warmup", type=float, default=1.0)
    args = p.parse_args()
    got: dict[str, list[tuple[float, float, int]]] = {v.label: [] for v in args.variants}
    try:
        with Procs() as procs:
            _, ports = procs.static_backends(4)
            for r in range(args.rounds):
                for v in args.variants:
                    rps, cpu, errors = run_variant(procs, v, ports, args.duration, args.warmup)
                    log(f"[{r + 1}/{args.rounds}] {v.label}: {rps:,.0f} req/s, {cpu:.1f} µs/req")
                    got[v.label].append((rps, cpu, errors))
    except BenchError as exc:
        print(f"ab: {exc}", file=sys.stderr)
        return 1
    first = args.variants[0].label
    ref_cpu = statistics.median(c for _, c, _ in got[first])
    rows = []
    for label, runs in got.items():
        rps = statistics.median(r for r, _, _ in runs)
        cpu = statistics.median(c for _, c, _ in runs)
        rows.append(
            [
                label,
                f"{rps:,.0f}",
                f"{cpu:.1f}",
                f"{cpu / ref_cpu:.2f}",
                " ".join(f"{c:.0f}" for _, c, _ in runs),
                str(sum(e for _, _, e in runs)),
            ]
        )
    print(
        f"\nwrk -t1 -c64 -d{args.duration:g}s, 4 static backends, {args.rounds} rounds (medians)\n"
    )
    headers = ["variant", "req/s", "CPU µs/req", f"÷ {first}", "CPU per round", "errors"]
    print(table(headers, rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
