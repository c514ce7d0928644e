"""Which build of lbtui this is: the request path compiled with mypyc, or pure Python.

``setup.py`` compiles :data:`COMPILED_MODULES` unless ``LBTUI_PURE=1`` is set at install time.
Both builds run the same source and behave the same; the compiled one costs about a third less
CPU per proxied request.

What compiling asks of that source (mypy strict already asks most of it):

- no async generators (``ChunkIterator`` is a class), no runtime-checkable protocols, and class
  constants marked ``Final``;
- a compiled class is a C struct: its attributes are declared, its methods cannot be replaced on
  an instance, and its fields hold their declared types, checked on every write. So config
  classes that validate whatever they are given are ``@mypyc_attr(native_class=False)`` and
  read their fields untyped (``me: Any = self``) until checked; an interpreted subclass of a
  compiled class is not called through its overrides from compiled code (the shared-memory
  limiters, ``balancer.shared_limiters``, subclass nothing: they sit behind
  ``core.limitstore.LimitStore``);
- a compiled class is unpickled by calling it with no arguments, then given its state: the
  pickled ones (records, windows) take defaults for every constructor argument;
- a wrong argument type fails on entry with ``TypeError`` (``int object expected; got
  float``) rather than reaching the function's own check;
- exceptions of untyped libraries (httptools) are sorted with ``isinstance``, not by several
  ``except`` clauses;
- no attribute named ``_thread`` (its C name, ``__thread``, is a C keyword: the build fails).
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
from pathlib import Path

COMPILED_MODULES: tuple[str, ...] = (
    "lbtui.balancer.accesslog",
    "lbtui.balancer.admission",
    "lbtui.balancer.answers",
    "lbtui.balancer.attempt",
    "lbtui.balancer.client_writer",
    "lbtui.balancer.connections",
    "lbtui.balancer.exchange",
    "lbtui.balancer.fast_request",
    "lbtui.balancer.header_lines",
    "lbtui.balancer.job",
    "lbtui.balancer.lean_upstream",
    "lbtui.balancer.listener",
    "lbtui.balancer.pipeline",
    "lbtui.balancer.pool",
    "lbtui.balancer.proxy",
    "lbtui.balancer.request_reader",
    "lbtui.balancer.response_reader",
    "lbtui.balancer.routing",
    "lbtui.balancer.shared",
    "lbtui.balancer.shared_layout",
    "lbtui.balancer.shared_limiters",
    "lbtui.balancer.state",
    "lbtui.core.balancing",
    "lbtui.core.breaker",
    "lbtui.core.ejection",
    "lbtui.core.limiting",
    "lbtui.core.limitstore",
    "lbtui.core.record",
    "lbtui.core.window",
    "lbtui.core.retry",
    "lbtui.core.routing",
    "lbtui.control.exposition",
    "lbtui.control.groupsums",
)
"""The modules a proxied request runs through, compiled in the default build, and those of
``/metrics`` (``control.exposition``, ``control.groupsums``), whose scrape reads every
backend's record on the loop that serves traffic: compiled, its loops are C loops and its
reads of the compiled records C struct reads (a scrape of 1,000 backends, half of them moved,
≈ a fifth less CPU). Not here: modules
whose dataclasses pydantic reads (``core.events``, ``core.faults``: a compiled class keeps no
usable annotations)."""


def _origin(module: str) -> Path | None:
    spec = importlib.util.find_spec(module)
    return Path(spec.origin) if spec is not None and spec.origin else None


def _compiled_files() -> dict[str, Path]:
    suffixes = tuple(importlib.machinery.EXTENSION_SUFFIXES)
    return {
        m: o
        for m in COMPILED_MODULES
        if (o := _origin(m)) is not None and o.name.endswith(suffixes)
    }


def compiled() -> list[str]:
    """The modules of :data:`COMPILED_MODULES` that import as compiled extensions."""
    return list(_compiled_files())


def stale() -> list[str]:
    """Compiled modules whose source was changed after they were built (an editable install
    that was not rebuilt: the old code would run)."""
    package = Path(__file__).parent
    # A compiled module is a small stub; the code is in one library beside the package.
    built = [p.stat().st_mtime for p in package.parent.glob("lbtui__mypyc.*")]
    out = []
    for m, ext in _compiled_files().items():
        src = package.joinpath(*m.split(".")[1:]).with_suffix(".py")
        if src.exists() and src.stat().st_mtime > max([ext.stat().st_mtime, *built]):
            out.append(m)
    return out


def describe() -> str:
    """One line for ``lbtui --version``."""
    done = compiled()
    if not done:
        return "pure Python"
    if len(done) == len(COMPILED_MODULES):
        return "request path compiled with mypyc"
    return f"{len(done)} of {len(COMPILED_MODULES)} request-path modules compiled with mypyc"
