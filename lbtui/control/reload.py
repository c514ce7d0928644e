"""Reading the config file again: validate first, then apply the difference, or change nothing.

SIGHUP (``lbtui serve``), ``POST /api/v1/config/reload`` and ``lbtui reload`` all end here.
The file is read and validated with the same flags the balancer was started with (a
``--backend`` flag still replaces the file's backends), exactly as at start-up. A broken file
changes nothing: the balancer keeps serving what it served, and the problems are logged,
returned (the API answers 422 with them) and put on the timeline as a ``ConfigRejected``
event. A valid one is compared with the file as last applied (``config/diff.py``) and the
difference carried out as one operation (``operations.Reload``), which every worker process
applies too; ``ConfigReloaded`` says what changed.

What the difference is taken against is the file as last loaded, not the running state:
operator actions made since (a weight set from the console, a backend drained) stay unless the
file changes that same thing — as HAProxy's runtime changes survive a reload that does not
touch them, and unlike a restart.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from lbtui.balancer import operations as ops
from lbtui.balancer.proxy import Proxy
from lbtui.config import Config
from lbtui.config.diff import Change, NeedsRestart, diff, summary
from lbtui.core.events import ConfigRejected
from lbtui.errors import ConfigError

log = logging.getLogger("lbtui.reload")

Loader = Callable[[], Config]
"""Reads and validates the config file with the start-up flags; ``ConfigError`` if broken."""


@dataclass(frozen=True)
class ReloadResult:
    """What a reload did, for the API's answer, the CLI and the log."""

    applied: bool
    source: str
    changes: list[str] = field(default_factory=list)
    """What was carried out, one phrase each (``+b3``, ``algorithm round_robin → p2c_ewma``)."""
    not_applied: list[str] = field(default_factory=list)
    """Changes that take a restart, left as they were."""
    problems: list[str] = field(default_factory=list)
    """Why the file was refused (``applied`` is False): each names the key and what was
    expected, as ``lbtui check`` prints them."""

    def to_json(self) -> dict[str, Any]:
        return {
            "applied": self.applied,
            "source": self.source,
            "changes": self.changes,
            "not_applied": self.not_applied,
            "problems": self.problems,
        }

    def line(self) -> str:
        """One line for stderr or a log."""
        if not self.applied:
            return f"config reload rejected, nothing changed: {self.source}: " + "; ".join(
                self.problems
            )
        done = ", ".join(self.changes) or "no change"
        rest = f"; {', '.join(self.not_applied)}" if self.not_applied else ""
        return f"config reloaded from {self.source}: {done}{rest}"


class Reloader:
    """Reloads ``proxy``'s config with ``load``; ``on_applied(config, changes)`` is told of
    each applied reload (the runtime restarts the health checks there when they changed)."""

    def __init__(
        self,
        load: Loader,
        proxy: Proxy,
        source: str,
        on_applied: Callable[[Config, list[Change]], None] | None = None,
    ) -> None:
        self.load = load
        self.proxy = proxy
        self.source = source
        self.on_applied = on_applied
        self.current = proxy.config
        """The config as last loaded: what the next file is compared with."""
        self.on_result: Callable[[ReloadResult], None] | None = None
        """Told of every reload, whatever asked for it (``lbtui serve`` prints it)."""

    def reload(self) -> ReloadResult:
        """Read, validate, and apply the difference; never raises for a bad file."""
        result = self._reload()
        if self.on_result is not None:
            self.on_result(result)
        return result

    def _reload(self) -> ReloadResult:
        try:
            new = self.load()
            if not new.has_backends:
                raise ConfigError(
                    self.source, ["backends: expected at least one backend (or a discovery)"]
                )
        except ConfigError as exc:
            return self._rejected(exc.source, exc.problems)
        except OSError as exc:
            return self._rejected(self.source, [f"cannot read: {exc.strerror or exc}"])
        changes = diff(self.current, new)
        self.proxy.act(ops.Reload(new, tuple(changes)))
        self.current = new
        if self.on_applied is not None:
            self.on_applied(new, changes)
        result = ReloadResult(
            applied=True,
            source=self.source,
            changes=[c.describe() for c in changes if not isinstance(c, NeedsRestart)],
            not_applied=[c.describe() for c in changes if isinstance(c, NeedsRestart)],
        )
        log.info("config reloaded: %s", summary(changes))
        return result

    def _rejected(self, source: str, problems: list[str]) -> ReloadResult:
        result = ReloadResult(applied=False, source=source, problems=problems)
        log.warning("%s", result.line())
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        shown = "; ".join(problems[:3]) + more
        self.proxy.events.emit(
            ConfigRejected(
                message=f"config reload rejected, nothing changed: {source}: {shown}",
                problems=len(problems),
            )
        )
        return result
