"""The session manager: limiter, Retry-After, retries, retry budget, reconciliation, cancellation.

All against real sockets (FakeConvai or a scripted aiohttp.web server)."""

from __future__ import annotations

import asyncio
import logging
import time
from email.utils import formatdate
from typing import Any

import pytest

from convai_async import (
    AuthenticationError,
    BadRequestError,
    ConflictError,
    ConvaiClient,
    ConvaiTimeoutError,
    NotFoundError,
    PermissionDeniedError,
    QuotaExceededError,
    RateLimitError,
    RetryPolicy,
    ServerError,
    UnexpectedResponseError,
)
from convai_async.testing import FakeConvai, Faults

from .conftest import CANARY_KEY, FAST_RETRY, ClientFactory
from .scripted import Reply, scripted_server

SUCCESS: Reply = (200, {"Content-Type": "application/json"}, b'{"STATUS": "SUCCESS"}')
RATE_LIMITED = b'{"API_ERROR": "API rate limit exceeded. Please try again later."}'
HTML = b"<html><body>Bad gateway</body></html>"


def arrival_gap(seen: list[dict[str, Any]], times: list[float], first: int, second: int) -> float:
    return times[second] - times[first]


async def timed_scripted(replies: list[Reply]) -> Any:
    """A scripted server that also stamps arrival times."""
    times: list[float] = []

    def reply(request: Any) -> Reply:
        times.append(time.monotonic())
        return replies[min(len(times), len(replies)) - 1]

    return scripted_server(reply), times


# -- Retry-After -------------------------------------------------------------------------------


async def test_retry_after_seconds_is_honoured() -> None:
    server, times = await timed_scripted([(429, {"Retry-After": "1"}, RATE_LIMITED), SUCCESS])
    async with (
        server as (url, seen),
        ConvaiClient(api_key="k", base_url=url, retry=FAST_RETRY) as client,
    ):
        await client.characters.set_model("c", "m")
    assert len(seen) == 2
    assert times[1] - times[0] >= 0.95  # a floor: the machine's load can only add to it


async def test_retry_after_http_date_is_honoured() -> None:
    def replies(request: Any) -> Reply:
        times.append(time.monotonic())
        if len(times) == 1:
            return (429, {"Retry-After": formatdate(time.time() + 2, usegmt=True)}, RATE_LIMITED)
        return SUCCESS

    times: list[float] = []
    async with scripted_server(replies) as (url, seen):
        async with ConvaiClient(api_key="k", base_url=url, retry=FAST_RETRY) as client:
            await client.characters.set_model("c", "m")
    assert len(seen) == 2
    # an HTTP-date has one-second resolution: "now + 2 s" means a wait of 1 to 2 seconds
    assert times[1] - times[0] >= 0.95


async def test_a_retry_after_beyond_max_retry_after_fails_at_once() -> None:
    server, _ = await timed_scripted([(429, {"Retry-After": "3600"}, RATE_LIMITED), SUCCESS])
    async with (
        server as (url, seen),
        ConvaiClient(api_key="k", base_url=url, retry=FAST_RETRY, max_retry_after=60) as client,
    ):
        with pytest.raises(RateLimitError) as caught:
            await client.characters.set_model("c", "m")
        assert client.stats.paused_for > 3000  # the floor stays: nothing is sent before it
    assert caught.value.retry_after == 3600
    assert len(seen) == 1


# -- retries -------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [500, 502, 503, 504])
async def test_retryable_statuses_recover(status: int) -> None:
    async with (
        scripted_server([(status, {"Content-Type": "text/html"}, HTML), SUCCESS]) as (
            url,
            seen,
        ),
        ConvaiClient(api_key="k", base_url=url, retry=FAST_RETRY) as client,
    ):
        await client.characters.set_model("c", "m")
        assert client.stats.retries == 1
    assert len(seen) == 2


async def test_429_without_retry_after_is_retried_with_backoff() -> None:
    async with scripted_server([(429, {}, RATE_LIMITED), SUCCESS]) as (url, seen):
        async with ConvaiClient(api_key="k", base_url=url, retry=FAST_RETRY) as client:
            await client.characters.set_model("c", "m")
            assert client.stats.rate_limited == 1
    assert len(seen) == 2


@pytest.mark.parametrize(
    "faults",
    [
        Faults(drop_before_ratio=0.3),
        Faults(drop_after_ratio=0.3),
        Faults(server_error_ratio=0.3),
        Faults(truncate_ratio=0.3),
        Faults(hang_ratio=0.3, hang_seconds=5.0),
    ],
    ids=["drop-before", "drop-after", "5xx-html", "truncated-body", "hang"],
)
async def test_transport_faults_recover(faults: Faults) -> None:
    hangs = faults.hang_ratio > 0
    async with FakeConvai(characters=20, faults=faults) as fake:
        async with ConvaiClient(
            api_key=fake.api_key,
            base_url=fake.url,
            retry=FAST_RETRY,
            max_retries=10,
            timeout=1.0 if hangs else 30.0,
        ) as client:
            await asyncio.gather(
                *(client.characters.set_temperature(c, 0.5) for c in fake.char_ids)
            )
            retries = client.stats.retries
        assert fake.faults_injected > 0
        if hangs:  # on a busy machine a healthy request may time out too, and be retried
            assert retries >= fake.faults_injected
        else:
            assert retries == fake.faults_injected
        assert all(fake.temperature_of(c) == 0.5 for c in fake.char_ids)


@pytest.mark.parametrize(
    ("reply", "error"),
    [
        ((400, {}, b'{"ERROR": "bad"}'), BadRequestError),
        ((401, {}, b'{"API_ERROR": "Invalid API key provided.'), AuthenticationError),
        (
            (403, {}, b'{"status": "error", "message": "Enterprise plan required"}'),
            PermissionDeniedError,
        ),
        ((404, {}, b'{"status": "error", "message": "Model not found"}'), NotFoundError),
        (
            (409, {}, b'{"status": "error", "message": "Display name already exists"}'),
            ConflictError,
        ),
        (
            (
                429,
                {"Retry-After": "1"},
                b'{"API_ERROR": "API usage limit exceeded for current plan."}',
            ),
            QuotaExceededError,
        ),
        ((501, {}, b"not implemented"), ServerError),
        ((200, {}, b'{"STATUS": "FAILURE"}'), UnexpectedResponseError),
        (
            (200, {"Content-Type": "text/html"}, b"<html>maintenance</html>"),
            UnexpectedResponseError,
        ),
    ],
)
async def test_non_retryable_errors_after_exactly_one_request(
    reply: Reply, error: type[Exception]
) -> None:
    async with scripted_server([reply, SUCCESS]) as (url, seen):
        async with ConvaiClient(api_key="k", base_url=url, retry=FAST_RETRY) as client:
            with pytest.raises(error):
                await client.characters.set_model("c", "m")
    assert len(seen) == 1


async def test_max_retries_bounds_attempts() -> None:
    async with (
        scripted_server([(503, {}, HTML)]) as (url, seen),
        ConvaiClient(api_key="k", base_url=url, retry=FAST_RETRY, max_retries=3) as client,
    ):
        with pytest.raises(ServerError):
            await client.characters.set_model("c", "m")
    assert len(seen) == 4


async def test_outage_does_not_amplify() -> None:
    """Server 100% down: 200 concurrent calls with max_retries=5 must not send 200 x 6."""
    async with FakeConvai(characters=200, faults=Faults(server_error_ratio=1.0)) as fake:
        async with ConvaiClient(
            api_key=fake.api_key,
            base_url=fake.url,
            retry=FAST_RETRY,
            max_retries=5,
            max_concurrency=32,
        ) as client:
            results = await asyncio.gather(
                *(client.characters.set_model(c, "gpt-4.1") for c in fake.char_ids),
                return_exceptions=True,
            )
            assert client.stats.retry_budget_left < FAST_RETRY.retry_cost
        assert all(isinstance(r, ServerError) for r in results)
        sent = fake.request_counts["/character/update"]
        assert 200 <= sent <= 200 + FAST_RETRY.budget // FAST_RETRY.retry_cost + 1
        assert sent < 200 * 6 / 3


async def test_retry_budget_refills_on_success() -> None:
    policy = RetryPolicy(
        initial_wait=0.001, max_wait=0.002, budget=10, retry_cost=5, success_refund=1
    )
    async with FakeConvai(characters=10) as fake:
        async with ConvaiClient(api_key=fake.api_key, base_url=fake.url, retry=policy) as client:
            fake.faults = Faults(server_error_ratio=1.0)
            for _ in range(3):
                with pytest.raises(ServerError):
                    await client.characters.set_model(fake.char_ids[0], "m")
            assert client.stats.retry_budget_left == 0
            fake.faults = Faults()
            for char_id in fake.char_ids:
                await client.characters.set_model(char_id, "m")
            assert client.stats.retry_budget_left == 10


# -- rate limit convergence ----------------------------------------------------------------------


async def test_converges_to_server_rate_with_few_429s() -> None:
    """100 calls at concurrency 16 against a 20 rps server: all succeed, few 429s, near ideal."""
    faults = Faults(rate_limit=20, burst=5)
    async with FakeConvai(characters=100, faults=faults) as fake:
        async with ConvaiClient(
            api_key=fake.api_key,
            base_url=fake.url,
            max_concurrency=16,
            retry=RetryPolicy(initial_wait=0.05, max_wait=1.0),
        ) as client:
            started = time.monotonic()
            await asyncio.gather(
                *(client.characters.set_temperature(c, 0.3) for c in fake.char_ids)
            )
            elapsed = time.monotonic() - started
            stats = client.stats
        assert all(fake.temperature_of(c) == 0.3 for c in fake.char_ids)
        ideal = (100 - faults.burst) / faults.rate_limit
        share_429 = stats.rate_limited / stats.requests
        print(f"20 rps: {elapsed:.2f}s (ideal {ideal:.2f}s), 429 share {share_429:.1%}, {stats}")
        assert share_429 <= 0.2


# -- concurrency, cancellation -------------------------------------------------------------------


async def test_in_flight_bound_holds_under_load() -> None:
    async with FakeConvai(characters=200, faults=Faults(latency=(0.005, 0.02))) as fake:
        async with ConvaiClient(
            api_key=fake.api_key, base_url=fake.url, max_concurrency=8
        ) as client:
            await asyncio.gather(
                *(client.characters.set_model(c, "gpt-4.1") for c in fake.char_ids)
            )
        assert fake.max_in_flight == 8


async def test_cancellation_releases_slots_and_leaves_nothing_behind() -> None:
    async with (
        FakeConvai(characters=40, faults=Faults(latency=30.0)) as fake,
        ConvaiClient(api_key=fake.api_key, base_url=fake.url, max_concurrency=4) as client,
    ):
        tasks = [asyncio.create_task(client.characters.get(c)) for c in fake.char_ids]
        while fake.in_flight < 4:
            await asyncio.sleep(0.005)
        for task in tasks:
            task.cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        assert all(isinstance(r, asyncio.CancelledError) for r in results)
        assert client.stats.in_flight == 0
        fake.faults = Faults()
        await client.characters.get(fake.char_ids[0])  # the freed slots serve new calls
    assert asyncio.all_tasks() == {asyncio.current_task()}  # client and server both gone


async def test_deadline_bounds_the_whole_call() -> None:
    async with FakeConvai(characters=1, faults=Faults(hang_ratio=1.0, hang_seconds=30)) as fake:
        async with ConvaiClient(
            api_key=fake.api_key,
            base_url=fake.url,
            timeout=0.2,
            deadline=0.5,
            retry=FAST_RETRY,
            max_retries=100,
        ) as client:
            with pytest.raises(ConvaiTimeoutError) as caught:
                await client.characters.get(fake.char_ids[0])
            assert "deadline" in str(caught.value)
            assert client.stats.failed == 1


async def test_timeout_is_a_timeout_error() -> None:
    async with FakeConvai(characters=1, faults=Faults(hang_ratio=1.0, hang_seconds=30)) as fake:
        async with ConvaiClient(
            api_key=fake.api_key, base_url=fake.url, timeout=0.1, retry=FAST_RETRY, max_retries=1
        ) as client:
            with pytest.raises(TimeoutError) as caught:
                await client.characters.get(fake.char_ids[0])
        assert isinstance(caught.value, ConvaiTimeoutError)
        assert fake.request_counts["/character/get"] == 2


# -- ambiguous writes ----------------------------------------------------------------------------


async def test_register_reconciles_a_lost_answer(
    fake: FakeConvai, make_client: ClientFactory
) -> None:
    fake.faults = Faults(drop_after_ratio=1.0, limit=1, paths=frozenset({"/llm-models/register"}))
    client = make_client()
    registered = await client.llm_models.register(
        "g", "gpt-4o-mini", "sk-1", False, display_name="G"
    )
    assert registered.reconciled
    assert registered.model_group_name == "g"
    assert fake.request_counts["/llm-models/register"] == 2  # the lost one, then the 409
    assert fake.request_counts["/llm-models/list"] == 1
    assert list(fake.custom_models) == ["g"]


async def test_register_conflict_with_someone_elses_model_is_raised(
    fake: FakeConvai, make_client: ClientFactory
) -> None:
    client = make_client()
    await client.llm_models.register("g", "other-model", "sk-1", False)
    fake.faults = Faults(drop_before_ratio=1.0, limit=1, paths=frozenset({"/llm-models/register"}))
    with pytest.raises(ConflictError):
        await client.llm_models.register("g", "gpt-4o-mini", "sk-1", False)
    assert fake.custom_models["g"]["model_name"] == "other-model"


async def test_deregister_reconciles_a_lost_answer(
    fake: FakeConvai, make_client: ClientFactory
) -> None:
    client = make_client()
    await client.llm_models.register("g", "m", "sk-1", False)
    fake.faults = Faults(drop_after_ratio=1.0, limit=1, paths=frozenset({"/llm-models/deregister"}))
    result = await client.llm_models.deregister("g")
    assert result.reconciled
    assert fake.custom_models == {}


# -- observability -------------------------------------------------------------------------------


async def test_logs_attempts_and_retries_without_the_key(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="convai_async")
    async with scripted_server([(503, {}, HTML), SUCCESS]) as (url, _):
        async with ConvaiClient(api_key=CANARY_KEY, base_url=url, retry=FAST_RETRY) as client:
            await client.characters.set_model("c", "m")
    debug = [r for r in caplog.records if r.levelno == logging.DEBUG]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(debug) == 2
    assert "status=503" in debug[0].getMessage()
    assert "status=200" in debug[1].getMessage()
    assert "latency_ms=" in debug[1].getMessage()
    assert len(warnings) == 1
    assert "retrying" in warnings[0].getMessage()
    assert all(CANARY_KEY not in r.getMessage() for r in caplog.records)


async def test_stats_count_requests_retries_and_429s() -> None:
    replies = [(429, {}, RATE_LIMITED), (503, {}, HTML), SUCCESS]
    async with scripted_server(replies) as (url, _):
        async with ConvaiClient(api_key="k", base_url=url, retry=FAST_RETRY) as client:
            await client.characters.set_model("c", "m")
            stats = client.stats
    assert (stats.requests, stats.retries, stats.rate_limited, stats.succeeded) == (3, 2, 1, 1)
    assert stats.effective_concurrency == 16  # a rate limit: the send window stays open
    assert stats.effective_rate is not None
