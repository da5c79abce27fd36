"""``SharedLimit``: one API key's pacing, pause and learnt rate, shared through Redis.

Every process using a key reserves its send slots from one GCRA in Redis (a few slots per round
trip, so most requests do not wait on Redis), honours a pause any of them set after a 429, and
adopts the controller state any of them published (pauses and states are also pushed over
pub/sub, so held slots are dropped at once). The in-flight cap and the retry budget stay per
process (they are the limiter's and the client's).

It fails open (see ``link.py``): while Redis is refused, gone or slow, turns are paced locally
at the last shared rate divided by the number of live processes. Redis never fails a call.
"""

from __future__ import annotations

import asyncio
import collections
import json
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from ...errors import ValidationError
from ..rush import KeyRush
from .keys import DEFAULT_PREFIX, SharedKeys, shared_keys
from .link import DEFAULT_OPERATION_TIMEOUT, RedisLink
from .scripts import PAUSE, PUBLISH, RESERVE, read_event, read_published, read_reservation

__all__ = ["DEFAULT_BATCH", "SharedLimit"]

DEFAULT_BATCH = 4  # most slots reserved per round trip
BATCH_SECONDS = 0.02  # ...and at most this much of the shared rate
HEARTBEAT_TTL = 5.0  # a process that reserved nothing for this long no longer counts as live
STATE_TTL = 86_400.0  # a learnt rate outlives its processes by a day
SLOT_LEASE = 0.5  # a slot unused this long is dropped
PREFETCH_AT = 1  # reserve the next slots in the background when this few are left
HELLO_EVERY = 1.0  # while not pacing: say we are live (and read the clock) this often
_MICROS = 1_000_000


class SharedLimit:
    """The Redis side of a limiter; see the module docs. Make it with ``from_url``."""

    def __init__(
        self,
        redis: Any,
        keys: SharedKeys,
        *,
        errors: tuple[type[BaseException], ...],
        operation_timeout: float = DEFAULT_OPERATION_TIMEOUT,
        batch: int = DEFAULT_BATCH,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._keys = keys
        self._batch = batch
        self._clock = clock
        self._id = uuid.uuid4().hex
        self._link = RedisLink(
            redis,
            errors=errors,
            scripts=(RESERVE, PAUSE, PUBLISH),
            channel=keys.events,
            on_event=self._on_event,
            on_outage=self._on_outage,
            on_connected=self._on_connected,
            name=self._id[:8],
            operation_timeout=operation_timeout,
            clock=clock,
        )
        self._reserve = redis.register_script(RESERVE)
        self._pause = redis.register_script(PAUSE)
        self._publish = redis.register_script(PUBLISH)
        self.rush = KeyRush()  # RESERVE adds this process's and reports the key's
        self._slots: collections.deque[float] = collections.deque()
        self._slot_interval = 0.0  # the interval the held slots were booked at (0: unpaced)
        self._paused_until = 0.0  # local clock
        self._offset = 0.0  # Redis time minus local clock
        self._offset_known = False
        self._best_rtt = float("inf")
        self._version = 0
        self._state: Mapping[str, Any] | None = None  # the newest state we know (ours or adopted)
        self._state_rate = 0.0  # its rate when ours (0: unknown)
        self._incoming: Mapping[str, Any] | None = None  # adopted, not yet taken by the limiter
        self._live = 1
        self._own_granted = 0
        self._recent_share = 1.0
        self._shares: collections.deque[tuple[float, int, int]] = collections.deque(maxlen=512)
        self._local_tat = 0.0
        self._refilling: asyncio.Task[None] | None = None
        # what to publish, the newest only (a burst of 429s must not become a burst of writes)
        self._pause_to_send = 0.0  # local time
        self._state_to_send: tuple[int, bool, Mapping[str, Any], float] | None = None
        self._publishing: asyncio.Task[None] | None = None
        self._last_hello = -HELLO_EVERY
        self.round_trips = 0
        self.round_trip_seconds = 0.0

    @classmethod
    def from_url(
        cls,
        url: str,
        api_key: str,
        *,
        prefix: str = DEFAULT_PREFIX,
        operation_timeout: float = DEFAULT_OPERATION_TIMEOUT,
        batch: int = DEFAULT_BATCH,
    ) -> SharedLimit:
        """Checks the URL and prefix and makes the Redis client (it connects on first use)."""
        if not isinstance(prefix, str) or not prefix or any(c.isspace() for c in prefix):
            raise ValidationError("redis_prefix", "must be a non-empty string without spaces")
        client, error = RedisLink.client_from_url(url, operation_timeout)
        keys, timeout = shared_keys(api_key, prefix), operation_timeout
        return cls(client, keys, errors=(error,), operation_timeout=timeout, batch=batch)

    # -- what the limiter and stats read --------------------------------------------------------

    @property
    def status(self) -> str:
        """``"shared"`` while Redis answers, ``"local fallback"`` while it does not, and
        ``"connecting"`` before it first answered (turns are local meanwhile)."""
        return self._link.status

    @property
    def failures(self) -> int:
        """Redis operations that failed or timed out (each one failed open)."""
        return self._link.failures

    @property
    def link(self) -> RedisLink:
        """The connection; its counters: ``failures``, ``timeouts`` and ``late`` answers."""
        return self._link

    @property
    def live_processes(self) -> int:
        return self._live

    @property
    def paused_until(self) -> float:
        """The shared pause as last seen, on the local clock."""
        return self._paused_until

    def to_shared_time(self, local: float) -> float:
        return local + self._offset

    def to_local_time(self, shared: float) -> float:
        return shared - self._offset

    @property
    def recent_share(self) -> float:
        """This process's fraction of the slots granted over its last 64 reservations."""
        return self._recent_share

    def _share_over(self, first: tuple[float, int, int]) -> float:
        samples = self._shares
        own = samples[-1][1] - first[1]
        total = samples[-1][2] - first[2]
        return 1.0 if own <= 0 or total <= 0 else min(1.0, own / total)

    # -- pacing ---------------------------------------------------------------------------------

    async def try_turn(self, rate: float | None, burst: int, now: float) -> float:
        """Take a send slot, after the shared pause, from the shared GCRA at ``rate`` per second
        (all processes together; None: not paced): 0.0 when taken, else the seconds until one
        may be (nothing taken). One caller at a time (the limiter's lock). The shape of a
        ``Pacer`` (issue 12's limiter), so it plugs in as one."""
        if self._paused_until > now:
            return self._paused_until - now
        if rate and self._slot_interval and abs(rate * self._slot_interval - 1.0) > 0.01:
            self._rebook(now, 1.0 / rate)  # as Redis rebooks the key's slots at the new rate
        for _ in range(3):  # what we hold, else a reservation (after one in flight), again
            while self._slots and self._slots[0] < now - SLOT_LEASE:
                self._slots.popleft()
            if self._slots:
                if self._slots[0] > now:
                    return self._slots[0] - now
                self._slots.popleft()
                if len(self._slots) <= PREFETCH_AT and self._link.ready:
                    self._start_refill(rate, burst)  # the next slots arrive before they are due
                return 0.0
            link = self._link
            if not link.ready and not link.fallback and self.round_trips == 0:
                await link.connect()  # the first turn waits for one connection attempt
            if not link.ready:
                link.ensure_connecting()
                return self._local_turn(rate, burst, now)
            task = self._start_refill(rate, burst)
            if task is not None:
                await asyncio.shield(task)
            now = self._clock()
            if self._paused_until > now:
                return self._paused_until - now
        return self._local_turn(rate, burst, now)

    def keep_alive(self) -> None:
        """While this process does not pace (no 429 seen): connect, and now and then reserve
        nothing, which counts it live and reads Redis's clock, pause and state."""
        link = self._link
        if not link.ready:
            if not link.fallback:
                link.ensure_connecting()
            return
        now = self._clock()
        busy = self._refilling is not None and not self._refilling.done()
        if now - self._last_hello >= HELLO_EVERY and not busy:
            self._last_hello = now
            self._refilling = link.spawn(self._refill(None, 1, want=0))

    def _start_refill(self, rate: float | None, burst: int) -> asyncio.Task[None] | None:
        """One reservation at a time: the one in flight, else a new one."""
        if self._refilling is None or self._refilling.done():
            self._refilling = self._link.spawn(self._refill(rate, burst))
        return self._refilling

    async def _refill(self, rate: float | None, burst: int, want: int | None = None) -> None:
        if want is None:
            want = self._batch if rate is None else min(self._batch, int(rate * BATCH_SECONDS))
            want = max(1, want)
        rush = self.rush.pending  # this process's first rush, added to the key's
        args = [rate or 0, burst, want, self._id, int(HEARTBEAT_TTL * _MICROS), self._version]
        args += [rush, int(STATE_TTL * 1000)]
        started = self._clock()
        reply = await self._link.run(self._reserve, self._keys.all(), args)
        if reply is None:
            return  # not ready now: the next turn goes by the local pace
        ended = self._clock()
        reservation = read_reservation(reply)
        self._note_round_trip(reservation.now, started, ended)
        self._live = reservation.live
        self.rush.reported(rush, reservation.rush)
        self._note_version(reservation.version, reservation.state)
        if want:
            self._own_granted += reservation.granted
            self._shares.append((ended, self._own_granted, reservation.granted_total))
            self._recent_share = self._share_over(self._shares[max(0, len(self._shares) - 64)])
        if reservation.paused_until:
            local_until = self.to_local_time(reservation.paused_until)
            self._paused_until = max(self._paused_until, local_until)
        if reservation.interval:
            self._rebook(ended, reservation.interval)
        self._slots.extend(self.to_local_time(slot) for slot in reservation.slots())

    def _rebook(self, now: float, interval: float) -> None:
        """The held slots still ahead, moved to ``interval`` (see RESERVE's rescaling)."""
        if self._slot_interval:
            scale = interval / self._slot_interval
            self._slots = collections.deque(
                slot if slot <= now else now + (slot - now) * scale for slot in self._slots
            )
        self._slot_interval = interval

    def _local_turn(self, rate: float | None, burst: int, now: float) -> float:
        """While Redis is away: this process's share of the last shared rate, paced locally
        (0.0 when a slot is taken now, else the wait)."""
        if rate is None:
            return 0.0
        interval = self._live / rate
        send_at = self._local_tat - (burst - 1) * interval
        if send_at > now:
            return send_at - now
        self._local_tat = max(self._local_tat, now) + interval
        return 0.0

    def _note_round_trip(self, redis_now: float, started: float, ended: float) -> None:
        rtt = ended - started
        self.round_trips += 1
        self.round_trip_seconds += rtt
        # the fastest round trip bounds the offset's error best; refresh it now and then
        if rtt <= self._best_rtt * 1.5 or self.round_trips % 256 == 0:
            self._best_rtt = min(self._best_rtt, rtt) if self.round_trips % 256 else rtt
            self._offset = redis_now - (started + ended) / 2
            self._offset_known = True

    # -- the shared pause -----------------------------------------------------------------------

    def pause(self, seconds: float) -> None:
        """Pause every process for ``seconds`` (after a 429); our held slots predate it."""
        self._slots.clear()
        until = self._clock() + seconds
        self._paused_until = max(self._paused_until, until)
        self._pause_to_send = max(self._pause_to_send, until)
        self._start_publishing()

    def _start_publishing(self) -> None:
        """One publisher at a time, sending the newest pause, then the newest state."""
        if self._publishing is None or self._publishing.done():
            self._publishing = self._link.spawn(self._send_pending())

    async def _send_pending(self) -> None:
        if not self._link.ready:
            await self._link.connect()
        while True:
            now = self._clock()
            if self._pause_to_send > now:
                seconds, self._pause_to_send = self._pause_to_send - now, 0.0
                await self._publish_pause(seconds)
            elif self._state_to_send is not None:  # (based on, a merge, state, its rate)
                offer, self._state_to_send = self._state_to_send, None
                await self._publish_state(*offer)
            else:
                return

    async def _publish_pause(self, seconds: float) -> None:
        started = self._clock()
        args = [int(seconds * _MICROS), self._keys.events]
        reply = await self._link.run(self._pause, [self._keys.pause], args)
        if reply is not None:  # another process's longer pause may already be in force
            self._note_round_trip(int(reply[0]) / _MICROS, started, self._clock())
            until = self.to_local_time(int(reply[1]) / _MICROS)
            self._paused_until = max(self._paused_until, until)

    # -- the learnt state -----------------------------------------------------------------------

    @property
    def version(self) -> int:
        return self._version

    def publish_state(self, state: Mapping[str, Any], rate: float = 0.0) -> None:
        """Offer the controller's new state (pacing at ``rate``) to every process (compare-and-set
        on the version it was computed from; when another process was first, theirs wins)."""
        if self._offset_known:  # else its times are not yet in Redis time: keep it local
            self._state, self._state_rate = state, rate
            self._offer(self._version)

    def _offer(self, based_on: int, merge: bool = False) -> None:
        if self._state is not None:  # as it is now (replacing an offer not yet sent)
            self._state_to_send = (based_on, merge, self._state, self._state_rate)
            self._start_publishing()

    def take_newer_state(self) -> Mapping[str, Any] | None:
        """A state another process published since the last call, or None."""
        if not self._offset_known:
            return None  # its times are in Redis time, which we cannot read yet
        state, self._incoming = self._incoming, None
        return state

    async def _publish_state(self, based_on: int, merge: bool, state: Any, rate: float) -> None:
        blob = json.dumps(state, separators=(",", ":"))
        args = [based_on, blob, int(STATE_TTL * 1000), self._keys.events, rate, int(merge)]
        reply = await self._link.run(self._publish, [self._keys.state], args)
        if reply is None:
            return
        published, version = read_published(reply), self._version
        if merge:  # versions may have started again with Redis: the state in force is theirs
            self._version = version = min(version, published.version - 1)
        if published.stored:
            self._version = max(version, published.version)
        else:
            self._note_version(published.version, published.state)

    def _note_version(self, version: int, state: Mapping[str, Any] | None) -> None:
        if version > self._version and state is not None:
            self._version, self._state, self._incoming = version, state, state
            self._state_rate = 0.0
        elif version < self._version and self._state is not None:
            self._version = version  # Redis lost the state (restarted): offer ours again
            self._offer(version, merge=True)
            self.rush.again()  # and the rush with it

    # -- the link's callbacks -------------------------------------------------------------------

    def _on_event(self, data: Any) -> None:
        """A pause or state another process pushed, applied as it comes (so the slots we hold
        are dropped at once when everyone is told to wait)."""
        event = read_event(data)
        if event is not None and event.paused_until is not None:
            if not self._offset_known:
                return  # its time cannot be read before our first round trip; RESERVE tells
            until = self.to_local_time(event.paused_until)
            if until > self._paused_until:
                self._paused_until = until
                self._slots.clear()
        elif event is not None and event.state is not None:
            self._note_version(event.version, event.state)

    def _on_outage(self) -> str:
        self._slots.clear()
        self._local_tat = self._clock()
        return f"a local limiter at 1/{self._live} of the shared rate"

    def _on_connected(self) -> None:
        self._last_hello = -HELLO_EVERY
        self.keep_alive()
        if self._state is not None:  # learnt while away (or lost by a restarted Redis)
            self._offer(self._version, merge=True)

    # -- lifetime -------------------------------------------------------------------------------

    async def connect(self) -> bool:
        """Connect now, waiting for one attempt (the first turn does this); True when shared."""
        return await self._link.connect()

    async def drain(self) -> None:
        """Wait for the background publishes (pause, state) started so far."""
        await self._link.drain()

    async def close(self) -> None:
        """Leave the live set (best effort) and close the connection pool. Idempotent."""
        redis = self._link.redis
        await self._link.close(lambda: redis.zrem(self._keys.live, self._id))
