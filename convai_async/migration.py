"""Fleet migrations: plan (read-only), apply (a journaled bulk update), roll back (journal).

A plan records each selected character's current model and temperature; applying it writes them
to the journal as ``previous`` beside each applied change, which is what ``rollback`` restores.
"""

from __future__ import annotations

import asyncio
import os
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from attrs import frozen

from . import _validation as check
from .bulk import BulkReport, ProgressCallback, UpdateStatus, bulk_update
from .errors import ValidationError
from .journal import read_journal
from .models import Character, CharacterUpdate

if TYPE_CHECKING:
    from ._engine.session import Session
    from .client import ConvaiClient

__all__ = ["MigrationPlan", "PlannedChange", "apply_plan", "plan_migration", "rollback"]


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

    @property
    def previous(self) -> dict[str, dict[str, Any]]:
        return {
            change.char_id: {"model": change.from_model, "temperature": change.from_temperature}
            for change in self.changes
        }

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
    client: ConvaiClient,
    *,
    to_model: str,
    from_model: str | None = None,
    temperature: float | None = None,
    where: Callable[[Character], bool] | None = None,
    allow_unknown_model: bool = False,
) -> MigrationPlan:
    """List the fleet and select what to change. Sends no update."""
    check.text("to_model", to_model)
    check.optional_text("from_model", from_model)
    check.optional_temperature("temperature", temperature)
    if not allow_unknown_model and not await client.is_known_model(to_model):
        raise ValidationError(
            "to_model",
            f"{to_model!r} is neither a built-in model code nor a registered custom LLM "
            "(pass allow_unknown_model=True to use it anyway)",
        )
    fleet = await client.characters.list()
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


async def apply_plan(
    client: Session,
    plan: MigrationPlan,
    *,
    journal: str | os.PathLike[str] | None = None,
    on_progress: ProgressCallback | None = None,
    stop: asyncio.Event | None = None,
) -> BulkReport:
    """Run the plan as a bulk update; with a journal, re-running resumes and enables rollback."""
    return await bulk_update(
        client,
        plan.updates,
        journal=journal,
        on_progress=on_progress,
        previous=plan.previous,
        journal_kind="migration",
        stop=stop,
    )


def restoring_updates(journal: Path) -> Iterator[CharacterUpdate]:
    """Updates that put back, for every character the journal records as changed, the values it
    had before its first change."""
    restored: set[str] = set()
    for entry in read_journal(journal):
        if entry.get("outcome") != UpdateStatus.APPLIED.value or "previous" not in entry:
            continue
        char_id = str(entry["char_id"])
        if char_id in restored:
            continue
        restored.add(char_id)
        values: Mapping[str, Any] = entry.get("set") or {}
        previous: Mapping[str, Any] = entry["previous"]
        model = previous.get("model") if "model" in values else None
        temperature = previous.get("temperature") if "temperature" in values else None
        if model is not None or temperature is not None:
            yield CharacterUpdate(char_id, model=model, temperature=temperature)


async def rollback(
    client: Session,
    journal: Path,
    *,
    rollback_journal: str | os.PathLike[str] | None = None,
    on_progress: ProgressCallback | None = None,
    stop: asyncio.Event | None = None,
) -> BulkReport:
    try:
        updates = list(restoring_updates(journal))
    except FileNotFoundError:
        raise ValidationError("journal", f"no such file: {journal}") from None
    return await bulk_update(
        client,
        updates,
        journal=rollback_journal,
        on_progress=on_progress,
        journal_kind="rollback",
        stop=stop,
    )
