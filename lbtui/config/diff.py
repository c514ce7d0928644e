"""What a reload changes: ``diff(old, new)`` → a list of typed changes, one frozen dataclass each.

A reload (SIGHUP, ``POST /api/v1/config/reload``, ``lbtui reload``) is applied as a
difference, the way nginx and HAProxy reload without dropping connections: the balancer keeps
every backend, breaker, window and connection that the new file does not change, and changes
only what it does. This module decides *what* changed and nothing else — pure, on two validated
``Config`` objects, tested without sockets; ``balancer/reconfigure.py`` applies the list.

The kinds: a backend added, removed, reweighted (its weight alone changed: its breaker and
windows stay) or replaced (its address, cap, zone or breaker override changed: a new one takes
its place and the old one finishes the requests it has); the algorithm swapped; a table that is
applied live (``limits``, ``breaker``, ``ejection``, ``health``, ``retries``, ``groups``,
``routes``, ``fallback``, ``access_log``, ``balancer.hash_on``); a listener opened, closed
(its requests finish) or replaced (its address, certificates or redirect changed); and a table
or key whose change takes a restart (the listener engine and the worker count, the admin API,
the proxy's timeouts and engines, where the limits are kept (``limits.store``…), the replica's
name, and any table this module does not know, such as one a newer version adds), reported and
left as it was.
"""

from __future__ import annotations

from dataclasses import dataclass

from lbtui.config.listeners import ListenerSpec
from lbtui.config.model import Config
from lbtui.config.sections import BackendConfig
from lbtui.config.store import STORE_KEYS

LIVE_TABLES: tuple[str, ...] = (
    "limits",
    "breaker",
    "ejection",
    "health",
    "retries",
    "groups",
    "routes",
    "fallback",
    "access_log",
)
"""Tables a reload applies in place, in the order they are applied."""
BALANCER_LIVE: frozenset[str] = frozenset({"algorithm", "hash_on"})
"""The ``[balancer]`` keys a reload applies; the others (the replica's name) take a restart."""
IGNORED: frozenset[str] = frozenset({"backends", "balancer", "base_dir", "listener", "listeners"})
"""Fields compared on their own terms (backends and listeners one by one, the balancer and the
``[listener]`` shorthand key by key) or not at all (``base_dir`` is where the file is, not
what it says)."""
LISTENER_FIXED: frozenset[str] = frozenset({"engine", "workers"})
"""The ``[listener]`` keys that take a restart (its address is a listener's, compared as one)."""


@dataclass(frozen=True, slots=True)
class BackendAdded:
    config: BackendConfig

    def describe(self) -> str:
        return f"+{self.config.name}"


@dataclass(frozen=True, slots=True)
class BackendRemoved:
    name: str

    def describe(self) -> str:
        return f"-{self.name}"


@dataclass(frozen=True, slots=True)
class BackendReweighted:
    name: str
    old: float
    new: float

    def describe(self) -> str:
        return f"{self.name} weight {self.old:g} → {self.new:g}"


@dataclass(frozen=True, slots=True)
class BackendReplaced:
    """Its address, cap, zone or breaker override changed: a new backend of the same name."""

    config: BackendConfig
    keys: tuple[str, ...]

    def describe(self) -> str:
        return f"~{self.config.name} ({', '.join(self.keys)})"


@dataclass(frozen=True, slots=True)
class AlgorithmSwapped:
    old: str
    new: str

    def describe(self) -> str:
        return f"algorithm {self.old} → {self.new}"


@dataclass(frozen=True, slots=True)
class TableChanged:
    """A table applied live (``LIVE_TABLES``, or ``balancer`` for ``hash_on``)."""

    table: str
    keys: tuple[str, ...]
    """The keys that changed (empty for a list of tables, such as ``routes``)."""

    def describe(self) -> str:
        return f"{self.table} ({', '.join(self.keys)})" if self.keys else self.table


@dataclass(frozen=True, slots=True)
class NeedsRestart:
    """A table whose change a reload does not apply: it stays as it was until a restart."""

    table: str
    keys: tuple[str, ...]

    def describe(self) -> str:
        what = ", ".join(f"{self.table}.{k}" for k in self.keys) if self.keys else self.table
        return f"{what} not applied (takes a restart)"


@dataclass(frozen=True, slots=True)
class ListenerOpened:
    spec: ListenerSpec

    def describe(self) -> str:
        return f"+listener {self.spec.name} ({self.spec.address})"


@dataclass(frozen=True, slots=True)
class ListenerClosed:
    """Stops accepting; the requests it has finish (up to ``proxy.shutdown_grace_s``)."""

    name: str

    def describe(self) -> str:
        return f"-listener {self.name}"


@dataclass(frozen=True, slots=True)
class ListenerReplaced:
    """Its address, certificates or redirect changed: closed (its requests finish) and opened
    again with the new settings."""

    spec: ListenerSpec
    keys: tuple[str, ...]

    def describe(self) -> str:
        return f"~listener {self.spec.name} ({', '.join(self.keys)})"


Change = (
    BackendAdded
    | BackendRemoved
    | BackendReweighted
    | BackendReplaced
    | AlgorithmSwapped
    | ListenerOpened
    | ListenerClosed
    | ListenerReplaced
    | TableChanged
    | NeedsRestart
)


def _changed_keys(old: object, new: object) -> tuple[str, ...]:
    """The keys of two tables (pydantic models, or None) that differ; () when only one is
    None or when they are lists."""
    dump_old = old.model_dump() if hasattr(old, "model_dump") else None
    dump_new = new.model_dump() if hasattr(new, "model_dump") else None
    if not isinstance(dump_old, dict) or not isinstance(dump_new, dict):
        return ()
    return tuple(k for k in dump_new if dump_old.get(k) != dump_new[k])


def _backends(old: Config, new: Config) -> list[Change]:
    before = {b.name: b for b in old.backends}
    after = {b.name: b for b in new.backends}
    out: list[Change] = [BackendRemoved(n) for n in before if n not in after]
    for name, bc in after.items():
        was = before.get(name)
        if was is None:
            out.append(BackendAdded(bc))
            continue
        keys = _changed_keys(was, bc)
        if not keys:
            continue
        if keys == ("weight",):
            out.append(BackendReweighted(name, was.weight, bc.weight))
        else:
            out.append(BackendReplaced(bc, keys))
    return out


def _listeners(old: Config, new: Config) -> list[Change]:
    before = {spec.name: spec for spec in old.all_listeners}
    after = {spec.name: spec for spec in new.all_listeners}
    out: list[Change] = [ListenerClosed(n) for n in before if n not in after]
    for name, spec in after.items():
        was = before.get(name)
        if was is None:
            out.append(ListenerOpened(spec))
        elif was != spec:
            out.append(ListenerReplaced(spec, _changed_keys(was, spec)))
    return out


def diff(old: Config, new: Config) -> list[Change]:
    """What applying ``new`` over ``old`` changes, in the order it is applied: backends first
    (removed, then changed, then added), then the algorithm, the live tables, and last what
    takes a restart. Empty when the two say the same."""
    out = _backends(old, new)
    restart: list[Change] = []
    out += _listeners(old, new)
    fixed_listener = [k for k in _changed_keys(old.listener, new.listener) if k in LISTENER_FIXED]
    if fixed_listener:
        restart.append(NeedsRestart("listener", tuple(fixed_listener)))
    if old.balancer.algorithm != new.balancer.algorithm:
        out.append(AlgorithmSwapped(old.balancer.algorithm, new.balancer.algorithm))
    if old.balancer.hash_on != new.balancer.hash_on:
        out.append(TableChanged("balancer", ("hash_on",)))
    fixed = [k for k in _changed_keys(old.balancer, new.balancer) if k not in BALANCER_LIVE]
    if fixed:
        restart.append(NeedsRestart("balancer", tuple(fixed)))
    for table in LIVE_TABLES:
        was, now = getattr(old, table), getattr(new, table)
        if was == now:
            continue
        keys = _changed_keys(was, now)
        if table == "limits" and set(keys) & STORE_KEYS:
            restart.append(NeedsRestart(table, tuple(k for k in keys if k in STORE_KEYS)))
            keys = tuple(k for k in keys if k not in STORE_KEYS)
            if not keys:
                continue
        out.append(TableChanged(table, keys))
    out += restart
    for table in type(new).model_fields:
        if table in IGNORED or table in LIVE_TABLES:
            continue
        was, now = getattr(old, table), getattr(new, table)
        if was != now:
            out.append(NeedsRestart(table, _changed_keys(was, now)))
    return out


def summary(changes: list[Change]) -> str:
    """One line for the event and the log: ``+b3, algorithm round_robin → least_request``."""
    return ", ".join(c.describe() for c in changes) or "no change"


def applied(changes: list[Change]) -> list[Change]:
    """The changes a reload carries out (all but those that take a restart)."""
    return [c for c in changes if not isinstance(c, NeedsRestart)]
