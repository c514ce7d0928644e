"""The guardrails judged on hand-made recordings: pure, no sockets, no clock."""

from __future__ import annotations

from lbtui.chaos.guardrails import tripped
from lbtui.chaos.recording import CLIENT_CLASSES, Recording, Sample
from lbtui.chaos.scenario import Guardrails
from lbtui.core.window import bucket_of


def recording(seconds: float, ok_per_s: int, bad_per_s: int, latency_s: float = 0.005) -> Recording:
    """Four samples a second of cumulative client counts: ``ok_per_s`` 2xx and ``bad_per_s``
    5xx a second, every request taking ``latency_s``."""
    rec = Recording()
    for i in range(int(seconds * 4) + 1):
        client = dict.fromkeys(CLIENT_CLASSES, 0)
        client["2xx"] = i * ok_per_s // 4
        client["5xx"] = i * bad_per_s // 4
        per_sample = (ok_per_s + bad_per_s) // 4
        rec.add(
            Sample(
                t=i / 4,
                client=client,
                client_latency={bucket_of(latency_s): per_sample} if i else {},
                balancer_requests=client["2xx"] + client["5xx"],
                retries=0,
                fallbacks=0,
                rate_limited=0,
                admitted=0,
                limits_rps=None,
                backends={},
                load_rate=float(ok_per_s + bad_per_s),
            )
        )
    return rec


ERRORS = Guardrails.model_validate({"error_rate_above": 10, "for": "2s"})
SLOW = Guardrails.model_validate({"p99_above_ms": 100, "for": "2s"})


def test_a_healthy_run_trips_nothing() -> None:
    assert tripped(recording(5, 100, 0), ERRORS) is None
    assert tripped(recording(5, 100, 0), SLOW) is None


def test_an_error_rate_over_the_limit_for_the_window_trips_it() -> None:
    why = tripped(recording(5, 80, 20), ERRORS)
    assert why is not None
    assert why.startswith("client error rate 20.0 % (40 of 200) > 10 % for 2 s")


def test_a_slow_p99_trips_the_latency_guardrail() -> None:
    why = tripped(recording(5, 100, 0, latency_s=0.5), SLOW)
    assert why is not None
    assert why.startswith("client p99 ")
    assert "> 100 ms for 2 s" in why


def test_nothing_is_judged_before_the_window_has_passed_or_on_too_few_requests() -> None:
    assert tripped(recording(1.5, 80, 20), ERRORS) is None  # 1.5 s < for = 2 s
    assert tripped(recording(5, 2, 2), ERRORS) is None  # under 10 requests in the window


def test_no_guardrail_set_never_trips() -> None:
    assert tripped(recording(5, 0, 100), Guardrails.model_validate({})) is None
