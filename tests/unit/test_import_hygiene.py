"""The layers hold, checked on every module the package walk finds (harlequin's import-hygiene
test, generated rather than listed, so a new module is covered the day it is added):

- the core imports nothing outside ``lbtui.core`` and no I/O (asyncio, aiohttp, httpx) nor any
  console library;
- the console (``lbtui.tui``) imports nothing of the data plane (``lbtui.balancer``): it sees
  a balancer only through ``Control``;
- the control plane (``lbtui.control``) imports nothing of the console;
- the data plane (``lbtui.balancer``) imports neither the console nor the control plane.

Each layer is imported whole in a fresh interpreter and ``sys.modules`` read afterwards, so
what is checked is what really gets loaded, lazily imported modules aside.
"""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys

import pytest

import lbtui

PACKAGE_WALK = sorted(m.name for m in pkgutil.walk_packages(lbtui.__path__, "lbtui."))


def _layer(name: str) -> list[str]:
    return [m for m in PACKAGE_WALK if m == name or m.startswith(name + ".")]


def _loaded_after_importing(modules: list[str]) -> set[str]:
    code = (
        "import importlib, json, sys\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(json.loads(out.stdout))


def _offenders(loaded: set[str], banned: list[str]) -> list[str]:
    return sorted(m for m in loaded for b in banned if m == b or m.startswith(b + "."))


CONTRACTS = {
    "lbtui.core": [
        "asyncio",
        "aiohttp",
        "httpx",
        "textual",
        "rich",
        *(f"lbtui.{p}" for p in ("balancer", "control", "tui", "chaos", "fleet", "config")),
    ],
    "lbtui.tui": ["lbtui.balancer"],
    "lbtui.control": ["lbtui.tui", "textual"],
    "lbtui.balancer": ["lbtui.tui", "lbtui.control", "lbtui.chaos", "textual"],
}


def test_the_walk_finds_every_layer():
    for layer in CONTRACTS:
        assert len(_layer(layer)) > 3, layer
    assert "lbtui.core.faults" in PACKAGE_WALK  # once missed by a hand-made list


@pytest.mark.parametrize("layer", list(CONTRACTS))
def test_layer_imports_nothing_it_must_not(layer: str):
    loaded = _loaded_after_importing(_layer(layer))
    assert _offenders(loaded, CONTRACTS[layer]) == []


def test_a_violation_would_be_seen():
    """The check itself: importing a console module from the core's list is caught."""
    loaded = _loaded_after_importing(["lbtui.core.window", "lbtui.tui.recorded"])
    assert "lbtui.tui.recorded" in _offenders(loaded, CONTRACTS["lbtui.core"] + ["lbtui.tui"])
