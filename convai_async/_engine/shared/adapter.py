"""Issue 12's limiter with its learnt state, its pause and its pacing shared through Redis.

:class:`SharedAdaptiveLimiter` keeps the controller's :class:`RateState` in Redis through the
limiter's own seam (``load_state`` / ``store_state``): a local copy, offered to every process
by compare-and-set on a version (times moved to Redis time), and replaced by a newer one
another process published. It paces through :class:`SharedPacer`, whose slots come from the
GCRA every process shares (the rate is the whole key's). Before any 429 it does not pace, so
Redis is off the common path; it only keeps its link open to hear a pause or a state pushed by
another process. Accepted counts are this process's, scaled by its share of the slots; the first
rush's, which every process counts at its first send after the pause, are summed in Redis (the
processes' rushes overlap: the key's bucket accepted their sum).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping
from typing import Any

import attrs

from ... import _validation as check
from ..._wire.secrets import Secret
from ...defaults import REDIS_URL_ENV
from ..controller import OPEN, Accepted, RateState, rate_at
from ..limiter import AdaptiveLimiter
from .limit import SharedLimit

__all__ = [
    "SharedAdaptiveLimiter",
    "SharedPacer",
    "from_shared",
    "limiter_for",
    "shared_limit",
    "to_shared",
]

_TIMES = ("epoch_started", "reacted_at", "paused_until", "cycle_started")
_ADDED: dict[str, Any] = {"floor": 0.0, "cycle_started": None, "guessed": 0.0}  # since v1


class SharedPacer:
    """A ``Pacer`` whose slots come from the GCRA in Redis (paced locally while it is away)."""

    def __init__(self, shared: SharedLimit) -> None:
        self._shared = shared

    async def try_acquire(self, rate: float, burst: int, now: float) -> float:
        return await self._shared.try_turn(rate, burst, now)


def to_shared(state: RateState, shared: SharedLimit) -> dict[str, Any]:
    """The state as stored in Redis: plain values, its times in Redis time."""
    data = attrs.asdict(state)
    for name in _TIMES:
        if data[name] is not None:
            data[name] = shared.to_shared_time(data[name])
    return data


def from_shared(data: Mapping[str, Any], shared: SharedLimit) -> RateState | None:
    """A state read from Redis, its times on the local clock (None when it is not one)."""
    try:
        # A state stored by an older version lacks the fields added since: their defaults.
        values: dict[str, Any] = {
            field.name: data.get(field.name, _ADDED[field.name])
            if field.name in _ADDED
            else data[field.name]
            for field in attrs.fields(RateState)
        }
        for name in _TIMES:
            if values[name] is not None:
                values[name] = shared.to_local_time(float(values[name]))
        return RateState(**values)
    except (KeyError, TypeError, ValueError):
        return None


class SharedAdaptiveLimiter(AdaptiveLimiter):
    """An :class:`AdaptiveLimiter` sharing through ``shared``; see the module docs."""

    def __init__(self, *, shared: SharedLimit, **options: Any) -> None:
        super().__init__(pacer=SharedPacer(shared), **options)
        self._shared = shared
        self._joining: asyncio.Future[None] | None = None

    def load_state(self) -> RateState:
        shared = self._shared
        incoming = shared.take_newer_state()
        if incoming is not None:
            adopted = from_shared(incoming, shared)
            if adopted is not None:
                super().store_state(adopted)
                if adopted.phase != OPEN and not self._limited:
                    self._meet_the_limit(self._clock())  # another process met it: pace now
        state = super().load_state()
        if shared.paused_until > state.paused_until:  # another process's 429
            state = attrs.evolve(state, paused_until=shared.paused_until)
            super().store_state(state)
        return state

    def store_state(self, state: RateState) -> None:
        shared = self._shared
        before = super().load_state()
        super().store_state(state)
        if state == before:
            return
        now = self._clock()
        if state.paused_until > max(before.paused_until, shared.paused_until, now):
            shared.pause(state.paused_until - now)  # everyone waits, and drops its slots
        shared.publish_state(to_shared(state, shared), rate=rate_at(state, now) or 0.0)

    def _cap_explains(self, pause: float) -> bool:
        # One process's send window is not the key's: the others' requests are at the server
        # too, so its levels (and a cap found from them) neither explain the key's 429s nor lift
        # the key's rate to the window's capacity (which needs a cap that explains). Taken for
        # one, a probe's refusals were swallowed while the shared pace climbed to 1.7x the
        # limit, then came down a pause a step.
        return False

    def _rate_ceiling(self) -> None:
        # Nor does it bound the key's rate: the others send beside it.
        return None

    def _accepted(self, now: float, state: RateState) -> Accepted:
        mine = super()._accepted(now, state)
        share = self._shared.recent_share  # the server accepted every process's requests
        cycle = round(mine.cycle / share)
        if not cycle and share < 1.0:
            # Nothing accepted here is not nothing accepted on the key (others are sending): a
            # cycle must not stretch over their successes into a quota that was never spent.
            cycle = 1
        return Accepted(
            tail=round(mine.tail / share),
            tail_seconds=mine.tail_seconds,
            cycle=cycle,
            # Every process's first rush, summed (what one of them was accepted, scaled by a
            # share measured since, fitted rates far too low).
            burst=self._shared.rush.accepted,
        )

    @property
    def shared(self) -> SharedLimit:
        return self._shared

    @property
    def shared_status(self) -> str:
        return self._shared.status

    @property
    def shared_failures(self) -> int:
        return self._shared.failures

    async def close(self) -> None:
        await self._shared.close()

    async def acquire(self) -> float:
        if not self._limited:
            if self._joining is None:  # the first requests wait for one look at the key
                self._joining = asyncio.ensure_future(self._join())
            if not self._joining.done():
                await asyncio.shield(self._joining)
            self._shared.keep_alive()
            self.load_state()  # a state or a pause another process pushed
            if not self._limited and self.load_state().paused_until > self._clock():
                self._meet_the_limit(self._clock())  # the slow path honours the pause
        sent_at = await super().acquire()
        # Past the pause, the rush's answers are in. Counted now in every process, not at the
        # slow start's 429 (only one process gets it), so the key's sum is known by then.
        if self._limited and self._rush.count(sent_at):
            self._rush_counted()
        return sent_at

    def _rush_counted(self) -> None:
        self._shared.rush.add(self._rush.accepted)

    async def _join(self) -> None:
        """Connect (one attempt, at most ``CONNECT_TIMEOUT``) and read the key's state and
        pause once, so that a process joining a key already paced paces from its first
        request instead of sending its first ``max_concurrency`` at once."""
        if await self._shared.connect():
            await self._shared.drain()


def limiter_for(shared: SharedLimit | None, **options: Any) -> AdaptiveLimiter:
    """The client's limiter: shared through ``shared`` when given, else the local one."""
    if shared is None:
        return AdaptiveLimiter(**options)
    return SharedAdaptiveLimiter(shared=shared, **options)


def shared_limit(
    url: str | None, api_key: Secret, prefix: str, operation_timeout: float
) -> SharedLimit | None:
    """The client's shared limit: at ``url``, else ``$CONVAI_REDIS_URL``, else none (and
    redis-py is never imported)."""
    url = url if url is not None else os.environ.get(REDIS_URL_ENV) or None
    timeout = check.positive("redis_timeout", operation_timeout)
    if url is None:
        return None
    return SharedLimit.from_url(url, api_key.reveal(), prefix=prefix, operation_timeout=timeout)
