"""The command line's grammar: every command, flag, help text, example and environment variable.

Defaults are the library's named constants (``convai_async.defaults``), never repeated here. A
parse error raises :class:`CommandLineError`, which ``main`` prints as one line with a hint.
"""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Callable
from typing import Any, NoReturn

from .. import CharacterUpdate, ValidationError, __version__
from ..defaults import (
    API_KEY_ENV,
    BASE_URL_ENV,
    DEFAULT_BASE_URL,
    DEFAULT_MAX_CONCURRENCY,
    DEFAULT_MAX_RETRIES,
    DEFAULT_RATE_LIMIT_PATIENCE,
    DEFAULT_TIMEOUT,
    REDIS_URL_ENV,
)
from .exits import EXIT_CODES_HELP, CommandLineError

__all__ = ["ENVIRONMENT", "build_parser"]

# Every environment variable the command line reads (the README's table comes from here).
ENVIRONMENT = {
    API_KEY_ENV: "the Convai API key (--api-key overrides it; prefer the variable)",
    BASE_URL_ENV: f"the API base URL (--base-url overrides it; default {DEFAULT_BASE_URL})",
    REDIS_URL_ENV: "a Redis URL to share the rate limit between processes (--redis-url)",
}


class CliParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are raised, to be printed as one line by ``main``."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(**kwargs)

    def error(self, message: str) -> NoReturn:
        raise CommandLineError(message, self.prog)


def temperature_arg(value: str) -> float:
    """A temperature, checked by the library's own rule (a real number in [0, 1])."""
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number") from None
    try:
        CharacterUpdate("-", temperature=number)
    except ValidationError as error:
        raise argparse.ArgumentTypeError(error.problem) from None
    return number


def number_arg(kind: type[int] | type[float], *, minimum: float = 0.0) -> Callable[[str], Any]:
    """A number above ``minimum`` (at least it, for whole numbers)."""

    def parse(value: str) -> Any:
        try:
            number = kind(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{value!r} is not a number") from None
        if kind is int and number < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum:g}, got {value}")
        if kind is float and not (math.isfinite(number) and number > minimum):
            raise argparse.ArgumentTypeError(f"must be above {minimum:g}, got {value}")
        return number

    return parse


def global_options(*, suppress_defaults: bool) -> CliParser:
    """The global options. Subcommands repeat them (so they may follow the subcommand) with
    defaults suppressed, so that a value given before the subcommand is not reset."""
    common = CliParser(add_help=False)
    group = common.add_argument_group("connection and output (before or after the command)")

    def default(value: Any) -> Any:
        return argparse.SUPPRESS if suppress_defaults else value

    def option(*flags: str, value: Any = None, **kwargs: Any) -> None:
        group.add_argument(*flags, default=default(value), **kwargs)

    option("--api-key", metavar="KEY", help=f"Convai API key (default: ${API_KEY_ENV}; prefer it)")
    option(
        "--base-url",
        value=os.environ.get(BASE_URL_ENV, DEFAULT_BASE_URL),
        metavar="URL",
        help=f"API base URL (default: ${BASE_URL_ENV}, else {DEFAULT_BASE_URL})",
    )
    option(
        "--allow-insecure-http",
        value=False,
        action="store_true",
        help="allow a plain http:// base URL to a non-loopback host (sends the key in clear)",
    )
    option(
        "--concurrency",
        type=number_arg(int, minimum=1),
        metavar="N",
        help=f"requests in flight at most (default: {DEFAULT_MAX_CONCURRENCY})",
    )
    option(
        "--rps",
        type=number_arg(float),
        metavar="RATE",
        help="requests per second at most (default: none; 429s are discovered and obeyed)",
    )
    option(
        "--timeout",
        type=number_arg(float),
        metavar="SECONDS",
        help=f"seconds per attempt (default: {DEFAULT_TIMEOUT:g})",
    )
    option(
        "--max-retries",
        type=number_arg(int, minimum=0),
        metavar="N",
        help=f"retries per request (default: {DEFAULT_MAX_RETRIES})",
    )
    option(
        "--redis-url",
        value=os.environ.get(REDIS_URL_ENV),
        metavar="URL",
        help=f"share the rate limit through Redis (default: ${REDIS_URL_ENV}; none)",
    )
    option(
        "--rate-limit-patience",
        type=number_arg(float),
        metavar="SECONDS",
        help="seconds of nothing but 429s before calls give up "
        f"(default: {DEFAULT_RATE_LIMIT_PATIENCE:g})",
    )
    option("--json", value=False, action="store_true", help="print one JSON document on stdout")
    option("-q", "--quiet", value=False, action="store_true", help="no progress or notes")
    option("-v", "--verbose", value=False, action="store_true", help="log each attempt")
    return common


def _epilog(*examples: str) -> str:
    lines = "\n".join(f"  {example}" for example in examples)
    return f"examples:\n{lines}\n\n{EXIT_CODES_HELP}"


JOURNAL_HELP = "JSONL journal of each item; run the same command again with it to resume"
JSON_LINES_HELP = "print each item's outcome as a JSON line as it finishes, then the report"


def _bulk_arguments(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("--journal", metavar="PATH", help=JOURNAL_HELP)
    sub.add_argument("--json-lines", action="store_true", help=JSON_LINES_HELP)


def _ids_arguments(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("char_ids", nargs="*", metavar="CHAR_ID", help="character IDs to update")
    sub.add_argument("--from-file", metavar="PATH", help="one character ID per line; - for stdin")


def _unknown_model_argument(sub: argparse.ArgumentParser) -> None:
    sub.add_argument(
        "--allow-unknown-model",
        action="store_true",
        help="accept a model code that is neither built in nor a registered custom LLM",
    )


def _subcommands(
    parser: argparse.ArgumentParser, dest: str, usage: str, common: CliParser
) -> Callable[..., argparse.ArgumentParser]:
    """A function adding one subcommand (help, description, examples, the global options)."""
    subparsers = parser.add_subparsers(
        dest=dest,
        required=True,
        metavar=usage.rsplit(" ", 1)[-1],
        help=f"run `{usage} --help` for its options and examples",
    )

    def add(name: str, help_text: str, *examples: str) -> argparse.ArgumentParser:
        return subparsers.add_parser(
            name, help=help_text, description=help_text, epilog=_epilog(*examples), parents=[common]
        )

    return add


def build_parser() -> CliParser:
    common = global_options(suppress_defaults=True)
    parser = CliParser(
        prog="convai-async",
        description="Update Convai characters' LLM settings and manage custom LLMs, in bulk.",
        epilog=_epilog(
            "convai-async list --model gpt-4o",
            "convai-async migrate --from-model gpt-4o --to-model gpt-4.1 --dry-run",
            "convai-async demo",
        )
        + "\n\nenvironment:\n"
        + "\n".join(f"  {name:<18} {what}" for name, what in ENVIRONMENT.items()),
        parents=[global_options(suppress_defaults=False)],
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    command = _subcommands(parser, "command", "convai-async COMMAND", common)

    sub = command(
        "set-model",
        "set the model of many characters (a bulk update)",
        "convai-async set-model ID1 ID2 --model gpt-4.1",
        "convai-async set-model --from-file ids.txt --model gpt-4.1 --journal move.jsonl",
    )
    _ids_arguments(sub)
    sub.add_argument(
        "--model", required=True, metavar="CODE", help="model code or custom LLM group name"
    )
    _unknown_model_argument(sub)
    _bulk_arguments(sub)

    sub = command(
        "set-temperature",
        "set the temperature of many characters (a bulk update)",
        "convai-async set-temperature ID1 ID2 --temperature 0.4",
        "cut -d, -f1 fleet.csv | convai-async set-temperature --from-file - --temperature 0.4",
    )
    _ids_arguments(sub)
    sub.add_argument(
        "--temperature", required=True, type=temperature_arg, metavar="T", help="0 to 1"
    )
    _bulk_arguments(sub)

    sub = command(
        "update",
        "apply a CSV of updates: a char_id column, and model and/or temperature columns",
        "convai-async update --csv changes.csv --journal changes.jsonl",
        "convai-async update --csv - --json-lines < changes.csv",
    )
    sub.add_argument(
        "--csv",
        required=True,
        metavar="PATH",
        help="the CSV (',' ';' or tab separated, UTF-8 with or without BOM); - for stdin",
    )
    _unknown_model_argument(sub)
    _bulk_arguments(sub)

    sub = command("get", "show one character", "convai-async get ID1 --json")
    sub.add_argument("char_id", metavar="CHAR_ID", help="the character's ID")

    sub = command(
        "list",
        "list characters (id, name, model, temperature)",
        "convai-async list --model gpt-4o",
        "convai-async list --json | jq -r '.characters[].char_id'",
    )
    sub.add_argument("--model", metavar="CODE", help="only characters on this model")

    sub = command(
        "migrate",
        "move characters to another model: plan, confirm, apply, journal",
        "convai-async migrate --from-model gpt-4o --to-model gpt-4.1 --dry-run",
        "convai-async migrate --to-model gpt-4.1 --temperature 0.4 --where-name '^Shop' --yes",
    )
    sub.add_argument("--to-model", required=True, metavar="CODE", help="the model to move to")
    sub.add_argument("--from-model", metavar="CODE", help="only characters now on this model")
    sub.add_argument(
        "--temperature", type=temperature_arg, metavar="T", help="also set this temperature"
    )
    sub.add_argument("--where-name", metavar="REGEX", help="only characters whose name matches")
    sub.add_argument("--dry-run", action="store_true", help="show the plan; send no update")
    sub.add_argument(
        "--journal",
        metavar="PATH",
        help="journal to write or resume (default: a new file in this directory)",
    )
    _unknown_model_argument(sub)
    sub.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation")

    sub = command(
        "rollback",
        "restore the values a migration journal recorded before its changes",
        "convai-async rollback --journal convai-migrate-20250101-120000.jsonl",
    )
    sub.add_argument("--journal", required=True, metavar="PATH", help="the migration's journal")
    sub.add_argument("--rollback-journal", metavar="PATH", help="journal of the rollback itself")
    sub.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation")

    sub = command(
        "models",
        "the built-in model catalog (and your custom LLMs with --custom)",
        "convai-async models --provider google",
        "convai-async models --custom --json",
    )
    sub.add_argument("--custom", action="store_true", help="add the registered custom LLMs")
    sub.add_argument("--provider", help="only this provider (OpenAI, Anthropic, Google, Llama)")
    sub.add_argument("--flagship", action="store_true", help="only flagship models")

    _llm_commands(
        command(
            "llm",
            "custom LLMs: list, register, update, deregister",
            "convai-async llm list",
            "convai-async llm register --group my-llm --model-name gpt-4o-mini "
            "--llm-api-key-env MY_LLM_KEY",
        ),
        common,
    )

    sub = command(
        "demo",
        "a fleet migration and its rollback on an embedded fake server (no key, no network)",
        "convai-async demo",
        "convai-async demo --characters 500 --journal-dir /tmp",
    )
    sub.add_argument(
        "--characters", type=number_arg(int, minimum=1), metavar="N", help="fleet size"
    )
    sub.add_argument(
        "--journal-dir", metavar="DIR", help="where the journals go (default: this directory)"
    )
    return parser


def _llm_commands(llm: argparse.ArgumentParser, common: CliParser) -> None:
    action = _subcommands(llm, "llm_command", "convai-async llm ACTION", common)

    action("list", "list the registered custom LLMs", "convai-async llm list --json")
    register = action(
        "register",
        "register a custom LLM (an OpenAI-compatible endpoint) under a group name",
        "MY_LLM_KEY=sk-... convai-async llm register --group my-llm --model-name gpt-4o-mini "
        "--llm-api-key-env MY_LLM_KEY",
    )
    update = action(
        "update",
        "change a custom LLM's display name, endpoint, key or uncensored flag",
        "convai-async llm update --group my-llm --display-name 'My LLM v2'",
        "convai-async llm update --group my-llm --llm-api-key-stdin < key.txt",
    )
    deregister = action(
        "deregister",
        "remove a custom LLM (refused while characters use it, unless --force)",
        "convai-async llm deregister --group my-llm",
    )
    for sub in (register, update, deregister):
        sub.add_argument("--group", required=True, metavar="NAME", help="the model group name")
    deregister.add_argument(
        "--force", action="store_true", help="remove it even if characters still use it"
    )
    deregister.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation")
    register.add_argument(
        "--model-name", required=True, metavar="NAME", help="the model name at the endpoint"
    )
    for sub in (register, update):
        sub.add_argument("--display-name", metavar="LABEL", help="the name shown in Convai")
        sub.add_argument("--llm-base-url", metavar="URL", help="the OpenAI-compatible endpoint")
        flag = sub.add_mutually_exclusive_group()
        flag.add_argument(
            "--uncensored",
            dest="uncensored",
            action="store_true",
            default=False if sub is register else None,
            help="mark the model uncensored",
        )
        flag.add_argument(
            "--censored", dest="uncensored", action="store_false", help="mark it censored"
        )
        sub.add_argument("--llm-api-key-env", metavar="VAR", help="read the LLM's key from $VAR")
        sub.add_argument(
            "--llm-api-key-stdin", action="store_true", help="read the LLM's key from stdin"
        )
