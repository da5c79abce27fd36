"""Where the command line writes: results on stdout, notes and errors on stderr, quietly on pipes.

Results go to stdout as a table, one JSON document (``--json``) or JSON Lines (``--json-lines``);
progress, prompts, notes and errors go to stderr. Errors are printed in one place,
:meth:`Output.error`, which names command-line flags rather than the library's parameters. A
stream whose reader went away (``| head``) is pointed at /dev/null, as the Python docs recommend
for SIGPIPE, and the run carries on: a bulk run still finishes and journals every item.
"""

from __future__ import annotations

import enum
import json
import os
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from typing import IO, Any

import attrs

from ..errors import ConvaiError, ModelInUseError, ValidationError
from .documents import error_document
from .exits import UsageError

__all__ = ["Mode", "Output", "error_message", "table"]

# The library's parameter names, as the flags a user of the command line types.
FLAG_FOR_FIELD: Mapping[str, str] = {
    "allow_insecure_http": "--allow-insecure-http",
    "allow_unknown_model": "--allow-unknown-model",
    "api_key": "--api-key",
    "base_url": "--base-url",
    "char_id": "CHAR_ID",
    "display_name": "--display-name",
    "force": "--force",
    "from_model": "--from-model",
    "is_uncensored": "--uncensored/--censored",
    "journal": "--journal",
    "max_concurrency": "--concurrency",
    "max_retries": "--max-retries",
    "model": "--model",
    "model_group_name": "--group",
    "model_name": "--model-name",
    "rate_limit_patience": "--rate-limit-patience",
    "redis_url": "--redis-url",
    "requests_per_second": "--rps",
    "temperature": "--temperature",
    "timeout": "--timeout",
    "to_model": "--to-model",
}
# snake_case parameter names, and any name=True
_PARAMETER = re.compile(r"\b([a-z]+(?:_[a-z]+)+|[a-z]+(?==True\b))(=True)?\b")
# what to do next, for errors whose library message cannot name a flag
HINTS: Mapping[type[BaseException], str] = {
    ModelInUseError: "--force deregisters it anyway; those characters stop working",
}


class Mode(enum.Enum):
    TEXT = "text"
    JSON = "json"
    JSON_LINES = "json-lines"


def error_message(error: BaseException, flags: Mapping[str, str] = FLAG_FOR_FIELD) -> str:
    """The one-line message for an error, with library parameters named as flags."""

    def as_flag(match: re.Match[str]) -> str:
        return flags.get(match.group(1), match.group(0))

    if isinstance(error, ValidationError):
        field = flags.get(error.field, error.field)
        return f"{field}: {_PARAMETER.sub(as_flag, error.problem)}"
    if isinstance(error, ConvaiError):
        return _PARAMETER.sub(as_flag, str(error))
    return str(error)


@attrs.define
class Output:
    mode: Mode = Mode.TEXT
    quiet: bool = False
    stdout: IO[str] = attrs.field(factory=lambda: sys.stdout)
    stderr: IO[str] = attrs.field(factory=lambda: sys.stderr)
    stdout_closed: bool = False
    # per-command renames, e.g. base_url means --llm-base-url in ``llm register``
    flags: dict[str, str] = attrs.field(factory=lambda: dict(FLAG_FOR_FIELD))

    @property
    def machine(self) -> bool:
        return self.mode is not Mode.TEXT

    def result(self, text: str, document: Mapping[str, Any]) -> None:
        """The command's result: ``text`` for people, ``document`` for --json/--json-lines."""
        if self.mode is Mode.JSON:
            self._write_out(json.dumps(document, indent=2) + "\n")
        elif self.mode is Mode.JSON_LINES:
            self.line(document)
        else:
            self._write_out(text.rstrip("\n") + "\n")

    def line(self, document: Mapping[str, Any]) -> None:
        """One JSON Lines record (--json-lines only)."""
        self._write_out(json.dumps(document, separators=(",", ":")) + "\n")

    def note(self, text: str) -> None:
        if not self.quiet:
            self._write(self.stderr, text + "\n")

    def prompt(self, text: str) -> None:
        self._write(self.stderr, text)

    def error(
        self,
        error: BaseException,
        exit_code: int,
        *,
        hint: str | None = None,
        document: bool = True,
    ) -> None:
        """Print an error: one line on stderr, and with --json a document on stdout."""
        message = error_message(error, self.flags)
        line = f"convai-async: error: {message}"
        hint = hint or next((h for kind, h in HINTS.items() if isinstance(error, kind)), None)
        self._write(self.stderr, line + (f" ({hint})" if hint else "") + "\n")
        if self.machine and document:
            kind = "UsageError" if isinstance(error, UsageError) else type(error).__name__
            self.result("", error_document(kind, message, exit_code))

    def _write_out(self, text: str) -> None:
        if not self.stdout_closed:
            self.stdout_closed = not self._write(self.stdout, text)

    def _write(self, stream: IO[str], text: str) -> bool:
        """Write and flush; False when the reader has gone (the stream now goes to /dev/null)."""
        try:
            stream.write(text)
            stream.flush()
        except BrokenPipeError:
            _to_devnull(stream)
            return False
        return True


def _to_devnull(stream: IO[str]) -> None:
    """Point a stream's descriptor at /dev/null, so that later writes and the flush at exit
    do not fail again (https://docs.python.org/3/library/signal.html#note-on-sigpipe)."""
    try:
        descriptor = stream.fileno()
    except (OSError, ValueError):
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, descriptor)
    finally:
        os.close(devnull)


def table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """A plain text table; None shows as an empty cell, floats without trailing zeros."""
    cells = [[_cell(value) for value in row] for row in rows]
    widths = [max([len(h), *(len(row[i]) for row in cells)]) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines += [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells
    ]
    return "\n".join(lines)


def _cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else ""
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)
