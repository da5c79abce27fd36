"""The limiter's pure parts (the bucket fit) on synthetic send logs, and its gate in a loop."""

from __future__ import annotations

import asyncio
import time

import pytest

from convai_async._engine.limiter import AdaptiveLimiter, _first_refusal, _fit_rate


def slow_start_log(rate: float, burst: int, start: float, doubling: float) -> list[float]:
    """Send times of a client doubling its pace every ``doubling`` seconds, up to and including
    the first send a token bucket (rate, burst) refuses."""
    sends, now, tokens, last = [], 0.0, float(burst), 0.0
    while True:
        tokens = min(float(burst), tokens + (now - last) * rate)
        last = now
        sends.append(now)
        if tokens < 1.0:
            return sends
        tokens -= 1.0
        now += 1.0 / (start * 2 ** (now / doubling))


@pytest.mark.parametrize(("rate", "burst"), [(20.0, 5), (200.0, 20), (2000.0, 100), (50.0, 2)])
def test_fit_recovers_the_server_rate_from_a_slow_start(rate: float, burst: int) -> None:
    sends = slow_start_log(rate, burst, start=burst, doubling=0.15)
    assert _first_refusal(sends, rate, burst) == len(sends) - 1
    fitted = _fit_rate(sends, burst)
    assert fitted is not None
    assert fitted == pytest.approx(rate, rel=0.1)


def test_with_a_burst_of_one_the_fit_is_coarse_but_explains_the_log() -> None:
    # one doubling step crosses 1/R, so many rates explain the log; the fit is one of them
    # (and too high: the next 429 fits again from a longer, steadier log)
    sends = slow_start_log(7.0, 1, start=1, doubling=0.15)
    fitted = _fit_rate(sends, 1)
    assert fitted is not None
    assert _first_refusal(sends, fitted, 1) == len(sends) - 1


def test_fit_declines_a_log_too_short_to_say() -> None:
    assert _fit_rate([0.0, 0.001, 0.002], burst=5) is None
    assert _fit_rate([0.0, 0.01, 0.02, 0.03], burst=1) is None  # spans under 0.1 s


async def test_gate_holds_max_concurrency_and_cancellation_frees_the_slot() -> None:
    limiter = AdaptiveLimiter(
        max_concurrency=2, requests_per_second=None, burst=1, max_retry_after=60
    )
    await limiter.acquire()
    await limiter.acquire()
    waiter = asyncio.create_task(limiter.acquire())
    await asyncio.sleep(0.01)
    assert not waiter.done()
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    limiter.release()
    await asyncio.wait_for(limiter.acquire(), 1)
    assert limiter.in_flight == 2


async def test_configured_rate_paces_sends() -> None:
    limiter = AdaptiveLimiter(
        max_concurrency=10, requests_per_second=50, burst=1, max_retry_after=60
    )
    started = time.monotonic()
    for _ in range(11):
        await limiter.acquire()
        limiter.release()
    assert 0.18 <= time.monotonic() - started <= 0.5  # 10 intervals of 20 ms


async def test_a_429_pauses_then_paces_at_the_burst_estimate() -> None:
    limiter = AdaptiveLimiter(
        max_concurrency=10, requests_per_second=None, burst=1, max_retry_after=0.2
    )
    sent = [await limiter.acquire() for _ in range(6)]
    for _ in range(6):
        limiter.release()
    limiter.on_rate_limited(retry_after=0.2, sent_at=sent[-1])
    assert limiter.phase == "slow start"
    assert 0.1 < limiter.paused_for <= 0.2
    limiter.on_rate_limited(retry_after=None, sent_at=sent[-2])  # the same overload, late
    assert limiter.effective_concurrency == 7
    started = time.monotonic()
    await limiter.acquire()
    assert time.monotonic() - started >= 0.15
