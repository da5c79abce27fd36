"""The ``convai-async`` command line: a thin shell over the library.

Results go to stdout (a table, or one JSON document with ``--json``); progress, prompts and
messages go to stderr. Exit codes are mapped in one place, :func:`exit_code_for`:
0 all ok, 1 some items failed, 2 usage or validation error (nothing sent), 3 aborted
(authentication, permission, quota), 130 interrupted. Secrets are read from the environment
or stdin, never echoed. rich is imported only here, and only to draw a progress bar.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import getpass
import io
import json
import logging
import math
import os
import re
import signal
import sys
import tempfile
import time
import traceback
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import IO, Any

import attrs

from .. import __version__, catalog
from .. import _validation as check
from ..bulk import BulkReport, Progress
from ..client import API_KEY_ENV, DEFAULT_BASE_URL, ConvaiClient
from ..errors import (
    AuthenticationError,
    ConvaiError,
    PermissionDeniedError,
    QuotaExceededError,
    ValidationError,
)
from ..models import Character, CharacterUpdate

__all__ = ["main"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_ABORTED, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
PLAIN_PROGRESS_SECONDS = 2.0


class UsageError(Exception):
    """Bad command-line input: exit 2 before anything is sent."""


class Interrupted(Exception):
    """The run was stopped by Ctrl-C after finishing what was in flight."""

    def __init__(self, report: BulkReport | None) -> None:
        super().__init__("interrupted")
        self.report = report


def exit_code_for(error: BaseException) -> int:
    if isinstance(error, (UsageError, ValidationError)):
        return EXIT_USAGE
    if isinstance(error, (AuthenticationError, PermissionDeniedError, QuotaExceededError)):
        return EXIT_ABORTED
    if isinstance(error, (Interrupted, KeyboardInterrupt)):
        return EXIT_INTERRUPTED
    return EXIT_FAILED


def report_exit_code(report: BulkReport) -> int:
    if report.aborted:
        return EXIT_ABORTED
    return EXIT_OK if report.failed == 0 else EXIT_FAILED


# -- output ---------------------------------------------------------------------------------------


@attrs.define
class Output:
    json: bool
    quiet: bool
    stdout: IO[str] = sys.stdout
    stderr: IO[str] = sys.stderr

    def result(self, text: str, document: Any) -> None:
        if self.json:
            json.dump(document, self.stdout, indent=2, default=str)
            self.stdout.write("\n")
        else:
            self.stdout.write(text.rstrip("\n") + "\n")
        self.stdout.flush()

    def note(self, text: str) -> None:
        if not self.quiet:
            self.stderr.write(text + "\n")
            self.stderr.flush()

    def error(self, text: str) -> None:
        self.stderr.write(f"convai-async: error: {text}\n")
        self.stderr.flush()


def table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    cells = [[("" if v is None else str(v)) for v in row] for row in rows]
    widths = [max([len(h), *(len(row[i]) for row in cells)]) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines += [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells
    ]
    return "\n".join(lines)


def report_document(report: BulkReport) -> dict[str, Any]:
    return {
        "total": report.total,
        "succeeded": report.succeeded,
        "already_applied": report.already_applied,
        "failed": report.failed,
        "skipped": report.skipped,
        "aborted": report.aborted,
        "abort_reason": report.abort_reason,
        "duration_seconds": round(report.duration, 3),
        "requests": report.requests,
        "retries": report.retries,
        "rate_limited": report.rate_limited,
        "journal": report.journal,
        "failures": [
            {"index": f.index, "char_id": f.char_id, "error": str(f.error)} for f in report.failures
        ],
    }


def character_row(character: Character) -> tuple[object, ...]:
    temperature = None if character.temperature is None else f"{character.temperature:g}"
    return (character.char_id, character.name, character.model, temperature)


# -- progress -------------------------------------------------------------------------------------


class ProgressView:
    """Progress on stderr: a rich bar on a terminal, plain periodic lines otherwise, or nothing."""

    def __init__(self, output: Output, label: str) -> None:
        self._output = output
        self._label = label
        self._last_line = 0.0
        self._bar: Any = None
        self._task: Any = None
        if output.quiet:
            self._mode = "none"
        elif output.stderr.isatty():
            self._mode = "bar"
        else:
            self._mode = "lines"

    def __enter__(self) -> ProgressView:
        if self._mode == "bar":
            try:
                from rich.console import Console
                from rich.progress import (
                    BarColumn,
                    MofNCompleteColumn,
                    TextColumn,
                    TimeRemainingColumn,
                )
                from rich.progress import Progress as RichProgress
            except ImportError:  # the cli extra is not installed: plain lines will do
                self._mode = "lines"
                return self
            self._bar = RichProgress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[rate]:.0f}/s"),
                TimeRemainingColumn(),
                TextColumn("[red]{task.fields[failed]} failed"),
                console=Console(file=self._output.stderr),
                transient=False,
            )
            self._bar.start()
            self._task = self._bar.add_task(self._label, total=None, rate=0.0, failed=0)
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._bar is not None:
            self._bar.stop()

    def __call__(self, progress: Progress) -> None:
        if self._mode == "bar":
            self._bar.update(
                self._task,
                completed=progress.done,
                total=progress.total,
                rate=progress.rate,
                failed=progress.failed,
            )
        elif self._mode == "lines":
            now = time.monotonic()
            finished = progress.total is not None and progress.done >= progress.total
            if finished and self._last_line == math.inf:
                return  # the final line is already out
            if now - self._last_line >= PLAIN_PROGRESS_SECONDS or finished:
                self._last_line = math.inf if finished else now
                total = "?" if progress.total is None else str(progress.total)
                eta = ""
                if progress.total and progress.rate > 0:
                    eta = f" eta {max(0.0, (progress.total - progress.done) / progress.rate):.0f}s"
                self._output.note(
                    f"{self._label}: {progress.done}/{total} ok={progress.ok} "
                    f"failed={progress.failed} {progress.rate:.0f}/s{eta}"
                )


# -- input ----------------------------------------------------------------------------------------


def read_lines(source: str) -> list[str]:
    if source == "-":
        return [line.strip() for line in sys.stdin if line.strip()]
    try:
        with open(source, encoding="utf-8") as file:
            return [line.strip() for line in file if line.strip()]
    except OSError as error:
        raise UsageError(f"cannot read {source}: {error.strerror}") from None


def char_ids_from(args: argparse.Namespace) -> list[str]:
    ids = list(args.char_ids)
    if args.from_file:
        ids += read_lines(args.from_file)
    if not ids:
        raise UsageError("give character IDs as arguments or with --from-file PATH (- for stdin)")
    for position, char_id in enumerate(ids):
        check.text(f"char_id #{position + 1}", char_id)
    return ids


def csv_updates(text: Iterable[str], source: str) -> Iterator[CharacterUpdate]:
    """Updates from a CSV with a char_id column and model and/or temperature columns."""
    reader = csv.DictReader(text)
    columns = set(reader.fieldnames or ())
    if "char_id" not in columns or not columns & {"model", "temperature"}:
        raise UsageError(f"{source}: needs columns char_id and model and/or temperature")
    for line, row in enumerate(reader, start=2):
        model = (row.get("model") or "").strip() or None
        raw_temperature = (row.get("temperature") or "").strip()
        try:
            temperature = float(raw_temperature) if raw_temperature else None
        except ValueError:
            raise UsageError(
                f"{source}:{line}: temperature {raw_temperature!r} is not a number"
            ) from None
        try:
            yield CharacterUpdate(
                (row.get("char_id") or "").strip(), model=model, temperature=temperature
            )
        except ValidationError as error:
            raise UsageError(f"{source}:{line}: {error}") from None


def llm_secret(args: argparse.Namespace, *, required: bool) -> str | None:
    """The custom LLM key: from the variable named by --llm-api-key-env, or stdin; never argv."""
    if args.llm_api_key_env:
        value = os.environ.get(args.llm_api_key_env)
        if not value:
            raise UsageError(f"${args.llm_api_key_env} is not set")
        return value
    if not (required or args.llm_api_key_stdin):
        return None
    if sys.stdin.isatty():
        return getpass.getpass("custom LLM API key: ")
    value = sys.stdin.readline().strip()
    if not value:
        raise UsageError("no custom LLM API key on stdin (or use --llm-api-key-env VAR)")
    return value


# -- interruption ---------------------------------------------------------------------------------


class StopOnInterrupt:
    """First Ctrl-C: stop reading new items, let in-flight ones finish, flush the journal.
    Second Ctrl-C: cancel at once."""

    def __init__(self, output: Output) -> None:
        self.event = asyncio.Event()
        self._output = output
        self._main: asyncio.Task[Any] | None = None

    def __enter__(self) -> StopOnInterrupt:
        self._main = asyncio.current_task()
        with contextlib.suppress(NotImplementedError, RuntimeError):
            asyncio.get_running_loop().add_signal_handler(signal.SIGINT, self._on_interrupt)
        return self

    def __exit__(self, *exc_info: object) -> None:
        with contextlib.suppress(NotImplementedError, RuntimeError):
            asyncio.get_running_loop().remove_signal_handler(signal.SIGINT)

    def _on_interrupt(self) -> None:
        if self.event.is_set() and self._main is not None:
            self._main.cancel()
            return
        self.event.set()
        self._output.note("interrupted: finishing requests in flight (Ctrl-C again to quit now)")


BulkRun = Callable[[ProgressView, asyncio.Event], Awaitable[BulkReport]]


async def run_bulk(output: Output, label: str, bulk_run: BulkRun) -> int:
    """Run a bulk call with a progress view and graceful Ctrl-C; print its report."""
    with StopOnInterrupt(output) as stopper, ProgressView(output, label) as progress:
        report = await bulk_run(progress, stopper.event)
    output.result(report.summary(), report_document(report))
    if report.stopped:
        raise Interrupted(report)
    return report_exit_code(report)


def updating(
    client: ConvaiClient, updates: Iterable[CharacterUpdate], total: int, journal: str | None
) -> BulkRun:
    return lambda progress, stop: client.bulk_update(
        updates, journal=journal, on_progress=progress, total=total, stop=stop
    )


# -- commands -------------------------------------------------------------------------------------


async def cmd_set_model(client: ConvaiClient, args: argparse.Namespace, output: Output) -> int:
    ids = char_ids_from(args)
    updates = (CharacterUpdate(c, model=args.model) for c in ids)
    return await run_bulk(output, "set-model", updating(client, updates, len(ids), args.journal))


async def cmd_set_temperature(
    client: ConvaiClient, args: argparse.Namespace, output: Output
) -> int:
    ids = char_ids_from(args)
    updates = (CharacterUpdate(c, temperature=args.temperature) for c in ids)
    return await run_bulk(
        output, "set-temperature", updating(client, updates, len(ids), args.journal)
    )


async def cmd_update(client: ConvaiClient, args: argparse.Namespace, output: Output) -> int:
    if args.csv == "-":
        text = sys.stdin.read()
        total = sum(1 for _ in csv_updates(io.StringIO(text), "stdin"))  # validate all first
        updates: Iterable[CharacterUpdate] = csv_updates(io.StringIO(text), "stdin")
    else:
        path = Path(args.csv)
        if not path.is_file():
            raise UsageError(f"no such file: {path}")
        with path.open(newline="", encoding="utf-8") as file:
            total = sum(1 for _ in csv_updates(file, args.csv))  # validate all before sending

        def stream() -> Iterator[CharacterUpdate]:
            with path.open(newline="", encoding="utf-8") as again:
                yield from csv_updates(again, args.csv)

        updates = stream()
    return await run_bulk(output, "update", updating(client, updates, total, args.journal))


async def cmd_get(client: ConvaiClient, args: argparse.Namespace, output: Output) -> int:
    character = await client.characters.get(args.char_id)
    output.result(
        table(("ID", "NAME", "MODEL", "TEMPERATURE"), [character_row(character)]),
        dict(character.raw),
    )
    return EXIT_OK


async def cmd_list(client: ConvaiClient, args: argparse.Namespace, output: Output) -> int:
    characters = [
        c for c in await client.characters.list() if args.model is None or c.model == args.model
    ]
    output.result(
        table(("ID", "NAME", "MODEL", "TEMPERATURE"), map(character_row, characters)),
        [dict(c.raw) for c in characters],
    )
    return EXIT_OK


def confirm(output: Output, question: str, assume_yes: bool) -> None:
    if assume_yes:
        return
    if not sys.stdin.isatty():
        raise UsageError("not on a terminal: pass --yes to confirm")
    output.stderr.write(f"{question} [y/N] ")
    output.stderr.flush()
    if sys.stdin.readline().strip().lower() not in ("y", "yes"):
        raise UsageError("not confirmed; nothing was changed")


async def cmd_migrate(client: ConvaiClient, args: argparse.Namespace, output: Output) -> int:
    where = None
    if args.where_name:
        try:
            pattern = re.compile(args.where_name)
        except re.error as error:
            raise UsageError(f"--where-name: {error}") from None

        def where(character: Character) -> bool:
            return bool(pattern.search(character.name or ""))

    plan = await client.plan_migration(
        to_model=args.to_model,
        from_model=args.from_model,
        temperature=args.temperature,
        where=where,
        allow_unknown_model=args.allow_unknown_model,
    )
    plan_document = {
        "to_model": plan.to_model,
        "temperature": plan.temperature,
        "from_model": plan.from_model,
        "fleet_size": plan.fleet_size,
        "selected": plan.selected,
        "will_change": len(plan.updates),
        "unchanged": plan.unchanged,
        "counts_by_model": {str(k): v for k, v in plan.counts_by_model.items()},
    }
    if args.dry_run:
        output.result(
            plan.summary() + "\n(dry run: nothing sent)", {"plan": plan_document, "dry_run": True}
        )
        return EXIT_OK
    output.note(plan.summary())
    if not plan.updates:
        output.result("nothing to change", {"plan": plan_document, "report": None})
        return EXIT_OK
    confirm(output, f"Apply {len(plan.updates)} updates?", args.yes)
    journal = args.journal or f"convai-migrate-{datetime.now():%Y%m%d-%H%M%S}.jsonl"
    output.note(f"journal: {journal} (re-run with --journal {journal} to resume; rollback with it)")
    return await run_bulk(
        output,
        "migrate",
        lambda progress, stop: client.apply(plan, journal, progress, stop=stop),
    )


async def cmd_rollback(client: ConvaiClient, args: argparse.Namespace, output: Output) -> int:
    journal = Path(args.journal)
    if not journal.is_file():
        raise UsageError(f"no such journal: {journal}")
    confirm(
        output, f"Restore what the migration journaled in {journal} may have changed?", args.yes
    )
    return await run_bulk(
        output,
        "rollback",
        lambda progress, stop: client.rollback(
            journal, rollback_journal=args.rollback_journal, on_progress=progress, stop=stop
        ),
    )


async def cmd_models(client: ConvaiClient | None, args: argparse.Namespace, output: Output) -> int:
    rows: list[tuple[object, ...]] = [
        (
            m.code,
            m.display_name,
            m.provider,
            "yes" if m.flagship else "",
            "yes" if m.uncensored else "",
        )
        for m in catalog.models(provider=args.provider, flagship=True if args.flagship else None)
    ]
    if args.custom and client is not None:
        rows += [
            (m.model_group_name, m.display_name, "custom", "", "yes" if m.is_uncensored else "")
            for m in await client.llm_models.list()
        ]
    headers = ("CODE", "NAME", "PROVIDER", "FLAGSHIP", "UNCENSORED")
    output.result(table(headers, rows), [dict(zip(headers, row, strict=True)) for row in rows])
    return EXIT_OK


def _plain(value: Any) -> Any:
    return {k: v for k, v in attrs.asdict(value).items() if k != "raw"}


async def cmd_llm(client: ConvaiClient, args: argparse.Namespace, output: Output) -> int:
    models = client.llm_models
    if args.llm_command == "list":
        found = await models.list()
        rows = [
            (m.model_group_name, m.model_name, m.display_name, m.base_url, m.is_uncensored)
            for m in found
        ]
        headers = ("GROUP", "MODEL", "DISPLAY NAME", "BASE URL", "UNCENSORED")
        output.result(table(headers, rows), [_plain(m) for m in found])
    elif args.llm_command == "register":
        secret = llm_secret(args, required=True)
        registered = await models.register(
            model_group_name=args.group,
            model_name=args.model_name,
            api_key=secret or "",
            is_uncensored=args.uncensored,
            display_name=args.display_name,
            base_url=args.llm_base_url,
        )
        output.result(f"registered {registered.model_group_name}", _plain(registered))
    elif args.llm_command == "update":
        updated = await models.update(
            args.group,
            display_name=args.display_name,
            base_url=args.llm_base_url,
            api_key=llm_secret(args, required=False),
            is_uncensored=args.uncensored,
        )
        output.result(f"updated {', '.join(updated.updated_fields)}", _plain(updated))
    else:
        confirm(
            output, f"Deregister {args.group}? Characters using it will stop working.", args.yes
        )
        deregistered = await models.deregister(args.group)
        output.result(f"deregistered {args.group}", _plain(deregistered))
    return EXIT_OK


async def cmd_demo(args: argparse.Namespace, output: Output) -> int:
    """A migration gpt-4o -> gpt-4.1 on an embedded FakeConvai under realistic conditions."""
    from ..testing import FakeConvai, Faults

    faults = Faults(
        latency=(0.03, 0.08),
        rate_limit=300.0,
        burst=30,
        server_error_ratio=0.01,
        drop_before_ratio=0.01,
        drop_after_ratio=0.01,
    )
    async with FakeConvai(characters=args.characters, faults=faults, record=False) as fake:
        output.note(
            f"FakeConvai at {fake.url}: {args.characters} characters, 30-80 ms latency, "
            "300 rps limit (429 + Retry-After), 3% transient faults"
        )
        async with ConvaiClient(
            api_key=fake.api_key, base_url=fake.url, max_concurrency=args.concurrency
        ) as client:
            before = {c.char_id: c for c in await client.characters.list()}
            plan = await client.plan_migration(
                to_model="gpt-4.1", from_model="gpt-4o", temperature=0.4
            )
            output.note(plan.summary())
            with tempfile.TemporaryDirectory() as folder:
                journal = os.path.join(folder, "demo-migration.jsonl")
                code = await run_bulk(
                    output,
                    "migrate",
                    lambda progress, stop: client.apply(plan, journal, progress, stop=stop),
                )
            after = {c.char_id: c for c in await client.characters.list()}
    wrong = [
        char_id
        for char_id, old in before.items()
        if (after[char_id].model, after[char_id].temperature)
        != (("gpt-4.1", 0.4) if old.model == "gpt-4o" else (old.model, old.temperature))
    ]
    if wrong:
        output.error(f"verification failed for {len(wrong)} characters, e.g. {wrong[0]}")
        return EXIT_FAILED
    output.note(
        f"verified: all {len(plan.updates)} gpt-4o characters now on gpt-4.1, the rest untouched"
    )
    return code


# -- argument parsing -----------------------------------------------------------------------------


def temperature_arg(value: str) -> float:
    try:
        return check.temperature("temperature", float(value))
    except (ValueError, ValidationError) as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def positive_arg(kind: type) -> Callable[[str], Any]:
    def parse(value: str) -> Any:
        try:
            number = kind(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{value!r} is not a number") from None
        if number <= 0:
            raise argparse.ArgumentTypeError(f"must be above 0, got {value}")
        return number

    return parse


def global_options(*, suppress_defaults: bool) -> argparse.ArgumentParser:
    """The global options. Subcommands repeat them (so they may follow the subcommand) with
    defaults suppressed, so that a value given before the subcommand is not reset."""
    common = argparse.ArgumentParser(add_help=False)
    group = common.add_argument_group("connection and output")

    def default(value: Any) -> Any:
        return argparse.SUPPRESS if suppress_defaults else value

    group.add_argument(
        "--api-key",
        default=default(None),
        help=f"Convai API key (default: ${API_KEY_ENV}; prefer the environment)",
    )
    group.add_argument(
        "--base-url",
        default=default(DEFAULT_BASE_URL),
        help=f"API base URL (default: {DEFAULT_BASE_URL})",
    )
    group.add_argument(
        "--concurrency",
        type=positive_arg(int),
        default=default(16),
        help="requests in flight (default: 16)",
    )
    group.add_argument(
        "--rps", type=positive_arg(float), default=default(None), help="requests per second cap"
    )
    group.add_argument(
        "--timeout",
        type=positive_arg(float),
        default=default(30.0),
        help="seconds per attempt (default: 30)",
    )
    group.add_argument(
        "--max-retries", type=int, default=default(5), help="retries per request (default: 5)"
    )
    group.add_argument(
        "--json",
        action="store_true",
        default=default(False),
        help="print one JSON document on stdout",
    )
    group.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        default=default(False),
        help="no progress or notes on stderr",
    )
    group.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        default=default(False),
        help="log each attempt on stderr",
    )
    return common


def build_parser() -> argparse.ArgumentParser:
    common = global_options(suppress_defaults=True)
    parser = argparse.ArgumentParser(
        prog="convai-async",
        description="Update Convai characters' LLM settings and manage custom LLMs, in bulk.",
        parents=[global_options(suppress_defaults=False)],
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        return commands.add_parser(name, help=help_text, description=help_text, parents=[common])

    for name, what in (("set-model", "model"), ("set-temperature", "temperature")):
        sub = command(name, f"set the {what} of many characters (a bulk update)")
        sub.add_argument("char_ids", nargs="*", metavar="CHAR_ID")
        sub.add_argument(
            "--from-file", metavar="PATH", help="one character ID per line; - for stdin"
        )
        if what == "model":
            sub.add_argument(
                "--model", required=True, metavar="CODE", help="model code or custom group name"
            )
        else:
            sub.add_argument("--temperature", required=True, type=temperature_arg, metavar="T")
        sub.add_argument(
            "--journal", metavar="PATH", help="JSONL journal; re-run with it to resume"
        )

    sub = command("update", "apply a CSV of updates (columns char_id, model, temperature)")
    sub.add_argument("--csv", required=True, metavar="PATH", help="the CSV file; - for stdin")
    sub.add_argument("--journal", metavar="PATH", help="JSONL journal; re-run with it to resume")

    sub = command("get", "show one character")
    sub.add_argument("char_id", metavar="CHAR_ID")

    sub = command("list", "list characters (id, name, model, temperature)")
    sub.add_argument("--model", metavar="CODE", help="only characters on this model")

    sub = command("migrate", "move characters to another model (plan, confirm, apply, journal)")
    sub.add_argument("--to-model", required=True, metavar="CODE")
    sub.add_argument("--from-model", metavar="CODE", help="only characters now on this model")
    sub.add_argument(
        "--temperature", type=temperature_arg, metavar="T", help="also set this temperature"
    )
    sub.add_argument("--where-name", metavar="REGEX", help="only characters whose name matches")
    sub.add_argument("--dry-run", action="store_true", help="show the plan; send no update")
    sub.add_argument(
        "--journal", metavar="PATH", help="journal to write (default: a new file here)"
    )
    sub.add_argument(
        "--allow-unknown-model", action="store_true", help="skip the target model check"
    )
    sub.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation")

    sub = command("rollback", "restore the values a migration journal recorded before its changes")
    sub.add_argument("--journal", required=True, metavar="PATH")
    sub.add_argument("--rollback-journal", metavar="PATH", help="journal of the rollback itself")
    sub.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation")

    sub = command("models", "the built-in model catalog")
    sub.add_argument("--custom", action="store_true", help="add the registered custom LLMs")
    sub.add_argument("--provider", help="only this provider (OpenAI, Anthropic, Google, Llama)")
    sub.add_argument("--flagship", action="store_true", help="only flagship models")

    llm = command("llm", "custom LLMs: register, update, deregister, list")
    llm_commands = llm.add_subparsers(dest="llm_command", required=True, metavar="ACTION")
    llm_commands.add_parser("list", help="list registered custom LLMs", parents=[common])
    for action in ("register", "update", "deregister"):
        sub = llm_commands.add_parser(action, help=f"{action} a custom LLM", parents=[common])
        sub.add_argument("--group", required=True, metavar="NAME", help="model_group_name")
        if action == "deregister":
            sub.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation")
            continue
        if action == "register":
            sub.add_argument("--model-name", required=True, metavar="NAME")
        sub.add_argument("--display-name", metavar="LABEL")
        sub.add_argument("--llm-base-url", metavar="URL", help="OpenAI-compatible endpoint")
        flag = sub.add_mutually_exclusive_group()
        default = False if action == "register" else None
        flag.add_argument("--uncensored", dest="uncensored", action="store_true", default=default)
        flag.add_argument("--censored", dest="uncensored", action="store_false")
        sub.add_argument("--llm-api-key-env", metavar="VAR", help="read the LLM's key from $VAR")
        sub.add_argument(
            "--llm-api-key-stdin", action="store_true", help="read the LLM's key from stdin"
        )

    sub = command("demo", "a fleet migration on an embedded fake server (no key, no network)")
    sub.add_argument("--characters", type=positive_arg(int), default=5000)
    return parser


COMMANDS: dict[str, Callable[[ConvaiClient, argparse.Namespace, Output], Awaitable[int]]] = {
    "set-model": cmd_set_model,
    "set-temperature": cmd_set_temperature,
    "update": cmd_update,
    "get": cmd_get,
    "list": cmd_list,
    "migrate": cmd_migrate,
    "rollback": cmd_rollback,
    "models": cmd_models,
    "llm": cmd_llm,
}


async def run(args: argparse.Namespace, output: Output) -> int:
    if args.command == "demo":
        return await cmd_demo(args, output)
    if args.command == "models" and not args.custom:
        return await cmd_models(None, args, output)
    client = ConvaiClient(
        api_key=args.api_key,
        base_url=args.base_url,
        timeout=args.timeout,
        max_retries=args.max_retries,
        max_concurrency=args.concurrency,
        requests_per_second=args.rps,
    )
    async with client:
        return await COMMANDS[args.command](client, args, output)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    output = Output(json=args.json, quiet=args.quiet)
    if args.verbose:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        logger = logging.getLogger("convai_async")
        logger.addHandler(handler)
        logger.setLevel(logging.DEBUG)
    try:
        return asyncio.run(run(args, output))
    except Interrupted as interrupted:
        report = interrupted.report
        done = report.total if report else 0
        output.error(f"interrupted after {done} items; the requests in flight finished")
        if report is not None and report.journal:
            output.error(f"resume: run the same command again with --journal {report.journal}")
        else:
            output.error("no journal was kept; pass --journal PATH to make runs resumable")
        return EXIT_INTERRUPTED
    except KeyboardInterrupt:
        output.error("interrupted")
        return EXIT_INTERRUPTED
    except (UsageError, ConvaiError) as error:
        output.error(str(error))
        return exit_code_for(error)
    except asyncio.CancelledError:
        output.error("interrupted")
        return EXIT_INTERRUPTED
    except Exception as error:  # noqa: BLE001 - a bug: one line; the traceback only with -v
        if args.verbose:
            traceback.print_exc(file=output.stderr)
        output.error(f"internal error: {type(error).__name__}: {error} (-v shows the traceback)")
        return EXIT_FAILED
