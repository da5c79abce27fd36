"""Crashes in real processes: a migration killed (SIGKILL, two quick SIGINTs) or starved of
disk at random moments, then resumed and rolled back, ends with every character exactly as it
was before the migration. The server is a FakeConvai in this process; the migration runs in a
child process, synchronised on its journal file, never on sleeps."""

from __future__ import annotations

import asyncio
import json
import random
import signal
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from convai_async import ConvaiClient, JournalError
from convai_async.bulk.format import Intent, Outcome
from convai_async.bulk.reader import read_lines
from convai_async.testing import FakeConvai, Faults

from .conftest import CANARY_KEY, FAST_RETRY

HANG_GUARD = 60.0
FLEET = 200
TRIALS = 20

CHILD = textwrap.dedent(
    """
    import asyncio, json, resource, signal, sys
    from convai_async import ConvaiClient

    # Ctrl-C raises KeyboardInterrupt, as at a terminal, even when the test runner itself was
    # started with SIGINT ignored (nohup, a background job, some CI runners): children inherit that.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    from convai_async.bulk.encoders import encode
    from convai_async.bulk.migration import _plan_lines

    async def main():
        url, key, journal, extra = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
        async with ConvaiClient(api_key=key, base_url=url, max_concurrency=8) as client:
            plan = await client.plan_migration(to_model="gpt-4.1", temperature=0.4)
            if extra != "none":  # disk full: room for the plan and `extra` bytes more
                size = sum(len(encode(line)) for line in _plan_lines(plan))
                signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
                limit = size + int(extra)
                resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
            print("planned", flush=True)
            report = await client.apply(plan, journal)
            print(json.dumps({
                "planned": len(plan.updates), "total": report.total,
                "succeeded": report.succeeded, "failed": report.failed,
                "skipped": report.skipped, "reason": report.abort_reason,
            }), flush=True)

    asyncio.run(main())
    """
)

Snapshot = dict[str, tuple[Any, Any]]


def snapshot(fake: FakeConvai) -> Snapshot:
    return {c: (fake.model_of(c), fake.temperature_of(c)) for c in fake.char_ids}


def journaled_chars(journal: Path) -> set[str]:
    if not journal.exists():
        return set()
    return {line.c for _, line in read_lines(journal) if isinstance(line, Intent)}


async def child(tmp_path: Path, fake: FakeConvai, journal: Path, extra: str = "none") -> Any:
    script = tmp_path / "migrate.py"
    script.write_text(CHILD)
    return await asyncio.create_subprocess_exec(
        sys.executable,
        str(script),
        fake.url,
        CANARY_KEY,
        str(journal),
        extra,
        stdout=asyncio.subprocess.PIPE,
    )


async def wait_until(condition: Callable[[], bool], process: Any | None = None) -> bool:
    """Poll a condition on the file system or the server (a hang guard, not a timing). False
    when the child process ended first."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + HANG_GUARD
    while not condition():
        if process is not None and process.returncode is not None:
            return False
        assert loop.time() < deadline, "hang guard: the condition never came"
        await asyncio.sleep(0.001)
    return True


def kill_point(rng: random.Random) -> Callable[[bytes], bool]:
    """When to strike: as the journal appears (the plan being written), once the plan is
    complete (before any intent), within the first window, or anywhere later."""
    where = rng.choice(["plan", "planned", "first-window", "anywhere", "anywhere"])
    if where == "plan":
        return lambda text: True
    if where == "planned":
        return lambda text: b'"k":"planned"' in text
    intents = rng.randint(1, 8) if where == "first-window" else rng.randint(9, FLEET)
    return lambda text: text.count(b'{"k":"intent"') >= intents


async def resume_and_roll_back(fake: FakeConvai, journal: Path) -> None:
    fake.faults = Faults()  # the latency only served to catch the child mid-run
    async with ConvaiClient(
        api_key=CANARY_KEY, base_url=fake.url, max_concurrency=16, retry=FAST_RETRY
    ) as client:
        plan = await client.plan_migration(to_model="gpt-4.1", temperature=0.4)
        resumed = await client.apply(plan, journal)  # the same command again
        assert resumed.ok, resumed.summary()
        rollback = await client.rollback(journal)
        assert rollback.ok, rollback.summary()


async def interrupted_trial(tmp_path: Path, seed: int, interrupt: Callable[[Any], None]) -> None:
    rng = random.Random(seed)
    async with FakeConvai(
        characters=FLEET,
        seed=seed,
        api_key=CANARY_KEY,
        record=False,
        faults=Faults(latency=(0.001, 0.004)),
    ) as fake:
        original = snapshot(fake)
        journal = tmp_path / f"trial-{seed}.jsonl"
        process = await child(tmp_path, fake, journal)
        strike = kill_point(rng)
        try:
            alive = await wait_until(
                lambda: journal.exists() and strike(journal.read_bytes()), process
            )
            if alive:
                interrupt(process)
        finally:
            if process.returncode is None:
                code = await asyncio.wait_for(process.wait(), HANG_GUARD)
            else:
                code = process.returncode
        assert code != 0 or not alive
        await wait_until(lambda: fake.in_flight == 0)  # what the child sent has landed
        changed = {c for c, values in snapshot(fake).items() if values != original[c]}
        assert changed <= journaled_chars(journal)  # nothing changed without an intent on disk
        await resume_and_roll_back(fake, journal)
        assert snapshot(fake) == original


def sigkill(process: Any) -> None:
    process.send_signal(signal.SIGKILL)


def two_sigints(process: Any) -> None:
    process.send_signal(signal.SIGINT)
    process.send_signal(signal.SIGINT)


@pytest.mark.parametrize("seed", range(TRIALS))
async def test_sigkill_at_a_random_moment_then_resume_and_rollback_restore_the_fleet(
    tmp_path: Path, seed: int
) -> None:
    await interrupted_trial(tmp_path, seed, sigkill)


@pytest.mark.parametrize("seed", range(100, 100 + TRIALS))
async def test_two_quick_sigints_then_resume_and_rollback_restore_the_fleet(
    tmp_path: Path, seed: int
) -> None:
    await interrupted_trial(tmp_path, seed, two_sigints)


async def test_disk_full_mid_run_stops_sending_and_every_item_is_accounted_for(
    tmp_path: Path,
) -> None:
    async with FakeConvai(
        characters=FLEET, api_key=CANARY_KEY, record=False, faults=Faults(latency=(0.001, 0.004))
    ) as fake:
        original = snapshot(fake)
        journal = tmp_path / "full.jsonl"
        process = await child(tmp_path, fake, journal, extra="4000")
        stdout, _ = await asyncio.wait_for(process.communicate(), HANG_GUARD)
        assert process.returncode == 0
        report = json.loads(stdout.splitlines()[-1])
        assert report["total"] == report["planned"]  # every item ended with an outcome
        assert report["succeeded"] + report["failed"] + report["skipped"] == report["total"]
        assert report["skipped"] > 0
        assert "JournalError" in report["reason"]
        await wait_until(lambda: fake.in_flight == 0)
        now = snapshot(fake)
        changed = {c for c, values in now.items() if values != original[c]}
        assert changed <= journaled_chars(journal)
        applied = {
            line.i
            for _, line in read_lines(journal)
            if isinstance(line, Outcome) and line.s == "applied"
        }
        assert len(applied) <= report["succeeded"]  # no torn line was read back as success
        await resume_and_roll_back(fake, journal)
        assert snapshot(fake) == original


async def test_a_disk_too_full_for_the_plan_fails_before_anything_is_sent(
    tmp_path: Path,
) -> None:
    async with FakeConvai(characters=FLEET, api_key=CANARY_KEY, record=False) as fake:
        process = await child(tmp_path, fake, tmp_path / "tiny.jsonl", extra="-500")
        _, _ = await asyncio.wait_for(process.communicate(), HANG_GUARD)
        assert process.returncode != 0
        assert fake.request_counts["/character/update"] == 0


async def test_journal_error_is_a_convai_error_naming_the_path(tmp_path: Path) -> None:
    async with FakeConvai(characters=3, api_key=CANARY_KEY) as fake:
        async with ConvaiClient(api_key=CANARY_KEY, base_url=fake.url) as client:
            plan = await client.plan_migration(to_model="gpt-4.1")
            with pytest.raises(JournalError, match="does not exist") as caught:
                await client.apply(plan, tmp_path / "no-folder" / "j.jsonl")
        assert str(tmp_path / "no-folder") in str(caught.value)
        assert fake.request_counts["/character/update"] == 0
