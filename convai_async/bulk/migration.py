"""Fleet migrations: plan (read-only), then apply with the plan recorded as the journal's header.

``apply_plan`` writes the plan (its arguments and every selected character's model and
temperature) and fsyncs it before the first intent. Applying again with the same journal resumes
the recorded plan, not the one passed in; a plan with other arguments is refused.
"""

from __future__ import annotations

import asyncio
import os
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from attrs import frozen

from .. import _validation as check
from ..errors import ValidationError
from ..models import Character, CharacterUpdate
from ._session import CharacterSource, Session
from .format import Header, PlanArgs, PlanEnd, PlanLine, Values, new_header
from .index import JournalIndex, State, index_journal
from .items import WorkItem, as_is, bad_line_item, values_of
from .journal import JournalWriter
from .reader import BadLine, read_header, read_lines
from .report import BulkReport, ProgressCallback, ResultCallback, UpdateResult, UpdateStatus
from .runner import collect

# The entry points are the client's methods (plan_migration, apply).
__all__ = ["MigrationPlan", "PlannedChange"]


@frozen
class PlannedChange:
    """One selected character: what it has now, and the update (None: already as wanted)."""

    char_id: str
    name: str | None
    from_model: str | None
    from_temperature: float | None
    update: CharacterUpdate | None


@frozen
class MigrationPlan:
    to_model: str
    temperature: float | None
    from_model: str | None
    changes: tuple[PlannedChange, ...]
    fleet_size: int

    @property
    def updates(self) -> list[CharacterUpdate]:
        """The updates to send: selected characters not already as wanted."""
        return [change.update for change in self.changes if change.update is not None]

    @property
    def selected(self) -> int:
        return len(self.changes)

    @property
    def unchanged(self) -> int:
        return sum(1 for change in self.changes if change.update is None)

    @property
    def counts_by_model(self) -> dict[str | None, int]:
        """Selected characters per current model, most common first."""
        return dict(Counter(change.from_model for change in self.changes).most_common())

    def summary(self) -> str:
        target = f"model {self.to_model}"
        if self.temperature is not None:
            target += f", temperature {self.temperature:g}"
        lines = [
            f"Migration to {target}",
            f"{self.selected} of {self.fleet_size} characters selected"
            + (f" (currently on {self.from_model})" if self.from_model else ""),
        ]
        for model, count in self.counts_by_model.items():
            lines.append(f"  {model or '(none)'}: {count}")
        lines.append(f"{len(self.updates)} will change, {self.unchanged} already as wanted")
        return "\n".join(lines)

    __str__ = summary


def _planned(character: Character, to_model: str, temperature: float | None) -> PlannedChange:
    model = to_model if character.model != to_model else None
    new_temperature = (
        temperature if temperature is not None and character.temperature != temperature else None
    )
    update = None
    if model is not None or new_temperature is not None:
        update = CharacterUpdate(character.char_id, model=model, temperature=new_temperature)
    return PlannedChange(
        char_id=character.char_id,
        name=character.name,
        from_model=character.model,
        from_temperature=character.temperature,
        update=update,
    )


async def plan_migration(
    characters: CharacterSource,
    *,
    to_model: str,
    from_model: str | None = None,
    temperature: float | None = None,
    where: Callable[[Character], bool] | None = None,
    is_known_model: Callable[[str], Awaitable[bool]] | None = None,
) -> MigrationPlan:
    """``client.plan_migration``: list the fleet once and select what to change; sends no
    update. ``is_known_model`` (None: any code accepted) is asked about ``to_model`` first."""
    check.text("to_model", to_model)
    check.optional_text("from_model", from_model)
    check.optional_temperature("temperature", temperature)
    if is_known_model is not None and not await is_known_model(to_model):
        raise ValidationError(
            "to_model",
            f"{to_model!r} is neither a built-in model code nor a registered custom LLM "
            "(pass allow_unknown_model=True to use it anyway)",
        )
    fleet = await characters.list()
    changes = tuple(
        _planned(character, to_model, temperature)
        for character in fleet
        if (from_model is None or character.model == from_model)
        and (where is None or where(character))
    )
    return MigrationPlan(
        to_model=to_model,
        temperature=temperature,
        from_model=from_model,
        changes=changes,
        fleet_size=len(fleet),
    )


def _plan_lines(plan: MigrationPlan) -> list[Any]:
    lines: list[Any] = [new_header("migration", plan=_args(plan))]
    for position, change in enumerate(plan.changes):
        was = Values(change.from_model, change.from_temperature)
        wanted = values_of(change.update) if change.update is not None else None
        lines.append(PlanLine(position, change.char_id, was, wanted))
    lines.append(PlanEnd(len(plan.changes)))
    return lines


def _args(plan: MigrationPlan) -> PlanArgs:
    return PlanArgs(plan.to_model, plan.temperature, plan.from_model)


def _check_same(header: Header, plan: MigrationPlan, journal: str) -> None:
    """Refuse a resume whose arguments differ from the recorded ones, naming the difference."""
    recorded = header.plan
    wanted = _args(plan)
    if recorded is None:
        raise ValidationError("journal", f"{journal} records no migration plan")
    for name in ("to_model", "temperature", "from_model"):
        was, now = getattr(recorded, name), getattr(wanted, name)
        if was != now:
            raise ValidationError(
                name,
                f"the journal {journal} records a migration with {name}={was!r}, but this run "
                f"asks for {name}={now!r}; resume with the same arguments or use a new journal",
            )


def _fresh_items(plan: MigrationPlan) -> Iterator[WorkItem]:
    for position, change in enumerate(plan.changes):
        if change.update is not None:
            was = Values(change.from_model, change.from_temperature)
            yield WorkItem(position, change.char_id, change.update, was)


def _recorded_items(journal: str, index: JournalIndex) -> Iterator[WorkItem]:
    """The recorded plan's changes, read as a stream; what the journal records as applied is
    not sent again. A plan line that cannot be read fails that item, naming the line."""
    for number, line in read_lines(journal):
        if isinstance(line, PlanEnd):
            return
        if isinstance(line, BadLine):
            if line.index is not None or line.char_id is not None:
                yield bad_line_item(journal, line)
            continue
        if not isinstance(line, PlanLine) or line.set is None:
            continue
        if index.state(line.i) is State.APPLIED:
            done = UpdateResult(
                line.i, line.c, None, UpdateStatus.ALREADY_APPLIED, reason="in journal"
            )
            yield WorkItem(line.i, line.c, decided=done)
            continue
        try:
            update = CharacterUpdate(line.c, model=line.set.model, temperature=line.set.temperature)
        except ValidationError as error:
            yield bad_line_item(journal, BadLine(number, str(error), line.i, line.c))
            continue
        yield WorkItem(line.i, line.c, update, line.was)


def _open(plan: MigrationPlan, journal: str) -> tuple[JournalWriter, Iterator[WorkItem], int]:
    """Lock the journal; write the plan, or check and resume the recorded one."""
    writer = JournalWriter.open(journal)
    try:
        header = read_header(journal, kind="migration")
        if header is not None:
            index = index_journal(journal)
            if index.plan_count is None and index.intents == 0:
                writer.truncate()  # killed while writing the plan: nothing was sent; start over
                header = None
        if header is None:
            writer.start(_plan_lines(plan))
            return writer, _fresh_items(plan), len(plan.updates)
        _check_same(header, plan, journal)
        writer.resumed()
        return writer, _recorded_items(journal, index), index.plan_count or 0
    except BaseException:
        writer.close()
        raise


async def apply_plan(
    session: Session,
    plan: MigrationPlan,
    *,
    journal: str | os.PathLike[str] | None = None,
    on_progress: ProgressCallback | None = None,
    stop: asyncio.Event | None = None,
    on_result: ResultCallback | None = None,
) -> BulkReport:
    """``client.apply``: run the plan; with a journal, the plan is recorded first (and a journal
    that holds one is resumed), which makes ``rollback`` exact."""
    if journal is None:
        writer, items, total = None, _fresh_items(plan), len(plan.updates)
    else:
        writer, items, total = _open(plan, os.fspath(journal))
    _, fields = await collect(
        session,
        items,
        as_is,
        writer=writer,
        total=total,
        on_progress=on_progress,
        stop=stop,
        on_result=on_result,
    )
    return BulkReport(**fields, journal=os.fspath(journal) if journal is not None else None)
