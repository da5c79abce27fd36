"""Bulk updates that lose nothing: streaming, ordered per character, journaled, resumable.

The input (any iterable or async iterable) is pulled lazily: at most ``window`` items (twice the
client's ``max_concurrency``) are taken ahead of the results handed out, so memory stays flat
whatever the input's length. Each input item ends with exactly one ``UpdateResult``. Updates to
one character run in input order; different characters run concurrently. A fatal error
(401, 403, quota) stops new sends; items not yet sent are reported as skipped.
"""

from __future__ import annotations

import asyncio
import collections
import enum
import os
import time
from collections.abc import (
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Iterator,
    Mapping,
)
from typing import Any

from attrs import define, field, frozen

from ._engine.session import CallTrace, Session
from ._wire import protocol
from .errors import ConvaiError, ValidationError
from .journal import JournalWriter, read_journal
from .models import CharacterUpdate

__all__ = [
    "BulkReport",
    "Progress",
    "ProgressCallback",
    "UpdateResult",
    "UpdateStatus",
    "bulk_update",
    "stream_updates",
    "updates_for",
]

WINDOW_FACTOR = 2
PROGRESS_INTERVAL = 0.1
RATE_WINDOW = 5.0


class UpdateStatus(enum.Enum):
    APPLIED = "applied"
    FAILED = "failed"
    SKIPPED = "skipped"  # never sent: the run was aborted first
    ALREADY_APPLIED = "already_applied"  # the journal records it as applied by an earlier run


@frozen
class UpdateResult:
    """The outcome of one input item. ``index`` is its position in the input."""

    index: int
    char_id: str
    update: CharacterUpdate | None
    status: UpdateStatus
    error: ConvaiError | None = None
    attempts: int = 0
    reason: str | None = None

    @property
    def ok(self) -> bool:
        return self.status in (UpdateStatus.APPLIED, UpdateStatus.ALREADY_APPLIED)


@frozen
class Progress:
    done: int
    total: int | None
    ok: int
    failed: int
    skipped: int
    rate: float  # items per second over the last RATE_WINDOW seconds (the current rate)
    elapsed: float


ProgressCallback = Callable[[Progress], None]


@frozen
class BulkReport:
    """What a bulk run did. ``failures`` lists every failed item (skipped ones are counted)."""

    total: int
    succeeded: int
    failed: int
    skipped: int
    already_applied: int
    failures: tuple[UpdateResult, ...]
    duration: float
    requests: int
    retries: int
    rate_limited: int
    aborted: bool = False
    abort_reason: str | None = None
    journal: str | None = None
    stopped: bool = False  # a stop was requested: the input was not read to its end

    @property
    def ok(self) -> bool:
        return self.failed == 0 and not self.aborted

    def summary(self) -> str:
        rate = self.total / self.duration if self.duration > 0 else 0.0
        lines = [
            f"{self.total} items in {self.duration:.1f}s ({rate:.0f}/s): "
            f"{self.succeeded} applied, {self.already_applied} already applied, "
            f"{self.failed} failed, {self.skipped} skipped",
            f"{self.requests} requests, {self.retries} retries, {self.rate_limited} answered 429",
        ]
        if self.aborted:
            lines.append(f"ABORTED: {self.abort_reason}")
        if self.stopped:
            lines.append("STOPPED before the end of the input")
        for failure in self.failures[:10]:
            lines.append(f"  failed {failure.char_id}: {failure.error}")
        if len(self.failures) > 10:
            lines.append(f"  ... and {len(self.failures) - 10} more failures")
        if self.journal:
            lines.append(f"journal: {self.journal}")
        return "\n".join(lines)

    __str__ = summary


@frozen
class _Invalid:
    """An input item that cannot be sent; it becomes a FAILED result."""

    char_id: str
    error: ValidationError


def updates_for(
    char_ids: Iterable[str] | AsyncIterable[str], **values: Any
) -> Iterator[CharacterUpdate | _Invalid] | AsyncIterator[CharacterUpdate | _Invalid]:
    """Lazily turn IDs into updates; an invalid ID becomes a failed item, not an exception."""

    def update(char_id: str) -> CharacterUpdate | _Invalid:
        try:
            return CharacterUpdate(char_id, **values)
        except ValidationError as error:
            return _Invalid(str(char_id), error)

    if isinstance(char_ids, AsyncIterable):

        async def generate() -> AsyncIterator[CharacterUpdate | _Invalid]:
            async for char_id in char_ids:
                yield update(char_id)

        return generate()
    return map(update, char_ids)


_EXHAUSTED = object()


def _puller(items: Iterable[Any] | AsyncIterable[Any]) -> Callable[[], Awaitable[Any]]:
    """A coroutine function returning the next item or _EXHAUSTED, for either kind of input
    (a sync iterable is read directly: no async generator hop per item)."""
    if isinstance(items, AsyncIterable):
        iterator = aiter(items)

        async def next_async() -> Any:
            try:
                return await iterator.__anext__()
            except StopAsyncIteration:
                return _EXHAUSTED

        return next_async
    plain = iter(items)

    async def next_sync() -> Any:
        return next(plain, _EXHAUSTED)

    return next_sync


def _journal_key(index: int, update: CharacterUpdate) -> tuple[int, str, str | None, float | None]:
    return (index, update.char_id, update.model, update.temperature)


def _entry_key(entry: Mapping[str, Any]) -> tuple[int, str, str | None, float | None] | None:
    values = entry.get("set") or {}
    index = entry.get("i")
    if not isinstance(index, int):
        return None
    return (index, str(entry["char_id"]), values.get("model"), values.get("temperature"))


def applied_keys(path: str | os.PathLike[str]) -> set[tuple[int, str, str | None, float | None]]:
    """Keys of the items a journal records as applied."""
    keys: set[tuple[int, str, str | None, float | None]] = set()
    if not os.path.exists(path):
        return keys
    for entry in read_journal(path):
        if entry.get("outcome") == UpdateStatus.APPLIED.value:
            key = _entry_key(entry)
            if key is not None:
                keys.add(key)
    return keys


@define
class _Run:
    """One bulk run: ``max_concurrency`` workers pull from the shared input, so there is no task
    per item. ``credits`` bounds how far the input is read ahead of the results handed out."""

    client: Session
    journal: JournalWriter | None
    done_before: set[tuple[int, str, str | None, float | None]]
    previous: Mapping[str, Mapping[str, Any]] | None
    pull: Callable[[], Awaitable[Any]]
    stop: asyncio.Event | None
    credits: asyncio.Semaphore
    workers: int
    results: asyncio.Queue[UpdateResult | None] = field(factory=asyncio.Queue)
    pulling: asyncio.Lock = field(factory=asyncio.Lock)
    # char_id -> None (an update in flight) or the queue of later updates waiting their turn
    busy: dict[str, collections.deque[asyncio.Future[None]] | None] = field(factory=dict)
    next_index: int = 0
    exhausted: bool = False
    abort_reason: str | None = None
    failure: BaseException | None = None

    async def work(self) -> None:
        try:
            while (taken := await self.take()) is not None:
                index, item = taken
                result = self.immediate(index, item) or await self.in_turn(index, item)
                self.finish(result)
        except Exception as error:  # noqa: BLE001 - the input itself failed: stop, tell the consumer
            self.failure = self.failure or error
            self.exhausted = True
        finally:
            self.workers -= 1
            if self.workers == 0:
                self.results.put_nowait(None)  # the end, after every result

    async def take(self) -> tuple[int, Any] | None:
        await self.credits.acquire()
        async with self.pulling:  # an async generator cannot be read by two workers at once
            if self.exhausted or (self.stop is not None and self.stop.is_set()):
                self.credits.release()
                return None
            item = await self.pull()
            if item is _EXHAUSTED:
                self.exhausted = True
                self.credits.release()
                return None
            index = self.next_index
            self.next_index += 1
            return index, item

    def immediate(self, index: int, item: object) -> UpdateResult | None:
        """The result of an item decided without a request, if any."""
        if isinstance(item, _Invalid):
            return UpdateResult(index, item.char_id, None, UpdateStatus.FAILED, error=item.error)
        if not isinstance(item, CharacterUpdate):
            error = ValidationError(
                f"updates[{index}]", f"expected a CharacterUpdate, got {type(item).__name__}"
            )
            return UpdateResult(index, str(item)[:80], None, UpdateStatus.FAILED, error=error)
        if self.abort_reason is not None:
            return self.skipped(index, item)
        if self.done_before and _journal_key(index, item) in self.done_before:
            return UpdateResult(
                index, item.char_id, item, UpdateStatus.ALREADY_APPLIED, reason="in journal"
            )
        return None

    def skipped(self, index: int, update: CharacterUpdate) -> UpdateResult:
        return UpdateResult(
            index, update.char_id, update, UpdateStatus.SKIPPED, reason=self.abort_reason
        )

    async def in_turn(self, index: int, update: CharacterUpdate) -> UpdateResult:
        """Send an update after any earlier update of the same character has finished."""
        char_id = update.char_id
        if char_id in self.busy:
            waiting = self.busy[char_id]
            if waiting is None:
                waiting = self.busy[char_id] = collections.deque()
            turn = asyncio.get_running_loop().create_future()
            waiting.append(turn)
            await turn
        else:
            self.busy[char_id] = None
        try:
            return await self.send(index, update)
        finally:
            self.hand_over(char_id)

    def hand_over(self, char_id: str) -> None:
        waiting = self.busy.get(char_id)
        while waiting:
            turn = waiting.popleft()
            if not turn.done():
                turn.set_result(None)  # the character stays busy: the next update has it now
                return
        del self.busy[char_id]

    async def send(self, index: int, update: CharacterUpdate) -> UpdateResult:
        if self.abort_reason is not None:
            return self.skipped(index, update)
        call = CallTrace()
        try:
            await self.client.call(protocol.CHARACTER_UPDATE, update, trace=call, patient=True)
        except ConvaiError as error:
            if protocol.is_fatal(error) and self.abort_reason is None:
                self.abort_reason = f"{type(error).__name__}: {error}"
            return UpdateResult(
                index, update.char_id, update, UpdateStatus.FAILED, error, call.attempts
            )
        except Exception as error:  # noqa: BLE001 - an item must end with an outcome, whatever broke
            wrapped = ConvaiError(f"unexpected {type(error).__name__}: {error}")
            return UpdateResult(
                index, update.char_id, update, UpdateStatus.FAILED, wrapped, call.attempts
            )
        return UpdateResult(
            index, update.char_id, update, UpdateStatus.APPLIED, attempts=call.attempts
        )

    def finish(self, result: UpdateResult) -> None:
        if self.journal is not None and result.status is not UpdateStatus.ALREADY_APPLIED:
            self.journal.record(self._entry(result))
        self.results.put_nowait(result)

    def _entry(self, result: UpdateResult) -> dict[str, Any]:
        entry: dict[str, Any] = {"i": result.index, "char_id": result.char_id}
        update = result.update
        if update is not None:
            values: dict[str, Any] = {}
            if update.model is not None:
                values["model"] = update.model
            if update.temperature is not None:
                values["temperature"] = update.temperature
            entry["set"] = values
            if self.previous is not None and update.char_id in self.previous:
                entry["previous"] = dict(self.previous[update.char_id])
        entry["outcome"] = result.status.value
        if result.error is not None:
            entry["error"] = str(result.error)
        if result.reason is not None:
            entry["reason"] = result.reason
        if result.attempts:
            entry["attempts"] = result.attempts
        return entry


async def stream_updates(
    client: Session,
    updates: Iterable[Any] | AsyncIterable[Any],
    *,
    journal: str | os.PathLike[str] | None = None,
    previous: Mapping[str, Mapping[str, Any]] | None = None,
    journal_kind: str = "bulk",
    stop: asyncio.Event | None = None,
) -> AsyncIterator[UpdateResult]:
    """Yield one UpdateResult per input item, in completion order. See the module docs.

    Once ``stop`` is set no further input is read; items already taken finish (and are
    journaled) and the stream ends."""
    done_before = applied_keys(journal) if journal is not None else set()
    writer = (
        JournalWriter(journal, kind=journal_kind, sync_every=client.max_concurrency)
        if journal is not None
        else None
    )
    run = _Run(
        client,
        writer,
        done_before,
        previous,
        pull=_puller(updates),
        stop=stop,
        credits=asyncio.Semaphore(client.max_concurrency * WINDOW_FACTOR),
        workers=client.max_concurrency,
    )
    workers = [asyncio.create_task(run.work()) for _ in range(client.max_concurrency)]
    try:
        while (result := await run.results.get()) is not None:
            run.credits.release()
            yield result
        if run.failure is not None:
            raise run.failure
    finally:
        for worker in workers:
            worker.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
        if writer is not None:
            writer.close()


async def bulk_update(
    client: Session,
    updates: Iterable[Any] | AsyncIterable[Any],
    *,
    journal: str | os.PathLike[str] | None = None,
    on_progress: ProgressCallback | None = None,
    total: int | None = None,
    previous: Mapping[str, Mapping[str, Any]] | None = None,
    journal_kind: str = "bulk",
    stop: asyncio.Event | None = None,
) -> BulkReport:
    """Run ``stream_updates`` to the end and report. Per-item failures never raise."""
    if total is None and isinstance(updates, (list, tuple)):
        total = len(updates)
    before = client.stats
    started = time.monotonic()
    counts = dict.fromkeys(UpdateStatus, 0)
    failures: list[UpdateResult] = []
    abort_reason: str | None = None
    last_report = 0.0
    samples: collections.deque[tuple[float, int]] = collections.deque([(started, 0)])

    def report_progress() -> None:
        now = time.monotonic()
        done = sum(counts.values())
        while len(samples) > 1 and samples[0][0] < now - RATE_WINDOW:
            samples.popleft()
        since, done_then = samples[0]
        samples.append((now, done))
        if on_progress is not None:
            on_progress(
                Progress(
                    done=done,
                    total=total,
                    ok=counts[UpdateStatus.APPLIED] + counts[UpdateStatus.ALREADY_APPLIED],
                    failed=counts[UpdateStatus.FAILED],
                    skipped=counts[UpdateStatus.SKIPPED],
                    rate=(done - done_then) / (now - since) if now > since else 0.0,
                    elapsed=now - started,
                )
            )

    async for result in stream_updates(
        client, updates, journal=journal, previous=previous, journal_kind=journal_kind, stop=stop
    ):
        counts[result.status] += 1
        if result.status is UpdateStatus.FAILED:
            failures.append(result)
            if abort_reason is None and protocol.is_fatal(result.error):
                abort_reason = f"{type(result.error).__name__}: {result.error}"
        if on_progress is not None:
            now = time.monotonic()
            if now - last_report >= PROGRESS_INTERVAL:
                last_report = now
                report_progress()
    report_progress()
    after = client.stats
    return BulkReport(
        total=sum(counts.values()),
        succeeded=counts[UpdateStatus.APPLIED],
        failed=counts[UpdateStatus.FAILED],
        skipped=counts[UpdateStatus.SKIPPED],
        already_applied=counts[UpdateStatus.ALREADY_APPLIED],
        failures=tuple(failures),
        duration=time.monotonic() - started,
        requests=after.requests - before.requests,
        retries=after.retries - before.retries,
        rate_limited=after.rate_limited - before.rate_limited,
        aborted=abort_reason is not None,
        abort_reason=abort_reason,
        journal=os.fspath(journal) if journal is not None else None,
        stopped=stop is not None and stop.is_set(),
    )
