"""The command line, run as a subprocess against FakeConvai in this process."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import Mapping
from pathlib import Path

import attrs
import pytest

from convai_async.bulk.format import Outcome
from convai_async.bulk.journal import read_lines
from convai_async.testing import FakeConvai, Faults

from .conftest import CANARY_KEY, CANARY_LLM_KEY


@attrs.frozen
class Run:
    code: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


async def start(
    *args: str, fake: FakeConvai | None = None, env: Mapping[str, str] | None = None
) -> asyncio.subprocess.Process:
    environment = {**os.environ, "CONVAI_API_KEY": CANARY_KEY, **(env or {})}
    base = ["--base-url", fake.url] if fake is not None else []
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "convai_async",
        *args,
        *base,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=environment,
    )


async def cli(
    *args: str,
    fake: FakeConvai | None = None,
    stdin: str = "",
    env: Mapping[str, str] | None = None,
) -> Run:
    process = await start(*args, fake=fake, env=env)
    out, err = await asyncio.wait_for(process.communicate(stdin.encode()), 120)
    assert process.returncode is not None
    return Run(process.returncode, out.decode(), err.decode())


def updates_sent(fake: FakeConvai) -> int:
    return fake.request_counts["/character/update"]


async def test_set_model_from_arguments(fake: FakeConvai) -> None:
    ids = fake.char_ids[:3]
    run = await cli("set-model", *ids, "--model", "gpt-4.1", fake=fake)
    assert run.code == 0, run.stderr
    assert "3 applied" in run.stdout
    assert all(fake.model_of(c) == "gpt-4.1" for c in ids)


async def test_set_temperature_from_file_and_stdin(fake: FakeConvai, tmp_path: Path) -> None:
    ids_file = tmp_path / "ids.txt"
    ids_file.write_text("\n".join(fake.char_ids[:5]) + "\n\n")
    run = await cli(
        "set-temperature", "--from-file", str(ids_file), "--temperature", "0.33", fake=fake
    )
    assert run.code == 0, run.stderr
    assert all(fake.temperature_of(c) == 0.33 for c in fake.char_ids[:5])
    piped = await cli(
        "set-temperature",
        "--from-file",
        "-",
        "--temperature",
        "0.66",
        "--json",
        fake=fake,
        stdin="\n".join(fake.char_ids[5:8]),
    )
    assert piped.code == 0, piped.stderr
    document = json.loads(piped.stdout)
    assert (document["total"], document["succeeded"], document["failed"]) == (3, 3, 0)


async def test_update_from_csv(fake: FakeConvai, tmp_path: Path) -> None:
    a, b, c = fake.char_ids[:3]
    sheet = tmp_path / "updates.csv"
    sheet.write_text(f"char_id,model,temperature\n{a},gpt-4.1,0.5\n{b},,0.25\n{c},llama-4-scout,\n")
    run = await cli("update", "--csv", str(sheet), "--json", fake=fake)
    assert run.code == 0, run.stderr
    assert json.loads(run.stdout)["succeeded"] == 3
    assert (fake.model_of(a), fake.temperature_of(a)) == ("gpt-4.1", 0.5)
    assert fake.temperature_of(b) == 0.25
    assert fake.model_of(c) == "llama-4-scout"
    assert [r.body for r in fake.requests_to("/character/update") if r.body["charID"] == b] == [
        {"charID": b, "temperature": 0.25}
    ]


async def test_get_and_list(fake: FakeConvai) -> None:
    char_id = fake.char_ids[0]
    run = await cli("get", char_id, fake=fake)
    assert run.code == 0
    assert char_id in run.stdout
    assert fake.model_of(char_id) in run.stdout
    as_json = await cli("get", char_id, "--json", fake=fake)
    assert json.loads(as_json.stdout)["character_id"] == char_id
    listed = await cli("list", "--model", "gpt-4o", "--json", fake=fake)
    on_4o = [c for c in fake.char_ids if fake.model_of(c) == "gpt-4o"]
    assert [c["character_id"] for c in json.loads(listed.stdout)] == on_4o
    table = await cli("list", fake=fake)
    assert table.stdout.splitlines()[0].split() == ["ID", "NAME", "MODEL", "TEMPERATURE"]
    assert len(table.stdout.splitlines()) == 1 + len(fake.char_ids)


async def test_models_catalog() -> None:
    run = await cli("models", "--provider", "google", "--json")
    assert run.code == 0
    codes = [row["CODE"] for row in json.loads(run.stdout)]
    assert codes == [
        "gemini-2.5-flash",
        "gemini-2.5-flash-lite",
        "gemini-2.0-flash",
        "gemma-3n-e4b",
        "gemma-3n-e2b",
    ]
    flagship = await cli("models", "--flagship")
    assert "gpt-4.1 " in flagship.stdout
    assert "gpt-4.1-mini" not in flagship.stdout


async def test_dry_run_sends_no_update(fake: FakeConvai) -> None:
    run = await cli(
        "migrate", "--to-model", "gpt-4.1", "--from-model", "gpt-4o", "--dry-run", fake=fake
    )
    assert run.code == 0, run.stderr
    assert "will change" in run.stdout
    assert "dry run" in run.stdout
    assert updates_sent(fake) == 0


async def test_migrate_refuses_without_yes_when_not_a_terminal(fake: FakeConvai) -> None:
    run = await cli("migrate", "--to-model", "gpt-4.1", fake=fake)
    assert run.code == 2
    assert "--yes" in run.stderr
    assert updates_sent(fake) == 0


async def test_migrate_and_rollback_round_trip(fake: FakeConvai, tmp_path: Path) -> None:
    original = {c: (fake.model_of(c), fake.temperature_of(c)) for c in fake.char_ids}
    journal = tmp_path / "m.jsonl"
    run = await cli(
        "migrate",
        "--to-model",
        "gpt-4.1",
        "--from-model",
        "gpt-4o",
        "--temperature",
        "0.4",
        "--journal",
        str(journal),
        "--yes",
        fake=fake,
    )
    assert run.code == 0, run.stderr
    on_4o = [c for c, (m, _) in original.items() if m == "gpt-4o"]
    assert all((fake.model_of(c), fake.temperature_of(c)) == ("gpt-4.1", 0.4) for c in on_4o)
    assert f"{len(on_4o)} applied" in run.stdout
    back = await cli("rollback", "--journal", str(journal), "--yes", fake=fake)
    assert back.code == 0, back.stderr
    assert {c: (fake.model_of(c), fake.temperature_of(c)) for c in fake.char_ids} == original


async def test_where_name_selects_by_regex(fake: FakeConvai) -> None:
    run = await cli(
        "migrate",
        "--to-model",
        "gpt-4.1",
        "--where-name",
        "^Rafael ",
        "--dry-run",
        "--json",
        fake=fake,
    )
    plan = json.loads(run.stdout)["plan"]
    rafaels = [
        c for c in fake.char_ids if fake.characters[c]["character_name"].startswith("Rafael ")
    ]
    assert plan["selected"] == len(rafaels)


@pytest.mark.parametrize(
    "args",
    [
        ("set-temperature", "c1", "--temperature", "1.5"),
        ("set-temperature", "c1", "--temperature", "warm"),
        ("set-model", "--model", "gpt-4.1"),
        ("set-model", "--from-file", "/nonexistent/ids.txt", "--model", "gpt-4.1"),
        ("set-model", "c1"),
        ("migrate", "--to-model", "gpt-4.1", "--temperature", "-1"),
        ("migrate", "--to-model", "gpt-4.1", "--where-name", "(unclosed", "--yes"),
        ("--concurrency", "0", "list"),
    ],
)
async def test_bad_input_exits_2_with_zero_requests(
    fake: FakeConvai, args: tuple[str, ...]
) -> None:
    run = await cli(*args, fake=fake)
    assert run.code == 2, run.output
    assert "Traceback" not in run.output
    assert fake.requests == [] or all(r.path != "/character/update" for r in fake.requests)
    assert updates_sent(fake) == 0


async def test_bad_csv_row_exits_2_before_any_request(fake: FakeConvai, tmp_path: Path) -> None:
    sheet = tmp_path / "bad.csv"
    sheet.write_text(f"char_id,temperature\n{fake.char_ids[0]},0.5\n{fake.char_ids[1]},7\n")
    run = await cli("update", "--csv", str(sheet), fake=fake)
    assert run.code == 2
    assert "bad.csv:3" in run.stderr
    assert fake.requests == []


async def test_unknown_target_model_exits_2_without_updates(fake: FakeConvai) -> None:
    run = await cli("migrate", "--to-model", "gpt-9", "--yes", fake=fake)
    assert run.code == 2
    assert "allow_unknown_model" in run.stderr
    assert updates_sent(fake) == 0


async def test_wrong_key_gives_one_clean_line_and_exit_3(fake: FakeConvai) -> None:
    run = await cli(
        "set-model",
        *fake.char_ids[:20],
        "--model",
        "gpt-4.1",
        fake=fake,
        env={"CONVAI_API_KEY": "wrong"},
    )
    assert run.code == 3
    assert "ABORTED" in run.stdout
    assert "AuthenticationError" in run.stdout
    single = await cli("get", fake.char_ids[0], fake=fake, env={"CONVAI_API_KEY": "wrong"})
    assert single.code == 3
    assert single.stderr.strip().count("\n") == 0
    assert "Invalid API key provided." in single.stderr
    assert "Traceback" not in single.output


async def test_partial_failure_exits_1(fake: FakeConvai) -> None:
    run = await cli(
        "set-model", fake.char_ids[0], "no-such-character", "--model", "gpt-4.1", fake=fake
    )
    assert run.code == 1
    assert "1 failed" in run.stdout
    assert "no-such-character" in run.stdout


async def test_missing_key_is_a_usage_error() -> None:
    environment = {k: v for k, v in os.environ.items() if k != "CONVAI_API_KEY"}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "convai_async",
        "list",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=environment,
    )
    _, err = await process.communicate()
    assert process.returncode == 2
    assert b"CONVAI_API_KEY" in err


async def test_llm_commands_and_canary_secrets_never_printed(fake: FakeConvai) -> None:
    secret_env = {"MY_LLM_KEY": CANARY_LLM_KEY}
    runs = [
        await cli(
            "-v",
            "llm",
            "register",
            "--group",
            "canary-group",
            "--model-name",
            "gpt-4o-mini",
            "--llm-api-key-env",
            "MY_LLM_KEY",
            "--display-name",
            "Canary",
            fake=fake,
            env=secret_env,
        ),
        await cli("-v", "llm", "list", "--json", fake=fake),
        await cli(
            "-v",
            "llm",
            "update",
            "--group",
            "canary-group",
            "--llm-api-key-stdin",
            fake=fake,
            stdin=CANARY_LLM_KEY + "\n",
        ),
        await cli("-v", "models", "--custom", fake=fake),
        await cli(
            "-v",
            "llm",
            "register",
            "--group",
            "canary-group",
            "--model-name",
            "x",
            "--llm-api-key-env",
            "MY_LLM_KEY",
            fake=fake,
            env=secret_env,
        ),
        await cli("-v", "--api-key", CANARY_KEY, "get", fake.char_ids[0], fake=fake),
        await cli("-v", "get", "no-such-character", fake=fake),
        await cli("-v", "llm", "deregister", "--group", "canary-group", "--yes", fake=fake),
    ]
    assert [r.code for r in runs] == [0, 0, 0, 0, 1, 0, 1, 0]
    assert json.loads(runs[1].stdout)[0]["model_group_name"] == "canary-group"
    assert "canary-group" in runs[3].stdout
    assert "Model group name already exists" in runs[4].stderr
    assert "DEBUG" in runs[5].stderr  # -v really logs each attempt
    for run in runs:
        assert CANARY_KEY not in run.output
        assert CANARY_LLM_KEY not in run.output
    assert fake.requests_to("/llm-models/register")[0].body["api_key"] == CANARY_LLM_KEY
    assert fake.requests_to("/llm-models/update")[0].body["api_key"] == CANARY_LLM_KEY
    assert fake.custom_models == {}


async def test_sigint_mid_run_leaves_a_resumable_journal(tmp_path: Path) -> None:
    async with FakeConvai(
        characters=1500, api_key=CANARY_KEY, faults=Faults(latency=(0.01, 0.02)), record=False
    ) as fake:
        ids_file = tmp_path / "ids.txt"
        ids_file.write_text("\n".join(fake.char_ids))
        journal = tmp_path / "run.jsonl"
        args = (
            "set-temperature",
            "--from-file",
            str(ids_file),
            "--temperature",
            "0.75",
            "--journal",
            str(journal),
            "--concurrency",
            "8",
        )
        process = await start(*args, fake=fake)
        for _ in range(2000):
            await asyncio.sleep(0.01)
            if journal.exists() and journal.read_bytes().count(b'"k":"outcome"') >= 100:
                break
        process.send_signal(signal.SIGINT)
        out, err = await asyncio.wait_for(process.communicate(), 30)
        assert process.returncode == 130, err.decode()
        assert "resume" in err.decode()
        assert str(journal) in err.decode()
        assert "Traceback" not in err.decode()
        done = [
            line
            for _, line in read_lines(journal)
            if isinstance(line, Outcome) and line.s == "applied"
        ]
        assert 100 <= len(done) < 1500
        assert fake.applied_updates == len(
            done
        )  # every request in flight finished and was journaled
        again = await cli(*args, "--json", fake=fake)
        assert again.code == 0, again.stderr
        report = json.loads(again.stdout)
        assert report["already_applied"] == len(done)
        assert report["succeeded"] == 1500 - len(done)
        assert all(fake.temperature_of(c) == 0.75 for c in fake.char_ids)
        assert CANARY_KEY not in journal.read_text() + out.decode() + err.decode()


async def test_demo_runs_and_verifies() -> None:
    run = await cli("demo", "--characters", "400")
    assert run.code == 0, run.output
    assert "verified" in run.stderr
    assert "applied" in run.stdout


async def test_help_everywhere() -> None:
    for args in (("--help",), ("migrate", "--help"), ("llm", "register", "--help")):
        run = await cli(*args)
        assert run.code == 0
        assert "usage:" in run.stdout


async def test_importing_the_library_does_not_import_the_cli() -> None:
    code = "import sys, convai_async; assert 'rich' not in sys.modules and 'convai_async.cli' not in sys.modules"
    process = await asyncio.create_subprocess_exec(sys.executable, "-c", code)
    assert await process.wait() == 0
