"""``on_result`` on bulk_update, apply and rollback: each item's UpdateResult as it finishes."""

from __future__ import annotations

import collections
from pathlib import Path

import pytest

from convai_async import CharacterUpdate, ConvaiClient, UpdateResult, UpdateStatus
from convai_async.testing import FakeConvai


async def test_each_item_is_handed_over_once_and_matches_the_report(
    fake: FakeConvai, client: ConvaiClient, tmp_path: Path
) -> None:
    seen: list[UpdateResult] = []
    updates = [CharacterUpdate(c, temperature=0.3) for c in fake.char_ids[:10]]
    updates.append(CharacterUpdate("no-such-character", temperature=0.3))
    report = await client.bulk_update(updates, on_result=seen.append)
    assert sorted(r.index for r in seen) == list(range(11))
    statuses = collections.Counter(r.status for r in seen)
    assert (
        (statuses[UpdateStatus.APPLIED], statuses[UpdateStatus.FAILED])
        == (
            report.succeeded,
            report.failed,
        )
        == (10, 1)
    )

    migrated: list[UpdateResult] = []
    plan = await client.plan_migration(to_model="gpt-4.1", temperature=0.4)
    journal = tmp_path / "m.jsonl"
    applied = await client.apply(plan, journal, on_result=migrated.append)
    assert len(migrated) == applied.total == len(plan.updates)
    assert {r.char_id for r in migrated} == {u.char_id for u in plan.updates}

    await client.characters.set_model(plan.updates[0].char_id, "my-own-model")
    restored: list[UpdateResult] = []
    rolled_back = await client.rollback(journal, on_result=restored.append)
    statuses = collections.Counter(r.status for r in restored)
    assert len(restored) == rolled_back.total
    assert statuses[UpdateStatus.CONFLICT] == rolled_back.conflicts == 1
    assert statuses[UpdateStatus.APPLIED] == rolled_back.succeeded == len(plan.updates) - 1


async def test_an_exception_from_on_result_ends_the_run(
    fake: FakeConvai, client: ConvaiClient
) -> None:
    def refuse(result: UpdateResult) -> None:
        raise RuntimeError(f"stop at {result.index}")

    with pytest.raises(RuntimeError, match="stop at"):
        await client.bulk_update(
            [CharacterUpdate(c, temperature=0.3) for c in fake.char_ids], on_result=refuse
        )
    assert fake.request_counts["/character/update"] < len(fake.char_ids)
