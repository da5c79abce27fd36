"""The command line, run as a subprocess against FakeConvai in this process."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
from collections.abc import Awaitable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import attrs
import pytest

from convai_async import ConvaiClient
from convai_async.testing import FakeConvai, Faults

from .conftest import CANARY_KEY, CANARY_LLM_KEY

T = TypeVar("T")
HANG_GUARD = 60.0  # seconds; a correct run never comes near it


@attrs.frozen
class Run:
    code: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    def document(self) -> Any:
        return json.loads(self.stdout)


def environment(fake: FakeConvai | None, env: Mapping[str, str] | None) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("CONVAI_")}
    base["CONVAI_API_KEY"] = CANARY_KEY
    if fake is not None:
        base["CONVAI_BASE_URL"] = fake.url
    return {**base, **(env or {})}


async def start(
    *args: str,
    fake: FakeConvai | None = None,
    env: Mapping[str, str] | None = None,
    stdin: Any = asyncio.subprocess.PIPE,
    stdout: Any = asyncio.subprocess.PIPE,
) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "convai_async",
        *args,
        stdin=stdin,
        stdout=stdout,
        stderr=asyncio.subprocess.PIPE,
        env=environment(fake, env),
    )


async def cli(
    *args: str,
    fake: FakeConvai | None = None,
    stdin: str = "",
    env: Mapping[str, str] | None = None,
) -> Run:
    process = await start(*args, fake=fake, env=env)
    out, err = await guarded(process, process.communicate(stdin.encode()))
    assert process.returncode is not None
    return Run(process.returncode, out.decode(), err.decode())


async def wait_for_text(process: asyncio.subprocess.Process, text: str) -> str:
    """Read the child's stderr until ``text`` shows; fail (with what it said) if it exits first."""
    assert process.stderr is not None
    seen = ""
    while text not in seen:
        chunk = await guarded(process, process.stderr.read(4096))
        if not chunk:
            await process.wait()
            pytest.fail(f"the child exited ({process.returncode}) before {text!r}: {seen}")
        seen += chunk.decode()
    return seen


async def guarded(process: asyncio.subprocess.Process, step: Awaitable[T]) -> T:
    """``step`` within the hang guard; a hung child is killed so that it does not outlive us."""
    try:
        return await asyncio.wait_for(step, HANG_GUARD)
    except asyncio.TimeoutError:
        process.kill()
        await process.communicate()
        pytest.fail(f"the child hung for {HANG_GUARD} s")


async def finish(process: asyncio.subprocess.Process, said: str = "") -> Run:
    out, err = await guarded(process, process.communicate())
    assert process.returncode is not None
    return Run(process.returncode, out.decode() if out else "", said + err.decode())


def updates_sent(fake: FakeConvai) -> int:
    return fake.request_counts["/character/update"]


def files_in(folder: Path, paths: list[str]) -> bool:
    """Whether every path is an existing file directly in ``folder``."""
    return all(Path(p).parent == folder.resolve() and Path(p).is_file() for p in paths)


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# -- bulk commands ---------------------------------------------------------------------------------


async def test_set_model_refuses_unknown_codes_and_applies_known_ones(fake: FakeConvai) -> None:
    ids = fake.char_ids[:3]
    typo = await cli("set-model", *ids, "--model", "gpt-41", fake=fake)
    assert typo.code == 2, typo.output
    assert "--allow-unknown-model" in typo.stderr
    assert updates_sent(fake) == 0
    run = await cli("set-model", *ids, "--model", "gpt-4.1", "--json", fake=fake)
    assert run.code == 0, run.stderr
    document = run.document()
    assert document["schema"] == "convai-async/set-model/v1"
    assert (document["report"]["succeeded"], document["report"]["aborted"]) == (3, False)
    assert all(fake.model_of(c) == "gpt-4.1" for c in ids)
    forced = await cli("set-model", ids[0], "--model", "my-own", "--allow-unknown-model", fake=fake)
    assert forced.code == 0, forced.stderr
    assert fake.model_of(ids[0]) == "my-own"


async def test_set_temperature_streams_json_lines(fake: FakeConvai, tmp_path: Path) -> None:
    ids_file = tmp_path / "ids.txt"
    ids_file.write_bytes(("\ufeff" + "\n".join(fake.char_ids[:5]) + "\n\n").encode())
    run = await cli(
        "set-temperature", "--from-file", str(ids_file), "--temperature", "0.33", "--json-lines",
        fake=fake,
    )  # fmt: skip
    assert run.code == 0, run.stderr
    lines = [json.loads(line) for line in run.stdout.splitlines()]
    items, report = lines[:-1], lines[-1]
    assert {item["schema"] for item in items} == {"convai-async/item/v1"}
    assert sorted(item["char_id"] for item in items) == sorted(fake.char_ids[:5])
    assert {(item["status"], item["temperature"]) for item in items} == {("applied", 0.33)}
    assert report["schema"] == "convai-async/set-temperature/v1"
    assert report["report"]["succeeded"] == 5
    assert all(fake.temperature_of(c) == 0.33 for c in fake.char_ids[:5])


async def test_update_from_an_excel_csv_on_stdin(fake: FakeConvai) -> None:
    a, b, c = fake.char_ids[:3]
    sheet = (
        f"\ufeffCHAR_ID;Model;Temperature\r\n{a};gpt-4.1;0,5\r\n{b};;0.25\r\n{c};llama-4-scout;\r\n"
    )
    run = await cli("update", "--csv", "-", "--json", fake=fake, stdin=sheet)
    assert run.code == 0, run.stderr
    assert run.document()["report"]["succeeded"] == 3
    assert (fake.model_of(a), fake.temperature_of(a)) == ("gpt-4.1", 0.5)
    assert fake.temperature_of(b) == 0.25
    assert fake.model_of(c) == "llama-4-scout"
    assert [r.body for r in fake.requests_to("/character/update") if r.body["charID"] == b] == [
        {"charID": b, "temperature": 0.25}
    ]


async def test_bad_csv_exits_2_before_any_request(fake: FakeConvai, tmp_path: Path) -> None:
    sheet = tmp_path / "bad.csv"
    sheet.write_text(f"char_id,temperature\n{fake.char_ids[0]},0.5\n{fake.char_ids[1]},0.5,x\n")
    run = await cli("update", "--csv", str(sheet), fake=fake)
    assert run.code == 2
    assert "bad.csv:3:" in run.stderr
    assert fake.requests == []


async def test_partial_failure_exits_1(fake: FakeConvai) -> None:
    run = await cli(
        "set-model", fake.char_ids[0], "no-such-character", "--model", "gpt-4.1", fake=fake
    )
    assert run.code == 1
    assert "1 failed" in run.stdout
    assert "no-such-character" in run.stdout


async def test_wrong_key_stops_within_one_window_with_one_line(fake: FakeConvai) -> None:
    run = await cli(
        "set-model", *fake.char_ids[:40], "--model", "gpt-4.1", "--concurrency", "4",
        fake=fake, env={"CONVAI_API_KEY": "wrong"},
    )  # fmt: skip
    assert run.code == 3, run.output
    assert 0 < updates_sent(fake) <= 2 * 4
    assert run.output.count("Invalid API key provided.") == 1
    assert "ABORTED" in run.stdout
    single = await cli("get", fake.char_ids[0], fake=fake, env={"CONVAI_API_KEY": "wrong"})
    assert single.code == 3
    assert single.stderr.count("\n") == 1
    assert "Invalid API key provided." in single.stderr


# -- reading ---------------------------------------------------------------------------------------


async def test_get_and_list_print_the_tables_columns(fake: FakeConvai) -> None:
    char_id = fake.char_ids[0]
    got = (await cli("get", char_id, "--json", fake=fake)).document()
    assert got == {
        "schema": "convai-async/get/v1",
        "character": {
            "char_id": char_id,
            "name": fake.characters[char_id]["character_name"],
            "model": fake.model_of(char_id),
            "temperature": fake.temperature_of(char_id),
        },
    }
    listed = (await cli("list", "--model", "gpt-4o", "--json", fake=fake)).document()
    on_4o = [c for c in fake.char_ids if fake.model_of(c) == "gpt-4o"]
    assert listed["schema"] == "convai-async/list/v1"
    assert [c["char_id"] for c in listed["characters"]] == on_4o
    table = await cli("list", fake=fake)
    assert table.stdout.splitlines()[0].split() == ["ID", "NAME", "MODEL", "TEMPERATURE"]
    assert len(table.stdout.splitlines()) == 1 + len(fake.char_ids)


async def test_models_catalog_as_json() -> None:
    run = await cli("models", "--provider", "google", "--json")
    assert run.code == 0
    document = run.document()
    assert document["schema"] == "convai-async/models/v1"
    assert [m["code"] for m in document["models"]][:2] == [
        "gemini-2.5-flash",
        "gemini-2.5-flash-lite",
    ]
    assert document["models"][0] == {
        "code": "gemini-2.5-flash",
        "display_name": "Gemini-2.5-Flash",
        "provider": "Google",
        "flagship": False,
        "uncensored": False,
        "custom": False,
    }


# -- migrations ------------------------------------------------------------------------------------


async def test_dry_run_prints_the_plan_and_sends_nothing(fake: FakeConvai) -> None:
    run = await cli(
        "migrate", "--to-model", "gpt-4.1", "--from-model", "gpt-4o", "--where-name", "^Rafael ",
        "--dry-run", "--json", fake=fake,
    )  # fmt: skip
    assert run.code == 0, run.stderr
    document = run.document()
    plan = document["plan"]
    rafaels = [
        c
        for c in fake.char_ids
        if fake.characters[c]["character_name"].startswith("Rafael ")
        and fake.model_of(c) == "gpt-4o"
    ]
    assert document["schema"] == "convai-async/migrate/v1"
    assert (document["dry_run"], document["report"]) == (True, None)
    assert plan["target"] == {"model": "gpt-4.1", "temperature": None}
    assert plan["selection"] == {"from_model": "gpt-4o", "where_name": "^Rafael "}
    assert plan["counts_by_model"] == [{"model": "gpt-4o", "count": len(rafaels)}]
    assert (plan["selected"], plan["will_change"], plan["already_as_wanted"]) == (
        len(rafaels),
        len(rafaels),
        0,
    )
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
        "migrate", "--to-model", "gpt-4.1", "--from-model", "gpt-4o", "--temperature", "0.4",
        "--journal", str(journal), "--yes", "--json", fake=fake,
    )  # fmt: skip
    assert run.code == 0, run.stderr
    on_4o = [c for c, (m, _) in original.items() if m == "gpt-4o"]
    assert all((fake.model_of(c), fake.temperature_of(c)) == ("gpt-4.1", 0.4) for c in on_4o)
    document = run.document()
    assert document["plan"]["will_change"] == len(on_4o)
    assert document["report"]["succeeded"] == len(on_4o)
    assert document["report"]["journal"] == str(journal)
    back = await cli("rollback", "--journal", str(journal), "--yes", fake=fake)
    assert back.code == 0, back.stderr
    assert {c: (fake.model_of(c), fake.temperature_of(c)) for c in fake.char_ids} == original


async def test_unknown_target_model_names_the_flag(fake: FakeConvai) -> None:
    run = await cli("migrate", "--to-model", "gpt-9", "--yes", fake=fake)
    assert run.code == 2
    assert run.stderr.startswith("convai-async: error: --to-model: 'gpt-9'")
    assert "--allow-unknown-model" in run.stderr
    assert "allow_unknown_model" not in run.stderr
    assert updates_sent(fake) == 0


# -- errors, settings ------------------------------------------------------------------------------


async def test_errors_are_json_documents_with_json(fake: FakeConvai) -> None:
    usage = await cli("--json", "set-temperature", "c1", "--temperature", "1.5", fake=fake)
    assert usage.code == 2
    assert usage.document()["error"]["exit_code"] == 2
    missing = await cli("get", "no-such-character", "--json", fake=fake)
    assert missing.code == 1
    document = missing.document()
    assert document["schema"] == "convai-async/error/v1"
    assert (document["error"]["type"], document["error"]["exit_code"]) == ("NotFoundError", 1)


async def test_settings_from_the_environment_and_flags(fake: FakeConvai) -> None:
    # the fixture passes the fake's URL through $CONVAI_BASE_URL only
    assert (await cli("get", fake.char_ids[0], fake=fake)).code == 0
    no_key = await cli("list", env={"CONVAI_API_KEY": ""})
    assert no_key.code == 2
    port = closed_port()
    insecure = await cli("list", "--base-url", f"http://0.0.0.0:{port}", "--max-retries", "0")
    assert insecure.code == 2
    assert "--allow-insecure-http" in insecure.stderr
    allowed = await cli(
        "list", "--base-url", f"http://0.0.0.0:{port}", "--max-retries", "0",
        "--allow-insecure-http",
    )  # fmt: skip
    assert allowed.code == 1
    assert "cannot connect" in allowed.stderr


async def test_unreachable_host_is_announced_while_retrying() -> None:
    port = closed_port()
    run = await cli("list", "--base-url", f"http://127.0.0.1:{port}", "--max-retries", "1")
    assert run.code == 1
    *notes, last = run.stderr.splitlines()
    assert any(n.startswith("list: ") and f"cannot connect to 127.0.0.1:{port}" in n for n in notes)
    assert last.startswith("convai-async: error: cannot connect")


async def test_llm_commands_and_canary_secrets_never_printed(fake: FakeConvai) -> None:
    secret_env = {"MY_LLM_KEY": CANARY_LLM_KEY}
    register = ("llm", "register", "--group", "canary-group", "--llm-api-key-env", "MY_LLM_KEY")
    runs = [
        await cli(
            "-v", *register, "--model-name", "gpt-4o-mini", "--display-name", "Canary",
            fake=fake, env=secret_env,
        ),
        await cli("-v", "llm", "list", "--json", fake=fake),
        await cli(
            "-v", "llm", "update", "--group", "canary-group", "--llm-api-key-stdin",
            fake=fake, stdin=CANARY_LLM_KEY + "\n",
        ),
        await cli("-v", "models", "--custom", "--json", fake=fake),
        await cli("-v", *register, "--model-name", "x", "--display-name", "Canary", fake=fake,
                  env=secret_env),
        await cli("-v", "--api-key", CANARY_KEY, "get", fake.char_ids[0], fake=fake),
        await cli("-v", "llm", "register", "--group", "g2", "--model-name", "x",
                  "--llm-base-url", "not a url", "--llm-api-key-env", "MY_LLM_KEY",
                  fake=fake, env=secret_env),
        await cli("-v", "llm", "deregister", "--group", "canary-group", "--yes", fake=fake),
    ]  # fmt: skip
    assert [r.code for r in runs] == [0, 0, 0, 0, 1, 0, 2, 0], [r.stderr for r in runs]
    listed = runs[1].document()
    assert listed["schema"] == "convai-async/llm-list/v1"
    assert listed["models"][0]["model_group_name"] == "canary-group"
    assert listed["models"][0]["is_uncensored"] is False
    custom = [m for m in runs[3].document()["models"] if m["custom"]]
    assert [m["code"] for m in custom] == ["canary-group"]
    assert "already exists" in runs[4].stderr
    assert "DEBUG" in runs[5].stderr  # -v really logs each attempt
    assert "--llm-base-url:" in runs[6].stderr
    for run in runs:
        assert CANARY_KEY not in run.output
        assert CANARY_LLM_KEY not in run.output
    assert fake.requests_to("/llm-models/register")[0].body["api_key"] == CANARY_LLM_KEY
    assert fake.requests_to("/llm-models/update")[0].body["api_key"] == CANARY_LLM_KEY
    assert fake.custom_models == {}


# -- pipes and signals -----------------------------------------------------------------------------


async def run_with_closed_stdout(*args: str, fake: FakeConvai) -> Run:
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before the first byte, as `| head -0` would leave it
    try:
        process = await start(*args, fake=fake, stdout=write_end)
    finally:
        os.close(write_end)
    return await finish(process)


async def test_closed_stdout_ends_quietly_and_a_migration_still_finishes(
    fake: FakeConvai, tmp_path: Path
) -> None:
    original = {c: fake.model_of(c) for c in fake.char_ids}
    listed = await run_with_closed_stdout("list", "--json", fake=fake)
    assert listed.code in (0, 141)
    assert listed.stderr == ""
    journal = tmp_path / "m.jsonl"
    migrated = await run_with_closed_stdout(
        "migrate", "--to-model", "gpt-4.1", "--journal", str(journal), "--yes", fake=fake
    )
    assert migrated.code in (0, 141), migrated.stderr
    assert "Traceback" not in migrated.stderr
    assert "error" not in migrated.stderr
    assert {fake.model_of(c) for c in fake.char_ids} == {"gpt-4.1"}
    back = await cli("rollback", "--journal", str(journal), "--yes", fake=fake)
    assert back.code == 0, back.stderr
    assert {c: fake.model_of(c) for c in fake.char_ids} == original  # every change journaled


async def test_sigint_mid_run_leaves_a_resumable_journal(tmp_path: Path) -> None:
    slow = Faults(latency=(0.05, 0.1))  # 1000 items at 4 in flight: at least 12 s to run out
    async with FakeConvai(characters=1000, api_key=CANARY_KEY, faults=slow, record=False) as fake:
        ids_file = tmp_path / "ids.txt"
        ids_file.write_text("\n".join(fake.char_ids))
        journal = tmp_path / "run.jsonl"
        args = (
            "set-temperature", "--from-file", str(ids_file), "--temperature", "0.75",
            "--journal", str(journal), "--concurrency", "4",
        )  # fmt: skip
        process = await start(*args, fake=fake)
        said = await wait_for_text(process, "set-temperature: ")  # the first progress line
        process.send_signal(signal.SIGINT)
        run = await finish(process, said)
        assert run.code == 130, run.stderr
        assert "STOPPED" in run.stdout
        assert f"--journal {journal}" in run.stderr
        assert "Traceback" not in run.stderr
        done = fake.applied_updates
        assert 1 <= done < 1000
        fake.faults.latency = 0.0
        again = await cli(*args, "--json", fake=fake)
        assert again.code == 0, again.stderr
        report = again.document()["report"]
        # every update applied before the stop (in flight included) was journaled
        assert (report["already_applied"], report["succeeded"]) == (done, 1000 - done)
        assert all(fake.temperature_of(c) == 0.75 for c in fake.char_ids)
        assert CANARY_KEY not in journal.read_text() + run.output


async def test_sigterm_mid_migration_prints_the_summary_and_the_resume_hint(
    tmp_path: Path,
) -> None:
    slow = Faults(latency=(0.05, 0.1))
    async with FakeConvai(characters=400, api_key=CANARY_KEY, faults=slow, record=False) as fake:
        journal = tmp_path / "m.jsonl"
        process = await start(
            "migrate", "--to-model", "gpt-4.1", "--journal", str(journal), "--yes",
            "--concurrency", "2", "--json", fake=fake,
        )  # fmt: skip
        said = await wait_for_text(process, "migrate: ")
        process.send_signal(signal.SIGTERM)
        run = await finish(process, said)
        assert run.code == 143, run.stderr
        report = run.document()["report"]  # the summary, and nothing else, on stdout
        assert (report["stopped"], report["journal"]) == (True, str(journal))
        assert report["succeeded"] == fake.applied_updates < 400
        assert "SIGTERM" in run.stderr
        assert f"resume: run the same command again with --journal {journal}" in run.stderr


async def test_ctrl_c_at_the_prompt_aborts_it(fake: FakeConvai) -> None:
    terminal, child_side = os.openpty()
    try:
        process = await start("migrate", "--to-model", "gpt-4.1", fake=fake, stdin=child_side)
        os.close(child_side)
        said = await wait_for_text(process, "[y/N]")
        process.send_signal(signal.SIGINT)
        run = await finish(process, said)
    finally:
        os.close(terminal)
    assert run.code == 130, run.stderr
    assert "nothing more was sent" in run.stderr
    assert updates_sent(fake) == 0


# -- demo, help, packaging -------------------------------------------------------------------------


async def test_demo_discovers_the_limit_and_rolls_back(tmp_path: Path) -> None:
    run = await cli("demo", "--characters", "300", "--journal-dir", str(tmp_path))
    assert run.code == 0, run.output
    assert "verified: all 300 characters are on gpt-4.1" in run.stderr
    assert "verified: all 300 characters are back" in run.stderr
    # "N requests, M retries, K answered 429": the migration's line comes first
    counts = next(line for line in run.stdout.splitlines() if line.endswith(" answered 429"))
    assert int(counts.split()[-3]) > 0  # the client had to discover the limit
    journals = [line for line in run.stderr.splitlines() if line.startswith("journals: ")]
    assert len(journals) == 1
    assert files_in(tmp_path, journals[0].removeprefix("journals: ").split(" and "))


async def test_help_shows_examples_and_exit_codes() -> None:
    run = await cli("migrate", "--help")
    assert run.code == 0
    assert "examples:" in run.stdout
    assert "143" in run.stdout


async def test_importing_the_library_does_not_import_the_cli() -> None:
    code = "import sys, convai_async; assert 'rich' not in sys.modules and 'convai_async.cli' not in sys.modules"
    process = await asyncio.create_subprocess_exec(sys.executable, "-c", code)
    assert await asyncio.wait_for(process.wait(), HANG_GUARD) == 0


async def test_deregister_refuses_a_model_in_use_unless_forced(fake: FakeConvai) -> None:
    async with ConvaiClient(api_key=fake.api_key, base_url=fake.url) as client:
        await client.llm_models.register(
            model_group_name="in-use", model_name="gpt-4o-mini", api_key="sk-x", is_uncensored=False
        )
        await client.characters.set_model(fake.char_ids[0], "in-use")
    refused = await cli("llm", "deregister", "--group", "in-use", "--yes", fake=fake)
    assert refused.code == 1
    assert "1 character(s) still use 'in-use'" in refused.stderr
    assert "--force" in refused.stderr
    assert fake.requests_to("/llm-models/deregister") == []
    forced = await cli("llm", "deregister", "--group", "in-use", "--yes", "--force", fake=fake)
    assert forced.code == 0, forced.stderr
    assert fake.custom_models == {}
