"""The data plane: an aiohttp reverse proxy that routes, balances, forwards and records."""
