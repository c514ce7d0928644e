"""The one exception tree of lbtui.

    LbtuiError              anything lbtui raises on purpose; the CLI prints it as one line
    ├── ConfigError         a file or flag is wrong: names the file, the key path, the expectation
    ├── UsageError          a command line that cannot be acted on
    └── UpstreamError       forwarding to a backend failed; carries the backend and the reason
        ├── UpstreamConnectError    no connection made (nothing was sent: always safe to retry)
        ├── UpstreamTimeout         connected, but no answer in time
        └── UpstreamBroken          the connection broke (reset, closed) during the exchange
    ClientBodyError         (also a ConnectionError) a client's request body broke off: malformed,
                            too slow, too big, or its connection closed; never the backend's fault

Foreign errors (aiohttp, OS) are translated once, in the upstream client, with ``raise … from exc``.
Errors carry data; the CLI and the TUI render them.
"""

from __future__ import annotations


class LbtuiError(Exception):
    """Base of every error lbtui raises on purpose."""


class ConfigError(LbtuiError):
    """A configuration problem; ``problems`` lists every one found, each a full sentence."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        super().__init__(self.render())

    def render(self) -> str:
        if len(self.problems) == 1:
            return f"{self.source}: {self.problems[0]}"
        lines = [f"{self.source}: {len(self.problems)} problems"]
        lines.extend(f"  - {p}" for p in self.problems)
        return "\n".join(lines)


class UsageError(LbtuiError):
    """A command line that cannot be acted on."""


class UpstreamError(LbtuiError):
    """Forwarding to one backend failed."""

    #: short machine-readable reason, also used as the response flag
    reason = "upstream_error"

    def __init__(self, backend: str, detail: str) -> None:
        self.backend = backend
        self.detail = detail
        super().__init__(f"{backend}: {detail}")


class UpstreamConnectError(UpstreamError):
    reason = "upstream_connect_failure"


class UpstreamTimeout(UpstreamError):
    reason = "upstream_timeout"


class UpstreamBroken(UpstreamError):
    reason = "upstream_reset"


class ClientBodyError(LbtuiError, ConnectionError):
    """A client's request body cannot be read to its end: malformed framing (400), too slow
    (408), over ``max_body_bytes`` (413), or the client went away (``status`` 0).

    A ``ConnectionError`` so that every path that already ends a request whose client is gone
    ends this one too (its in-flight slot freed, nothing retried); the upstream client lets it
    through untranslated, so the backend the body was going to is not blamed for it."""

    def __init__(self, status: int, detail: str) -> None:
        self.status = status
        self.detail = detail
        super().__init__(detail)
