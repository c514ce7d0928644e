"""The compiled build: the request path's modules are compiled to C with mypyc.

Everything else about the package is in ``pyproject.toml``. The modules below are the ones a
proxied request runs through (the fast listener, the upstream connections, the pipeline and the
policies it consults). They are ordinary, type-checked Python that also runs uncompiled; mypyc
turns their classes into C structs and their calls into C calls, which takes about a third off
the CPU a request costs (``bench/ab.py``, ``bench/inproc.py``).

Which build is installed:

- ``LBTUI_PURE=1`` at install time: pure Python, nothing compiled (same behaviour);
- no working C compiler or no Python headers (checked first by compiling a three-line probe):
  pure Python too, and this says so on stderr with the reason, so that the README's first
  command works on any machine;
- otherwise the compiled build. A compile that then fails is an error, not a quiet fallback.

``lbtui --version`` says which build is installed (CI checks it: ``.ci/run``). pip hides a
build's output unless ``-v``; the messages below also go to the terminal (``/dev/tty``) when
there is one, so that a person installing sees why the install takes minutes.
"""

from __future__ import annotations

import os
import sys
import sysconfig
import tempfile

from setuptools import setup

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from lbtui.build import COMPILED_MODULES  # (the list lives beside the code)

COMPILE_MINUTES = "2–6"
"""What a fresh compiled install took on 2 cores, lightly to heavily loaded (README: "Set up
on a fresh machine")."""


def say(line: str) -> None:
    """``line`` on stderr, and on the terminal when pip captures stderr."""
    print(f"lbtui: {line}", file=sys.stderr, flush=True)
    try:
        with open("/dev/tty", "w") as tty:
            tty.write(f"lbtui: {line}\n")
    except OSError:
        pass  # no terminal (CI, a container): stderr alone


def compiler_problem() -> str | None:
    """Why a C extension cannot be built here (``None``: it can). Honours ``CC``, as the
    build itself does."""
    include = sysconfig.get_paths()["include"]
    if not os.path.exists(os.path.join(include, "Python.h")):
        return f"no Python headers ({include}/Python.h; Debian/Ubuntu: apt-get install python3-dev)"
    try:
        from setuptools._distutils.ccompiler import new_compiler
        from setuptools._distutils.sysconfig import customize_compiler
    except ImportError as exc:  # a setuptools without its distutils: let the build try
        return f"cannot probe the C compiler ({exc})"
    compiler = new_compiler()
    customize_compiler(compiler)
    with tempfile.TemporaryDirectory() as tmp:
        probe = os.path.join(tmp, "probe.c")
        with open(probe, "w") as f:
            f.write("#include <Python.h>\nint lbtui_probe(void) { return 0; }\n")
        try:
            compiler.compile([probe], output_dir=tmp, include_dirs=[include])
        except Exception as exc:  # CompileError, under whichever distutils is in use
            return f"no working C compiler ({exc}; Debian/Ubuntu: apt-get install build-essential)"
    return None


def metadata_only(argv: list[str]) -> bool:
    """Whether this run only writes metadata: pip runs ``setup.py`` three times (requirements,
    metadata, the wheel) and only the last builds anything, so the first two neither compile
    (mypyc's analysis alone takes a while) nor speak."""
    commands = [a for a in argv[1:] if not a.startswith("-")]
    return bool(commands) and commands[0] in ("egg_info", "dist_info")


def ext_modules() -> list[object]:
    if metadata_only(sys.argv):
        return []
    if os.environ.get("LBTUI_PURE", "") not in ("", "0"):
        say("LBTUI_PURE is set: installing the pure-Python build (nothing compiled)")
        return []
    problem = compiler_problem()
    if problem is not None:
        say(f"{problem}: installing the pure-Python build instead")
        say("(same behaviour, about a third more CPU per request; `lbtui --version` tells)")
        return []
    from mypyc.build import mypycify

    say(
        f"compiling the request path with mypyc ({len(COMPILED_MODULES)} modules), "
        f"~{COMPILE_MINUTES} min on 2 cores… (LBTUI_PURE=1 skips it)"
    )
    return list(
        mypycify(
            ["--no-warn-unused-configs"] + [f"{m.replace('.', '/')}.py" for m in COMPILED_MODULES],
            group_name="lbtui",  # the shared library: lbtui__mypyc, whatever the list holds
            opt_level="3",
            debug_level="0",
        )
    )


if __name__ == "__main__":  # as pip and setuptools run it; a test imports the checks above
    setup(ext_modules=ext_modules())
