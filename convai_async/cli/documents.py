"""The --json contract: every document the command line prints, each tagged with its schema.

Every document is an object whose ``"schema"`` is ``"convai-async/<name>/v<version>"``; keys are
snake_case, booleans are booleans, numbers are numbers, absent values are null. A change that
could break a reader bumps the version. The README lists the schemas (see /work/notes/cli.md).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from .. import BulkReport, Character, CustomModel, MigrationPlan, UpdateResult
from ..catalog import BuiltinModel

__all__ = [
    "character_fields",
    "custom_model_fields",
    "document",
    "error_document",
    "item_document",
    "plan_fields",
    "report_fields",
]

SCHEMA_PREFIX = "convai-async"
SCHEMA_VERSION = 1


def document(name: str, **fields: Any) -> dict[str, Any]:
    """A top-level document: ``{"schema": "convai-async/<name>/v1", **fields}``."""
    return {"schema": f"{SCHEMA_PREFIX}/{name}/v{SCHEMA_VERSION}", **fields}


def error_document(error_type: str, message: str, exit_code: int) -> dict[str, Any]:
    return document("error", error={"type": error_type, "message": message, "exit_code": exit_code})


def character_fields(character: Character) -> dict[str, Any]:
    """The table's columns: char_id, name, model, temperature."""
    return {
        "char_id": character.char_id,
        "name": character.name,
        "model": character.model,
        "temperature": character.temperature,
    }


def builtin_model_fields(model: BuiltinModel) -> dict[str, Any]:
    return {
        "code": model.code,
        "display_name": model.display_name,
        "provider": model.provider,
        "flagship": model.flagship,
        "uncensored": model.uncensored,
        "custom": False,
    }


def custom_as_catalog_fields(model: CustomModel) -> dict[str, Any]:
    """A registered custom LLM as a row of ``models --custom``."""
    return {
        "code": model.model_group_name,
        "display_name": model.display_name,
        "provider": "custom",
        "flagship": False,
        "uncensored": bool(model.is_uncensored),
        "custom": True,
    }


def custom_model_fields(model: CustomModel) -> dict[str, Any]:
    return {
        "model_group_name": model.model_group_name,
        "model_name": model.model_name,
        "display_name": model.display_name,
        "base_url": model.base_url,
        "is_uncensored": model.is_uncensored,
        "category": model.category,
        "created_at": None if model.created_at is None else model.created_at.isoformat(),
    }


def item_document(result: UpdateResult) -> dict[str, Any]:
    """One line of --json-lines: the outcome of one input item."""
    update = result.update
    return document(
        "item",
        index=result.index,
        char_id=result.char_id,
        status=result.status.value,
        model=None if update is None else update.model,
        temperature=None if update is None else update.temperature,
        attempts=result.attempts,
        error=None if result.error is None else str(result.error),
        reason=result.reason,
    )


def report_fields(report: BulkReport) -> dict[str, Any]:
    return {
        "total": report.total,
        "succeeded": report.succeeded,
        "already_applied": report.already_applied,
        "failed": report.failed,
        "skipped": report.skipped,
        "aborted": report.aborted,
        "abort_reason": report.abort_reason,
        "stopped": report.stopped,
        "duration_seconds": round(report.duration, 3),
        "requests": report.requests,
        "retries": report.retries,
        "rate_limited": report.rate_limited,
        "journal": report.journal,
        "failures": [
            {"index": f.index, "char_id": f.char_id, "error": str(f.error)} for f in report.failures
        ],
    }


def plan_fields(plan: MigrationPlan, selection: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "target": {"model": plan.to_model, "temperature": plan.temperature},
        "selection": dict(selection),
        "fleet_size": plan.fleet_size,
        "selected": plan.selected,
        "counts_by_model": [
            {"model": model, "count": count} for model, count in plan.counts_by_model.items()
        ],
        "will_change": len(plan.updates),
        "already_as_wanted": plan.unchanged,
    }


def rows(documents: Iterable[Mapping[str, Any]], keys: Iterable[str]) -> list[list[Any]]:
    """Table rows from documents: the text output shows exactly what --json carries."""
    wanted = list(keys)
    return [[row[key] for key in wanted] for row in documents]
