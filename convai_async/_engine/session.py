"""The one call path every request takes: validate, encode, acquire, send, parse, decide, retry.

``Session.call`` is the engine's whole public interface (with ``register_secret``, ``stats`` and
``close``): the resources (``client.characters``, ``client.llm_models``) and the bulk runner are
built on it and nothing else. It is written against the ``Transport`` seam, so tests drive it in
memory with zero waits; the client gives it the aiohttp transport.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from attrs import define, frozen

from .._wire.protocol import Endpoint, encode_body, is_retryable, parse_response
from ..errors import (
    ClientClosedError,
    ConvaiError,
    ConvaiTimeoutError,
    RateLimitError,
    TransportError,
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
        self._secrets: tuple[str, ...] = ()
        self._counters = _Counters()
        self._closed = False

    @property
    def max_concurrency(self) -> int:
        return self._max_concurrency

    @property
    def closed(self) -> bool:
        return self._closed

    def register_secret(self, secret: str) -> None:
        """Redact ``secret`` from every message this session builds from a server's answer."""
        if secret and secret not in self._secrets:
            self._secrets = (*self._secrets, secret)

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
        )

    async def close(self) -> None:
        self._closed = True
        await self._transport.close()

    def check_open(self) -> None:
        if self._closed:
            raise ClientClosedError("this ConvaiClient is closed; create a new one")

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
        self, endpoint: Endpoint, body: bytes, trace: CallTrace, patient: bool
    ) -> Any:
        """Attempt, and after a retryable failure wait as the retrier says and attempt again."""
        max_retry_after = self._rate_limit_patience if patient else self._max_retry_after
        waits = None
        while True:
            try:
                return await self._attempt(endpoint, body, trace)
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

    async def _attempt(self, endpoint: Endpoint, body: bytes, trace: CallTrace) -> Any:
        self.check_open()
        sent_at = await self._limiter.acquire()
        trace.attempts += 1
        self._counters.requests += 1
        debug = logger.isEnabledFor(logging.DEBUG)
        started = time.monotonic() if debug else 0.0
        cap = self._max_list_response_bytes if endpoint.large else self._max_response_bytes
        try:
            response = await self._transport.send(endpoint.path, body, max_bytes=cap)
        except TransportError as error:
            if error.request_sent:
                trace.request_sent = trace.unanswered = True
            if debug:
                _log_attempt(endpoint, trace, started, None, error)
            raise
        finally:
            self._limiter.release()
        trace.request_sent = True
        try:
            payload = parse_response(
                endpoint, response.status, response.headers, response.body, secrets=self._secrets
            )
        except RateLimitError as error:
            trace.rate_limited += 1
            self._counters.rate_limited += 1
            if is_retryable(error):  # a quota answer says nothing about the rate
                self._limiter.on_rate_limited(error.retry_after, sent_at)
            if debug:
                _log_attempt(endpoint, trace, started, response.status, error)
            raise
        except ConvaiError as error:
            if debug:
                _log_attempt(endpoint, trace, started, response.status, error)
            raise
        self._limiter.on_success()
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
