"""The one call path every request takes: validate, encode, acquire, send, parse, decide, retry.

``Session.call`` is the engine's whole public interface (with ``register_secret``, ``stats`` and
``close``): the resources (``client.characters``, ``client.llm_models``) and the bulk runner are
built on it and nothing else. It is written against the ``Transport`` seam, so tests drive it in
memory with zero waits; the client gives it the aiohttp transport.

Two lifetime rules live here. A session is bound to the event loop it first runs in; a call
from another loop raises ``WrongEventLoopError`` at once. ``close()`` fails every call waiting
for a slot or a retry with ``ClientClosedError`` at once, gives calls in flight ``grace``
seconds to finish (then cancels them: ``ClientClosedError`` with ``request_sent=True``), and
returns once nothing is being sent and the transport is closed: no request leaves after it.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

from attrs import define, frozen

from .._wire.protocol import (
    Endpoint,
    encode_body,
    is_retryable,
    parse_response,
    retry_after_granularity,
)
from .._wire.secrets import Redactor, Secret, SecretBody
from ..defaults import DEFAULT_CLOSE_GRACE
from ..errors import (
    ClientClosedError,
    ConvaiError,
    ConvaiTimeoutError,
    RateLimitError,
    TransportError,
    WrongEventLoopError,
)
from .limiter import AdaptiveLimiter
from .retry import Retrier
from .transport import Transport

__all__ = ["CallTrace", "ClientStats", "Session"]

logger = logging.getLogger("convai_async")


@define
class CallTrace:
    """What one logical call saw across its attempts (the bulk journal and reconciliation read it).

    ``request_sent``: some attempt may have reached the server (it answered, or the connection
    failed after the request was written), so a write may have been applied. ``unanswered``:
    some attempt may have reached the server and no answer came back."""

    attempts: int = 0
    rate_limited: int = 0
    request_sent: bool = False
    unanswered: bool = False


@frozen
class ClientStats:
    """A snapshot of a client's counters and of its limiter's current state."""

    requests: int
    succeeded: int
    failed: int
    retries: int
    rate_limited: int
    in_flight: int
    effective_concurrency: int
    effective_rate: float | None
    paused_for: float
    retry_budget_left: int
    shared_limit: str = "off"  # "off", "connecting", "shared" (Redis) or "local fallback"
    shared_limit_failures: int = 0  # Redis operations that failed or timed out (failed open)


@define
class _Counters:
    requests: int = 0
    succeeded: int = 0
    failed: int = 0
    retries: int = 0
    rate_limited: int = 0


class Session:
    """Sends requests for one client: limiter, retries, deadline, parsing, counters, logging."""

    def __init__(
        self,
        transport: Transport,
        *,
        limiter: AdaptiveLimiter,
        max_concurrency: int,
        retrier: Retrier,
        deadline: float | None,
        max_retry_after: float,
        rate_limit_patience: float,
        max_response_bytes: int,
        max_list_response_bytes: int,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._transport = transport
        self._limiter = limiter
        self._max_concurrency = max_concurrency
        self._retrier = retrier
        self._deadline = deadline
        self._max_retry_after = max_retry_after
        self._rate_limit_patience = rate_limit_patience
        self._max_response_bytes = max_response_bytes
        self._max_list_response_bytes = max_list_response_bytes
        self._sleep = sleep
        self._redactor = Redactor()
        self._counters = _Counters()
        self._closed = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._binding = threading.Lock()
        self._calls: set[asyncio.Task[Any]] = set()  # tasks inside _retrying
        self._sending: set[asyncio.Task[Any]] = set()  # those of them inside transport.send
        self._closing_cancelled: set[asyncio.Task[Any]] = set()
        self._sends_over: asyncio.Event | None = None
        self._shutdown: asyncio.Task[None] | None = None

    @property
    def max_concurrency(self) -> int:
        return self._max_concurrency

    @property
    def closed(self) -> bool:
        return self._closed

    def register_secret(self, secret: Secret) -> None:
        """Redact ``secret`` from every message this session builds from a server's answer."""
        self._redactor.add(secret)

    @property
    def stats(self) -> ClientStats:
        counters, limiter = self._counters, self._limiter
        return ClientStats(
            requests=counters.requests,
            succeeded=counters.succeeded,
            failed=counters.failed,
            retries=counters.retries,
            rate_limited=counters.rate_limited,
            in_flight=limiter.in_flight,
            effective_concurrency=limiter.effective_concurrency,
            effective_rate=limiter.effective_rate,
            paused_for=limiter.paused_for,
            retry_budget_left=self._retrier.budget.tokens,
            shared_limit=limiter.shared_status,
            shared_limit_failures=limiter.shared_failures,
        )

    # -- lifetime -------------------------------------------------------------------------------

    def check_loop(self) -> None:
        """Bind to the running loop on first use; raise WrongEventLoopError from any other."""
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            self._bind(loop)

    def _bind(self, loop: asyncio.AbstractEventLoop) -> None:
        with self._binding:  # two threads may race to be first
            if self._loop is None:
                self._loop = loop
                return
        state = "closed" if self._loop.is_closed() else "running elsewhere"
        raise WrongEventLoopError(
            f"this ConvaiClient is bound to the event loop it first ran in (now {state}); "
            "create one client per event loop"
        )

    def check_open(self) -> None:
        if self._closed:
            raise ClientClosedError("this ConvaiClient is closed; create a new one")

    async def close(self, grace: float = DEFAULT_CLOSE_GRACE) -> None:
        """Fail waiting calls now, let calls in flight finish for ``grace`` seconds (then cancel
        them), close the transport. Returns when that is done; idempotent."""
        if self._loop is not None:
            self.check_loop()
        if self._shutdown is None:
            self._closed = True
            self._shutdown = asyncio.ensure_future(self._shut_down(grace))
        await asyncio.shield(self._shutdown)

    async def _shut_down(self, grace: float) -> None:
        for task in list(self._calls - self._sending):  # waiting for a slot, or a retry
            self._cancel_for_close(task)
        if self._sending:
            self._sends_over = over = asyncio.Event()
            try:
                await asyncio.wait_for(over.wait(), grace)
            except asyncio.TimeoutError:
                for task in list(self._sending):
                    self._cancel_for_close(task)
                await over.wait()  # a cancelled send ends at its next step
        await self._transport.close()
        await self._limiter.close()  # a shared limiter's connection (issue 13)

    def _cancel_for_close(self, task: asyncio.Task[Any]) -> None:
        self._closing_cancelled.add(task)
        task.cancel()

    def _cancelled_by_close(self, task: asyncio.Task[Any] | None) -> bool:
        """Whether a CancelledError in ``task`` is close()'s alone (then it is taken back)."""
        if task is None or task not in self._closing_cancelled:
            return False
        self._closing_cancelled.discard(task)
        uncancel = getattr(task, "uncancel", None)  # Python 3.11+
        if uncancel is None:
            return True
        left: int = uncancel()
        return left == 0  # otherwise someone else cancelled it too: let it propagate

    # -- the call path --------------------------------------------------------------------------

    async def call(
        self,
        endpoint: Endpoint,
        request: object | None,
        *,
        trace: CallTrace | None = None,
        patient: bool = False,
    ) -> Any:
        """One logical call; returns the decoded success payload or raises a ``ConvaiError``.

        ``request`` is an already validated request object (None for the list endpoints).
        ``patient`` calls (bulk runs) retry 429s without using up ``max_retries`` and wait out
        a ``Retry-After`` up to ``rate_limit_patience``; others fail at once when the server asks
        for more than ``max_retry_after``. ``trace`` receives what the attempts saw."""
        self.check_loop()
        self.check_open()
        body = encode_body(request)
        trace = CallTrace() if trace is None else trace
        try:
            if self._deadline is None:
                return await self._retrying(endpoint, body, trace, patient)
            try:
                return await asyncio.wait_for(
                    self._retrying(endpoint, body, trace, patient), self._deadline
                )
            except asyncio.TimeoutError:
                pass
            raise ConvaiTimeoutError(
                f"deadline of {self._deadline:g}s exceeded after {trace.attempts} attempt(s)",
                endpoint=endpoint.path,
                request_sent=trace.request_sent,
            )
        except ConvaiError:
            self._counters.failed += 1
            raise

    async def _retrying(
        self, endpoint: Endpoint, body: bytes | SecretBody, trace: CallTrace, patient: bool
    ) -> Any:
        """Attempt, and after a retryable failure wait as the retrier says and attempt again.

        Runs in the task that waits (with a deadline, wait_for's own task), so that close()
        can cancel it; that cancellation comes out as ClientClosedError."""
        task = asyncio.current_task(self._loop)  # bound by check_loop: no second loop lookup
        if task is not None:
            self._calls.add(task)
        try:
            max_retry_after = self._rate_limit_patience if patient else self._max_retry_after
            waits = None
            while True:
                try:
                    return await self._attempt(endpoint, body, trace, task)
                except ConvaiError as error:
                    failures = trace.attempts - (trace.rate_limited if patient else 0)
                    waits = waits or self._retrier.waits()
                    wait = self._retrier.wait_after(
                        error, failures=failures, max_retry_after=max_retry_after, waits=waits
                    )
                    if wait is None or self._closed:
                        raise
                    self._counters.retries += 1
                    logger.warning(
                        "retrying after %s (attempt %d) in %.2fs", error, trace.attempts + 1, wait
                    )
                if wait > 0:
                    await self._sleep(wait)
        except asyncio.CancelledError:
            if not self._cancelled_by_close(task):
                raise
        finally:
            if task is not None:
                self._calls.discard(task)
                self._closing_cancelled.discard(task)
        # Raised here, outside the except block: no CancelledError (whose traceback runs
        # through aiohttp's frames, headers and all) is chained to it.
        raise ClientClosedError(
            "this ConvaiClient was closed before the call finished",
            request_sent=trace.request_sent,
        )

    async def _attempt(
        self,
        endpoint: Endpoint,
        body: bytes | SecretBody,
        trace: CallTrace,
        task: asyncio.Task[Any] | None,
    ) -> Any:
        self.check_open()
        sent_at = await self._limiter.acquire()
        if self._closed:  # closed while this call waited: it must not send
            self._limiter.release()
            self.check_open()
        trace.attempts += 1
        self._counters.requests += 1
        debug = logger.isEnabledFor(logging.DEBUG)
        started = time.monotonic() if debug else 0.0
        cap = self._max_list_response_bytes if endpoint.large else self._max_response_bytes
        if task is not None:
            self._sending.add(task)
        try:
            response = await self._transport.send(endpoint.path, body, max_bytes=cap)
        except TransportError as error:
            self._limiter.on_other_answer()
            if error.request_sent:
                trace.request_sent = trace.unanswered = True
            if debug:
                _log_attempt(endpoint, trace, started, None, error)
            raise
        except asyncio.CancelledError:
            # Cut short by close(), a deadline or the caller: the request may have left.
            trace.request_sent = trace.unanswered = True
            raise
        finally:
            self._limiter.release()
            if task is not None:
                self._sending.discard(task)
                if self._sends_over is not None and not self._sending:
                    self._sends_over.set()
        trace.request_sent = True
        try:
            payload = parse_response(
                endpoint,
                response.status,
                response.headers,
                response.body,
                redactor=self._redactor,
                now=time.time() if response.status == 429 else None,  # for a Retry-After date
            )
        except RateLimitError as error:
            trace.rate_limited += 1
            self._counters.rate_limited += 1
            if is_retryable(error):  # a quota answer says nothing about the rate
                granularity = retry_after_granularity(response.headers)
                self._limiter.on_rate_limited(error.retry_after, sent_at, granularity)
            else:
                self._limiter.on_other_answer()
            if debug:
                _log_attempt(endpoint, trace, started, response.status, error)
            raise
        except ConvaiError as error:
            self._limiter.on_other_answer()
            if debug:
                _log_attempt(endpoint, trace, started, response.status, error)
            raise
        self._limiter.on_success(sent_at)
        self._retrier.budget.refund()
        self._counters.succeeded += 1
        if debug:
            _log_attempt(endpoint, trace, started, response.status, None)
        return payload


def _log_attempt(
    endpoint: Endpoint,
    trace: CallTrace,
    started: float,
    status: int | None,
    error: ConvaiError | None,
) -> None:
    logger.debug(
        "%s attempt=%d status=%s latency_ms=%.1f transaction_id=%s%s",
        endpoint.path,
        trace.attempts,
        status if status is not None else "-",
        (time.monotonic() - started) * 1000,
        getattr(error, "transaction_id", None) or "-",
        f" error={type(error).__name__}" if error else "",
    )
