"""The call path, retries and waits, through an in-memory transport and a virtual clock.

No sockets and no real waiting: every wait is recorded by the virtual clock, so the tests assert
exact waits and orders, whatever the machine's load.
"""

from __future__ import annotations

import asyncio
import time
from email.utils import formatdate

import pytest

from convai_async import (
    BadRequestError,
    ClientClosedError,
    ConvaiConnectionError,
    ConvaiTimeoutError,
    RateLimitError,
    RetryPolicy,
    ServerError,
    set_testing,
)
from convai_async._engine.session import CallTrace
from convai_async._wire.protocol import CHARACTER_UPDATE, MODEL_LIST
from convai_async.models import CharacterUpdate

from .memory import (
    DROPPED_AFTER_SEND,
    RATE_LIMITED,
    REFUSED,
    SUCCESS,
    MemoryTransport,
    VirtualClock,
    answer,
    memory_session,
)

UPDATE = CharacterUpdate("c", model="m")
UNAVAILABLE = answer(503, b"<html>down</html>", content_type="text/html")


@pytest.fixture(autouse=True)
def real_waits() -> object:
    """These tests measure the waits themselves (on a virtual clock): turn them on."""
    set_testing(False)
    yield
    set_testing(True)


def send_times(transport: MemoryTransport) -> list[float]:
    return [at for _, _, at in transport.sent]


async def test_a_call_encodes_once_and_returns_the_payload() -> None:
    transport = MemoryTransport([SUCCESS])
    session = memory_session(transport)
    assert await session.call(CHARACTER_UPDATE, UPDATE) == {"STATUS": "SUCCESS"}
    assert transport.sent[0][:2] == ("/character/update", b'{"charID":"c","model_group_name":"m"}')
    assert session.stats.requests == session.stats.succeeded == 1


async def test_retryable_failures_wait_with_capped_full_jitter() -> None:
    clock = VirtualClock()
    policy = RetryPolicy(max_retries=5, initial_wait=0.5, multiplier=2.0, max_wait=2.0)
    transport = MemoryTransport([UNAVAILABLE] * 5 + [SUCCESS])
    session = memory_session(transport, clock=clock, policy=policy)
    await session.call(CHARACTER_UPDATE, UPDATE)
    assert len(transport.sent) == 6
    ceilings = [0.5, 1.0, 2.0, 2.0, 2.0]
    assert len(clock.slept) == 5
    assert all(0.0 <= wait <= ceiling for wait, ceiling in zip(clock.slept, ceilings, strict=True))
    assert session.stats.retries == 5


async def test_max_retries_caps_the_attempts() -> None:
    transport = MemoryTransport([UNAVAILABLE])
    session = memory_session(transport, policy=RetryPolicy(max_retries=2))
    with pytest.raises(ServerError):
        await session.call(CHARACTER_UPDATE, UPDATE)
    assert len(transport.sent) == 3
    assert session.stats.failed == 1


async def test_what_a_retry_cannot_cure_is_not_retried() -> None:
    transport = MemoryTransport([answer(400, {"ERROR": "charID is required"})])
    session = memory_session(transport)
    with pytest.raises(BadRequestError):
        await session.call(CHARACTER_UPDATE, UPDATE)
    assert len(transport.sent) == 1


async def test_the_retry_budget_bounds_an_outage() -> None:
    """Server down, 100 concurrent calls allowed 5 retries each: the shared budget lets through
    only about budget / cost retries in all, not 500."""
    policy = RetryPolicy(max_retries=5, budget=50, retry_cost=5)
    transport = MemoryTransport([UNAVAILABLE])
    session = memory_session(transport, policy=policy, max_concurrency=8)
    results = await asyncio.gather(
        *(session.call(CHARACTER_UPDATE, UPDATE) for _ in range(100)), return_exceptions=True
    )
    assert all(isinstance(r, ServerError) for r in results)
    assert len(transport.sent) == 100 + 50 // 5


async def test_retry_after_seconds_is_a_floor_for_every_call() -> None:
    clock = VirtualClock()
    limited = answer(429, {"API_ERROR": "Rate limit exceeded."}, retry_after="2")
    transport = MemoryTransport([limited, SUCCESS])
    session = memory_session(transport, clock=clock)
    await session.call(CHARACTER_UPDATE, UPDATE)
    first, second = send_times(transport)
    assert second - first >= 2.0
    # an unrelated call made now goes at once: the pause is over
    await session.call(CHARACTER_UPDATE, UPDATE)
    assert send_times(transport)[2] == clock.now


async def test_a_pause_holds_back_calls_that_did_not_see_the_429() -> None:
    clock = VirtualClock()
    limited = answer(429, {"API_ERROR": "Rate limit exceeded."}, retry_after="3")
    transport = MemoryTransport([limited, SUCCESS, SUCCESS])
    session = memory_session(transport, clock=clock)
    first = asyncio.create_task(session.call(CHARACTER_UPDATE, UPDATE))
    while not transport.sent:
        await asyncio.sleep(0)
    refused_at = send_times(transport)[0]
    await first
    await session.call(CHARACTER_UPDATE, CharacterUpdate("other", model="m"))
    assert all(at >= refused_at + 3.0 for at in send_times(transport)[1:])


async def test_retry_after_as_an_http_date() -> None:
    clock = VirtualClock()
    when = formatdate(time.time() + 10, usegmt=True)
    limited = answer(429, {"API_ERROR": "Rate limit exceeded."}, retry_after=when)
    transport = MemoryTransport([limited, SUCCESS])
    session = memory_session(transport, clock=clock)
    await session.call(CHARACTER_UPDATE, UPDATE)
    first, second = send_times(transport)
    assert second - first >= 9.0  # an HTTP-date has one-second resolution


async def test_a_retry_after_beyond_max_retry_after_fails_at_once() -> None:
    limited = answer(429, {"API_ERROR": "Rate limit exceeded."}, retry_after="3600")
    transport = MemoryTransport([limited, SUCCESS])
    session = memory_session(transport, max_retry_after=60)
    with pytest.raises(RateLimitError) as caught:
        await session.call(CHARACTER_UPDATE, UPDATE)
    assert caught.value.retry_after == 3600
    assert len(transport.sent) == 1
    assert session.stats.paused_for >= 3600  # the floor stays for every later call


async def test_a_patient_call_waits_out_a_long_retry_after() -> None:
    clock = VirtualClock()
    limited = answer(429, {"API_ERROR": "Rate limit exceeded."}, retry_after="120")
    transport = MemoryTransport([limited, SUCCESS])
    session = memory_session(transport, clock=clock, max_retry_after=60, rate_limit_patience=300)
    await session.call(CHARACTER_UPDATE, UPDATE, patient=True)
    first, second = send_times(transport)
    assert second - first >= 120


async def test_patient_calls_do_not_spend_max_retries_on_429s() -> None:
    transport = MemoryTransport([RATE_LIMITED] * 8 + [UNAVAILABLE, SUCCESS])
    session = memory_session(transport, policy=RetryPolicy(max_retries=2))
    trace = CallTrace()
    await session.call(CHARACTER_UPDATE, UPDATE, trace=trace, patient=True)
    assert (trace.attempts, trace.rate_limited) == (10, 8)
    impatient = memory_session(MemoryTransport([RATE_LIMITED]), policy=RetryPolicy(max_retries=2))
    with pytest.raises(RateLimitError):
        await impatient.call(CHARACTER_UPDATE, UPDATE)


async def test_set_testing_makes_retry_waits_zero() -> None:
    clock = VirtualClock()
    set_testing(True)
    transport = MemoryTransport([UNAVAILABLE, UNAVAILABLE, SUCCESS])
    await memory_session(transport, clock=clock).call(CHARACTER_UPDATE, UPDATE)
    assert len(transport.sent) == 3
    assert clock.slept == []


async def test_the_trace_tells_what_may_have_reached_the_server() -> None:
    refused = CallTrace()
    session = memory_session(MemoryTransport([REFUSED]), policy=RetryPolicy(max_retries=1))
    with pytest.raises(ConvaiConnectionError):
        await session.call(CHARACTER_UPDATE, UPDATE, trace=refused)
    assert (refused.attempts, refused.request_sent, refused.unanswered) == (2, False, False)

    dropped = CallTrace()
    session = memory_session(MemoryTransport([DROPPED_AFTER_SEND, SUCCESS]))
    await session.call(CHARACTER_UPDATE, UPDATE, trace=dropped)
    assert (dropped.attempts, dropped.request_sent, dropped.unanswered) == (2, True, True)

    answered = CallTrace()
    session = memory_session(MemoryTransport([UNAVAILABLE, SUCCESS]))
    await session.call(CHARACTER_UPDATE, UPDATE, trace=answered)
    assert (answered.request_sent, answered.unanswered) == (True, False)


async def test_the_deadline_bounds_the_call_and_counts_as_a_failure() -> None:
    transport = MemoryTransport([SUCCESS], gate=asyncio.Event())  # never answers
    session = memory_session(transport, deadline=0.01)
    with pytest.raises(ConvaiTimeoutError) as caught:
        await session.call(MODEL_LIST, None)
    assert caught.value.request_sent is True  # cut short mid-send: it may have been applied
    assert session.stats.failed == 1
    assert session.stats.in_flight == 0


async def test_cancellation_frees_the_slot() -> None:
    gate = asyncio.Event()
    transport = MemoryTransport([SUCCESS], gate=gate)
    session = memory_session(transport, max_concurrency=2)
    tasks = [asyncio.create_task(session.call(CHARACTER_UPDATE, UPDATE)) for _ in range(5)]
    while len(transport.sent) < 2:
        await asyncio.sleep(0)
    assert session.stats.in_flight == 2
    for task in tasks:
        task.cancel()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert all(isinstance(r, asyncio.CancelledError) for r in results)
    assert session.stats.in_flight == 0
    gate.set()
    await session.call(CHARACTER_UPDATE, UPDATE)
    assert len(transport.sent) == 3


async def test_a_closed_session_refuses_work_and_closes_its_transport() -> None:
    transport = MemoryTransport([SUCCESS])
    session = memory_session(transport)
    await session.close()
    assert transport.closed
    with pytest.raises(ClientClosedError):
        await session.call(CHARACTER_UPDATE, UPDATE)
    assert transport.sent == []
