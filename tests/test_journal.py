"""The journal on its own: the line format, the locked writer with group commit, the reader,
unique names, and write-ahead as the server sees it (FakeConvai over real sockets)."""

from __future__ import annotations

import asyncio
import random
import stat
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from convai_async import CharacterUpdate, ConvaiClient, JournalError, ValidationError
from convai_async.bulk import new_journal_path
from convai_async.bulk.encoders import encode
from convai_async.bulk.format import (
    JOURNAL_VERSION,
    Header,
    Intent,
    LineError,
    Outcome,
    PlanArgs,
    PlanLine,
    Values,
    decode,
    generic_line,
)
from convai_async.bulk.journal import JournalWriter
from convai_async.bulk.reader import BadLine, read_header, read_lines
from convai_async.testing import FakeConvai

from .conftest import CANARY_KEY

HANG_GUARD = 60.0


def test_every_line_kind_round_trips_with_its_kind_first() -> None:
    header = Header(
        format="convai-async-journal",
        v=JOURNAL_VERSION,
        kind="migration",
        run="r1",
        created="2026-01-01T00:00:00.000+00:00",
        pid=7,
        plan=PlanArgs("gpt-4.1", 0.4),
    )
    intent = Intent(3, "c-1", Values("gpt-4.1", 0.4), Values(None, 0.2))
    outcome = Outcome(3, "failed", sent=True, attempts=2, error="ServerError: 503")
    for line in (header, intent, outcome):
        raw = encode(line)
        assert raw.endswith(b"\n")
        assert raw.startswith(b'{"k":"')
        assert decode(raw) == line
    assert b"from_model" not in encode(header)  # fields left at None are not written


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        (b'{"k":"intent","i":"3","c":"x","set":{"model":"m"}}', "expected an integer"),
        (b'{"k":"intent","i":3,"c":5,"set":{"model":"m"}}', "expected a string"),
        (b'{"k":"intent","i":3,"c":"x","set":{"temperature":"hot"}}', "expected a number"),
        (b'{"k":"intent","i":3,"c":"x","set":{"model":"m"', "not JSON"),
        (b'{"k":"elsewhere"}', "unknown line kind"),
        (b"[1, 2]", "not a JSON object"),
    ],
)
def test_a_wrong_type_is_a_bad_line_never_coerced(raw: bytes, problem: str) -> None:
    with pytest.raises(LineError, match=problem):
        decode(raw)


def test_reader_drops_torn_lines_and_names_bad_ones(tmp_path: Path) -> None:
    journal = tmp_path / "j.jsonl"
    good = encode(Intent(0, "a", Values(temperature=0.1)))
    journal.write_bytes(
        good
        + b'{"k":"outcome","i":0,"s":"appl\n'  # torn by a crash; the next run marked it
        + b'{"k":"resumed","at":"t","pid":1,"torn":true}\n'
        + b'{"k":"intent","i":1,"c":"b","set":{"temperature":"x"}}\n'  # bad, not torn
        + encode(Outcome(1, "applied"))
        + b'{"k":"outcome","i":2,"s":"applied","se'  # torn tail, no newline
    )
    lines = [line for _, line in read_lines(journal)]
    assert [type(line).__name__ for line in lines] == ["Intent", "Resumed", "BadLine", "Outcome"]
    bad = lines[2]
    assert isinstance(bad, BadLine)
    assert (bad.number, bad.index, bad.char_id, bad.kind) == (4, 1, "b", "intent")
    assert "line 4" in bad.describe()


def test_header_refuses_files_that_are_not_journals_of_this_version(tmp_path: Path) -> None:
    cases = {
        "chars.csv": b"char_id,model\nabc,gpt-4o\n",
        "old.jsonl": b'{"journal":"convai-async","v":1,"kind":"migration"}\n',
        "list.jsonl": b"[]\n",
    }
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(ValidationError):
            read_header(tmp_path / name)
    with pytest.raises(ValidationError, match="version 1"):
        read_header(tmp_path / "old.jsonl")
    with pytest.raises(ValidationError, match="no such file"):
        read_header(tmp_path / "missing.jsonl")
    (tmp_path / "empty.jsonl").write_bytes(b"")
    assert read_header(tmp_path / "empty.jsonl") is None


def test_new_journal_paths_are_unique_and_private(tmp_path: Path) -> None:
    paths = {new_journal_path(tmp_path, "convai-migrate") for _ in range(50)}
    assert len(paths) == 50
    for path in paths:
        assert path.stat().st_size == 0
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert path.name.startswith("convai-migrate-")
        assert path.suffix == ".jsonl"
    with pytest.raises(JournalError):
        new_journal_path(tmp_path / "missing", "x")


def test_storage_problems_known_in_advance_are_journal_errors(tmp_path: Path) -> None:
    (tmp_path / "a-directory").mkdir()
    with pytest.raises(JournalError, match="is a directory"):
        JournalWriter.open(tmp_path / "a-directory")
    with pytest.raises(JournalError, match="does not exist"):
        JournalWriter.open(tmp_path / "missing" / "j.jsonl")


async def test_intents_queued_together_share_one_write_and_one_fsync(tmp_path: Path) -> None:
    writer = JournalWriter.open(tmp_path / "j.jsonl")
    writer.start([])
    writes, syncs = writer.writes, writer.syncs
    waits = [writer.intend(Intent(i, f"c{i}", Values(temperature=0.5))) for i in range(64)]
    await asyncio.gather(*waits)
    assert (writer.writes - writes, writer.syncs - syncs) == (1, 1)
    for i in range(64):
        writer.record(Outcome(i, "applied", sent=True, attempts=1))
    await writer.aclose()
    lines = [line for _, line in read_lines(tmp_path / "j.jsonl")]
    assert len(lines) == 128
    assert not (tmp_path / "j.jsonl.lock").exists()


HOLDER = textwrap.dedent(
    """
    import sys
    from convai_async.bulk.journal import JournalWriter
    writer = JournalWriter.open(sys.argv[1])
    print("locked", flush=True)
    sys.stdin.readline()
    writer.close()
    """
)


async def test_a_journal_held_by_a_live_process_is_refused_naming_it(tmp_path: Path) -> None:
    journal = tmp_path / "held.jsonl"
    holder = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        HOLDER,
        str(journal),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert holder.stdout is not None
    assert holder.stdin is not None
    try:
        line = await asyncio.wait_for(holder.stdout.readline(), HANG_GUARD)
        assert line == b"locked\n", "the lock holder did not start"
        async with FakeConvai(characters=5, api_key=CANARY_KEY) as fake:
            async with ConvaiClient(api_key=CANARY_KEY, base_url=fake.url) as client:
                with pytest.raises(JournalError, match=rf"pid {holder.pid}\b"):
                    await client.bulk_set_temperature(fake.char_ids, 0.5, journal=journal)
            assert fake.request_counts["/character/update"] == 0
    finally:
        holder.stdin.write(b"\n")
        await holder.stdin.drain()
        assert await asyncio.wait_for(holder.wait(), HANG_GUARD) == 0


class _WriteAheadWitness(FakeConvai):
    """A FakeConvai that checks, as each update arrives, that its intent is on disk."""

    def __init__(self, journal: Path, **options: Any) -> None:
        super().__init__(**options)
        self.journal = journal
        self.unjournaled: list[str] = []

    def _update_character(self, body: Any) -> Any:
        char_id = body.get("charID") if isinstance(body, dict) else None
        on_disk = self.journal.read_bytes() if self.journal.exists() else b""
        if f'"c":"{char_id}"'.encode() not in on_disk:
            self.unjournaled.append(str(char_id))
        return super()._update_character(body)


async def test_no_request_reaches_the_server_before_its_intent_is_on_disk(tmp_path: Path) -> None:
    journal = tmp_path / "wa.jsonl"
    async with _WriteAheadWitness(journal, characters=300, record=False) as fake:
        async with ConvaiClient(
            api_key=fake.api_key, base_url=fake.url, max_concurrency=32
        ) as client:
            report = await client.bulk_update(
                [CharacterUpdate(c, temperature=0.7) for c in fake.char_ids], journal=journal
            )
    assert report.succeeded == 300
    assert fake.applied_updates == 300
    assert fake.unjournaled == []


def test_the_compiled_encoders_write_what_the_converter_writes() -> None:
    rng = random.Random(7)
    models = [None, "gpt-4.1", 'mo"dél\\x', "\u2028"]
    temperatures = [None, 0.0, 0.4, 1.0, 0.123456789, 1]

    def values() -> Values:
        return Values(rng.choice(models), rng.choice(temperatures))

    makers = [
        lambda: Intent(rng.randrange(10**9), rng.choice(["a", 'ü"x', "c\n"]), values(), values()),
        lambda: Intent(rng.randrange(10), "c", values()),
        lambda: Outcome(rng.randrange(10**6), "failed", rng.random() < 0.5, 2, 'E: "x"\u2028'),
        lambda: Outcome(rng.randrange(10**6), "applied"),
        lambda: PlanLine(rng.randrange(100), "c", values(), rng.choice([None, values()])),
    ]
    for _ in range(3000):
        line = rng.choice(makers)()
        assert encode(line) == (generic_line(line) + "\n").encode()
        assert decode(encode(line)) == line


async def test_a_window_starts_when_it_is_full_or_when_someone_waits(tmp_path: Path) -> None:
    writer = JournalWriter.open(tmp_path / "j.jsonl")
    writer.start([])
    writer.window = 10
    syncs, writes = writer.syncs, writer.writes
    early = [writer.intend(Intent(i, "c", Values(temperature=0.1))) for i in range(5)]
    await asyncio.sleep(0)  # one loop iteration: a flush, had one been started, writes now
    assert (writer.writes, writer.syncs) == (writes, syncs)  # five, nobody waiting: not yet
    writer.need(early[0])
    await asyncio.gather(*early)
    assert writer.syncs == syncs + 1  # one fsync for all five
    full = [writer.intend(Intent(i, "c", Values(temperature=0.1))) for i in range(5, 15)]
    await asyncio.gather(*full)  # a full window goes without anyone asking
    assert writer.syncs == syncs + 2
    await writer.aclose()
