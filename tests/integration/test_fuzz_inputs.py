"""Fuzzing what an operator (or a web page, or a typo) hands lbtui: admin bodies sent to a real
admin API over real sockets, and config files given to the loader. Every admin answer is 2xx
or 4xx with the JSON error shape; every config is either loaded or refused with a
``ConfigError`` naming the file — never a traceback. Bounded: a few hundred cases, a few
seconds (``FUZZ_EXAMPLES`` raises it for a longer local run)."""

from __future__ import annotations

import asyncio
import json
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lbtui import config as config_mod
from lbtui.balancer.server import BalancerServer
from lbtui.config import AdminConfig
from lbtui.control.api import AdminServer
from lbtui.control.local import LocalControl
from lbtui.errors import ConfigError

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "50"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    # CI: the same cases on every run, so a failure reproduces; FUZZ_EXAMPLES=N explores anew
    derandomize="FUZZ_EXAMPLES" not in os.environ,
)

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=40)
    | st.sampled_from(["http://127.0.0.1:9001", "http://u:p@127.0.0.1:1", "open", "abort", "1s"])
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner),
    max_leaves=12,
)
KEYS = [
    "weight", "name", "url", "mode", "kind", "status", "percent", "delay_ms", "jitter_ms",
    "duration_s", "algorithm", "rps", "burst", "per_client_rps", "max_in_flight",
    "client_key", "state", "backend", "bytes_per_s", "shape",
]  # fmt: skip
bodies = st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=8), json_values, max_size=5)
ENDPOINTS = [
    ("POST", "/api/v1/backends"),
    ("POST", "/api/v1/backends/b1/weight"),
    ("POST", "/api/v1/backends/b1/breaker"),
    ("POST", "/api/v1/backends/b1/drain"),
    ("PUT", "/api/v1/backends/b1/fault"),
    ("PUT", "/api/v1/algorithm"),
    ("PUT", "/api/v1/limits"),
    ("DELETE", "/api/v1/backends/b2/fault"),
]  # the fleet endpoints answer 503 by design on a balancer without a fleet


@pytest.fixture(scope="module")
def admin_url() -> Iterator[str]:
    """A balancer and its admin API on their own event loop in a thread, for the sync
    hypothesis tests."""
    loop = asyncio.new_event_loop()
    box: dict[str, Any] = {}

    async def start() -> None:
        cfg = config_mod.from_dict(
            {
                "listener": {"address": "127.0.0.1:0"},
                "backends": [
                    {"name": "b1", "url": "http://127.0.0.1:9"},
                    {"name": "b2", "url": "http://127.0.0.1:19"},
                ],
            },
            "fuzz",
        )
        lb = BalancerServer(cfg)
        await lb.start()
        admin = AdminServer(AdminConfig(address="127.0.0.1:0"), LocalControl(lb.proxy), environ={})
        await admin.start()
        box.update(lb=lb, admin=admin)

    async def stop() -> None:
        await box["admin"].stop()
        await box["lb"].stop()

    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(start(), loop).result(30)
    try:
        yield str(box["admin"].url)
    finally:
        asyncio.run_coroutine_threadsafe(stop(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


@pytest.fixture(scope="module")
def http(admin_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=admin_url, timeout=10, trust_env=False) as client:
        yield client


def _answer_is_clean(r: httpx.Response) -> None:
    assert r.status_code < 500, (r.status_code, r.text[:300])
    if r.status_code >= 400:
        err = r.json()["error"]
        assert set(err) == {"status", "type", "message", "field"}
        assert err["status"] == r.status_code


@FUZZ
@given(endpoint=st.sampled_from(ENDPOINTS), body=bodies)
def test_admin_json_bodies(
    http: httpx.Client, endpoint: tuple[str, str], body: dict[str, Any]
) -> None:
    method, path = endpoint
    raw = json.dumps(body, allow_nan=True).encode()
    r = http.request(method, path, content=raw, headers={"Content-Type": "application/json"})
    _answer_is_clean(r)
    _answer_is_clean(http.get("/api/v1/state"))


@FUZZ
@given(
    endpoint=st.sampled_from(ENDPOINTS),
    raw=st.binary(max_size=200)
    | st.text(alphabet='{}[]":,0123456789.eE-+ tfalsenurNIiy\\', max_size=200).map(str.encode)
    | st.sampled_from([40, 1_000, 20_000]).map(lambda n: b'{"w":' + b"[" * n + b"]" * n + b"}"),
    content_type=st.sampled_from(
        ["application/json", "text/plain", "application/x-www-form-urlencoded", ""]
    ),
)
def test_admin_raw_bodies(
    http: httpx.Client, endpoint: tuple[str, str], raw: bytes, content_type: str
) -> None:
    method, path = endpoint
    headers = {"Content-Type": content_type} if content_type else {}
    r = http.request(method, path, content=raw, headers=headers)
    _answer_is_clean(r)
    if content_type != "application/json" and raw:
        assert r.status_code == 415


def _refusal(load: Callable[[], object]) -> ConfigError | None:
    """The ``ConfigError`` ``load`` raised (anything else fails the test), or ``None``."""
    try:
        load()
    except ConfigError as exc:
        return exc
    return None


SECTIONS: dict[str, list[str]] = {
    name: list(field.annotation.model_fields)  # type: ignore[union-attr]
    for name, field in config_mod.Config.model_fields.items()
    if isinstance(field.annotation, type) and issubclass(field.annotation, config_mod.Section)
}
sections = st.dictionaries(
    st.sampled_from(sorted(SECTIONS)),
    st.sampled_from(sorted(SECTIONS)).flatmap(
        lambda s: st.dictionaries(st.sampled_from(SECTIONS[s]) | st.text(max_size=6), json_values)
    ),
    max_size=4,
)
backend_entries = st.lists(
    st.fixed_dictionaries(
        {"name": st.text(max_size=8) | st.just("a"), "url": json_values},
        optional={"weight": json_values, "max_rps": json_values, "breaker": json_values},
    ),
    max_size=3,
)


@FUZZ
@given(data=sections, backends=backend_entries, routes=st.lists(json_values, max_size=2))
def test_config_loader(data: dict[str, Any], backends: list[Any], routes: list[Any]) -> None:
    doc = {**data, "backends": backends, "routes": routes}
    refused = _refusal(lambda: config_mod.from_dict(doc, "fuzz.toml"))
    if refused is not None:
        assert str(refused).startswith("fuzz.toml: ")
        assert refused.problems


TOML_ALPHABET = "[]{}=.\"',\n abcdefinopsrtuxl_0123456789-+:#"


@FUZZ
@given(
    text=st.text(alphabet=TOML_ALPHABET, max_size=300)
    | st.sampled_from([40, 1_000, 20_000]).map(lambda n: "x = " + "[" * n + "]" * n + "\n")
    | st.sampled_from(["[breaker]\nopen_s = ", "[listener]\naddress = ", "x = "]).flatmap(
        lambda head: st.text(alphabet=TOML_ALPHABET, max_size=120).map(lambda t: head + t)
    )
)
def test_config_files(tmp_path: Path, text: str) -> None:
    path = tmp_path / "fuzz.toml"
    path.write_text(text)
    refused = _refusal(lambda: config_mod.load(path))
    if refused is not None:
        assert str(refused).startswith(f"{path}: ")
