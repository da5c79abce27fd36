"""The command line's pure parts, in process: CSV reading, the grammar and help, error messages."""

from __future__ import annotations

import argparse
import io
from pathlib import Path
from typing import Any

import pytest

from convai_async import ClientStats, ValidationError
from convai_async.cli import main
from convai_async.cli.exits import CommandLineError, UsageError
from convai_async.cli.inputs import csv_updates, open_text
from convai_async.cli.output import error_message
from convai_async.cli.parser import build_parser
from convai_async.cli.progress import waiting_status


def read(text: str) -> list[tuple[str, str | None, float | None]]:
    return [(u.char_id, u.model, u.temperature) for u in csv_updates(io.StringIO(text), "x.csv")]


@pytest.mark.parametrize(
    "sheet",
    [
        "char_id,model,temperature\r\na,gpt-4.1,0.5\r\nb,,0.25\r\n",
        "CHAR_ID;Model;TEMPERATURE\r\na;gpt-4.1;0,5\r\nb;;0,25\r\n",  # Excel in a comma locale
        "Char ID\tMODEL\tTemperature\na\tgpt-4.1\t0.5\nb\t\t0.25\n\n",
    ],
)
def test_csv_separators_and_header_case(sheet: str) -> None:
    assert read(sheet) == [("a", "gpt-4.1", 0.5), ("b", None, 0.25)]


def test_csv_with_a_bom_from_a_file(tmp_path: Path) -> None:
    path = tmp_path / "excel.csv"
    path.write_bytes("\ufeffchar_id;model\r\na;gpt-4.1\r\n".encode())
    with open_text(str(path)) as file:
        assert [(u.char_id, u.model) for u in csv_updates(file, "excel.csv")] == [("a", "gpt-4.1")]


def test_csv_missing_columns_says_what_was_found() -> None:
    with pytest.raises(UsageError, match=r"found columns: ID, Modell$"):
        read("ID;Modell\na;gpt-4.1\n")


def test_csv_row_with_an_extra_field_names_its_line() -> None:
    with pytest.raises(UsageError, match=r"^x\.csv:3: 4 fields, but the header has 3 columns"):
        read("char_id,model,temperature\na,gpt-4.1,0.5\nb,gpt-4.1,0.5,oops\n")


def test_csv_bad_value_names_line_and_column() -> None:
    with pytest.raises(UsageError, match=r"^x\.csv:2: column temperature: must be in \[0, 1\]"):
        read("char_id,temperature\na,7\n")


def subcommands(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                found += [sub, *subcommands(sub)]
    return found


def test_every_command_documents_its_arguments_examples_and_exit_codes() -> None:
    parser = build_parser()
    commands = subcommands(parser)
    assert len(commands) >= 14  # 10 commands and 4 llm actions
    for command in [parser, *commands]:
        assert command.description, command.prog
        for action in command._actions:
            assert action.help, f"{command.prog}: {action.dest} has no help"
        help_text = command.format_help()
        assert "examples:" in help_text, command.prog
        assert "exit codes:" in help_text, command.prog


def test_parse_errors_are_raised_for_one_line() -> None:
    with pytest.raises(CommandLineError) as caught:
        build_parser().parse_args(["set-temperature", "c1", "--temperature", "1.5"])
    assert caught.value.prog == "convai-async set-temperature"
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("error", "message"),
    [
        (
            ValidationError("to_model", "unknown (pass allow_unknown_model=True to use it)"),
            "--to-model: unknown (pass --allow-unknown-model to use it)",
        ),
        (
            ValidationError("update", "give at least one of display_name, base_url"),
            "update: give at least one of --display-name, --base-url",
        ),
        (
            ValidationError("max_concurrency", "must be at least 1"),
            "--concurrency: must be at least 1",
        ),
    ],
)
def test_error_messages_name_flags(error: ValidationError, message: str) -> None:
    assert error_message(error) == message


@pytest.mark.parametrize(
    "args",
    [
        ("set-temperature", "c1", "--temperature", "1.5"),
        ("set-temperature", "c1", "--temperature", "warm"),
        ("set-model", "--model", "gpt-4.1"),
        ("set-model", "--from-file", "/nonexistent/ids.txt", "--model", "gpt-4.1"),
        ("set-model", "c1"),
        ("migrate", "--to-model", "gpt-4.1", "--where-name", "(unclosed", "--yes"),
        ("--concurrency", "0", "list"),
        ("set-model", "c1", "--model", "gpt-4.1", "--json-lines", "--json"),
    ],
)
def test_bad_input_is_one_line_and_exit_2_before_any_request(
    args: tuple[str, ...], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONVAI_API_KEY", "some-key")
    monkeypatch.setenv("CONVAI_BASE_URL", "http://127.0.0.1:9")  # a request would exit 1
    assert main(list(args)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert err.startswith("convai-async")


def stats(**changes: Any) -> ClientStats:
    idle: dict[str, Any] = dict(
        requests=0, succeeded=0, failed=0, retries=0, rate_limited=0, in_flight=0,
        effective_concurrency=16, effective_rate=None, paused_for=0.0, retry_budget_left=500,
    )  # fmt: skip
    return ClientStats(**{**idle, **changes})


def test_waits_are_put_into_words() -> None:
    assert waiting_status(stats(), silent_for=60.0) is None
    assert waiting_status(stats(in_flight=4), silent_for=1.0) is None
    assert waiting_status(stats(paused_for=2.04), silent_for=0.0) == (
        "waiting 2.0 s: the server asked (Retry-After)"
    )
    assert waiting_status(stats(in_flight=4), silent_for=12.0) == (
        "no answer for 12 s (4 requests in flight)"
    )
