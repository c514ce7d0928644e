"""The compiled build: the request path's modules are compiled to C with mypyc.

Everything else about the package is in ``pyproject.toml``. The modules below are the ones a
proxied request runs through (the fast listener, the upstream connections, the pipeline and the
policies it consults). They are ordinary, type-checked Python that also runs uncompiled; mypyc
turns their classes into C structs and their calls into C calls, which takes about a third off
the CPU a request costs (``bench/ab.py``, ``bench/inproc.py``).

``LBTUI_PURE=1`` at install time skips compiling (pure Python, same behaviour). Without a C
compiler the build fails loudly rather than quietly installing the slow variant; set
``LBTUI_PURE=1`` there. ``lbtui --version`` says which one is installed.
"""

from __future__ import annotations

import os
import sys

from setuptools import setup

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from lbtui.build import COMPILED_MODULES  # (the list lives beside the code)


def ext_modules() -> list[object]:
    if os.environ.get("LBTUI_PURE", "") not in ("", "0"):
        return []
    from mypyc.build import mypycify

    return list(
        mypycify(
            ["--no-warn-unused-configs"] + [f"{m.replace('.', '/')}.py" for m in COMPILED_MODULES],
            group_name="lbtui",  # the shared library: lbtui__mypyc, whatever the list holds
            opt_level="3",
            debug_level="0",
        )
    )


setup(ext_modules=ext_modules())
