"""``python -m convai_async.testing``, run as a subprocess: help, startup lines, stopping."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

COMMAND = [sys.executable, "-m", "convai_async.testing"]
HANG_GUARD = 60.0


@contextmanager
def served(*args: str) -> Iterator[subprocess.Popen[str]]:
    server = subprocess.Popen(
        [*COMMAND, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        yield server
    finally:
        if server.poll() is None:
            server.kill()
        server.communicate(timeout=HANG_GUARD)


def test_help_explains_every_option_with_an_example() -> None:
    done = subprocess.run(
        [*COMMAND, "--help"], capture_output=True, text=True, timeout=HANG_GUARD, check=True
    )
    text = done.stdout
    assert "Serve a fake Convai API" in text
    for option in (
        "--port",
        "--characters",
        "--api-key",
        "--latency",
        "--rate-limit",
        "--burst",
        "--retry-after",
        "--tenant-rate",
        "--error-ratio",
        "--seconds",
    ):
        assert option in text
    assert "{seconds,decimal,http-date,none}" in text
    assert "example:" in text
    assert "python -m convai_async.testing --port" in text


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_runs_until_a_signal_and_prints_url_and_key(signum: signal.Signals) -> None:
    with served("--characters", "7", "--api-key", "my-test-key") as server:
        assert server.stdout is not None
        url = server.stdout.readline().strip()
        key_line = server.stdout.readline().strip()
        until_line = server.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        assert key_line == "API key: my-test-key"
        assert until_line == "serving 7 characters until Ctrl-C or SIGTERM"
        with urllib.request.urlopen(url + "/_fake/stats", timeout=HANG_GUARD) as response:
            stats = json.load(response)
        assert sum(stats["models"].values()) == 7
        assert server.poll() is None  # alive before we wait on it
        server.send_signal(signum)
        out, err = server.communicate(timeout=HANG_GUARD)
    assert server.returncode == 0, err
    assert out.startswith("stopped (stopped by a signal) after ")
    assert "0 requests, 0 answered 429" in out


def test_a_time_limit_is_announced_and_its_end_printed() -> None:
    with served("--characters", "1", "--seconds", "0.5") as server:
        assert server.stdout is not None
        lines = [server.stdout.readline().strip() for _ in range(3)]
        assert lines[1] == "API key: fake-convai-key"
        assert "0.5 s have passed (--seconds)" in lines[2]
        out, err = server.communicate(timeout=HANG_GUARD)
    assert server.returncode == 0, err
    assert out.startswith("stopped (time limit reached) after ")


@pytest.mark.parametrize(
    ("args", "complaint"),
    [
        (["--error-ratio", "2"], "must be between 0 and 1"),
        (["--latency", "-1"], "must be 0 or more"),
        (["--rate-limit", "0"], "must be more than 0"),
        (["--retry-after", "minutes"], "invalid choice"),
    ],
)
def test_bad_options_exit_2_with_the_reason(args: list[str], complaint: str) -> None:
    done = subprocess.run([*COMMAND, *args], capture_output=True, text=True, timeout=HANG_GUARD)
    assert done.returncode == 2
    assert complaint in done.stderr


def test_a_taken_port_is_one_line_and_exit_1() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [*COMMAND, "--port", str(port)], capture_output=True, text=True, timeout=HANG_GUARD
        )
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"error: cannot serve on port {port}: ")
    assert done.stdout == ""
