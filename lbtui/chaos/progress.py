"""A run's progress as it happens, for a console watching it: what the run will do, each
timeline action as it fires, each check's status so far, and the verdict.

``Experiment`` calls its ``progress`` callback with these; ``lbtui chaos run --progress-json``
writes them to stderr as JSON lines (one object a line, ``type`` first) so that the console's
``c`` can show the run live from the child process it starts. A check's live status is the
check judged on what has been recorded so far: ``waiting`` before its window opens,
``holding`` or ``failing`` after; only the verdict at the end counts.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Literal

CheckStatus = Literal["waiting", "holding", "failing", "passed", "failed"]


@dataclass(frozen=True, slots=True)
class CheckLine:
    name: str
    status: CheckStatus
    figure: str = ""


@dataclass(frozen=True, slots=True)
class Started:
    name: str
    total_s: float
    """The load's duration: the run's length."""
    actions: list[str] = field(default_factory=list)
    """``+5.0s kill api-2`` for each timeline step, in time order."""
    checks: list[str] = field(default_factory=list)
    type: Literal["started"] = "started"


@dataclass(frozen=True, slots=True)
class ActionFired:
    number: int
    at_s: float
    description: str
    ok: bool
    detail: str = ""
    type: Literal["action"] = "action"


@dataclass(frozen=True, slots=True)
class Tick:
    elapsed_s: float
    total_s: float
    checks: list[CheckLine] = field(default_factory=list)
    type: Literal["tick"] = "tick"


@dataclass(frozen=True, slots=True)
class Finished:
    verdict: str
    reason: str
    checks: list[CheckLine] = field(default_factory=list)
    type: Literal["finished"] = "finished"


@dataclass(frozen=True, slots=True)
class Log:
    text: str
    type: Literal["log"] = "log"


Progress = Started | ActionFired | Tick | Finished | Log


def to_line(p: Progress) -> str:
    return json.dumps(asdict(p), ensure_ascii=False)


def from_line(line: str) -> Progress | None:
    """The progress a JSON line carries; ``None`` for any other line (a traceback, a
    warning), which the console shows as it is."""
    try:
        data = json.loads(line)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    kind = data.pop("type", None)
    try:
        if kind == "started":
            return Started(**data)
        if kind == "action":
            return ActionFired(**data)
        if kind == "tick":
            return Tick(data["elapsed_s"], data["total_s"], _checks(data["checks"]))
        if kind == "finished":
            return Finished(data["verdict"], data["reason"], _checks(data["checks"]))
        if kind == "log":
            return Log(**data)
    except (TypeError, KeyError):
        return None
    return None


def _checks(items: list[dict[str, str]]) -> list[CheckLine]:
    return [CheckLine(i["name"], i["status"], i.get("figure", "")) for i in items]  # type: ignore[arg-type]
