"""Migrations against FakeConvai: the plan recorded as the journal's header, resume of the
recorded plan, and rollback (compare-and-set, conflicts, unrecorded values, bad lines,
refusals, its own resumable journal)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import pytest

from convai_async import ConvaiClient, JournalError, ValidationError
from convai_async.bulk import default_rollback_journal
from convai_async.bulk.encoders import encode
from convai_async.bulk.format import (
    Header,
    Intent,
    Outcome,
    PlanArgs,
    PlanEnd,
    PlanLine,
    Values,
    decode,
)
from convai_async.bulk.journal import JournalWriter
from convai_async.bulk.reader import read_lines
from convai_async.testing import FakeConvai, Faults

from .conftest import CANARY_KEY, ClientFactory

Snapshot = dict[str, tuple[Any, Any]]


def snapshot(fake: FakeConvai) -> Snapshot:
    configs = {c: fake.characters[c].get("personalised_prompt_config", {}) for c in fake.char_ids}
    return {c: (cfg.get("MODEL"), cfg.get("TEMPERATURE")) for c, cfg in configs.items()}


def lines(journal: Path) -> list[Any]:
    return [line for _, line in read_lines(journal)]


async def test_plan_apply_rollback_round_trip(
    fake: FakeConvai, client: ConvaiClient, tmp_path: Path
) -> None:
    original = snapshot(fake)
    on_4o = {c for c, (m, _) in original.items() if m == "gpt-4o"}
    plan = await client.plan_migration(to_model="gpt-4.1", from_model="gpt-4o", temperature=0.4)
    assert {u.char_id for u in plan.updates} == on_4o
    assert plan.counts_by_model == {"gpt-4o": len(on_4o)}
    assert plan.fleet_size == 50
    assert "will change" in plan.summary()
    assert fake.request_counts["/character/update"] == 0  # planning sends no update

    journal = tmp_path / "migration.jsonl"
    report = await client.apply(plan, journal=journal)
    assert report.succeeded == len(on_4o)
    for c in fake.char_ids:
        expected = ("gpt-4.1", 0.4) if c in on_4o else original[c]
        assert snapshot(fake)[c] == expected
    recorded = lines(journal)
    header = recorded[0]
    assert isinstance(header, Header)
    assert (header.kind, header.plan) == ("migration", plan_args(plan))
    planned = [line for line in recorded if isinstance(line, PlanLine)]
    assert {p.c: (p.was.model, p.was.temperature) for p in planned} == {
        c: original[c] for c in on_4o
    }
    end = next(i for i, line in enumerate(recorded) if isinstance(line, PlanEnd))
    assert all(not isinstance(line, Intent) for line in recorded[:end])  # plan before intents
    intent = next(line for line in recorded if isinstance(line, Intent))
    assert intent.was == Values(*original[intent.c])
    assert CANARY_KEY not in journal.read_text()

    rollback = await client.rollback(journal)
    assert rollback.ok
    assert rollback.succeeded == len(on_4o)
    assert rollback.journal == str(default_rollback_journal(journal))
    assert snapshot(fake) == original


def plan_args(plan: Any) -> PlanArgs:
    return PlanArgs(plan.to_model, plan.temperature, plan.from_model)


async def test_plan_with_predicate_and_unchanged_characters(
    fake: FakeConvai, client: ConvaiClient
) -> None:
    first = fake.char_ids[0]
    await client.characters.set_model(first, "gpt-4.1")
    plan = await client.plan_migration(
        to_model="gpt-4.1", where=lambda c: c.char_id in fake.char_ids[:5]
    )
    assert plan.selected == 5
    assert plan.unchanged == 1
    assert first not in {u.char_id for u in plan.updates}


async def test_plan_preflight_refuses_unknown_model_and_bad_temperature(
    fake: FakeConvai, client: ConvaiClient
) -> None:
    with pytest.raises(ValidationError, match="allow_unknown_model"):
        await client.plan_migration(to_model="gpt-5-imaginary")
    with pytest.raises(ValidationError) as caught:
        await client.plan_migration(to_model="gpt-4.1", temperature=1.2)
    assert caught.value.field == "temperature"
    assert fake.request_counts["/character/update"] == 0
    plan = await client.plan_migration(to_model="gpt-5-imaginary", allow_unknown_model=True)
    assert len(plan.updates) == 50
    await client.llm_models.register("my-llm", "m", "sk-1", False)
    assert (await client.plan_migration(to_model="my-llm")).to_model == "my-llm"


async def test_resume_runs_the_recorded_plan_not_a_fresh_one(
    fake: FakeConvai, client: ConvaiClient, tmp_path: Path
) -> None:
    original = snapshot(fake)
    journal = tmp_path / "m.jsonl"
    plan = await client.plan_migration(to_model="gpt-4.1", temperature=0.4)
    fake.faults = Faults(quota=sum(fake.request_counts.values()) + 10)
    first = await client.apply(plan, journal)
    assert first.aborted
    assert first.succeeded == 10
    fake.faults = Faults()
    # A fresh plan now sees the migrated characters as "already as wanted"...
    fresh = await client.plan_migration(to_model="gpt-4.1", temperature=0.4)
    assert len(fresh.updates) == 50 - first.succeeded
    # ...but the resume runs the recorded plan, with the values recorded before any change.
    resumed = await client.apply(fresh, journal)
    assert (resumed.already_applied, resumed.succeeded) == (first.succeeded, 50 - first.succeeded)
    rollback = await client.rollback(journal)
    assert rollback.ok
    assert snapshot(fake) == original


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"to_model": "gpt-4o"}, "to_model"),
        ({"temperature": 0.9}, "temperature"),
        ({"from_model": "gpt-4o"}, "from_model"),
    ],
)
async def test_resume_with_other_arguments_is_refused_naming_the_difference(
    fake: FakeConvai, client: ConvaiClient, tmp_path: Path, change: dict[str, Any], field: str
) -> None:
    journal = tmp_path / "m.jsonl"
    arguments: dict[str, Any] = {"to_model": "gpt-4.1", "temperature": 0.4}
    await client.apply(await client.plan_migration(**arguments), journal)
    sent = fake.request_counts["/character/update"]
    other = await client.plan_migration(**{**arguments, **change})
    with pytest.raises(ValidationError) as caught:
        await client.apply(other, journal)
    assert caught.value.field == field
    assert f"{field}=" in str(caught.value)
    assert fake.request_counts["/character/update"] == sent


async def test_a_plan_cut_short_before_it_was_complete_starts_over(
    fake: FakeConvai, client: ConvaiClient, tmp_path: Path
) -> None:
    journal = tmp_path / "m.jsonl"
    plan = await client.plan_migration(to_model="gpt-4.1", temperature=0.4)
    other = await client.plan_migration(to_model="gpt-4o")
    await client.apply(other, journal, stop=_set_event())  # writes a whole plan, sends nothing
    text = journal.read_bytes()
    journal.write_bytes(text[: text.index(b'"k":"planned"') - 1][:-40])  # killed mid-plan
    report = await client.apply(plan, journal)  # other arguments, but nothing was ever sent
    assert report.succeeded == len(plan.updates)
    header = lines(journal)[0]
    assert isinstance(header, Header)
    assert header.plan is not None
    assert header.plan.to_model == "gpt-4.1"


def _set_event() -> asyncio.Event:
    event = asyncio.Event()
    event.set()
    return event


async def test_drops_after_apply_without_retries_are_all_rolled_back(tmp_path: Path) -> None:
    async with FakeConvai(characters=400, seed=3, record=False) as fake:
        original = snapshot(fake)
        journal = tmp_path / "m.jsonl"
        async with ConvaiClient(
            api_key=fake.api_key, base_url=fake.url, max_concurrency=16, max_retries=0
        ) as client:
            plan = await client.plan_migration(to_model="gpt-4.1", temperature=0.4)
            fake.faults = Faults(drop_after_ratio=0.3)
            report = await client.apply(plan, journal)
            assert report.failed > 50  # dropped after the server applied them
            assert all(f.request_sent for f in report.failures)
            changed = {c for c, values in snapshot(fake).items() if values != original[c]}
            assert len(changed) > report.succeeded  # the failed ones were applied too
            fake.faults = Faults()
            rollback = await client.rollback(journal)
        assert rollback.ok
        assert snapshot(fake) == original


async def test_rollback_leaves_characters_changed_since_alone_unless_forced(
    fake: FakeConvai, client: ConvaiClient, tmp_path: Path
) -> None:
    original = snapshot(fake)
    journal = tmp_path / "m.jsonl"
    await client.apply(await client.plan_migration(to_model="gpt-4.1", temperature=0.4), journal)
    touched = fake.char_ids[:3]
    for char_id in touched:  # someone else changes them after the migration
        await client.characters.set_model(char_id, "gemma-3n-e4b")
    report = await client.rollback(journal)
    assert not report.ok
    assert report.conflicts == 3
    assert {c.char_id for c in report.conflict_sample} == set(touched)
    assert all(c.found[0] == "gemma-3n-e4b" for c in report.conflict_sample)
    assert "force" in report.summary()
    after = snapshot(fake)
    assert all(after[c][0] == "gemma-3n-e4b" for c in touched)
    assert all(after[c] == original[c] for c in fake.char_ids[3:])

    forced = await client.rollback(journal, rollback_journal=tmp_path / "forced.jsonl", force=True)
    assert forced.ok
    assert forced.succeeded == 3  # the others are already as before
    assert snapshot(fake) == original


async def test_rollback_reports_characters_with_no_recorded_value(tmp_path: Path) -> None:
    bare = {
        "character_id": "bare-1",
        "character_name": "Bare",
        "personalised_prompt_config": {"TEMPERATURE": 0.2},
    }
    async with FakeConvai(characters=[bare], api_key=CANARY_KEY) as fake:
        async with ConvaiClient(api_key=CANARY_KEY, base_url=fake.url) as client:
            plan = await client.plan_migration(to_model="gpt-4.1", temperature=0.4)
            await client.apply(plan, tmp_path / "m.jsonl")
            report = await client.rollback(tmp_path / "m.jsonl")
        assert not report.ok
        assert report.not_recorded == 1
        assert "no recorded value" in report.summary()
        # what was recorded is restored; the model it never had cannot be
        assert snapshot(fake)["bare-1"] == ("gpt-4.1", 0.2)


async def test_rollback_refuses_files_that_are_not_migration_journals(
    fake: FakeConvai, client: ConvaiClient, tmp_path: Path
) -> None:
    bulk = tmp_path / "bulk.jsonl"
    await client.bulk_set_temperature(fake.char_ids[:3], 0.5, journal=bulk)
    (tmp_path / "chars.csv").write_text("char_id,model\nabc,gpt-4o\n")
    (tmp_path / "empty.jsonl").write_text("")
    fake.requests.clear()
    fake.request_counts.clear()
    for name, problem in [
        ("bulk.jsonl", "bulk journal, not a migration"),
        ("chars.csv", "not a convai-async journal"),
        ("empty.jsonl", "empty"),
        ("missing.jsonl", "no such file"),
    ]:
        with pytest.raises(ValidationError, match=problem):
            await client.rollback(tmp_path / name)
    assert fake.requests == []  # refused before anything was sent, not even a listing
    assert not default_rollback_journal(tmp_path / "chars.csv").exists()


async def test_one_bad_line_fails_that_item_naming_the_line_and_the_rest_goes_on(
    fake: FakeConvai, client: ConvaiClient, tmp_path: Path
) -> None:
    original = snapshot(fake)
    journal = tmp_path / "m.jsonl"
    await client.apply(await client.plan_migration(to_model="gpt-4.1", temperature=0.4), journal)
    text = journal.read_bytes().split(b"\n")
    intents = [n for n, raw in enumerate(text) if raw.startswith(b'{"k":"intent"')]
    out_of_range, torn = intents[3], intents[7]
    bad = decode(text[out_of_range])
    assert isinstance(bad, Intent)
    assert bad.was is not None
    victims = [bad.c, decode_char(text[torn])]
    out_of_range_was = Values(bad.was.model, 7.0)  # a temperature no character can have
    text[out_of_range] = encode(Intent(bad.i, bad.c, bad.set, out_of_range_was)).rstrip()
    text[torn] = text[torn][:30]
    journal.write_bytes(b"\n".join(text))
    report = await client.rollback(journal)
    assert not report.ok
    assert report.failed == 2
    messages = [str(f.error) for f in report.failures]
    assert any(f"line {torn + 1}:" in m for m in messages)
    assert any(f"line {out_of_range + 1}:" in m and "temperature" in m for m in messages)
    after = snapshot(fake)
    assert all(after[c] == original[c] for c in fake.char_ids if c not in victims)
    assert report.succeeded == 48


def decode_char(raw: bytes) -> str:
    line = decode(raw)
    assert isinstance(line, Intent)
    return line.c


async def test_an_interrupted_rollback_resumes_from_its_own_journal(
    make_client: ClientFactory, fake: FakeConvai, tmp_path: Path
) -> None:
    client = make_client(max_concurrency=2)
    original = snapshot(fake)
    journal = tmp_path / "m.jsonl"
    await client.apply(await client.plan_migration(to_model="gpt-4.1", temperature=0.4), journal)
    fake.faults = Faults(quota=sum(fake.request_counts.values()) + 1 + 5)  # a listing, 5 updates
    first = await client.rollback(journal)
    assert first.aborted
    assert not first.ok
    assert first.succeeded == 5
    assert f"rollback journal {first.journal}" in first.summary()
    fake.faults = Faults()
    with pytest.raises(ValidationError, match="force"):
        await client.rollback(journal, force=True)  # not how the interrupted one ran
    second = await client.rollback(journal)
    assert second.already_applied >= first.succeeded
    assert second.ok
    assert snapshot(fake) == original


async def test_rollback_is_refused_while_the_migration_journal_is_held(
    fake: FakeConvai, client: ConvaiClient, tmp_path: Path
) -> None:
    journal = tmp_path / "m.jsonl"
    await client.apply(await client.plan_migration(to_model="gpt-4.1"), journal)
    sent = fake.request_counts["/character/update"]
    holder = JournalWriter.open(journal)  # as a migration resuming on it would
    try:
        with pytest.raises(JournalError, match=rf"pid {os.getpid()}\b"):
            await client.rollback(journal)
    finally:
        holder.close()
    assert fake.request_counts["/character/update"] == sent
    assert (await client.rollback(journal)).ok


async def test_a_bad_plan_line_fails_that_item_on_resume_and_the_rest_goes_on(
    fake: FakeConvai, client: ConvaiClient, tmp_path: Path
) -> None:
    journal = tmp_path / "m.jsonl"
    plan = await client.plan_migration(to_model="gpt-4.1", temperature=0.4)
    fake.faults = Faults(quota=sum(fake.request_counts.values()) + 10)
    first = await client.apply(plan, journal)
    assert first.succeeded == 10
    fake.faults = Faults()
    text = journal.read_bytes().split(b"\n")
    applied = {o.i for o in lines(journal) if isinstance(o, Outcome) and o.s == "applied"}
    number = next(
        n
        for n, raw in enumerate(text)
        if raw.startswith(b'{"k":"plan"') and decode(raw).i not in applied  # type: ignore[union-attr]
    )
    victim = decode(text[number])
    assert isinstance(victim, PlanLine)
    text[number] = text[number].replace(b'"i":', b'"i":"', 1)  # a wrong type
    journal.write_bytes(b"\n".join(text))
    resumed = await client.apply(plan, journal)
    assert not resumed.ok
    assert resumed.failed == 1
    assert f"line {number + 1}:" in str(resumed.failures[0].error)
    assert resumed.succeeded == 50 - 10 - 1
    assert snapshot(fake)[victim.c] != ("gpt-4.1", 0.4)
