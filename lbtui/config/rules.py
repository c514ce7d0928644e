"""Routing rules: ``[[routes]]``, what each matches and what it does.

A rule matches on path prefix or exact path, host (``*.example.com`` wildcards), methods,
headers and query parameters; the first rule that matches wins, in file order, or by
``priority`` (ELB's listener rules: lower first). Its action is one of: forward to groups by
weight (``forward``, or ``backends`` as the shorthand for an unnamed group), a redirect, or a
fixed response. It may set, add and remove request headers (nginx's ``proxy_set_header``),
with ``$remote_addr`` and ``$host`` in values, and add response headers (``add_header``).
The matcher these compile to is :mod:`lbtui.core.routing`.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from lbtui.config.sections import FallbackConfig, Section

HEADER_NAME = r"^[A-Za-z0-9!#$%&'*+\-.^_`|~]+$"
"""An RFC 9110 field name (a token)."""
Method = Literal["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "TRACE"]
NAME = r"^[A-Za-z0-9_.:\-]+$"
QueryName = Annotated[str, Field(min_length=1, max_length=256)]
HeaderName = Annotated[str, Field(min_length=1, max_length=128, pattern=HEADER_NAME)]
HeaderValue = Annotated[str, Field(max_length=4096, pattern=r"^[^\r\n\x00]*$")]


class ForwardConfig(Section):
    """One group a route forwards to, and its share."""

    group: Annotated[str, Field(min_length=1, max_length=64)]
    weight: Annotated[float, Field(ge=0, le=1000)] = 1.0
    """Relative share of the route's requests (smooth weighted round robin over the groups:
    90 and 10 send exactly 9 of every 10 requests to the first); 0 sends none."""


class RedirectConfig(Section):
    """Answer with a redirect instead of forwarding."""

    location: Annotated[str, Field(min_length=1, max_length=2048, pattern=r"^[^\r\n\x00]*$")]
    """The ``Location``; ``$path`` is replaced by the request's path and query."""
    status: Literal[301, 302, 303, 307, 308] = 302


class RespondConfig(Section):
    """Answer with a fixed response instead of forwarding."""

    status: Annotated[int, Field(ge=200, le=599)] = 200
    body: Annotated[str, Field(max_length=1024 * 1024)] = ""
    content_type: HeaderValue = "text/plain; charset=utf-8"


class HeaderRewrite(Section):
    """Header changes: ``remove`` first, then ``set`` (replaces), then ``add`` (appends)."""

    set: dict[HeaderName, HeaderValue] = Field(default_factory=dict)
    add: dict[HeaderName, HeaderValue] = Field(default_factory=dict)
    remove: list[HeaderName] = Field(default_factory=list)


class ResponseHeaders(Section):
    """Changes to the response sent to the client: ``remove`` drops a backend's header (nginx's
    ``proxy_hide_header``), ``set`` replaces it (drops every one of that name, then adds),
    ``add`` appends (nginx's ``add_header``)."""

    set: dict[HeaderName, HeaderValue] = Field(default_factory=dict)
    add: dict[HeaderName, HeaderValue] = Field(default_factory=dict)
    remove: list[HeaderName] = Field(default_factory=list)


class RouteConfig(Section):
    """A routing rule: what it matches and where matching requests go."""

    name: Annotated[str, Field(min_length=1, max_length=64, pattern=NAME)] | None = None
    """How the console, the API and ``set_forward`` name it (default: ``routes[i]``)."""
    path_prefix: str = "/"
    path: str | None = None
    """An exact path (instead of a prefix)."""
    host: str | None = None
    """Match the ``Host`` header (without port), case-insensitive; ``*.example.com`` matches
    any name below ``example.com``; None matches any host."""
    methods: list[Method] = Field(default_factory=list)
    """Empty: any method."""
    headers: dict[HeaderName, HeaderValue] = Field(default_factory=dict)
    """Request headers that must be present with these values (``*``: present, any value)."""
    query: dict[QueryName, HeaderValue] = Field(default_factory=dict)
    """Query parameters that must be present with these values (``*``: present)."""
    listeners: Annotated[list[str], Field(min_length=1)] | None = None
    """The listeners (``[[listeners]] name``) whose requests the rule applies to; None: all."""
    priority: Annotated[int, Field(ge=1, le=50_000)] | None = None
    """Rules with a priority are tried first, lowest first; then the others in file order."""
    backends: Annotated[list[str], Field(min_length=1)] | None = None
    """Shorthand: forward to these backends as one unnamed group."""
    forward: Annotated[list[ForwardConfig], Field(min_length=1, max_length=64)] | None = None
    redirect: RedirectConfig | None = None
    respond: RespondConfig | None = None
    request_headers: HeaderRewrite | None = None
    """Changes to the request sent to the backend (e.g. ``set = { X-Real-IP =
    "$remote_addr" }`` as nginx's ``proxy_set_header``)."""
    response_headers: ResponseHeaders | None = None
    """Headers added to the response sent to the client."""
    fallback: FallbackConfig | None = None
    """This route's fallback (else the global one)."""

    @field_validator("path_prefix", "path")
    @classmethod
    def _prefix(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith("/"):
            raise ValueError(f"expected a path starting with '/', got {v!r}")
        return v

    @field_validator("host")
    @classmethod
    def _host(cls, v: str | None) -> str | None:
        if v is None:
            return v
        bare = v.removeprefix("*.")
        if not bare or "*" in bare or any(c in bare for c in " /:\r\n"):
            raise ValueError(f"expected a host name, or '*.' and a domain, got {v!r}")
        return v.lower()

    @model_validator(mode="after")
    def _one_action(self) -> RouteConfig:
        given = [
            k
            for k in ("backends", "forward", "redirect", "respond")
            if getattr(self, k) is not None
        ]
        if len(given) != 1:
            raise ValueError(
                "a route needs exactly one of backends, forward, redirect or respond"
                + (f" (got {', '.join(given)})" if given else "")
            )
        return self
