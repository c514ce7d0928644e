"""Regenerate demo/screenshot.svg from a real `lbtui demo` run: a real fleet, balancer and load,
the console rendered off-screen at 180×50 after a few seconds, with one backend slowed.

    .venv/bin/python demo/screenshot.py
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from lbtui.control.model import FaultSpec
from lbtui.demo import DataPlaneProcess, DemoOptions
from lbtui.tui.app import LbtuiApp

OUT = Path(__file__).resolve().parent / "screenshot.svg"


async def main() -> None:
    dataplane = DataPlaneProcess(DemoOptions(rate=300))
    dataplane.start()
    try:
        assert dataplane.control is not None
        await dataplane.control.set_fault("api-3", FaultSpec(kind="delay", ms=120, jitter_ms=30))
        title = f"lbtui demo · balancer {dataplane.balancer_url} · admin {dataplane.admin_url}"
        app = LbtuiApp(dataplane.control, load=dataplane.load, title=title)
        async with app.run_test(size=(180, 50)) as pilot:
            end = time.monotonic() + 12
            while time.monotonic() < end:
                await pilot.pause(0.25)
            await pilot.press("down", "down")
            await pilot.pause(1.0)
            app.save_screenshot(filename=OUT.name, path=str(OUT.parent))
        await dataplane.control.clear_fault("api-3")
    finally:
        dataplane.stop()
    print(f"wrote {OUT}")


if __name__ == "__main__":
    asyncio.run(main())
