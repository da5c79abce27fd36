"""``ConvaiClient``: one pooled, rate-limit-aware session for every endpoint.

Each call goes: validate (models) -> encode (protocol) -> retry loop (backoff) -> limiter ->
transport (the one I/O boundary) -> parse (protocol) -> structure (converter).
"""

from __future__ import annotations

import asyncio
import contextvars
import ipaddress
import logging
import os
import time
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

import aiohttp
import backoff
from attrs import define, frozen

from . import _validation as check
from . import catalog, protocol
from ._converter import converter
from ._engine.limiter import AdaptiveLimiter
from ._engine.shared import DEFAULT_OPERATION_TIMEOUT as DEFAULT_REDIS_TIMEOUT
from ._engine.shared import DEFAULT_PREFIX as DEFAULT_REDIS_PREFIX
from ._engine.shared import SharedLimit
from ._retry import RetryBudget, full_jitter_waits
from ._transport import AiohttpTransport
from ._version import __version__
from .errors import (
    ClientClosedError,
    ConflictError,
    ConvaiError,
    ConvaiTimeoutError,
    NotFoundError,
    RateLimitError,
    TransportError,
    UnexpectedResponseError,
    ValidationError,
)
from .models import (
    Character,
    CharacterNameQuery,
    CharacterQuery,
    CharacterUpdate,
    CustomModel,
    DeregisteredModel,
    ModelReference,
    ModelRegistration,
    ModelUpdate,
    RegisteredModel,
    UpdatedModel,
)

if TYPE_CHECKING:
    from .bulk import BulkReport, ProgressCallback, UpdateResult
    from .migration import MigrationPlan

__all__ = [
    "API_KEY_ENV",
    "DEFAULT_BASE_URL",
    "DEFAULT_RETRY",
    "ClientStats",
    "ConvaiClient",
    "RetryPolicy",
]

logger = logging.getLogger("convai_async")

API_KEY_ENV = "CONVAI_API_KEY"
REDIS_URL_ENV = "CONVAI_REDIS_URL"
DEFAULT_BASE_URL = "https://api.convai.com"
DEFAULT_TIMEOUT = 30.0
DEFAULT_CONNECT_TIMEOUT = 10.0
DEFAULT_MAX_RETRIES = 5
DEFAULT_MAX_CONCURRENCY = 16
DEFAULT_MAX_RETRY_AFTER = 60.0
DEFAULT_BURST = 4
DEFAULT_MAX_RESPONSE_BYTES = 1 << 20
DEFAULT_MAX_LIST_RESPONSE_BYTES = 256 << 20

T = TypeVar("T")


@frozen
class RetryPolicy:
    """How failed attempts are retried (see the README's "Retries" section).

    Waits are exponential with full jitter: uniform in [0, min(max_wait, initial_wait *
    multiplier**n)]. The budget is shared by all calls of a client (see ``RetryBudget``).
    """

    initial_wait: float = 0.5
    multiplier: float = 2.0
    max_wait: float = 8.0
    budget: int = 500
    retry_cost: int = 5
    timeout_cost: int = 10
    success_refund: int = 1


DEFAULT_RETRY = RetryPolicy()


@frozen
class ClientStats:
    """A snapshot of a client's counters and of its limiter's current state."""

    requests: int
    succeeded: int
    failed: int
    retries: int
    rate_limited: int
    in_flight: int
    effective_concurrency: int
    effective_rate: float | None
    paused_for: float
    retry_budget_left: int
    shared_limit: str = "off"  # "off", "shared" (through Redis) or "local fallback"
    shared_limit_failures: int = 0  # Redis operations that failed or timed out (failed open)


@define
class _Counters:
    requests: int = 0
    succeeded: int = 0
    failed: int = 0
    retries: int = 0
    rate_limited: int = 0


@define
class _Call:
    """What one logical call has seen across its attempts."""

    attempts: int = 0
    request_sent_unanswered: bool = False
    first_error: ConvaiError | None = None  # handed from the bare first attempt to backoff


_CURRENT_CALL: contextvars.ContextVar[_Call] = contextvars.ContextVar("convai_async_call")


def _is_loopback(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _checked_base_url(base_url: Any, allow_insecure_http: bool) -> str:
    url = check.http_url("base_url", base_url)
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.scheme == "http" and not allow_insecure_http and not _is_loopback(host):
        raise ValidationError(
            "base_url",
            "plain http:// to a non-loopback host would send the API key in clear; "
            "use https:// or pass allow_insecure_http=True",
        )
    return url.rstrip("/")


class ConvaiClient:
    """An asyncio client for Convai's character-settings and custom-LLM APIs.

    Share one instance across your application: it owns a pooled session (created lazily in the
    running loop), a limiter that keeps at most ``max_concurrency`` requests in flight and adapts
    to 429s, and a retry budget shared by every call.
    """

    def __init__(
        self,
        api_key: str | None = None,
        base_url: str = DEFAULT_BASE_URL,
        timeout: float = DEFAULT_TIMEOUT,
        max_retries: int = DEFAULT_MAX_RETRIES,
        max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
        requests_per_second: float | None = None,
        session: aiohttp.ClientSession | None = None,
        *,
        deadline: float | None = None,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        retry: RetryPolicy = DEFAULT_RETRY,
        max_retry_after: float = DEFAULT_MAX_RETRY_AFTER,
        burst: int = DEFAULT_BURST,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        max_list_response_bytes: int = DEFAULT_MAX_LIST_RESPONSE_BYTES,
        allow_insecure_http: bool = False,
        trace_configs: Sequence[aiohttp.TraceConfig] | None = None,
        redis_url: str | None = None,
        redis_prefix: str = DEFAULT_REDIS_PREFIX,
        redis_timeout: float = DEFAULT_REDIS_TIMEOUT,
    ) -> None:
        if api_key is None:
            api_key = os.environ.get(API_KEY_ENV)
            if api_key is None:
                raise ValidationError("api_key", f"not given and ${API_KEY_ENV} is not set")
        self._api_key = check.secret("api_key", api_key)
        self._base_url = _checked_base_url(base_url, allow_insecure_http)
        timeout_s = check.positive("timeout", timeout)
        connect_s = min(check.positive("connect_timeout", connect_timeout), timeout_s)
        self._max_retries = check.whole("max_retries", max_retries, minimum=0)
        self._max_concurrency = check.whole("max_concurrency", max_concurrency, minimum=1)
        rate = check.optional_positive("requests_per_second", requests_per_second)
        self._deadline = check.optional_positive("deadline", deadline)
        self._max_response_bytes = check.whole("max_response_bytes", max_response_bytes, minimum=1)
        self._max_list_response_bytes = check.whole(
            "max_list_response_bytes", max_list_response_bytes, minimum=1
        )
        self._secrets: tuple[str, ...] = (self._api_key,)
        self._transport = AiohttpTransport(
            base_url=self._base_url,
            headers={
                "CONVAI-API-KEY": self._api_key,
                "Content-Type": "application/json",
                "Accept": "application/json",
                "User-Agent": f"convai-async/{__version__}",
            },
            timeout=timeout_s,
            connect_timeout=connect_s,
            pool_size=self._max_concurrency,
            session=session,
            trace_configs=trace_configs,
        )
        # -- shared rate limit (issue 13): only with a Redis URL is redis-py imported
        if redis_url is None:
            redis_url = os.environ.get(REDIS_URL_ENV) or None
        self._shared = (
            None
            if redis_url is None
            else SharedLimit.from_url(
                redis_url,
                self._api_key,
                prefix=redis_prefix,
                operation_timeout=check.positive("redis_timeout", redis_timeout),
            )
        )
        self._limiter = AdaptiveLimiter(
            max_concurrency=self._max_concurrency,
            requests_per_second=rate,
            burst=check.whole("burst", burst, minimum=1),
            max_retry_after=check.positive("max_retry_after", max_retry_after),
            shared=self._shared,
        )
        self._budget = RetryBudget(
            capacity=retry.budget,
            retry_cost=retry.retry_cost,
            timeout_cost=retry.timeout_cost,
            success_refund=retry.success_refund,
        )
        self._counters = _Counters()
        self._closed = False
        self._retrying = backoff.on_exception(
            full_jitter_waits,
            ConvaiError,
            max_tries=self._max_retries + 1,
            jitter=None,
            giveup=self._gives_up,
            on_backoff=self._log_retry,
            logger=None,
            initial=retry.initial_wait,
            multiplier=retry.multiplier,
            maximum=retry.max_wait,
        )(self._replay_then_attempt)
        self.characters = Characters(self)
        self.llm_models = LlmModels(self)

    def __repr__(self) -> str:
        return (
            f"ConvaiClient(base_url={self._base_url!r}, max_concurrency={self._max_concurrency}, "
            f"max_retries={self._max_retries}, closed={self._closed})"
        )

    # -- lifetime -------------------------------------------------------------------------------

    async def __aenter__(self) -> ConvaiClient:
        self._check_open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the session this client created (a session passed in is left open). Idempotent."""
        self._closed = True
        await self._transport.close()
        if self._shared is not None:
            await self._shared.close()

    @property
    def closed(self) -> bool:
        return self._closed

    def _check_open(self) -> None:
        if self._closed:
            raise ClientClosedError("this ConvaiClient is closed; create a new one")

    @property
    def max_concurrency(self) -> int:
        return self._max_concurrency

    @property
    def stats(self) -> ClientStats:
        counters = self._counters
        return ClientStats(
            requests=counters.requests,
            succeeded=counters.succeeded,
            failed=counters.failed,
            retries=counters.retries,
            rate_limited=counters.rate_limited,
            in_flight=self._limiter.in_flight,
            effective_concurrency=self._limiter.effective_concurrency,
            effective_rate=self._limiter.effective_rate,
            paused_for=self._limiter.paused_for,
            retry_budget_left=self._budget.tokens,
            shared_limit="off" if self._shared is None else self._shared.status,
            shared_limit_failures=0 if self._shared is None else self._shared.failures,
        )

    # -- the request path -----------------------------------------------------------------------

    async def _call(
        self, endpoint: protocol.Endpoint, request: object | None, call: _Call | None = None
    ) -> Any:
        """One logical call: retries, limiter, deadline. Returns the decoded success payload."""
        self._check_open()
        body = protocol.encode_body(request)
        call = call if call is not None else _Call()
        token = _CURRENT_CALL.set(call)
        try:
            if self._deadline is None:
                return await self._send(endpoint, body, call)
            try:
                return await asyncio.wait_for(self._send(endpoint, body, call), self._deadline)
            except ConvaiError:
                raise
            except asyncio.TimeoutError:
                pass
            raise ConvaiTimeoutError(
                f"deadline of {self._deadline:g}s exceeded after {call.attempts} attempt(s)",
                endpoint=endpoint.path,
                request_sent=call.attempts > 0,
            )
        finally:
            _CURRENT_CALL.reset(token)

    async def _send(self, endpoint: protocol.Endpoint, body: bytes, call: _Call) -> Any:
        """The first attempt runs bare (the common case costs no retry machinery); a retryable
        failure enters backoff's loop, which decides, waits and retries."""
        try:
            return await self._attempt(endpoint, body, call)
        except ConvaiError as error:
            if not protocol.is_retryable(error) or self._max_retries == 0:
                self._counters.failed += 1
                raise
            call.first_error = error
        return await self._retrying(endpoint, body, call)

    async def _replay_then_attempt(
        self, endpoint: protocol.Endpoint, body: bytes, call: _Call
    ) -> Any:
        """backoff's target: its first try re-raises the first attempt's error, so backoff treats
        it as any failure (give up or wait); later tries are real attempts."""
        error, call.first_error = call.first_error, None
        if error is not None:
            raise error
        return await self._attempt(endpoint, body, call)

    async def _attempt(self, endpoint: protocol.Endpoint, body: bytes, call: _Call) -> Any:
        self._check_open()
        sent_at = await self._limiter.acquire()
        call.attempts += 1
        self._counters.requests += 1
        started = time.monotonic() if logger.isEnabledFor(logging.DEBUG) else 0.0
        cap = self._max_list_response_bytes if endpoint.large else self._max_response_bytes
        try:
            response = await self._transport.send(endpoint.path, body, max_bytes=cap)
        except TransportError as error:
            call.request_sent_unanswered |= error.request_sent
            self._log_attempt(endpoint, call, started, None, error)
            raise
        finally:
            self._limiter.release()
        try:
            payload = protocol.parse_response(
                endpoint, response.status, response.headers, response.body, secrets=self._secrets
            )
        except RateLimitError as error:
            self._counters.rate_limited += 1
            if protocol.is_retryable(error):
                self._limiter.on_rate_limited(error.retry_after, sent_at)
            self._log_attempt(endpoint, call, started, response.status, error)
            raise
        except ConvaiError as error:
            self._log_attempt(endpoint, call, started, response.status, error)
            raise
        self._limiter.on_success()
        self._budget.refund()
        self._counters.succeeded += 1
        if logger.isEnabledFor(logging.DEBUG):
            self._log_attempt(endpoint, call, started, response.status, None)
        return payload

    def _gives_up(self, error: Exception) -> bool:
        call = _CURRENT_CALL.get(None)
        final = (
            not protocol.is_retryable(error)
            or self._closed
            or (call is not None and call.attempts > self._max_retries)
        )
        if (
            not final
            and not isinstance(error, RateLimitError)
            and not self._budget.try_spend(error)
        ):
            logger.warning("retry budget exhausted; failing fast: %s", error)
            final = True
        if final:
            self._counters.failed += 1
        return final

    def _log_retry(self, details: Any) -> None:
        self._counters.retries += 1
        logger.warning(
            "retrying after %s (attempt %d of %d) in %.2fs",
            details["exception"],
            details["tries"],
            self._max_retries + 1,
            details["wait"],
        )

    def _log_attempt(
        self,
        endpoint: protocol.Endpoint,
        call: _Call,
        started: float,
        status: int | None,
        error: ConvaiError | None,
    ) -> None:
        if not logger.isEnabledFor(logging.DEBUG):
            return
        logger.debug(
            "%s attempt=%d status=%s latency_ms=%.1f transaction_id=%s%s",
            endpoint.path,
            call.attempts,
            status if status is not None else "-",
            (time.monotonic() - started) * 1000,
            getattr(error, "transaction_id", None) or "-",
            f" error={type(error).__name__}" if error else "",
        )

    def _structure(self, payload: Any, cls: type[T], endpoint: protocol.Endpoint) -> T:
        try:
            return converter.structure(payload, cls)
        except Exception:  # noqa: BLE001, S110 - any structuring failure: an undocumented answer
            pass
        raise UnexpectedResponseError(
            f"could not read the answer as {cls.__name__}", status=200, endpoint=endpoint.path
        )

    # -- models ---------------------------------------------------------------------------------

    async def is_known_model(self, code: str) -> bool:
        """Whether ``code`` is a built-in model code or a registered custom LLM group name."""
        check.text("model", code)
        if catalog.is_builtin(code):
            return True
        return any(model.model_group_name == code for model in await self.llm_models.list())

    # -- bulk and migrations (see bulk.py and migration.py) --------------------------------------

    def stream_updates(
        self,
        updates: Iterable[CharacterUpdate] | AsyncIterable[CharacterUpdate],
        *,
        journal: str | os.PathLike[str] | None = None,
        stop: asyncio.Event | None = None,
    ) -> AsyncIterator[UpdateResult]:
        """Apply updates concurrently, yielding one UpdateResult per input item as each finishes.
        Setting ``stop`` ends the run gracefully: no new input is read, in-flight items finish."""
        from .bulk import stream_updates

        return stream_updates(self, updates, journal=journal, stop=stop)

    async def bulk_update(
        self,
        updates: Iterable[CharacterUpdate] | AsyncIterable[CharacterUpdate],
        journal: str | os.PathLike[str] | None = None,
        on_progress: ProgressCallback | None = None,
        *,
        total: int | None = None,
        stop: asyncio.Event | None = None,
    ) -> BulkReport:
        """Apply every update; never raises for a per-item failure. See ``BulkReport``."""
        from .bulk import bulk_update

        return await bulk_update(
            self, updates, journal=journal, on_progress=on_progress, total=total, stop=stop
        )

    async def bulk_set_model(
        self,
        char_ids: Iterable[str] | AsyncIterable[str],
        model: str,
        journal: str | os.PathLike[str] | None = None,
        on_progress: ProgressCallback | None = None,
        *,
        stop: asyncio.Event | None = None,
    ) -> BulkReport:
        check.text("model", model)
        return await self._bulk_set(char_ids, journal, on_progress, stop, model=model)

    async def bulk_set_temperature(
        self,
        char_ids: Iterable[str] | AsyncIterable[str],
        temperature: float,
        journal: str | os.PathLike[str] | None = None,
        on_progress: ProgressCallback | None = None,
        *,
        stop: asyncio.Event | None = None,
    ) -> BulkReport:
        value = check.temperature("temperature", temperature)
        return await self._bulk_set(char_ids, journal, on_progress, stop, temperature=value)

    async def _bulk_set(
        self,
        char_ids: Iterable[str] | AsyncIterable[str],
        journal: str | os.PathLike[str] | None,
        on_progress: ProgressCallback | None,
        stop: asyncio.Event | None,
        **values: Any,
    ) -> BulkReport:
        from .bulk import bulk_update, updates_for

        return await bulk_update(
            self,
            updates_for(char_ids, **values),
            journal=journal,
            on_progress=on_progress,
            total=_known_length(char_ids),
            stop=stop,
        )

    async def plan_migration(
        self,
        to_model: str,
        from_model: str | None = None,
        temperature: float | None = None,
        where: Callable[[Character], bool] | None = None,
        *,
        allow_unknown_model: bool = False,
    ) -> MigrationPlan:
        """Select characters to move to ``to_model`` (and ``temperature``); sends no update."""
        from .migration import plan_migration

        return await plan_migration(
            self,
            to_model=to_model,
            from_model=from_model,
            temperature=temperature,
            where=where,
            allow_unknown_model=allow_unknown_model,
        )

    async def apply(
        self,
        plan: MigrationPlan,
        journal: str | os.PathLike[str] | None = None,
        on_progress: ProgressCallback | None = None,
        *,
        stop: asyncio.Event | None = None,
    ) -> BulkReport:
        """Run a plan; the journal records previous values, for resume and ``rollback``."""
        from .migration import apply_plan

        return await apply_plan(self, plan, journal=journal, on_progress=on_progress, stop=stop)

    async def rollback(
        self,
        journal: str | os.PathLike[str],
        *,
        rollback_journal: str | os.PathLike[str] | None = None,
        on_progress: ProgressCallback | None = None,
        stop: asyncio.Event | None = None,
    ) -> BulkReport:
        """Restore what a migration journal recorded as each changed character's values."""
        from .migration import rollback

        return await rollback(
            self,
            Path(journal),
            rollback_journal=rollback_journal,
            on_progress=on_progress,
            stop=stop,
        )


def _known_length(items: object) -> int | None:
    return len(items) if isinstance(items, Sequence) else None


class Characters:
    """``client.characters``: the character endpoints."""

    def __init__(self, client: ConvaiClient) -> None:
        self._client = client

    async def update(
        self, char_id: str, model: str | None = None, temperature: float | None = None
    ) -> None:
        """Set the model, the temperature, or both, in one request (only the fields given)."""
        await self.apply(CharacterUpdate(char_id, model=model, temperature=temperature))

    async def set_model(self, char_id: str, model: str) -> None:
        """Set a character's LLM. Any code is accepted: built-ins and custom group names."""
        if model is None:
            raise ValidationError("model", "must not be empty")
        await self.apply(CharacterUpdate(char_id, model=model))

    async def set_temperature(self, char_id: str, temperature: float) -> None:
        if temperature is None:
            raise ValidationError("temperature", "must be a real number in [0, 1], got None")
        await self.apply(CharacterUpdate(char_id, temperature=temperature))

    async def apply(self, update: CharacterUpdate) -> None:
        """Send one CharacterUpdate (what ``update``, ``set_model`` and ``set_temperature`` do)."""
        await self._client._call(protocol.CHARACTER_UPDATE, update)

    async def get(self, char_id: str) -> Character:
        payload = await self._client._call(protocol.CHARACTER_GET, CharacterQuery(char_id))
        return self._client._structure(payload, Character, protocol.CHARACTER_GET)

    async def get_by_name(self, name: str) -> Character:
        """The character with this name (``charName``), among yours and the public ones."""
        payload = await self._client._call(protocol.CHARACTER_GET, CharacterNameQuery(name))
        return self._client._structure(payload, Character, protocol.CHARACTER_GET)

    async def list(self) -> list[Character]:
        payload = await self._client._call(protocol.CHARACTER_LIST, None)
        return self._client._structure(
            payload["characters"], list[Character], protocol.CHARACTER_LIST
        )


class LlmModels:
    """``client.llm_models``: the custom LLM endpoints (Enterprise plan)."""

    def __init__(self, client: ConvaiClient) -> None:
        self._client = client

    async def register(
        self,
        model_group_name: str,
        model_name: str,
        api_key: str,
        is_uncensored: bool,
        display_name: str | None = None,
        base_url: str | None = None,
    ) -> RegisteredModel:
        """Register a custom LLM. The endpoint is not idempotent: when an earlier attempt went
        unanswered and a retry answers 409, the registered model is compared with what was sent;
        a match is a success (``reconciled=True``), anything else raises ConflictError."""
        registration = ModelRegistration(
            model_group_name=model_group_name,
            model_name=model_name,
            api_key=api_key,
            is_uncensored=is_uncensored,
            display_name=display_name,
            base_url=base_url,
        )
        client = self._client
        call = _Call()
        self._note_secret(registration.api_key)
        try:
            payload = await client._call(protocol.MODEL_REGISTER, registration, call)
        except ConflictError:
            if not call.request_sent_unanswered or not await self._registered_as(registration):
                raise
            logger.info("register %s: lost answer reconciled by listing", model_group_name)
            return RegisteredModel(
                model_group_name=registration.model_group_name,
                model_name=registration.model_name,
                display_name=registration.display_name,
                reconciled=True,
            )
        return client._structure(payload, RegisteredModel, protocol.MODEL_REGISTER)

    async def _registered_as(self, registration: ModelRegistration) -> bool:
        for model in await self.list():
            if model.model_group_name == registration.model_group_name:
                wanted: dict[str, object] = {
                    "model_name": registration.model_name,
                    "is_uncensored": registration.is_uncensored,
                }
                if registration.display_name is not None:
                    wanted["display_name"] = registration.display_name
                if registration.base_url is not None:
                    wanted["base_url"] = registration.base_url
                return all(getattr(model, key) == value for key, value in wanted.items())
        return False

    def _note_secret(self, secret: str | None) -> None:
        """Custom LLM keys are redacted from error messages, like the client's own key."""
        if secret and secret not in self._client._secrets:
            self._client._secrets = (*self._client._secrets, secret)

    async def update(
        self,
        model_group_name: str,
        display_name: str | None = None,
        base_url: str | None = None,
        api_key: str | None = None,
        is_uncensored: bool | None = None,
    ) -> UpdatedModel:
        change = ModelUpdate(
            model_group_name=model_group_name,
            display_name=display_name,
            base_url=base_url,
            api_key=api_key,
            is_uncensored=is_uncensored,
        )
        self._note_secret(change.api_key)
        payload = await self._client._call(protocol.MODEL_UPDATE, change)
        return self._client._structure(payload, UpdatedModel, protocol.MODEL_UPDATE)

    async def deregister(self, model_group_name: str) -> DeregisteredModel:
        """Remove a custom LLM. A 404 after an earlier attempt went unanswered means that attempt
        did the work: that is reported as success (``reconciled=True``)."""
        reference = ModelReference(model_group_name)
        call = _Call()
        try:
            payload = await self._client._call(protocol.MODEL_DEREGISTER, reference, call)
        except NotFoundError:
            if not call.request_sent_unanswered:
                raise
            if any(m.model_group_name == model_group_name for m in await self.list()):
                raise
            return DeregisteredModel(reconciled=True)
        return self._client._structure(payload, DeregisteredModel, protocol.MODEL_DEREGISTER)

    async def list(self) -> list[CustomModel]:
        payload = await self._client._call(protocol.MODEL_LIST, None)
        return self._client._structure(payload["models"], list[CustomModel], protocol.MODEL_LIST)
