"""Running a bulk call from the command line: graceful signals, live feedback, the report.

The first SIGINT (Ctrl-C) or SIGTERM stops reading new items; requests in flight finish and are
journaled, the summary is printed, and the exit code says which signal it was. A second signal
cancels at once. With ``--json-lines`` each item's outcome is printed as it finishes (the
library's ``on_result``), then the report.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from .. import BulkReport, ConvaiClient, RollbackReport, UpdateResult
from ..bulk import ResultCallback
from .documents import item_document
from .exits import FATAL_ERRORS, Interrupted, report_exit_code
from .output import Mode, Output
from .progress import Feedback

__all__ = ["BulkRun", "item_lines", "report_text", "run_bulk"]

BulkRun = Callable[[Feedback, asyncio.Event], Awaitable[BulkReport]]
SHOWN_FAILURES = 10


class StopOnSignal:
    """First SIGINT or SIGTERM: set ``event`` (a graceful stop). The second: cancel the run."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, output: Output) -> None:
        self.event = asyncio.Event()
        self.signum: int | None = None
        self.forced: int | None = None
        self._output = output
        self._main: asyncio.Task[Any] | None = None

    def __enter__(self) -> StopOnSignal:
        self._main = asyncio.current_task()
        loop = asyncio.get_running_loop()
        for signum in self.SIGNALS:
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(signum, self._on_signal, signum)
        return self

    def __exit__(self, *exc_info: object) -> None:
        loop = asyncio.get_running_loop()
        for signum in self.SIGNALS:
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(signum)

    def _on_signal(self, signum: int) -> None:
        if self.event.is_set():
            self.forced = signum
            if self._main is not None:
                self._main.cancel()
            return
        self.signum = signum
        self.event.set()
        self._output.note(
            f"{signal.Signals(signum).name}: finishing the requests in flight "
            "(send it again to quit now)"
        )


async def run_bulk(
    client: ConvaiClient,
    output: Output,
    label: str,
    bulk_run: BulkRun,
    document_for: Callable[[BulkReport], Mapping[str, Any]],
    *,
    text_for: Callable[[BulkReport], str] | None = None,
    resume: str | None = None,
) -> int:
    """Run a bulk call with live feedback and graceful signals; print its report. ``resume``:
    the exact command that resumes the run, carried by ``Interrupted`` when a signal stops it."""
    with StopOnSignal(output) as stopper:
        async with Feedback(output, label, client) as view:
            try:
                report = await bulk_run(view, stopper.event)
            except asyncio.CancelledError:
                if stopper.forced is None:
                    raise
                raise Interrupted(stopper.forced, forced=True, resume=resume) from None
    output.result((text_for or report_text)(report), document_for(report))
    if report.stopped:
        raise Interrupted(stopper.signum or signal.SIGINT, report, resume=resume)
    return report_exit_code(report)


def item_lines(output: Output) -> ResultCallback | None:
    """With --json-lines: the ``on_result`` callback printing each item's line as it finishes."""
    if output.mode is not Mode.JSON_LINES:
        return None

    def print_item(result: UpdateResult) -> None:
        output.line(item_document(result))

    return print_item


def report_text(report: BulkReport) -> str:
    """The report for people. An abort is one line, however many items it failed. A rollback
    adds its conflicts (with a sample), the values it could not restore, and both journals."""
    rollback = report if isinstance(report, RollbackReport) else None
    rate = report.total / report.duration if report.duration > 0 else 0.0
    done = "restored" if rollback else "applied"
    counts = (
        f"{report.total} items in {report.duration:.1f}s ({rate:.0f}/s): "
        f"{report.succeeded} {done}, {report.already_applied} already "
        f"{'as before' if rollback else 'applied'}, {report.failed} failed, "
        f"{report.skipped} skipped"
    )
    if report.superseded:
        counts += f", {report.superseded} superseded"
    lines = [
        counts,
        f"{report.requests} requests, {report.retries} retries, {report.rate_limited} answered 429",
    ]
    failures = list(report.failures)  # a sample: report.failed counts them all
    unshown = report.failed
    if report.aborted:
        fatal = [f for f in failures if isinstance(f.error, FATAL_ERRORS)]
        failures = [f for f in failures if not isinstance(f.error, FATAL_ERRORS)]
        unshown -= len(fatal)
        lines.append(
            f"ABORTED: {report.abort_reason} "
            f"({len(fatal)} items failed with it, {report.skipped} not sent)"
        )
    if report.stopped:
        lines.append("STOPPED before the end of the input")
    for failure in failures[:SHOWN_FAILURES]:
        lines.append(f"  failed {failure.char_id}: {failure.error}")
    unshown -= min(len(failures), SHOWN_FAILURES)
    if unshown > 0:
        lines.append(f"  ... and {unshown} more failures (the journal lists every one)")
    if rollback is not None:
        lines += _rollback_lines(rollback)
    elif report.journal:
        lines.append(f"journal: {report.journal}")
    return "\n".join(lines)


def _values(values: tuple[str | None, float | None]) -> str:
    model, temperature = values
    return f"{model or '(no model)'} / {'(none)' if temperature is None else f'{temperature:g}'}"


def _rollback_lines(report: RollbackReport) -> list[str]:
    lines = []
    if report.conflicts:
        lines.append(
            f"CONFLICTS: {report.conflicts} characters changed since the migration were left "
            "alone (model / temperature)"
        )
        for conflict in report.conflict_sample[:SHOWN_FAILURES]:
            lines.append(
                f"  conflict {conflict.char_id}: the migration set {_values(conflict.expected)}, "
                f"now {_values(conflict.found)}"
            )
        if report.conflicts > SHOWN_FAILURES:
            lines.append(f"  ... and {report.conflicts - SHOWN_FAILURES} more conflicts")
    if report.not_recorded:
        lines.append(
            f"NOT RECORDED: {report.not_recorded} characters had no value recorded before the "
            "migration (no model or temperature); those fields were left as they are"
        )
    lines.append(f"migration journal: {report.migration_journal}")
    lines.append(f"rollback journal: {report.journal}" + (" (forced)" if report.force else ""))
    return lines
