"""The layers hold: the core imports no I/O, the balancer no console."""

from __future__ import annotations

import subprocess
import sys


def _modules_after_import(module: str) -> set[str]:
    code = f"import sys, {module}; print('\\n'.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(out.stdout.split())


def test_core_is_pure():
    mods = _modules_after_import(
        "lbtui.core.balancing, lbtui.core.window, lbtui.core.record, lbtui.core.breaker, "
        "lbtui.core.limiting, lbtui.core.retry, lbtui.core.health, lbtui.core.ejection, "
        "lbtui.core.events"
    )
    for banned in (
        "asyncio",
        "aiohttp",
        "textual",
        "rich",
        "httpx",
        "lbtui.balancer",
        "lbtui.control",
    ):
        assert banned not in mods, banned


def test_balancer_does_not_import_the_console():
    mods = _modules_after_import("lbtui.balancer.proxy, lbtui.balancer.server")
    assert "textual" not in mods
    assert "lbtui.tui" not in mods
