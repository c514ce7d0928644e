"""Fallback (degraded) responses: what clients get when no backend can answer.

A configured response (status, content type, body inline or from a file read once at start-up)
tagged ``X-Lbtui-Fallback: <reason>``; or, when ``stale_for_s`` is set, the last good response to
the same GET path if it is younger than that (``X-Lbtui-Fallback: stale``). Serving a fallback
never waits on a backend: it is built from memory.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from multidict import CIMultiDict

from lbtui.balancer.exchange import Answer
from lbtui.config import FallbackConfig

STALE_MAX_ENTRIES = 1024
STALE_MAX_BODY = 256 * 1024
FLAGS_HEADER = "X-Lbtui-Flags"
_REPLACED = frozenset({"x-lbtui-fallback", "age", "x-lbtui-flags"})


@dataclass(frozen=True, slots=True)
class _Stored:
    at: float
    status: int
    headers: CIMultiDict[str]
    body: bytes


class Fallback:
    """One route's (or the balancer's) fallback."""

    def __init__(self, config: FallbackConfig, base_dir: Path | None = None) -> None:
        self.config = config
        self.body = config.body_bytes(base_dir)
        self.stale_for_s = config.stale_for_s
        self._stale: OrderedDict[str, _Stored] = OrderedDict()

    @property
    def keeps_stale(self) -> bool:
        return self.stale_for_s > 0

    def remember(
        self, key: str, status: int, headers: CIMultiDict[str], body: bytes, now: float
    ) -> None:
        """Keep a good GET response for ``key`` (host + raw path) as a stale candidate."""
        if len(body) > STALE_MAX_BODY:
            return
        stale = self._stale
        stale[key] = _Stored(now, status, headers, body)
        stale.move_to_end(key)
        if len(stale) > STALE_MAX_ENTRIES:
            stale.popitem(last=False)

    def respond(
        self, reason: str, stale_key: str | None, now: float, flags: str | None = None
    ) -> tuple[Answer, str]:
        """The fallback answer and the reason it carries (``stale`` when a stored one fits);
        ``flags``, when set, goes out as ``X-Lbtui-Flags``."""
        if stale_key is not None and self.stale_for_s > 0:
            stored = self._stale.get(stale_key)
            if stored is not None and now - stored.at <= self.stale_for_s:
                headers = [
                    (k, v)
                    for k, v in stored.headers.items()
                    if k.lower() not in _REPLACED and k.lower() != "content-length"
                ]
                headers.append(("X-Lbtui-Fallback", "stale"))
                headers.append(("Age", str(int(now - stored.at))))
                if flags is not None:
                    headers.append((FLAGS_HEADER, flags))
                return Answer(stored.status, None, headers, stored.body), "stale"
        headers = [("Content-Type", self.config.content_type), ("X-Lbtui-Fallback", reason)]
        if flags is not None:
            headers.append((FLAGS_HEADER, flags))
        return Answer(self.config.status, None, headers, self.body), reason
