"""Bulk updates and migrations against FakeConvai: every item one outcome, flat memory,
per-character order, fast abort, journal and resume (with a real SIGKILL), plan/apply/rollback."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import stat
import sys
import textwrap
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from convai_async import (
    CharacterUpdate,
    ConvaiClient,
    Progress,
    RetryPolicy,
    UpdateStatus,
    ValidationError,
)
from convai_async.journal import read_journal
from convai_async.testing import FakeConvai, Faults

from .conftest import CANARY_KEY, FAST_RETRY, ClientFactory

ROBUST_RETRY = RetryPolicy(initial_wait=0.001, max_wait=0.02, budget=5000)


async def test_faulty_server_every_update_applied_exactly_one_result_each() -> None:
    faults = Faults(
        server_error_ratio=0.10,
        drop_before_ratio=0.03,
        drop_after_ratio=0.03,
        rate_limit=2000,
        burst=100,
        retry_after="none",
    )
    async with FakeConvai(characters=3000, faults=faults, record=False) as fake:
        wanted = {c: round(i / 3000, 4) for i, c in enumerate(fake.char_ids)}
        updates = [CharacterUpdate(c, model="gpt-4.1", temperature=t) for c, t in wanted.items()]
        async with ConvaiClient(
            api_key=fake.api_key,
            base_url=fake.url,
            max_concurrency=32,
            max_retries=10,
            retry=ROBUST_RETRY,
        ) as client:
            report = await client.bulk_update(updates)
        assert (report.total, report.succeeded, report.failed, report.skipped) == (3000, 3000, 0, 0)
        assert not report.aborted
        assert report.ok
        assert report.retries == fake.faults_injected + report.rate_limited > 0
        assert report.requests == 3000 + report.retries
        assert all(
            fake.model_of(c) == "gpt-4.1" and fake.temperature_of(c) == t for c, t in wanted.items()
        )
        assert "3000 applied" in report.summary()


async def test_stream_yields_exactly_one_result_per_input_including_bad_ones(
    fake: FakeConvai, client: ConvaiClient
) -> None:
    items: list[object] = [CharacterUpdate(c, temperature=0.1) for c in fake.char_ids[:10]]
    items.insert(3, CharacterUpdate("no-such-character", temperature=0.1))
    items.insert(5, "not an update")
    results = [r async for r in client.stream_updates(items)]  # type: ignore[arg-type]
    assert sorted(r.index for r in results) == list(range(12))
    by_index = {r.index: r for r in results}
    assert by_index[3].status is UpdateStatus.FAILED
    assert "database calls failed" in str(by_index[3].error)
    assert by_index[5].status is UpdateStatus.FAILED
    assert isinstance(by_index[5].error, ValidationError)
    assert sum(r.ok for r in results) == 10


async def test_bulk_set_model_reports_bad_ids_as_failures(
    fake: FakeConvai, client: ConvaiClient
) -> None:
    ids = [*fake.char_ids[:5], "", "   "]
    report = await client.bulk_set_model(ids, "gpt-4.1")
    assert (report.total, report.succeeded, report.failed) == (7, 5, 2)
    assert {f.error.field for f in report.failures if isinstance(f.error, ValidationError)} == {
        "char_id"
    }
    assert fake.request_counts["/character/update"] == 5


async def test_bulk_arguments_are_validated_before_any_request(
    fake: FakeConvai, client: ConvaiClient
) -> None:
    with pytest.raises(ValidationError):
        await client.bulk_set_temperature(fake.char_ids, 2.0)
    with pytest.raises(ValidationError):
        await client.bulk_set_model(fake.char_ids, "")
    assert fake.requests == []


async def test_generator_is_pulled_lazily() -> None:
    pulled = 0

    async with FakeConvai(characters=100, record=False) as fake:
        ids = fake.char_ids

        def million() -> Iterator[CharacterUpdate]:
            nonlocal pulled
            for i in range(1_000_000):
                pulled += 1
                yield CharacterUpdate(ids[i % len(ids)], temperature=(i % 100) / 100)

        async with ConvaiClient(
            api_key=fake.api_key, base_url=fake.url, max_concurrency=16
        ) as client:
            seen = 0
            stream = client.stream_updates(million())
            async for _ in stream:
                seen += 1
                if seen == 2000:
                    break
            await stream.aclose()  # type: ignore[attr-defined]
    assert pulled - seen <= 2 * 16


async def test_async_iterable_input(fake: FakeConvai, client: ConvaiClient) -> None:
    async def updates() -> AsyncIterator[CharacterUpdate]:
        for c in fake.char_ids[:20]:
            await asyncio.sleep(0)
            yield CharacterUpdate(c, model="gemma-3n-e4b")

    report = await client.bulk_update(updates())
    assert report.succeeded == 20
    assert all(fake.model_of(c) == "gemma-3n-e4b" for c in fake.char_ids[:20])


async def test_same_character_updates_apply_in_input_order_under_faults() -> None:
    faults = Faults(
        server_error_ratio=0.1, drop_before_ratio=0.05, drop_after_ratio=0.05, latency=(0, 0.003)
    )
    async with FakeConvai(characters=20, faults=faults) as fake:
        steps = 15
        updates = [
            CharacterUpdate(c, temperature=step / 100)
            for step in range(steps)
            for c in fake.char_ids
        ]
        async with ConvaiClient(
            api_key=fake.api_key,
            base_url=fake.url,
            max_concurrency=16,
            max_retries=10,
            retry=ROBUST_RETRY,
        ) as client:
            report = await client.bulk_update(updates)
        assert report.succeeded == len(updates)
        assert fake.faults_injected > 0
        for char_id in fake.char_ids:
            sent = [
                r.body["temperature"]
                for r in fake.requests
                if r.body and r.body.get("charID") == char_id
            ]
            assert sent == sorted(sent)  # retries repeat a value, never go back
            assert fake.temperature_of(char_id) == (steps - 1) / 100


async def test_revoked_key_aborts_within_one_window(fake: FakeConvai) -> None:
    async with FakeConvai(
        characters=2000, record=False, faults=Faults(latency=(0.001, 0.004))
    ) as big:
        async with ConvaiClient(
            api_key=big.api_key, base_url=big.url, max_concurrency=16
        ) as client:
            requests_at_revocation = 0
            results = []
            async for result in client.stream_updates(
                CharacterUpdate(c, temperature=0.5) for c in big.char_ids
            ):
                results.append(result)
                if len(results) == 300:
                    big.revoke_key()
                    requests_at_revocation = big.request_counts["/character/update"]
        sent_after = big.request_counts["/character/update"] - requests_at_revocation
        assert len(results) == 2000
        statuses = [r.status for r in results]
        assert statuses.count(UpdateStatus.SKIPPED) >= 2000 - 300 - 3 * 16
        assert sent_after <= 3 * 16
        skipped = next(r for r in results if r.status is UpdateStatus.SKIPPED)
        assert "AuthenticationError" in (skipped.reason or "")


async def test_bulk_report_marks_abort(fake: FakeConvai, make_client: ClientFactory) -> None:
    client = make_client(api_key="revoked-key", max_concurrency=4)
    report = await client.bulk_set_model(fake.char_ids, "gpt-4.1")
    assert report.aborted
    assert "AuthenticationError" in (report.abort_reason or "")
    assert report.total == len(fake.char_ids)
    assert report.skipped >= len(fake.char_ids) - 3 * 4
    assert "ABORTED" in report.summary()


async def test_quota_exhaustion_aborts(fake: FakeConvai, client: ConvaiClient) -> None:
    fake.faults = Faults(quota=10)
    report = await client.bulk_set_model(fake.char_ids, "gpt-4.1")
    assert report.aborted
    assert "QuotaExceededError" in (report.abort_reason or "")
    assert report.succeeded == 10
    assert fake.request_counts["/character/update"] <= 10 + 3 * 16


async def test_progress_callback(fake: FakeConvai, client: ConvaiClient) -> None:
    seen: list[Progress] = []
    await client.bulk_update(
        [CharacterUpdate(c, temperature=0.2) for c in fake.char_ids], on_progress=seen.append
    )
    last = seen[-1]
    assert (last.done, last.total, last.ok, last.failed, last.skipped) == (50, 50, 50, 0, 0)
    assert last.rate > 0
    assert [p.done for p in seen] == sorted(p.done for p in seen)


# -- journal ---------------------------------------------------------------------------------


async def test_journal_records_every_item_and_resume_skips_applied(
    fake: FakeConvai, client: ConvaiClient, tmp_path: Path
) -> None:
    journal = tmp_path / "run.jsonl"
    ids = [*fake.char_ids[:20], "no-such-character"]
    report = await client.bulk_set_model(ids, "gpt-4.1", journal=journal)
    assert (report.succeeded, report.failed) == (20, 1)
    assert stat.S_IMODE(journal.stat().st_mode) == 0o600
    entries = list(read_journal(journal))
    assert len(entries) == 21
    assert {e["outcome"] for e in entries} == {"applied", "failed"}
    assert entries[0]["set"] == {"model": "gpt-4.1"}
    assert CANARY_KEY not in journal.read_text()

    before = fake.request_counts["/character/update"]
    again = await client.bulk_set_model(ids, "gpt-4.1", journal=journal)
    assert (again.already_applied, again.succeeded, again.failed) == (20, 0, 1)
    assert fake.request_counts["/character/update"] - before == 1  # only the failed one again


async def test_journal_tolerates_a_torn_last_line(
    fake: FakeConvai, client: ConvaiClient, tmp_path: Path
) -> None:
    journal = tmp_path / "torn.jsonl"
    await client.bulk_set_temperature(fake.char_ids[:10], 0.3, journal=journal)
    with journal.open("ab") as file:
        file.write(b'\n{"i": 10, "char_id": "x", "set": {"temper')  # as after kill -9 mid-write
    report = await client.bulk_set_temperature(fake.char_ids[:12], 0.3, journal=journal)
    assert (report.already_applied, report.succeeded) == (10, 2)
    assert len([e for e in read_journal(journal) if e["outcome"] == "applied"]) == 12


KILLED_RUN = textwrap.dedent(
    """
    import asyncio, sys
    from convai_async import ConvaiClient, CharacterUpdate

    async def main():
        url, journal, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
        ids = [line.strip() for line in open(sys.argv[4])]
        updates = (CharacterUpdate(c, model="gpt-4.1", temperature=0.25) for c in ids[:count])
        async with ConvaiClient(api_key=sys.argv[5], base_url=url, max_concurrency=16) as client:
            await client.bulk_update(updates, journal=journal)

    asyncio.run(main())
    """
)


async def test_sigkill_mid_run_then_resume_loses_nothing(tmp_path: Path) -> None:
    count, concurrency = 3000, 16
    async with FakeConvai(
        characters=count, api_key=CANARY_KEY, faults=Faults(latency=(0.002, 0.006)), record=False
    ) as fake:
        ids_file = tmp_path / "ids.txt"
        ids_file.write_text("\n".join(fake.char_ids))
        script = tmp_path / "run.py"
        script.write_text(KILLED_RUN)
        journal = tmp_path / "migration.jsonl"
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            str(script),
            fake.url,
            str(journal),
            str(count),
            str(ids_file),
            CANARY_KEY,
        )
        for _ in range(3000):
            await asyncio.sleep(0.01)
            if journal.exists() and journal.read_bytes().count(b"\n") >= 800:
                break
        process.send_signal(signal.SIGKILL)
        assert await process.wait() == -signal.SIGKILL
        await asyncio.sleep(0.05)  # requests the dead process left in flight finish server-side
        applied_before_resume = fake.applied_updates
        journaled = sum(1 for e in read_journal(journal) if e["outcome"] == "applied")
        assert 0 < journaled < count
        async with ConvaiClient(
            api_key=CANARY_KEY, base_url=fake.url, max_concurrency=concurrency
        ) as client:
            report = await client.bulk_update(
                (CharacterUpdate(c, model="gpt-4.1", temperature=0.25) for c in fake.char_ids),
                journal=journal,
            )
        assert report.failed == 0
        assert report.already_applied == journaled
        assert report.succeeded == count - journaled
        assert all(
            fake.model_of(c) == "gpt-4.1" and fake.temperature_of(c) == 0.25 for c in fake.char_ids
        )
        resent = fake.applied_updates - count
        assert resent == applied_before_resume - journaled
        assert resent <= 2 * concurrency
    assert stat.S_IMODE(os.stat(journal).st_mode) == 0o600
    assert CANARY_KEY not in journal.read_text()


# -- migrations ------------------------------------------------------------------------------


async def test_plan_apply_rollback_round_trip(
    fake: FakeConvai, client: ConvaiClient, tmp_path: Path
) -> None:
    original = {c: (fake.model_of(c), fake.temperature_of(c)) for c in fake.char_ids}
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
        assert (fake.model_of(c), fake.temperature_of(c)) == expected
    entry = next(read_journal(journal))
    assert entry["previous"] == {"model": "gpt-4o", "temperature": original[entry["char_id"]][1]}

    rollback = await client.rollback(journal)
    assert rollback.succeeded == len(on_4o)
    assert {c: (fake.model_of(c), fake.temperature_of(c)) for c in fake.char_ids} == original


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


async def test_rollback_of_missing_journal_is_a_validation_error(
    client: ConvaiClient, tmp_path: Path
) -> None:
    with pytest.raises(ValidationError, match="no such file"):
        await client.rollback(tmp_path / "nope.jsonl")


def test_journal_lines_are_json(tmp_path: Path) -> None:
    from convai_async.journal import JournalWriter

    writer = JournalWriter(tmp_path / "j.jsonl")
    writer.record({"i": 0, "char_id": "c", "outcome": "applied"})
    writer.close()
    lines = [json.loads(line) for line in (tmp_path / "j.jsonl").read_text().splitlines() if line]
    assert lines[0]["journal"] == "convai-async"
    assert lines[1]["char_id"] == "c"
    _ = FAST_RETRY


async def test_stop_event_ends_the_run_gracefully(tmp_path: Path) -> None:
    async with FakeConvai(
        characters=500, faults=Faults(latency=(0.002, 0.005)), record=False
    ) as fake:
        stop = asyncio.Event()
        journal = tmp_path / "stopped.jsonl"

        def stop_after_100(progress: Progress) -> None:
            if progress.done >= 100:
                stop.set()

        async with ConvaiClient(
            api_key=fake.api_key, base_url=fake.url, max_concurrency=8
        ) as client:
            report = await client.bulk_update(
                (CharacterUpdate(c, temperature=0.9) for c in fake.char_ids),
                journal=journal,
                on_progress=stop_after_100,
                stop=stop,
            )
            assert report.stopped
            assert 100 <= report.total < 500
            assert report.failed == report.skipped == 0
            assert "STOPPED" in report.summary()
            # every update that reached the server is in the journal: nothing in limbo
            assert fake.applied_updates == report.succeeded
            assert (
                len([e for e in read_journal(journal) if e["outcome"] == "applied"])
                == report.succeeded
            )
            resumed = await client.bulk_update(
                (CharacterUpdate(c, temperature=0.9) for c in fake.char_ids), journal=journal
            )
        assert not resumed.stopped
        assert resumed.already_applied == report.succeeded
        assert resumed.succeeded == 500 - report.succeeded
        assert all(fake.temperature_of(c) == 0.9 for c in fake.char_ids)
