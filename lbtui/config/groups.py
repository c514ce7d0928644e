"""Target groups: ``[[groups]]``, the unit that has an algorithm, stickiness and zones.

A group is ELB's target group: named backends balanced by their own algorithm (default:
``[balancer]``'s), with their own breaker and health-check settings, an optional sticky
cookie, and whether they balance across zones. A route forwards to groups by weight
(``routes.forward``); a route's ``backends = [...]`` is a group with no name.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from lbtui.config.discovery import DiscoveryConfig
from lbtui.config.sections import Algorithm, BreakerOverride, HealthConfig, Section

NAME_PATTERN = r"^[A-Za-z0-9_.:\-]+$"
COOKIE_PATTERN = r"^[A-Za-z0-9!#$%&'*+\-.^_`|~]+$"
"""An RFC 6265 cookie name (a token)."""


class StickyConfig(Section):
    """A balancer-generated cookie that keeps a client on one backend while it is eligible."""

    cookie: Annotated[str, Field(min_length=1, max_length=64, pattern=COOKIE_PATTERN)]
    ttl_s: Annotated[float, Field(ge=0, le=365 * 86400)] = 0.0
    """The cookie's ``Max-Age``; 0 = a session cookie (gone when the browser closes)."""


class GroupConfig(Section):
    """A target group: backends (by name), balanced by their own algorithm."""

    name: Annotated[str, Field(min_length=1, max_length=64, pattern=NAME_PATTERN)]
    """Routes forward to it by this name; ``default`` is where unrouted requests go."""
    backends: list[str] = Field(default_factory=list)
    """Names from ``[[backends]]``; a backend may be in several groups."""
    algorithm: Algorithm | None = None
    """None: ``[balancer] algorithm`` (and follows it when the operator changes it)."""
    breaker: BreakerOverride | None = None
    """Changes to ``[breaker]`` for this group's backends (a backend's own ``breaker`` keys
    win over these)."""
    health: HealthConfig | None = None
    """Active checks of its backends instead of ``[health]`` (a backend in several groups is
    checked as the first of them that sets ``health`` says)."""
    sticky: StickyConfig | None = None
    """None: no stickiness."""
    discovery: DiscoveryConfig | None = None
    """Where more of its backends come from: a watched file or DNS (``config/discovery.py``);
    they join ``backends``."""
    cross_zone: bool = True
    """False: only backends in ``[balancer] zone`` while it has eligible ones, else spill to
    the other zones (an event when spilling starts and stops); True: balance across zones."""
