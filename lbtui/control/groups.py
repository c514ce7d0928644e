"""What the snapshot says of target groups and routes: one view of each, read from the state.

Kept apart from :mod:`lbtui.control.model`, which re-exports them, so that each stays a module
one can read in a sitting.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal


@dataclass(frozen=True, slots=True)
class PoolView:
    """One target group (``default``, a ``[[groups]]`` entry, or a route's unnamed one) and
    its balance figures."""

    name: str
    """The group's name: ``default``, a ``[[groups]]`` name, or ``routes[i]`` for the unnamed
    group of the i-th route's ``backends``."""
    route: str | None
    """The routes that forward to it, by name (comma-separated); ``None`` for none (the
    default group)."""
    backends: list[str]
    eligible: list[str]
    """The backends that take new requests now (those L and M are computed over)."""
    panic: bool
    rps: float
    """Σ of the eligible backends' rates."""
    imbalance: float
    """L over the eligible backends (``lbtui.core.balance``)."""
    overload: int
    """M over the eligible backends."""
    algorithm: str = ""
    zone: str | None = None
    """The zone it stays in (``cross_zone = false``); None: it balances across zones."""
    spilling: bool = False
    """It has no eligible backend in ``zone`` and sends to the other zones."""
    sticky: str | None = None
    """Its sticky cookie's name (None: not sticky)."""


@dataclass(frozen=True, slots=True)
class RouteView:
    """One routing rule, in evaluation order, and where it sends requests now."""

    name: str
    """Its ``name``, else ``routes[i]`` (its place in the config)."""
    match: str
    """What it matches, for people: ``host/path*``, methods, headers, query."""
    action: Literal["forward", "redirect", "respond"]
    forward: dict[str, float] = field(default_factory=dict)
    """Forward weights by group, as they are now (``set_forward`` changes them)."""
