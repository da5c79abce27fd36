"""FakeConvai over real sockets: the limiter seam, tenant load, recorded statuses, helpers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import attrs
import pytest

from convai_async import ConvaiClient, NotFoundError, RateLimitError
from convai_async.testing import FakeConvai, Faults, ServerLimiter

HANG_GUARD = 60.0


@attrs.define
class GateLimiter:
    """Accepts ``capacity`` requests, then refuses with ``wait``; logs admit and done calls."""

    capacity: int
    wait: float = 0.35
    admitted: list[float] = attrs.field(factory=list)
    refused: int = 0
    finished: list[float] = attrs.field(factory=list)
    changed: asyncio.Event = attrs.field(factory=asyncio.Event)

    def admit(self, now: float) -> float | None:
        self.changed.set()
        if len(self.admitted) >= self.capacity:
            self.refused += 1
            return self.wait
        self.admitted.append(now)
        return None

    def done(self, now: float) -> None:
        self.finished.append(now)


def limiter(gate: GateLimiter) -> ServerLimiter:
    return gate


async def calls_until(gate: GateLimiter, condition: Callable[[], bool]) -> None:
    """Wait, call by call to the limiter, until ``condition`` holds (hang guard: a minute)."""
    while not condition():
        gate.changed.clear()
        await asyncio.wait_for(gate.changed.wait(), HANG_GUARD)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def post(
    http: aiohttp.ClientSession, fake: FakeConvai, path: str, body: Any
) -> tuple[int, dict[str, str], bytes]:
    headers = {"CONVAI-API-KEY": fake.api_key}
    async with http.post(fake.url + path, json=body, headers=headers) as response:
        return response.status, dict(response.headers), await response.read()


@pytest.mark.parametrize(
    ("style", "expected"), [("seconds", "1"), ("decimal", "0.35"), ("none", None)]
)
async def test_limiter_seam_admit_done_and_retry_after_style(
    http: aiohttp.ClientSession, style: str, expected: str | None
) -> None:
    gate = GateLimiter(capacity=2)
    faults = Faults(limiter=limiter(gate), retry_after=style)  # type: ignore[arg-type]
    async with FakeConvai(5, faults=faults) as fake:
        char_id = fake.char_ids[0]
        statuses = []
        for _ in range(3):
            status, headers, _ = await post(http, fake, "/character/get", {"charID": char_id})
            statuses.append(status)
        assert statuses == [200, 200, 429]
        assert headers.get("Retry-After") == expected
        assert len(gate.finished) == 2  # done() for each accepted request, none for the refusal
        assert all(a <= f for a, f in zip(gate.admitted, gate.finished, strict=True))
        assert [r.status for r in fake.requests] == [200, 200, 429]
        assert fake.rate_limited == 1


async def test_http_date_retry_after_is_in_the_future(http: aiohttp.ClientSession) -> None:
    faults = Faults(limiter=limiter(GateLimiter(capacity=0, wait=5.0)), retry_after="http-date")
    async with FakeConvai(1, faults=faults) as fake:
        status, headers, _ = await post(http, fake, "/character/list", None)
    assert status == 429
    assert headers["Retry-After"].endswith(" GMT")


async def test_done_is_called_for_dropped_and_failed_requests(http: aiohttp.ClientSession) -> None:
    gate = GateLimiter(capacity=10)
    faults = Faults(limiter=limiter(gate), drop_before_ratio=1.0, limit=1)
    async with FakeConvai(1, faults=faults) as fake:
        with pytest.raises(aiohttp.ClientError):
            await post(http, fake, "/character/list", None)
        status, _, _ = await post(http, fake, "/character/list", None)
        assert status == 200
        assert len(gate.finished) == 2
        assert [r.status for r in fake.requests] == [None, 200]


async def test_builtin_bucket_still_answers_429_with_seconds(http: aiohttp.ClientSession) -> None:
    async with FakeConvai(1, faults=Faults(rate_limit=0.01, burst=2)) as fake:
        answers = [(await post(http, fake, "/character/list", None))[:2] for _ in range(3)]
    assert [status for status, _ in answers] == [200, 200, 429]
    assert answers[2][1]["Retry-After"] == "100"


async def test_tenant_load_goes_through_the_limiter_and_stops_when_set_to_zero() -> None:
    gate = GateLimiter(capacity=1_000_000)
    faults = Faults(limiter=limiter(gate), tenant_rate=200.0)
    async with FakeConvai(1, faults=faults) as fake:
        await calls_until(gate, lambda: fake.tenant_requests >= 5)
        fake.faults.tenant_rate = 0
        stopped_at = fake.tenant_requests
        # Not a synchronisation: room for dozens more at 200/s, had the load not stopped. On a
        # busy machine the check only gets weaker; it cannot fail wrongly.
        await asyncio.sleep(0.2)
        assert fake.tenant_requests == stopped_at
        assert fake.request_counts == {}  # the tenant's requests are counted apart
        assert len(gate.finished) == len(gate.admitted)
        assert fake.snapshot()["tenant_requests"] == fake.tenant_requests


async def test_tenant_load_consumes_the_capacity_the_client_sees(
    http: aiohttp.ClientSession,
) -> None:
    gate = GateLimiter(capacity=3)
    async with FakeConvai(1, faults=Faults(limiter=limiter(gate), tenant_rate=500.0)) as fake:
        await calls_until(gate, lambda: gate.refused > 0)
        status, _, _ = await post(http, fake, "/character/list", None)
        assert status == 429
        assert fake.tenant_rate_limited >= 1
        assert fake.request_counts["/character/list"] == 1


async def test_tenant_task_ends_with_the_fake() -> None:
    fake = await FakeConvai(1, faults=Faults(tenant_rate=100.0)).start()
    await fake.close()
    tasks = [t for t in asyncio.all_tasks() if "_tenant_load" in repr(t.get_coro())]
    assert tasks == []


async def test_get_by_name_of_an_unknown_name_is_not_found() -> None:
    async with FakeConvai(3) as fake:
        async with ConvaiClient(api_key=fake.api_key, base_url=fake.url) as client:
            with pytest.raises(NotFoundError) as caught:
                await client.characters.get_by_name("Nobody At All")
    assert caught.value.status == 400  # the docs' answer; the client calls it not found
    assert "database calls failed" in caught.value.message


async def test_helpers_follow_updates_and_reset(http: aiohttp.ClientSession) -> None:
    async with FakeConvai(3) as fake:
        one, two, _ = fake.char_ids
        body = {"charID": one, "model_group_name": "gpt-4.1"}
        assert (await post(http, fake, "/character/update", body))[0] == 200
        fake.assert_updated(one, model="gpt-4.1")
        fake.assert_not_updated(two)
        assert fake.updates_for(one) == [body]
        with pytest.raises(AssertionError, match=r"model is 'gpt-4.1', expected 'gpt-4o-mini'"):
            fake.assert_updated(one, model="gpt-4o-mini")
        with pytest.raises(AssertionError, match="updated 1 time"):
            fake.assert_not_updated(one)
        with pytest.raises(AssertionError, match="no character"):
            fake.assert_updated("nope")
        fake.reset_requests()
        assert (fake.requests, dict(fake.request_counts), fake.updates_for(one)) == ([], {}, [])
        fake.assert_not_updated(one)
        assert fake.model_of(one) == "gpt-4.1"  # the state stays


@pytest.mark.parametrize(("style", "granularity"), [("seconds", 1.0), ("decimal", 0.0)])
async def test_the_client_tells_its_limiter_a_whole_second_retry_after(
    style: str, granularity: float
) -> None:
    # "Retry-After: 1" may be a 5 ms wait rounded up: the controller must know it (a quota is
    # not taken as spent for a pause that may be all rounding); "0.35" is exact.
    faults = Faults(limiter=limiter(GateLimiter(capacity=0)), retry_after=style)  # type: ignore[arg-type]
    async with FakeConvai(1, faults=faults) as fake:
        async with ConvaiClient(
            api_key=fake.api_key, base_url=fake.url, max_retries=0, allow_insecure_http=True
        ) as client:
            with pytest.raises(RateLimitError):
                await client.characters.get(fake.char_ids[0])
            state = client._session._limiter.load_state()
    assert state.phase != "open"  # the 429 reached the controller
    assert state.guessed == granularity
