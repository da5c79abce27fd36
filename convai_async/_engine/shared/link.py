"""``RedisLink``: the shared limit's connection to Redis, which fails open.

It connects off the hot path (a ping, the scripts loaded, a few pooled connections opened, the
events channel subscribed), runs each script within a per-operation timeout, and answers None
instead of raising when Redis is refused, gone or slow. A refused connection, or
``SLOW_STRIKES`` timeouts in a row, declares an outage: one WARNING (then INFO for
``WARNING_INTERVAL``), a callback so the limiter paces locally, and reconnection in the
background. redis-py is imported only by ``RedisLink.from_url`` (the ``redis`` extra).

The timeout is Redis's, not the event loop's: it runs out only after ``WAKE_UPS`` wake-ups of
the loop, each at most ``timeout / WAKE_UPS`` apart. A loop that was blocked or starved of CPU
(a busy machine) past the deadline still gets the remaining wake-ups to read an answer that
has been waiting in the socket, so its own lag never passes for a slow Redis; a stalled Redis
with a free loop still times out after ``timeout``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from ...errors import ValidationError

__all__ = ["CONNECTING", "DEFAULT_OPERATION_TIMEOUT", "FALLBACK", "SHARED", "RedisLink"]

logger = logging.getLogger("convai_async")

DEFAULT_OPERATION_TIMEOUT = 0.05  # seconds per Redis operation (see SLOW_STRIKES)
SLOW_STRIKES = 3  # timeouts in a row (of operations started one after another) for an outage
WAKE_UPS = 5  # an operation times out after this many wake-ups of the loop, timeout/5 apart
POOLED = 3  # connections opened on connecting: a reservation, a pause and a state at once
CONNECT_TIMEOUT = 1.0
RECONNECT_FIRST, RECONNECT_MAX = 0.05, 2.0
WARNING_INTERVAL = 300.0  # at most one WARNING per outage, and per this many seconds
SHARED, FALLBACK, CONNECTING = "shared", "local fallback", "connecting"
_URL_SCHEMES = ("redis://", "rediss://", "unix://")

Script = Callable[..., Coroutine[Any, Any, Any]]


def _consume(operation: asyncio.Future[Any]) -> None:
    """A late operation's outcome, read so that asyncio does not report it as lost."""
    if not operation.cancelled():
        operation.exception()


class RedisLink:
    """One process's connection to Redis for one key's shared limit; see the module docs."""

    def __init__(
        self,
        redis: Any,
        *,
        errors: tuple[type[BaseException], ...],
        scripts: Sequence[str],
        channel: str,
        on_event: Callable[[Any], None],
        on_outage: Callable[[], str],
        on_connected: Callable[[], None],
        name: str,
        operation_timeout: float = DEFAULT_OPERATION_TIMEOUT,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.redis = redis
        self._errors: tuple[type[BaseException], ...] = (*errors, OSError, asyncio.TimeoutError)
        self._scripts = tuple(scripts)
        self._channel = channel
        self._on_event = on_event
        self._on_outage = on_outage  # returns how we pace meanwhile, for the WARNING
        self._on_connected = on_connected
        self._name = name
        self._timeout = operation_timeout
        self._clock = clock
        self.ready = False  # a connection with the scripts loaded, answering in time
        self.fallback = False  # an outage was declared and has not ended
        self.failures = 0
        self.timeouts = 0  # of which: operations that did not answer in time
        self.late = 0  # answers read after the timeout had passed on the loop's clock (its lag)
        self._slow_in_a_row = 0
        self._started = 0  # operations started so far
        self._struck_after = 0  # the count of started operations when the last strike was made
        self._warned_at: float | None = None
        self._attempted = asyncio.Event()  # a first connection attempt has ended
        self._connecting: asyncio.Task[None] | None = None
        self._listening: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()  # background operations in flight
        self._closed = False

    @staticmethod
    def client_from_url(url: str, operation_timeout: float) -> tuple[Any, type[BaseException]]:
        """A redis-py asyncio client for ``url`` (no connection yet) and its error base class."""
        if not isinstance(url, str) or not url.startswith(_URL_SCHEMES):
            raise ValidationError("redis_url", "must be a redis://, rediss:// or unix:// URL")
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
        return client, redis.exceptions.RedisError

    @property
    def status(self) -> str:
        return SHARED if self.ready else FALLBACK if self.fallback else CONNECTING

    # -- connecting -----------------------------------------------------------------------------

    async def connect(self) -> bool:
        """Connect now, waiting for one attempt (at most ``CONNECT_TIMEOUT``); True when
        ready. Later attempts go on in the background."""
        self.ensure_connecting()
        await self._attempted.wait()
        return self.ready

    def ensure_connecting(self) -> None:
        if self._closed or (self._connecting is not None and not self._connecting.done()):
            return
        self._connecting = asyncio.get_running_loop().create_task(self._connect())

    async def _connect(self) -> None:
        wait = RECONNECT_FIRST
        while not self._closed:
            try:
                await asyncio.wait_for(self._warm_up(), CONNECT_TIMEOUT)
            except self._errors as error:
                self.failures += 1
                self._declare_outage(error)
                self._attempted.set()
                await asyncio.sleep(wait)
                wait = min(wait * 2, RECONNECT_MAX)
                continue
            self.ready, self._slow_in_a_row = True, 0
            self._attempted.set()
            if self.fallback:
                self.fallback = False
                logger.info("shared rate limit: Redis answers again; sharing resumed")
            self._on_connected()
            return

    async def _warm_up(self) -> None:
        await self.redis.ping()
        for script in self._scripts:
            await self.redis.script_load(script)
        # open the pool's connections now, not under an operation's timeout
        await asyncio.gather(*(self.redis.ping() for _ in range(POOLED)))
        if self._listening is None or self._listening.done():
            pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
            await pubsub.subscribe(self._channel)
            self._listening = asyncio.get_running_loop().create_task(self._listen(pubsub))

    async def _listen(self, pubsub: Any) -> None:
        try:
            async for message in pubsub.listen():
                self._on_event(message.get("data"))
        except self._errors as error:
            self._failed(error)
        finally:
            with contextlib.suppress(*self._errors):
                await pubsub.aclose()

    # -- operations -----------------------------------------------------------------------------

    async def run(self, script: Script, keys: Sequence[str], args: Sequence[Any]) -> Any:
        """One script call within the timeout; None when it failed or we are not connected.

        A refused connection declares the outage at once; timeouts after ``SLOW_STRIKES`` in a
        row, counting those of operations that were in flight together once (one stall of
        Redis times them all out). Either way the connection is made afresh in the
        background."""
        if not self.ready or self._closed:
            self.ensure_connecting()
            return None
        self._started += 1
        number = self._started
        # Not cancelled when late: its answer is dropped, its connection kept (a cancelled
        # command costs the connection, and a new one would be late again).
        operation = asyncio.ensure_future(script(keys=keys, args=args))
        try:
            answered = await self._answer(operation)
        except asyncio.CancelledError:
            operation.cancel()
            raise
        if not answered:
            self.failures += 1
            self.timeouts += 1
            operation.add_done_callback(_consume)
            if number > self._struck_after:
                self._struck_after = self._started
                self._slow_in_a_row += 1
                if self._slow_in_a_row >= SLOW_STRIKES:
                    self._failed(asyncio.TimeoutError())
            return None
        error = operation.exception()
        if error is not None:
            if isinstance(error, self._errors):
                self._failed(error)
                return None
            raise error
        self._slow_in_a_row = 0
        return operation.result()

    async def _answer(self, operation: asyncio.Future[Any]) -> bool:
        """Wait for ``operation`` for the timeout as Redis, not the loop, takes it (see the
        module docs); True when it is done."""
        loop = asyncio.get_running_loop()
        step = self._timeout / WAKE_UPS
        deadline = loop.time() + self._timeout
        for _ in range(WAKE_UPS):
            done, _ = await asyncio.wait((operation,), timeout=step)
            if done:
                if loop.time() > deadline:
                    self.late += 1
                return True
        return False

    def _failed(self, error: BaseException) -> None:
        if not isinstance(error, asyncio.TimeoutError):
            self.failures += 1
        self.ready = False
        self._declare_outage(error)
        self.ensure_connecting()

    def _declare_outage(self, error: BaseException) -> None:
        if self.fallback:
            return
        self.fallback = True
        meanwhile = self._on_outage()
        now = self._clock()
        if self._warned_at is None or now - self._warned_at >= WARNING_INTERVAL:
            self._warned_at = now
            log = logger.warning
        else:
            log = logger.info
        log(
            "shared rate limit (process %s): Redis did not answer (%s); continuing with %s, "
            "reconnecting in the background",
            self._name,
            type(error).__name__,
            meanwhile,
        )

    def spawn(self, work: Coroutine[Any, Any, None]) -> asyncio.Task[None] | None:
        """Run ``work`` in the background (cancelled by ``close``); None once closed."""
        if self._closed:
            work.close()
            return None
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def drain(self) -> None:
        """Wait for the background operations started so far."""
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def close(self, farewell: Callable[[], Coroutine[Any, Any, Any]] | None = None) -> None:
        """Run ``farewell`` if connected (best effort), stop the background work and close the
        connection pool. Idempotent."""
        if self._closed:
            return
        if self.ready and farewell is not None:
            with contextlib.suppress(asyncio.TimeoutError, *self._errors):
                await asyncio.wait_for(farewell(), self._timeout)
        self._closed = True
        for task in (self._connecting, self._listening):
            if task is not None:
                self._tasks.add(task)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.redis.aclose()
