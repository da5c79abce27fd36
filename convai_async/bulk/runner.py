"""The bulk engine: stream work items through a worker pool, write-ahead journaled, in order.

The input (any iterable or async iterable) is pulled lazily: at most twice the session's
``max_concurrency`` items (three times with a journal) are taken ahead of the results handed
out, so memory stays flat. Each
item ends with exactly one ``UpdateResult``, handed to a sink as it finishes (``collect``) or
yielded (``stream_items``). Updates to one character run in input order; different characters
run concurrently. With a journal, an item's intent is queued when it is taken (the input is
read ahead, within the same bound, so that it is durable by the time a worker is free) and its
request is sent only once the intent is durable; its outcome line follows the answer. A fatal
error (401, 403, quota) or a journal failure stops new sends at once: items not yet sent are
reported as skipped.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable
from typing import Any

import attrs
from attrs import define, field

from ..errors import ConvaiError, JournalError
from ._session import CallTrace, Session, is_fatal, send_update
from .encoders import outcome_line, update_intent_line
from .items import EXHAUSTED, STOPPED, Credits, Taken, WorkItem, async_puller, sync_puller
from .journal import JournalWriter
from .report import ProgressCallback, ResultCallback, Tally, UpdateResult, UpdateStatus

__all__ = ["collect", "stream_items"]  # this package's modules only

WINDOW_FACTOR = 2  # items taken ahead of the results handed out, per worker
# With a journal, two fsync windows (max_concurrency) more: an intent is queued that far ahead
# of its send, so it is durable by then even when an fsync lasts as long as a window of sends.
JOURNAL_WINDOW_FACTOR = WINDOW_FACTOR + 1
_WAIT = object()  # no credit left: the next item needs a wait (take)
_APPLIED, _NOT_RECORDED = UpdateStatus.APPLIED, UpdateStatus.NOT_RECORDED
_FAILED, _SKIPPED = UpdateStatus.FAILED, UpdateStatus.SKIPPED
_ALREADY_APPLIED = UpdateStatus.ALREADY_APPLIED


class _SinkFailed(Exception):
    """The sink raised (``args[0]``): the run ends at once, and that error is raised."""


@define
class _Run:
    """One run: ``max_concurrency`` workers pull from the shared input (no task per item).
    ``credits`` bounds how far the input is read ahead of the results handed out; a sink takes
    each result as it finishes (else ``results`` queues it for ``stream_items``)."""

    session: Session
    writer: JournalWriter | None
    pull: Callable[[], Awaitable[Any]] | None
    pull_now: Callable[[], Any] | None
    to_item: Callable[[int, Any], WorkItem]
    stop: asyncio.Event | None
    workers: int
    credits: Credits
    sink: Callable[[UpdateResult], None] | None
    over: asyncio.Future[None]  # the last worker ended (or the sink failed)
    # taken from a sync input, not yet worked; with a journal their intents are queued already
    ahead: collections.deque[Taken] = field(factory=collections.deque)
    results: asyncio.Queue[UpdateResult | None] = field(factory=asyncio.Queue)
    # journaled runs on an async input: items taken ahead by ``produce``, intents queued
    ready: asyncio.Queue[Taken | None] = field(factory=asyncio.Queue)
    pulling: asyncio.Lock = field(factory=asyncio.Lock)
    # char_id -> None (an update in flight) or the queue of later updates waiting their turn
    busy: dict[str, collections.deque[asyncio.Future[None]] | None] = field(factory=dict)
    position: int = 0
    exhausted: bool = False
    abort_reason: str | None = None
    failure: BaseException | None = None

    async def produce(self) -> None:
        """Journaled runs on an async input: take items ahead of the workers (within
        ``credits``) and queue each one's intent at once, so it is durable by the time a worker
        is free to send it."""
        try:
            while (taken := await self.take()) is not None:
                self.ready.put_nowait(taken)
        except Exception as error:  # noqa: BLE001 - the input itself failed: stop, tell the consumer
            self.failure = self.failure or error
        finally:
            for _ in range(self.workers):
                self.ready.put_nowait(None)

    async def work(self) -> None:
        take_now = self.take_now if self.pull_now is not None else None
        take = self.take if self.writer is None or take_now is not None else self.ready.get
        busy = self.busy
        try:
            while True:
                taken: Any = _WAIT if take_now is None else take_now()
                if taken is _WAIT:
                    taken = await take()
                if taken is None:
                    break
                item, durable = taken
                result = item.decided
                if result is None:
                    char_id = item.char_id
                    if char_id in busy:
                        await self.turn(char_id)
                    else:
                        busy[char_id] = None
                    try:
                        result = await self.send(item, durable)
                    finally:
                        if busy[char_id] is None:  # nobody waits for this character
                            del busy[char_id]
                        else:
                            self.hand_over(char_id)
                self.finish(result)
        except _SinkFailed as failed:
            self.failure = self.failure or failed.args[0]
            self.exhausted = True
            self.end()  # at once: the caller's sink refused a result
        except Exception as error:  # noqa: BLE001 - the input itself failed: stop, tell the consumer
            self.failure = self.failure or error
            self.exhausted = True
        finally:
            self.workers -= 1
            if self.workers == 0:
                self.end()  # after every result

    def end(self) -> None:
        if self.sink is None:
            self.results.put_nowait(None)
        elif not self.over.done():
            self.over.set_result(None)

    # -- taking items -----------------------------------------------------------------------

    def reading(self) -> bool:
        return not (self.exhausted or (self.stop is not None and self.stop.is_set()))

    def take_now(self) -> Any:  # Taken, None or _WAIT
        """A sync input's next item without waiting: None at its end (or on stop), _WAIT when
        no credit is left. With a journal, the input is first read ahead as far as the credits
        allow, queuing each intent as it is taken (in input order)."""
        ahead, credits, stop, pull = self.ahead, self.credits, self.stop, self.pull_now
        assert pull is not None
        read_ahead = self.writer is not None
        while (
            credits.left > 0
            and (read_ahead or not ahead)
            and not (self.exhausted or (stop is not None and stop.is_set()))
        ):
            raw = pull()
            if raw is EXHAUSTED:
                self.exhausted = True
                break
            credits.left -= 1
            ahead.append(self.next_item(raw))
        if ahead:
            return ahead.popleft()
        return _WAIT if self.reading() else None

    async def take(self) -> Taken | None:
        """The next item once a credit is free: None at the input's end or on stop."""
        await self.credits.acquire()
        if self.pull_now is not None:  # a sync iterable: next() cannot interleave, no lock
            raw = self.pull_now() if self.reading() else STOPPED
        else:
            assert self.pull is not None
            async with self.pulling:  # an async generator cannot be read by two workers at once
                raw = await self.pull() if self.reading() else STOPPED
        if raw is STOPPED or raw is EXHAUSTED:
            self.exhausted = self.exhausted or raw is EXHAUSTED
            self.credits.release()
            return None
        return self.next_item(raw)

    def next_item(self, raw: Any) -> Taken:
        """The work item for ``raw`` and its durable intent (queued now, in take order, so
        first intents reach the file in index order)."""
        item = self.to_item(self.position, raw)
        self.position += 1
        if item.decided is None and self.abort_reason is not None:
            item = attrs.evolve(item, decided=self.skipped(item))
        update = item.update
        if item.decided is not None or self.writer is None or update is None:
            return item, None
        line = update_intent_line(
            item.index, item.char_id, update.model, update.temperature, item.was
        )
        return item, self.writer.intend(line)

    def skipped(self, item: WorkItem, error: ConvaiError | None = None) -> UpdateResult:
        return UpdateResult(
            item.index, item.char_id, item.update, _SKIPPED, error=error, reason=self.abort_reason
        )

    async def turn(self, char_id: str) -> None:
        """Wait until every earlier update of ``char_id`` has finished."""
        waiting = self.busy[char_id]
        if waiting is None:
            waiting = self.busy[char_id] = collections.deque()
        turn = asyncio.get_running_loop().create_future()
        waiting.append(turn)
        await turn

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
            if not durable.done() and self.writer is not None:
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
        unrecorded = item.unrecorded
        return UpdateResult(
            item.index,
            item.char_id,
            update,
            _APPLIED if unrecorded is None else _NOT_RECORDED,
            None,
            trace.attempts,
            unrecorded,
            True,
        )

    @staticmethod
    def _failed(item: WorkItem, error: ConvaiError, trace: CallTrace) -> UpdateResult:
        return UpdateResult(
            item.index,
            item.char_id,
            item.update,
            _FAILED,
            error,
            trace.attempts,
            request_sent=trace.request_sent,
        )

    def finish(self, result: UpdateResult) -> None:
        status = result.status
        if self.writer is not None and status is not _ALREADY_APPLIED:
            error = result.error
            self.writer.record(
                outcome_line(
                    result.index,
                    status._value_,
                    result.request_sent,
                    result.attempts,
                    str(error) if error is not None else result.reason,
                )
            )
        sink = self.sink
        if sink is None:
            self.results.put_nowait(result)
            return
        try:
            sink(result)
        except Exception as error:  # noqa: BLE001 - the caller's callback: end the run with it
            raise _SinkFailed(error) from None
        self.credits.release()


def _start(
    session: Session,
    items: Iterable[Any] | AsyncIterable[Any],
    to_item: Callable[[int, Any], WorkItem],
    writer: JournalWriter | None,
    stop: asyncio.Event | None,
    sink: Callable[[UpdateResult], None] | None,
) -> tuple[_Run, list[asyncio.Task[None]]]:
    workers_count = session.max_concurrency
    run = _Run(
        session,
        writer,
        pull=async_puller(items),
        pull_now=sync_puller(items),
        to_item=to_item,
        stop=stop,
        workers=workers_count,
        credits=Credits(
            workers_count * (WINDOW_FACTOR if writer is None else JOURNAL_WINDOW_FACTOR)
        ),
        sink=sink,
        over=asyncio.get_running_loop().create_future(),
    )
    workers = [asyncio.create_task(run.work()) for _ in range(workers_count)]
    if writer is not None:
        writer.window = workers_count  # fsync about once per round of requests (read ahead)
        if run.pull_now is None:
            workers.append(asyncio.create_task(run.produce()))
    return run, workers


async def _wind_up(run: _Run, workers: list[asyncio.Task[None]], abort: list[str] | None) -> None:
    """Stop the workers, close the journal (its pending lines written), note an abort."""
    for worker in workers:
        worker.cancel()
    await asyncio.gather(*workers, return_exceptions=True)
    writer = run.writer
    if writer is not None:
        await writer.aclose()
        if writer.error is not None and run.abort_reason is None:
            run.abort_reason = f"JournalError: {writer.error}"  # outcomes left unwritten
    if abort is not None and run.abort_reason is not None:
        abort.append(run.abort_reason)


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
    run, workers = _start(session, items, to_item, writer, stop, None)
    try:
        while (result := await run.results.get()) is not None:
            run.credits.release()
            yield result
        if run.failure is not None:
            raise run.failure
    finally:
        await _wind_up(run, workers, abort)


async def collect(
    session: Session,
    items: Iterable[Any] | AsyncIterable[Any],
    to_item: Callable[[int, Any], WorkItem],
    *,
    writer: JournalWriter | None,
    total: int | None,
    on_progress: ProgressCallback | None,
    stop: asyncio.Event | None,
    on_result: ResultCallback | None = None,
) -> tuple[Tally, dict[str, Any]]:
    """Run to the end, each result counted (and handed to ``on_result``) as it finishes: the
    tally and the report fields. An exception from a callback ends the run and is raised."""
    before = session.stats
    tally = Tally(total, on_progress)
    add = tally.add

    def add_and_hand_over(result: UpdateResult) -> None:
        add(result)
        assert on_result is not None
        on_result(result)

    abort: list[str] = []
    run, workers = _start(
        session, items, to_item, writer, stop, add if on_result is None else add_and_hand_over
    )
    try:
        await run.over
        if run.failure is not None:
            raise run.failure
    finally:
        await _wind_up(run, workers, abort)
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
