"""What the rate controller has learnt, and the pure functions that move it on.

No I/O, no clock, no asyncio: every function takes the time it is told and returns a new
:class:`RateState`, so the state can live anywhere. The local limiter keeps one in memory; a
shared limiter (issue 13) can keep it in Redis and apply the same transitions there.

The controller does not model the server. Its signals hold for every limiter that counts
requests (token bucket, GCRA, fixed or sliding window): pacing steadily above the limit ends in
a 429, so **a rate refused is an upper bound**; and a rate the server **accepted** for a second
or more, or over a whole cycle with its pause, is a lower bound (a floor). Each 429 narrows
the gap between the two.

* ``open``: no 429 yet, no pacing.
* ``slow start``: after the first 429, from a safe low rate (what was accepted per second,
  counting the pause), doubling every ``SLOW_START_DOUBLING`` seconds until the next 429. A
  429 with Retry-After before the slow start has sent ``MIN_SENDS`` is the first burst's debt
  still being paid, not a rate: the slow start begins again after the pause.
* ``steady``: after a paced 429, the new last good rate ``good`` lies between the rate refused (an
  upper bound: pacing steadily above any counting limiter's rate ends in a 429) and the best
  **floor** known (a lower bound): what was accepted per second over the last ``HOLD`` seconds or
  more (less the first rush's burst when small: a bucket lets it through on top), what the whole
  last cycle was accepted at with its pause (a refilled bucket or a fresh window cannot give more
  than the pause refilled), or the previous floor (at most ``BACKOFF`` x the rate refused). It is
  their geometric middle, at most ``CEILING`` and at least ``DEEP`` times the rate refused, so a
  far overshoot (a slow start through a fresh window's quota) is undone in a few 429s and a near
  one costs a few percent. When the slow start's 429 pauses for a ``DEAR_PAUSE`` or more (each step
  down would cost as much), ``good`` is instead what a token bucket holding the first rush's burst
  would have to refill at to refuse the slow start's pace just then (``_fitted_rate``), when that
  says the pace overshot more than ``FIT_LAG`` times: a bucket's burst, spent while the pace
  doubles, lets it climb 1.6x (burst 5) to 4x (burst 50) past the limit before the first refusal,
  which a 0.8x descent takes up to six pauses to undo. A misfit (a window, a cap) costs a plateau's
  ramp at worst; the probes correct it. Pacing restarts at ``BACKOFF`` x ``good`` and climbs back
  towards ``good`` along a CUBIC curve, levelling off after ``plateau`` seconds; past that it
  probes beyond ``good``, slowly at first and then fast (a freed limit is found in seconds). A 429
  that confirms the same limit doubles the plateau (up to ``MAX_PLATEAU``), so a known limit is
  probed ever more rarely, and the plateau is never shorter than ``PROBE_COST`` times the pause a
  probe's 429 costs (a whole-second Retry-After makes probing dear). A slow start refused when
  nothing was accepted since it resumed (a window's quota not back yet) has tried no rate: the
  rate it is taken for is a guess, probed beyond at once (no plateau). A 429 when nothing was
  accepted since sending resumed (the quota is not back yet) teaches nothing about the rate: the
  last good rate stands, unconfirmed (the next probe keeps its time), and the cycle goes on. A
  ``ceiling`` (a send window closed on a cap) bounds the rate a 429 is taken for: the pace's
  curve may have climbed past what the window let by.
* **a quota counted**: when the server surely kept the client away (its pauses and refused
  probes, less what the last pause may have overshot: all of a guessed one, a second of one in
  whole seconds, which may be rounding) longer than it then let it send, a window's quota was
  spent, and the cycle's share (accepted over the whole cycle, pauses in) measures the rate.
  Kept away ``LONG_PAUSE`` or more (a long window), that share is the rate, exact: its plateau is
  ``MAX_PLATEAU`` at once. Kept away less (a short window), it is a floor, and the rate may fall
  by ``DEEP_COUNTED`` at once instead of ``DEEP``.

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
    "next_plateau",
    "on_rate_limited",
    "on_success",
    "rate_at",
]

OPEN, SLOW_START, STEADY = "open", "slow start", "steady"
BACKOFF = 0.92  # restart at this fraction of the last good rate
CEILING = 0.97  # of a rate refused
PROBE_COST = 4.0  # seconds of plateau per second of pause a probe may cost
DEEP = 0.8  # a 429 lowers the rate by at most this factor at once
HOLD = 1.0  # seconds a rate is held without a 429 to count as a floor
SLOW_START_DOUBLING = 0.1  # seconds
MIN_SLOW_START = 4.0  # requests per second
MIN_PLATEAU = 2.0  # seconds from a 429 until the rate is back at the last good rate
MAX_PLATEAU = 16.0
PROBE_CUBE = 0.05  # beyond the plateau: good * (1 + PROBE_CUBE * seconds**3)
SAME_LIMIT = 0.06  # a new estimate within this fraction of the last confirms it
QUIET_SECONDS = 0.15  # the pause after a 429 without Retry-After; doubles while they persist
MAX_QUIET_SECONDS = 2.0
MIN_RATE = 0.5
MIN_SENDS = 4.0  # a 429 before the pace has sent this many since the pause says nothing of it
COUNTED_PAUSE = 0.5  # kept away surely this long, and longer than it sent: a quota was spent
LONG_PAUSE = 2.0  # kept away this long: a long window's quota, its share of the cycle exact
DEEP_COUNTED = 0.65  # a 429 after a counted quota lowers the rate by at most this at once
MAX_RATE = 1e6
DEAR_PAUSE = 0.9  # seconds: a slow start's 429 pausing this long takes the burst-fitted rate
FIT_LAG = 2.0  # the fitted rate is used when the pace refused was more than this times it
FIT_STEPS = 200  # of the slow start's pace, integrated
FIT_ROUNDS = 30  # of bisection


@frozen
class Accepted:
    """What the server accepted, measured by the limiter at a 429: ``tail`` successes over the
    last ``tail_seconds`` of sending, ``cycle`` successes since the previous reaction, and
    ``burst`` requests accepted in the unpaced rush before the client's first 429 (a bucket's
    burst or a window's quota; 0: not known)."""

    tail: int
    tail_seconds: float
    cycle: int
    burst: int = 0


@frozen
class RateState:
    """The learnt state. ``base`` is the rate when the epoch began, ``good`` the last good rate
    (0: none yet), ``floor`` the best rate known to be under the limit (0: none); a cycle
    (``cycle_started``) runs from a 429 to the next one after something was accepted, so a run
    of 429s with nothing accepted between them is one cycle; ``guessed`` is the last pause when
    no Retry-After gave it (the quota came back somewhere within it). Times are on the clock the
    caller passes."""

    phase: str = OPEN
    base: float = 0.0
    good: float = 0.0
    epoch_started: float = 0.0
    reacted_at: float | None = None
    paused_until: float = 0.0
    plateau: float = MIN_PLATEAU
    quiet: float = QUIET_SECONDS
    floor: float = 0.0
    cycle_started: float | None = None
    guessed: float = 0.0


def rate_at(state: RateState, now: float) -> float | None:
    """The pacing rate at ``now`` in requests per second; None while no limit is known."""
    if state.phase == OPEN:
        return None
    elapsed = max(0.0, now - state.epoch_started)
    if state.phase == SLOW_START:
        return min(MAX_RATE, state.base * float(2.0 ** min(elapsed / SLOW_START_DOUBLING, 60.0)))
    good, plateau = state.good, state.plateau
    if elapsed < plateau:  # concave: fast at first, levelling off at good
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
    granularity: float = 0.0,
    ceiling: float | None = None,
) -> RateState:
    """The state after a 429 to a request sent at ``sent_at``, answered at ``now``.
    ``granularity``: the Retry-After's resolution (1.0 for whole seconds and HTTP dates, which
    may be rounded up by up to that much; 0.0 when it has a fraction). ``ceiling``: the most
    the client could send at just then (a send window closed on a cap lets no more by), when
    the pace's curve may have climbed past it unsent."""
    if sent_at < state.epoch_started:
        # The same overload seen late; a longer Retry-After still holds everyone back.
        if retry_after is None or now + retry_after <= state.paused_until:
            return state
        guessed = min(retry_after, granularity)  # the last pause is now this one
        return evolve(state, paused_until=now + retry_after, guessed=guessed)
    pause = state.quiet if retry_after is None else retry_after
    paused_until = max(state.paused_until, now + pause)
    quiet = state.quiet
    if retry_after is None:
        quiet = min(MAX_QUIET_SECONDS, quiet * 2.0)
    since = now - state.cycle_started if state.cycle_started is not None else None
    sending = now - state.epoch_started
    cycle_rate = accepted.cycle / max(since if since is not None else sending, 1.0)
    sent_rate = rate_at(state, sent_at)
    if sent_rate is not None and ceiling is not None:
        sent_rate = min(sent_rate, ceiling)
    phase, good, plateau = state.phase, state.good, state.plateau
    counted_window = False  # the estimate is a whole window's quota over the window
    unlearnt = False  # the 429 said nothing of the rate: the last good one stands, unconfirmed
    floor = state.floor
    # Nothing accepted since the last 429: the same cycle goes on.
    cycle_started = now if accepted.cycle or state.cycle_started is None else state.cycle_started
    guessed = pause if retry_after is None else min(pause, granularity)
    # How long the server surely kept the client away this cycle: its pauses and the probes it
    # refused, less what a guessed or rounded-up last pause may have overshot.
    certain = since - sending - state.guessed if since is not None else 0.0
    counted = 0.0  # a window's quota over its cycle (accepted over the whole cycle, pauses in)
    if accepted.tail and since is not None and certain >= COUNTED_PAUSE and sending < certain:
        # A guessed pause overshot the window's end by half of it, on average.
        counted = accepted.cycle / max(since - state.guessed / 2, HOLD)
    if counted and certain >= LONG_PAUSE:
        # The server's pause dwarfs the sending (a long window's quota): its share is the rate.
        estimate: float | None = counted
        counted_window = True
    elif sent_rate is not None and (
        accepted.tail == 0
        if state.phase == STEADY
        else retry_after is not None and sent_rate * (sent_at - state.epoch_started) < MIN_SENDS
    ):
        # Nothing accepted since sending resumed, or a slow start refused before it had sent a
        # few: the server's quota has not come back yet (a window not yet over, a burst's
        # debt). Nothing learnt about the rate: keep the last good one, or the slow start.
        if state.phase == SLOW_START:
            return evolve(
                state, epoch_started=paused_until, reacted_at=now, paused_until=paused_until,
                quiet=quiet, cycle_started=cycle_started, guessed=guessed,
            )  # fmt: skip
        estimate, unlearnt = good, True
    elif sent_rate is None:
        estimate = None  # unpaced: what was accepted says more about bursts than rates
    else:
        held = max(cycle_rate if since and since >= HOLD else 0.0, counted)
        floor = _floor(state, accepted, sent_rate, held)
        # A short window's quota counted over its cycle is a floor worth falling towards faster.
        deep = DEEP_COUNTED if counted else DEEP
        estimate = min(CEILING * sent_rate, max(deep * sent_rate, math.sqrt(floor * sent_rate)))
        if state.phase == SLOW_START and pause >= DEAR_PAUSE:
            fitted = _fitted_rate(state, sent_at, accepted.burst)
            if fitted is not None:
                estimate = min(CEILING * sent_rate, max(floor, fitted))
    if estimate is None:
        # Nothing to go on yet: slow start from a safe low rate.
        phase = SLOW_START
        base = max(MIN_SLOW_START, cycle_rate)
    else:
        same = good > 0 and abs(estimate - good) <= SAME_LIMIT * good
        if not unlearnt:  # a 429 that taught nothing confirms nothing: the probes keep their time
            plateau = next_plateau(plateau, same=same, pause=pause)
        if state.phase == SLOW_START and accepted.tail == 0:
            # Refused before anything was accepted since it resumed (the quota had not come
            # back): the rate it is taken for is untried, a guess. Probe beyond it at once.
            plateau = 0.0
        if counted_window:
            # A whole window's quota counted over the window: exact, and a probe beyond it
            # would only spend the next window's quota early. Probe rarely.
            plateau = MAX_PLATEAU
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
        floor=floor,
        cycle_started=cycle_started,
        guessed=guessed,
    )


def next_plateau(plateau: float, *, same: bool, pause: float) -> float:
    """The wait before the next probe: doubled when a 429 confirmed the same limit (up to
    ``MAX_PLATEAU``), else ``MIN_PLATEAU``; never shorter than ``PROBE_COST`` times the pause a
    probe's 429 costs. The send window's probes for a concurrency cap wait the same way."""
    plateau = min(MAX_PLATEAU, max(MIN_PLATEAU, plateau * 2.0)) if same else MIN_PLATEAU
    return max(plateau, min(MAX_PLATEAU, PROBE_COST * pause))


def _fitted_rate(state: RateState, refused_at: float, burst: int) -> float | None:
    """The rate a token bucket holding ``burst`` must refill at to refuse the slow start's pace
    first at ``refused_at`` (full at the start, as far as the pause before refilled it), or None
    when that says little: no burst known, a slow start that sent no more than the burst (the
    quota had not come back), or an overshoot under ``FIT_LAG`` (a concurrency cap, which
    refuses with no lag, reads the same; the plain estimate is as good there)."""
    span = refused_at - state.epoch_started
    if burst <= 0 or span <= 0.0:
        return None
    refused = state.base * 2.0 ** (span / SLOW_START_DOUBLING)
    sent = (refused - state.base) * SLOW_START_DOUBLING / math.log(2.0)
    if sent <= burst:
        return None
    pause = state.epoch_started - (state.reacted_at if state.reacted_at is not None else 0.0)
    step = span / FIT_STEPS
    paced = [
        state.base * 2.0 ** ((index + 0.5) * step / SLOW_START_DOUBLING) * step
        for index in range(FIT_STEPS)
    ]

    def spent_before(rate: float) -> bool:  # the bucket ran dry before refused_at
        tokens = min(float(burst), rate * pause)
        refill = rate * step
        for sends in paced:
            tokens = min(float(burst), tokens + refill - sends)
            if tokens < 0.0:
                return True
        return False

    low, high = MIN_RATE, refused
    for _ in range(FIT_ROUNDS):
        middle = (low + high) / 2.0
        if spent_before(middle):
            low = middle
        else:
            high = middle
    return high if FIT_LAG * high < refused else None


def _floor(state: RateState, accepted: Accepted, refused_at: float, cycle_rate: float) -> float:
    """The best rate known to be under the limit, after a 429 at ``refused_at``: what was
    accepted per second over the last ``HOLD`` seconds or more of sending, less a small burst
    (all of it, before
    this first 429 of the epoch: sent, not merely allowed), what the last whole cycle (pause
    included) was accepted at, or the previous floor (at most ``BACKOFF`` x ``refused_at``)."""
    # A bucket lets its burst through on top of its rate: a small burst is taken off what the
    # tail was accepted (a window's quota, as large as the tail, is not a burst on top).
    burst = accepted.burst if 2 * accepted.burst < accepted.tail else 0
    held = (accepted.tail - burst) / accepted.tail_seconds if accepted.tail_seconds >= HOLD else 0.0
    # A floor refused at was a little high (or the room shrank): it still bounds the fall.
    candidates = [held, cycle_rate, min(state.floor, BACKOFF * refused_at)]
    return min(max(candidates), CEILING * refused_at)


def on_success(state: RateState) -> RateState:
    """A success ends a run of 429s: the quiet pause starts short again."""
    if state.quiet == QUIET_SECONDS:
        return state
    return evolve(state, quiet=QUIET_SECONDS)
