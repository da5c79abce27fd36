"""The command line's exit codes: the one map from an outcome to a code, and its help text.

0 everything done, 1 some items failed (or a single call failed), 2 usage or validation error
(nothing sent), 3 aborted (authentication, permission, quota), 130 interrupted (Ctrl-C),
141 stdout was closed before the output was written (the work itself was done), 143 terminated
(SIGTERM). Every code path that ends the program asks this module for its code.
"""

from __future__ import annotations

import signal

from .. import AuthenticationError, BulkReport, PermissionDeniedError, QuotaExceededError
from ..errors import ValidationError

__all__ = [
    "EXIT_ABORTED",
    "EXIT_BROKEN_PIPE",
    "EXIT_CODES_HELP",
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_TERMINATED",
    "EXIT_USAGE",
    "FATAL_ERRORS",
    "CommandLineError",
    "InternalError",
    "Interrupted",
    "UsageError",
    "exit_code_for",
    "report_exit_code",
]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_ABORTED = 3
EXIT_INTERRUPTED = 128 + signal.SIGINT
EXIT_BROKEN_PIPE = 128 + signal.SIGPIPE
EXIT_TERMINATED = 128 + signal.SIGTERM

# errors after which no further request of the run can succeed
FATAL_ERRORS = (AuthenticationError, PermissionDeniedError, QuotaExceededError)

EXIT_CODES_HELP = f"""exit codes:
  {EXIT_OK}    done
  {EXIT_FAILED}    some items (or the call) failed; see the report
  {EXIT_USAGE}    usage or validation error: nothing was sent
  {EXIT_ABORTED}    aborted: wrong key, no permission or quota exhausted
  {EXIT_INTERRUPTED}  interrupted (Ctrl-C): requests in flight finished, the journal is intact
  {EXIT_BROKEN_PIPE}  stdout was closed early (e.g. | head); the work itself was done
  {EXIT_TERMINATED}  terminated (SIGTERM): like the first Ctrl-C"""


class UsageError(Exception):
    """Bad command-line input: exit 2 before anything is sent."""


class CommandLineError(UsageError):
    """An argument the parser refused; ``prog`` names the (sub)command for the --help hint."""

    def __init__(self, message: str, prog: str) -> None:
        super().__init__(message)
        self.prog = prog


class InternalError(Exception):
    """A bug in convai-async: reported in one line (the traceback with -v)."""


class Interrupted(Exception):
    """The run stopped on SIGINT or SIGTERM, or a prompt was interrupted.

    ``report`` is the partial bulk report (None when nothing had started)."""

    def __init__(
        self, signum: int, report: BulkReport | None = None, *, forced: bool = False
    ) -> None:
        name = signal.Signals(signum).name
        if forced:
            message = (
                f"interrupted by a second {name}: the requests in flight were abandoned "
                "(the journal holds every item that finished)"
            )
        elif report is None:
            message = f"interrupted by {name}; nothing more was sent"
        else:
            message = (
                f"interrupted by {name} after {report.total} items; the requests in flight finished"
            )
        super().__init__(message)
        self.signum = signum
        self.report = report


def exit_code_for(error: BaseException) -> int:
    """The exit code for a run that ended with ``error``."""
    if isinstance(error, Interrupted):
        return EXIT_TERMINATED if error.signum == signal.SIGTERM else EXIT_INTERRUPTED
    if isinstance(error, KeyboardInterrupt):
        return EXIT_INTERRUPTED
    if isinstance(error, (UsageError, ValidationError)):
        return EXIT_USAGE
    if isinstance(error, FATAL_ERRORS):
        return EXIT_ABORTED
    return EXIT_FAILED


def report_exit_code(report: BulkReport) -> int:
    """The exit code for a bulk run that ran to its end."""
    if report.aborted:
        return EXIT_ABORTED
    return EXIT_OK if report.failed == 0 else EXIT_FAILED
