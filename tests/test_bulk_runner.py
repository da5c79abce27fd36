"""The bulk runner's guarantees on each of its input paths (sync or async input, with or without
a journal, run to a report or streamed): how far the input is read ahead, one result and one
journal outcome per item taken, and what happens when the input itself fails."""

from __future__ import annotations

import asyncio
import collections
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from convai_async import CharacterUpdate, ConvaiClient, UpdateResult, UpdateStatus
from convai_async.bulk.encoders import encode, intent_line, outcome_line, update_intent_line
from convai_async.bulk.format import Intent, Outcome, decode, generic_line
from convai_async.bulk.format import Values as JournalValues
from convai_async.bulk.journal import JournalWriter
from convai_async.bulk.reader import read_lines
from convai_async.testing import FakeConvai

CONCURRENCY = 8


class _Broken(Exception):
    pass


class _Counted:
    """``count`` updates over ``ids`` from a generator that counts what was pulled."""

    def __init__(self, ids: list[str], count: int) -> None:
        self.ids, self.count, self.pulled = ids, count, 0

    def __iter__(self) -> Iterator[CharacterUpdate]:
        for i in range(self.count):
            self.pulled += 1
            yield CharacterUpdate(self.ids[i % len(self.ids)], temperature=(i % 10) / 10)


def _journal_lines(path: Path) -> tuple[list[Intent], list[Outcome]]:
    lines = [line for _, line in read_lines(path)]
    intents = [line for line in lines if isinstance(line, Intent)]
    outcomes = [line for line in lines if isinstance(line, Outcome)]
    return intents, outcomes


@pytest.mark.parametrize("journaled", [False, True])
async def test_a_run_to_a_report_reads_a_bounded_way_ahead(tmp_path: Path, journaled: bool) -> None:
    lead: list[int] = []

    async with FakeConvai(characters=60, record=False) as fake:
        updates = _Counted(fake.char_ids, 600)
        finished = 0

        def seen(_: UpdateResult) -> None:
            nonlocal finished
            finished += 1
            lead.append(updates.pulled - finished)

        journal = tmp_path / "run.jsonl" if journaled else None
        async with ConvaiClient(
            api_key=fake.api_key, base_url=fake.url, max_concurrency=CONCURRENCY
        ) as client:
            report = await client.bulk_update(iter(updates), journal=journal, on_result=seen)
    assert report.succeeded == 600
    assert max(lead) <= (3 if journaled else 2) * CONCURRENCY
    if journal is not None:
        intents, outcomes = _journal_lines(journal)
        assert sorted(line.i for line in intents) == list(range(600))
        assert sorted(line.i for line in outcomes) == list(range(600))
        # intents are queued in input order, so the first ones reach the file in index order
        assert [line.i for line in intents] == list(range(600))


@pytest.mark.parametrize("journaled", [False, True])
async def test_a_stream_reads_a_bounded_way_ahead(tmp_path: Path, journaled: bool) -> None:
    async with FakeConvai(characters=50, record=False) as fake:
        updates = _Counted(fake.char_ids, 10_000)

        journal = tmp_path / "stream.jsonl" if journaled else None
        async with ConvaiClient(
            api_key=fake.api_key, base_url=fake.url, max_concurrency=CONCURRENCY
        ) as client:
            seen = 0
            stream = client.stream_updates(iter(updates), journal=journal)
            async for _ in stream:
                seen += 1
                assert updates.pulled - seen <= (3 if journaled else 2) * CONCURRENCY
                if seen == 300:
                    break
            await stream.aclose()  # type: ignore[attr-defined]
    if journal is not None:
        intents, outcomes = _journal_lines(journal)
        # every item taken ends with an outcome: sent ones as answered, the rest in doubt
        assert len({line.i for line in intents}) <= 300 + 3 * CONCURRENCY
        assert {line.i for line in outcomes} <= {line.i for line in intents}


@pytest.mark.parametrize("journaled", [False, True])
@pytest.mark.parametrize("asynchronous", [False, True])
async def test_an_input_that_fails_raises_after_every_item_taken_has_its_result(
    tmp_path: Path, journaled: bool, asynchronous: bool
) -> None:
    results: list[UpdateResult] = []
    async with FakeConvai(characters=40, record=False) as fake:
        ids = fake.char_ids

        def sync_updates() -> Iterator[CharacterUpdate]:
            for i in range(100):
                if i == 70:
                    raise _Broken("the input broke at 70")
                yield CharacterUpdate(ids[i % len(ids)], model="gpt-4.1")

        async def async_updates() -> AsyncIterator[CharacterUpdate]:
            for update in sync_updates():
                await asyncio.sleep(0)
                yield update

        journal = tmp_path / "broken.jsonl" if journaled else None
        async with ConvaiClient(
            api_key=fake.api_key, base_url=fake.url, max_concurrency=CONCURRENCY
        ) as client:
            with pytest.raises(_Broken, match="broke at 70"):
                await client.bulk_update(
                    async_updates() if asynchronous else sync_updates(),
                    journal=journal,
                    on_result=results.append,
                )
    assert sorted(result.index for result in results) == list(range(70))
    assert all(result.status is UpdateStatus.APPLIED for result in results)
    if journal is not None:
        intents, outcomes = _journal_lines(journal)
        assert sorted(line.i for line in intents) == list(range(70))
        assert sorted(line.i for line in outcomes) == list(range(70))


async def test_updates_to_one_character_keep_their_order_with_a_journal(tmp_path: Path) -> None:
    async with FakeConvai(characters=3, record=False) as fake:
        updates = [
            CharacterUpdate(fake.char_ids[i % 3], temperature=round(i / 100, 2)) for i in range(90)
        ]
        finished: dict[str, list[int]] = collections.defaultdict(list)
        async with ConvaiClient(
            api_key=fake.api_key, base_url=fake.url, max_concurrency=CONCURRENCY
        ) as client:
            report = await client.bulk_update(
                updates,
                journal=tmp_path / "order.jsonl",
                on_result=lambda r: finished[r.char_id].append(r.index),
            )
        assert report.succeeded == 90
        for char_id, indexes in finished.items():
            assert indexes == sorted(indexes)
            assert fake.temperature_of(char_id) == updates[indexes[-1]].temperature


def test_the_field_encoders_write_what_encode_writes() -> None:
    values = [
        JournalValues("gpt-4.1"),
        JournalValues(None, 0.25),
        JournalValues("m\u00e9", 1),
        JournalValues(None, None),
        JournalValues("m", float("nan")),  # not JSON: the general path refuses it too
    ]
    for index, char_id, wanted, was in [
        (0, "a", values[0], None),
        (12, 'q"uote', values[1], values[2]),
        (10**9, "\u2028", values[2], values[0]),
        (1, "b", values[3], values[3]),
    ]:
        line = Intent(index, char_id, wanted, was)
        assert intent_line(index, char_id, wanted, was) == encode(line)
        flat = update_intent_line(index, char_id, wanted.model, wanted.temperature, was)
        assert flat == encode(line)
        assert encode(line) == (generic_line(line) + "\n").encode()
        assert decode(encode(line)) == line
    nan = values[4]
    with pytest.raises(ValueError, match="not JSON compliant"):
        update_intent_line(2, "c", nan.model, nan.temperature, None)
    for outcome in [
        Outcome(3, "applied", True, 1),
        Outcome(4, "failed", False, 0, 'E: "x"'),
        Outcome(5, "skipped", 1, 0, None),  # type: ignore[arg-type]  # an int for a bool
    ]:
        args = (outcome.i, outcome.s, outcome.sent, outcome.attempts, outcome.error)
        assert outcome_line(*args) == encode(outcome) == (generic_line(outcome) + "\n").encode()


async def test_intents_of_one_batch_share_one_future_and_fail_together(tmp_path: Path) -> None:
    writer = JournalWriter.open(tmp_path / "j.jsonl")
    writer.start([])
    writer.window = 100
    first = writer.intend(intent_line(0, "a", JournalValues(temperature=0.1)))
    second = writer.intend(Intent(1, "b", JournalValues(temperature=0.2)))
    assert first is second
    writer.need(first)
    await first
    third = writer.intend(intent_line(2, "c", JournalValues(temperature=0.3)))
    assert third is not first
    assert not third.done()
    writer.need(third)
    await third
    await writer.aclose()
    intents, _ = _journal_lines(tmp_path / "j.jsonl")
    assert [line.i for line in intents] == [0, 1, 2]
