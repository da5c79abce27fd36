"""Running a bulk call from the command line: graceful signals, live feedback, the report.

The first SIGINT (Ctrl-C) or SIGTERM stops reading new items; requests in flight finish and are
journaled, the summary is printed, and the exit code says which signal it was. A second signal
cancels at once. With ``--json-lines`` each item's outcome is printed as it finishes.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import signal
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

from .. import BulkReport, CharacterUpdate, ConvaiClient, Progress, UpdateResult, UpdateStatus
from .documents import item_document
from .exits import FATAL_ERRORS, Interrupted, report_exit_code
from .output import Output
from .progress import Feedback

__all__ = ["BulkRun", "report_text", "run_bulk", "streamed"]

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
) -> int:
    """Run a bulk call with live feedback and graceful signals; print its report."""
    with StopOnSignal(output) as stopper:
        async with Feedback(output, label, client) as view:
            try:
                report = await bulk_run(view, stopper.event)
            except asyncio.CancelledError:
                if stopper.forced is None:
                    raise
                raise Interrupted(stopper.forced, forced=True) from None
    output.result(report_text(report), document_for(report))
    if report.stopped:
        raise Interrupted(stopper.signum or signal.SIGINT, report)
    return report_exit_code(report)


async def streamed(
    client: ConvaiClient,
    output: Output,
    updates: Iterable[CharacterUpdate],
    *,
    total: int,
    journal: str | None,
    on_progress: Callable[[Progress], None],
    stop: asyncio.Event,
) -> BulkReport:
    """``client.stream_updates`` with one JSON line per item, tallied into a BulkReport."""
    before = client.stats
    started = time.monotonic()
    counts: collections.Counter[UpdateStatus] = collections.Counter()
    failures: list[UpdateResult] = []
    abort_reason: str | None = None
    async for result in client.stream_updates(updates, journal=journal, stop=stop):
        output.line(item_document(result))
        counts[result.status] += 1
        if result.status is UpdateStatus.FAILED:
            failures.append(result)
            if abort_reason is None and isinstance(result.error, FATAL_ERRORS):
                abort_reason = f"{type(result.error).__name__}: {result.error}"
        elapsed = time.monotonic() - started
        done = sum(counts.values())
        on_progress(
            Progress(
                done=done,
                total=total,
                ok=counts[UpdateStatus.APPLIED] + counts[UpdateStatus.ALREADY_APPLIED],
                failed=counts[UpdateStatus.FAILED],
                skipped=counts[UpdateStatus.SKIPPED],
                rate=done / elapsed if elapsed > 0 else 0.0,
                elapsed=elapsed,
            )
        )
    after = client.stats
    return BulkReport(
        total=sum(counts.values()),
        succeeded=counts[UpdateStatus.APPLIED],
        failed=counts[UpdateStatus.FAILED],
        skipped=counts[UpdateStatus.SKIPPED],
        already_applied=counts[UpdateStatus.ALREADY_APPLIED],
        failures=tuple(failures),
        duration=time.monotonic() - started,
        requests=after.requests - before.requests,
        retries=after.retries - before.retries,
        rate_limited=after.rate_limited - before.rate_limited,
        aborted=abort_reason is not None,
        abort_reason=abort_reason,
        journal=journal,
        stopped=stop.is_set(),
    )


def report_text(report: BulkReport) -> str:
    """The report for people. An abort is one line, however many items it failed."""
    rate = report.total / report.duration if report.duration > 0 else 0.0
    lines = [
        f"{report.total} items in {report.duration:.1f}s ({rate:.0f}/s): "
        f"{report.succeeded} applied, {report.already_applied} already applied, "
        f"{report.failed} failed, {report.skipped} skipped",
        f"{report.requests} requests, {report.retries} retries, {report.rate_limited} answered 429",
    ]
    failures = list(report.failures)
    if report.aborted:
        fatal = [f for f in failures if isinstance(f.error, FATAL_ERRORS)]
        failures = [f for f in failures if not isinstance(f.error, FATAL_ERRORS)]
        lines.append(
            f"ABORTED: {report.abort_reason} "
            f"({len(fatal)} items failed with it, {report.skipped} not sent)"
        )
    if report.stopped:
        lines.append("STOPPED before the end of the input")
    for failure in failures[:SHOWN_FAILURES]:
        lines.append(f"  failed {failure.char_id}: {failure.error}")
    if len(failures) > SHOWN_FAILURES:
        lines.append(f"  ... and {len(failures) - SHOWN_FAILURES} more failures")
    if report.journal:
        lines.append(f"journal: {report.journal}")
    return "\n".join(lines)
