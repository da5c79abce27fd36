"""The ``convai-async`` command line: parse, build one client, run one command, map the outcome.

A thin shell over the public library API. Results go to stdout (a table, ``--json`` documents
or ``--json-lines``), progress and messages to stderr; the exit codes are in ``exits``. The
modules: ``parser`` (grammar and help), ``commands``, ``running`` (bulk runs and signals),
``progress`` (live feedback), ``inputs`` (files, CSV, secrets, prompts), ``output`` and
``documents`` (what is printed), ``demo``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
import traceback
from collections.abc import Sequence
from typing import Any

from .. import ConvaiClient, ConvaiError
from .commands import COMMANDS, cmd_models
from .demo import cmd_demo
from .exits import (
    EXIT_BROKEN_PIPE,
    EXIT_FAILED,
    EXIT_OK,
    CommandLineError,
    InternalError,
    Interrupted,
    UsageError,
    exit_code_for,
)
from .output import Mode, Output
from .parser import build_parser
from .progress import Feedback

__all__ = ["main"]

# global options passed to ConvaiClient only when given, so the library's defaults apply
CLIENT_OPTIONS = {
    "api_key": "api_key",
    "base_url": "base_url",
    "timeout": "timeout",
    "max_retries": "max_retries",
    "concurrency": "max_concurrency",
    "rps": "requests_per_second",
    "rate_limit_patience": "rate_limit_patience",
    "redis_url": "redis_url",
}


def make_client(args: argparse.Namespace) -> ConvaiClient:
    options: dict[str, Any] = {
        parameter: getattr(args, name)
        for name, parameter in CLIENT_OPTIONS.items()
        if getattr(args, name) is not None
    }
    options["allow_insecure_http"] = args.allow_insecure_http
    return ConvaiClient(**options)


async def run(args: argparse.Namespace, output: Output) -> int:
    if args.command == "demo":
        if output.machine:
            raise UsageError("demo: --json is not supported; it narrates on stderr")
        return await cmd_demo(args, output)
    if args.command == "models" and not args.custom:
        return await cmd_models(None, args, output)
    async with make_client(args) as client, Feedback(output, args.command, client):
        return await COMMANDS[args.command](client, args, output)


def _verbose() -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logger = logging.getLogger("convai_async")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)


def _resume_hint(stop: Interrupted) -> str | None:
    if stop.report is None or stop.resume is not None:
        return None  # the exact command, when there is one, gets a line of its own
    if stop.report.journal:
        return f"resume: run the same command again with --journal {stop.report.journal}"
    return "no journal was kept; pass --journal PATH to make runs resumable"


def _mode(json: bool, json_lines: bool) -> Mode:
    return Mode.JSON_LINES if json_lines else Mode.JSON if json else Mode.TEXT


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (see ``exits``)."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    try:
        args = build_parser().parse_args(arguments)
    except CommandLineError as error:  # the flags were not parsed: look for them by hand
        output = Output(mode=_mode("--json" in arguments, "--json-lines" in arguments))
        output.error(error, exit_code_for(error), hint=f"try: {error.prog} --help")
        return exit_code_for(error)
    output = Output(mode=_mode(args.json, getattr(args, "json_lines", False)), quiet=args.quiet)
    if args.verbose:
        _verbose()
    code = _run(args, output)
    if output.stdout_closed and code == EXIT_OK:
        return EXIT_BROKEN_PIPE
    return code


def _run(args: argparse.Namespace, output: Output) -> int:
    try:
        if args.json and getattr(args, "json_lines", False):
            raise UsageError("--json and --json-lines: choose one")
        return asyncio.run(run(args, output))
    except Interrupted as stop:
        # a stopped bulk run has printed its report (with "stopped": true) as its result
        output.error(
            stop, exit_code_for(stop), hint=_resume_hint(stop), document=stop.report is None
        )
        if stop.resume is not None:
            output.notice(f"resume: {stop.resume}")
        return exit_code_for(stop)
    except (KeyboardInterrupt, asyncio.CancelledError) as error:
        output.error(Interrupted(signal.SIGINT), exit_code_for(error))
        return exit_code_for(error)
    except (UsageError, ConvaiError) as error:
        output.error(error, exit_code_for(error))
        return exit_code_for(error)
    except Exception as error:  # noqa: BLE001 - a bug: one line; the traceback only with -v
        if args.verbose:
            traceback.print_exc(file=output.stderr)
        internal = InternalError(f"internal error: {type(error).__name__}: {error}")
        output.error(internal, EXIT_FAILED, hint=None if args.verbose else "-v shows more")
        return EXIT_FAILED
