"""The shared limit's operation timeout against a real redis-server: a stalled Redis fails open
with one WARNING, while a blocked event loop in the client is not taken for a slow Redis; and a
burst of new states or pauses is a few writes, not one per call."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis

from convai_async._engine.shared import FALLBACK, SHARED, SharedLimit, shared_keys
from convai_async._engine.shared.link import SLOW_STRIKES

from .redis_server import RedisServer, serve_redis, take_turn, until

KEY = "canary-convai-key-51b0e2"
GUARD = 60.0  # hang guard for waits on a condition; a correct run never comes near it
TIMEOUT = 0.05  # the default operation timeout
MAX_LOOKS = 100_000  # looks at Redis before a hang is declared; a correct run needs a few
redis_server = pytest.fixture(serve_redis)


@pytest.fixture
async def limit(redis_server: RedisServer) -> AsyncIterator[SharedLimit]:
    made = SharedLimit.from_url(redis_server.url, KEY, operation_timeout=TIMEOUT)
    yield made
    await made.close()


def block_the_loop(seconds: float) -> None:
    """What a synchronous call in an async program does: nothing else runs meanwhile."""
    time.sleep(seconds)


def warnings(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.levelno == logging.WARNING]


async def test_a_blocked_event_loop_is_not_taken_for_a_slow_redis(
    redis_server: RedisServer, limit: SharedLimit, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="convai_async")
    assert await limit.connect()
    await limit.drain()  # its first hello (reserving nothing)
    granted = shared_keys(KEY).granted
    sync = redis.Redis.from_url(redis_server.url)
    reserve = limit._reserve
    blocked = 0

    async def reserve_then_block(keys: list[str], args: list[Any]) -> Any:
        """The reservation is sent; then this process's loop is blocked (as by a synchronous
        call, or a starved CPU) until Redis has run it and well past the timeout."""
        nonlocal blocked
        before = int(sync.get(granted) or 0)
        sent = asyncio.ensure_future(reserve(keys=keys, args=args))
        for _ in range(MAX_LOOKS):  # until Redis has run it (a bounded loop: a hang guard)
            if int(sync.get(granted) or 0) != before:
                break
            await asyncio.sleep(0)  # its first steps write the command
        else:
            pytest.fail("hang guard: Redis never ran the reservation")
        assert not sent.done()  # its answer is on its way or in the socket, not yet read
        block_the_loop(4 * TIMEOUT)  # the answer waits in the socket; the deadline passes
        blocked += 1
        return await sent

    limit._reserve = reserve_then_block
    for _ in range(3):  # as many as it takes to declare an outage, were these timeouts
        limit._slots.clear()
        await asyncio.wait_for(take_turn(limit, 100.0, 4), GUARD)
    sync.close()
    assert blocked == 3
    assert limit.link.late == 3  # each answer was read after the deadline on the loop's clock
    assert limit.failures == 0
    assert limit.status == SHARED
    assert limit.round_trips == 4  # the hello, and each reservation was used
    assert warnings(caplog) == []


async def test_a_stopped_redis_process_fails_open_once_and_shares_again(
    redis_server: RedisServer, limit: SharedLimit, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="convai_async")
    assert await limit.connect()
    process = redis_server.process
    assert process is not None
    assert process.poll() is None
    os.kill(process.pid, signal.SIGSTOP)  # alive, connections accepted, nothing answered
    try:
        for _ in range(1000):  # hang guard: each turn ends after one timeout or two
            if limit.status == FALLBACK:
                break
            limit._slots.clear()  # every turn asks Redis, as a busy process would
            await asyncio.wait_for(take_turn(limit, 400.0, 4), GUARD)
        assert limit.status == FALLBACK
        assert limit.link.timeouts >= SLOW_STRIKES
        for _ in range(20):  # still paced, locally, and no more warnings
            await asyncio.wait_for(take_turn(limit, 400.0, 4), GUARD)
    finally:
        os.kill(process.pid, signal.SIGCONT)
    await until(lambda: limit.status == SHARED, "shared again after SIGCONT")
    assert len(warnings(caplog)) == 1
    assert "Redis did not answer (TimeoutError)" in warnings(caplog)[0].getMessage()


async def test_a_burst_of_states_and_pauses_is_a_few_writes(
    redis_server: RedisServer, limit: SharedLimit
) -> None:
    raw = aioredis.Redis.from_url(redis_server.url, decode_responses=True)
    keys = shared_keys(KEY)
    await take_turn(limit, None, 4)  # connected, the clocks' offset known
    for rate in range(50):  # one loop pass: as the limiter does on a burst of 429s
        limit.publish_state({"rate": float(rate)})
        limit.pause(1.0 + rate / 100)
    await limit.drain()
    stored = await raw.hgetall(keys.state)
    pause_ms = await raw.pttl(keys.pause)
    await raw.aclose()
    assert json.loads(stored["state"]) == {"rate": 49.0}  # the newest one
    assert int(stored["version"]) <= 2  # the first, then the newest: not 50
    assert pause_ms > 1000  # the longest pause asked for (1.49 s) was published
