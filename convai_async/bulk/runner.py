"""The bulk engine: stream work items through a worker pool, write-ahead journaled, in order.

The input (any iterable or async iterable) is pulled lazily: at most twice the session's
``max_concurrency`` items are taken ahead of the results handed out, so memory stays flat. Each
item ends with exactly one ``UpdateResult``. Updates to one character run in input order;
different characters run concurrently. With a journal, an item's intent is queued when it is
taken and its request is sent only once the intent is durable; its outcome line follows the
answer. A fatal error (401, 403, quota) or a journal failure stops new sends at once: items not
yet sent are reported as skipped.
"""

from __future__ import annotations

import asyncio
import collections
import os
import secrets
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable, Iterator
from typing import Any

import attrs
from attrs import define, field, frozen

from ..errors import ConvaiError, JournalError, ValidationError
from ..models import CharacterUpdate
from ._session import CallTrace, Session, is_fatal, send_update
from .format import FORMAT_NAME, JOURNAL_VERSION, Header, Intent, Outcome, Values
from .index import JournalIndex, State, fingerprint, index_journal
from .journal import JournalWriter, now, read_header
from .report import BulkReport, ProgressCallback, Tally, UpdateResult, UpdateStatus

__all__ = [
    "WorkItem",
    "collect",
    "run_bulk",
    "stream_bulk",
    "stream_items",
    "updates_for",
    "values_of",
]

WINDOW_FACTOR = 2


@frozen
class WorkItem:
    """One unit of work: an update to send (``update``), or a result decided without a request
    (``decided``). ``was``: the values before (migrations and rollbacks journal them).
    ``unrecorded``: a rollback note; the item reports NOT_RECORDED even when its request
    succeeds."""

    index: int
    char_id: str
    update: CharacterUpdate | None = None
    was: Values | None = None
    decided: UpdateResult | None = None
    unrecorded: str | None = None


def values_of(update: CharacterUpdate) -> Values:
    return Values(update.model, update.temperature)


def updates_for(
    char_ids: Iterable[str] | AsyncIterable[str], **values: Any
) -> Iterator[CharacterUpdate | UpdateResult] | AsyncIterator[CharacterUpdate | UpdateResult]:
    """Lazily turn IDs into updates; an invalid ID becomes a FAILED result, not an exception."""

    def update(char_id: str) -> CharacterUpdate | UpdateResult:
        try:
            return CharacterUpdate(char_id, **values)
        except ValidationError as error:
            return UpdateResult(0, str(char_id), None, UpdateStatus.FAILED, error=error)

    if isinstance(char_ids, AsyncIterable):

        async def generate() -> AsyncIterator[CharacterUpdate | UpdateResult]:
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


@define
class _Run:
    """One run: ``max_concurrency`` workers pull from the shared input (no task per item);
    ``credits`` bounds how far the input is read ahead of the results handed out."""

    session: Session
    writer: JournalWriter | None
    pull: Callable[[], Awaitable[Any]]
    to_item: Callable[[int, Any], WorkItem]
    stop: asyncio.Event | None
    credits: asyncio.Semaphore
    workers: int
    results: asyncio.Queue[UpdateResult | None] = field(factory=asyncio.Queue)
    pulling: asyncio.Lock = field(factory=asyncio.Lock)
    # char_id -> None (an update in flight) or the queue of later updates waiting their turn
    busy: dict[str, collections.deque[asyncio.Future[None]] | None] = field(factory=dict)
    position: int = 0
    exhausted: bool = False
    abort_reason: str | None = None
    failure: BaseException | None = None

    async def work(self) -> None:
        try:
            while (taken := await self.take()) is not None:
                item, durable = taken
                result = item.decided or await self.in_turn(item, durable)
                self.finish(item, result)
        except Exception as error:  # noqa: BLE001 - the input itself failed: stop, tell the consumer
            self.failure = self.failure or error
            self.exhausted = True
        finally:
            self.workers -= 1
            if self.workers == 0:
                self.results.put_nowait(None)  # the end, after every result

    async def take(self) -> tuple[WorkItem, asyncio.Future[None] | None] | None:
        await self.credits.acquire()
        async with self.pulling:  # an async generator cannot be read by two workers at once
            if self.exhausted or (self.stop is not None and self.stop.is_set()):
                self.credits.release()
                return None
            raw = await self.pull()
            if raw is _EXHAUSTED:
                self.exhausted = True
                self.credits.release()
                return None
            item = self.to_item(self.position, raw)
            self.position += 1
            if item.decided is None and self.abort_reason is not None:
                item = attrs.evolve(item, decided=self.skipped(item))
            durable = None
            if item.decided is None and self.writer is not None and item.update is not None:
                # Queued in take order, so first intents reach the file in index order.
                intent = Intent(item.index, item.char_id, values_of(item.update), item.was)
                durable = self.writer.intend(intent)
            return item, durable

    def skipped(self, item: WorkItem, error: ConvaiError | None = None) -> UpdateResult:
        return UpdateResult(
            item.index,
            item.char_id,
            item.update,
            UpdateStatus.SKIPPED,
            error=error,
            reason=self.abort_reason,
        )

    async def in_turn(self, item: WorkItem, durable: asyncio.Future[None] | None) -> UpdateResult:
        """Send an update after any earlier update of the same character has finished."""
        char_id = item.char_id
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
            return await self.send(item, durable)
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

    async def send(self, item: WorkItem, durable: asyncio.Future[None] | None) -> UpdateResult:
        if durable is not None:
            try:
                await durable  # write-ahead: nothing is sent before its intent is on disk
            except JournalError as error:
                if self.abort_reason is None:
                    self.abort_reason = f"JournalError: {error}"
                return self.skipped(item, error)
        if self.abort_reason is not None:
            return self.skipped(item)
        update = item.update
        assert update is not None
        trace = CallTrace()
        try:
            await send_update(self.session, update, trace)
        except ConvaiError as error:
            if is_fatal(error) and self.abort_reason is None:
                self.abort_reason = f"{type(error).__name__}: {error}"
            return self._failed(item, error, trace)
        except Exception as error:  # noqa: BLE001 - an item must end with an outcome, whatever broke
            wrapped = ConvaiError(f"unexpected {type(error).__name__}: {error}")
            return self._failed(item, wrapped, trace)
        status = UpdateStatus.APPLIED if item.unrecorded is None else UpdateStatus.NOT_RECORDED
        return UpdateResult(
            item.index,
            item.char_id,
            update,
            status,
            attempts=trace.attempts,
            reason=item.unrecorded,
            request_sent=True,
        )

    @staticmethod
    def _failed(item: WorkItem, error: ConvaiError, trace: CallTrace) -> UpdateResult:
        return UpdateResult(
            item.index,
            item.char_id,
            item.update,
            UpdateStatus.FAILED,
            error,
            trace.attempts,
            request_sent=trace.request_sent,
        )

    def finish(self, item: WorkItem, result: UpdateResult) -> None:
        if self.writer is not None and result.status is not UpdateStatus.ALREADY_APPLIED:
            self.writer.record(
                Outcome(
                    result.index,
                    result.status.value,
                    result.request_sent,
                    result.attempts,
                    str(result.error) if result.error is not None else result.reason,
                )
            )
        self.results.put_nowait(result)


async def stream_items(
    session: Session,
    items: Iterable[Any] | AsyncIterable[Any],
    to_item: Callable[[int, Any], WorkItem],
    *,
    writer: JournalWriter | None,
    stop: asyncio.Event | None = None,
    abort: list[str] | None = None,
) -> AsyncIterator[UpdateResult]:
    """Yield one UpdateResult per input item, in completion order; closes ``writer`` at the end.
    ``abort`` (if given) receives the abort reason, if the run was aborted."""
    workers_count = session.max_concurrency
    run = _Run(
        session,
        writer,
        pull=_puller(items),
        to_item=to_item,
        stop=stop,
        credits=asyncio.Semaphore(workers_count * WINDOW_FACTOR),
        workers=workers_count,
    )
    workers = [asyncio.create_task(run.work()) for _ in range(workers_count)]
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
        if abort is not None and run.abort_reason is not None:
            abort.append(run.abort_reason)
        if writer is not None:
            await writer.aclose()


# -- plain bulk updates -------------------------------------------------------------------------


def _bulk_item(index: JournalIndex | None) -> Callable[[int, Any], WorkItem]:
    """Input item -> WorkItem, deciding from a resumed journal what is already done."""

    def to_item(position: int, raw: Any) -> WorkItem:
        if isinstance(raw, UpdateResult):
            return WorkItem(position, raw.char_id, decided=attrs.evolve(raw, index=position))
        if not isinstance(raw, CharacterUpdate):
            error = ValidationError(
                f"updates[{position}]", f"expected a CharacterUpdate, got {type(raw).__name__}"
            )
            failed = UpdateResult(position, str(raw)[:80], None, UpdateStatus.FAILED, error=error)
            return WorkItem(position, failed.char_id, decided=failed)
        if index is None:
            return WorkItem(position, raw.char_id, raw)
        return _resumed(index, position, raw)

    return to_item


def _resumed(index: JournalIndex, position: int, update: CharacterUpdate) -> WorkItem:
    state = index.state(position)
    char_id = update.char_id
    if state is State.APPLIED and index.applied(position, fingerprint(char_id, values_of(update))):
        done = UpdateResult(
            position, char_id, update, UpdateStatus.ALREADY_APPLIED, reason="in journal"
        )
        return WorkItem(position, char_id, update, decided=done)
    later = index.superseded_by.get(char_id)
    if state is State.SUPERSEDED or (later is not None and later > position):
        reason = "a later update of this character was applied"
        done = UpdateResult(position, char_id, update, UpdateStatus.SUPERSEDED, reason=reason)
        return WorkItem(position, char_id, update, decided=done)
    bad = index.bad.get(position)
    if bad is not None:
        error = ValidationError("journal", f"{bad.describe()} (this item was not sent)")
        failed = UpdateResult(position, char_id, update, UpdateStatus.FAILED, error=error)
        return WorkItem(position, char_id, update, decided=failed)
    return WorkItem(position, char_id, update)


def open_bulk_journal(path: str | os.PathLike[str]) -> tuple[JournalWriter, JournalIndex | None]:
    """Lock and start (or resume) a bulk journal. Errors here come before anything is sent."""
    writer = JournalWriter.open(path)
    try:
        header = read_header(path, kind="bulk")
        if header is None:
            writer.start([new_header("bulk")])
            return writer, None
        index = index_journal(path, fingerprints=True)
        writer.resumed()
    except BaseException:
        writer.close()
        raise
    return writer, index


def new_header(kind: str, **extra: Any) -> Header:
    return Header(
        format=FORMAT_NAME,
        v=JOURNAL_VERSION,
        kind=kind,
        run=secrets.token_hex(8),
        created=now(),
        pid=os.getpid(),
        **extra,
    )


async def stream_bulk(
    session: Session,
    updates: Iterable[Any] | AsyncIterable[Any],
    *,
    journal: str | os.PathLike[str] | None = None,
    stop: asyncio.Event | None = None,
) -> AsyncIterator[UpdateResult]:
    """``client.stream_updates``: one UpdateResult per input item, as each finishes. With a
    journal that already exists, items it records as applied are not sent again, nor an earlier
    update of a character whose later update was applied."""
    writer, index = open_bulk_journal(journal) if journal is not None else (None, None)
    async for result in stream_items(session, updates, _bulk_item(index), writer=writer, stop=stop):
        yield result


async def collect(
    session: Session,
    results: Callable[[list[str]], AsyncIterator[UpdateResult]],
    *,
    total: int | None,
    on_progress: ProgressCallback | None,
    stop: asyncio.Event | None,
    on_result: Callable[[UpdateResult], None] | None = None,
) -> tuple[Tally, dict[str, Any]]:
    """Drive a result stream to its end: the tally and the report fields it yields."""
    before = session.stats
    tally = Tally(total, on_progress)
    abort: list[str] = []
    async for result in results(abort):
        tally.add(result)
        if on_result is not None:
            on_result(result)
    tally.report_progress()
    after = session.stats
    delta = (
        after.requests - before.requests,
        after.retries - before.retries,
        after.rate_limited - before.rate_limited,
    )
    fields = tally.fields(delta)
    fields.update(
        aborted=bool(abort),
        abort_reason=abort[0] if abort else None,
        stopped=stop is not None and stop.is_set(),
    )
    return tally, fields


async def run_bulk(
    session: Session,
    updates: Iterable[Any] | AsyncIterable[Any],
    *,
    journal: str | os.PathLike[str] | None = None,
    on_progress: ProgressCallback | None = None,
    total: int | None = None,
    stop: asyncio.Event | None = None,
) -> BulkReport:
    """``client.bulk_update``: run to the end and report. Per-item failures never raise."""
    if total is None and isinstance(updates, (list, tuple)):
        total = len(updates)
    writer, index = open_bulk_journal(journal) if journal is not None else (None, None)
    _, fields = await collect(
        session,
        lambda abort: stream_items(
            session, updates, _bulk_item(index), writer=writer, stop=stop, abort=abort
        ),
        total=total,
        on_progress=on_progress,
        stop=stop,
    )
    return BulkReport(**fields, journal=os.fspath(journal) if journal is not None else None)
