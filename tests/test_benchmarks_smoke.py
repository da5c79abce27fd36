"""The benchmark suite in its tiny smoke mode, so it cannot rot (no timing assertions)."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

ROOT = Path(__file__).parent.parent


async def test_benchmark_smoke_mode_runs_every_scenario_and_peer(tmp_path: Path) -> None:
    output = tmp_path / "smoke.json"
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "benchmarks.bench",
        "--smoke",
        "--output",
        str(output),
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 300)
    assert process.returncode == 0, err.decode()
    document = json.loads(output.read_text())
    sections = document["sections"]
    assert set(sections) == {"overhead", "latency", "ratelimit", "memory", "scaling"}
    overhead = sections["overhead"]["rows"]
    assert set(overhead) == {
        "convai-async bulk",
        "convai-async bulk+journal",
        "convai-async calls",
        "raw aiohttp json",
        "raw aiohttp",
        "httpx",
        "naive gather+backoff",
        "requests (docs)",
    }
    for section in sections.values():
        for row in section["rows"].values():
            assert row["failed"] == 0
            assert row["ok"] == row["count"]
    assert sections["ratelimit"]["rows"]["convai-async bulk"]["all_applied"]
    assert "| convai-async bulk |" in out.decode()


async def test_cpu_table_smoke_mode_measures_every_row(tmp_path: Path) -> None:
    output = tmp_path / "cpu.json"
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "benchmarks.cpu",
        "--smoke",
        "--output",
        str(output),
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 300)
    assert process.returncode == 0, err.decode()
    sections = json.loads(output.read_text())["sections"]
    assert set(sections) == {"cpu", "latency"}
    assert set(sections["cpu"]["rows"]) == {
        "raw aiohttp json",
        "raw aiohttp",
        "convai-async calls",
        "convai-async bulk",
        "convai-async bulk+journal",
    }
    for section in sections.values():
        for row in section["rows"].values():
            assert row["failed"] == 0
            assert row["ok"] == row["count"] == row["server_requests"]
            assert row["cpu_s"] > 0
    assert output.with_suffix(".md").read_text().count("| convai-async") >= 6
    assert "| raw aiohttp json |" in out.decode()
