"""Crash trials through the command line: `convai-async migrate` killed (SIGKILL, two quick
SIGINTs) at chosen moments, the same command run again, then `convai-async rollback`: every
character ends exactly as it was before the migration.

The server is FakeConvai in a process of its own (``python -m convai_async.testing``), so it
outlives nothing but itself; the fleet is read through a ConvaiClient. The CLI is struck when
its journal shows the moment wanted, never after a sleep, and only while it is alive.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from convai_async import ConvaiClient

from .conftest import CANARY_KEY, FAST_RETRY
from .test_cli import HANG_GUARD, cli, start

FLEET = 400
MIGRATE = ("migrate", "--to-model", "gpt-4.1", "--temperature", "0.4", "--journal", "j.jsonl")
# 4 in flight at 5 ms each: a few hundred ms of sending, so each strike finds work left to do
SERVER = ("--latency", "0.005", "--rate-limit", "2000", "--burst", "100")

Snapshot = dict[str, tuple[Any, Any]]


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    """A FakeConvai in its own process; yields its URL. Stopped with SIGTERM at the end."""
    process = subprocess.Popen(
        [sys.executable, "-m", "convai_async.testing", "--characters", str(FLEET),
         "--api-key", CANARY_KEY, *SERVER],
        stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        url = process.stdout.readline().strip()  # its first line, alone; then the key
        assert url.startswith("http://127.0.0.1:"), url
        assert process.stdout.readline().strip() == f"API key: {CANARY_KEY}"
        yield url
    finally:
        process.terminate()
        process.communicate(timeout=HANG_GUARD)


async def fleet(url: str) -> Snapshot:
    async with ConvaiClient(api_key=CANARY_KEY, base_url=url, retry=FAST_RETRY) as client:
        return {c.char_id: (c.model, c.temperature) for c in await client.characters.list()}


def strike_when(where: str, rng: random.Random) -> Callable[[Path], bool]:
    """When to strike, read from the journal: at once (the interpreter still starting), as the
    journal appears (the plan being written), once the plan is complete (before any intent),
    within the first window of intents, or anywhere in the first half of the run."""
    if where == "start":
        return lambda journal: True
    if where == "journal":
        return lambda journal: journal.exists()
    if where == "planned":
        return lambda journal: journal.exists() and b'"k":"planned"' in journal.read_bytes()
    intents = rng.randint(1, 8) if where == "first-window" else rng.randint(9, FLEET // 2)
    return lambda journal: (
        journal.exists() and journal.read_bytes().count(b'{"k":"intent"') >= intents
    )


async def alive_when(condition: Callable[[], bool], process: Any) -> bool:
    """Poll the journal until ``condition`` holds (a hang guard, not a timing); False if the
    child ended first."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + HANG_GUARD
    while not condition():
        if process.returncode is not None:
            return False
        assert loop.time() < deadline, "hang guard: the moment never came"
        await asyncio.sleep(0.001)
    return process.returncode is None


async def trial(server: str, tmp_path: Path, where: str, seed: int, signals: list[int]) -> None:
    env = {"CONVAI_BASE_URL": server}
    original = await fleet(server)
    process = await start(
        *MIGRATE, "--yes", "--concurrency", "4", env=env, cwd=tmp_path,
        stdout=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    journal = tmp_path / "j.jsonl"
    strike = strike_when(where, random.Random(seed))
    alive = await alive_when(lambda: strike(journal), process)
    if alive:
        for signum in signals:
            with contextlib.suppress(ProcessLookupError):  # it may end between two signals
                process.send_signal(signum)
    _, said = await asyncio.wait_for(process.communicate(), HANG_GUARD)
    assert process.returncode != 0 or not alive, said.decode()
    assert b"Traceback" not in said
    again = await cli(*MIGRATE, "--yes", env=env, cwd=tmp_path)  # the same command: it finishes
    assert again.code == 0, again.output
    assert {values for values in (await fleet(server)).values()} == {("gpt-4.1", 0.4)}
    back = await cli("rollback", "--journal", "j.jsonl", "--yes", env=env, cwd=tmp_path)
    assert back.code == 0, back.output
    assert await fleet(server) == original


@pytest.mark.parametrize(
    ("where", "seed"),
    [("start", 0), ("journal", 1), ("planned", 2), ("first-window", 3), ("anywhere", 4)],
)
async def test_sigkill_then_the_same_command_then_rollback_restores_the_fleet(
    server: str, tmp_path: Path, where: str, seed: int
) -> None:
    await trial(server, tmp_path, where, seed, [signal.SIGKILL])


@pytest.mark.parametrize(("where", "seed"), [("first-window", 5), ("anywhere", 6)])
async def test_two_quick_sigints_then_the_same_command_then_rollback_restore_the_fleet(
    server: str, tmp_path: Path, where: str, seed: int
) -> None:
    await trial(server, tmp_path, where, seed, [signal.SIGINT, signal.SIGINT])
