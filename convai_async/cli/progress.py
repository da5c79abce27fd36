"""Live feedback on stderr: the progress of bulk runs and every wait the user would not see.

A rich bar on a terminal, plain periodic lines otherwise (CI logs, pipes), nothing with -q.
Besides the counts it reads ``client.stats`` every tick and says why nothing moves: a pause the
server asked for (Retry-After), requests waiting on an answer, and the library's retry warnings
("cannot connect to host:port", 429s), so an unreachable host never means silence.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from typing import Any, ClassVar

from .. import ClientStats, ConvaiClient, Progress
from .output import Output

__all__ = ["Feedback", "waiting_status"]

TICK_SECONDS = 0.5
PLAIN_PROGRESS_SECONDS = 2.0
RETRY_NOTE_SECONDS = 2.0
SLOW_ANSWER_SECONDS = 5.0
LONG_PAUSE_SECONDS = 1.0
LIBRARY_LOGGER = "convai_async"


def waiting_status(stats: ClientStats, silent_for: float) -> str | None:
    """Why nothing moves, from a stats snapshot and how long no answer has come: a pause the
    server asked for, or requests still waiting on an answer. None when nothing is stuck."""
    if stats.paused_for >= LONG_PAUSE_SECONDS:
        return f"waiting {stats.paused_for:.1f} s: the server asked (Retry-After)"
    if stats.in_flight and silent_for >= SLOW_ANSWER_SECONDS:
        return f"no answer for {silent_for:.0f} s ({stats.in_flight} requests in flight)"
    return None


class _RetryWarnings(logging.Handler):
    """Hands the library's warnings (one per retry) to the feedback view."""

    def __init__(self, feedback: Feedback) -> None:
        super().__init__(logging.WARNING)
        self._feedback = feedback

    def emit(self, record: logging.LogRecord) -> None:
        self._feedback.on_warning(record.getMessage())


class Feedback:
    """Used as ``async with Feedback(output, label, client) as view``; pass ``view`` as a bulk
    call's ``on_progress``. Without progress calls it still reports waits and retries. When
    views nest (a command's, then its bulk run's), only the innermost one speaks."""

    _speaking: ClassVar[list[Feedback]] = []

    def __init__(self, output: Output, label: str, client: ConvaiClient) -> None:
        self._output = output
        self._label = label
        self._client = client
        self._progress: Progress | None = None
        self._last_line = -math.inf
        self._last_retry_note = -math.inf
        self._last_change = time.monotonic()
        self._last_counts: tuple[int, ...] = ()
        self._waiting: str | None = None  # the kind of wait last shown
        self._finished = False
        self._status = ""
        self._warnings = _RetryWarnings(self)
        self._ticker: asyncio.Task[None] | None = None
        self._rate_limited_before = client.stats.rate_limited  # this run's 429s, not the client's
        self._bar: Any = None
        self._task: Any = None
        if output.quiet:
            self._mode = "none"
        elif output.stderr.isatty():
            self._mode = "bar"
        else:
            self._mode = "lines"

    async def __aenter__(self) -> Feedback:
        if self._mode == "none":
            return self
        Feedback._speaking.append(self)
        logging.getLogger(LIBRARY_LOGGER).addHandler(self._warnings)
        self._ticker = asyncio.create_task(self._tick_forever())
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self in Feedback._speaking:
            Feedback._speaking.remove(self)
        logging.getLogger(LIBRARY_LOGGER).removeHandler(self._warnings)
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
        if self._bar is not None:
            self._bar.stop()

    def _start_bar(self) -> None:
        try:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn
            from rich.progress import Progress as RichProgress
        except ImportError:  # the cli extra is not installed: plain lines will do
            self._mode = "lines"
            return
        self._bar = RichProgress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]:.0f}/s"),
            TimeRemainingColumn(),
            TextColumn("[red]{task.fields[failed]} failed"),
            TextColumn("{task.fields[status]}"),
            console=Console(file=self._output.stderr),
            transient=False,
        )
        self._bar.start()
        self._task = self._bar.add_task(self._label, total=None, rate=0.0, failed=0, status="")

    # -- inputs: progress from the bulk call, warnings from the library, the clock ---------------

    def __call__(self, progress: Progress) -> None:
        self._progress = progress
        if self._mode == "bar" and self._bar is None:
            self._start_bar()  # on the first progress: a command without any shows no bar
        if self._mode == "bar":
            self._bar.update(
                self._task,
                completed=progress.done,
                total=progress.total,
                rate=progress.rate,
                failed=progress.failed,
            )
        elif self._mode == "lines":
            if progress.total is not None and progress.done >= progress.total:
                if not self._finished:  # the last callback repeats the final counts
                    self._finished = True
                    self._print_line()
            elif time.monotonic() - self._last_line >= PLAIN_PROGRESS_SECONDS:
                self._print_line()

    def on_warning(self, message: str) -> None:
        now = time.monotonic()
        if now - self._last_retry_note < RETRY_NOTE_SECONDS:
            return
        self._last_retry_note = now
        self._show(f"{self._label}: {message}")

    async def _tick_forever(self) -> None:
        while True:
            await asyncio.sleep(TICK_SECONDS)
            self._tick()

    def _tick(self) -> None:
        stats = self._client.stats
        now = time.monotonic()
        counts = (stats.succeeded, stats.failed, stats.retries, stats.rate_limited)
        if counts != self._last_counts:
            self._last_counts, self._last_change = counts, now
        status = waiting_status(stats, now - self._last_change)
        kind = status.split(" ", 1)[0] if status else None
        if kind != self._waiting and status and self._progress is None:
            self._show(f"{self._label}: {status}")  # no progress line to carry it
        self._waiting = kind
        rate_limited = stats.rate_limited - self._rate_limited_before
        self._status = status or (f"429s={rate_limited}" if rate_limited else "")
        if self._bar is not None:
            self._bar.update(self._task, status=self._status)
        elif (
            self._progress is not None
            and not self._finished
            and now - self._last_line >= PLAIN_PROGRESS_SECONDS
        ):
            self._print_line()

    # -- outputs --------------------------------------------------------------------------------

    def _show(self, text: str) -> None:
        if Feedback._speaking[-1:] != [self]:
            return
        if self._bar is not None:
            self._bar.console.print(text, markup=False, highlight=False)
        else:
            self._output.note(text)

    def _print_line(self) -> None:
        progress = self._progress
        if progress is None:
            return
        self._last_line = time.monotonic()
        total = "?" if progress.total is None else str(progress.total)
        line = (
            f"{self._label}: {progress.done}/{total} ok={progress.ok} "
            f"failed={progress.failed} {progress.rate:.0f}/s"
        )
        if progress.total and progress.rate > 0:
            line += f" eta {max(0.0, (progress.total - progress.done) / progress.rate):.0f}s"
        rate_limited = self._client.stats.rate_limited - self._rate_limited_before
        if rate_limited:
            line += f" 429s={rate_limited}"
        if self._status and not self._status.startswith("429s="):
            line += f"; {self._status}"
        self._output.note(line)
