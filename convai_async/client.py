"""``ConvaiClient``: configuration, lifetime, the two resources, and the bulk and migration methods.

The request engine lives in ``_engine`` (transport, limiter, retries, the call path), the wire
format in ``_wire``, the endpoints in ``resources`` and bulk runs in ``bulk``; this class wires
them together from its arguments and hands out ``characters`` and ``llm_models``.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Sequence
from types import TracebackType
from typing import Any

import aiohttp
from attrs import evolve

from . import _validation as check
from . import catalog
from ._engine.retry import DEFAULT_RETRY, Retrier, RetryPolicy
from ._engine.session import ClientStats, Session
from ._engine.shared import DEFAULT_OPERATION_TIMEOUT, DEFAULT_PREFIX, limiter_for, shared_limit
from ._engine.transport import AiohttpTransport
from ._version import __version__
from ._wire.secrets import Secret
from .bulk import BulkReport, MigrationPlan, ProgressCallback, RollbackReport, UpdateResult
from .bulk import migration as bulk_migration
from .bulk import rollback as bulk_rollback
from .bulk import updates as bulk_updates
from .bulk.report import ResultCallback
from .defaults import (
    API_KEY_ENV,
    DEFAULT_BASE_URL,
    DEFAULT_BURST,
    DEFAULT_CLOSE_GRACE,
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_MAX_CONCURRENCY,
    DEFAULT_MAX_LIST_RESPONSE_BYTES,
    DEFAULT_MAX_RESPONSE_BYTES,
    DEFAULT_MAX_RETRIES,
    DEFAULT_MAX_RETRY_AFTER,
    DEFAULT_RATE_LIMIT_PATIENCE,
    DEFAULT_TIMEOUT,
)
from .errors import ValidationError
from .models import Character, CharacterUpdate
from .resources import Characters, LlmModels

__all__ = [
    "API_KEY_ENV",
    "DEFAULT_BASE_URL",
    "DEFAULT_CLOSE_GRACE",
    "DEFAULT_MAX_CONCURRENCY",
    "DEFAULT_MAX_RETRIES",
    "DEFAULT_RETRY",
    "DEFAULT_TIMEOUT",
    "ClientStats",
    "ConvaiClient",
    "RetryPolicy",
]

Journal = str | os.PathLike[str]
MAX_CONCURRENCY = 10_000
MAX_BURST = 1_000_000
MAX_RETRIES = 1_000
MAX_RESPONSE_BYTES = 1 << 40
MAX_REQUESTS_PER_SECOND = 1e6


def _api_key_from(api_key: Any) -> Secret:
    if api_key is None:
        api_key = os.environ.get(API_KEY_ENV)
        if api_key is None:
            raise ValidationError("api_key", f"not given and ${API_KEY_ENV} is not set")
    return check.secret("api_key", api_key)


def _checked_retry(policy: Any) -> RetryPolicy:
    """The policy, each of its numbers checked as the client's own options are."""
    if not isinstance(policy, RetryPolicy):
        raise ValidationError("retry", f"must be a RetryPolicy, got {type(policy).__name__}")
    return evolve(
        policy,
        max_retries=check.whole(
            "retry.max_retries", policy.max_retries, minimum=0, maximum=MAX_RETRIES
        ),
        initial_wait=check.seconds("retry.initial_wait", policy.initial_wait, allow_zero=True),
        multiplier=check.positive("retry.multiplier", policy.multiplier, maximum=1000.0),
        max_wait=check.seconds("retry.max_wait", policy.max_wait, allow_zero=True),
        budget=check.whole("retry.budget", policy.budget, minimum=0, maximum=10**9),
        retry_cost=check.whole("retry.retry_cost", policy.retry_cost, minimum=0, maximum=10**9),
        timeout_cost=check.whole(
            "retry.timeout_cost", policy.timeout_cost, minimum=0, maximum=10**9
        ),
        success_refund=check.whole(
            "retry.success_refund", policy.success_refund, minimum=0, maximum=10**9
        ),
    )


class ConvaiClient:
    """An asyncio client for Convai's character-settings and custom-LLM APIs.

    Share one instance across your application, one per event loop: it is bound to the loop
    it first runs in, and raises ``WrongEventLoopError`` at once if used from another. It owns
    a pooled session (created lazily in that loop), a limiter that keeps at most
    ``max_concurrency`` requests in flight and adapts to 429s, and a retry budget shared by
    every call.

    Numbers: seconds (``timeout``, ``connect_timeout``, ``deadline``, ``max_retry_after``,
    ``rate_limit_patience``) are real numbers above 0 and at most a year;
    ``requests_per_second`` above 0 and at most 10**6; ``max_concurrency`` 1 to 10,000;
    ``burst`` 1 to 10**6; ``max_retries`` 0 to 1,000; byte caps 1 to 2**40. Any real number
    type is accepted (``Decimal``, ``Fraction``, numpy scalars); anything else, bool included,
    raises ValidationError.
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
        redis_prefix: str = DEFAULT_PREFIX,
        redis_timeout: float = DEFAULT_OPERATION_TIMEOUT,
    ) -> None:
        key = _api_key_from(api_key)
        del api_key  # from here on only the Secret: a traceback's locals never show the key
        self._base_url = check.api_base_url("base_url", base_url, allow_insecure_http)
        timeout_s = check.seconds("timeout", timeout)
        retry = _checked_retry(retry)
        if max_retries is not None:
            retry = evolve(
                retry,
                max_retries=check.whole("max_retries", max_retries, minimum=0, maximum=MAX_RETRIES),
            )
        self._retry = retry
        self._max_concurrency = check.whole(
            "max_concurrency", max_concurrency, minimum=1, maximum=MAX_CONCURRENCY
        )
        transport = AiohttpTransport(
            base_url=self._base_url,
            api_key=key,
            headers={
                "Content-Type": "application/json",
                "Accept": "application/json",
                "User-Agent": f"convai-async/{__version__}",
            },
            timeout=timeout_s,
            connect_timeout=min(check.seconds("connect_timeout", connect_timeout), timeout_s),
            pool_size=self._max_concurrency,
            session=session,
            trace_configs=trace_configs,
        )
        limiter = limiter_for(  # shared through Redis when a URL is given (issue 13)
            shared_limit(redis_url, key, redis_prefix, redis_timeout),
            max_concurrency=self._max_concurrency,
            requests_per_second=check.optional_positive(
                "requests_per_second", requests_per_second, maximum=MAX_REQUESTS_PER_SECOND
            ),
            burst=check.whole("burst", burst, minimum=1, maximum=MAX_BURST),
            rate_limit_patience=check.seconds("rate_limit_patience", rate_limit_patience),
        )
        self._session = Session(
            transport,
            limiter=limiter,
            max_concurrency=self._max_concurrency,
            retrier=Retrier(retry),
            deadline=check.optional_seconds("deadline", deadline),
            max_retry_after=check.seconds("max_retry_after", max_retry_after),
            rate_limit_patience=check.seconds("rate_limit_patience", rate_limit_patience),
            max_response_bytes=check.whole(
                "max_response_bytes", max_response_bytes, minimum=1, maximum=MAX_RESPONSE_BYTES
            ),
            max_list_response_bytes=check.whole(
                "max_list_response_bytes",
                max_list_response_bytes,
                minimum=1,
                maximum=MAX_RESPONSE_BYTES,
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
        self._session.check_loop()
        self._session.check_open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self, *, grace: float = DEFAULT_CLOSE_GRACE) -> None:
        """Close the client. Idempotent.

        Calls waiting for a slot or a retry fail at once with ``ClientClosedError``; calls in
        flight get ``grace`` seconds to finish, then are cancelled (``ClientClosedError`` with
        ``request_sent=True``: the write may have been applied). Returns once nothing is being
        sent and the session this client created is closed (a session passed in stays open):
        no request leaves after that."""
        await self._session.close(check.seconds("grace", grace, allow_zero=True))

    @property
    def closed(self) -> bool:
        return self._session.closed

    @property
    def max_concurrency(self) -> int:
        return self._max_concurrency

    @property
    def stats(self) -> ClientStats:
        """Counters and the limiter's current state (a snapshot)."""
        return self._session.stats

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
        return bulk_updates.stream_bulk(self._session, updates, journal=journal, stop=stop)

    async def bulk_update(
        self,
        updates: Iterable[CharacterUpdate] | AsyncIterable[CharacterUpdate],
        journal: Journal | None = None,
        on_progress: ProgressCallback | None = None,
        *,
        total: int | None = None,
        stop: asyncio.Event | None = None,
        on_result: ResultCallback | None = None,
    ) -> BulkReport:
        """Apply every update; never raises for a per-item failure. See ``BulkReport``.
        ``on_result`` (here, in ``apply``, ``rollback``) gets each result as it finishes."""
        return await bulk_updates.run_bulk(
            self._session, updates, journal=journal, total=total, stop=stop,
            on_progress=on_progress, on_result=on_result,
        )  # fmt: skip

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
        return await bulk_updates.run_bulk(
            self._session,
            bulk_updates.updates_for(char_ids, **values),
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
        return await bulk_migration.plan_migration(
            self.characters,
            to_model=to_model,
            from_model=from_model,
            temperature=temperature,
            where=where,
            is_known_model=None if allow_unknown_model else self.is_known_model,
        )

    async def apply(
        self,
        plan: MigrationPlan,
        journal: Journal | None = None,
        on_progress: ProgressCallback | None = None,
        *,
        stop: asyncio.Event | None = None,
        on_result: ResultCallback | None = None,
    ) -> BulkReport:
        """Run a plan. With a journal, the plan is recorded first and every change is journaled
        before it is sent; applying again with the same journal resumes the recorded plan."""
        return await bulk_migration.apply_plan(
            self._session, plan, journal=journal, stop=stop,
            on_progress=on_progress, on_result=on_result,
        )  # fmt: skip

    async def rollback(
        self,
        journal: Journal,
        *,
        rollback_journal: Journal | None = None,
        force: bool = False,
        on_progress: ProgressCallback | None = None,
        stop: asyncio.Event | None = None,
        on_result: ResultCallback | None = None,
    ) -> RollbackReport:
        """Restore every character a migration journal may have changed, where it still has
        the migration's values (``force``: even where it does not). Journaled and resumable:
        run it again with the same journals to resume it."""
        return await bulk_rollback.rollback(
            self._session, self.characters, journal, rollback_journal=rollback_journal,
            force=force, on_progress=on_progress, stop=stop, on_result=on_result,
        )  # fmt: skip
