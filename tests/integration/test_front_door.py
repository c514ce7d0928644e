"""The front door as a new user meets it: ``lbtui check``, the README's own examples, hostile
or careless config files (exit 2 with file, key and expectation, never a traceback, bounded
memory), backend URLs lbtui cannot use, and the admin API refusing them too."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from lbtui import config as config_mod
from lbtui.errors import ConfigError
from lbtui.sources.presets import load_preset

REPO = Path(__file__).resolve().parents[2]
LBTUI = [sys.executable, "-m", "lbtui"]
GOOD_BACKEND = '[[backends]]\nname = "a"\nurl = "http://127.0.0.1:9001"\n'


def lbtui(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [*LBTUI, *args], capture_output=True, text=True, timeout=60, cwd=cwd, env=env
    )


def readme_toml_blocks() -> list[str]:
    text = (REPO / "README.md").read_text()
    return re.findall(r"^```toml\n(.*?)^```", text, flags=re.S | re.M)


def test_the_readme_has_toml_examples() -> None:
    assert readme_toml_blocks()


def readme_query_blocks() -> list[str]:
    """The README's ``--query`` files for a Prometheus source (fenced as ``toml query``)."""
    text = (REPO / "README.md").read_text()
    return re.findall(r"^```toml query\n(.*?)^```", text, flags=re.S | re.M)


@pytest.mark.parametrize("index", range(len(readme_query_blocks())))
def test_every_readme_query_file_loads(tmp_path: Path, index: int) -> None:
    path = tmp_path / "queries.toml"
    path.write_text(readme_query_blocks()[index])
    preset = load_preset("envoy", path)
    assert preset != load_preset("envoy"), "the file changes the preset"


@pytest.mark.parametrize("index", range(len(readme_toml_blocks())))
def test_every_readme_toml_example_passes_check(tmp_path: Path, index: int) -> None:
    """Written where the README's reader would keep it: beside ``fixtures/``."""
    (tmp_path / "fixtures").symlink_to(REPO / "fixtures")
    path = tmp_path / "lbtui.toml"
    path.write_text(readme_toml_blocks()[index])
    r = lbtui("check", str(path), cwd=Path("/"))
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"lbtui: {path}: ok"), r.stdout


def test_check_lists_every_problem_with_suggestions(tmp_path: Path) -> None:
    path = tmp_path / "lbtui.toml"
    path.write_text(
        "[breaker]\nopen_secs = 3\nopen_s = inf\n"
        '[listner]\naddress = "x"\n'
        "[health]\nenabled = true\ninterval_ms = 100\ntimeout_ms = 500\n"
        '[[backends]]\nname = "a"\nurl = "http://user:hunter2@127.0.0.1:9001"\n'
        '[[routes]]\nbackends = ["static-1"]\n'
    )
    r = lbtui("check", str(path))
    assert r.returncode == 2, r
    assert "Traceback" not in r.stderr
    assert r.stderr.startswith(f"lbtui: {path}: 6 problems\n"), r.stderr
    for expected in (
        "breaker.open_secs: unknown key (did you mean 'open_s'?)",
        "breaker.open_s: expected a finite number",
        "listner: unknown key (did you mean 'listener'?)",
        "backends[0].url: a backend URL takes no user or password",
        "routes[0].backends[0]: no backend named 'static-1' (known: a)",
        "health.timeout_ms: expected at most health.interval_ms (100), got 500",
    ):
        assert expected in r.stderr, r.stderr
    assert "hunter2" not in r.stderr


def test_check_ok_line() -> None:
    r = lbtui("check", str(REPO / "fixtures/configs/example.toml"), cwd=Path("/"))
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().endswith("ok — 3 backends, 1 route, round_robin")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[breaker]\nopen_s = inf\n", "breaker.open_s: expected a finite number"),
        ("[breaker]\nopen_s = nan\n", "breaker.open_s: expected a finite number"),
        ("[breaker]\nopen_s = -1\n", "breaker.open_s: expected greater than or equal to 0"),
        ("[limits]\nrps = -inf\n", "limits.rps: expected a finite number"),
        ("[breaker]\nwindow_size = 1_000_000_000_000\n", "less than or equal to 10000"),
        ("[limits]\nrps = 1e-320\n", "limits.rps: expected greater than or equal to 0.000001"),
        ("[limits]\nburst = 1e300\n", "limits.burst: expected less than or equal to 1000000000"),
        ("[proxy]\nshutdown_grace_s = inf\n", "proxy.shutdown_grace_s: expected a finite"),
        ("x = " + "[" * 5000 + "]" * 5000 + "\n", "nested too deeply"),
        ("x = " + "{a=" * 3000 + "1" + "}" * 3000 + "\n", "nested too deeply"),
        ("x = " + "[" * 40 + "]" * 40 + "\n", "nested deeper than 32 levels"),
        ('[fallback]\nfile = "/dev/zero"\n', "fallback.file: '/dev/zero' is larger than 1 MiB"),
        ('[fallback]\nfile = "/"\n', "fallback.file: cannot read '/'"),
    ],
)
def test_hostile_config_values(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "lbtui.toml"
    path.write_text(text + GOOD_BACKEND)
    with pytest.raises(ConfigError) as info:
        config_mod.load(path)
    assert expected in str(info.value), str(info.value)
    assert str(info.value).startswith(str(path))


def test_config_from_dev_zero_is_refused_in_bounded_memory() -> None:
    r = lbtui("check", "/dev/zero")
    assert r.returncode == 2
    assert r.stderr.strip() == "lbtui: /dev/zero: file larger than 1 MiB (the most lbtui reads)"
    r = lbtui("serve", "-c", "/dev/zero")
    assert r.returncode == 2
    assert "larger than 1 MiB" in r.stderr


def test_fallback_file_is_read_from_the_config_folder(tmp_path: Path) -> None:
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "sorry.json").write_text('{"sorry": true}')
    path = tmp_path / "conf" / "lbtui.toml"
    path.write_text('[fallback]\nfile = "sorry.json"\n' + GOOD_BACKEND)
    cwd = os.getcwd()
    os.chdir(tmp_path)  # not the config's folder
    try:
        cfg = config_mod.load("conf/lbtui.toml")
    finally:
        os.chdir(cwd)
    assert cfg.fallback is not None
    assert cfg.fallback.body_bytes(Path(cfg.base_dir or "")) == b'{"sorry": true}'
    # a file of that name in the current folder is not what is meant
    (tmp_path / "sorry.json").write_text("wrong")
    (tmp_path / "conf" / "sorry.json").unlink()
    os.chdir(tmp_path)
    try:
        with pytest.raises(ConfigError, match=r"fallback\.file: cannot read"):
            config_mod.load("conf/lbtui.toml")
    finally:
        os.chdir(cwd)


BAD_URLS = [
    ("http://user:hunter2@127.0.0.1:9001", "takes no user or password"),
    ("http://user@127.0.0.1:9001", "takes no user or password"),
    ("http://127.0.0.1:9001/a b", "no spaces or control characters"),
    ("http://127.0.0.1:9001/a\tb", "no spaces or control characters"),
    ("http://127.0.0.1:9001/a\r\nX-Evil: 1", "no spaces or control characters"),
    ("http://127.0.0.1:0", "expected a port from 1 to 65535"),
    ("http://127.0.0.1:9001/?", "no query or fragment"),
]


@pytest.mark.parametrize(("url", "expected"), BAD_URLS)
def test_backend_urls_lbtui_cannot_use_are_refused(url: str, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        config_mod.load(backends=[f"a={url}"])
    text = str(info.value)
    assert text.startswith("command line: backends[0].url: "), text
    assert expected in text
    assert "hunter2" not in text


def test_a_bad_backend_flag_exits_2() -> None:
    r = lbtui("serve", "-b", "http://u:hunter2@127.0.0.1:9001", "--admin", "127.0.0.1:0")
    assert r.returncode == 2
    assert "backends[0].url: a backend URL takes no user or password" in r.stderr
    assert "hunter2" not in r.stderr
    assert "Traceback" not in r.stderr
