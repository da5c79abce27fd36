"""What the rate controller has learnt, and the pure functions that move it on.

No I/O, no clock, no asyncio: every function takes the time it is told and returns a new
:class:`RateState`, so the state can live anywhere. The local limiter keeps one in memory; a
shared limiter (issue 13) can keep it in Redis and apply the same transitions there.

The controller does not model the server. Its signal is the **accepted rate**: how many
requests the server accepted per second over the recent past. Under overload every limiter
that counts requests (token bucket, GCRA, fixed or sliding window) accepts its limit and refuses
the rest, so the accepted rate at the moment of a 429 is the limit, whatever the algorithm.

* ``open``: no 429 yet, no pacing.
* ``slow start``: after the first 429, from a safe low rate (what was accepted per second,
  counting the pause), doubling every ``SLOW_START_DOUBLING`` seconds until the next 429.
* ``steady``: after a 429 the last good rate ``good`` is the accepted rate: over the last
  ``TAIL_SECONDS`` of sending; over the whole cycle when the server's pause dwarfed the sending (a
  10 s window's quota); and after a short epoch (a refilled burst, a window's fresh quota), between
  the accepted count over the sending and over sending plus pause. A slow start's 429 takes
  ``SLOW_START_SHARE`` of the rate it was refused at. Pacing restarts at ``BACKOFF`` x ``good`` and
  climbs back towards ``good`` along a CUBIC curve, levelling off after ``plateau`` seconds; past
  that it probes beyond ``good``, slowly at first and then fast (a freed limit is found in
  seconds). A 429 that confirms the same limit doubles the plateau (up to ``MAX_PLATEAU``), so a
  known limit is probed ever more rarely; a different limit starts again from ``MIN_PLATEAU``.

A 429 counts once per epoch (an epoch begins when sending resumes after a reaction): refusals
of requests sent earlier are the same overload seen late.

Sharing (issue 13): a shared limiter keeps one ``RateState`` per API key where all processes
see it (its fields are plain floats and a phase name), applies ``on_rate_limited`` and
``on_success`` atomically to it (read, transform, compare-and-set), and reads ``rate_at(state,
now)`` for its pacing, with ``now`` on a clock all processes share (the store's own time).
``Accepted`` is each process's own measurement of what it was accepted; summing the processes'
counts gives the shared limiter's (each process passing its own is a fair approximation).
"""

from __future__ import annotations

import math

from attrs import evolve, frozen

__all__ = [
    "OPEN",
    "SLOW_START",
    "STEADY",
    "Accepted",
    "RateState",
    "on_rate_limited",
    "on_success",
    "rate_at",
]

OPEN, SLOW_START, STEADY = "open", "slow start", "steady"
BACKOFF = 0.92  # restart at this fraction of the last good rate
SHRINK = 0.85  # refused under the last good rate, too soon to measure
SLOW_START_DOUBLING = 0.1  # seconds
SLOW_START_SHARE = 0.8  # of the rate a slow start was refused at
MIN_SLOW_START = 4.0  # requests per second
MIN_PLATEAU = 2.0  # seconds from a 429 until the rate is back at the last good rate
MAX_PLATEAU = 16.0
PROBE_CUBE = 0.05  # beyond the plateau: good * (1 + PROBE_CUBE * seconds**3)
SAME_LIMIT = 0.06  # a new estimate within this fraction of the last confirms it
QUIET_SECONDS = 0.15  # the pause after a 429 without Retry-After; doubles while they persist
MAX_QUIET_SECONDS = 2.0
TAIL_SECONDS = 2.0  # the accepted rate is measured over this much sending before a 429
MIN_TAIL_SECONDS = 0.5  # shorter than this, the tail says more about bursts than rates
MIN_RATE = 0.5
LONG_PAUSE = 2.0  # a pause this long is a window's quota spent, not a burst
MAX_RATE = 1e6


@frozen
class Accepted:
    """What the server accepted, measured by the limiter at a 429: ``tail`` successes over the
    last ``tail_seconds`` of sending, ``cycle`` successes since the previous reaction."""

    tail: int
    tail_seconds: float
    cycle: int


@frozen
class RateState:
    """The learnt state. ``base`` is the rate when the epoch began, ``good`` the last good rate
    (0: none yet); times are on the clock the caller passes."""

    phase: str = OPEN
    base: float = 0.0
    good: float = 0.0
    epoch_started: float = 0.0
    reacted_at: float | None = None
    paused_until: float = 0.0
    plateau: float = MIN_PLATEAU
    quiet: float = QUIET_SECONDS


def rate_at(state: RateState, now: float) -> float | None:
    """The pacing rate at ``now`` in requests per second; None while no limit is known."""
    if state.phase == OPEN:
        return None
    elapsed = max(0.0, now - state.epoch_started)
    if state.phase == SLOW_START:
        return min(MAX_RATE, state.base * float(2.0 ** min(elapsed / SLOW_START_DOUBLING, 60.0)))
    good, plateau = state.good, state.plateau
    if elapsed <= plateau:  # concave: fast at first, levelling off at good
        return good - (good - state.base) * (1.0 - elapsed / plateau) ** 3
    beyond = elapsed - plateau  # convex: probe gently, then fast
    return min(MAX_RATE, good * (1.0 + PROBE_CUBE * beyond**3))


def on_rate_limited(
    state: RateState,
    *,
    now: float,
    sent_at: float,
    retry_after: float | None,
    accepted: Accepted,
) -> RateState:
    """The state after a 429 to a request sent at ``sent_at``, answered at ``now``."""
    if sent_at < state.epoch_started:
        # The same overload seen late; a longer Retry-After still holds everyone back.
        if retry_after is None:
            return state
        return evolve(state, paused_until=max(state.paused_until, now + retry_after))
    pause = state.quiet if retry_after is None else retry_after
    paused_until = max(state.paused_until, now + pause)
    quiet = state.quiet
    if retry_after is None:
        quiet = min(MAX_QUIET_SECONDS, quiet * 2.0)
    since = now - state.reacted_at if state.reacted_at is not None else None
    sending = now - state.epoch_started
    cycle_rate = accepted.cycle / max(since if since is not None else sending, 1.0)
    tail_rate = (
        accepted.tail / accepted.tail_seconds if accepted.tail_seconds >= MIN_TAIL_SECONDS else None
    )
    sent_rate = rate_at(state, sent_at)
    phase, good, plateau = state.phase, state.good, state.plateau
    if since is not None and since - sending >= LONG_PAUSE and sending < since / 2:
        # The server's pause dwarfs the sending (a long window's quota): its share is the rate.
        estimate: float | None = cycle_rate
    elif sent_rate is None:
        estimate = None  # unpaced: what was accepted says more about bursts than rates
    elif state.phase == SLOW_START:
        estimate = SLOW_START_SHARE * sent_rate  # between the doubling before and this one
    elif sent_rate >= good:
        # Probing beyond the last good rate found the limit: what was accepted, when there was
        # enough sending to tell (a burst the server allowed lets the probe overshoot).
        estimate = sent_rate if tail_rate is None else min(sent_rate, tail_rate)
    else:
        # Refused under the last good rate: less room now (another tenant), or the last
        # estimate was high. What was accepted is the room left; without enough sending to
        # tell, a multiplicative decrease.
        if tail_rate is not None:
            estimate = min(sent_rate, tail_rate)
        else:
            # A short epoch: the server accepted ``tail`` in ``tail_seconds`` of sending after
            # ``paused`` seconds of pause. The limit lies between that count over the sending
            # (a refilled burst makes it high) and over sending and pause (low); take the
            # geometric middle, but shrink by at least SHRINK.
            paused = max(0.0, (since or 0.0) - sending)
            low = accepted.tail / max(accepted.tail_seconds + paused, 1e-3)
            high = accepted.tail / max(accepted.tail_seconds, 1e-3)
            estimate = max(low, min(SHRINK * sent_rate, math.sqrt(low * high)))
    if estimate is None:
        # Nothing to go on yet: slow start from a safe low rate.
        phase = SLOW_START
        base = max(MIN_SLOW_START, cycle_rate)
    else:
        same = good > 0 and abs(estimate - good) <= SAME_LIMIT * good
        plateau = min(MAX_PLATEAU, plateau * 2.0) if same else MIN_PLATEAU
        phase, good = STEADY, max(MIN_RATE, estimate)
        base = max(MIN_RATE, BACKOFF * good)
    return RateState(
        phase=phase,
        base=base,
        good=good,
        epoch_started=paused_until,
        reacted_at=now,
        paused_until=paused_until,
        plateau=plateau,
        quiet=quiet,
    )


def on_success(state: RateState) -> RateState:
    """A success ends a run of 429s: the quiet pause starts short again."""
    if state.quiet == QUIET_SECONDS:
        return state
    return evolve(state, quiet=QUIET_SECONDS)
