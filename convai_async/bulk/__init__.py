"""Bulk updates, fleet migrations and rollbacks: streamed, write-ahead journaled, resumable.

Layout: ``runner`` (the worker pool and write-ahead path), ``journal`` (the locked writer, group
commit), ``format`` (the journal's line format and version), ``index`` (a compact
index for resume), ``migration`` (plan and apply), ``rollback`` (compare-and-set restore),
``report`` (results and reports), ``reader`` (reading a journal as a stream), ``updates`` (plain
bulk runs), ``_session`` (the one adapter to the request engine).
The entry points are the client's methods; this package exports the types they return.
"""

from .format import JOURNAL_VERSION
from .journal import new_journal_path
from .migration import MigrationPlan, PlannedChange
from .report import (
    BulkReport,
    Conflict,
    Progress,
    ProgressCallback,
    RollbackReport,
    UpdateResult,
    UpdateStatus,
)
from .rollback import default_rollback_journal

__all__ = [
    "JOURNAL_VERSION",
    "BulkReport",
    "Conflict",
    "MigrationPlan",
    "PlannedChange",
    "Progress",
    "ProgressCallback",
    "RollbackReport",
    "UpdateResult",
    "UpdateStatus",
    "default_rollback_journal",
    "new_journal_path",
]
