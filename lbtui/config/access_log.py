"""``[access_log]``: one line per request, for ELK, Loki and friends (``balancer/accesslog.py``).

The table's presence turns the log on; ``path = "-"`` writes to standard output, any other
value to that file (relative names from the config file's folder), opened for appending and
reopened on SIGUSR1 (as nginx does, for logrotate). ``format = "json"`` writes one object a
line with every field; ``"combined"`` the Apache/nginx combined format that every log tool
parses, with lbtui's fields after it as ``key=value``.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator

from lbtui.config.sections import Section


class AccessLogConfig(Section):
    """Where and how requests are logged."""

    path: str = "-"
    """``-``: standard output; otherwise a file, appended to (created if missing)."""
    format: Literal["json", "combined"] = "json"
    """``json``: one object a line; ``combined``: the Apache/nginx combined format."""
    flush_ms: Annotated[int, Field(ge=10, le=60_000)] = 500
    """Entries wait at most this long before they are written (off the request path)."""
    buffer_entries: Annotated[int, Field(ge=1, le=1_000_000)] = 2_000
    """Or until this many are waiting, whichever comes first."""

    @field_validator("path")
    @classmethod
    def _path(cls, v: str) -> str:
        if not v.strip():
            raise ValueError('expected "-" (standard output) or a file name')
        if "\0" in v:
            raise ValueError("expected a file name without NUL characters")
        return v
