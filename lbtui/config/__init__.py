"""Configuration: a TOML file and command-line flags → one validated, frozen ``Config``.

Validated once, at the edge, with pydantic: unknown keys are rejected, every problem is collected
before reporting, and each is reported with the file, the key path and what was expected
(``lbtui.toml: backends[1].url: expected an http:// URL with a host and a port, got 'ftp://x'``).
The rest of the code receives frozen typed objects and never sees a dict.

Hostile files get the same treatment as careless ones: a file is read up to a size cap
(``MAX_CONFIG_BYTES``, ``MAX_FALLBACK_BYTES``), nesting deeper than ``MAX_DEPTH`` is refused
before validation, ``inf`` and ``nan`` are refused everywhere, and an unknown key names the
nearest known one. Relative file names are looked up from the config file's folder.

The tables are in :mod:`~lbtui.config.sections`, the whole and its cross-table checks in
:mod:`~lbtui.config.model`, reading and reporting in :mod:`~lbtui.config.loading`. New tables
get a module of their own here rather than growing ``sections``.
"""

from lbtui.config.access_log import AccessLogConfig
from lbtui.config.discovery import DiscoveryConfig, read_backends
from lbtui.config.groups import GroupConfig, StickyConfig
from lbtui.config.listeners import CertificateConfig, ListenerSpec
from lbtui.config.loading import (
    depth_problem,
    from_dict,
    load,
    parse_backend_flag,
    read_toml,
    unknown_key,
)
from lbtui.config.model import Config, cross_problems, resolve_file
from lbtui.config.rules import (
    ForwardConfig,
    HeaderRewrite,
    RedirectConfig,
    RespondConfig,
    ResponseHeaders,
    RouteConfig,
)
from lbtui.config.sections import (
    ALGORITHM_NAMES,
    MAX_BREAKER_WINDOW,
    MAX_DEPTH,
    AdminConfig,
    Algorithm,
    BackendConfig,
    BalancerConfig,
    BreakerOverride,
    BreakerSettings,
    EjectionConfig,
    FallbackConfig,
    HealthConfig,
    LimitsConfig,
    ListenerConfig,
    ProxyConfig,
    RetriesConfig,
    Section,
)

__all__ = [
    "ALGORITHM_NAMES",
    "MAX_BREAKER_WINDOW",
    "MAX_DEPTH",
    "AccessLogConfig",
    "AdminConfig",
    "Algorithm",
    "BackendConfig",
    "BalancerConfig",
    "BreakerOverride",
    "BreakerSettings",
    "CertificateConfig",
    "Config",
    "DiscoveryConfig",
    "EjectionConfig",
    "FallbackConfig",
    "ForwardConfig",
    "GroupConfig",
    "HeaderRewrite",
    "HealthConfig",
    "LimitsConfig",
    "ListenerConfig",
    "ListenerSpec",
    "ProxyConfig",
    "RedirectConfig",
    "RespondConfig",
    "ResponseHeaders",
    "RetriesConfig",
    "RouteConfig",
    "Section",
    "StickyConfig",
    "cross_problems",
    "depth_problem",
    "from_dict",
    "load",
    "parse_backend_flag",
    "read_backends",
    "read_toml",
    "resolve_file",
    "unknown_key",
]
