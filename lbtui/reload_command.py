"""``lbtui reload``: tell a running balancer to read its config file again (as SIGHUP does).

It asks the admin API (``POST /api/v1/config/reload``), so it works for a balancer on another
host or in a container where sending a signal is awkward, and it prints what the reload did:
exit 0 with the changes, 2 with every problem of a broken file (the balancer changed nothing
and keeps serving), 1 when the admin API could not be reached or refused.
"""

from __future__ import annotations

import argparse
import os
import sys

EXIT_REJECTED = 2
EXIT_UNREACHABLE = 1


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--admin",
        metavar="URL",
        default="http://127.0.0.1:9901",
        help="the balancer's admin API (default http://127.0.0.1:9901)",
    )
    parser.add_argument(
        "--token", metavar="TOKEN", help="admin API bearer token (default $LBTUI_ADMIN_TOKEN)"
    )


def run(args: argparse.Namespace) -> int:
    import httpx

    url = args.admin.rstrip("/")
    if "://" not in url:
        url = f"http://{url}"
    token = args.token or os.environ.get("LBTUI_ADMIN_TOKEN")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        resp = httpx.post(
            f"{url}/api/v1/config/reload", headers=headers, timeout=10.0, trust_env=False
        )
    except httpx.HTTPError as exc:
        print(f"lbtui: {url}: unreachable ({type(exc).__name__}: {exc})", file=sys.stderr)
        return EXIT_UNREACHABLE
    try:
        data = resp.json()
    except ValueError:
        data = {}
    data = data if isinstance(data, dict) else {}
    if resp.status_code == 200:
        changes = data.get("changes") or []
        rest = data.get("not_applied") or []
        done = ", ".join(changes) or "no change"
        print(f"lbtui: config reloaded from {data.get('source')}: {done}")
        for item in rest:
            print(f"lbtui: {item}")
        return 0
    problems = data.get("problems")
    if resp.status_code == 422 and isinstance(problems, list):
        print(
            f"lbtui: config reload rejected, nothing changed: {data.get('source')}: "
            f"{len(problems)} problem{'s' if len(problems) != 1 else ''}",
            file=sys.stderr,
        )
        for p in problems:
            print(f"  - {p}", file=sys.stderr)
        return EXIT_REJECTED
    error = data.get("error")
    message = error.get("message") if isinstance(error, dict) else None
    print(f"lbtui: {url}: HTTP {resp.status_code}: {message or resp.text[:200]}", file=sys.stderr)
    return EXIT_UNREACHABLE
