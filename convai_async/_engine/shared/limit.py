"""``SharedLimit``: one API key's pacing, pause and learnt rate, shared through Redis.

Every process using a key reserves its send slots from one GCRA in Redis (a few slots per round
trip, so most requests do not wait on Redis), honours a pause any of them set after a 429, and
adopts the controller state any of them published. The in-flight cap and the retry budget stay
per process (they are the limiter's and the client's).

It fails open: each Redis operation has a timeout of a few milliseconds, and the first failure
switches to a local GCRA at the last shared rate divided by the number of live processes, logs
one WARNING, counts the event, and reconnects in the background. Redis never fails a call.

redis-py is imported only by ``SharedLimit.from_url`` (the ``redis`` extra).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import time
import uuid
from collections.abc import Callable, Coroutine, Mapping, Sequence
from typing import Any

from ...errors import ValidationError
from .keys import DEFAULT_PREFIX, SharedKeys, shared_keys
from .scripts import PAUSE, PUBLISH, RESERVE, read_event, read_published, read_reservation

__all__ = [
    "CONNECTING",
    "DEFAULT_BATCH",
    "DEFAULT_OPERATION_TIMEOUT",
    "FALLBACK",
    "SHARED",
    "SharedLimit",
]

logger = logging.getLogger("convai_async")

DEFAULT_OPERATION_TIMEOUT = 0.05  # seconds per Redis operation (see SLOW_STRIKES)
DEFAULT_BATCH = 4  # most slots reserved per round trip
BATCH_SECONDS = 0.02  # ...and at most this much of the shared rate
HEARTBEAT_TTL = 5.0  # a process that reserved nothing for this long no longer counts as live
STATE_TTL = 86_400.0  # a learnt rate outlives its processes by a day
SLOT_LEASE = 0.5  # a slot unused this long is dropped (a pause may have begun since)
RECONNECT_FIRST, RECONNECT_MAX = 0.05, 2.0
WARNING_INTERVAL = 300.0  # at most one WARNING per outage, and per this many seconds
CONNECT_TIMEOUT = 1.0
SLOW_STRIKES = 3  # timeouts in a row before falling back
_SHARE_SAMPLES = 512
MARKS = 20_000
SHARED, FALLBACK, CONNECTING = "shared", "local fallback", "connecting"
_MICROS = 1_000_000
_URL_SCHEMES = ("redis://", "rediss://", "unix://")

Script = Callable[..., Coroutine[Any, Any, Any]]


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
        self._redis = redis
        self._keys = keys
        self._errors: tuple[type[BaseException], ...] = (*errors, OSError, asyncio.TimeoutError)
        self._timeout = operation_timeout
        self._batch = batch
        self._clock = clock
        self._id = uuid.uuid4().hex
        self._reserve: Script = redis.register_script(RESERVE)
        self._pause: Script = redis.register_script(PAUSE)
        self._publish: Script = redis.register_script(PUBLISH)
        self._slots: collections.deque[float] = collections.deque()
        self._paused_until = 0.0  # local clock
        self._offset = 0.0  # Redis time minus local clock
        self._offset_known = False
        self._best_rtt = float("inf")
        self._version = 0
        self._state: Mapping[str, Any] | None = None  # the newest state we know (ours or adopted)
        self._incoming: Mapping[str, Any] | None = None  # adopted, not yet taken by the limiter
        self._live = 1
        self._own_granted = 0
        # our slots with their place among everyone's: (local time, index of the grant)
        self._marks: collections.deque[tuple[float, int]] = collections.deque(maxlen=MARKS)
        self._recent_share = 1.0
        self._shares: collections.deque[tuple[float, int, int]] = collections.deque(
            maxlen=_SHARE_SAMPLES
        )
        self._fallback = False
        self._slow_in_a_row = 0
        self._local_tat = 0.0
        self._warned_at: float | None = None
        self._tasks: set[asyncio.Task[Any]] = set()  # publishes in flight
        self._connecting: asyncio.Task[None] | None = None
        self._ready = False  # a connection with the scripts loaded, answering in time
        self._attempted = asyncio.Event()  # a first connection attempt has ended
        self._listening: asyncio.Task[None] | None = None  # the events subscription
        self._closed = False
        self.failures = 0
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
        """Checks the URL and makes the Redis client (it connects on first use)."""
        if not isinstance(url, str) or not url.startswith(_URL_SCHEMES):
            raise ValidationError("redis_url", "must be a redis://, rediss:// or unix:// URL")
        if not isinstance(prefix, str) or not prefix or any(c.isspace() for c in prefix):
            raise ValidationError("redis_prefix", "must be a non-empty string without spaces")
        try:
            import redis.asyncio as aioredis  # the optional extra: only when a URL is given
            import redis.exceptions
            from redis.asyncio.retry import Retry
            from redis.backoff import NoBackoff
        except ImportError:
            raise ValidationError(
                "redis_url", "needs redis-py: pip install 'convai-async[redis]'"
            ) from None
        client = aioredis.Redis.from_url(
            url,
            socket_timeout=max(operation_timeout, CONNECT_TIMEOUT),
            socket_connect_timeout=CONNECT_TIMEOUT,
            retry=Retry(NoBackoff(), 0),  # we fail open instead of retrying
        )
        return cls(
            client,
            shared_keys(api_key, prefix),
            errors=(redis.exceptions.RedisError,),
            operation_timeout=operation_timeout,
            batch=batch,
        )

    # -- what the limiter and stats read --------------------------------------------------------

    @property
    def status(self) -> str:
        """``"shared"`` while Redis answers, ``"local fallback"`` while it does not, and
        ``"connecting"`` before it first answered (turns are local meanwhile)."""
        return SHARED if self._ready else FALLBACK if self._fallback else CONNECTING

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

    def share_since(self, local: float) -> float:
        """This process's fraction of the slots granted (all processes) since ``local``."""
        samples = self._shares
        if not samples:
            return 1.0
        return self._share_over(next((s for s in samples if s[0] >= local), samples[-1]))

    def everyones_sends(self, start: float, end: float) -> list[float]:
        """Send times of every process's slots in [start, end] (local clock): ours as granted,
        the others' spread evenly between ours (GCRA spaces them evenly while busy)."""
        sends: list[float] = []
        previous: tuple[float, int] | None = None
        for at, index in self._marks:
            if previous is not None and start <= at and previous[0] <= end:
                before, gap = previous[0], index - previous[1]
                sends.extend(before + (at - before) * j / gap for j in range(1, gap))
            if start <= at <= end:
                sends.append(at)
            previous = (at, index)
        return sorted(t for t in sends if start <= t <= end)

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

    async def wait_turn(self, rate: float | None, burst: int) -> None:
        """Wait for a send slot: the shared pause, then the shared GCRA at ``rate`` per second
        (all processes together; None: not paced). One caller at a time (the limiter's lock)."""
        while True:
            now = self._clock()
            if self._paused_until > now:
                await asyncio.sleep(self._paused_until - now)
                continue
            while self._slots and self._slots[0] < now - SLOT_LEASE:
                self._slots.popleft()
            if self._slots:
                slot = self._slots.popleft()
                if slot > now:
                    await asyncio.sleep(slot - now)
                return
            if not self._ready and not self._fallback and self.round_trips == 0:
                await self.connect()  # the first turn waits for the connection (once)
            if not self._ready:
                self._ensure_connecting()
                await self._local_turn(rate, burst)
                return
            await self._refill(rate, burst)

    async def _refill(self, rate: float | None, burst: int) -> None:
        want = self._batch if rate is None else max(1, min(self._batch, int(rate * BATCH_SECONDS)))
        args = [
            rate or 0,
            burst,
            want,
            self._id,
            int(HEARTBEAT_TTL * _MICROS),
            self._version,
        ]
        started = self._clock()
        reply = await self._run(self._reserve, self._keys.all(), args)
        if reply is None:
            return  # not ready now: the next pass of wait_turn goes by the local pace
        ended = self._clock()
        reservation = read_reservation(reply)
        self._note_round_trip(reservation.now, started, ended)
        self._live = reservation.live
        self._note_version(reservation.version, reservation.state)
        self._own_granted += reservation.granted
        self._shares.append((ended, self._own_granted, reservation.granted_total))
        self._recent_share = self._share_over(self._shares[max(0, len(self._shares) - 64)])
        if reservation.paused_until:
            local_until = self.to_local_time(reservation.paused_until)
            self._paused_until = max(self._paused_until, local_until)
        slots = [self.to_local_time(slot) for slot in reservation.slots()]
        self._slots.extend(slots)
        first_index = reservation.granted_total - reservation.granted + 1
        self._marks.extend((slot, first_index + i) for i, slot in enumerate(slots))

    async def _local_turn(self, rate: float | None, burst: int) -> None:
        """While Redis is away: this process's share of the last shared rate, paced locally."""
        if rate is None:
            return
        interval = self._live / rate
        now = self._clock()
        send_at = self._local_tat - (burst - 1) * interval
        if send_at > now:
            await asyncio.sleep(send_at - now)
            now = self._clock()
        self._local_tat = max(self._local_tat, now) + interval

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
        self._paused_until = max(self._paused_until, self._clock() + seconds)
        self._spawn(self._publish_pause(seconds))

    async def _publish_pause(self, seconds: float) -> None:
        if not self._ready:
            await self.connect()
        started = self._clock()
        args = [int(seconds * _MICROS), self._keys.events]
        reply = await self._run(self._pause, [self._keys.pause], args)
        if reply is not None:  # another process's longer pause may already be in force
            self._note_round_trip(int(reply[0]) / _MICROS, started, self._clock())
            until = self.to_local_time(int(reply[1]) / _MICROS)
            self._paused_until = max(self._paused_until, until)

    # -- the learnt state -----------------------------------------------------------------------

    @property
    def version(self) -> int:
        return self._version

    def publish_state(self, state: Mapping[str, Any]) -> None:
        """Offer the controller's new state to every process (compare-and-set on the version
        it was computed from; when another process was first, theirs is adopted)."""
        if self._offset_known:  # else its times are not yet in Redis time: keep it local
            self._state = state
            self._spawn(self._publish_state(self._version, state))

    def take_newer_state(self) -> Mapping[str, Any] | None:
        """A state another process published since the last call, or None."""
        state, self._incoming = self._incoming, None
        return state

    async def _publish_state(self, based_on: int, state: Mapping[str, Any]) -> None:
        if not self._ready:
            await self.connect()
        blob = json.dumps(state, separators=(",", ":"))
        args = [based_on, blob, int(STATE_TTL * 1000), self._keys.events]
        reply = await self._run(self._publish, [self._keys.state], args)
        if reply is None:
            return
        published = read_published(reply)
        if published.stored:
            self._version = max(self._version, published.version)
        else:
            self._note_version(published.version, published.state)

    def _note_version(self, version: int, state: Mapping[str, Any] | None) -> None:
        if version > self._version and state is not None:
            self._version, self._state, self._incoming = version, state, state
        elif version < self._version and self._state is not None:
            # Redis lost the state (restarted): offer ours again
            self._version = version
            self._spawn(self._publish_state(version, self._state))

    # -- failing open ---------------------------------------------------------------------------

    async def connect(self) -> bool:
        """Connect now, waiting for one attempt (at most ``CONNECT_TIMEOUT``; the first turn
        does this); True when shared. Later attempts go on in the background."""
        self._ensure_connecting()
        await self._attempted.wait()
        return self._ready

    def _ensure_connecting(self) -> None:
        if self._closed or (self._connecting is not None and not self._connecting.done()):
            return
        self._connecting = asyncio.get_running_loop().create_task(self._connect())

    async def _connect(self) -> None:
        """Until Redis answers: a fresh connection with the scripts loaded, off the hot path
        (turns meanwhile are local). A first failure declares the outage."""
        wait = RECONNECT_FIRST
        while not self._closed:
            try:
                await asyncio.wait_for(self._warm_up(), CONNECT_TIMEOUT)
            except self._errors as error:
                self.failures += 1
                self._fail(error)
                self._attempted.set()
                await asyncio.sleep(wait)
                wait = min(wait * 2, RECONNECT_MAX)
                continue
            self._ready, self._slow_in_a_row = True, 0
            self._attempted.set()
            if self._state is not None:  # learnt while away (or lost by a restarted Redis)
                self._spawn(self._publish_state(self._version, self._state))
            if self._fallback:
                self._fallback = False
                logger.info("shared rate limit: Redis answers again; sharing resumed")
            return

    async def _warm_up(self) -> None:
        await self._redis.ping()
        for script in (RESERVE, PAUSE, PUBLISH):
            await self._redis.script_load(script)
        if self._listening is None or self._listening.done():
            pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
            await pubsub.subscribe(self._keys.events)
            self._listening = asyncio.get_running_loop().create_task(self._listen(pubsub))

    async def _listen(self, pubsub: Any) -> None:
        """Pauses and states pushed by the other processes, applied as they come (so the slots
        we hold are dropped at once when another process is told to wait)."""
        try:
            async for message in pubsub.listen():
                event = read_event(message.get("data"))
                if event is None:
                    continue
                if event.paused_until is not None:
                    until = self.to_local_time(event.paused_until)
                    if until > self._paused_until:
                        self._paused_until = until
                        self._slots.clear()
                elif event.state is not None:
                    self._note_version(event.version, event.state)
        except self._errors as error:
            self.failures += 1
            self._ready = False
            self._fail(error)
            self._ensure_connecting()
        finally:
            with contextlib.suppress(*self._errors):
                await pubsub.aclose()

    async def _run(self, script: Script, keys: Sequence[str], args: Sequence[Any]) -> Any:
        """One script call within the timeout; None when it failed (this turn is local).

        A refused connection falls back at once. A timeout falls back after ``SLOW_STRIKES`` in
        a row: on a busy event loop one late answer is more often our lag than Redis's. Either
        way the connection is made afresh in the background."""
        if not self._ready or self._closed:
            self._ensure_connecting()
            return None
        try:
            reply = await asyncio.wait_for(script(keys=keys, args=args), self._timeout)
        except asyncio.TimeoutError as error:
            self.failures += 1
            self._slow_in_a_row += 1
            self._ready = False  # the cancelled command's connection is dropped
            if self._slow_in_a_row >= SLOW_STRIKES:
                self._fail(error)
            self._ensure_connecting()
            return None
        except self._errors as error:
            self.failures += 1
            self._ready = False
            self._fail(error)
            self._ensure_connecting()
            return None
        self._slow_in_a_row = 0
        return reply

    def _fail(self, error: BaseException) -> None:
        """Declare the outage: one WARNING (then INFO for WARNING_INTERVAL), local pacing."""
        if self._fallback:
            return
        self._fallback = True
        self._slots.clear()
        now = self._clock()
        self._local_tat = now
        if self._warned_at is None or now - self._warned_at >= WARNING_INTERVAL:
            self._warned_at = now
            log = logger.warning
        else:
            log = logger.info
        log(
            "shared rate limit (process %s): Redis did not answer (%s); continuing with a "
            "local limiter at 1/%d of the shared rate, reconnecting in the background",
            self._id[:8],
            type(error).__name__,
            self._live,
        )

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        if self._closed:
            work.close()
            return
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def drain(self) -> None:
        """Wait for the background publishes (pause, state) started so far."""
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def close(self) -> None:
        """Leave the live set (best effort) and close the connection pool. Idempotent."""
        if self._closed:
            return
        if self._ready:
            with contextlib.suppress(*self._errors):
                await asyncio.wait_for(self._redis.zrem(self._keys.live, self._id), self._timeout)
        self._closed = True
        for task in (self._connecting, self._listening):
            if task is not None:
                self._tasks.add(task)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._redis.aclose()
