"""The gate every attempt passes through: concurrency, pacing, pauses, and patience with 429s.

Per client, four mechanisms:

* **Concurrency**: at most ``max_concurrency`` attempts in flight, ever; of those, at most the
  send window (:mod:`._engine.window`) at the server at once, which closes on a concurrency cap
  when the 429s come only above some level and probes past it one slot at a time. A cap found
  again lifts the learnt rate to what the window lets by, at most ``CAP_LIFT`` x what was
  accepted. Refused again after a guessed pause (no Retry-After), one request goes alone until
  an answer other than a 429 (a closed window is asked once, not by the whole pace).
* **Pacing**: at the rate the controller (:mod:`._engine.controller`) has learnt, and never
  above ``requests_per_second`` when that is configured, through a :class:`Pacer`. What the
  unpaced rush before the first 429 was accepted is counted once, at the slow start's first
  429 (the rush's late answers are in by then), and passed on as ``Accepted.burst``.
* **Pause**: a 429 holds back every new attempt of this client until its ``Retry-After`` has
  passed, however long, sends waiting at the window included: a floor, never shortened. Without
  it, a short quiet period that doubles while 429s persist.
* **Patience**: when every request has been refused with 429 for ``rate_limit_patience``
  seconds (no success since the first 429 of the run of them), waiting and new ``acquire()``
  calls raise :class:`~convai_async.errors.RateLimitPatienceError`. One success resets it.

The seam for sharing (issue 13): all that is learnt is one :class:`~._engine.controller.RateState`
(the pause, ``paused_until``, included) moved on by the controller's pure functions, read and
written through :meth:`AdaptiveLimiter.load_state` and :meth:`AdaptiveLimiter.store_state`
(plain and synchronous here: a subclass keeps a local copy that a background task reconciles
with its store). Pacing is a :class:`Pacer`: ``await pacer.try_acquire(rate, burst, now)``
takes a send slot and returns 0, or returns the seconds until the next free slot (as
redis-cell's ``CL.THROTTLE`` answers). :class:`LocalBucket` is the in-process default.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import time
from collections.abc import Awaitable, Callable
from typing import Protocol

from attrs import evolve

from ..errors import RateLimitPatienceError
from .controller import (
    OPEN,
    SLOW_START,
    STEADY,
    Accepted,
    RateState,
    on_rate_limited,
    on_success,
    rate_at,
)
from .rush import TAIL_SECONDS, FirstRush
from .window import SendWindow

__all__ = ["DEFAULT_RATE_LIMIT_PATIENCE", "AdaptiveLimiter", "LocalBucket", "Pacer"]

DEFAULT_RATE_LIMIT_PATIENCE = 300.0
MAX_PACING_SLEEP = 0.05  # the rate may rise while the head of the line waits: look again
CHEAP_PAUSE = 0.25  # seconds: a 429 pausing less than this may be taken for a cap unconfirmed
CAP_LIFT = 1.3  # a cap lifts the learnt rate to at most this times what was accepted
SUCCESS_LOG_SIZE = 1 << 16
_EPSILON = 1e-9


class Pacer(Protocol):
    async def try_acquire(self, rate: float, burst: int, now: float) -> float:
        """Take a send slot at ``rate`` per second with bursts of ``burst``: 0.0 when taken,
        else the seconds until one is free (nothing taken)."""


class LocalBucket:
    """The in-process pacer: a token bucket of ``burst`` slots refilled at ``rate`` per second.
    Kept as tokens rather than a theoretical arrival time, so that a new rate applies from the
    last send on (a GCRA time computed at the old rate would let the first send after a
    slow-down through early)."""

    __slots__ = ("_last", "_tokens")

    def __init__(self) -> None:
        self._tokens = -1.0  # full on first use
        self._last = 0.0

    async def try_acquire(self, rate: float, burst: int, now: float) -> float:
        if self._tokens < 0.0:
            self._tokens, self._last = float(burst), now
        tokens = min(float(burst), self._tokens + (now - self._last) * rate)
        self._last = now
        if tokens >= 1.0 - _EPSILON:  # float time: a wait below a clock tick never passes
            self._tokens = max(0.0, tokens - 1.0)
            return 0.0
        self._tokens = tokens
        return (1.0 - tokens) / rate


class AdaptiveLimiter:
    def __init__(
        self,
        *,
        max_concurrency: int,
        requests_per_second: float | None = None,
        burst: int = 1,
        rate_limit_patience: float = DEFAULT_RATE_LIMIT_PATIENCE,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
        pacer: Pacer | None = None,
    ) -> None:
        self._clock = clock
        self._sleep = sleep
        self._pacer: Pacer = LocalBucket() if pacer is None else pacer
        self._max_concurrency = max_concurrency
        self._window = SendWindow(max_concurrency)
        self._window_epoch = 0.0  # 429s to sends before this are the cap already reacted to
        self._in_flight = 0  # slots taken, pacing included
        self._sending = 0  # past the pacing: at the server
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._send_waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._configured_rate = requests_per_second
        self._burst = burst
        self._patience = rate_limit_patience
        self._pacing = asyncio.Lock()
        self._state = RateState()
        self._limited = False  # a 429 was ever seen: the slow path from now on
        self._first_send: float | None = None
        self._successes: collections.deque[float] = collections.deque(maxlen=SUCCESS_LOG_SIZE)
        self._cycle_successes = 0
        self._refused_since: float | None = None  # first 429 with no success since
        self._scouting = False  # refused again after a guessed pause: one send goes first
        self._rush = FirstRush()  # counted at the slow start's first 429

    # -- the learnt state (the seam a shared limiter overrides) ---------------------------------

    def load_state(self) -> RateState:
        return self._state

    def store_state(self, state: RateState) -> None:
        self._state = state

    # -- state for stats ------------------------------------------------------------------------

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @property
    def effective_concurrency(self) -> int:
        return self._window.limit

    @property
    def effective_rate(self) -> float | None:
        """Requests per second currently allowed (None: not limited)."""
        configured = self._configured_rate
        if not self._limited:
            return configured
        rate = rate_at(self.load_state(), self._clock())
        capacity = self._window.capacity  # a concurrency cap found: what the window lets by
        if capacity is not None:
            rate = capacity if rate is None else min(rate, capacity)
        if rate is None:
            return configured
        return rate if configured is None else min(rate, configured)

    @property
    def phase(self) -> str:
        return self.load_state().phase

    @property
    def paused_for(self) -> float:
        if not self._limited:
            return 0.0
        return max(0.0, self.load_state().paused_until - self._clock())

    # -- sharing (issue 13): what a shared limiter reports, and the connection it closes -------

    @property
    def shared_status(self) -> str:
        return "off"

    @property
    def shared_failures(self) -> int:
        return 0

    async def close(self) -> None:
        """Release what the limiter holds outside this process (nothing, here)."""

    # -- acquire / release ----------------------------------------------------------------------

    async def acquire(self) -> float:
        """Wait for a slot, the pacing and any pause; returns the send time to hand back to
        :meth:`on_rate_limited`. Raises RateLimitPatienceError once patience has run out."""
        if self._waiters or self._in_flight >= self._max_concurrency:
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled():
                    self._in_flight -= 1  # the slot was granted as we were cancelled: give it
                    self._wake()  # back (it never reached the send window: _sending stands)
                raise
        else:
            self._in_flight += 1
        bounced = False
        while True:
            if bounced or self._limited or self._configured_rate is not None:
                try:
                    await self._pace()
                except BaseException:
                    self._in_flight -= 1
                    self._wake()
                    raise
            if not self._send_waiters and self._sending < self._send_limit:
                self._sending += 1
                break
            await self._wait_for_window()
            if self._clock() >= self.load_state().paused_until:
                break
            self._sending -= 1  # a pause began while it waited: its Retry-After first
            self._wake()
            bounced = True
        sent_at = self._clock()
        self._window.sent(sent_at, self._sending)
        if self._first_send is None:
            self._first_send = sent_at
        return sent_at

    async def _wait_for_window(self) -> None:
        waiter = asyncio.get_running_loop().create_future()
        self._send_waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self._sending -= 1  # the send was granted as we were cancelled: give it back
            self._in_flight -= 1
            self._wake()
            raise

    def release(self) -> None:
        self._in_flight -= 1
        self._sending -= 1
        self._wake()

    @property
    def _send_limit(self) -> int:
        return 1 if self._scouting else self._window.limit

    def _wake(self) -> None:
        limit = self._send_limit
        while self._send_waiters and self._sending < limit:
            waiter = self._send_waiters.popleft()
            if not waiter.done():
                self._sending += 1
                waiter.set_result(None)
        while self._waiters and self._in_flight < self._max_concurrency:
            waiter = self._waiters.popleft()
            if not waiter.done():
                self._in_flight += 1
                waiter.set_result(None)

    async def _pace(self) -> None:
        async with self._pacing:  # FIFO: only the head of the line polls the pacer
            while True:
                now = self._clock()
                self._check_patience(now)
                paused_until = self.load_state().paused_until
                if now < paused_until:
                    await self._sleep(self._until_pause_ends(now, paused_until))
                    continue
                rate = self.effective_rate
                if rate is None:
                    return
                wait = await self._pacer.try_acquire(rate, self._burst, now)
                if wait <= 0.0:
                    return
                await self._sleep(min(wait, MAX_PACING_SLEEP))

    def _until_pause_ends(self, now: float, paused_until: float) -> float:
        if self._refused_since is not None:
            paused_until = min(paused_until, self._refused_since + self._patience)
        return max(paused_until - now, 0.0)

    def _check_patience(self, now: float) -> None:
        since = self._refused_since
        if since is not None and now - since >= self._patience:
            raise RateLimitPatienceError(now - since)

    # -- feedback -------------------------------------------------------------------------------

    def on_success(self, sent_at: float | None = None) -> None:
        """A success; ``sent_at`` (from :meth:`acquire`) lets the send window learn from it."""
        now = self._clock()
        self._successes.append(now)
        self._cycle_successes += 1
        if sent_at is not None:
            self._rush.succeeded(sent_at)
        if self._refused_since is not None:
            self._refused_since = None
            self._scouting = False
            self.store_state(on_success(self.load_state()))
            self._wake()
        if sent_at is not None and self._window.succeeded(sent_at, now, self._sending):
            self._wake()

    def on_other_answer(self) -> None:
        """An answer other than a 429 the rate learns from, or none: the rest need not wait."""
        if self._scouting:
            self._scouting = False
            self._wake()

    def _meet_the_limit(self, at: float) -> None:
        """The limit is met (this client's 429 to a request sent ``at``, or a process sharing
        the key met it by then): paced from now on, and the unpaced rush is over."""
        self._limited = True
        self._rush.end(at)

    def _rush_counted(self) -> None:
        """The first rush is counted (a shared limiter adds it to the key's)."""

    def on_rate_limited(
        self, retry_after: float | None, sent_at: float, granularity: float = 0.0
    ) -> None:
        """A 429 to the request sent at ``sent_at``; ``granularity``: 1.0 when its Retry-After
        has whole seconds (an integer or an HTTP date: it may be rounded up by up to 1 s)."""
        now = self._clock()
        state = self.load_state()
        if self._refused_since is None:
            self._refused_since = now
        elif retry_after is None and sent_at >= self._refused_since:
            # Sent after a 429 the client guessed a pause for, and refused with nothing
            # accepted since (a window's quota not back): one request finds out before the rest.
            self._scouting = True
        if not self._limited:
            self._meet_the_limit(sent_at)
            state = RateState(epoch_started=self._first_send or sent_at)
        pause = state.quiet if retry_after is None else retry_after
        counted = sent_at >= max(state.epoch_started, self._window_epoch)
        if self._window.refused(sent_at, now, pause, counted=counted):
            # A concurrency cap: the window has closed on it. Found again where it was, the
            # rate has nothing to learn from it (the pause still holds everyone back).
            self._window_epoch = now
            if self._cap_explains(pause) and state.phase != OPEN:
                # A cap confirmed, or suspected when a mistake costs little (a rate limit's next
                # 429 says so): the rate has nothing to learn from it. Only a confirmed cap lifts
                # it to what the window lets by (one found once may be a bucket's first rush).
                paused_until = max(state.paused_until, now + pause)
                capacity = self._window.capacity  # what the window lets by
                if capacity is not None:  # a rate limit taken for a cap must not soar
                    capacity = min(capacity, CAP_LIFT * self._accepted_rate(now))
                lift = state.phase == STEADY and self._window.confirmed
                if lift and capacity is not None and capacity > state.good:
                    state = evolve(state, good=capacity, base=capacity)
                self.store_state(evolve(state, paused_until=paused_until))
                return
        elif sent_at < self._window_epoch:  # the cap reacted to, seen late: only its pause
            if retry_after is not None and now + pause > state.paused_until:
                self.store_state(evolve(state, paused_until=now + pause))
            return
        counted = sent_at >= state.epoch_started
        if counted and state.phase == SLOW_START and self._rush.count(sent_at):
            self._rush_counted()  # its answers are all in now
        accepted = self._accepted(now, state) if counted else Accepted(0, 0.0, 0)
        new = on_rate_limited(
            state,
            now=now,
            sent_at=sent_at,
            retry_after=retry_after,
            accepted=accepted,
            granularity=granularity,
            ceiling=self._rate_ceiling(),
        )
        self.store_state(new)
        if counted:
            self._cycle_successes = 0

    def _cap_explains(self, pause: float) -> bool:
        """Whether the cap the send window has just found explains a 429 that pauses for
        ``pause``: confirmed, or found once when a mistake costs little."""
        return self._window.confirmed or pause < CHEAP_PAUSE

    def _rate_ceiling(self) -> float | None:
        """The most this client can have sent at per second: what its send window lets by."""
        return self._window.capacity

    def _accepted_rate(self, now: float) -> float:
        """Successes per second over the last ``TAIL_SECONDS`` (epochs ignored)."""
        return self._successes_since(now - TAIL_SECONDS) / TAIL_SECONDS

    def _successes_since(self, start: float) -> int:
        recent = itertools.takewhile(lambda at: at >= start, reversed(self._successes))
        return sum(1 for _ in recent)

    def _accepted(self, now: float, state: RateState) -> Accepted:
        start = max(now - TAIL_SECONDS, state.epoch_started)
        return Accepted(
            tail=self._successes_since(start),
            tail_seconds=max(0.0, now - start),
            cycle=self._cycle_successes,
            burst=self._rush.accepted,
        )
