"""``ConvaiClient``: configuration, lifetime, the two resources, and the bulk and migration methods.

The request engine lives in ``_engine`` (transport, limiter, retries, the call path), the wire
format in ``_wire``, the endpoints in ``resources`` and bulk runs in ``bulk``; this class wires
them together from its arguments and hands out ``characters`` and ``llm_models``.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from attrs import evolve

from . import _validation as check
from . import catalog
from ._engine.limiter import AdaptiveLimiter
from ._engine.retry import DEFAULT_RETRY, Retrier, RetryPolicy
from ._engine.session import ClientStats, Session
from ._engine.shared import DEFAULT_OPERATION_TIMEOUT as DEFAULT_REDIS_TIMEOUT
from ._engine.shared import DEFAULT_PREFIX as DEFAULT_REDIS_PREFIX
from ._engine.shared import SharedLimit
from ._engine.transport import AiohttpTransport
from ._version import __version__
from .bulk import BulkReport, ProgressCallback, UpdateResult, bulk_update, stream_updates
from .bulk import updates_for as _updates_for
from .defaults import (
    API_KEY_ENV,
    DEFAULT_BASE_URL,
    DEFAULT_BURST,
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_MAX_CONCURRENCY,
    DEFAULT_MAX_LIST_RESPONSE_BYTES,
    DEFAULT_MAX_RESPONSE_BYTES,
    DEFAULT_MAX_RETRIES,
    DEFAULT_MAX_RETRY_AFTER,
    DEFAULT_RATE_LIMIT_PATIENCE,
    DEFAULT_TIMEOUT,
    REDIS_URL_ENV,
)
from .errors import ValidationError
from .migration import MigrationPlan, apply_plan, plan_migration, rollback
from .models import Character, CharacterUpdate
from .resources import Characters, LlmModels

__all__ = [
    "API_KEY_ENV",
    "DEFAULT_BASE_URL",
    "DEFAULT_MAX_CONCURRENCY",
    "DEFAULT_MAX_RETRIES",
    "DEFAULT_RETRY",
    "DEFAULT_TIMEOUT",
    "ClientStats",
    "ConvaiClient",
    "RetryPolicy",
]

Journal = str | os.PathLike[str]


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
    if (
        parts.scheme == "http"
        and not allow_insecure_http
        and not _is_loopback(parts.hostname or "")
    ):
        raise ValidationError(
            "base_url",
            "plain http:// to a non-loopback host would send the API key in clear; "
            "use https:// or pass allow_insecure_http=True",
        )
    return url.rstrip("/")


class ConvaiClient:
    """An asyncio client for Convai's character-settings and custom-LLM APIs.

    Share one instance across your application (one per event loop): it owns a pooled session
    (created lazily in the running loop), a limiter that keeps at most ``max_concurrency``
    requests in flight and adapts to 429s, and a retry budget shared by every call.
    """

    def __init__(
        self,
        api_key: str | None = None,
        *,
        base_url: str = DEFAULT_BASE_URL,
        timeout: float = DEFAULT_TIMEOUT,
        max_retries: int | None = None,
        max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
        requests_per_second: float | None = None,
        session: aiohttp.ClientSession | None = None,
        deadline: float | None = None,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        retry: RetryPolicy = DEFAULT_RETRY,
        max_retry_after: float = DEFAULT_MAX_RETRY_AFTER,
        rate_limit_patience: float = DEFAULT_RATE_LIMIT_PATIENCE,
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
        key = check.secret("api_key", api_key)
        self._base_url = _checked_base_url(base_url, allow_insecure_http)
        timeout_s = check.positive("timeout", timeout)
        if max_retries is not None:
            retry = evolve(retry, max_retries=check.whole("max_retries", max_retries, minimum=0))
        self._retry = retry
        self._max_concurrency = check.whole("max_concurrency", max_concurrency, minimum=1)
        transport = AiohttpTransport(
            base_url=self._base_url,
            headers={
                "CONVAI-API-KEY": key,
                "Content-Type": "application/json",
                "Accept": "application/json",
                "User-Agent": f"convai-async/{__version__}",
            },
            timeout=timeout_s,
            connect_timeout=min(check.positive("connect_timeout", connect_timeout), timeout_s),
            pool_size=self._max_concurrency,
            session=session,
            trace_configs=trace_configs,
        )
        # the shared rate limit (issue 13): redis-py is imported only when a URL is given
        redis_url = redis_url if redis_url is not None else os.environ.get(REDIS_URL_ENV) or None
        self._shared = None
        if redis_url is not None:
            self._shared = SharedLimit.from_url(
                redis_url,
                key,
                prefix=redis_prefix,
                operation_timeout=check.positive("redis_timeout", redis_timeout),
            )
        limiter = AdaptiveLimiter(
            max_concurrency=self._max_concurrency,
            requests_per_second=check.optional_positive("requests_per_second", requests_per_second),
            burst=check.whole("burst", burst, minimum=1),
            max_retry_after=check.positive("max_retry_after", max_retry_after),
            shared=self._shared,
        )
        self._session = Session(
            transport,
            limiter=limiter,
            max_concurrency=self._max_concurrency,
            retrier=Retrier(retry),
            deadline=check.optional_positive("deadline", deadline),
            max_retry_after=check.positive("max_retry_after", max_retry_after),
            rate_limit_patience=check.positive("rate_limit_patience", rate_limit_patience),
            max_response_bytes=check.whole("max_response_bytes", max_response_bytes, minimum=1),
            max_list_response_bytes=check.whole(
                "max_list_response_bytes", max_list_response_bytes, minimum=1
            ),
        )
        self._session.register_secret(key)
        self.characters = Characters(self._session)
        self.llm_models = LlmModels(self._session, self.characters)

    def __repr__(self) -> str:
        return (
            f"ConvaiClient(base_url={self._base_url!r}, max_concurrency={self._max_concurrency}, "
            f"max_retries={self._retry.max_retries}, closed={self.closed})"
        )

    # -- lifetime -------------------------------------------------------------------------------

    async def __aenter__(self) -> ConvaiClient:
        self._session.check_open()
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
        await self._session.close()
        if self._shared is not None:
            await self._shared.close()

    @property
    def closed(self) -> bool:
        return self._session.closed

    @property
    def max_concurrency(self) -> int:
        return self._max_concurrency

    @property
    def stats(self) -> ClientStats:
        """Counters and the limiter's current state (a snapshot)."""
        stats = self._session.stats
        if self._shared is None:
            return stats
        return evolve(
            stats,
            shared_limit=self._shared.status,
            shared_limit_failures=self._shared.failures,
        )

    async def is_known_model(self, code: str) -> bool:
        """Whether ``code`` is a built-in model code or a registered custom LLM group name."""
        check.text("model", code)
        if catalog.is_builtin(code):
            return True
        return any(model.model_group_name == code for model in await self.llm_models.list())

    # -- bulk and migrations (see the bulk package) ---------------------------------------------

    def stream_updates(
        self,
        updates: Iterable[CharacterUpdate] | AsyncIterable[CharacterUpdate],
        *,
        journal: Journal | None = None,
        stop: asyncio.Event | None = None,
    ) -> AsyncIterator[UpdateResult]:
        """Apply updates concurrently, yielding one UpdateResult per input item as each finishes.
        Setting ``stop`` ends the run gracefully: no new input is read, in-flight items finish."""
        return stream_updates(self._session, updates, journal=journal, stop=stop)

    async def bulk_update(
        self,
        updates: Iterable[CharacterUpdate] | AsyncIterable[CharacterUpdate],
        journal: Journal | None = None,
        on_progress: ProgressCallback | None = None,
        *,
        total: int | None = None,
        stop: asyncio.Event | None = None,
    ) -> BulkReport:
        """Apply every update; never raises for a per-item failure. See ``BulkReport``."""
        return await bulk_update(
            self._session, updates, journal=journal, on_progress=on_progress, total=total, stop=stop
        )

    async def bulk_set_model(
        self,
        char_ids: Iterable[str] | AsyncIterable[str],
        model: str,
        journal: Journal | None = None,
        on_progress: ProgressCallback | None = None,
        *,
        stop: asyncio.Event | None = None,
    ) -> BulkReport:
        """Set one model on many characters (a bulk update)."""
        check.text("model", model)
        return await self._bulk_set(char_ids, journal, on_progress, stop, model=model)

    async def bulk_set_temperature(
        self,
        char_ids: Iterable[str] | AsyncIterable[str],
        temperature: float,
        journal: Journal | None = None,
        on_progress: ProgressCallback | None = None,
        *,
        stop: asyncio.Event | None = None,
    ) -> BulkReport:
        """Set one temperature on many characters (a bulk update)."""
        value = check.temperature("temperature", temperature)
        return await self._bulk_set(char_ids, journal, on_progress, stop, temperature=value)

    async def _bulk_set(
        self,
        char_ids: Iterable[str] | AsyncIterable[str],
        journal: Journal | None,
        on_progress: ProgressCallback | None,
        stop: asyncio.Event | None,
        **values: Any,
    ) -> BulkReport:
        return await bulk_update(
            self._session,
            _updates_for(char_ids, **values),
            journal=journal,
            on_progress=on_progress,
            total=len(char_ids) if isinstance(char_ids, Sequence) else None,
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
        journal: Journal | None = None,
        on_progress: ProgressCallback | None = None,
        *,
        stop: asyncio.Event | None = None,
    ) -> BulkReport:
        """Run a plan; the journal records previous values, for resume and ``rollback``."""
        return await apply_plan(
            self._session, plan, journal=journal, on_progress=on_progress, stop=stop
        )

    async def rollback(
        self,
        journal: Journal,
        *,
        rollback_journal: Journal | None = None,
        on_progress: ProgressCallback | None = None,
        stop: asyncio.Event | None = None,
    ) -> BulkReport:
        """Restore what a migration journal recorded as each changed character's values."""
        return await rollback(
            self._session,
            Path(journal),
            rollback_journal=rollback_journal,
            on_progress=on_progress,
            stop=stop,
        )
