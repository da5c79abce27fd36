"""Bulk updates and migrations against FakeConvai: every item one outcome, flat memory,
per-character order, fast abort, journal and resume (with a real SIGKILL), plan/apply/rollback."""

from __future__ import annotations

import asyncio
import stat
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
from convai_async.bulk.encoders import encode
from convai_async.bulk.format import Intent, Outcome, Values
from convai_async.bulk.reader import read_lines
from convai_async.testing import FakeConvai, Faults

from .conftest import CANARY_KEY, ClientFactory

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


def outcomes(journal: Path, status: str | None = None) -> list[Outcome]:
    return [
        line
        for _, line in read_lines(journal)
        if isinstance(line, Outcome) and (status is None or line.s == status)
    ]


async def test_journal_records_every_item_and_resume_skips_applied(
    fake: FakeConvai, client: ConvaiClient, tmp_path: Path
) -> None:
    journal = tmp_path / "run.jsonl"
    ids = [*fake.char_ids[:20], "no-such-character"]
    report = await client.bulk_set_model(ids, "gpt-4.1", journal=journal)
    assert (report.succeeded, report.failed) == (20, 1)
    assert stat.S_IMODE(journal.stat().st_mode) == 0o600
    intents = [line for _, line in read_lines(journal) if isinstance(line, Intent)]
    assert len(intents) == 21
    assert {o.s for o in outcomes(journal)} == {"applied", "failed"}
    assert intents[0].set == Values(model="gpt-4.1")
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
        file.write(b'{"k":"outcome","i":10,"s":"appl')  # as after kill -9 mid-write
    report = await client.bulk_set_temperature(fake.char_ids[:12], 0.3, journal=journal)
    assert (report.already_applied, report.succeeded) == (10, 2)
    assert len(outcomes(journal, "applied")) == 12


async def test_a_resume_never_sends_an_earlier_update_after_a_later_one_was_applied(
    fake: FakeConvai, tmp_path: Path
) -> None:
    a, b = fake.char_ids[:2]
    updates = [
        CharacterUpdate(a, temperature=0.1),
        CharacterUpdate(b, temperature=0.1),
        CharacterUpdate(a, temperature=0.2),
        CharacterUpdate(b, temperature=0.2),
        CharacterUpdate(a, temperature=0.3),
    ]
    journal = tmp_path / "order.jsonl"
    fake.faults = Faults(server_error_ratio=1.0, limit=1)  # the first request fails (503)
    async with ConvaiClient(
        api_key=fake.api_key, base_url=fake.url, max_concurrency=1, max_retries=0
    ) as client:
        report = await client.bulk_update(updates, journal=journal)
        assert report.failed == 1
        assert report.failures[0].index == 0
        assert fake.temperature_of(a) == 0.3
        sent_before = fake.request_counts["/character/update"]
        resumed = await client.bulk_update(updates, journal=journal)
    assert resumed.superseded == 1  # index 0: a later update of the same character was applied
    assert resumed.already_applied == 4
    assert resumed.ok
    assert fake.request_counts["/character/update"] == sent_before
    assert (fake.temperature_of(a), fake.temperature_of(b)) == (0.3, 0.2)
    assert [o.i for o in outcomes(journal, "superseded")] == [0]


async def test_resume_resends_in_doubt_items_in_order_and_ends_at_the_last_value(
    fake: FakeConvai, client: ConvaiClient, tmp_path: Path
) -> None:
    a = fake.char_ids[0]
    updates = [CharacterUpdate(a, temperature=step / 10) for step in range(5)]
    journal = tmp_path / "doubt.jsonl"
    report = await client.bulk_update(updates[:2], journal=journal)
    assert report.succeeded == 2
    with journal.open("ab") as file:  # as after a crash: intents 2-4 durable, no answers
        for index in range(2, 5):
            file.write(encode(Intent(index, a, Values(temperature=index / 10))))
    resumed = await client.bulk_update(updates, journal=journal)
    assert (resumed.already_applied, resumed.succeeded) == (2, 3)
    sent = [r.body["temperature"] for r in fake.requests if r.path == "/character/update"]
    assert sent == [0.0, 0.1, 0.2, 0.3, 0.4]
    assert fake.temperature_of(a) == 0.4


async def test_a_different_item_at_a_journaled_index_is_sent(
    fake: FakeConvai, client: ConvaiClient, tmp_path: Path
) -> None:
    journal = tmp_path / "changed.jsonl"
    await client.bulk_set_temperature(fake.char_ids[:3], 0.3, journal=journal)
    report = await client.bulk_set_temperature(fake.char_ids[:3], 0.6, journal=journal)
    assert (report.already_applied, report.succeeded) == (0, 3)
    assert all(fake.temperature_of(c) == 0.6 for c in fake.char_ids[:3])


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
            assert len(outcomes(journal, "applied")) == report.succeeded
            resumed = await client.bulk_update(
                (CharacterUpdate(c, temperature=0.9) for c in fake.char_ids), journal=journal
            )
        assert not resumed.stopped
        assert resumed.already_applied == report.succeeded
        assert resumed.succeeded == 500 - report.succeeded
        assert all(fake.temperature_of(c) == 0.9 for c in fake.char_ids)
