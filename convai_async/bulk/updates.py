"""Plain bulk updates: the caller's items to work, resuming from a bulk journal, and the run.

On resume, an item the journal records as applied (the same update at the same index) is not
sent again, nor an earlier update of a character whose later update was applied: every
character ends at the value of its last input item, as in an uninterrupted run.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Iterator
from typing import Any

import attrs

from ..errors import ValidationError
from ..models import CharacterUpdate
from ._session import Session
from .format import new_header
from .index import JournalIndex, State, fingerprint, index_journal
from .items import WorkItem, values_of
from .journal import JournalWriter
from .reader import read_header
from .report import BulkReport, ProgressCallback, ResultCallback, UpdateResult, UpdateStatus
from .runner import collect, stream_items

# The entry points are the client's methods (stream_updates, bulk_update, bulk_set_*).
__all__: list[str] = []


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


async def run_bulk(
    session: Session,
    updates: Iterable[Any] | AsyncIterable[Any],
    *,
    journal: str | os.PathLike[str] | None = None,
    on_progress: ProgressCallback | None = None,
    total: int | None = None,
    stop: asyncio.Event | None = None,
    on_result: ResultCallback | None = None,
) -> BulkReport:
    """``client.bulk_update``: run to the end and report. Per-item failures never raise."""
    if total is None and isinstance(updates, (list, tuple)):
        total = len(updates)
    writer, index = open_bulk_journal(journal) if journal is not None else (None, None)
    _, fields = await collect(
        session,
        updates,
        _bulk_item(index),
        writer=writer,
        total=total,
        on_progress=on_progress,
        stop=stop,
        on_result=on_result,
    )
    return BulkReport(**fields, journal=os.fspath(journal) if journal is not None else None)
