"""``FakeConvai``: an in-process Convai server for tests, demos and benchmarks.

It implements the eight documented endpoints with their documented bodies and error shapes
(including the docs' invalid-JSON 401), records every request, and has fault knobs so you can
test your own code against latency, rate limits, quota exhaustion, 5xx, dropped connections,
hangs, truncated or slow bodies, redirects and undocumented success bodies::

    async with FakeConvai(characters=100, faults=Faults(latency=(0.03, 0.08))) as fake:
        async with ConvaiClient(api_key=fake.api_key, base_url=fake.url) as client:
            await client.characters.set_model(fake.char_ids[0], "gpt-4.1")
        assert fake.characters[fake.char_ids[0]]["personalised_prompt_config"]["MODEL"] == "gpt-4.1"

Faults can be changed while the server runs (``fake.faults.server_error_ratio = 0.1``).
It listens on loopback only. ``python -m convai_async.testing --port 8080`` serves it alone.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import random
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timezone
from email.utils import formatdate
from typing import Any, cast

from aiohttp import web
from attrs import define, field, frozen

from ..catalog import BUILTIN_MODELS

__all__ = ["DEFAULT_FAKE_API_KEY", "FakeConvai", "Faults", "RecordedRequest"]

DEFAULT_FAKE_API_KEY = "fake-convai-key"
DEFAULT_MODEL_MIX: Mapping[str, float] = {
    "gpt-4o": 0.6,
    "gpt-4o-mini": 0.2,
    "claude-4-sonnet": 0.1,
    "gemini-2.5-flash": 0.1,
}
_NAMES = ("Rafael", "Steven", "Aiko", "Bram", "Chidi", "Dana", "Esme", "Farid", "Greta", "Hugo")
_HTML_5XX = (
    b"<html><head><title>503 Service Unavailable</title></head><body><h1>503</h1></body></html>"
)
_INVALID_KEY_BODY = b'{\n    "API_ERROR": "Invalid API key provided.\n}'  # sic: the docs' own 401
_RATE_LIMITED = "API rate limit exceeded. Please try again later."
_QUOTA = "API usage limit exceeded for current plan."
_FAKE_CLOSED = "FakeConvai is closed"

Handler = Callable[[Any], web.Response]


@define
class Faults:
    """Fault knobs. Ratios are probabilities per request in [0, 1]; ``paths`` restricts the
    random faults (not the rate limit or quota) to those endpoint paths; ``limit`` caps how many
    random faults are injected (``fake.faults_injected`` counts them)."""

    latency: float | tuple[float, float] = 0.0
    rate_limit: float | None = None
    burst: int = 10
    retry_after: str = "seconds"  # "seconds", "http-date" or "none"
    quota: int | None = None
    server_error_ratio: float = 0.0
    server_error_status: int = 503
    drop_before_ratio: float = 0.0
    drop_after_ratio: float = 0.0
    hang_ratio: float = 0.0
    hang_seconds: float = 30.0
    truncate_ratio: float = 0.0
    drip_seconds: float = 0.0
    success_body: bytes | None = None
    oversize_bytes: int | None = None
    redirect_to: str | None = None
    paths: frozenset[str] | None = None
    limit: int | None = None  # at most this many random faults in all, then none


@frozen
class RecordedRequest:
    path: str
    headers: Mapping[str, str]
    body: Any
    raw: bytes = field(repr=False)
    at: float


class _Drop(Exception):
    """Raised inside a handler to drop the connection without answering."""


def _json(data: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.Response(
        body=json.dumps(data).encode(),
        status=status,
        content_type="application/json",
        headers=headers,
    )


def _llm_error(status: int, message: str) -> web.Response:
    return _json(
        {"status": "error", "message": message, "transactionID": str(uuid.uuid4())}, status
    )


def _char_error(message: str, status: int = 400) -> web.Response:
    return _json({"ERROR": message}, status)


class FakeConvai:
    """An aiohttp.web server with the Convai API's documented behaviour. See the module docs."""

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
        self.strict_models = strict_models
        self.record = record
        self.requests: list[RecordedRequest] = []
        self.request_counts: Counter[str] = Counter()
        self.applied_updates = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.faults_injected = 0
        self.rate_limited = 0
        self.custom_models: dict[str, dict[str, Any]] = {}
        self._valid_keys = {api_key}
        self._random = random.Random(seed)
        self._tokens = float(self.faults.burst)
        self._last_refill = time.monotonic()
        self._accepted = 0
        self._host = host
        self._port = port
        self._runner: web.AppRunner | None = None
        self._handlers: set[asyncio.Task[Any]] = set()
        self.characters: dict[str, dict[str, Any]] = {}
        if isinstance(characters, int):
            for index in range(characters):
                self.add_character(**self._seeded_character(index, model_mix))
        else:
            for character in characters:
                self.characters[character["character_id"]] = dict(character)
        self._routes: dict[str, Handler] = {
            "/character/update": self._update_character,
            "/character/get": self._get_character,
            "/character/list": self._list_characters,
            "/llm-models/register": self._register_model,
            "/llm-models/update": self._update_model,
            "/llm-models/deregister": self._deregister_model,
            "/llm-models/list": self._list_models,
        }

    # -- lifetime -------------------------------------------------------------------------------

    async def start(self) -> FakeConvai:
        app = web.Application(client_max_size=8 << 20)
        for path in self._routes:
            app.router.add_post(path, self._serve)
        app.router.add_get("/_fake/stats", self._stats)
        self._runner = web.AppRunner(
            app, handle_signals=False, access_log=None, shutdown_timeout=0.5
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port, reuse_address=True)
        await site.start()
        self._port = int(self._runner.addresses[0][1])
        return self

    async def close(self) -> None:
        handlers = list(self._handlers)
        for handler in handlers:
            handler.cancel()  # latency sleeps and hangs end now, not after a shutdown timeout
        await asyncio.gather(*handlers, return_exceptions=True)
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

    # -- state helpers --------------------------------------------------------------------------

    @property
    def char_ids(self) -> list[str]:
        return list(self.characters)

    def add_character(
        self, char_id: str, name: str, model: str, temperature: float, **extra: Any
    ) -> dict[str, Any]:
        character = {
            "character_name": name,
            "collection_name": "convai_default_collection",
            "user_id": "FAKE_USER_ID",
            "character_id": char_id,
            "model_type": "RPM-3D",
            "listing": "unlisted",
            "voice_type": "SOME_VOICE",
            "timestamp": "2024-12-19T10:30:42",
            "backstory": f"{name} is a test character.",
            "character_actions": [],
            "language_codes": ["en-US"],
            "personalised_prompt_config": {
                "MODEL": model,
                "PROMPT": "",
                "VERBOSITY": 2,
                "TEMPERATURE": temperature,
                "MODERATION_ENABLED": True,
            },
            "memory_settings": {"enabled": False},
            **extra,
        }
        self.characters[char_id] = character
        return character

    def _seeded_character(self, index: int, model_mix: Mapping[str, float]) -> dict[str, Any]:
        rng = self._random
        model = rng.choices(list(model_mix), weights=list(model_mix.values()))[0]
        return {
            "char_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            "name": f"{_NAMES[index % len(_NAMES)]} {index}",
            "model": model,
            "temperature": round(rng.random(), 2),
        }

    def model_of(self, char_id: str) -> str:
        return str(self.characters[char_id]["personalised_prompt_config"]["MODEL"])

    def temperature_of(self, char_id: str) -> float:
        return float(self.characters[char_id]["personalised_prompt_config"]["TEMPERATURE"])

    def revoke_key(self, key: str | None = None) -> None:
        """Make a key invalid from now on (the server's own key by default)."""
        self._valid_keys.discard(key or self.api_key)

    def snapshot(self) -> dict[str, Any]:
        """Counters, for a test or benchmark that runs the server in another process
        (``GET /_fake/stats`` answers the same, without authentication)."""
        models = Counter(
            c.get("personalised_prompt_config", {}).get("MODEL") for c in self.characters.values()
        )
        return {
            "requests": dict(self.request_counts),
            "applied_updates": self.applied_updates,
            "rate_limited": self.rate_limited,
            "faults_injected": self.faults_injected,
            "max_in_flight": self.max_in_flight,
            "models": {str(k): v for k, v in models.items()},
        }

    async def _stats(self, request: web.Request) -> web.Response:
        return _json(self.snapshot())

    def requests_to(self, path: str) -> list[RecordedRequest]:
        return [r for r in self.requests if r.path == path]

    # -- request pipeline -----------------------------------------------------------------------

    async def _serve(self, request: web.Request) -> web.StreamResponse:
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        handler = asyncio.current_task()
        if handler is not None:
            self._handlers.add(handler)
        try:
            return await self._faulty(request)
        except _Drop:
            if request.transport is not None:
                request.transport.abort()
            raise asyncio.CancelledError from None
        finally:
            self.in_flight -= 1
            if handler is not None:
                self._handlers.discard(handler)

    async def _faulty(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        raw = await request.read()
        self.request_counts[path] += 1
        if self.record:
            self.requests.append(
                RecordedRequest(path, dict(request.headers), _parsed(raw), raw, time.monotonic())
            )
        faults = self.faults
        limited = self._rate_limited(path)  # at the edge, as a gateway does, before the work
        if limited is not None:
            return limited
        await self._sleep(faults.latency)
        if request.headers.get("CONVAI-API-KEY") not in self._valid_keys:
            if path.startswith("/llm-models/"):
                return _llm_error(401, "Unauthorized: missing or invalid CONVAI-API-KEY")
            return web.Response(body=_INVALID_KEY_BODY, status=401, content_type="application/json")
        targeted = faults.paths is None or path in faults.paths
        if targeted and faults.redirect_to:
            raise web.HTTPTemporaryRedirect(faults.redirect_to + path)
        if targeted and self._roll(faults.hang_ratio):
            await self._sleep(faults.hang_seconds)
            return web.Response(status=504, body=_HTML_5XX, content_type="text/html")
        if targeted and self._roll(faults.server_error_ratio):
            return web.Response(
                status=faults.server_error_status, body=_HTML_5XX, content_type="text/html"
            )
        if targeted and self._roll(faults.drop_before_ratio):
            raise _Drop
        body = _parsed(raw)
        response = self._routes[path](body if body is not None else {})
        if targeted and self._roll(faults.drop_after_ratio):
            raise _Drop
        if targeted and response.status == 200:
            return await self._distort(request, response)
        return response

    async def _distort(self, request: web.Request, response: web.Response) -> web.StreamResponse:
        faults = self.faults
        if faults.success_body is not None:
            return web.Response(body=faults.success_body, content_type="application/json")
        body = cast(bytes, response.body)
        if faults.oversize_bytes is not None:
            padding = b" " * faults.oversize_bytes
            return web.Response(body=padding + body, content_type="application/json")
        truncate = self._roll(faults.truncate_ratio)
        if not truncate and faults.drip_seconds <= 0:
            return response
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

    def _roll(self, ratio: float) -> bool:
        limit = self.faults.limit
        if ratio <= 0 or (limit is not None and self.faults_injected >= limit):
            return False
        if self._random.random() >= ratio:
            return False
        self.faults_injected += 1
        return True

    async def _sleep(self, seconds: float | tuple[float, float]) -> None:
        """Latency, hangs and drips; close() cancels the handlers, so none outlives the server."""
        if isinstance(seconds, tuple):
            seconds = self._random.uniform(*seconds)
        if seconds > 0:
            await asyncio.sleep(seconds)

    def _rate_limited(self, path: str) -> web.Response | None:
        faults = self.faults
        llm = path.startswith("/llm-models/")
        if faults.quota is not None and self._accepted >= faults.quota:
            return _llm_error(429, _QUOTA) if llm else _json({"API_ERROR": _QUOTA}, 429)
        if faults.rate_limit is not None:
            now = time.monotonic()
            refill = (now - self._last_refill) * faults.rate_limit
            self._tokens = min(float(faults.burst), self._tokens + refill)
            self._last_refill = now
            if self._tokens < 1.0:
                self.rate_limited += 1
                wait = (1.0 - self._tokens) / faults.rate_limit
                headers = self._retry_after_header(wait)
                if llm:
                    body = {
                        "status": "error",
                        "message": "Rate limit exceeded.",
                        "transactionID": str(uuid.uuid4()),
                    }
                else:
                    body = {"API_ERROR": _RATE_LIMITED}
                return _json(body, 429, headers)
            self._tokens -= 1.0
        self._accepted += 1
        return None

    def _retry_after_header(self, wait: float) -> dict[str, str]:
        style = self.faults.retry_after
        seconds = max(1, math.ceil(wait))
        if style == "seconds":
            return {"Retry-After": str(seconds)}
        if style == "http-date":
            return {"Retry-After": formatdate(time.time() + seconds, usegmt=True)}
        return {}

    # -- endpoints ------------------------------------------------------------------------------

    def _character_for(self, body: Any) -> dict[str, Any] | web.Response:
        char_id = body.get("charID") if isinstance(body, dict) else None
        if not isinstance(char_id, str) or not char_id:
            return _char_error("charID is required")
        character = self.characters.get(char_id)
        if character is None:
            return _char_error("INTERNAL SERVER ERROR, one or more database calls failed!")
        return character

    def _update_character(self, body: Any) -> web.Response:
        character = self._character_for(body)
        if isinstance(character, web.Response):
            return character
        model = body.get("model_group_name")
        temperature = body.get("temperature")
        if model is None and temperature is None:
            return _char_error("one of model_group_name or temperature is required")
        if model is not None and (not isinstance(model, str) or not self._model_exists(model)):
            return _char_error(f"Invalid model_group_name: {model!r}")
        if temperature is not None and (
            isinstance(temperature, bool)
            or not isinstance(temperature, (int, float))
            or not 0 <= temperature <= 1
        ):
            return _char_error("temperature must be between 0 and 1")
        config = character.setdefault("personalised_prompt_config", {})
        if model is not None:
            config["MODEL"] = model
        if temperature is not None:
            config["TEMPERATURE"] = temperature
        self.applied_updates += 1
        return _json({"STATUS": "SUCCESS"})

    def _model_exists(self, code: str) -> bool:
        if not code.strip():
            return False
        if not self.strict_models:
            return True
        return code in self.custom_models or any(m.code == code for m in BUILTIN_MODELS)

    def _get_character(self, body: Any) -> web.Response:
        if (
            isinstance(body, dict)
            and isinstance(body.get("charName"), str)
            and "charID" not in body
        ):
            for candidate in self.characters.values():
                if candidate.get("character_name") == body["charName"]:
                    return _json(candidate)
            return _char_error("INTERNAL SERVER ERROR, one or more database calls failed!")
        found = self._character_for(body)
        return found if isinstance(found, web.Response) else _json(found)

    def _list_characters(self, body: Any) -> web.Response:
        return _json({"characters": list(self.characters.values())})

    def _register_model(self, body: Any) -> web.Response:
        for name, kind in (
            ("model_group_name", str),
            ("model_name", str),
            ("api_key", str),
            ("is_uncensored", bool),
        ):
            if not isinstance(body.get(name), kind):
                return _llm_error(400, f"Missing required field: {name}")
        group = body["model_group_name"]
        if group in self.custom_models:
            return _llm_error(409, "Model group name already exists")
        display_name = body.get("display_name") or group
        if self._display_name_taken(display_name, group):
            return _llm_error(409, "Display name already exists")
        self.custom_models[group] = {
            "model_group_name": group,
            "model_name": body["model_name"],
            "display_name": display_name,
            "base_url": body.get("base_url") or "https://api.openai.com/v1",
            "is_uncensored": body["is_uncensored"],
            "category": "Private",
            "created_at": datetime.now(timezone.utc)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "api_key": body["api_key"],
        }
        return _json(
            {
                "status": "success",
                "model_group_name": group,
                "model_name": body["model_name"],
                "display_name": display_name,
                "message": f"Model '{group}' registered successfully",
                "transactionID": str(uuid.uuid4()),
            }
        )

    def _display_name_taken(self, display_name: str, group: str) -> bool:
        return any(
            m["display_name"] == display_name and m["model_group_name"] != group
            for m in self.custom_models.values()
        )

    def _update_model(self, body: Any) -> web.Response:
        group = body.get("model_group_name")
        model = self.custom_models.get(group) if isinstance(group, str) else None
        if model is None:
            return _llm_error(404, f"Model '{group}' not found or access denied")
        changes = {
            key: body[key]
            for key in ("display_name", "base_url", "api_key", "is_uncensored")
            if key in body and body[key] is not None
        }
        if not changes:
            return _llm_error(400, "No valid fields to update")
        if "display_name" in changes and self._display_name_taken(changes["display_name"], group):
            return _llm_error(409, "Display name already exists")
        model.update(changes)
        return _json(
            {
                "status": "success",
                "message": f"Model '{group}' updated successfully",
                "updated_fields": list(changes),
                "transactionID": str(uuid.uuid4()),
            }
        )

    def _deregister_model(self, body: Any) -> web.Response:
        group = body.get("model_group_name")
        if not isinstance(group, str) or self.custom_models.pop(group, None) is None:
            return _llm_error(404, "Model not found")
        return _json(
            {
                "status": "success",
                "message": f"Model '{group}' deregistered successfully",
                "transactionID": str(uuid.uuid4()),
            }
        )

    def _list_models(self, body: Any) -> web.Response:
        models = [
            {key: value for key, value in model.items() if key != "api_key"}
            for model in self.custom_models.values()
        ]
        return _json(
            {
                "status": "success",
                "models": models,
                "count": len(models),
                "transactionID": str(uuid.uuid4()),
            }
        )


def _parsed(raw: bytes) -> Any:
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return None


async def _serve_forever(args: argparse.Namespace) -> None:
    faults = Faults(
        latency=args.latency,
        rate_limit=args.rate_limit,
        burst=args.burst,
        server_error_ratio=args.error_ratio,
        retry_after=args.retry_after,
    )
    fake = FakeConvai(
        args.characters, api_key=args.api_key, faults=faults, record=False, port=args.port
    )
    async with fake:
        print(fake.url, flush=True)
        await asyncio.sleep(args.seconds)


def main(argv: list[str] | None = None) -> None:
    """Serve a FakeConvai on loopback for a bounded time (benchmarks, manual tries)."""
    parser = argparse.ArgumentParser(prog="python -m convai_async.testing")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--characters", type=int, default=1000)
    parser.add_argument("--api-key", default=DEFAULT_FAKE_API_KEY)
    parser.add_argument("--latency", type=float, default=0.0)
    parser.add_argument("--rate-limit", type=float, default=None)
    parser.add_argument("--burst", type=int, default=10)
    parser.add_argument("--error-ratio", type=float, default=0.0)
    parser.add_argument(
        "--retry-after", choices=("seconds", "http-date", "none"), default="seconds"
    )
    parser.add_argument("--seconds", type=float, default=600.0, help="stop after this long")
    asyncio.run(_serve_forever(parser.parse_args(argv)))
