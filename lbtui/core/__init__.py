"""Pure policy: no I/O, no aiohttp, no asyncio, no textual. Every decision takes `now`."""
