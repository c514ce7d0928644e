"""Which build ``setup.py`` chooses, decided for real: a missing C compiler (``CC`` naming no
program, which the build itself would use) means the pure-Python build and a plain message on
stderr; a working compiler means compiling. Run in a new session, so that the messages meant
for a person's terminal (``/dev/tty``) stay out of the test's."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PROBE = (
    "import runpy; ns = runpy.run_path('setup.py', run_name='probe'); "
    "print('problem:', ns['compiler_problem']()); print('ext_modules:', ns['ext_modules']())"
)


def probe(**env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", PROBE],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO), **env},
        capture_output=True,
        text=True,
        timeout=60,
        start_new_session=True,
    )


def test_no_c_compiler_falls_back_to_pure_python_and_says_so() -> None:
    r = probe(CC="/nonexistent/cc", LBTUI_PURE="")
    assert r.returncode == 0, r.stderr
    assert "ext_modules: []" in r.stdout
    assert "lbtui: no working C compiler" in r.stderr
    assert "/nonexistent/cc" in r.stderr
    assert "installing the pure-Python build instead" in r.stderr
    assert "Traceback" not in r.stderr


def test_lbtui_pure_skips_compiling() -> None:
    r = probe(LBTUI_PURE="1", CC="/nonexistent/cc")
    assert "ext_modules: []" in r.stdout
    assert "LBTUI_PURE is set: installing the pure-Python build" in r.stderr


@pytest.mark.skipif(shutil.which("cc") is None, reason="no C compiler on this machine")
def test_a_working_compiler_is_found() -> None:
    code = "import runpy; print(runpy.run_path('setup.py', run_name='probe')['compiler_problem']())"
    r = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=60,
        start_new_session=True,
    )
    assert r.stdout.strip().splitlines()[-1] == "None", r.stdout + r.stderr


def test_metadata_runs_neither_compile_nor_speak() -> None:
    """pip runs setup.py for requirements and metadata before the wheel: only the wheel's run
    compiles (mypyc's analysis is minutes of an install) and says what it does."""
    code = (
        "import sys, runpy; ns = runpy.run_path('setup.py', run_name='probe'); "
        "sys.argv = ['setup.py', 'dist_info', '--output-dir', 'x']; print(ns['ext_modules']()); "
        "sys.argv = ['setup.py', 'egg_info']; print(ns['ext_modules']())"
    )
    r = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO), "CC": "/nonexistent/cc"},
        capture_output=True,
        text=True,
        timeout=60,
        start_new_session=True,
    )
    assert r.stdout.split() == ["[]", "[]"], r.stdout + r.stderr
    assert "lbtui:" not in r.stderr
