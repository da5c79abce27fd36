"""The exact command lines the CLI prints to resume or undo a run, built from the parsed flags.

A printed command, run as printed from the same directory and environment, does what it says:
it repeats every setting the user gave (the server, the limits, the output format) and names
the journals. The API key is never part of it: it comes from ``$CONVAI_API_KEY`` (a key given
with ``--api-key`` is named as missing instead of being printed).
"""

from __future__ import annotations

import argparse
import os
import shlex
from collections.abc import Iterator

from ..defaults import API_KEY_ENV, BASE_URL_ENV, DEFAULT_BASE_URL, REDIS_URL_ENV

__all__ = ["KEY_NOTE", "migrate_command", "needs_key_note", "rollback_command"]

PROGRAM = "convai-async"
# global options carried over when set: attribute -> flag (the key never is)
VALUE_FLAGS = {
    "concurrency": "--concurrency",
    "rps": "--rps",
    "timeout": "--timeout",
    "max_retries": "--max-retries",
    "rate_limit_patience": "--rate-limit-patience",
}
SWITCHES = {
    "allow_insecure_http": "--allow-insecure-http",
    "json": "--json",
    "json_lines": "--json-lines",
    "quiet": "-q",
    "verbose": "-v",
}
KEY_NOTE = f"with the key in ${API_KEY_ENV}"


def _number(value: float) -> str:
    return repr(value) if isinstance(value, float) else str(value)


def _global_flags(args: argparse.Namespace) -> Iterator[str]:
    """The global options the user set (those read from the environment need no flag)."""
    if args.base_url != os.environ.get(BASE_URL_ENV, DEFAULT_BASE_URL):
        yield from ("--base-url", args.base_url)
    redis_url = getattr(args, "redis_url", None)
    if redis_url is not None and redis_url != os.environ.get(REDIS_URL_ENV):
        yield from ("--redis-url", redis_url)
    for name, flag in VALUE_FLAGS.items():
        value = getattr(args, name, None)
        if value is not None:
            yield from (flag, _number(value))
    for name, flag in SWITCHES.items():
        if getattr(args, name, False):
            yield flag


def needs_key_note(args: argparse.Namespace) -> bool:
    """Whether the key came from --api-key (the printed command cannot carry it)."""
    return args.api_key is not None and args.api_key != os.environ.get(API_KEY_ENV)


def migrate_command(args: argparse.Namespace, journal: str | os.PathLike[str]) -> str:
    """``migrate`` with the same plan arguments and ``--journal``: resumes the recorded plan."""
    words = [PROGRAM, "migrate", "--to-model", args.to_model]
    if args.from_model is not None:
        words += ["--from-model", args.from_model]
    if args.temperature is not None:
        words += ["--temperature", _number(args.temperature)]
    if args.where_name:
        words += ["--where-name", args.where_name]
    if args.allow_unknown_model:
        words.append("--allow-unknown-model")
    words += ["--journal", os.fspath(journal)]
    if args.yes:
        words.append("--yes")
    return shlex.join([*words, *_global_flags(args)])


def rollback_command(
    args: argparse.Namespace,
    journal: str | os.PathLike[str],
    *,
    rollback_journal: str | os.PathLike[str] | None,
    force: bool,
    yes: bool,
) -> str:
    """``rollback`` of ``journal``: with the same ``rollback_journal`` and ``force`` it resumes
    that rollback (a rollback journal resumes only with the ``--force`` it started with)."""
    words = [PROGRAM, "rollback", "--journal", os.fspath(journal)]
    if rollback_journal is not None:
        words += ["--rollback-journal", os.fspath(rollback_journal)]
    if force:
        words.append("--force")
    if yes:
        words.append("--yes")
    return shlex.join([*words, *_global_flags(args)])
