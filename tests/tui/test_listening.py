"""The listeners panel's text (pure): what it says about lbtui's own listeners, and when."""

from __future__ import annotations

import dataclasses

from lbtui.control.model import ListenerView
from lbtui.tui.listening import listeners_text, worth_showing
from tests.tui.recorded_fixture import build_snapshot


def test_one_plain_listener_is_not_worth_a_panel() -> None:
    snap = dataclasses.replace(
        build_snapshot(), listeners=[ListenerView("default", "127.0.0.1:8080", False)]
    )
    assert not worth_showing(snap)


def test_several_listeners_tls_redirect_and_tunnels_each_a_line() -> None:
    snap = dataclasses.replace(
        build_snapshot(),
        listeners=[
            ListenerView("web", "0.0.0.0:80", False, redirect_https="secure", connections=3),
            ListenerView(
                "secure", "0.0.0.0:443", True, connections=12, tunnels=2,
                certificates=[["example.com", "www.example.com"], ["*.api.example.com"]],
            ),
        ],
    )  # fmt: skip
    assert worth_showing(snap)
    lines = listeners_text(snap).plain.splitlines()
    assert lines[0] == "listeners"
    assert lines[1].split() == [
        "web",
        "http",
        "0.0.0.0:80",
        "3",
        "conn",
        "→",
        "308",
        "to",
        "secure",
    ]
    assert "https" in lines[2]
    assert "2 tunnels" in lines[2]
    assert "certs: example.com, *.api.example.com" in lines[2]
