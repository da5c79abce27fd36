"""The journal's cost: a journaled bulk run against an unjournaled one, and resume memory.

    python -m benchmarks.journal                 # 64 in flight: loopback, then 50 ms of latency
    python -m benchmarks.journal --smoke         # tiny counts: checks that it still runs
    python -m benchmarks.journal --memory        # peak RSS resuming a 1,000,000-entry journal

Each run starts a fresh FakeConvai in its own process and the client in another (pinned to
separate cores where ``taskset`` exists), alternating journaled and unjournaled runs so drift
hits both alike. The journal is on the same disk as ``--folder`` (default: a temporary folder),
with a real fsync per window. Target: journaled at most 1.10x the unjournaled wall time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.bench import fake_server, pinned
from convai_async.testing import DEFAULT_FAKE_API_KEY

TARGET = 1.10


async def _client_run(
    url: str, count: int, concurrency: int, journal: str | None
) -> dict[str, Any]:
    from convai_async import ConvaiClient  # the client process imports only what it measures

    async with ConvaiClient(
        api_key=DEFAULT_FAKE_API_KEY, base_url=url, max_concurrency=concurrency
    ) as client:
        ids = [c.char_id for c in await client.characters.list()]
        updates = (ids[i % len(ids)] for i in range(count))
        cpu, wall = time.process_time(), time.perf_counter()
        report = await client.bulk_set_model(updates, "gpt-4.1", journal=journal)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    assert report.succeeded == count, report.summary()
    return {"wall": wall, "cpu": cpu, "rate": count / wall}


def _measure(url: str, count: int, concurrency: int, journal: str | None) -> dict[str, Any]:
    command = [
        sys.executable, "-m", "benchmarks.journal", "--client", url,
        "--count", str(count), "--concurrency", str(concurrency),
    ]  # fmt: skip
    if journal is not None:
        command += ["--journal", journal]
    done = subprocess.run(pinned(command, 0), capture_output=True, text=True, check=True)
    return dict(json.loads(done.stdout.splitlines()[-1]))


def compare(
    count: int, concurrency: int, repeat: int, folder: Path, latency: float = 0.0
) -> dict[str, Any]:
    rows: dict[str, list[dict[str, Any]]] = {"unjournaled": [], "journaled": []}
    with fake_server(characters=min(count, 5000), latency=latency) as url:
        _measure(url, min(count, 2000), concurrency, None)  # warm-up: connections, page cache
        for run in range(repeat):
            for name in rows:
                journal = str(folder / f"bench-{run}.jsonl") if name == "journaled" else None
                rows[name].append(_measure(url, count, concurrency, journal))
                if journal is not None:
                    os.unlink(journal)
    medians = {
        name: {key: statistics.median(r[key] for r in runs) for key in runs[0]}
        for name, runs in rows.items()
    }
    ratio = medians["journaled"]["wall"] / medians["unjournaled"]["wall"]
    cpu_ratio = medians["journaled"]["cpu"] / medians["unjournaled"]["cpu"]
    return {
        "latency": latency,
        "medians": medians,
        "wall_ratio": ratio,
        "cpu_ratio": cpu_ratio,
        "ok": ratio <= TARGET,
    }


def _synthetic_journal(path: Path, entries: int, in_doubt: int, char_ids: list[str]) -> None:
    """A bulk journal of ``entries`` items, all applied but the last ``in_doubt``."""
    from convai_async.bulk.encoders import encode
    from convai_async.bulk.format import Intent, Outcome, Values, new_header

    with path.open("wb") as file:
        file.write(encode(new_header("bulk")))
        chunk: list[bytes] = []
        for index in range(entries):
            chunk.append(encode(Intent(index, char_ids[index % len(char_ids)], Values("gpt-4.1"))))
            if index < entries - in_doubt:
                chunk.append(encode(Outcome(index, "applied", sent=True, attempts=1)))
            if len(chunk) >= 20000:
                file.write(b"".join(chunk))
                chunk = []
        file.write(b"".join(chunk))


async def _resume_run(url: str, path: str, entries: int) -> dict[str, Any]:
    from convai_async import ConvaiClient

    async with ConvaiClient(api_key=DEFAULT_FAKE_API_KEY, base_url=url) as client:
        ids = [c.char_id for c in await client.characters.list()]
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        wall = time.perf_counter()
        report = await client.bulk_set_model(
            (ids[i % len(ids)] for i in range(entries)), "gpt-4.1", journal=path
        )
        wall = time.perf_counter() - wall
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "already_applied": report.already_applied,
        "sent": report.succeeded,
        "peak_rss_mb": peak / 1024,
        "rss_before_mb": before / 1024,
        "seconds": wall,
    }


def memory(entries: int, folder: Path) -> dict[str, Any]:
    with fake_server(characters=5000) as url:
        ids = _ids(url)
        path = folder / "million.jsonl"
        _synthetic_journal(path, entries, 100, ids)
        size = path.stat().st_size
        command = [
            sys.executable, "-m", "benchmarks.journal", "--resume-client", url,
            "--journal", str(path), "--count", str(entries),
        ]  # fmt: skip
        done = subprocess.run(pinned(command, 0), capture_output=True, text=True, check=True)
        row = dict(json.loads(done.stdout.splitlines()[-1]))
        path.unlink()
    row.update(entries=entries, journal_mb=size / 1e6, ok=row["peak_rss_mb"] < 200)
    return row


def _ids(url: str) -> list[str]:
    async def listing() -> list[str]:
        from convai_async import ConvaiClient

        async with ConvaiClient(api_key=DEFAULT_FAKE_API_KEY, base_url=url) as client:
            return [c.char_id for c in await client.characters.list()]

    return asyncio.run(listing())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.journal")
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--memory", action="store_true")
    parser.add_argument("--count", type=int, default=20000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--folder", type=Path)
    parser.add_argument("--client", metavar="URL", help=argparse.SUPPRESS)
    parser.add_argument("--resume-client", metavar="URL", help=argparse.SUPPRESS)
    parser.add_argument("--journal", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.client:
        row = asyncio.run(_client_run(args.client, args.count, args.concurrency, args.journal))
        print(json.dumps(row))
        return 0
    if args.resume_client:
        print(json.dumps(asyncio.run(_resume_run(args.resume_client, args.journal, args.count))))
        return 0
    with tempfile.TemporaryDirectory(dir=args.folder) as scratch:
        folder = Path(scratch)
        if args.memory:
            row = memory(args.count if args.count != 20000 else 1_000_000, folder)
        elif args.smoke:
            row = {"loopback": compare(500, 16, 1, folder)}
        else:
            row = {
                "loopback": compare(args.count, args.concurrency, args.repeat, folder),
                "latency_50ms": compare(
                    args.count // 4, args.concurrency, args.repeat, folder, latency=0.05
                ),
            }
    print(json.dumps(row, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
