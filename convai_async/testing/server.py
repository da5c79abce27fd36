"""``FakeConvai``: the fake Convai API served over HTTP on loopback with aiohttp.

This is the I/O shell around the pure parts: it reads a request, records it, asks the
``EdgeGate`` (quota, rate limit), sleeps for latency, rolls the fault dice, asks ``endpoints``
for the answer and sends it, maybe distorted. It also runs the other tenant's load.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

from aiohttp import web
from attrs import define, field

from . import checks, endpoints
from .answers import Answer, gateway_error, unauthorized
from .faults import EdgeGate, FaultDice, Faults
from .state import DEFAULT_MODEL_MIX, FakeState

__all__ = ["DEFAULT_FAKE_API_KEY", "FakeConvai", "RecordedRequest"]

DEFAULT_FAKE_API_KEY = "fake-convai-key"
_TENANT_IDLE_POLL = 0.05  # how soon a changed tenant_rate takes effect
_TENANT_MAX_LAG = 1.0  # after a longer stall the tenant resumes without a burst of backlog


@define
class RecordedRequest:
    """A request as the fake received it. ``at`` is its arrival (``time.monotonic()``);
    ``status`` is the status answered (429 when the limiter refused it), or ``None`` while it
    is being handled or when the connection was dropped instead of answered."""

    path: str
    headers: Mapping[str, str] = field(repr=False)
    body: Any
    raw: bytes = field(repr=False)
    at: float
    status: int | None = None


class _Drop(Exception):
    """Raised inside a handler to drop the connection without answering."""


class FakeConvai:
    """An aiohttp.web server with the Convai API's documented behaviour, on 127.0.0.1.

    ``async with FakeConvai(characters=100, faults=Faults(...)) as fake:`` then point a client
    at ``fake.url`` with ``fake.api_key``. ``characters`` is how many to seed (deterministic
    for ``seed``) or the character objects; ``strict_models`` refuses model codes that are
    neither built in nor registered; ``record=False`` keeps only counters (for long runs).
    """

    def __init__(
        self,
        characters: int | Iterable[Mapping[str, Any]] = 100,
        *,
        api_key: str = DEFAULT_FAKE_API_KEY,
        faults: Faults | None = None,
        seed: int = 0,
        model_mix: Mapping[str, float] = DEFAULT_MODEL_MIX,
        strict_models: bool = False,
        record: bool = True,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.api_key = api_key
        self.faults = faults or Faults()
        self.record = record
        self.state = FakeState(
            characters, seed=seed, model_mix=model_mix, strict_models=strict_models
        )
        self.requests: list[RecordedRequest] = []
        self.request_counts: Counter[str] = Counter()
        self.in_flight = 0
        self.max_in_flight = 0
        self._gate = EdgeGate()
        self._dice = FaultDice(self.state.random)
        self._valid_keys = {api_key}
        self._host = host
        self._port = port
        self._runner: web.AppRunner | None = None
        self._closing = False
        self._tenant: asyncio.Task[None] | None = None
        self._handlers: set[asyncio.Task[Any]] = set()

    # -- lifetime -------------------------------------------------------------------------------

    async def start(self) -> FakeConvai:
        self._closing = False
        app = web.Application(client_max_size=8 << 20)
        for path in endpoints.ENDPOINT_PATHS:
            app.router.add_post(path, self._serve)
        app.router.add_get("/_fake/stats", self._stats)
        self._runner = web.AppRunner(
            app, handle_signals=False, access_log=None, shutdown_timeout=0.5
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port, reuse_address=True)
        await site.start()
        self._port = int(self._runner.addresses[0][1])
        self._tenant = asyncio.create_task(self._tenant_load())
        return self

    async def close(self) -> None:
        self._closing = True  # a request read from now on is dropped at once
        tasks = list(self._handlers)
        if self._tenant is not None:
            tasks.append(self._tenant)
            self._tenant = None
        while tasks:
            for task in tasks:
                task.cancel()  # latency sleeps and hangs end now, not after a shutdown timeout
            await asyncio.gather(*tasks, return_exceptions=True)
            tasks = list(self._handlers)  # any that began while those ended
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> FakeConvai:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    @property
    def url(self) -> str:
        return f"http://{self._host}:{self._port}"

    # -- state and counters ---------------------------------------------------------------------

    @property
    def characters(self) -> dict[str, dict[str, Any]]:
        return self.state.characters

    @property
    def char_ids(self) -> list[str]:
        return list(self.state.characters)

    @property
    def custom_models(self) -> dict[str, dict[str, Any]]:
        return self.state.custom_models

    @property
    def applied_updates(self) -> int:
        return self.state.applied_updates

    @property
    def strict_models(self) -> bool:
        return self.state.strict_models

    @strict_models.setter
    def strict_models(self, value: bool) -> None:
        self.state.strict_models = value

    @property
    def rate_limited(self) -> int:
        """Requests answered 429 by the rate limit (not the quota)."""
        return self._gate.rate_limited

    @property
    def tenant_requests(self) -> int:
        """Requests of the other tenant (``Faults.tenant_rate``); not in ``request_counts``."""
        return self._gate.tenant_requests

    @property
    def tenant_rate_limited(self) -> int:
        return self._gate.tenant_rate_limited

    @property
    def faults_injected(self) -> int:
        return self._dice.injected

    def add_character(
        self, char_id: str, name: str, model: str, temperature: float, **extra: Any
    ) -> dict[str, Any]:
        return self.state.add_character(char_id, name, model, temperature, **extra)

    def model_of(self, char_id: str) -> str:
        return self.state.model_of(char_id)

    def temperature_of(self, char_id: str) -> float:
        return self.state.temperature_of(char_id)

    def revoke_key(self, key: str | None = None) -> None:
        """Make a key invalid from now on (the server's own key by default)."""
        self._valid_keys.discard(key or self.api_key)

    def snapshot(self) -> dict[str, Any]:
        """Counters, for a test or benchmark that runs the server in another process
        (``GET /_fake/stats`` answers the same, without authentication)."""
        return {
            "requests": dict(self.request_counts),
            "applied_updates": self.applied_updates,
            "rate_limited": self.rate_limited,
            "tenant_requests": self.tenant_requests,
            "tenant_rate_limited": self.tenant_rate_limited,
            "faults_injected": self.faults_injected,
            "max_in_flight": self.max_in_flight,
            "models": self.state.model_counts(),
        }

    async def _stats(self, request: web.Request) -> web.Response:
        return _response(Answer(200, self.snapshot()))

    # -- what tests ask -------------------------------------------------------------------------

    def requests_to(self, path: str) -> list[RecordedRequest]:
        """Every recorded request to ``path`` (e.g. ``"/character/update"``), in arrival order."""
        return [r for r in self.requests if r.path == path]

    def updates_for(self, char_id: str) -> list[dict[str, Any]]:
        """The ``/character/update`` bodies applied to this character, in order (refused and
        failed attempts are not in it; ``requests_to`` has every attempt)."""
        return [dict(body) for body in self.state.update_log.get(char_id, [])]

    def reset_requests(self) -> None:
        """Forget the recorded requests, their counts and the applied updates' log, so the next
        assertions see only what follows. The characters keep their current settings."""
        self.requests.clear()
        self.request_counts.clear()
        self.state.update_log.clear()

    def assert_updated(
        self, char_id: str, *, model: str | None = None, temperature: float | None = None
    ) -> None:
        """Assert that at least one update was applied to this character and that it now has
        ``model`` and ``temperature`` (each checked only when given)."""
        checks.assert_updated(self.state, char_id, model=model, temperature=temperature)

    def assert_not_updated(self, char_id: str) -> None:
        """Assert that no update was applied to this character (since ``reset_requests``)."""
        checks.assert_not_updated(self.state, char_id)

    # -- request pipeline -----------------------------------------------------------------------

    async def _serve(self, request: web.Request) -> web.StreamResponse:
        if self._closing:
            if request.transport is not None:
                request.transport.abort()
            raise asyncio.CancelledError
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        handler = asyncio.current_task()
        if handler is not None:
            self._handlers.add(handler)
        try:
            return await self._admitted(request)
        except _Drop:
            if request.transport is not None:
                request.transport.abort()
            raise asyncio.CancelledError from None
        finally:
            self.in_flight -= 1
            if handler is not None:
                self._handlers.discard(handler)

    async def _admitted(self, request: web.Request) -> web.StreamResponse:
        """Record the request and let the edge gate refuse it before any work is done."""
        path = request.path
        raw = await request.read()
        self.request_counts[path] += 1
        record = RecordedRequest(path, dict(request.headers), _parsed(raw), raw, time.monotonic())
        if self.record:
            self.requests.append(record)
        refusal, limiter = self._gate.admit(self.faults, path, record.at, time.time())
        if refusal is not None:
            record.status = refusal.status
            return _response(refusal)
        try:
            response = await self._worked(request, path, record.body)
        except web.HTTPException as redirect:
            record.status = redirect.status
            raise
        finally:
            if limiter is not None:
                limiter.done(time.monotonic())
        record.status = response.status
        return response

    async def _worked(self, request: web.Request, path: str, body: Any) -> web.StreamResponse:
        """Latency, the key check, the random faults and the endpoint itself."""
        faults = self.faults
        dice = self._dice
        await self._sleep(faults.latency)
        if request.headers.get("CONVAI-API-KEY") not in self._valid_keys:
            return _response(unauthorized(path))
        targeted = faults.targets(path)
        if targeted and faults.redirect_to:
            raise web.HTTPTemporaryRedirect(faults.redirect_to + path)
        if targeted and dice.roll(faults, faults.hang_ratio):
            await self._sleep(faults.hang_seconds)
            return _response(gateway_error(504))
        if targeted and dice.roll(faults, faults.server_error_ratio):
            return _response(gateway_error(faults.server_error_status))
        if targeted and dice.roll(faults, faults.drop_before_ratio):
            raise _Drop
        answer = endpoints.answer(self.state, path, body)
        if targeted and dice.roll(faults, faults.drop_after_ratio):
            raise _Drop
        if targeted and answer.status == 200:
            return await self._distorted(request, answer)
        return _response(answer)

    async def _distorted(self, request: web.Request, answer: Answer) -> web.StreamResponse:
        """A success, sent as the faults ask: replaced, padded, truncated or dripped."""
        faults = self.faults
        if faults.success_body is not None:
            return web.Response(body=faults.success_body, content_type="application/json")
        body = _encoded(answer.body)
        if faults.oversize_bytes is not None:
            padding = b" " * faults.oversize_bytes
            return web.Response(body=padding + body, content_type="application/json")
        truncate = self._dice.roll(faults, faults.truncate_ratio)
        if not truncate and faults.drip_seconds <= 0:
            return _response(answer)
        stream = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
        stream.content_length = len(body) + (64 if truncate else 0)
        await stream.prepare(request)
        if truncate:
            await stream.write(body[: len(body) // 2])
            raise _Drop
        for byte in body:
            await stream.write(bytes([byte]))
            await self._sleep(faults.drip_seconds)
        await stream.write_eof()
        return stream

    async def _sleep(self, duration: float | tuple[float, float]) -> None:
        """Latency, hangs and drips; close() cancels the handlers, so none outlives the server."""
        seconds = self._dice.seconds(duration)
        if seconds > 0:
            await asyncio.sleep(seconds)

    async def _tenant_load(self) -> None:
        """Another tenant's requests through the same limiter, evenly spaced at
        ``faults.tenant_rate`` per second, for as long as the server runs."""
        due: float | None = None
        while True:
            rate = self.faults.tenant_rate
            now = time.monotonic()
            if rate <= 0:
                due = None
                await asyncio.sleep(_TENANT_IDLE_POLL)
                continue
            if due is None or now - due > _TENANT_MAX_LAG:
                due = now
            while due <= now:
                self._gate.admit_tenant(self.faults, now)
                due += 1.0 / rate
            await asyncio.sleep(min(due - now, _TENANT_IDLE_POLL))


def _encoded(body: Any) -> bytes:
    return body if isinstance(body, bytes) else json.dumps(body).encode()


def _response(answer: Answer) -> web.Response:
    return web.Response(
        body=_encoded(answer.body),
        status=answer.status,
        content_type=answer.content_type,
        headers=answer.headers,
    )


def _parsed(raw: bytes) -> Any:
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return None
