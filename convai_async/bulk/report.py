"""What a bulk run, migration or rollback reports: per-item results, progress, and the totals.

A report keeps counts and a bounded sample of failures (``FAILURE_SAMPLE``); the journal holds
every one. Memory stays flat whatever the number of items.
"""

from __future__ import annotations

import collections
import enum
import time
from collections.abc import Callable
from typing import Any

from attrs import define, field, frozen

from ..errors import ConvaiError
from ..models import CharacterUpdate

__all__ = [
    "FAILURE_SAMPLE",
    "BulkReport",
    "Conflict",
    "Progress",
    "ProgressCallback",
    "ResultCallback",
    "RollbackReport",
    "UpdateResult",
    "UpdateStatus",
]

FAILURE_SAMPLE = 100
PROGRESS_INTERVAL = 0.1
RATE_WINDOW = 5.0


class UpdateStatus(enum.Enum):
    APPLIED = "applied"
    FAILED = "failed"
    SKIPPED = "skipped"  # never sent: the run was aborted first
    ALREADY_APPLIED = "already_applied"  # done by an earlier run (journal), or nothing to do
    SUPERSEDED = "superseded"  # not sent on resume: a later update of this character was applied
    CONFLICT = "conflict"  # rollback: changed since the migration; left alone
    NOT_RECORDED = "not_recorded"  # rollback: the plan recorded no value to restore


_OK = frozenset({UpdateStatus.APPLIED, UpdateStatus.ALREADY_APPLIED, UpdateStatus.SUPERSEDED})
_FAILED = UpdateStatus.FAILED


@frozen
class UpdateResult:
    """The outcome of one input item. ``index`` is its position in the input (for migrations
    and rollbacks: its index in the plan)."""

    index: int
    char_id: str
    update: CharacterUpdate | None
    status: UpdateStatus
    error: ConvaiError | None = None
    attempts: int = 0
    reason: str | None = None
    request_sent: bool = False  # whether the request may have reached the server

    @property
    def ok(self) -> bool:
        return self.status in _OK


@frozen
class Progress:
    done: int
    total: int | None
    ok: int
    failed: int
    skipped: int
    rate: float  # items per second over the last RATE_WINDOW seconds (the current rate)
    elapsed: float


ProgressCallback = Callable[[Progress], None]
# Called with each item's UpdateResult as it finishes (completion order), in the event loop.
ResultCallback = Callable[[UpdateResult], None]


@frozen
class BulkReport:
    """What a bulk run did. ``failures`` is a sample (at most FAILURE_SAMPLE) of the failed
    items; ``failed`` counts them all and the journal lists every one."""

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
    superseded: int = 0

    @property
    def ok(self) -> bool:
        return self.failed == 0 and not self.aborted

    def _lines(self) -> list[str]:
        rate = self.total / self.duration if self.duration > 0 else 0.0
        lines = [
            f"{self.total} items in {self.duration:.1f}s ({rate:.0f}/s): "
            f"{self.succeeded} applied, {self.already_applied} already applied, "
            f"{self.failed} failed, {self.skipped} skipped"
            + (f", {self.superseded} superseded" if self.superseded else ""),
            f"{self.requests} requests, {self.retries} retries, {self.rate_limited} answered 429",
        ]
        if self.aborted:
            lines.append(f"ABORTED: {self.abort_reason}")
        if self.stopped:
            lines.append("STOPPED before the end of the input")
        for failure in self.failures[:10]:
            lines.append(f"  failed {failure.char_id}: {failure.error}")
        if self.failed > 10:
            lines.append(f"  ... and {self.failed - 10} more failures")
        if self.journal:
            lines.append(f"journal: {self.journal}")
        return lines

    def summary(self) -> str:
        return "\n".join(self._lines())

    def __str__(self) -> str:
        return self.summary()


@frozen
class Conflict:
    """A character rollback left alone: its values changed since the migration set them."""

    char_id: str
    expected: tuple[str | None, float | None]  # what the migration set
    found: tuple[str | None, float | None]  # what the fleet listing showed


@frozen
class RollbackReport(BulkReport):
    """A rollback's report. ``conflicts`` counts characters changed since the migration (left
    alone unless ``force``), with a sample in ``conflict_sample``; ``not_recorded`` counts those
    whose value before the migration was not recorded. ``journal`` is the rollback's own journal:
    running the same rollback again (same migration journal and rollback journal) resumes it."""

    migration_journal: str | None = None
    conflicts: int = 0
    conflict_sample: tuple[Conflict, ...] = ()
    not_recorded: int = 0
    force: bool = False

    @property
    def ok(self) -> bool:
        return super().ok and self.conflicts == 0 and self.not_recorded == 0

    def _lines(self) -> list[str]:
        lines = super()._lines()
        lines[0] = lines[0].replace(" applied, ", " restored, ", 1)
        if self.conflicts:
            lines.append(
                f"{self.conflicts} characters changed since the migration were left alone "
                "(pass force=True / --force to restore them anyway)"
            )
            for conflict in self.conflict_sample[:10]:
                lines.append(
                    f"  conflict {conflict.char_id}: set {conflict.expected}, now {conflict.found}"
                )
        if self.not_recorded:
            lines.append(f"{self.not_recorded} characters had no recorded value to restore")
        if self.stopped or self.aborted:
            lines.append(
                f"resume: roll back {self.migration_journal} again with rollback journal "
                f"{self.journal}"
            )
        return lines


@define
class Tally:
    """Counts results as they stream by, keeps a failure sample, and calls ``on_progress`` at
    most every PROGRESS_INTERVAL seconds (and once at the end)."""

    total: int | None
    on_progress: ProgressCallback | None
    # by status value: a str key hashes in C (an Enum member's __hash__ is Python code)
    counts: dict[str, int] = field(factory=lambda: {status.value: 0 for status in UpdateStatus})
    failures: list[UpdateResult] = field(factory=list)
    conflicts: list[Conflict] = field(factory=list)
    started: float = field(factory=time.monotonic)
    last_report: float = 0.0
    samples: collections.deque[tuple[float, int]] = field(factory=collections.deque)

    def add(self, result: UpdateResult) -> None:
        status = result.status
        self.counts[status._value_] += 1
        if status is _FAILED and len(self.failures) < FAILURE_SAMPLE:
            self.failures.append(result)
        if self.on_progress is not None:
            now = time.monotonic()
            if now - self.last_report >= PROGRESS_INTERVAL:
                self.last_report = now
                self.report_progress()

    def add_conflict(self, conflict: Conflict) -> None:
        if len(self.conflicts) < FAILURE_SAMPLE:
            self.conflicts.append(conflict)

    def count(self, status: UpdateStatus) -> int:
        return self.counts[status.value]

    @property
    def done(self) -> int:
        return sum(self.counts.values())

    def report_progress(self) -> None:
        if self.on_progress is None:
            return
        now = time.monotonic()
        done = self.done
        if not self.samples:
            self.samples.append((self.started, 0))
        while len(self.samples) > 1 and self.samples[0][0] < now - RATE_WINDOW:
            self.samples.popleft()
        since, done_then = self.samples[0]
        self.samples.append((now, done))
        count = self.count
        self.on_progress(
            Progress(
                done=done,
                total=self.total,
                ok=sum(count(status) for status in _OK),
                failed=count(UpdateStatus.FAILED)
                + count(UpdateStatus.CONFLICT)
                + count(UpdateStatus.NOT_RECORDED),
                skipped=count(UpdateStatus.SKIPPED),
                rate=(done - done_then) / (now - since) if now > since else 0.0,
                elapsed=now - self.started,
            )
        )

    def fields(self, stats_delta: tuple[int, int, int]) -> dict[str, Any]:
        """The BulkReport fields this tally knows (the caller adds abort, journal, stop)."""
        count = self.count
        requests, retries, rate_limited = stats_delta
        return {
            "total": self.done,
            "succeeded": count(UpdateStatus.APPLIED),
            "failed": count(UpdateStatus.FAILED),
            "skipped": count(UpdateStatus.SKIPPED),
            "already_applied": count(UpdateStatus.ALREADY_APPLIED),
            "superseded": count(UpdateStatus.SUPERSEDED),
            "failures": tuple(self.failures),
            "duration": time.monotonic() - self.started,
            "requests": requests,
            "retries": retries,
            "rate_limited": rate_limited,
        }
