"""Reading a config: TOML and flags in, a validated ``Config`` or every problem out."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ValidationError,
)

from lbtui.config.model import Config, cross_problems
from lbtui.config.sections import MAX_DEPTH
from lbtui.errors import ConfigError
from lbtui.inputs import (
    loads_toml,
    read_config_text,
)


def depth_problem(data: object) -> str | None:
    """The first key path nested deeper than :data:`MAX_DEPTH` (without recursing)."""
    stack: list[tuple[object, tuple[int | str, ...]]] = [(data, ())]
    while stack:
        item, loc = stack.pop()
        if len(loc) > MAX_DEPTH:
            return f"{_loc(loc[:MAX_DEPTH])}: nested deeper than {MAX_DEPTH} levels"
        if isinstance(item, dict):
            stack.extend((v, (*loc, str(k))) for k, v in item.items())
        elif isinstance(item, list):
            stack.extend((v, (*loc, i)) for i, v in enumerate(item))
    return None


def _model_at(loc: tuple[int | str, ...]) -> type[BaseModel] | None:
    """The settings class at key path ``loc`` (list indices skipped), for suggestions."""
    model: type[BaseModel] = Config
    for part in loc:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part)
        if field is None:
            return None
        found = [
            t
            for t in _flatten(field.annotation)
            if isinstance(t, type) and issubclass(t, BaseModel)
        ]
        if not found:
            return None
        model = found[0]
    return model


def _flatten(annotation: object) -> list[object]:
    out: list[object] = [annotation]
    for arg in getattr(annotation, "__args__", ()):
        out.extend(_flatten(arg))
    return out


def unknown_key(loc: tuple[int | str, ...]) -> str:
    """``path: unknown key``, with the nearest known key when one is close (difflib)."""
    key = loc[-1] if loc else ""
    model = _model_at(loc[:-1])
    if model is None or not isinstance(key, str):
        return f"{_loc(loc)}: unknown key"
    known = [k for k in model.model_fields if k != "base_dir"]
    near = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    if near:
        return f"{_loc(loc)}: unknown key (did you mean {near[0]!r}?)"
    return f"{_loc(loc)}: unknown key (known: {', '.join(known)})"


def _loc(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out or "(top level)"


def _problems(exc: ValidationError) -> list[str]:
    problems: list[str] = []
    for err in exc.errors(include_url=False):
        loc = tuple(p for p in err["loc"] if p not in ("function-after",))
        msg = err["msg"].removeprefix("Value error, ")
        kind = err["type"]
        if kind == "extra_forbidden":
            problems.append(unknown_key(loc))
        elif kind == "missing":
            problems.append(f"{_loc(loc)}: required key is missing")
        elif not loc:
            problems.extend(msg.splitlines())
        else:
            got = err.get("input")
            text = repr(got)
            text = text if len(text) <= 80 else text[:77] + "..."
            shown = "" if isinstance(got, dict | list) else f" (got {text})"
            if kind == "literal_error":
                msg = msg.replace("Input should be", "expected one of")
            msg = msg.replace("Input should be", "expected")
            problems.append(f"{_loc(loc)}: {msg}{shown if 'got' not in msg else ''}")
    return problems


def from_dict(data: dict[str, Any], source: str = "<config>") -> Config:
    """Validate ``data`` (parsed TOML plus overrides) into a ``Config``; every problem found
    is in the ``ConfigError``, those of single keys and those across keys alike."""
    deep = depth_problem(data)
    if deep is not None:
        raise ConfigError(source, [deep])
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        problems = _problems(exc)
    except RecursionError:
        problems = [f"nested deeper than {MAX_DEPTH} levels"]
    problems += [p for p in cross_problems(data) if p not in problems]
    raise ConfigError(source, problems)


def read_toml(path: str | Path) -> dict[str, Any]:
    """Parse a TOML file; unreadable or invalid files raise ``ConfigError`` naming the file."""
    return loads_toml(read_config_text(path), str(path))


def parse_backend_flag(text: str, index: int) -> dict[str, Any]:
    """``[NAME=]URL`` from ``--backend``; a missing name becomes ``HOST:PORT`` of the URL."""
    name, sep, url = text.partition("=")
    if not sep or "://" in name:
        url, name = text, ""
    if not name:
        parts = urlsplit(url)
        try:
            name = f"{parts.hostname}:{parts.port}" if parts.hostname and parts.port else ""
        except ValueError:
            name = ""
        name = name or f"backend-{index + 1}"
    return {"name": name, "url": url}


def load(
    path: str | Path | None = None,
    *,
    listen: str | None = None,
    backends: list[str] | None = None,
    algorithm: str | None = None,
    admin: str | None = None,
    no_admin: bool = False,
    workers: str | None = None,
) -> Config:
    """The config from an optional TOML file, with command-line flags overriding it.

    ``--backend`` flags replace the file's backends as a whole (a flag list is a complete list).
    """
    data: dict[str, Any] = read_toml(path) if path is not None else {}
    source = str(path) if path is not None else "command line"
    if path is not None and "base_dir" not in data:
        data["base_dir"] = str(Path(path).resolve().parent)
    listeners = data.get("listeners")
    if listen is not None and isinstance(listeners, list) and listeners:
        if isinstance(listeners[0], dict):  # --listen moves the first of several
            listeners[0]["address"] = listen
    elif listen is not None:
        data.setdefault("listener", {})
        if isinstance(data["listener"], dict):
            data["listener"]["address"] = listen
    if workers is not None:
        data.setdefault("listener", {})
        if isinstance(data["listener"], dict):
            data["listener"]["workers"] = int(workers) if workers.isdigit() else workers
    if algorithm is not None:
        data.setdefault("balancer", {})
        if isinstance(data["balancer"], dict):
            data["balancer"]["algorithm"] = algorithm
    if backends:
        data["backends"] = [parse_backend_flag(b, i) for i, b in enumerate(backends)]
    if admin is not None or no_admin:
        data.setdefault("admin", {})
        if isinstance(data["admin"], dict):
            if admin is not None:
                data["admin"]["address"] = admin
            if no_admin:
                data["admin"]["enabled"] = False
    return from_dict(data, source)
