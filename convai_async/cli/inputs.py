"""What the command line reads besides its arguments: ID lists, CSV sheets, secrets, a yes/no.

Files are read as UTF-8, with or without the byte-order mark Excel writes. A CSV may use ``,``,
``;`` or tab separators (detected on the header line) and any case in its headers; a problem is
reported with the file and line, before anything is sent. Secrets come from the environment or
stdin, never from argv, and are never echoed.
"""

from __future__ import annotations

import argparse
import csv
import getpass
import itertools
import os
import re
import signal
import sys
from collections.abc import Iterable, Iterator
from typing import IO

from .. import CharacterUpdate, ValidationError
from .exits import Interrupted, UsageError
from .output import Output

__all__ = ["char_ids_from", "confirm", "csv_updates", "llm_secret", "open_text", "updates_for"]

ENCODING = "utf-8-sig"  # plain UTF-8, and UTF-8 with the BOM that Excel writes
BOM = "\ufeff"
SEPARATORS = ",;\t"
ID_COLUMN = "char_id"
VALUE_COLUMNS = ("model", "temperature")
COLUMN_ALIASES = {"character_id": ID_COLUMN, "charid": ID_COLUMN}
_DECIMAL_COMMA = re.compile(r"^\d+,\d+$")


def open_text(source: str) -> IO[str]:
    """A file to read (``-`` is stdin), decoded as UTF-8 with or without a BOM."""
    if source == "-":
        return sys.stdin
    try:
        return open(source, encoding=ENCODING, newline="")
    except OSError as error:
        raise UsageError(f"cannot read {source}: {error.strerror}") from None


def char_ids_from(args: argparse.Namespace) -> list[str]:
    """The character IDs given as arguments and/or one per line in --from-file."""
    ids = list(args.char_ids)
    if args.from_file:
        with open_text(args.from_file) as file:
            ids += [line.strip().lstrip(BOM) for line in file if line.strip()]
    if not ids:
        raise UsageError("give character IDs as arguments or with --from-file PATH (- for stdin)")
    return ids


def updates_for(
    ids: Iterable[str], *, model: str | None = None, temperature: float | None = None
) -> list[CharacterUpdate]:
    """One update per ID, all checked before anything is sent."""
    updates = []
    for position, char_id in enumerate(ids, start=1):
        try:
            updates.append(CharacterUpdate(char_id, model=model, temperature=temperature))
        except ValidationError as error:
            raise UsageError(f"character ID #{position} ({char_id!r}): {error.problem}") from None
    return updates


def _column(header: str) -> str:
    name = re.sub(r"[\s\-]+", "_", header.strip().lower())
    return COLUMN_ALIASES.get(name, name)


def csv_updates(lines: Iterable[str], source: str) -> Iterator[CharacterUpdate]:
    """Updates from a CSV with a char_id column and model and/or temperature columns."""
    rows = iter(lines)
    header = next(rows, "").lstrip(BOM)  # stdin is not decoded with utf-8-sig
    try:
        dialect: type[csv.Dialect] | csv.Dialect = csv.Sniffer().sniff(header, SEPARATORS)
    except csv.Error:  # a single column: any separator will do
        dialect = csv.excel
    reader = csv.reader(itertools.chain([header], rows), dialect)
    found = next(reader, [])
    columns = [_column(name) for name in found]
    if ID_COLUMN not in columns or not set(columns) & set(VALUE_COLUMNS):
        shown = ", ".join(name.strip() for name in found if name.strip()) or "none"
        raise UsageError(
            f"{source}: needs a char_id column and a model and/or temperature column; "
            f"found columns: {shown}"
        )
    for row in reader:
        line = reader.line_num
        if not any(cell.strip() for cell in row):
            continue
        if len(row) > len(columns):
            raise UsageError(
                f"{source}:{line}: {len(row)} fields, but the header has {len(columns)} columns"
            )
        values = dict(zip(columns, (cell.strip() for cell in row), strict=False))
        yield _update(values, source, line)


def _update(values: dict[str, str], source: str, line: int) -> CharacterUpdate:
    raw_temperature = values.get("temperature", "")
    if _DECIMAL_COMMA.match(raw_temperature):  # 0,5 from a spreadsheet in a comma locale
        raw_temperature = raw_temperature.replace(",", ".")
    try:
        temperature = float(raw_temperature) if raw_temperature else None
    except ValueError:
        raise UsageError(
            f"{source}:{line}: temperature {raw_temperature!r} is not a number"
        ) from None
    try:
        return CharacterUpdate(
            values.get(ID_COLUMN, ""), model=values.get("model") or None, temperature=temperature
        )
    except ValidationError as error:
        column = "row" if error.field == "update" else f"column {error.field}"
        raise UsageError(f"{source}:{line}: {column}: {error.problem}") from None


def llm_secret(args: argparse.Namespace, *, required: bool) -> str | None:
    """The custom LLM key: from the variable named by --llm-api-key-env, or stdin; never argv."""
    if args.llm_api_key_env:
        value = os.environ.get(args.llm_api_key_env)
        if not value:
            raise UsageError(f"${args.llm_api_key_env} is not set (--llm-api-key-env)")
        return value
    if not (required or args.llm_api_key_stdin):
        return None
    if sys.stdin.isatty():
        return getpass.getpass("custom LLM API key: ")
    value = sys.stdin.readline().strip()
    if not value:
        raise UsageError("no custom LLM API key on stdin (or use --llm-api-key-env VAR)")
    return value


def confirm(output: Output, question: str, assume_yes: bool) -> None:
    """Ask on the terminal; anything but y/yes, or Ctrl-C, and nothing is sent."""
    if assume_yes:
        return
    if not sys.stdin.isatty():
        raise UsageError("not on a terminal: pass --yes to confirm")
    # asyncio.run's own SIGINT handler only cancels the main task, which cannot happen while
    # this blocking read holds the loop: the first Ctrl-C must interrupt the read itself.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        output.prompt(f"{question} [y/N] ")
        answer = sys.stdin.readline()
    except KeyboardInterrupt:
        output.prompt("\n")
        raise Interrupted(signal.SIGINT) from None
    finally:
        signal.signal(signal.SIGINT, previous)
    if answer.strip().lower() not in ("y", "yes"):
        raise UsageError("not confirmed; nothing was changed")
