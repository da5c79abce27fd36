"""Closing under load, and one client per event loop."""

from __future__ import annotations

import asyncio
import gc
import os
import threading
import warnings
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from convai_async import ClientClosedError, ConvaiClient, ValidationError
from convai_async.errors import WrongEventLoopError
from convai_async.testing import FakeConvai, Faults

from .conftest import FAST_RETRY

HANG_GUARD = 60.0  # seconds; a correct run never comes near


def open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


def unclosed_sessions() -> list[aiohttp.ClientSession]:
    gc.collect()
    return [o for o in gc.get_objects() if isinstance(o, aiohttp.ClientSession) and not o.closed]


class Gate:
    """A server whose answers wait for ``release``; ``arrived`` is set when ``expected`` are in."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.seen = 0
        self.arrived = asyncio.Event()
        self.release = asyncio.Event()

    async def handle(self, request: web.Request) -> web.Response:
        await request.read()
        self.seen += 1
        if self.seen >= self.expected:
            self.arrived.set()
        await self.release.wait()
        return web.json_response({"STATUS": "SUCCESS"})


@asynccontextmanager
async def gated(expected: int) -> AsyncIterator[tuple[str, Gate]]:
    gate = Gate(expected)
    app = web.Application()
    app.router.add_post("/character/update", gate.handle)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.2)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}", gate
    finally:
        gate.release.set()
        await runner.cleanup()


def when_done(tasks: list[asyncio.Task[Any]], count: int) -> asyncio.Event:
    """An event set once ``count`` of ``tasks`` have finished."""
    done = asyncio.Event()
    finished = 0

    def one(_: asyncio.Task[Any]) -> None:
        nonlocal finished
        finished += 1
        if finished >= count:
            done.set()

    for task in tasks:
        task.add_done_callback(one)
    return done


async def test_close_fails_queued_calls_at_once_and_lets_calls_in_flight_finish() -> None:
    async with gated(expected=4) as (url, gate):
        client = ConvaiClient(api_key="k", base_url=url, max_concurrency=4, retry=FAST_RETRY)
        tasks = [asyncio.create_task(client.characters.set_model(f"c{i}", "m")) for i in range(500)]
        await asyncio.wait_for(gate.arrived.wait(), HANG_GUARD)
        queued_failed = when_done(tasks, 496)
        closing = asyncio.create_task(client.close(grace=HANG_GUARD))
        await asyncio.wait_for(queued_failed.wait(), HANG_GUARD)
        assert not closing.done()  # it waits for the four in flight
        gate.release.set()
        await asyncio.wait_for(closing, HANG_GUARD)
        seen_at_close = gate.seen
        results = await asyncio.gather(*tasks, return_exceptions=True)
    closed = [r for r in results if isinstance(r, ClientClosedError)]
    assert len(closed) == 496
    assert not any(error.request_sent for error in closed)
    assert results.count(None) == 4
    assert seen_at_close == gate.seen == 4
    assert unclosed_sessions() == []


async def test_calls_still_in_flight_after_the_grace_period_are_cancelled() -> None:
    async with gated(expected=2) as (url, gate):
        client = ConvaiClient(api_key="k", base_url=url, max_concurrency=2, retry=FAST_RETRY)
        tasks = [asyncio.create_task(client.characters.set_model(f"c{i}", "m")) for i in range(5)]
        await asyncio.wait_for(gate.arrived.wait(), HANG_GUARD)
        await client.close(grace=0.05)  # the server never answers on its own
        assert all(task.done() for task in tasks[:2])
        results = await asyncio.gather(*tasks, return_exceptions=True)
        assert gate.seen == 2
    assert all(isinstance(r, ClientClosedError) for r in results)
    in_flight = [r for r in results if isinstance(r, ClientClosedError) and r.request_sent]
    assert len(in_flight) == 2  # the write may have been applied: said so
    assert unclosed_sessions() == []


async def test_five_hundred_queued_calls_and_no_request_after_close_returned() -> None:
    gc.collect()
    before = open_descriptors()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        async with FakeConvai(characters=20, faults=Faults(latency=0.05)) as fake:
            client = ConvaiClient(
                api_key=fake.api_key, base_url=fake.url, max_concurrency=4, retry=FAST_RETRY
            )
            ids = fake.char_ids
            tasks = [
                asyncio.create_task(client.characters.set_model(ids[i % 20], "gpt-4o"))
                for i in range(500)
            ]
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            await client.close()
            seen_at_close = sum(fake.request_counts.values())
            results = await asyncio.gather(*tasks, return_exceptions=True)
            for _ in range(10):  # anything still on its way would arrive now
                await asyncio.sleep(0)
            seen_later = sum(fake.request_counts.values())
            with pytest.raises(ClientClosedError):
                await client.characters.set_model(ids[0], "gpt-4o")
        del client
        gc.collect()
    assert seen_later == seen_at_close < 500
    assert results.count(None) + sum(isinstance(r, ClientClosedError) for r in results) == 500
    assert sum(isinstance(r, ClientClosedError) for r in results) >= 400
    assert unclosed_sessions() == []
    assert [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)] == []
    assert open_descriptors() <= before


async def test_close_twice_at_once_and_a_bad_grace() -> None:
    client = ConvaiClient(api_key="k")
    with pytest.raises(ValidationError):
        await client.close(grace=-1)
    await asyncio.gather(client.close(), client.close())
    assert client.closed
    with pytest.raises(ClientClosedError):
        async with client:
            pass


# -- one client per event loop -------------------------------------------------------------------


def test_a_second_asyncio_run_raises_at_once() -> None:
    client_box: list[ConvaiClient] = []

    async def first() -> None:
        async with FakeConvai(characters=1) as fake:
            client = ConvaiClient(api_key=fake.api_key, base_url=fake.url)
            client_box.append(client)
            await client.characters.list()
            await client.close()

    async def second() -> None:
        client = client_box[0]
        with pytest.raises(WrongEventLoopError, match="one client per event loop"):
            await client.characters.list()
        with pytest.raises(WrongEventLoopError):
            async with client:
                pass

    asyncio.run(first())
    asyncio.run(second())


async def test_two_threads_with_two_loops_the_second_raises() -> None:
    async with FakeConvai(characters=1, faults=Faults(latency=0.01)) as fake:
        client = ConvaiClient(api_key=fake.api_key, base_url=fake.url)
        bound = threading.Event()
        second_done = threading.Event()
        outcomes: dict[str, object] = {}

        async def owner() -> None:
            await client.characters.list()
            bound.set()
            await asyncio.to_thread(second_done.wait, HANG_GUARD)
            outcomes["owner"] = len(await client.characters.list())
            await client.close()

        async def intruder() -> None:
            try:
                await client.characters.list()
                outcomes["intruder"] = "no error"
            except WrongEventLoopError as error:
                outcomes["intruder"] = error

        def run_intruder() -> None:
            bound.wait(HANG_GUARD)
            try:
                asyncio.run(intruder())
            finally:
                second_done.set()

        threads = [
            threading.Thread(target=asyncio.run, args=(owner(),)),
            threading.Thread(target=run_intruder),
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            await asyncio.to_thread(thread.join, HANG_GUARD)
        assert not any(thread.is_alive() for thread in threads)
    assert isinstance(outcomes["intruder"], WrongEventLoopError)
    assert outcomes["owner"] == 1
