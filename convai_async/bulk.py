"""Bulk updates that lose nothing: streaming, ordered per character, journaled, resumable.

The input (any iterable or async iterable) is pulled lazily: at most ``window`` items (twice the
client's ``max_concurrency``) are taken ahead of the results handed out, so memory stays flat
whatever the input's length. Each input item ends with exactly one ``UpdateResult``. Updates to
one character run in input order; different characters run concurrently. A fatal error
(401, 403, quota) stops new sends; items not yet sent are reported as skipped.
"""

from __future__ import annotations

import asyncio
import enum
import os
import time
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from attrs import define, field, frozen

from . import protocol
from .errors import ConvaiError, ValidationError
from .journal import JournalWriter, read_journal
from .models import CharacterUpdate

if TYPE_CHECKING:
    from .client import ConvaiClient

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

T = TypeVar("T")


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
    rate: float  # items per second since the start
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
) -> AsyncIterator[CharacterUpdate | _Invalid]:
    """Lazily turn IDs into updates; an invalid ID becomes a failed item, not an exception."""

    async def generate() -> AsyncIterator[CharacterUpdate | _Invalid]:
        async for char_id in _aiter(char_ids):
            try:
                yield CharacterUpdate(char_id, **values)
            except ValidationError as error:
                yield _Invalid(str(char_id), error)

    return generate()


async def _aiter(items: Iterable[T] | AsyncIterable[T]) -> AsyncIterator[T]:
    if isinstance(items, AsyncIterable):
        async for item in items:
            yield item
    else:
        for item in items:
            yield item


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
    client: ConvaiClient
    journal: JournalWriter | None
    done_before: set[tuple[int, str, str | None, float | None]]
    previous: Mapping[str, Mapping[str, Any]] | None
    results: asyncio.Queue[UpdateResult] = field(factory=asyncio.Queue)
    tails: dict[str, asyncio.Task[None]] = field(factory=dict)
    abort_reason: str | None = None

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
        if _journal_key(index, item) in self.done_before:
            return UpdateResult(
                index, item.char_id, item, UpdateStatus.ALREADY_APPLIED, reason="in journal"
            )
        return None

    def skipped(self, index: int, update: CharacterUpdate) -> UpdateResult:
        return UpdateResult(
            index, update.char_id, update, UpdateStatus.SKIPPED, reason=self.abort_reason
        )

    def start(self, index: int, update: CharacterUpdate) -> None:
        before = self.tails.get(update.char_id)
        task = asyncio.create_task(self._apply(index, update, before))
        self.tails[update.char_id] = task

        def finished(done: asyncio.Task[None]) -> None:
            if self.tails.get(update.char_id) is done:
                del self.tails[update.char_id]

        task.add_done_callback(finished)

    async def _apply(
        self, index: int, update: CharacterUpdate, before: asyncio.Task[None] | None
    ) -> None:
        if before is not None:
            await asyncio.wait((before,))  # same character: strictly after the earlier update
        if self.abort_reason is not None:
            self.finish(self.skipped(index, update))
            return
        from .client import _Call

        call = _Call()
        try:
            await self.client.characters.apply(update, _call=call)
        except ConvaiError as error:
            if protocol.is_fatal(error) and self.abort_reason is None:
                self.abort_reason = f"{type(error).__name__}: {error}"
            result = UpdateResult(
                index, update.char_id, update, UpdateStatus.FAILED, error, call.attempts
            )
        except Exception as error:  # noqa: BLE001 - an item must end with an outcome, whatever broke
            wrapped = ConvaiError(f"unexpected {type(error).__name__}: {error}")
            result = UpdateResult(
                index, update.char_id, update, UpdateStatus.FAILED, wrapped, call.attempts
            )
        else:
            result = UpdateResult(
                index, update.char_id, update, UpdateStatus.APPLIED, attempts=call.attempts
            )
        self.finish(result)

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
    client: ConvaiClient,
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
    run = _Run(client, writer, done_before, previous)
    window = client.max_concurrency * WINDOW_FACTOR
    source = _aiter(updates)
    pending = 0
    index = 0
    exhausted = False
    try:
        while True:
            while not exhausted and pending < window and not (stop is not None and stop.is_set()):
                try:
                    item = await source.__anext__()
                except StopAsyncIteration:
                    exhausted = True
                    break
                result = run.immediate(index, item)
                if result is None:
                    run.start(index, item)
                    pending += 1
                else:
                    run.finish(result)
                    pending += 1
                index += 1
            if pending == 0:
                break
            result = await run.results.get()
            pending -= 1
            yield result
    finally:
        outstanding = list(run.tails.values())
        for task in outstanding:
            task.cancel()
        if outstanding:
            await asyncio.gather(*outstanding, return_exceptions=True)
        if writer is not None:
            writer.close()


async def bulk_update(
    client: ConvaiClient,
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

    def report_progress() -> None:
        elapsed = time.monotonic() - started
        done = sum(counts.values())
        if on_progress is not None:
            on_progress(
                Progress(
                    done=done,
                    total=total,
                    ok=counts[UpdateStatus.APPLIED] + counts[UpdateStatus.ALREADY_APPLIED],
                    failed=counts[UpdateStatus.FAILED],
                    skipped=counts[UpdateStatus.SKIPPED],
                    rate=done / elapsed if elapsed > 0 else 0.0,
                    elapsed=elapsed,
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
