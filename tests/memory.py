"""An in-memory ``Transport`` and a virtual clock: engine tests with no sockets and no waiting."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Sequence
from typing import Any

from attrs import define, field

from convai_async._engine.limiter import AdaptiveLimiter
from convai_async._engine.retry import Retrier, RetryPolicy
from convai_async._engine.session import Session
from convai_async._engine.transport import RawResponse
from convai_async.errors import ConvaiConnectionError

Answer = RawResponse | Exception | Callable[[], "Answer"]

SUCCESS = RawResponse(200, {"content-type": "application/json"}, b'{"STATUS": "SUCCESS"}')


def answer(status: int, body: Any = None, **headers: str) -> RawResponse:
    raw = body if isinstance(body, bytes) else json.dumps(body or {}).encode()
    return RawResponse(status, {k.replace("_", "-"): v for k, v in headers.items()}, raw)


RATE_LIMITED = answer(429, {"API_ERROR": "API rate limit exceeded. Please try again later."})
DROPPED_AFTER_SEND = ConvaiConnectionError(
    "server closed the connection without answering", endpoint="/x", request_sent=True
)
REFUSED = ConvaiConnectionError("cannot connect", endpoint="/x", request_sent=False)


@define
class VirtualClock:
    """Time that passes only when someone sleeps: ``sleep`` advances it and yields once."""

    now: float = 1000.0
    slept: list[float] = field(factory=list)

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += max(0.0, seconds)
        await asyncio.sleep(0)


@define
class MemoryTransport:
    """Answers each request with the next scripted answer (the last one repeats).

    An answer may be a ``RawResponse``, an exception to raise (a ``TransportError``), or a
    function returning either. ``sent`` records (path, body, clock time) of every request."""

    answers: Sequence[Answer]
    clock: Callable[[], float] = field(default=lambda: 0.0)
    sent: list[tuple[str, bytes, float]] = field(factory=list)
    gate: asyncio.Event | None = None  # when set, every request waits for it first
    closed: bool = False

    async def send(self, path: str, body: bytes, *, max_bytes: int) -> RawResponse:
        self.sent.append((path, body, self.clock()))
        if self.gate is not None:
            await self.gate.wait()
        reply = self.answers[min(len(self.sent), len(self.answers)) - 1]
        while callable(reply):
            reply = reply()
        if isinstance(reply, Exception):
            raise reply
        return reply

    async def close(self) -> None:
        self.closed = True


def memory_session(
    transport: MemoryTransport,
    *,
    clock: VirtualClock | None = None,
    policy: RetryPolicy | None = None,
    max_concurrency: int = 4,
    deadline: float | None = None,
    max_retry_after: float = 60.0,
    rate_limit_patience: float = 300.0,
) -> Session:
    """A Session over ``transport``; with a ``clock``, every wait is virtual."""
    clock = clock or VirtualClock()
    transport.clock = clock
    limiter = AdaptiveLimiter(
        max_concurrency=max_concurrency,
        requests_per_second=None,
        burst=4,
        rate_limit_patience=rate_limit_patience,
        clock=clock,
        sleep=clock.sleep,
    )
    return Session(
        transport,
        limiter=limiter,
        max_concurrency=max_concurrency,
        retrier=Retrier(policy or RetryPolicy()),
        deadline=deadline,
        max_retry_after=max_retry_after,
        rate_limit_patience=rate_limit_patience,
        max_response_bytes=1 << 20,
        max_list_response_bytes=1 << 20,
        sleep=clock.sleep,
    )
