"""The gate every attempt passes through: concurrency, pacing, and reaction to 429.

Three mechanisms, all per client:

* **Concurrency**: at most ``max_concurrency`` attempts in flight, ever. The effective limit is
  AIMD-controlled: multiplied by ``BACKOFF_FACTOR`` on a 429, grown by one slot per window of
  successes (TCP's congestion avoidance) back up to ``max_concurrency``.
* **Pacing**: a GCRA token bucket. Its rate is ``requests_per_second`` when configured, and, once
  the server has answered 429, also an adaptive rate found by modelling the server as a token
  bucket with a rate R and a burst B, fitted to this client's own send times:

  1. first 429: the sends in the ``BURST_WINDOW`` before the refused one estimate B (an
     unthrottled client empties the server's bucket almost at once); pacing restarts at B per
     second in *slow start*, doubling every ``SLOW_START_DOUBLING`` seconds;
  2. next 429: a full bucket of burst B, fed this epoch's send times, accepts every send before
     the refused one and refuses that one for a range of rates; R is the middle of that range
     (its edges found by bisection). Pacing holds at ``TARGET_FRACTION`` x R (*steady*);
  3. steady: the rate probes upward by ``PROBE_PER_SECOND`` of itself per second, and after
     ``PROBE_PLATEAU`` seconds without a 429 doubles every ``PROBE_DOUBLING`` seconds (so an
     underestimate, or a raised server limit, is found); each further 429 fits R again. When
     the log cannot be fitted, the rate is halved and slow start begins again.

  A slow start that meets no 429 grows exponentially, so a single stray 429 costs seconds, not
  a lasting cap.
* **Pause**: a 429 with ``Retry-After`` holds back every new attempt of this client until then
  (capped by ``max_retry_after``), not just the one that was refused. A 429 without it holds
  them back for ``QUIET_SECONDS``.

A 429 only counts once per epoch: answers to requests sent before the epoch began are the same
overload seen late (as TCP reacts once per window).
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from .shared import SharedLimit

__all__ = ["AdaptiveLimiter"]

BACKOFF_FACTOR = 0.7
SLOW_START_DOUBLING = 0.15
TARGET_FRACTION = 0.97
PROBE_PER_SECOND = 0.002
PROBE_PLATEAU = 30.0
PROBE_DOUBLING = 10.0
APP_LIMITED_FACTOR = 4.0
QUIET_SECONDS = 0.15
BURST_WINDOW = 0.25
MIN_RATE = 0.5
MIN_ESTIMATE_SECONDS = 0.1
MAX_PACING_SLEEP = 0.05
SEND_LOG_SIZE = 50_000
_BISECTION_STEPS = 40
_SEND_RATE_SAMPLES = 16
_OPEN, _SLOW_START, _STEADY = "open", "slow start", "steady"
_PHASES = {phase: phase for phase in (_OPEN, _SLOW_START, _STEADY)}


class AdaptiveLimiter:
    def __init__(
        self,
        *,
        max_concurrency: int,
        requests_per_second: float | None,
        burst: int,
        max_retry_after: float,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        shared: SharedLimit | None = None,
    ) -> None:
        self._clock = clock
        self._sleep = sleep
        self._shared = shared  # pacing, pause and the model shared through Redis
        self._max_concurrency = max_concurrency
        self._limit = float(max_concurrency)
        self._in_flight = 0
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._configured_rate = requests_per_second
        self._burst = burst
        self._tat = 0.0  # GCRA theoretical arrival time
        self._pacing = asyncio.Lock()
        self._paused_until = 0.0
        self._max_retry_after = max_retry_after
        # the model of the server's bucket
        self._phase = _OPEN
        self._epoch_rate = 0.0  # rate at the start of the epoch
        self._epoch_started = clock()
        self._server_burst = 1
        self._sends: collections.deque[float] = collections.deque(maxlen=SEND_LOG_SIZE)

    # -- state for stats ------------------------------------------------------------------------

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @property
    def effective_concurrency(self) -> int:
        return max(1, int(self._limit))

    @property
    def effective_rate(self) -> float | None:
        """Requests per second currently allowed (None: not limited)."""
        rate = self._adaptive_rate_now()
        configured = self._configured_rate
        if rate is None:
            return configured
        return rate if configured is None else min(rate, configured)

    def _adaptive_rate_now(self) -> float | None:
        if self._phase is _OPEN:
            return None
        now = self._clock()
        active = now - self._epoch_started
        if active <= 0:
            return self._epoch_rate
        if self._phase is _SLOW_START:
            growth = 2.0 ** min(active / SLOW_START_DOUBLING, 30.0)
        else:
            plateau_over = max(0.0, active - PROBE_PLATEAU)
            growth = (1.0 + PROBE_PER_SECOND * active) * 2.0 ** min(
                plateau_over / PROBE_DOUBLING, 30.0
            )
        grown = float(self._epoch_rate * growth)
        if growth <= APP_LIMITED_FACTOR:
            return grown
        # Application-limited: do not grow far past what is actually being sent, measured
        # over the last few sends of this epoch (so it decays when the client is idle).
        count, oldest = 0, now
        for at in reversed(self._sends):
            if at < self._epoch_started or count == _SEND_RATE_SAMPLES:
                break
            count, oldest = count + 1, at
        sending = count / max(now - oldest, SLOW_START_DOUBLING)
        if self._shared is not None:
            sending /= self._shared.recent_share  # what every process sends, not only us
        return float(min(grown, APP_LIMITED_FACTOR * max(self._epoch_rate, sending)))

    @property
    def phase(self) -> str:
        return self._phase

    @property
    def paused_for(self) -> float:
        until = self._paused_until
        if self._shared is not None:
            until = max(until, self._shared.paused_until)
        return max(0.0, until - self._clock())

    # -- acquire / release ----------------------------------------------------------------------

    async def acquire(self) -> float:
        """Wait for a slot and the pacing; returns the send time to hand to on_rate_limited."""
        if self._waiters or self._in_flight >= self.effective_concurrency:
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled():
                    self.release()  # the slot was granted as we were cancelled: give it back
                raise
        else:
            self._in_flight += 1
        try:
            await self._pace()
        except BaseException:
            self.release()
            raise
        sent_at = self._clock()
        self._sends.append(sent_at)
        return sent_at

    def release(self) -> None:
        self._in_flight -= 1
        self._wake()

    def _wake(self) -> None:
        limit = self.effective_concurrency
        while self._waiters and self._in_flight < limit:
            waiter = self._waiters.popleft()
            if not waiter.done():
                self._in_flight += 1
                waiter.set_result(None)

    async def _pace(self) -> None:
        if self._shared is not None:
            await self._pace_shared(self._shared)
            return
        if self._paused_until == 0.0 and self.effective_rate is None:
            return  # the common case, unlimited and never paused: no lock
        async with self._pacing:  # FIFO: only the head of the line holds a reservation
            while True:
                now = self._clock()
                if now < self._paused_until:
                    await self._sleep(self._paused_until - now)
                    continue
                rate = self.effective_rate
                if rate is None:
                    return
                interval = 1.0 / rate
                send_at = self._tat - (self._burst - 1) * interval
                if send_at <= now:
                    self._tat = max(self._tat, now) + interval
                    return
                # The rate may rise while we sleep (slow start): wake soon and look again.
                await self._sleep(min(send_at - now, MAX_PACING_SLEEP))

    async def _pace_shared(self, shared: SharedLimit) -> None:
        async with self._pacing:
            self._adopt(shared.take_newer_state())
            # our own pauses are given to ``shared`` too, which honours them with everyone's
            await shared.wait_turn(self.effective_rate, self._burst)

    def _adopt(self, state: Mapping[str, Any] | None) -> None:
        """Take the model another process published (its epoch, on our clock)."""
        if state is None or self._shared is None:
            return
        try:
            phase = _PHASES[state["phase"]]
            rate, started = float(state["rate"]), float(state["started"])
            burst = int(state["burst"])
        except (KeyError, TypeError, ValueError):
            return
        self._phase, self._epoch_rate, self._server_burst = phase, rate, max(1, burst)
        self._epoch_started = self._shared.to_local_time(started)

    def _published_state(self, shared: SharedLimit) -> dict[str, Any]:
        return {
            "phase": self._phase,
            "rate": self._epoch_rate,
            "started": shared.to_shared_time(self._epoch_started),
            "burst": self._server_burst,
        }

    # -- feedback -------------------------------------------------------------------------------

    def on_success(self) -> None:
        if self._limit < self._max_concurrency:
            self._limit = min(float(self._max_concurrency), self._limit + 1.0 / self._limit)
            self._wake()

    def on_rate_limited(self, retry_after: float | None, sent_at: float) -> None:
        now = self._clock()
        if sent_at < self._epoch_started:
            # Sent before this epoch began: the overload already reacted to. Still honour a
            # longer Retry-After.
            if retry_after is not None:
                seconds = self._pause(now, retry_after)
                if self._shared is not None:
                    self._shared.pause(seconds)
            return
        # Without Retry-After, a short quiet period lets the server's bucket refill, so the
        # next epoch starts from the full bucket the model assumes.
        pause = self._pause(now, QUIET_SECONDS if retry_after is None else retry_after)
        self._limit = max(1.0, self._limit * BACKOFF_FACTOR)
        if self._shared is None:
            sends = [t for t in self._sends if self._epoch_started <= t <= sent_at]
        else:  # the server's bucket saw every process's sends
            sends = self._shared.everyones_sends(self._epoch_started, sent_at)
        fitted = None
        if self._phase is _OPEN:
            recent = sum(1 for t in sends if t > sent_at - BURST_WINDOW)
            self._server_burst = max(1, recent - 1)
            rate = self._server_burst / max(pause, 1.0)
        else:
            fitted = _fit_rate(sends, self._server_burst)
            rate = (self.effective_rate or MIN_RATE) / 2 if fitted is None else fitted
        # Only a fitted rate is held; otherwise slow start finds the rate again.
        self._phase = _SLOW_START if fitted is None else _STEADY
        target = rate if fitted is None else rate * TARGET_FRACTION
        self._epoch_rate = max(MIN_RATE, target)
        self._epoch_started = max(now, self._paused_until)
        self._sends.clear()
        if self._shared is not None:
            self._shared.pause(pause)
            self._shared.publish_state(self._published_state(self._shared))

    def _pause(self, now: float, seconds: float) -> float:
        self._paused_until = max(self._paused_until, now + seconds)
        return seconds


def _first_refusal(sends: list[float], rate: float, burst: int) -> int:
    """Index of the first send a full token bucket (rate, burst) would refuse (len: none)."""
    tokens = float(burst)
    last = sends[0]
    for index, at in enumerate(sends):
        tokens = min(float(burst), tokens + (at - last) * rate)
        last = at
        if tokens < 1.0:
            return index
        tokens -= 1.0
    return len(sends)


def _fit_rate(sends: list[float], burst: int) -> float | None:
    """The server rate that explains ``sends``: a full bucket of ``burst`` accepts every send
    but the last, which the server refused. Rates in [low, high] all do; the midpoint is
    returned. None when the log cannot say (too short, or no rate explains it)."""
    if len(sends) <= burst or sends[-1] - sends[0] < MIN_ESTIMATE_SECONDS:
        return None
    last = len(sends) - 1
    gaps = [b - a for a, b in itertools.pairwise(sends) if b > a]
    ceiling = 2.0 / min(gaps) if gaps else MIN_RATE
    if (
        _first_refusal(sends, ceiling, burst) < last
        or _first_refusal(sends, MIN_RATE, burst) > last
    ):
        return None

    def edge(refused_by_last: bool) -> float:
        # largest rate refusing at or before ``last`` (or: smallest accepting all before it)
        low, high = MIN_RATE, ceiling
        for _ in range(_BISECTION_STEPS):
            middle = (low + high) / 2
            refusal = _first_refusal(sends, middle, burst)
            if (refusal <= last) if refused_by_last else (refusal < last):
                low = middle
            else:
                high = middle
        return low if refused_by_last else high

    return (edge(refused_by_last=False) + edge(refused_by_last=True)) / 2
