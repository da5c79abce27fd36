"""Rollback of a migration journal: compare-and-set, journaled, resumable.

Every item the migration may have changed has an intent in its journal (applied, failed after
sending, or in doubt), so rollback reads the intents as a stream and restores each character to
the ``was`` values recorded there. The fleet is listed once; a character is restored only where
its current values are still what the migration set (a field already back at its old value needs
nothing). A character changed since is a CONFLICT, left alone unless ``force``. A value the plan
did not record (no model, no temperature) is NOT_RECORDED. The rollback writes its own journal
(by default ``<journal stem>.rollback.jsonl`` beside the migration's); running the same rollback
again resumes it.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path

from ..errors import ValidationError
from ..models import CharacterUpdate
from ._session import CharacterSource, Session
from .format import Intent, RollbackOf, Values, new_header
from .index import JournalIndex, State, index_journal
from .items import WorkItem, as_is, bad_line_item
from .journal import JournalWriter
from .reader import BadLine, read_header, read_lines
from .report import (
    FAILURE_SAMPLE,
    Conflict,
    ProgressCallback,
    ResultCallback,
    RollbackReport,
    UpdateResult,
    UpdateStatus,
)
from .runner import collect

# The entry point is the client's method (rollback).
__all__ = ["default_rollback_journal"]

Current = tuple[str | None, float | None]


def default_rollback_journal(journal: str | os.PathLike[str]) -> Path:
    """Where a rollback journals itself unless told otherwise: beside the migration's."""
    path = Path(journal)
    return path.with_name(f"{path.stem}.rollback.jsonl")


def _decide(
    intent: Intent, current: Current | None, force: bool, conflicts: list[Conflict]
) -> WorkItem:
    """Compare-and-set: what to restore of this character, if anything."""
    index, char_id, wanted, was = intent.i, intent.c, intent.set, intent.was

    def decided(status: UpdateStatus, reason: str) -> WorkItem:
        return WorkItem(
            index, char_id, decided=UpdateResult(index, char_id, None, status, None, 0, reason)
        )

    if current is None:
        return decided(UpdateStatus.CONFLICT, "not in the fleet listing any more")
    if was is None:
        return decided(UpdateStatus.NOT_RECORDED, "the journal recorded no values before")
    restore: dict[str, object] = {}
    missing: list[str] = []
    conflict = False
    for name, now in (("model", current[0]), ("temperature", current[1])):
        set_to, before = getattr(wanted, name), getattr(was, name)
        if set_to is None or now == before:
            continue  # not changed by the migration, or already back
        if now != set_to:
            conflict = True
            if not force:
                continue
        if before is None:
            missing.append(name)
        else:
            restore[name] = before
    if conflict and not force:
        if len(conflicts) < FAILURE_SAMPLE:
            conflicts.append(Conflict(char_id, (wanted.model, wanted.temperature), current))
        return decided(
            UpdateStatus.CONFLICT,
            f"changed since the migration (now {current[0]!r}, {current[1]!r})",
        )
    note = f"no {' or '.join(missing)} was recorded before the migration" if missing else None
    if not restore:
        if note is not None:
            return decided(UpdateStatus.NOT_RECORDED, note)
        return decided(UpdateStatus.ALREADY_APPLIED, "already as before the migration")
    update = CharacterUpdate(char_id, **restore)
    return WorkItem(index, char_id, update, Values(*current), unrecorded=note)


def _items(
    journal: Path,
    fleet: dict[str, Current],
    done: JournalIndex | None,
    force: bool,
    conflicts: list[Conflict],
) -> Iterator[WorkItem]:
    """One WorkItem per item the migration may have changed, read as a stream."""
    seen = bytearray()
    for number, line in read_lines(journal):
        if isinstance(line, BadLine):
            if line.kind in (None, "intent"):  # an intent we cannot read: say so, go on
                yield bad_line_item(journal, line)
            continue
        if not isinstance(line, Intent):
            continue
        if line.i >= len(seen):
            seen.extend(bytes(max(line.i + 1 - len(seen), len(seen))))
        if seen[line.i]:
            continue  # re-sent on resume: the first intent already carries it
        seen[line.i] = 1
        if done is not None and done.state(line.i) is State.APPLIED:
            result = UpdateResult(
                line.i, line.c, None, UpdateStatus.ALREADY_APPLIED, reason="restored earlier"
            )
            yield WorkItem(line.i, line.c, decided=result)
            continue
        try:
            yield _decide(line, fleet.get(line.c), force, conflicts)
        except ValidationError as error:  # an out-of-range value recorded in this line
            yield bad_line_item(journal, BadLine(number, str(error), line.i, line.c))


def _open(journal: Path, target: Path, force: bool) -> tuple[JournalWriter, JournalIndex | None]:
    """Check the migration journal (ValidationError if it is not one), lock the rollback's own
    journal, and start it or check it belongs to this migration and resume it."""
    header = read_header(journal, kind="migration")
    if header is None:
        raise ValidationError("journal", f"{journal} is empty, not a migration journal")
    writer = JournalWriter.open(target)
    try:
        own = read_header(target, kind="rollback")
        if own is None:
            of = RollbackOf(os.fspath(journal.resolve()), header.run)
            writer.start([new_header("rollback", of=of, force=force)])
            return writer, None
        if own.of is None or own.of.run != header.run:
            raise ValidationError(
                "rollback_journal", f"{target} is the rollback of another migration journal"
            )
        if bool(own.force) != force:
            raise ValidationError(
                "force",
                f"the rollback journaled in {target} ran with force={bool(own.force)}; "
                "resume it with the same",
            )
        done = index_journal(target)
        writer.resumed()
        return writer, done
    except BaseException:
        writer.close()
        raise


async def rollback(
    session: Session,
    characters: CharacterSource,
    journal: str | os.PathLike[str],
    *,
    rollback_journal: str | os.PathLike[str] | None = None,
    force: bool = False,
    on_progress: ProgressCallback | None = None,
    stop: asyncio.Event | None = None,
    on_result: ResultCallback | None = None,
) -> RollbackReport:
    """``client.rollback``: restore what the migration journal may have changed. A file that is
    not a migration journal is refused (ValidationError) before anything is sent."""
    path = Path(journal)
    target = Path(rollback_journal) if rollback_journal is not None else None
    target = target or default_rollback_journal(path)
    writer, done = _open(path, target, force)
    try:
        # No migration may resume on this journal meanwhile (nor be running on it now).
        migration = JournalWriter.open(path)
    except BaseException:
        writer.close()
        raise
    try:
        fleet = {c.char_id: (c.model, c.temperature) for c in await characters.list()}
        conflicts: list[Conflict] = []
        tally, fields = await collect(
            session,
            _items(path, fleet, done, force, conflicts),
            as_is,
            writer=writer,
            total=None,
            on_progress=on_progress,
            stop=stop,
            on_result=on_result,
        )
    finally:
        writer.close()  # already closed by the run, unless the listing failed
        migration.close()
    return RollbackReport(
        **fields,
        journal=os.fspath(target),
        migration_journal=os.fspath(path),
        conflicts=tally.count(UpdateStatus.CONFLICT),
        conflict_sample=tuple(conflicts),
        not_recorded=tally.count(UpdateStatus.NOT_RECORDED),
        force=force,
    )
