"""The gate every attempt passes through: concurrency, pacing, and reaction to 429.

Three mechanisms, all per client:

* **Concurrency**: at most ``max_concurrency`` attempts in flight, ever. The effective limit is
  AIMD-controlled: multiplied by ``BACKOFF_FACTOR`` on a 429, grown by one slot per window of
  successes (TCP's congestion avoidance) back up to ``max_concurrency``.
* **Pacing**: a GCRA token bucket. Its rate is ``requests_per_second`` when configured, and after
  the first 429 also an adaptive rate: on a 429 it drops to ``BACKOFF_FACTOR`` times the rate the
  server just accepted (measured), and on success it climbs back linearly, regaining the rate it
  had before the drop in about ``RECOVERY_SECONDS``, then probing past it at the same slope.
* **Pause**: a 429 with ``Retry-After`` holds back every new attempt of this client until then
  (capped by ``max_retry_after``), not just the one that was refused.

A 429 only cuts once per "epoch": answers to requests sent before the last cut are the same
overload seen late, and do not cut again (as TCP reacts once per window).
"""

from __future__ import annotations

import asyncio
import collections
import math
import time
from collections.abc import Callable

__all__ = ["AdaptiveLimiter"]

BACKOFF_FACTOR = 0.7
RECOVERY_SECONDS = 8.0
MIN_RATE = 0.5
METER_SECONDS = 1.0
_METER_SLOTS = 10


class _RateMeter:
    """Events per second over the last ``METER_SECONDS``, in fixed slots (O(1) per event)."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._slot_seconds = METER_SECONDS / _METER_SLOTS
        self._counts = [0] * _METER_SLOTS
        self._current = 0
        self._started = clock()

    def _advance(self, now: float) -> None:
        slot = int(now / self._slot_seconds)
        gap = slot - self._current
        if gap <= 0:
            return
        for step in range(1, min(gap, _METER_SLOTS) + 1):
            self._counts[(self._current + step) % _METER_SLOTS] = 0
        self._current = slot

    def add(self) -> None:
        now = self._clock()
        self._advance(now)
        self._counts[self._current % _METER_SLOTS] += 1

    def rate(self) -> float:
        now = self._clock()
        self._advance(now)
        span = min(METER_SECONDS, max(now - self._started, self._slot_seconds))
        return sum(self._counts) / span


class AdaptiveLimiter:
    def __init__(
        self,
        *,
        max_concurrency: int,
        requests_per_second: float | None,
        burst: int,
        max_retry_after: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._clock = clock
        self._max_concurrency = max_concurrency
        self._limit = float(max_concurrency)
        self._in_flight = 0
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._configured_rate = requests_per_second
        self._adaptive_rate: float | None = None
        self._rate_before_cut = 0.0
        self._burst = burst
        self._tat = 0.0  # GCRA theoretical arrival time
        self._paused_until = 0.0
        self._max_retry_after = max_retry_after
        self._epoch = 0
        self._last_growth = clock()
        self._accepted = _RateMeter(clock)

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
        rates = [r for r in (self._configured_rate, self._adaptive_rate) if r is not None]
        return min(rates) if rates else None

    @property
    def paused_for(self) -> float:
        return max(0.0, self._paused_until - self._clock())

    # -- acquire / release ----------------------------------------------------------------------

    async def acquire(self) -> int:
        """Wait for a slot and the pacing; returns the epoch to hand back to on_rate_limited."""
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
        return self._epoch

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
        while True:
            now = self._clock()
            if now < self._paused_until:
                await asyncio.sleep(self._paused_until - now)
                continue
            rate = self.effective_rate
            if rate is None:
                return
            interval = 1.0 / rate
            start = max(self._tat, now)
            send_at = start - (self._burst - 1) * interval
            self._tat = start + interval
            if send_at <= now:
                return
            await asyncio.sleep(send_at - now)
            if self._clock() >= self._paused_until:
                return

    # -- feedback -------------------------------------------------------------------------------

    def on_success(self) -> None:
        self._accepted.add()
        if self._limit < self._max_concurrency:
            self._limit = min(float(self._max_concurrency), self._limit + 1.0 / self._limit)
            self._wake()
        if self._adaptive_rate is not None:
            now = self._clock()
            if now > self._last_growth:  # no growth while paused
                slope = self._rate_before_cut * (1 - BACKOFF_FACTOR) / RECOVERY_SECONDS
                self._adaptive_rate += slope * (now - self._last_growth)
                self._last_growth = now

    def on_rate_limited(self, retry_after: float | None, epoch: int) -> None:
        now = self._clock()
        if retry_after is not None:
            wait = min(retry_after, self._max_retry_after)
            self._paused_until = max(self._paused_until, now + wait)
        if epoch != self._epoch:
            return
        self._epoch += 1
        self._limit = max(1.0, self._limit * BACKOFF_FACTOR)
        accepted = self._accepted.rate()
        current = self.effective_rate
        if current is not None and math.isfinite(current):
            accepted = min(accepted, current) if accepted > 0 else current
        self._rate_before_cut = max(accepted, MIN_RATE)
        self._adaptive_rate = max(MIN_RATE, accepted * BACKOFF_FACTOR)
        self._last_growth = max(now, self._paused_until)
