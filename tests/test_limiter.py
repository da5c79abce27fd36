"""The limiter's gate (concurrency, pacing, pauses, patience) and the controller's pure
transitions, on a virtual clock: no real waiting anywhere."""

from __future__ import annotations

import asyncio
import math

import pytest

from convai_async._engine import controller
from convai_async._engine import limiter as limiter_module
from convai_async._engine.controller import Accepted, RateState, on_rate_limited, rate_at
from convai_async._engine.limiter import AdaptiveLimiter
from convai_async._engine.rush import KeyRush
from convai_async.errors import RateLimitError, RateLimitPatienceError

from .test_rate_control import run_virtual

NOTHING = Accepted(tail=0, tail_seconds=0.0, cycle=0)


def limiter_here(**options: object) -> AdaptiveLimiter:
    loop = asyncio.get_running_loop()
    settings: dict[str, object] = {"max_concurrency": 4, "clock": loop.time, **options}
    return AdaptiveLimiter(**settings)  # type: ignore[arg-type]


async def test_gate_holds_max_concurrency_and_cancellation_frees_the_slot() -> None:
    limiter = AdaptiveLimiter(max_concurrency=2)
    await limiter.acquire()
    await limiter.acquire()
    waiter = asyncio.create_task(limiter.acquire())
    await asyncio.sleep(0)
    assert not waiter.done()
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    limiter.release()
    await asyncio.wait_for(limiter.acquire(), 60)
    assert limiter.in_flight == 2


def test_a_configured_rate_paces_sends() -> None:
    async def scenario() -> list[float]:
        limiter = limiter_here(requests_per_second=50.0)
        sent = []
        for _ in range(11):
            sent.append(await limiter.acquire())
            limiter.release()
        return sent

    sent = run_virtual(scenario)
    assert sent[-1] - sent[0] == pytest.approx(0.2)  # ten intervals of 20 ms


def test_retry_after_is_a_floor_however_long() -> None:
    async def scenario() -> tuple[float, float, float]:
        limiter = limiter_here(rate_limit_patience=7200.0)
        sent_at = await limiter.acquire()
        limiter.release()
        limiter.on_rate_limited(3600.0, sent_at)
        paused_for = limiter.paused_for
        resumed = await limiter.acquire()
        return sent_at, paused_for, resumed

    sent_at, paused_for, resumed = run_virtual(scenario)
    assert paused_for == pytest.approx(3600.0)
    assert resumed - sent_at >= 3600.0


async def three_sends_behind_a_scout() -> tuple[
    AdaptiveLimiter, list[float], list[asyncio.Task[None]]
]:
    """A limiter refused, and refused again after the pause it guessed (no Retry-After), then
    three sends waiting to go: the list of send times fills as they go."""
    limiter = limiter_here()
    for _ in range(2):
        sent_at = await limiter.acquire()
        limiter.release()
        limiter.on_rate_limited(None, sent_at)
    sends: list[float] = []

    async def send() -> None:
        sends.append(await limiter.acquire())

    return limiter, sends, [asyncio.create_task(send()) for _ in range(3)]


def test_refused_again_after_a_guessed_pause_one_request_goes_first_and_pauses_hold_the_rest() -> (
    None
):
    async def scenario() -> tuple[list[float], float, float, float, list[float]]:
        loop = asyncio.get_running_loop()
        limiter, sends, tasks = await three_sends_behind_a_scout()
        await asyncio.sleep(5.0)  # long past the pause and the pacing: only one went
        alone = list(sends)
        refused_at = loop.time()
        limiter.on_rate_limited(2.0, alone[0])  # its Retry-After holds the two waiting
        limiter.release()
        await asyncio.sleep(5.0)
        second, answered = sends[1], loop.time()
        assert len(sends) == 2  # the third still waits for the second's answer
        limiter.on_success(second)  # the quota is back: the last one follows at once
        limiter.release()
        await asyncio.gather(*tasks)
        limiter.release()
        return alone, refused_at, second, answered, sends

    alone, refused_at, second, answered, sends = run_virtual(scenario)
    assert len(alone) == 1
    assert second >= refused_at + 2.0  # waited at the send window: the pause still held it
    assert len(sends) == 3
    assert sends[2] == pytest.approx(answered)


def test_a_scout_answered_otherwise_than_429_lets_the_rest_go_at_once() -> None:
    # A scout timed out or answered 500: no closed window held it, so nothing waits behind it
    # (one request at a time until a success would cost a whole timeout per request).
    async def scenario() -> tuple[int, int]:
        limiter, sends, tasks = await three_sends_behind_a_scout()
        await asyncio.sleep(5.0)
        alone = len(sends)
        limiter.on_other_answer()  # the scout's answer: a 500, say
        limiter.release()
        await asyncio.gather(*tasks)
        return alone, len(sends)

    assert run_virtual(scenario) == (1, 3)  # the other two went without waiting for each other


def test_a_late_429_of_the_same_overload_counts_once_but_keeps_its_pause() -> None:
    async def scenario() -> tuple[str, float, float, float]:
        limiter = limiter_here()
        first = await limiter.acquire()
        second = await limiter.acquire()
        limiter.release()
        limiter.release()
        limiter.on_rate_limited(0.5, second)
        rate = limiter.effective_rate
        limiter.on_rate_limited(2.0, first)  # sent before the reaction: the same overload
        assert rate is not None
        return limiter.phase, rate, limiter.effective_rate or 0.0, limiter.paused_for

    phase, rate, rate_after, paused_for = run_virtual(scenario)
    assert phase == controller.SLOW_START
    assert rate_after == rate
    assert paused_for == pytest.approx(2.0)


def test_patience_runs_out_after_429s_only_and_a_success_resets_it() -> None:
    async def scenario() -> tuple[float, int, RateLimitPatienceError]:
        loop = asyncio.get_running_loop()
        limiter = limiter_here(rate_limit_patience=10.0)
        started = loop.time()
        for _ in range(3):
            sent_at = await limiter.acquire()
            limiter.release()
            limiter.on_rate_limited(None, sent_at)
        sent_at = await limiter.acquire()
        limiter.release()
        limiter.on_success()  # one success: a new streak must last 10 s again
        started = loop.time()
        refused = 0
        while True:
            try:
                sent_at = await limiter.acquire()
            except RateLimitPatienceError as error:
                return loop.time() - started, refused, error
            limiter.release()
            limiter.on_rate_limited(3.0, sent_at)
            refused += 1

    elapsed, refused, error = run_virtual(scenario)
    assert elapsed >= 10.0  # the whole patience, from the first 429 after the success
    # Sent at 0, 3, 6 and 9 s (each 3 s Retry-After honoured); the wait for a fifth turn at
    # 12 s ends at patience instead: no request is sent once patience has run out.
    assert refused == 4
    assert isinstance(error, RateLimitError)
    assert error.retry_after is None
    assert "rate_limit_patience" in str(error)
    assert "10s" in str(error)


def test_a_long_retry_after_ends_at_patience_not_at_its_end() -> None:
    async def scenario() -> float:
        loop = asyncio.get_running_loop()
        limiter = limiter_here(rate_limit_patience=30.0)
        sent_at = await limiter.acquire()
        limiter.release()
        limiter.on_rate_limited(3600.0, sent_at)
        with pytest.raises(RateLimitPatienceError):
            await limiter.acquire()
        return loop.time() - sent_at

    assert run_virtual(scenario) == pytest.approx(30.0, abs=0.1)


def test_a_custom_pacer_is_asked_for_every_paced_send() -> None:
    class CountingPacer:
        def __init__(self) -> None:
            self.calls: list[tuple[float, int]] = []

        async def try_acquire(self, rate: float, burst: int, now: float) -> float:
            self.calls.append((rate, burst))
            return 0.0

    async def scenario() -> list[tuple[float, int]]:
        pacer = CountingPacer()
        limiter = limiter_here(requests_per_second=5.0, burst=3, pacer=pacer)
        for _ in range(4):
            await limiter.acquire()
            limiter.release()
        return pacer.calls

    assert run_virtual(scenario) == [(5.0, 3)] * 4


# -- the controller's pure transitions ---------------------------------------------------------


def test_open_until_the_first_429_then_a_slow_start_that_doubles() -> None:
    state = RateState(epoch_started=0.0)
    assert rate_at(state, 5.0) is None
    state = on_rate_limited(
        state, now=1.0, sent_at=0.99, retry_after=None, accepted=Accepted(0, 0.0, 40)
    )
    assert state.phase == controller.SLOW_START
    start = rate_at(state, state.epoch_started)
    assert start == pytest.approx(40.0)  # 40 accepted in the first second
    later = rate_at(state, state.epoch_started + controller.SLOW_START_DOUBLING)
    assert later == pytest.approx(80.0)


def test_a_slow_start_refused_before_it_has_sent_a_few_stays_a_slow_start() -> None:
    state = RateState(epoch_started=0.0)
    state = on_rate_limited(
        state, now=0.01, sent_at=0.0, retry_after=0.003, accepted=Accepted(0, 0.0, 20)
    )
    assert state.phase == controller.SLOW_START
    # The burst's debt was still being paid: refused 10 ms into a slow start at ~20/s
    sent_at = state.epoch_started + 0.01
    again = on_rate_limited(
        state, now=sent_at + 0.01, sent_at=sent_at, retry_after=0.003, accepted=Accepted(3, 0.02, 3)
    )
    assert again.phase == controller.SLOW_START
    assert again.base == state.base
    assert again.epoch_started == pytest.approx(sent_at + 0.013)


def test_a_slow_start_refused_with_nothing_accepted_probes_beyond_its_guess_at_once() -> None:
    # A window's quota spent in the first rush: the slow start resumes into the same closed
    # window, so its 429 says nothing of the rate. The rate it is taken for is a guess, probed
    # beyond as soon as sending resumes instead of held for a plateau.
    state = RateState(phase=controller.SLOW_START, base=180.0, epoch_started=0.3, reacted_at=0.1)
    refused = on_rate_limited(
        state, now=0.32, sent_at=0.31, retry_after=None, accepted=Accepted(0, 0.02, 18)
    )
    assert refused.phase == controller.STEADY
    assert refused.plateau == 0.0
    resumed = refused.epoch_started
    assert rate_at(refused, resumed) == pytest.approx(refused.good)
    assert (rate_at(refused, resumed + 1.0) or 0.0) > refused.good
    # Anything accepted since it resumed: a rate was tried, and the plateau holds.
    tried = on_rate_limited(
        state, now=0.32, sent_at=0.31, retry_after=None, accepted=Accepted(3, 0.02, 18)
    )
    assert tried.plateau >= controller.MIN_PLATEAU
    assert rate_at(tried, tried.epoch_started) == pytest.approx(tried.base)
    assert tried.base < tried.good
    # A later 429 confirming the guess waits a whole plateau before the next probe.
    sent_at = resumed + 1.0
    confirmed = on_rate_limited(
        refused, now=sent_at + 0.02, sent_at=sent_at, retry_after=None,
        accepted=Accepted(tail=150, tail_seconds=1.0, cycle=150),
    )  # fmt: skip
    assert confirmed.plateau >= controller.MIN_PLATEAU


def test_steady_recovers_towards_the_last_good_rate_then_probes_beyond() -> None:
    state = RateState(
        phase=controller.STEADY, base=180.0, good=200.0, epoch_started=10.0, plateau=4.0
    )
    assert rate_at(state, 10.0) == pytest.approx(180.0)
    halfway = rate_at(state, 12.0)
    assert halfway is not None
    assert 195.0 < halfway < 200.0
    assert rate_at(state, 14.0) == pytest.approx(200.0)
    beyond = rate_at(state, 15.0)
    far = rate_at(state, 17.0)
    assert beyond is not None
    assert far is not None
    assert 200.0 < beyond < 215.0 < far


def test_a_429_while_probing_sets_the_good_rate_and_one_confirming_it_waits_longer() -> None:
    state = RateState(
        phase=controller.STEADY, base=180.0, good=200.0, epoch_started=10.0, plateau=2.0,
        reacted_at=9.0,
    )  # fmt: skip
    accepted = Accepted(tail=404, tail_seconds=2.0, cycle=600)  # 202 accepted per second
    sent_at = 12.5
    probed = rate_at(state, sent_at)
    assert probed is not None
    assert probed > 200.0
    after = on_rate_limited(state, now=12.52, sent_at=sent_at, retry_after=1.0, accepted=accepted)
    # Just under the rate refused: 202 were accepted per second before it, a floor that high
    assert after.good == pytest.approx(controller.CEILING * probed)
    assert after.floor == pytest.approx(controller.CEILING * probed)
    assert after.base == pytest.approx(controller.BACKOFF * after.good)
    assert after.paused_until == pytest.approx(13.52)
    assert after.epoch_started == after.paused_until
    assert after.plateau == 4.0  # the same limit again: probe half as often


def test_a_429_under_the_good_rate_lowers_it_at_most_deep_at_once_towards_what_was_accepted() -> (
    None
):
    state = RateState(
        phase=controller.STEADY, base=184.0, good=200.0, epoch_started=10.0, plateau=8.0,
        reacted_at=9.0,
    )  # fmt: skip
    accepted = Accepted(tail=200, tail_seconds=2.0, cycle=300)  # a tenant took half
    refused_at = rate_at(state, 12.9)
    assert refused_at is not None
    after = on_rate_limited(state, now=13.0, sent_at=12.9, retry_after=None, accepted=accepted)
    assert after.floor == pytest.approx(100.0)  # accepted per second over the last 2 s
    assert after.good == pytest.approx(controller.DEEP * refused_at)
    assert after.plateau == controller.MIN_PLATEAU
    assert after.paused_until == pytest.approx(13.0 + controller.QUIET_SECONDS)
    assert after.quiet == 2 * controller.QUIET_SECONDS  # 429s without Retry-After: longer
    # Refused again at the new rate: the floor stands, and the rate closes in on it
    sent_at = after.epoch_started + 1.5
    again_at = rate_at(after, sent_at)
    assert again_at is not None
    again = on_rate_limited(
        after, now=sent_at + 0.01, sent_at=sent_at, retry_after=None, accepted=Accepted(5, 0.2, 5)
    )
    assert 100.0 <= again.good < again_at


def test_a_long_pause_makes_the_cycle_the_measure() -> None:
    state = RateState(
        phase=controller.STEADY,
        base=900.0,
        good=1000.0,
        epoch_started=10.0,
        reacted_at=1.5,
        cycle_started=1.5,
    )
    # 2,000 accepted in 1.5 s of sending after an 8.5 s pause: a 10 s window's quota
    accepted = Accepted(tail=2000, tail_seconds=1.5, cycle=2000)
    after = on_rate_limited(state, now=11.5, sent_at=11.4, retry_after=8.5, accepted=accepted)
    assert after.good == pytest.approx(200.0)
    assert after.plateau == controller.MAX_PLATEAU  # a window's quota is exact: probe rarely


def test_a_429_before_anything_was_accepted_again_keeps_the_good_rate() -> None:
    state = RateState(
        phase=controller.STEADY, base=184.0, good=200.0, epoch_started=10.0, reacted_at=9.85
    )
    # Refused at once after a short quiet pause: the window is not over yet, nothing learnt
    accepted = Accepted(tail=0, tail_seconds=0.01, cycle=0)
    after = on_rate_limited(state, now=10.01, sent_at=10.0, retry_after=None, accepted=accepted)
    assert after.good == 200.0
    assert after.base == pytest.approx(controller.BACKOFF * 200.0)
    # The same after a long pause: a quota that has not come back is no measure of the rate
    later = on_rate_limited(after, now=13.0, sent_at=12.99, retry_after=None, accepted=accepted)
    assert later.good == 200.0


def test_429s_that_teach_nothing_confirm_nothing_the_probes_keep_their_time() -> None:
    # A sliding window's quiet probes, refused while its quota is spent, say nothing of the
    # rate: taken for the same limit found again, they doubled the plateau each time, and a
    # first estimate 27% under the limit was held 11 s before the next probe.
    state = RateState(
        phase=controller.STEADY, base=134.0, good=145.6, epoch_started=0.44, reacted_at=0.29,
        plateau=controller.MIN_PLATEAU,
    )  # fmt: skip
    nothing = Accepted(tail=0, tail_seconds=0.01, cycle=0)
    after = on_rate_limited(state, now=0.447, sent_at=0.44, retry_after=None, accepted=nothing)
    again = on_rate_limited(after, now=0.761, sent_at=0.755, retry_after=None, accepted=nothing)
    assert (after.good, again.good) == (145.6, 145.6)
    assert (after.plateau, again.plateau) == (controller.MIN_PLATEAU, controller.MIN_PLATEAU)


def test_a_ceiling_bounds_the_rate_a_429_is_taken_for() -> None:
    # Long past its plateau, with the send window closed on a cap, the pace's curve has climbed
    # far beyond what the window let by: a 429 then is a refusal of what was sent, not of it.
    state = RateState(phase=controller.STEADY, base=282.0, good=282.0, epoch_started=0.5)
    curve = rate_at(state, 6.8)
    assert curve is not None
    assert curve > 1000.0
    accepted = Accepted(tail=437, tail_seconds=2.0, cycle=937)
    free = on_rate_limited(state, now=6.81, sent_at=6.8, retry_after=None, accepted=accepted)
    bound = on_rate_limited(
        state, now=6.81, sent_at=6.8, retry_after=None, accepted=accepted, ceiling=272.0
    )
    assert free.good > 1000.0  # what the curve said, without the ceiling
    assert 200.0 <= bound.good <= controller.CEILING * 272.0


def test_429s_without_retry_after_and_nothing_accepted_are_one_cycle_of_a_long_window() -> None:
    # A 10 s window's quota of 2,000 spent by 1.4 s; no Retry-After, so the client probes with
    # quiet pauses (the last one 2 s, from 9.8 s) and is accepted again at 11.8 s.
    state = RateState(phase=controller.STEADY, base=1500.0, good=1600.0, epoch_started=0.0)
    state = on_rate_limited(
        state, now=1.4, sent_at=1.4, retry_after=None, accepted=Accepted(2000, 1.0, 2000)
    )
    started = state.cycle_started
    probe = 1.6
    while probe < 10.0:
        state = on_rate_limited(state, now=probe, sent_at=probe, retry_after=None, accepted=NOTHING)
        probe = state.paused_until
    assert state.cycle_started == started  # refusals with nothing accepted continue the cycle
    # The next window's quota spent 1.4 s after sending resumed: one cycle of 2,000 accepted.
    resumed = state.epoch_started
    end = resumed + 1.4
    after = on_rate_limited(
        state, now=end, sent_at=end, retry_after=None, accepted=Accepted(2000, 1.4, 2000)
    )
    # The window's end lies somewhere in the last guessed pause: its middle, on average.
    expected = 2000 / (end - started - state.guessed / 2)
    assert after.good == pytest.approx(expected)
    assert 0.9 * 200 <= after.good <= 1.1 * 200
    assert after.cycle_started == end


@pytest.mark.parametrize(
    ("guessed", "deep"), [(0.0, controller.DEEP_COUNTED), (1.0, controller.DEEP)]
)
def test_a_short_windows_quota_counted_over_its_cycle_lets_the_rate_fall_faster(
    guessed: float, deep: float
) -> None:
    # A 1 s window: its quota of 200 was spent 0.13 s into the last window, the server said to
    # come back at the next one (0.87 s); spent again 0.15 s after sending resumed.
    state = RateState(
        phase=controller.STEADY,
        base=1180.0,
        good=1280.0,
        epoch_started=2.0,
        reacted_at=1.13,
        paused_until=2.0,
        cycle_started=1.13,
        guessed=guessed,  # 1.0: that pause was whole seconds, perhaps rounded up from nothing
    )
    sent_at = 2.14
    sent = rate_at(state, sent_at)
    assert sent is not None
    after = on_rate_limited(
        state, now=2.15, sent_at=sent_at, retry_after=0.85, accepted=Accepted(200, 0.15, 200)
    )
    # Kept away 0.87 s for sure, sent for 0.15 s: a quota spent, its cycle a floor of ~196/s far
    # below the rate refused, so the rate falls as far as it may at once. A pause in whole
    # seconds may be all rounding (a token bucket's 5 ms): no quota is known spent.
    assert after.good == pytest.approx(deep * sent)
    assert after.floor == pytest.approx(200 / 1.02)  # either way, the cycle is a floor


def _slow_start_refused_by_a_bucket(burst: int, rate: float, state: RateState) -> float:
    """When a token bucket of ``burst`` at ``rate``, full after the pause, first refuses the
    slow start's pace (sends 1 ms apart at the pace's rate)."""
    tokens, at, owed = float(burst), state.epoch_started, 0.0
    while True:
        pace = rate_at(state, at)
        assert pace is not None
        owed += pace * 0.001
        tokens = min(float(burst), tokens + rate * 0.001)
        while owed >= 1.0:
            owed -= 1.0
            if tokens < 1.0:
                return at
            tokens -= 1.0
        at += 0.001


@pytest.mark.parametrize("burst", [20, 50])
def test_a_dear_slow_start_429_takes_the_rate_a_bucket_of_the_first_rushs_burst_fits(
    burst: int,
) -> None:
    # After a first rush (burst accepted) and a 1 s pause, the slow start doubles through the
    # bucket's burst and is refused 2.4x (burst 20) to 4x (50) above its 200/s.
    state = RateState(
        phase=controller.SLOW_START, base=30.0, epoch_started=1.0, reacted_at=0.0,
        paused_until=1.0, cycle_started=0.0,
    )  # fmt: skip
    sent_at = _slow_start_refused_by_a_bucket(burst, 200.0, state)
    refused_at = rate_at(state, sent_at)
    assert refused_at is not None
    assert refused_at > 2.2 * 200.0
    accepted = Accepted(tail=burst + 40, tail_seconds=0.6, cycle=burst + 40, burst=burst)
    whole = on_rate_limited(
        state, now=sent_at + 0.01, sent_at=sent_at, retry_after=1.0, accepted=accepted,
        granularity=1.0,
    )  # fmt: skip
    assert whole.good == pytest.approx(200.0, rel=0.1)
    # A cheap pause makes a step down cheap too: the plain estimate, a bounded step down
    cheap = on_rate_limited(
        state, now=sent_at + 0.01, sent_at=sent_at, retry_after=0.01, accepted=accepted
    )
    assert cheap.good >= controller.DEEP_COUNTED * refused_at
    # No rush known (a client limited from its first request): the plain estimate too
    unknown = on_rate_limited(
        state, now=sent_at + 0.01, sent_at=sent_at, retry_after=1.0,
        accepted=Accepted(tail=burst + 40, tail_seconds=0.6, cycle=burst + 40),
    )  # fmt: skip
    assert unknown.good >= controller.DEEP_COUNTED * refused_at


def test_a_slow_start_refused_with_no_lag_keeps_the_plain_estimate() -> None:
    # A concurrency cap refuses the pace the moment it crosses: a bucket fit would read a small
    # burst's lag into it and land far too low, so an overshoot under FIT_LAG is not fitted.
    state = RateState(
        phase=controller.SLOW_START, base=30.0, epoch_started=1.0, reacted_at=0.0,
        paused_until=1.0,
    )  # fmt: skip
    sent_at = 1.0 + 0.1 * math.log2(190.0 / 30.0)  # refused as the pace reaches 190/s
    accepted = Accepted(tail=40, tail_seconds=0.3, cycle=40, burst=4)
    after = on_rate_limited(
        state, now=sent_at + 0.01, sent_at=sent_at, retry_after=1.0, accepted=accepted,
        granularity=1.0,
    )  # fmt: skip
    assert after.good >= controller.DEEP * 190.0 * 0.99


def test_a_small_burst_is_taken_off_the_floor_and_a_windows_quota_is_not() -> None:
    state = RateState(
        phase=controller.STEADY, base=200.0, good=220.0, epoch_started=10.0, plateau=4.0,
        reacted_at=9.0, cycle_started=9.0,
    )  # fmt: skip
    sent_at = 17.0
    # A bucket of 50 at 200/s: 450 accepted over the last 2 s, 200/s of it the rate
    bucket = on_rate_limited(
        state, now=sent_at + 0.01, sent_at=sent_at, retry_after=0.01,
        accepted=Accepted(tail=450, tail_seconds=2.0, cycle=1400, burst=50),
    )  # fmt: skip
    assert bucket.floor == pytest.approx(200.0)
    # A 1 s window's quota of 200 (the first rush took all of it): 400 over 2 s is the rate
    windowed = on_rate_limited(
        state, now=sent_at + 0.01, sent_at=sent_at, retry_after=0.01,
        accepted=Accepted(tail=400, tail_seconds=2.0, cycle=1400, burst=200),
    )  # fmt: skip
    assert windowed.floor == pytest.approx(200.0)


def test_the_first_rushs_accepted_requests_are_counted_as_the_burst() -> None:
    # Sent at once before any 429: 6 accepted (two answered after the first 429), 10 refused.
    seen: list[Accepted] = []

    def spy(state: RateState, **kwargs: object) -> RateState:
        accepted = kwargs["accepted"]
        assert isinstance(accepted, Accepted)
        seen.append(accepted)
        return on_rate_limited(state, **kwargs)  # type: ignore[arg-type]

    async def main() -> None:
        now = [0.0]

        async def sleep(seconds: float) -> None:
            now[0] += seconds

        limiter = AdaptiveLimiter(max_concurrency=16, clock=lambda: now[0], sleep=sleep)
        rush = [await limiter.acquire() for _ in range(16)]
        now[0] = 0.02
        for at in rush[:4]:
            limiter.release()
            limiter.on_success(at)
        for at in rush[6:]:
            limiter.release()
            limiter.on_rate_limited(1.0, at, 1.0)
        for at in rush[4:6]:  # accepted, answered late
            limiter.release()
            limiter.on_success(at)
        paced = await limiter.acquire()  # after the pause, in the slow start
        now[0] += 0.02
        limiter.release()
        limiter.on_rate_limited(1.0, paced, 1.0)

    controller_on_rate_limited = limiter_module.on_rate_limited
    limiter_module.on_rate_limited = spy  # type: ignore[assignment]
    try:
        asyncio.run(main())
    finally:
        limiter_module.on_rate_limited = controller_on_rate_limited
    assert seen[-1].burst == 6


def test_the_keys_rush_is_the_larger_of_redis_sum_and_our_own_and_added_again_after_a_restart() -> (
    None
):
    rush = KeyRush()
    assert (rush.accepted, rush.pending) == (0, 0)  # not known
    rush.add(5)
    assert (rush.accepted, rush.pending) == (5, 5)  # ours, until Redis reports the sum
    rush.reported(5, 12)
    assert (rush.accepted, rush.pending) == (12, 0)
    rush.reported(0, 9)  # an answer to a reservation sent before the other's addition
    assert rush.accepted == 12
    rush.again()  # Redis restarted: the sum is gone there
    assert rush.pending == 5
