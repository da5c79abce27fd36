"""Clients sharing one API key through a real redis-server, against FakeConvai over loopback:
one client's 429 pauses them all (read from the server's request log), and Redis stopped and
started again mid-run costs no item, no exception and one WARNING per client."""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis

from convai_async import ConvaiClient
from convai_async._engine.shared import SHARED, shared_keys
from convai_async.testing import FakeConvai, Faults

from .conftest import CANARY_KEY, FAST_RETRY
from .redis_server import RedisServer, serve_redis, until

GUARD = 60.0  # hang guard only
WORKER = "X-Test-Worker"
redis_server = pytest.fixture(serve_redis)


class OneRefusal:
    """A server limiter (``Faults.limiter``) refusing only its ``refuse_at``-th request, with
    Retry-After 2."""

    def __init__(self, refuse_at: int) -> None:
        self.refuse_at = refuse_at
        self.admitted = 0

    def admit(self, now: float) -> float | None:
        self.admitted += 1
        return 2.0 if self.admitted == self.refuse_at else None

    def done(self, now: float) -> None:
        pass


@pytest.fixture
async def sessions() -> AsyncIterator[list[aiohttp.ClientSession]]:
    made: list[aiohttp.ClientSession] = []
    yield made
    for session in made:
        await session.close()


def shared_client(
    fake: FakeConvai, server: RedisServer, sessions: list[Any], name: str, **options: Any
) -> ConvaiClient:
    """A client as one replica would make it; its requests carry its name for the log."""
    session = aiohttp.ClientSession(headers={WORKER: name})
    sessions.append(session)
    return ConvaiClient(
        api_key=fake.api_key,
        base_url=fake.url,
        session=session,
        retry=FAST_RETRY,
        redis_url=server.url,
        redis_timeout=2.0,  # generous: failing open is not what these tests are about
        **options,
    )


async def test_one_clients_retry_after_pauses_every_client(
    redis_server: RedisServer, sessions: list[Any]
) -> None:
    names = ["a", "b", "c"]
    # 20 ms per request: a request takes longer than the push of a pause, even on a busy machine
    refusal = OneRefusal(refuse_at=40)
    faults = Faults(latency=0.02, limiter=refusal, retry_after="seconds")
    async with FakeConvai(characters=90, api_key=CANARY_KEY, faults=faults) as fake:
        clients = [
            shared_client(fake, redis_server, sessions, name, max_concurrency=1) for name in names
        ]
        ids = fake.char_ids

        async def work(index: int, client: ConvaiClient) -> None:
            async with client:
                mine = ids[index * 30 : (index + 1) * 30]
                await client.characters.set_model(mine[0], "gpt-4.1")  # connects to Redis
                shared = client._session._limiter.shared  # type: ignore[attr-defined]
                # a pushed pause is in Redis time: readable once a round trip read its clock
                await until(lambda: shared.round_trips >= 1, "connected, Redis's clock read")
                for char_id in mine[1:]:
                    await client.characters.set_model(char_id, "gpt-4.1")

        await asyncio.wait_for(asyncio.gather(*(work(i, c) for i, c in enumerate(clients))), GUARD)
        assert fake.applied_updates == 90
        assert fake.rate_limited == 1
    log = fake.requests
    refused = log[refusal.refuse_at - 1]
    assert refused.status == 429
    refused_by = refused.headers[WORKER]
    # The refused client waits out its Retry-After (a floor), and so does everyone else: the
    # pause is pushed through Redis when the 429 arrives, so another client sends at most the
    # request it already had in flight then (and one more in a rare race with the push).
    pause_ends = refused.at + 2.0
    after = [r for r in log if r.at > refused.at]
    assert min(r.at for r in after if r.headers[WORKER] == refused_by) >= pause_ends
    for name in names:
        if name == refused_by:
            continue
        during = [r for r in after if r.headers[WORKER] == name and r.at < pause_ends - 0.05]
        assert len(during) <= 2, (name, len(during))
    # without the shared pause each of them would have gone on at full speed meanwhile
    assert len([r for r in after if r.at < pause_ends - 0.05]) <= 2 * (len(names) - 1)


async def test_redis_stopped_and_started_mid_run_costs_nothing(
    redis_server: RedisServer, sessions: list[Any], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="convai_async")
    faults = Faults(rate_limit=400.0, burst=20)
    per_client = 200
    async with FakeConvai(characters=4 * per_client, api_key=CANARY_KEY, faults=faults) as fake:
        clients = [
            shared_client(fake, redis_server, sessions, f"w{i}", max_concurrency=32, max_retries=20)
            for i in range(4)
        ]
        ids = fake.char_ids
        runs = [
            asyncio.create_task(
                client.bulk_set_model(ids[i * per_client : (i + 1) * per_client], "gpt-4.1")
            )
            for i, client in enumerate(clients)
        ]
        await until(lambda: fake.applied_updates >= 150, "a quarter of the run")
        await asyncio.to_thread(redis_server.stop)
        await until(lambda: fake.applied_updates >= 400, "half the run, without Redis")
        await asyncio.to_thread(redis_server.start)
        reports = await asyncio.wait_for(asyncio.gather(*runs), GUARD)
        assert [report.succeeded for report in reports] == [per_client] * 4
        assert [report.failed for report in reports] == [0] * 4, [r.failures[:1] for r in reports]
        assert fake.applied_updates == 4 * per_client
        await until(
            lambda: all(c.stats.shared_limit == SHARED for c in clients), "all shared again"
        )
        for client, char_id in zip(clients, ids, strict=False):
            await client.characters.set_temperature(char_id, 0.5)  # a turn through Redis
        raw = aioredis.Redis.from_url(redis_server.url, decode_responses=True)
        try:
            keys = shared_keys(CANARY_KEY)
            assert await raw.zcard(keys.live) == 4
            state = await raw.hgetall(keys.state)
        finally:
            await raw.aclose()
        for client in clients:
            assert client.stats.shared_limit_failures >= 1
            await client.close()
    # the learnt state was offered again to the restarted, empty Redis
    assert int(state["version"]) >= 1
    assert json.loads(state["state"])["phase"] in ("slow start", "steady")
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    shared_warnings = [m for m in warnings if m.startswith("shared rate limit")]
    processes = {re.search(r"process (\w+)", m).group(1) for m in shared_warnings}  # type: ignore[union-attr]
    assert len(shared_warnings) == 4
    assert len(processes) == 4  # exactly one each
