"""Reading a journal as a stream: its lines in order, its header, and what cannot be read.

A line cut short by a crash is never read back as a line: a torn last line at the end of the
file is dropped, and so is a line a later run marked ``torn`` (see ``JournalWriter.resumed``).
Any other line that cannot be read is a ``BadLine`` naming its number (and its item, when it
still names one), for the caller to fail that item and go on.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Iterator
from typing import Any

from attrs import frozen

from ..errors import JournalError, ValidationError
from .format import FORMAT_NAME, JOURNAL_VERSION, Header, Line, LineError, Resumed, decode

__all__ = ["BadLine", "read_header", "read_lines"]


@frozen
class BadLine:
    """A line that could not be read. ``index``/``char_id``: the item it names, when it does."""

    number: int
    problem: str
    index: int | None = None
    char_id: str | None = None
    kind: str | None = None  # the line's ``k``, when it can still be seen

    def describe(self) -> str:
        return f"line {self.number}: {self.problem}"


_INDEX = re.compile(rb'"i":(\d{1,12})[,}]')
_CHAR = re.compile(rb'"c":"((?:[^"\\]|\\.)*)"')
_KIND = re.compile(rb'^\s*\{"k":"(\w+)"')


def _bad(number: int, raw: bytes, error: LineError) -> BadLine:
    index = _INDEX.search(raw)
    char = _CHAR.search(raw)
    kind = _KIND.search(raw)
    return BadLine(
        number,
        str(error),
        int(index.group(1)) if index else None,
        char.group(1).decode(errors="replace") if char else None,
        kind.group(1).decode() if kind else None,
    )


def read_lines(
    path: str | os.PathLike[str], *, only: str | None = None
) -> Iterator[tuple[int, Line | BadLine]]:
    """Every line of a journal with its line number, as a stream. A line cut short by a crash
    (the last line without a newline, or a line a later run marked ``torn``) is left out; any
    other unreadable line is a BadLine. ``only``: read just the well-formed lines of this kind
    (a quick second pass; bad lines are not reported)."""
    prefix = b'{"k":"%s"' % only.encode() if only is not None else None
    with open(path, "rb") as file:
        held: tuple[int, BadLine, bool] | None = None
        for number, raw in enumerate(file, start=1):
            if prefix is not None:
                if raw.startswith(prefix) and raw.endswith(b"\n"):
                    with contextlib.suppress(LineError):
                        yield number, decode(raw)
                continue
            if not raw.strip():
                continue
            try:
                line = decode(raw)
            except LineError as error:
                if held is not None:
                    yield held[0], held[1]
                held = (number, _bad(number, raw, error), raw.endswith(b"\n"))
                continue
            if held is not None:
                if not (isinstance(line, Resumed) and line.torn):
                    yield held[0], held[1]
                held = None
            yield number, line
        if held is not None and held[2]:
            yield held[0], held[1]


def read_header(path: str | os.PathLike[str], *, kind: str | None = None) -> Header | None:
    """The journal's header; None for an empty file. ValidationError (nothing sent) for a file
    that is not a journal of this format and version, or not of ``kind``."""
    name = os.fspath(path)
    try:
        with open(path, "rb") as file:
            first = file.readline()
    except FileNotFoundError:
        raise ValidationError("journal", f"no such file: {name}") from None
    except IsADirectoryError:
        raise ValidationError("journal", f"{name} is a directory, not a journal") from None
    except OSError as error:
        raise JournalError(name, f"cannot read: {error.strerror}") from error
    if not first.strip():
        return None
    try:
        header = decode(first)
    except LineError:
        header = None
    if not isinstance(header, Header) or header.format != FORMAT_NAME:
        legacy = _legacy_version(first)
        if legacy is not None:
            raise ValidationError(
                "journal",
                f"{name} is a version {legacy} journal; this version reads version "
                f"{JOURNAL_VERSION} only",
            )
        raise ValidationError("journal", f"{name} is not a convai-async journal")
    if header.v != JOURNAL_VERSION:
        raise ValidationError(
            "journal", f"{name} is journal format version {header.v}, expected {JOURNAL_VERSION}"
        )
    if kind is not None and header.kind != kind:
        raise ValidationError("journal", f"{name} is a {header.kind} journal, not a {kind} journal")
    return header


def _legacy_version(first: bytes) -> Any:
    """The version of a journal written before this format (``{"journal": "convai-async"}``)."""
    try:
        data = json.loads(first)
    except ValueError:
        return None
    if isinstance(data, dict) and data.get("journal") == "convai-async":
        return data.get("v")
    return None
