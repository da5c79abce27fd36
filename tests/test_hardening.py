"""Hostile servers, bad input and secrets: each promise of SECURITY.md with a test."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import ssl
import traceback
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import trustme
from aiohttp import web

from convai_async import (
    AuthenticationError,
    CharacterUpdate,
    ConvaiClient,
    ConvaiConnectionError,
    ConvaiError,
    ConvaiTimeoutError,
    RetryPolicy,
    UnexpectedResponseError,
    ValidationError,
)
from convai_async.models import ModelRegistration, ModelUpdate
from convai_async.testing import FakeConvai, Faults

from .conftest import CANARY_KEY, CANARY_LLM_KEY, FAST_RETRY
from .scripted import scripted_server

NO_RETRY = RetryPolicy(initial_wait=0.001, max_wait=0.001)


def chain(error: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def assert_no_secret(error: BaseException, *secrets: str) -> None:
    rendered = "".join(traceback.format_exception(error))
    for link in chain(error):
        rendered += repr(link) + str(link) + repr(vars(link))
    for secret in secrets:
        assert secret not in rendered, f"secret leaked via {type(error).__name__}"
    for link in chain(error):
        assert not isinstance(link, aiohttp.ClientError), "aiohttp exception chained"


# -- secrets ------------------------------------------------------------------------------------


def test_reprs_hold_no_secrets() -> None:
    client = ConvaiClient(api_key=CANARY_KEY)
    registration = ModelRegistration("g", "m", api_key=CANARY_LLM_KEY, is_uncensored=False)
    change = ModelUpdate("g", api_key=CANARY_LLM_KEY)
    for thing in (client, registration, change, client.characters, client.llm_models, client.stats):
        assert CANARY_KEY not in repr(thing) + str(thing)
        assert CANARY_LLM_KEY not in repr(thing) + str(thing)


async def test_errors_hold_no_secrets_whatever_went_wrong(tmp_path: Path) -> None:
    errors: list[BaseException] = []

    async def collect(client: ConvaiClient, call: Any) -> None:
        with pytest.raises(ConvaiError) as caught:
            await call(client)
        errors.append(caught.value)

    # a server that echoes the key back in its error message
    echo = (401, {}, f'{{"API_ERROR": "Invalid API key provided: {CANARY_KEY}"}}'.encode())
    async with scripted_server([echo]) as (url, _):
        async with ConvaiClient(api_key=CANARY_KEY, base_url=url, retry=NO_RETRY) as client:
            await collect(client, lambda c: c.characters.get("x"))
    llm_echo = (400, {}, f'{{"status": "error", "message": "bad key {CANARY_LLM_KEY}"}}'.encode())
    async with scripted_server([llm_echo]) as (url, _):
        async with ConvaiClient(api_key=CANARY_KEY, base_url=url, retry=NO_RETRY) as client:
            await collect(client, lambda c: c.llm_models.register("g", "m", CANARY_LLM_KEY, False))
    # nobody listening
    async with ConvaiClient(
        api_key=CANARY_KEY, base_url="http://127.0.0.1:9", retry=NO_RETRY, max_retries=1
    ) as client:
        await collect(client, lambda c: c.characters.list())
    # hangs, drops, truncation, oversize, bad success bodies
    for faults in (
        Faults(hang_ratio=1.0, hang_seconds=5),
        Faults(drop_before_ratio=1.0),
        Faults(truncate_ratio=1.0),
        Faults(oversize_bytes=2 << 20),
        Faults(success_body=b"<html>ok</html>"),
    ):
        async with FakeConvai(characters=1, api_key=CANARY_KEY, faults=faults) as fake:
            async with ConvaiClient(
                api_key=CANARY_KEY, base_url=fake.url, retry=NO_RETRY, max_retries=1, timeout=0.2
            ) as client:
                await collect(client, lambda c, f=fake: c.characters.set_model(f.char_ids[0], "m"))
    # a caller's session that raises aiohttp's own ClientResponseError (its repr holds headers)
    async with scripted_server([(401, {}, b'{"API_ERROR": "nope"}')]) as (url, _):
        async with aiohttp.ClientSession(raise_for_status=True) as session:
            async with ConvaiClient(api_key=CANARY_KEY, base_url=url, session=session) as client:
                await collect(client, lambda c: c.characters.list())
    kinds = {type(e).__name__ for e in errors}
    assert {
        "AuthenticationError",
        "BadRequestError",
        "ConvaiConnectionError",
        "ConvaiTimeoutError",
        "UnexpectedResponseError",
    } <= kinds
    assert isinstance(errors[0], AuthenticationError)
    assert "[redacted]" in str(errors[0])
    for error in errors:
        assert_no_secret(error, CANARY_KEY, CANARY_LLM_KEY)


async def test_debug_logs_hold_no_secrets(caplog: pytest.LogCaptureFixture, tmp_path: Path) -> None:
    caplog.set_level(logging.DEBUG)
    faults = Faults(server_error_ratio=0.3, drop_after_ratio=0.2)
    async with FakeConvai(characters=30, api_key=CANARY_KEY, faults=faults) as fake:
        async with ConvaiClient(
            api_key=CANARY_KEY, base_url=fake.url, retry=FAST_RETRY, max_retries=8
        ) as client:
            await client.bulk_set_model(fake.char_ids, "gpt-4.1", journal=tmp_path / "j.jsonl")
            await client.llm_models.register("g", "m", CANARY_LLM_KEY, False)
            await client.llm_models.update("g", api_key=CANARY_LLM_KEY)
        async with ConvaiClient(api_key=CANARY_KEY + "x", base_url=fake.url) as wrong:
            with pytest.raises(AuthenticationError):
                await wrong.characters.list()
    text = "\n".join(r.getMessage() + str(r.args) for r in caplog.records)
    assert "retrying" in text
    assert "attempt=" in text
    assert CANARY_KEY not in text
    assert CANARY_LLM_KEY not in text
    journal = (tmp_path / "j.jsonl").read_text()
    assert CANARY_KEY not in journal
    assert "gpt-4.1" in journal


# -- redirects, TLS, plain http -----------------------------------------------------------------


async def test_redirects_are_not_followed_and_the_key_never_leaves_the_origin() -> None:
    async with scripted_server([(200, {}, b'{"STATUS": "SUCCESS"}')]) as (elsewhere, stolen):
        faults = Faults(redirect_to=elsewhere)
        async with FakeConvai(characters=1, api_key=CANARY_KEY, faults=faults) as fake:
            async with ConvaiClient(
                api_key=CANARY_KEY, base_url=fake.url, retry=NO_RETRY
            ) as client:
                with pytest.raises(
                    UnexpectedResponseError, match="redirect not followed"
                ) as caught:
                    await client.characters.set_model(fake.char_ids[0], "gpt-4.1")
            assert caught.value.status == 307
            assert fake.request_counts["/character/update"] == 1
        assert stolen == []


@pytest.mark.parametrize(
    "url", ["http://api.convai.com", "http://10.0.0.5:8080", "http://example.com/path"]
)
def test_plain_http_to_a_remote_host_needs_an_explicit_opt_in(url: str) -> None:
    with pytest.raises(ValidationError, match="allow_insecure_http") as caught:
        ConvaiClient(api_key="k", base_url=url)
    assert caught.value.field == "base_url"
    ConvaiClient(api_key="k", base_url=url, allow_insecure_http=True)


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1:8080", "http://localhost:1", "http://[::1]:80", "https://api.convai.com"],
)
def test_loopback_and_https_are_fine(url: str) -> None:
    ConvaiClient(api_key="k", base_url=url)


@pytest.mark.parametrize("url", ["ftp://api.convai.com", "api.convai.com", "https://", ""])
def test_base_url_must_be_http_url(url: str) -> None:
    with pytest.raises(ValidationError):
        ConvaiClient(api_key="k", base_url=url)


async def test_tls_certificates_are_verified() -> None:
    authority = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("127.0.0.1").configure_cert(server_context)
    seen: list[str] = []

    async def handle(request: web.Request) -> web.Response:
        seen.append(request.headers.get("CONVAI-API-KEY", ""))
        return web.json_response({"STATUS": "SUCCESS"})

    app = web.Application()
    app.router.add_post("/character/update", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_context)
    await site.start()
    url = f"https://127.0.0.1:{runner.addresses[0][1]}"
    try:
        async with ConvaiClient(
            api_key=CANARY_KEY, base_url=url, retry=NO_RETRY, max_retries=0
        ) as client:
            with pytest.raises(ConvaiConnectionError) as caught:
                await client.characters.set_model("c", "m")
        assert not caught.value.request_sent
        assert_no_secret(caught.value, CANARY_KEY)
        assert seen == []  # the key never went to a server whose certificate failed
        # trusting the CA (through the caller's own session) works: verification is real
        client_context = ssl.create_default_context()
        authority.configure_trust(client_context)
        connector = aiohttp.TCPConnector(ssl=client_context)
        async with aiohttp.ClientSession(connector=connector) as session:
            async with ConvaiClient(api_key=CANARY_KEY, base_url=url, session=session) as client:
                await client.characters.set_model("c", "m")
        assert seen == [CANARY_KEY]
    finally:
        await runner.cleanup()


# -- response size, truncation, slow drip, hangs ---------------------------------------------------


async def test_oversized_update_response_is_refused() -> None:
    async with FakeConvai(characters=1, faults=Faults(oversize_bytes=2 << 20)) as fake:
        async with ConvaiClient(api_key=fake.api_key, base_url=fake.url, retry=NO_RETRY) as client:
            with pytest.raises(UnexpectedResponseError, match="cap"):
                await client.characters.set_model(fake.char_ids[0], "m")
        assert fake.request_counts["/character/update"] == 1


async def test_oversized_chunked_response_is_refused_without_reading_it_all() -> None:
    sent = 0

    async def handle(request: web.Request) -> web.StreamResponse:
        nonlocal sent
        response = web.StreamResponse()
        response.enable_chunked_encoding()
        await response.prepare(request)
        chunk = b" " * 65536
        for _ in range(512):  # 32 MiB if the client kept reading
            try:
                await response.write(chunk)
            except (ConnectionResetError, RuntimeError):
                break
            sent += len(chunk)
        return response

    app = web.Application()
    app.router.add_post("/character/update", handle)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.2)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        url = f"http://127.0.0.1:{runner.addresses[0][1]}"
        async with ConvaiClient(api_key="k", base_url=url, max_response_bytes=256 << 10) as client:
            with pytest.raises(UnexpectedResponseError, match="cap"):
                await client.characters.set_model("c", "m")
    finally:
        await runner.cleanup()
    assert sent < 32 << 20


async def test_list_cap_is_generous_and_configurable() -> None:
    async with FakeConvai(characters=3000, record=False) as fake:
        async with ConvaiClient(api_key=fake.api_key, base_url=fake.url) as client:
            assert len(await client.characters.list()) == 3000  # well over the 1 MiB update cap
        async with ConvaiClient(
            api_key=fake.api_key, base_url=fake.url, max_list_response_bytes=100_000
        ) as client:
            with pytest.raises(UnexpectedResponseError, match="cap"):
                await client.characters.list()


async def test_slow_drip_ends_within_the_deadline() -> None:
    async with FakeConvai(characters=1, faults=Faults(drip_seconds=0.2)) as fake:
        async with ConvaiClient(
            api_key=fake.api_key, base_url=fake.url, timeout=0.3, deadline=1.0, retry=FAST_RETRY
        ) as client:
            with pytest.raises(ConvaiTimeoutError, match="deadline of 1s exceeded"):
                await client.characters.set_model(fake.char_ids[0], "m")


async def test_truncated_bodies_are_never_parsed_as_success() -> None:
    async with FakeConvai(characters=1, faults=Faults(truncate_ratio=1.0)) as fake:
        async with ConvaiClient(
            api_key=fake.api_key, base_url=fake.url, retry=FAST_RETRY, max_retries=2
        ) as client:
            with pytest.raises(ConvaiConnectionError, match="cut short") as caught:
                await client.characters.set_model(fake.char_ids[0], "m")
        assert caught.value.request_sent
        assert fake.request_counts["/character/update"] == 3


@pytest.mark.parametrize(
    "body",
    [
        b'{"STATUS": "FAILURE"}',
        b"<html>fine</html>",
        b"",
        b'["SUCCESS"]',
        b'"SUCCESS"',
        b"{",
        b"null",
    ],
)
async def test_2xx_without_the_documented_success_is_an_error(body: bytes) -> None:
    async with FakeConvai(characters=1, faults=Faults(success_body=body)) as fake:
        async with ConvaiClient(api_key=fake.api_key, base_url=fake.url) as client:
            with pytest.raises(UnexpectedResponseError):
                await client.characters.set_model(fake.char_ids[0], "m")
            with pytest.raises(UnexpectedResponseError):
                await client.characters.get(fake.char_ids[0])


def open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


async def test_a_thousand_timed_out_calls_leak_nothing() -> None:
    gc.collect()
    before = open_descriptors()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        async with FakeConvai(
            characters=10, faults=Faults(hang_ratio=1.0, hang_seconds=30), record=False
        ) as fake:
            async with ConvaiClient(
                api_key=fake.api_key,
                base_url=fake.url,
                timeout=0.05,
                max_retries=0,
                max_concurrency=100,
            ) as client:
                results = await asyncio.gather(
                    *(client.characters.get(fake.char_ids[i % 10]) for i in range(1000)),
                    return_exceptions=True,
                )
                assert client.stats.in_flight == 0
        gc.collect()
    assert all(isinstance(r, ConvaiTimeoutError) for r in results)
    assert asyncio.all_tasks() == {asyncio.current_task()}
    assert [str(w.message) for w in caught if "nclosed" in str(w.message)] == []
    assert open_descriptors() <= before + 2


async def test_json_injection_through_ids_is_impossible(
    fake: FakeConvai, client: ConvaiClient
) -> None:
    sneaky = '"}, "model_group_name": "evil'
    report = await client.bulk_update([CharacterUpdate(sneaky, temperature=0.5)])
    assert report.failed == 1  # an unknown character, not a changed one
    assert fake.requests[-1].body == {"charID": sneaky, "temperature": 0.5}
