"""The fake's fault decisions, pure: limiter seam, token bucket, Retry-After, quota, dice."""

from __future__ import annotations

import random
from email.utils import parsedate_to_datetime

import attrs
import pytest

from convai_async.testing.faults import (
    EdgeGate,
    FaultDice,
    Faults,
    RateLimitBucket,
    ServerLimiter,
    retry_after_headers,
)


@attrs.define
class ScriptedLimiter:
    """Refuses while ``refuse_for`` is set, and logs every call."""

    refuse_for: float | None = None
    admitted: list[float] = attrs.field(factory=list)
    finished: list[float] = attrs.field(factory=list)

    def admit(self, now: float) -> float | None:
        self.admitted.append(now)
        return self.refuse_for

    def done(self, now: float) -> None:
        self.finished.append(now)


def as_limiter(limiter: ScriptedLimiter) -> ServerLimiter:
    return limiter  # mypy checks here that the test limiter fits the Protocol


@pytest.mark.parametrize(
    ("wait", "expected"),
    [(0.0, "1"), (0.2, "1"), (1.0, "1"), (1.01, "2"), (3600.0, "3600")],
)
def test_retry_after_in_seconds_is_whole_and_rounded_up(wait: float, expected: str) -> None:
    assert retry_after_headers("seconds", wait, 0.0) == {"Retry-After": expected}


@pytest.mark.parametrize(
    ("wait", "expected"),
    [(0.35, "0.35"), (0.3501, "0.351"), (2.0, "2"), (0.0, "0"), (1.25, "1.25")],
)
def test_retry_after_in_decimal_seconds_is_never_shorter(wait: float, expected: str) -> None:
    header = retry_after_headers("decimal", wait, 0.0)
    assert header == {"Retry-After": expected}
    assert float(header["Retry-After"]) >= wait


@pytest.mark.parametrize("wall_now", [1_700_000_000.0, 1_700_000_000.9])
def test_retry_after_as_http_date_is_not_before_the_wait(wall_now: float) -> None:
    header = retry_after_headers("http-date", 0.5, wall_now)["Retry-After"]
    assert header.endswith(" GMT")
    when = parsedate_to_datetime(header).timestamp()
    # pure arithmetic on an injected wall_now: no clock is read
    assert wall_now + 0.5 <= when < wall_now + 1.5


def test_retry_after_none_sends_no_header() -> None:
    assert retry_after_headers("none", 3.0, 0.0) == {}


def test_unknown_retry_after_style_and_negative_tenant_rate_are_refused() -> None:
    with pytest.raises(ValueError, match="retry_after"):
        Faults(retry_after="minutes")  # type: ignore[arg-type]
    faults = Faults()
    with pytest.raises(ValueError, match="retry_after"):
        faults.retry_after = "soon"  # type: ignore[assignment]
    with pytest.raises(ValueError, match="tenant_rate"):
        Faults(tenant_rate=-1.0)


def test_token_bucket_lets_a_burst_through_then_refills_at_its_rate() -> None:
    bucket = RateLimitBucket(rate=10.0, burst=3)
    assert [bucket.admit(0.0) for _ in range(3)] == [None, None, None]
    assert bucket.admit(0.0) == pytest.approx(0.1)
    assert bucket.admit(0.05) == pytest.approx(0.05)
    assert bucket.admit(0.1) is None
    assert bucket.admit(10.0) is None  # refilled, but never above the burst
    assert bucket.tokens == pytest.approx(2.0)


def test_gate_consults_the_limiter_and_formats_its_wait() -> None:
    limiter = ScriptedLimiter(refuse_for=0.35)
    faults = Faults(limiter=as_limiter(limiter), retry_after="decimal")
    gate = EdgeGate()
    refusal, done_by = gate.admit(faults, "/character/update", 5.0, 0.0)
    assert refusal is not None
    assert done_by is None
    assert refusal.status == 429
    assert refusal.headers == {"Retry-After": "0.35"}
    assert refusal.body == {"API_ERROR": "API rate limit exceeded. Please try again later."}
    assert (gate.rate_limited, gate.accepted, limiter.admitted) == (1, 0, [5.0])

    limiter.refuse_for = None
    refusal, done_by = gate.admit(faults, "/llm-models/list", 6.0, 0.0)
    assert refusal is None
    assert done_by is limiter
    assert gate.accepted == 1


def test_llm_endpoints_are_refused_in_their_own_error_shape() -> None:
    faults = Faults(limiter=as_limiter(ScriptedLimiter(refuse_for=2.0)), retry_after="none")
    refusal, _ = EdgeGate().admit(faults, "/llm-models/register", 0.0, 0.0)
    assert refusal is not None
    assert refusal.headers == {}
    assert refusal.body["status"] == "error"
    assert refusal.body["message"] == "Rate limit exceeded."
    assert isinstance(refusal.body["transactionID"], str)


def test_quota_refuses_before_the_limiter_is_asked() -> None:
    limiter = ScriptedLimiter()
    faults = Faults(limiter=as_limiter(limiter), quota=1)
    gate = EdgeGate()
    assert gate.admit(faults, "/character/get", 0.0, 0.0)[0] is None
    refusal, _ = gate.admit(faults, "/character/get", 1.0, 0.0)
    assert refusal is not None
    assert refusal.body == {"API_ERROR": "API usage limit exceeded for current plan."}
    assert limiter.admitted == [0.0]
    assert gate.rate_limited == 0


def test_rate_limit_builds_a_bucket_that_follows_the_faults() -> None:
    faults = Faults(rate_limit=1.0, burst=1)
    gate = EdgeGate()
    assert gate.admit(faults, "/character/get", 0.0, 0.0)[0] is None
    assert gate.admit(faults, "/character/get", 0.0, 0.0)[0] is not None
    faults.rate_limit = 1000.0  # changed while running: the same bucket refills faster
    assert gate.admit(faults, "/character/get", 0.01, 0.0)[0] is None
    faults.rate_limit = None
    assert gate.limiter(faults) is None


def test_tenant_requests_consume_capacity_and_are_counted_apart() -> None:
    faults = Faults(rate_limit=1.0, burst=2)
    gate = EdgeGate()
    assert gate.admit_tenant(faults, 0.0)
    assert gate.admit_tenant(faults, 0.0)
    assert not gate.admit_tenant(faults, 0.0)
    assert (gate.tenant_requests, gate.tenant_rate_limited) == (3, 1)
    refusal, _ = gate.admit(faults, "/character/get", 0.0, 0.0)
    assert refusal is not None  # the tenant took the burst
    assert (gate.accepted, gate.rate_limited) == (0, 1)


def test_tenant_requests_finish_at_once() -> None:
    limiter = ScriptedLimiter()
    gate = EdgeGate()
    assert gate.admit_tenant(Faults(limiter=as_limiter(limiter)), 3.0)
    assert limiter.finished == [3.0]


def test_dice_inject_at_most_the_limit() -> None:
    dice = FaultDice(random.Random(1))
    faults = Faults(limit=3)
    rolls = [dice.roll(faults, 1.0) for _ in range(10)]
    assert rolls == [True] * 3 + [False] * 7
    assert dice.injected == 3
    assert not FaultDice(random.Random(1)).roll(Faults(), 0.0)


def test_dice_draw_latency_from_a_range() -> None:
    dice = FaultDice(random.Random(2))
    draws = [dice.seconds((0.1, 0.2)) for _ in range(50)]
    assert all(0.1 <= d <= 0.2 for d in draws)
    assert len(set(draws)) > 1
    assert dice.seconds(0.5) == 0.5
