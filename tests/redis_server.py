"""A real ``redis-server`` on a free loopback port, for the shared-limit tests and benchmarks.

No fakeredis: the Lua scripts, ``TIME`` and expiry are Redis's own. When redis-server is not
installed the tests skip, except in CI (``$CI`` set), where they fail: CI installs it.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from convai_async._engine.shared import SharedLimit

__all__ = ["RedisServer", "redis_server_binary", "running_redis", "serve_redis", "until"]

START_GUARD = 60.0  # hang guard only: a healthy redis-server answers within milliseconds
_POLL = 0.01


def redis_server_binary() -> str:
    """The redis-server path; skips the test when missing (fails it in CI)."""
    found = shutil.which("redis-server")
    if found is not None:
        return found
    reason = "redis-server is not installed (apt-get install -y redis-server)"
    if os.environ.get("CI"):
        pytest.fail(f"{reason}; CI must install it (.ci/run)")
    pytest.skip(reason)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _die_with_parent() -> None:
    """In the child: ask Linux to stop redis-server when the test process dies."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def answers_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0) as conn:
            conn.sendall(b"PING\r\n")
            return conn.recv(16).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """One redis-server process; ``start`` and ``stop`` may be repeated (same port, as a
    restarted server)."""

    def __init__(self, binary: str, directory: Path, port: int | None = None) -> None:
        self.binary = binary
        self.directory = directory
        self.port = port if port is not None else _free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        command = [
            self.binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self.directory),
        ]
        self.process = subprocess.Popen(
            command,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=_die_with_parent,
        )
        guard = time.monotonic() + START_GUARD
        while not answers_ping(self.port):
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.process.returncode}")
            if time.monotonic() > guard:
                self.stop()
                raise RuntimeError("redis-server did not answer PING within the hang guard")
            time.sleep(_POLL)
        return self

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None


@contextlib.contextmanager
def running_redis() -> Iterator[RedisServer]:
    """A started RedisServer in a temporary directory, stopped afterwards."""
    binary = redis_server_binary()
    with tempfile.TemporaryDirectory(prefix="convai-redis-") as directory:
        server = RedisServer(binary, Path(directory)).start()
        try:
            yield server
        finally:
            server.stop()


def serve_redis() -> Iterator[RedisServer]:
    """A test's own redis-server, as a fixture: ``redis_server = pytest.fixture(serve_redis)``."""
    with running_redis() as server:
        yield server


async def until(condition: Callable[[], object], what: str, guard: float = 60.0) -> None:
    """Wait for a condition the code under test brings about in the background; ``guard`` is a
    hang guard only."""
    loop = asyncio.get_running_loop()
    give_up = loop.time() + guard
    while not condition():
        assert loop.time() < give_up, f"hang guard: {what}"
        await asyncio.sleep(0.005)


async def take_turn(limit: SharedLimit, rate: float | None, burst: int) -> None:
    """Wait for a send slot from ``limit`` at ``rate`` (past the shared pause), as the
    limiter's pacing does with its ``try_turn``."""
    while (wait := await limit.try_turn(rate, burst, time.monotonic())) > 0.0:
        await asyncio.sleep(wait)
