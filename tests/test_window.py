"""The send window: a concurrency cap told from a rate limit by the levels refused, pure."""

from __future__ import annotations

import asyncio

import pytest

from convai_async._engine import limiter as limiter_module
from convai_async._engine import window
from convai_async._engine.controller import STEADY, RateState
from convai_async._engine.limiter import AdaptiveLimiter
from convai_async._engine.window import SendWindow

LATENCY = 0.02


def answer(win: SendWindow, at: float, level: int, *, ok: bool, counted: bool = False) -> bool:
    """One request sent at ``at`` with ``level`` at the server, answered LATENCY later."""
    win.sent(at, level)
    if ok:
        win.succeeded(at, at + LATENCY, sending=level - 1)
        return False
    return win.refused(at, at + LATENCY, 0.05, counted=counted)


def burst(win: SendWindow, at: float, cap: int, sent: int) -> None:
    """``sent`` requests at once against a server that takes ``cap`` of them at a time."""
    for level in range(1, sent + 1):
        answer(win, at + level * 1e-4, level, ok=level <= cap)


async def round_of(
    limiter: AdaptiveLimiter, now: list[float], count: int, pause: float | None = None
) -> None:
    """``count`` sends 1 ms apart: the first 3 accepted, the rest refused (above them)."""
    sent = []
    for _ in range(count):
        sent.append(await limiter.acquire())
        now[0] += 0.001
    for index, at in enumerate(sent):
        limiter.release()
        if index < 3:
            limiter.on_success(at)
        else:
            limiter.on_rate_limited(pause, at)


def test_refusals_only_above_a_level_close_the_window_there() -> None:
    win = SendWindow(32)
    burst(win, 0.0, cap=4, sent=32)
    assert not win.capped
    assert answer(win, 1.0, 9, ok=False, counted=True)
    assert (win.limit, win.capped, win.confirmed) == (4, True, False)
    assert win.capacity == pytest.approx(4 / LATENCY)
    burst(win, 2.0, cap=4, sent=12)
    assert answer(win, 3.0, 5, ok=False, counted=True)
    assert (win.limit, win.confirmed) == (4, True)  # found again where it was


def test_refusals_at_every_level_are_a_rate_limit() -> None:
    win = SendWindow(32)
    for second in range(5):
        for level in range(1, 9):
            answer(win, second + level * 0.01, level, ok=level % 3 != 0)
    assert not answer(win, 9.0, 3, ok=False, counted=True)
    assert not win.capped
    assert win.capacity is None


def test_a_late_refusal_is_evidence_but_no_reaction() -> None:
    win = SendWindow(32)
    burst(win, 0.0, cap=4, sent=32)
    assert not answer(win, 1.0, 9, ok=False, counted=False)
    assert not win.capped


def test_after_its_plateau_the_window_probes_one_slot_per_window_of_successes() -> None:
    win = SendWindow(8)
    burst(win, 0.0, cap=3, sent=8)
    assert answer(win, 0.5, 6, ok=False, counted=True)
    assert win.limit == 3
    held_until = 0.5 + LATENCY + 0.05 + window.FIRST_HOLD  # a new cap: held briefly
    win.sent(held_until - 0.1, 3)
    win.succeeded(held_until - 0.1, held_until - 0.05, sending=2)
    assert win.limit == 3  # still holding
    at = held_until + 0.1
    for _ in range(4):  # +1/size a success: about one slot per window of successes
        win.sent(at, win.limit)
        win.succeeded(at, at + LATENCY, sending=win.limit - 1)  # full: room is wanted
        at += 0.001
    assert win.limit == 4


def test_levels_sent_at_the_same_instant_are_all_kept() -> None:
    win = SendWindow(8)
    for level in (1, 2, 3):
        win.sent(0.0, level)
    win.succeeded(0.0, 0.02, sending=2)
    win.succeeded(0.0, 0.02, sending=1)
    assert not win.refused(0.0, 0.02, 0.05, counted=False)
    assert sum(win._ok) == 2
    assert sum(win._refused) == 1


def test_the_limiter_holds_sends_beyond_the_window_until_one_returns() -> None:
    async def main() -> list[str]:
        now = [0.0]

        async def sleep(seconds: float) -> None:  # an injected clock: waits pass at once
            now[0] += seconds

        limiter = AdaptiveLimiter(max_concurrency=8, clock=lambda: now[0], sleep=sleep)
        events: list[str] = []

        await round_of(
            limiter, now, 8
        )  # the first 429 is counted before there is evidence: a rate, at first
        assert limiter.effective_concurrency == 8
        await round_of(limiter, now, 8)
        assert limiter.effective_concurrency == 8  # not yet MIN_EVIDENCE refusals above 3
        await round_of(limiter, now, 8)  # evidence enough now: refused only above level 3
        assert limiter.effective_concurrency == 3
        held = [await limiter.acquire() for _ in range(3)]
        fourth = asyncio.ensure_future(limiter.acquire())
        await asyncio.sleep(0)
        events.append("fourth waits" if not fourth.done() else "fourth sent")
        limiter.release()
        limiter.on_success(held[0])
        await fourth
        events.append("fourth sent")
        return events

    assert asyncio.run(main()) == ["fourth waits", "fourth sent"]


def test_a_slot_granted_to_a_cancelled_caller_goes_back_without_touching_the_sends() -> None:
    async def main() -> tuple[int, int]:
        limiter = AdaptiveLimiter(max_concurrency=1)
        await limiter.acquire()
        second = asyncio.ensure_future(limiter.acquire())
        await asyncio.sleep(0)  # queued for the only slot
        limiter.release()  # grants it the slot...
        second.cancel()  # ...as it is cancelled
        with pytest.raises(asyncio.CancelledError):
            await second
        return limiter.in_flight, limiter._sending

    assert asyncio.run(main()) == (0, 0)


@pytest.mark.parametrize(("pause", "rate_reacts"), [(0.05, False), (1.0, True)])
def test_a_cap_found_once_spares_the_rate_only_when_its_pause_is_cheap(
    pause: float, rate_reacts: bool
) -> None:
    # Taking a rate limit for a cap costs its next 429's pause: worth risking when that is short.
    async def main() -> tuple[float | None, float | None]:
        now = [0.0]

        async def sleep(seconds: float) -> None:
            now[0] += seconds

        limiter = AdaptiveLimiter(max_concurrency=8, clock=lambda: now[0], sleep=sleep)

        await round_of(limiter, now, 8, pause)
        await round_of(limiter, now, 8, pause)
        before = limiter.load_state().reacted_at
        await round_of(limiter, now, 8, pause)  # the cap is found, for the first time
        assert limiter.effective_concurrency == 3
        return before, limiter.load_state().reacted_at

    before, after = asyncio.run(main())
    assert (after != before) is rate_reacts


def test_a_new_cap_is_held_briefly_and_never_longer_than_the_longest_plateau() -> None:
    win = SendWindow(8)
    burst(win, 0.0, cap=3, sent=8)
    win.sent(0.5, 6)
    assert win.refused(0.5, 0.52, 30.0, counted=True)  # a 30 s Retry-After
    win.sent(0.52 + 30.0 + window.MAX_PLATEAU + 0.1, 3)  # held until then at most
    for at in (0.52 + 30.0 + window.MAX_PLATEAU + 0.1 + step * 0.001 for step in range(4)):
        win.sent(at, win.limit)
        win.succeeded(at, at + LATENCY, sending=win.limit - 1)
    assert win.limit == 4  # the hold is over: probing again


def test_a_refusal_far_under_a_cap_found_before_is_a_rate_limit() -> None:
    # A first rush found a "cap" at 18; later, paced at ~2 in flight, a probe is refused: the
    # rush's refusals above 18 linger as evidence, but no cap at 18 refuses a request at 2.
    win = SendWindow(32)
    burst(win, 0.0, cap=18, sent=32)
    assert answer(win, 0.5, 20, ok=False, counted=True)
    assert win.limit == 18
    for step in range(400):
        answer(win, 1.0 + step * 0.01, 1 + step % 2, ok=True)
    assert not answer(win, 6.0, 2, ok=False, counted=True)


def test_a_cap_found_again_lifts_the_learnt_rate_no_further_than_a_little_above_what_was_accepted() -> (
    None
):
    # Paced at 100/s, a cap of 3 is found (with a cheap pause): found once, it may be a rate
    # limit's refusals read as a cap (a bucket's first rush), so the rate stays. Found again,
    # the pace must not bind under the cap, but must not soar either.
    async def main() -> tuple[float, float, float]:
        now = [0.0]

        async def sleep(seconds: float) -> None:
            now[0] += seconds

        # Bursts of 8 let each round out at once: its latency is the cap's, not the pace's
        limiter = AdaptiveLimiter(max_concurrency=8, burst=8, clock=lambda: now[0], sleep=sleep)
        first = await limiter.acquire()
        limiter.release()
        limiter.on_rate_limited(0.01, first)
        limiter.store_state(
            RateState(phase=STEADY, base=100.0, good=100.0, epoch_started=now[0], plateau=16.0)
        )
        for _ in range(300):  # 3 s accepted at 100/s, answered in 10 ms
            at = await limiter.acquire()
            now[0] += 0.01
            limiter.release()
            limiter.on_success(at)
        for _ in range(3):  # rounds until the cap is found (its evidence builds up)
            before = limiter.load_state().good
            await round_of(limiter, now, 8, 0.01)
            now[0] += 0.2  # the pacer's burst refills
            if limiter.effective_concurrency < 8:
                break
        assert limiter.effective_concurrency == 3  # the cap found, at ~3 per 10 ms
        found_once = limiter.load_state().good
        while limiter.effective_concurrency == 3:  # held, then a slot more per window of oks
            sent = [await limiter.acquire() for _ in range(3)]
            now[0] += 0.01
            for at in sent:
                limiter.release()
                limiter.on_success(at)
        sent = [await limiter.acquire() for _ in range(4)]  # the fourth is refused again
        now[0] += 0.01
        for at in sent[:3]:
            limiter.release()
            limiter.on_success(at)
        limiter.release()
        limiter.on_rate_limited(0.01, sent[3])
        assert limiter.effective_concurrency == 3
        return before, found_once, limiter.load_state().good

    before, found_once, after = asyncio.run(main())
    assert found_once == before
    assert before < after <= limiter_module.CAP_LIFT * 100.0 * 1.05


def steady(win: SendWindow, start: float, levels: list[int]) -> None:
    """Paced sends at these levels, all accepted, one every 5 ms."""
    for index, level in enumerate(levels):
        answer(win, start + index * 0.005, level, ok=True)


def test_refusals_at_a_level_few_recent_sends_reach_close_the_window_under_it() -> None:
    # Jitter blurs a cap of 4: most sends the client counts at 5 are at 4 at the server and
    # are accepted, so no level splits the answers into clean and mostly refused. But only 2%
    # of the recent sends reached 5, and a rate limit's refusals would fall where sends go.
    win = SendWindow(32)
    steady(win, 0.0, [2, 3, 4, 3] * 60 + [5] * 4)
    assert not answer(win, 2.0, 5, ok=False, counted=True)  # once: a rate limit's, perhaps
    assert not win.capped
    steady(win, 2.1, [3, 4] * 10)
    assert answer(win, 3.0, 5, ok=False, counted=True)  # twice there, never under it: a cap
    assert (win.limit, win.capped, win.confirmed) == (4, True, False)


def test_refusals_at_the_levels_a_rate_probe_lifted_the_sends_to_are_no_cap() -> None:
    # A rate probe raises the pace, and with it the levels: its refusals land at levels the
    # long run rarely saw, but that the recent sends reach often.
    win = SendWindow(32)
    steady(win, 0.0, [2, 3, 4, 3] * 60)
    steady(win, 1.5, [5, 6, 7] * 40)
    assert not answer(win, 2.5, 7, ok=False, counted=True)
    assert not answer(win, 2.6, 7, ok=False, counted=True)
    assert not win.capped


def test_a_rare_level_refused_under_clean_levels_needs_a_full_set_of_recent_answers() -> None:
    win = SendWindow(32)
    steady(win, 0.0, [2, 3] * (window.RECENT // 4))  # half a set
    assert not answer(win, 1.0, 5, ok=False, counted=True)
    assert not answer(win, 1.1, 5, ok=False, counted=True)
    assert not win.capped


def test_a_refusal_under_a_cap_found_before_is_a_rate_limit_even_above_half_of_it() -> None:
    # A token bucket's first rush accepts its burst and refuses above it, which reads as a cap
    # at 9; paced at ~5 in flight, its next refusal at 5 is the bucket's rate, not that cap
    # confirmed (it left the rate untouched, over the limit, and cost a whole-second pause).
    win = SendWindow(32)
    burst(win, 0.0, cap=9, sent=32)
    assert answer(win, 0.5, 12, ok=False, counted=True)
    assert win.limit == 9
    steady(win, 1.0, [3, 4, 5, 4] * 100)
    assert not answer(win, 4.0, 5, ok=False, counted=True)
    assert not win.confirmed


def test_a_refusal_beyond_a_known_cap_finds_it_higher_when_the_levels_on_the_way_were_accepted() -> (
    None
):
    # The first rush read a cap of 3; the window probed to 4 and everything sent there was
    # accepted; a refusal at 5 is the cap at 4, not 3 found again (held at 3, the window let
    # 3/latency by, 25% under a cap of 4, for the rest of the run).
    win = SendWindow(32)
    burst(win, 0.0, cap=3, sent=16)
    assert answer(win, 0.5, 6, ok=False, counted=True)
    assert win.limit == 3
    steady(win, 1.0, [3, 4] * 100 + [5] * 6)  # jitter: some the client counts at 5 got through
    assert answer(win, 3.0, 5, ok=False, counted=True)
    assert (win.limit, win.confirmed) == (4, False)
