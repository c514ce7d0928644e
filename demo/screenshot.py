"""Regenerate the README's screenshots from a real `lbtui demo` run: a real fleet, balancer and
load, the console rendered off-screen after a few seconds, with one backend slowed.

    .venv/bin/python demo/screenshot.py

Writes ``demo/screenshot.svg`` (180×50, the README's), and the console at the two sizes it
must fit: ``demo/screenshot-80x24.svg`` and ``demo/screenshot-120x40.svg``.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from lbtui.control.model import ClearFault, FaultSpec, SetFault
from lbtui.demo import DataPlaneProcess, DemoOptions
from lbtui.tui.app import LbtuiApp

HERE = Path(__file__).resolve().parent
SHOTS = (
    (HERE / "screenshot.svg", (180, 50)),
    (HERE / "screenshot-80x24.svg", (80, 24)),
    (HERE / "screenshot-120x40.svg", (120, 40)),
)
WARM_S = 12.0
"""Long enough for the rates, percentiles and sparklines to fill."""


async def shoot(dataplane: DataPlaneProcess, out: Path, size: tuple[int, int]) -> None:
    assert dataplane.control is not None
    title = f"lbtui demo · balancer {dataplane.balancer_url} · admin {dataplane.admin_url}"
    app = LbtuiApp(dataplane.control, load=dataplane.load, title=title)
    async with app.run_test(size=size) as pilot:
        end = time.monotonic() + WARM_S
        while time.monotonic() < end:
            await pilot.pause(0.25)
        await pilot.press("down", "down")  # api-3, the slowed one
        await pilot.pause(1.0)
        app.save_screenshot(filename=out.name, path=str(out.parent))
    print(f"wrote {out}")


async def main() -> None:
    dataplane = DataPlaneProcess(DemoOptions(rate=300))
    dataplane.start()
    try:
        assert dataplane.control is not None
        delay = FaultSpec(kind="delay", ms=120, jitter_ms=30)
        await dataplane.control.act(SetFault(backend="api-3", fault=delay))
        for out, size in SHOTS:
            await shoot(dataplane, out, size)
        await dataplane.control.act(ClearFault(backend="api-3"))
    finally:
        dataplane.stop()


if __name__ == "__main__":
    asyncio.run(main())
