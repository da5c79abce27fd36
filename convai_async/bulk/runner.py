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
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable
from typing import Any

import attrs
from attrs import define, field, frozen

from ..errors import ConvaiError, JournalError, ValidationError
from ..models import CharacterUpdate
from ._session import CallTrace, Session, is_fatal, send_update
from .format import Intent, Outcome, Values
from .journal import JournalWriter
from .reader import BadLine
from .report import ProgressCallback, Tally, UpdateResult, UpdateStatus

__all__ = ["WorkItem"]  # the rest serves this package's modules only

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


def bad_line_item(journal: str | os.PathLike[str], line: BadLine) -> WorkItem:
    """A FAILED item for a journal line that cannot be read, naming the line (and the item it
    names, when it still does); the run goes on with the rest."""
    error = ValidationError("journal", f"{os.fspath(journal)} {line.describe()}")
    index = line.index if line.index is not None else -line.number
    char_id = line.char_id or f"(line {line.number})"
    result = UpdateResult(index, char_id, None, UpdateStatus.FAILED, error)
    return WorkItem(index, char_id, decided=result)


def as_is(_: int, item: WorkItem) -> WorkItem:
    """``to_item`` for inputs that are WorkItems already (migrations, rollbacks)."""
    return item


def values_of(update: CharacterUpdate) -> Values:
    return Values(update.model, update.temperature)


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
    # journaled runs: items taken ahead by ``produce``, their intents already queued
    ready: asyncio.Queue[tuple[WorkItem, asyncio.Future[None] | None] | None] = field(
        factory=asyncio.Queue
    )
    pulling: asyncio.Lock = field(factory=asyncio.Lock)
    # char_id -> None (an update in flight) or the queue of later updates waiting their turn
    busy: dict[str, collections.deque[asyncio.Future[None]] | None] = field(factory=dict)
    position: int = 0
    exhausted: bool = False
    abort_reason: str | None = None
    failure: BaseException | None = None

    async def produce(self) -> None:
        """Journaled runs: take items ahead of the workers (within ``credits``) and queue each
        one's intent at once, so it is durable by the time a worker is free to send it."""
        try:
            while (taken := await self.take()) is not None:
                self.ready.put_nowait(taken)
        except Exception as error:  # noqa: BLE001 - the input itself failed: stop, tell the consumer
            self.failure = self.failure or error
        finally:
            for _ in range(self.workers):
                self.ready.put_nowait(None)

    async def work(self) -> None:
        next_taken = self.take if self.writer is None else self.ready.get
        try:
            while (taken := await next_taken()) is not None:
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
            if self.writer is not None:
                self.writer.need(durable)
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
    if writer is not None:
        writer.window = max(1, workers_count // 2)  # fsync about twice per round of requests
        workers.append(asyncio.create_task(run.produce()))
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
            await writer.aclose()
            if writer.error is not None and run.abort_reason is None:
                run.abort_reason = f"JournalError: {writer.error}"  # outcomes left unwritten
        if abort is not None and run.abort_reason is not None:
            abort.append(run.abort_reason)


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
