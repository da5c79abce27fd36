"""The benchmark suite in its tiny smoke mode, so it cannot rot (no timing assertions)."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).parent.parent


async def smoke_run(module: str, output: Path) -> tuple[str, dict[str, Any]]:
    """Run ``python -m module --smoke`` (a hang guard, no timing); its stdout and sections."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        module,
        "--smoke",
        "--output",
        str(output),
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 300)
    assert process.returncode == 0, err.decode()
    return out.decode(), read_sections(output)


def read_sections(output: Path) -> dict[str, Any]:
    sections: dict[str, Any] = json.loads(output.read_text())["sections"]
    return sections


async def test_benchmark_smoke_mode_runs_every_scenario_and_peer(tmp_path: Path) -> None:
    out, sections = await smoke_run("benchmarks.bench", tmp_path / "smoke.json")
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
    assert "| convai-async bulk |" in out


async def test_cpu_table_smoke_mode_measures_every_row(tmp_path: Path) -> None:
    output = tmp_path / "cpu.json"
    out, sections = await smoke_run("benchmarks.cpu", output)
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
    assert "| raw aiohttp json |" in out


async def test_the_rate_control_bound_runs_every_client_on_every_row(tmp_path: Path) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "benchmarks.rate_control_bound", "--items", "200", "--seeds", "1",
        "--output", str(tmp_path), cwd=ROOT,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, err = await asyncio.wait_for(process.communicate(), 300)
    assert process.returncode == 0, err.decode()
    cells = json.loads((tmp_path / "rate_control_bound.json").read_text())
    assert set(cells) == {"decimal", "seconds", "http-date", "none"}
    for rows in cells.values():
        assert "token bucket, burst 5" in rows
        assert "concurrency cap" not in rows  # no rate to tell
        for clients in rows.values():
            assert set(clients) == {"this client", "told, probing", "told, never probing"}
            assert all(cell["ratio"] > 0.0 <= cell["share_429"] < 1.0 for cell in clients.values())
    assert "| told, never probing |" in (tmp_path / "rate_control_bound.md").read_text()
