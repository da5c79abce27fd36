"""Canaries: the Convai key and custom LLM keys never show, not even a fragment of 8 characters.

Checked on every failure the call path can raise (str, repr, vars, the pickled form, the
formatted traceback and ``TracebackException(capture_locals=True)``), in DEBUG logs, in a
bulk report, in every local of the call path while a register/update is in flight, and in
every attribute reachable from a client.
"""

from __future__ import annotations

import asyncio
import logging
import pickle
import traceback
import types
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest
from aiohttp import web

from convai_async import ConvaiClient, ConvaiError, RetryPolicy, ValidationError
from convai_async._wire.protocol import CHARACTER_UPDATE, parse_response
from convai_async._wire.secrets import Redactor, Secret, SecretBody

from .scripted import Reply, scripted_server

KEY = "cvk-3f9a1c7e5b2d4a6f8e0c1b3d5f7a9c2e"  # 36 characters, like a real Convai key
LLM_KEY = "sk-proj-Zq8Rt2Lw6Yp0Vx4Nm7Kc1Hs5Jd9Gf3Ba"
NO_RETRY = RetryPolicy(max_retries=0)
Call = Callable[[ConvaiClient], Awaitable[Any]]


def fragments(secret: str) -> Iterator[str]:
    return (secret[i : i + 8] for i in range(len(secret) - 7))


def assert_clean(text: str | bytes, where: str = "") -> None:
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    for secret in (KEY, LLM_KEY):
        leaked = [piece for piece in fragments(secret) if piece in text]
        assert leaked == [], f"{where}: a fragment of a key shows: {leaked[:3]}"


def captured_locals(error: BaseException) -> list[str]:
    """Every local of the library's frames, as TracebackException(capture_locals=True) renders
    them (the test's own frames hold the keys, of course)."""
    shown: list[str] = []
    pending = [traceback.TracebackException.from_exception(error, capture_locals=True)]
    while pending:
        summary = pending.pop()
        for frame in summary.stack:
            if "/convai_async/" in frame.filename:
                shown += [f"{name}={value}" for name, value in (frame.locals or {}).items()]
        pending += [e for e in (summary.__cause__, summary.__context__) if e is not None]
    assert shown, "no frame of the library was captured"
    return shown


def assert_error_clean(error: BaseException) -> None:
    assert_clean(str(error), "str")
    assert_clean(repr(error), "repr")
    assert_clean(repr(vars(error)), "vars")
    assert_clean(pickle.dumps(error), "pickle")
    assert_clean("".join(traceback.format_exception(error)), "traceback")
    for text in captured_locals(error):
        assert_clean(text, "captured locals")


# -- the redactor ------------------------------------------------------------------------------


def redactor() -> Redactor:
    found = Redactor()
    found.add(Secret(KEY))
    found.add(Secret(LLM_KEY))
    return found


@pytest.mark.parametrize("offset", range(150, 260, 3))
def test_a_key_cut_by_the_shown_length_leaves_no_fragment(offset: int) -> None:
    body = ("x" * offset + " key=" + KEY + " and " + LLM_KEY).encode()
    with pytest.raises(ConvaiError) as caught:
        parse_response(CHARACTER_UPDATE, 400, {}, body, redactor=redactor())
    assert_clean(str(caught.value))
    assert "non-JSON body: xxx" in str(caught.value)


def test_fragments_of_eight_characters_are_redacted_anywhere() -> None:
    scrub = redactor()
    text = f"head {KEY[:20]} mid {KEY[-9:]} {LLM_KEY[5:13]} short {KEY[:7]} end"
    clean = scrub.redact(text)
    assert_clean(clean)
    assert clean.startswith("head [redacted] mid [redacted] [redacted] short ")
    assert KEY[:7] in clean  # 7 characters are not a recognisable fragment
    assert scrub.clip("a" * 1000 + KEY, 50) == "a" * 50
    assert repr(scrub) == "Redactor(2 secret(s))"


def test_secret_objects_show_nothing_and_refuse_to_pickle() -> None:
    secret = Secret(KEY)
    body = SecretBody(b'{"a":1}', (("api_key", Secret(LLM_KEY)),))
    for thing in (secret, body):
        assert_clean(repr(thing) + str(thing))
        with pytest.raises(TypeError):
            pickle.dumps(thing)
    assert body.reveal() == f'{{"a":1,"api_key":"{LLM_KEY}"}}'.encode()
    assert secret.reveal() == KEY
    assert secret == Secret(KEY)
    assert secret != Secret(LLM_KEY)


# -- every failure on the call path ----------------------------------------------------------------


def echo(status: int, message: str, *, json: bool = True) -> Reply:
    if not json:
        return (status, {"Content-Type": "text/plain"}, message.encode())
    body = f'{{"status": "error", "message": "{message}", "transactionID": "tx-{KEY}"}}'
    return (status, {"Content-Type": "application/json", "X-Echo": KEY}, body.encode())


SCENARIOS: list[tuple[Reply, Call]] = [
    (echo(401, f"Invalid API key provided: {KEY}"), lambda c: c.characters.get("x")),
    (echo(400, "n" * 170 + f" key={KEY}", json=False), lambda c: c.characters.set_model("c", "m")),
    (echo(200, f"odd {KEY}"), lambda c: c.characters.set_model("c", "m")),
    (echo(429, f"usage limit exceeded for {KEY}"), lambda c: c.characters.list()),
    (echo(400, f"bad key {LLM_KEY}"), lambda c: c.llm_models.register("g", "m", LLM_KEY, False)),
    (echo(503, f"down {LLM_KEY[3:30]}"), lambda c: c.llm_models.update("g", api_key=LLM_KEY)),
    (echo(409, f"taken {LLM_KEY}"), lambda c: c.llm_models.register("g", "m", LLM_KEY, True)),
]


async def collect_failures() -> list[BaseException]:
    failures: list[BaseException] = []

    async def failing(client: ConvaiClient, call: Call) -> None:
        try:
            await call(client)
        except ConvaiError as error:
            failures.append(error)
        else:
            raise AssertionError("the call should have failed")

    for reply, call in SCENARIOS:
        async with scripted_server([reply]) as (url, _):
            async with ConvaiClient(api_key=KEY, base_url=url, retry=NO_RETRY) as client:
                await failing(client, call)
    async with ConvaiClient(api_key=KEY, base_url="http://127.0.0.1:9", retry=NO_RETRY) as client:
        await failing(client, lambda c: c.llm_models.register("g", "m", LLM_KEY, False))
    async with SilentServer() as silent:
        async with ConvaiClient(
            api_key=KEY, base_url=silent.url, retry=NO_RETRY, timeout=0.05, deadline=0.2
        ) as client:
            await failing(client, lambda c: c.llm_models.register("g", "m", LLM_KEY, False))
        silent.arrived.clear()
        client = ConvaiClient(api_key=KEY, base_url=silent.url, retry=NO_RETRY)
        call = asyncio.create_task(client.llm_models.update("g", api_key=LLM_KEY))
        await asyncio.wait_for(silent.arrived.wait(), 60)
        await client.close(grace=0)
        with pytest.raises(ConvaiError) as closed:
            await call
        failures.append(closed.value)
    client = ConvaiClient(api_key=KEY)
    await failing(client, lambda c: c.llm_models.register("g", "m", LLM_KEY, False, base_url="x"))
    await failing(client, lambda c: c.llm_models.update("g", api_key=LLM_KEY, base_url="ftp://x"))
    return failures


class SilentServer:
    """A server that reads each request, sets ``arrived``, and never answers."""

    async def __aenter__(self) -> SilentServer:
        self.arrived = asyncio.Event()

        async def hang(request: web.Request) -> web.Response:
            await request.read()
            self.arrived.set()
            await asyncio.Event().wait()
            raise AssertionError("unreachable")

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", hang)
        self.runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", 0).start()
        self.url = f"http://127.0.0.1:{self.runner.addresses[0][1]}"
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.runner.cleanup()


async def test_no_failure_on_the_call_path_shows_a_key(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    failures = await collect_failures()
    kinds = {type(error).__name__ for error in failures}
    assert {"AuthenticationError", "BadRequestError", "UnexpectedResponseError"} <= kinds
    assert {"QuotaExceededError", "ServerError", "ConflictError", "ConvaiConnectionError"} <= kinds
    assert {"ConvaiTimeoutError", "ClientClosedError", "ValidationError"} <= kinds
    for error in failures:
        assert_error_clean(error)
    assert any("[redacted]" in str(error) for error in failures)
    assert any(getattr(error, "transaction_id", None) == "tx-[redacted]" for error in failures)
    logged = "\n".join(f"{r.getMessage()} {r.args!r}" for r in caplog.records)
    assert "attempt=" in logged
    assert "transaction_id=tx-[redacted]" in logged
    assert_clean(logged, "DEBUG log")


# -- every local of the call path while a key is in flight ------------------------------------


def awaited_frames(task: asyncio.Task[Any]) -> Iterator[types.FrameType]:
    """The frames of a suspended task, outermost first, following what each one awaits."""
    awaitable: Any = task.get_coro()
    while awaitable is not None:
        frame = getattr(awaitable, "cr_frame", None) or getattr(awaitable, "gi_frame", None)
        if frame is not None:
            yield frame
        awaitable = getattr(awaitable, "cr_await", None) or getattr(awaitable, "gi_yieldfrom", None)


@pytest.mark.parametrize("method", ["register", "update"])
async def test_no_local_of_the_call_path_holds_a_key_while_it_is_sent(method: str) -> None:
    inspected: list[str] = []
    sent_bodies: list[bytes] = []
    running: list[asyncio.Task[Any]] = []

    def reply(request: web.Request) -> Reply:
        # every task: with a deadline, the attempts run in a task of wait_for's own
        frames = [frame for task in asyncio.all_tasks() for frame in awaited_frames(task)]
        for frame in frames:
            if "/convai_async/" in frame.f_code.co_filename:
                inspected.append(frame.f_code.co_name)
                for name, value in frame.f_locals.items():
                    assert not isinstance(value, (str, bytes)) or (
                        KEY not in str(value) and LLM_KEY not in str(value)
                    ), name
                    assert_clean(repr(value), f"{frame.f_code.co_name}: {name}")
        return (200, {}, b'{"status": "success", "model_group_name": "g", "transactionID": "t"}')

    async with scripted_server(reply) as (url, seen):
        async with ConvaiClient(api_key=KEY, base_url=url, deadline=30) as client:
            if method == "register":
                call = client.llm_models.register("g", "m", LLM_KEY, False, display_name="G")
            else:
                call = client.llm_models.update("g", api_key=LLM_KEY)
            running.append(asyncio.create_task(call))  # type: ignore[arg-type]
            await running[0]
        sent_bodies = [entry["body"] for entry in seen]
        assert seen[0]["headers"]["CONVAI-API-KEY"] == KEY
    assert LLM_KEY.encode() in sent_bodies[0]  # the key did go, inside the transport
    assert {method, "call", "_retrying", "_attempt", "send"} <= set(inspected)


# -- reports and reachable state ---------------------------------------------------------------


async def test_a_bulk_report_shows_no_key() -> None:
    async with scripted_server([echo(400, f"no such character; your key {KEY}")]) as (url, _):
        async with ConvaiClient(api_key=KEY, base_url=url, retry=NO_RETRY) as client:
            report = await client.bulk_set_model(["a", "b", "c"], "m")
    assert report.failed == 3
    assert_clean(str(report) + repr(report), "bulk report")


def reachable(root: object) -> Iterator[object]:
    """Every object reachable from ``root`` through this library's objects and containers."""
    seen: set[int] = set()
    pending = [root]
    while pending:
        thing = pending.pop()
        if id(thing) in seen or isinstance(thing, Secret):
            continue
        seen.add(id(thing))
        yield thing
        if isinstance(thing, dict):
            pending += [*thing.keys(), *thing.values()]
        elif isinstance(thing, (list, tuple, set, frozenset)):
            pending += list(thing)
        elif type(thing).__module__.startswith("convai_async"):
            pending += list(getattr(thing, "__dict__", {}).values())
            for slot in getattr(type(thing), "__slots__", ()):
                pending.append(getattr(thing, slot, None))


async def test_nothing_reachable_from_a_client_holds_a_bare_key() -> None:
    async with scripted_server([(200, {}, b'{"status": "success", "transactionID": "t"}')]) as (
        url,
        _,
    ):
        async with ConvaiClient(api_key=KEY, base_url=url) as client:
            await client.llm_models.update("g", api_key=LLM_KEY)
            strings = [t for t in reachable(client) if isinstance(t, (str, bytes))]
            assert "identity" in strings
            assert "application/json" in strings
            for text in strings:
                assert_clean(text, "reachable")
            assert_clean(repr(vars(client)), "vars(client)")
    with pytest.raises(ValidationError):
        ConvaiClient(api_key=KEY + "\n")
