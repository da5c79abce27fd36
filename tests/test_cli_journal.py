"""The command line's journals: names it makes up, the resume and undo commands it prints (run
as printed), rollback conflicts and --force, refusals, journal errors and --json-lines."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from pathlib import Path
from typing import Any

from convai_async import ConvaiClient
from convai_async.bulk.journal import JournalWriter
from convai_async.testing import FakeConvai, Faults

from .conftest import CANARY_KEY, FAST_RETRY
from .test_cli import as_printed, cli, finish, printed, start, updates_sent, wait_for_text

Snapshot = dict[str, tuple[Any, Any]]
TARGET = ("gpt-4.1", 0.4)
MIGRATE = ("migrate", "--to-model", "gpt-4.1", "--temperature", "0.4")


def names(folder: Path, pattern: str) -> list[str]:
    return sorted(path.name for path in folder.glob(pattern))


def settings(fake: FakeConvai) -> Snapshot:
    return {c: (fake.model_of(c), fake.temperature_of(c)) for c in fake.char_ids}


async def migrated(fake: FakeConvai, journal: Path) -> None:
    """Migrate the whole fleet to TARGET in this process (the CLI's part is the rollback)."""
    async with ConvaiClient(api_key=fake.api_key, base_url=fake.url, retry=FAST_RETRY) as client:
        plan = await client.plan_migration(to_model=TARGET[0], temperature=TARGET[1])
        assert (await client.apply(plan, journal)).ok


async def test_migrate_names_a_new_journal_per_run_and_prints_commands_that_work(
    fake: FakeConvai, tmp_path: Path
) -> None:
    original = settings(fake)
    # two runs at once, each on its own part of the fleet: the same second, two journals
    runs = await asyncio.gather(
        cli(*MIGRATE, "--from-model", "gpt-4o", "--yes", fake=fake, cwd=tmp_path),
        cli(*MIGRATE, "--from-model", "gpt-4o-mini", "--yes", fake=fake, cwd=tmp_path),
    )
    assert [r.code for r in runs] == [0, 0], [r.stderr for r in runs]
    journals = [printed(r.stderr, "journal: ") for r in runs]
    assert journals[0] != journals[1]
    assert all(Path(j).name.startswith("convai-migrate-") for j in journals)
    assert names(tmp_path, "*.jsonl") == sorted(journals)
    for run, journal, source in zip(runs, journals, ("gpt-4o", "gpt-4o-mini"), strict=True):
        resume = printed(run.stderr, "to resume: ")
        assert as_printed(resume) == [
            "migrate", "--to-model", "gpt-4.1", "--from-model", source, "--temperature", "0.4",
            "--journal", journal, "--yes",
        ]  # fmt: skip
        again = await cli(*as_printed(resume), fake=fake, cwd=tmp_path)
        assert again.code == 0, again.stderr
        assert ": 0 applied, " in again.stdout  # the recorded plan, all of it done already
    for run in runs:
        undo = await cli(*as_printed(printed(run.stderr, "to undo: ")), fake=fake, cwd=tmp_path)
        assert undo.code == 0, undo.stderr
    assert settings(fake) == original


async def test_rollback_conflicts_exit_1_name_each_and_say_how_to_force(
    fake: FakeConvai, tmp_path: Path
) -> None:
    original = settings(fake)
    journal = tmp_path / "m.jsonl"
    await migrated(fake, journal)
    # three characters someone moves to another model after the migration
    changed = [c for c, (model, _) in original.items() if model != "claude-4-sonnet"][:3]
    async with ConvaiClient(api_key=fake.api_key, base_url=fake.url) as client:
        for char_id in changed:
            await client.characters.set_model(char_id, "claude-4-sonnet")
    text = await cli("rollback", "--journal", str(journal), "--yes", fake=fake)
    assert text.code == 1, text.stderr
    assert "CONFLICTS: 3 characters changed since the migration were left alone" in text.stdout
    assert f"  conflict {changed[0]}: the migration set gpt-4.1 / 0.4, now claude-4-sonnet" in (
        text.stdout
    )
    force = printed(text.stdout, "to restore the conflicting characters anyway: ")
    assert "--force" in as_printed(force)
    restored = {c: v for c, v in settings(fake).items() if c not in changed}
    assert restored == {c: v for c, v in original.items() if c not in changed}
    again = await cli("rollback", "--journal", str(journal), "--yes", "--json", fake=fake)
    assert again.code == 1, again.stderr
    document = again.document()
    report = document["report"]
    assert document["schema"] == "convai-async/rollback/v1"
    assert (report["ok"], report["conflicts"], report["not_recorded"]) == (False, 3, 0)
    assert (report["force"], report["migration_journal"]) == (False, str(journal))
    assert report["journal"] == str(tmp_path / "m.rollback.jsonl")
    sample = {c["char_id"]: c for c in report["conflict_sample"]}
    assert sample[changed[1]] == {
        "char_id": changed[1],
        "expected": {"model": "gpt-4.1", "temperature": 0.4},
        "found": {"model": "claude-4-sonnet", "temperature": 0.4},
    }
    assert as_printed(document["force_command"]) == [*as_printed(force), "--json"]
    forced = await cli(*as_printed(force), fake=fake)
    assert forced.code == 0, forced.stderr
    assert settings(fake) == original


async def test_a_value_the_plan_did_not_record_is_reported_not_recorded(tmp_path: Path) -> None:
    async with FakeConvai(characters=5, api_key=CANARY_KEY) as fake:
        bare = fake.char_ids[0]
        del fake.characters[bare]["personalised_prompt_config"]["TEMPERATURE"]
        journal = tmp_path / "m.jsonl"
        await migrated(fake, journal)
        run = await cli("rollback", "--journal", str(journal), "--yes", "--json", fake=fake)
        assert run.code == 1, run.stderr
        report = run.document()["report"]
        assert (report["ok"], report["not_recorded"], report["conflicts"]) == (False, 1, 0)
        assert fake.model_of(bare) != "gpt-4.1"  # the model it had was recorded: restored


async def test_an_interrupted_rollback_prints_the_command_that_resumes_it(tmp_path: Path) -> None:
    slow = Faults(latency=(0.05, 0.1))  # 300 restores at 2 in flight: seconds to run out
    async with FakeConvai(characters=300, api_key=CANARY_KEY, record=False) as fake:
        original = settings(fake)
        journal = tmp_path / "m.jsonl"
        await migrated(fake, journal)
        own = tmp_path / "undo.jsonl"
        fake.faults = slow
        process = await start(
            "rollback", "--journal", str(journal), "--rollback-journal", str(own), "--force",
            "--yes", "--concurrency", "2", fake=fake,
        )  # fmt: skip
        said = await wait_for_text(process, "rollback: ")  # the first progress line
        process.send_signal(signal.SIGINT)
        run = await finish(process, said)
        assert run.code == 130, run.stderr
        assert "STOPPED" in run.stdout
        resume = printed(run.stderr, "resume: ")
        assert as_printed(resume) == [
            "rollback", "--journal", str(journal), "--rollback-journal", str(own), "--force",
            "--yes", "--concurrency", "2",
        ]  # fmt: skip
        assert settings(fake) != original
        fake.faults = Faults()
        again = await cli(*as_printed(resume), fake=fake)
        assert again.code == 0, again.stderr
        restored_before = int(again.stdout.split(" restored, ")[1].split()[0])
        assert restored_before > 0  # "N already as before": the first run's work was kept
        assert settings(fake) == original


async def test_rollback_refuses_what_is_not_a_migration_journal(
    fake: FakeConvai, tmp_path: Path
) -> None:
    bulk = tmp_path / "bulk.jsonl"
    async with ConvaiClient(api_key=fake.api_key, base_url=fake.url) as client:
        await client.bulk_set_temperature(fake.char_ids[:2], 0.5, journal=bulk)
    sheet = tmp_path / "sheet.csv"
    sheet.write_text(f"char_id,model\n{fake.char_ids[0]},gpt-4.1\n")
    empty = tmp_path / "empty.jsonl"
    empty.touch()
    sent = updates_sent(fake)
    for path in (bulk, sheet, empty):
        run = await cli("rollback", "--journal", str(path), "--yes", fake=fake)
        assert run.code == 2, run.output
        assert run.stderr.count("\n") == 1, run.stderr
        assert run.stderr.startswith(f"convai-async: error: --journal: {path}")
    assert updates_sent(fake) == sent
    assert names(tmp_path, "*.rollback.jsonl") == []


async def test_journal_errors_are_one_line_exit_4_and_nothing_is_sent(
    fake: FakeConvai, tmp_path: Path
) -> None:
    missing = tmp_path / "no-folder" / "m.jsonl"
    run = await cli(*MIGRATE, "--journal", str(missing), "--yes", "-q", fake=fake)
    assert run.code == 4, run.output
    assert run.stderr.count("\n") == 1
    assert f"the folder {missing.parent} does not exist" in run.stderr
    held = tmp_path / "held.jsonl"
    writer = JournalWriter.open(held)  # this process holds the journal's lock
    try:
        locked = await cli(*MIGRATE, "--journal", str(held), "--yes", "-q", "--json", fake=fake)
    finally:
        writer.close()
    assert locked.code == 4, locked.output
    assert str(os.getpid()) in locked.stderr
    assert locked.document()["error"] == {
        "type": "JournalError",
        "message": locked.stderr.removeprefix("convai-async: error: ").rstrip("\n"),
        "exit_code": 4,
    }
    journal = tmp_path / "m.jsonl"
    await migrated(fake, journal)
    sent = updates_sent(fake)
    bad_rollback = await cli(
        "rollback", "--journal", str(journal), "--rollback-journal", str(missing), "--yes",
        fake=fake,
    )  # fmt: skip
    assert bad_rollback.code == 4, bad_rollback.output
    assert updates_sent(fake) == sent


async def test_migrate_and_rollback_stream_json_lines(fake: FakeConvai, tmp_path: Path) -> None:
    journal = tmp_path / "m.jsonl"
    run = await cli(*MIGRATE, "--journal", str(journal), "--yes", "--json-lines", fake=fake)
    assert run.code == 0, run.stderr
    *items, last = [json.loads(line) for line in run.stdout.splitlines()]
    assert {i["schema"] for i in items} == {"convai-async/item/v1"}
    changed = {i["char_id"] for i in items if i["status"] == "applied"}
    assert len(changed) == last["plan"]["will_change"] == last["report"]["succeeded"]
    assert {i["model"] for i in items} == {"gpt-4.1"}
    assert {i["temperature"] for i in items} <= {0.4, None}  # None: it had 0.4 already
    assert last["schema"] == "convai-async/migrate/v1"
    assert as_printed(last["undo_command"]) == ["rollback", "--journal", str(journal), "--yes",
                                               "--json-lines"]  # fmt: skip
    back = await cli(*as_printed(last["undo_command"]), fake=fake)
    assert back.code == 0, back.stderr
    *restored, report = [json.loads(line) for line in back.stdout.splitlines()]
    assert {i["char_id"] for i in restored if i["status"] == "applied"} == changed
    assert report["schema"] == "convai-async/rollback/v1"
    assert report["report"]["succeeded"] == len(changed)
