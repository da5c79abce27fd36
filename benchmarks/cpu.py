"""CPU per request against hand-written aiohttp: CPU seconds, callgrind instructions, throughput.

    python -m benchmarks.cpu                 # the full table (about five minutes on 2 cores)
    python -m benchmarks.cpu --smoke         # tiny counts, no callgrind: checks that it runs
    python -m benchmarks.cpu --only cpu callgrind latency

Rows, all at 64 in flight on loopback against FakeConvai in its own process:

- **raw aiohttp json**: ``session.post(url, json=body)`` then ``await resp.json()`` (the floor
  the targets are measured against: the code a user writes by hand);
- **raw aiohttp**: pre-encoded ``data=`` bytes and ``resp.read()`` (a lower floor, shown too);
- **convai-async calls**: awaited ``client.characters.set_model`` from 64 tasks;
- **convai-async bulk**: ``client.bulk_set_model`` without a journal;
- **convai-async bulk+journal**: the same with ``journal=`` a file in a temporary directory.

Three measurements:

1. *cpu*: the client process's CPU seconds (``time.process_time``: user + system, from
   ``getrusage``) per request. Every run gets a fresh server and a fresh client process, pinned
   to separate cores; the rows are interleaved (A B C A B C ...) and the medians reported.
2. *callgrind*: instructions per request under ``valgrind --tool=callgrind``, which do not vary
   with the machine's load. Each row runs twice, with ``warmup`` and ``warmup + count``
   requests; the difference divided by ``count`` removes start-up, imports and connecting.
3. *latency*: throughput with 50 ms of server latency at 64 in flight (the ceiling is 1,280/s).

Results: a markdown table on stdout and in ``benchmarks/results/cpu.md``, every field in
``benchmarks/results/cpu.json``.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.bench import (
    RESULTS,
    Column,
    Row,
    fake_server,
    fake_server_process,
    pinned,
    process_cpu_seconds,
    render,
    results_document,
    server_stats,
    write_results,
)

FLOOR = "raw aiohttp json"
ROWS = [
    "raw aiohttp json",
    "raw aiohttp",
    "convai-async calls",
    "convai-async bulk",
    "convai-async bulk+journal",
]
TARGETS = {
    "convai-async calls": 1.00,
    "convai-async bulk": 1.00,
    "convai-async bulk+journal": 1.10,
}
LATENCY_TARGET = 0.98
CONCURRENCY = 64
_TOTALS = re.compile(rb"^(?:summary|totals):\s*(\d+)", re.MULTILINE)


BEFORE_PREFIX = "before: "
_before_tree: list[Path] = []  # set by --before: rows labelled "before: ..." run that checkout


def peer_command(label: str, url: str, count: int) -> tuple[list[str], Path | None]:
    """The command running one row, and the directory to run it in: a row labelled
    ``before: PEER`` runs PEER from the ``--before`` checkout (its own convai_async)."""
    peer, cwd = label, None
    if label.startswith(BEFORE_PREFIX):
        peer, cwd = label[len(BEFORE_PREFIX) :], _before_tree[0]
    command = [sys.executable, "-m", "benchmarks.peers", peer, url, str(count), str(CONCURRENCY)]
    return command, cwd


def run_row(peer: str, count: int, **server: Any) -> Row:
    with fake_server_process(characters=1000, **server) as (url, process):
        command, cwd = peer_command(peer, url, count)
        server_cpu = process_cpu_seconds(process.pid)
        done = subprocess.run(
            pinned(command, 0),
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=1800,
            check=True,
        )
        stats = server_stats(url)
        server_after = process_cpu_seconds(process.pid)
    row: Row = json.loads(done.stdout.strip().splitlines()[-1])
    row["server_requests"] = stats["requests"].get("/character/update", 0)
    if server_cpu is not None and server_after is not None:
        row["server_cpu_s"] = server_after - server_cpu  # the server's share, for the record
    row["load_average"] = os.getloadavg()[0]
    return row


def interleaved(peers: list[str], repeat: int, count: int, **server: Any) -> dict[str, Row]:
    """Medians over ``repeat`` interleaved runs of every peer; each run's figure kept too."""
    runs: dict[str, list[Row]] = {peer: [] for peer in peers}
    for _ in range(repeat):
        for peer in peers:
            runs[peer].append(run_row(peer, count, **server))
    rows: dict[str, Row] = {}
    for peer, found in runs.items():
        row = dict(found[0])
        keys = ("wall_s", "cpu_s", "user_s", "system_s", "cpu_us_per_item", "items_per_s")
        for key in (*keys, "server_cpu_s", "load_average"):
            if any(key not in run for run in found):
                continue
            row[key] = statistics.median(run[key] for run in found)
        row["runs"] = len(found)
        row["cpu_us_per_item_runs"] = [round(run["cpu_us_per_item"], 2) for run in found]
        row["items_per_s_runs"] = [round(run["items_per_s"], 1) for run in found]
        row["failed"] = sum(run["failed"] for run in found)
        row["ok"] = sum(run["ok"] for run in found)
        row["server_requests"] = sum(run["server_requests"] for run in found)
        row["count"] = count * len(found)
        rows[peer] = row
    return rows


def with_before(rows: list[str]) -> list[str]:
    """``rows``, and with --before each convai-async row measured from that checkout too."""
    if not _before_tree:
        return rows
    return rows + [BEFORE_PREFIX + row for row in rows if row.startswith("convai-async")]


def cpu_section(count: int, repeat: int) -> Row:
    rows = interleaved(with_before(ROWS), repeat, count)
    floor = rows[FLOOR]["cpu_us_per_item"]
    for row in rows.values():
        row["cpu_vs_floor"] = row["cpu_us_per_item"] / floor
        # the ratio within each interleaved round, so drift between rounds cancels
        row["cpu_vs_floor_rounds"] = [
            round(mine / theirs, 3)
            for mine, theirs in zip(
                row["cpu_us_per_item_runs"], rows[FLOOR]["cpu_us_per_item_runs"], strict=True
            )
        ]
        row["cpu_vs_floor_round_median"] = statistics.median(row["cpu_vs_floor_rounds"])
    return {
        "title": f"CPU per request: {count} set_model updates x {repeat} interleaved runs, "
        f"{CONCURRENCY} in flight, no server latency",
        "rows": rows,
        "targets": [
            _target(f"{peer} CPU/request", rows[peer]["cpu_vs_floor"], limit)
            + f" (median of the per-round ratios: {rows[peer]['cpu_vs_floor_round_median']:.3f}x)"
            for peer, limit in TARGETS.items()
        ],
    }


def callgrind_instructions(peer: str, count: int, workdir: Path, core: int = 0) -> int:
    """Total instructions of one client process running ``count`` requests under callgrind
    (the count does not depend on the core, the load or the server's speed)."""
    out = workdir / f"callgrind.{re.sub(r'[^a-z+]+', '_', peer)}.{count}.out"
    with fake_server(characters=1000) as url:
        command, cwd = peer_command(peer, url, count)
        command = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", *command]
        subprocess.run(
            pinned(command, core),
            cwd=cwd,
            capture_output=True,
            timeout=3600,
            check=True,
            env={**os.environ, "PYTHONHASHSEED": "0"},
        )
    found = _TOTALS.search(out.read_bytes())
    if found is None:
        raise RuntimeError(f"no totals in {out}")
    return int(found.group(1))


def callgrind_section(count: int, warmup: int, keep: Path | None, peers: list[str]) -> Row:
    rows: dict[str, Row] = {}
    with tempfile.TemporaryDirectory(prefix="convai-callgrind-") as directory:
        workdir = keep or Path(directory)
        workdir.mkdir(parents=True, exist_ok=True)
        # Two runs at a time, one per core: slow under valgrind, and the counts do not mind.
        jobs = [(peer, n) for peer in peers for n in (warmup, warmup + count)]
        with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
            totals = list(
                pool.map(
                    lambda job: callgrind_instructions(job[1][0], job[1][1], workdir, job[0] % 2),
                    enumerate(jobs),
                )
            )
        found = dict(zip(jobs, totals, strict=True))
        for peer in peers:
            base, full = found[peer, warmup], found[peer, warmup + count]
            rows[peer] = {
                "count": count,
                "warmup": warmup,
                "instructions_base": base,
                "instructions_full": full,
                "instructions_per_item": (full - base) / count,
            }
    if FLOOR not in rows:
        return {"title": "Instructions per request (callgrind)", "rows": rows, "targets": []}
    floor = rows[FLOOR]["instructions_per_item"]
    for row in rows.values():
        row["instructions_vs_floor"] = row["instructions_per_item"] / floor
    return {
        "title": f"Instructions per request (callgrind): ({warmup}+{count}) - ({warmup}) "
        f"requests, {CONCURRENCY} in flight",
        "rows": rows,
        "targets": [
            _target(f"{peer} instructions/request", rows[peer]["instructions_vs_floor"], limit)
            for peer, limit in TARGETS.items()
            if peer in rows
        ],
    }


def latency_section(count: int, repeat: int) -> Row:
    peers = with_before(
        [FLOOR, "convai-async calls", "convai-async bulk", "convai-async bulk+journal"]
    )
    rows = interleaved(peers, repeat, count, latency=0.05)
    floor = rows[FLOOR]["items_per_s"]
    for row in rows.values():
        row["throughput_vs_floor"] = row["items_per_s"] / floor
        row["throughput_vs_floor_rounds"] = [
            round(mine / theirs, 3)
            for mine, theirs in zip(
                row["items_per_s_runs"], rows[FLOOR]["items_per_s_runs"], strict=True
            )
        ]
        row["throughput_vs_floor_round_median"] = statistics.median(
            row["throughput_vs_floor_rounds"]
        )
    return {
        "title": f"Latency-bound: {count} updates x {repeat} interleaved runs, 50 ms server "
        f"latency, {CONCURRENCY} in flight (ceiling 1,280/s)",
        "rows": rows,
        "targets": [
            _target(f"{peer} throughput", rows[peer]["throughput_vs_floor"], LATENCY_TARGET, True)
            + " (median of the per-round ratios: "
            + f"{rows[peer]['throughput_vs_floor_round_median']:.3f}x)"
            for peer in peers[1:]
        ],
    }


def _target(what: str, ratio: float, limit: float, at_least: bool = False) -> str:
    ok = ratio >= limit if at_least else ratio <= limit
    sign = ">=" if at_least else "<="
    return f"{what} {ratio:.3f}x {FLOOR} (target {sign} {limit:.2f}x): {'met' if ok else 'MISSED'}"


COLUMNS: tuple[Column, ...] = (
    ("cpu_us_per_item", "CPU us/request", "{:.1f}"),
    ("cpu_vs_floor", "CPU vs raw json", "{:.3f}x"),
    ("cpu_vs_floor_round_median", "median of round ratios", "{:.3f}x"),
    ("system_s", "system s", "{:.2f}"),
    ("server_cpu_s", "server CPU s", "{:.2f}"),
    ("load_average", "load (1 min)", "{:.1f}"),
    ("instructions_per_item", "instructions/request", "{:,.0f}"),
    ("instructions_vs_floor", "vs raw json", "{:.3f}x"),
    ("items_per_s", "requests/s", "{:.0f}"),
    ("throughput_vs_floor", "vs raw json", "{:.3f}x"),
    ("throughput_vs_floor_round_median", "median of round ratios", "{:.3f}x"),
    ("failed", "failed", "{:.0f}"),
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.cpu")
    parser.add_argument("--smoke", action="store_true", help="tiny counts, no callgrind")
    parser.add_argument("--count", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--callgrind-count", type=int, default=2_000)
    parser.add_argument("--callgrind-warmup", type=int, default=500)
    parser.add_argument("--latency-count", type=int, default=5_000)
    parser.add_argument("--latency-repeat", type=int, default=5)
    parser.add_argument("--only", nargs="*", default=None, help="cpu callgrind latency")
    parser.add_argument("--rows", nargs="*", default=None, help="callgrind: these rows only")
    parser.add_argument(
        "--before",
        type=Path,
        default=None,
        help="a checkout of an earlier version: its convai-async rows are measured beside these",
    )
    parser.add_argument("--keep-callgrind", type=Path, default=None, help="keep the .out files")
    parser.add_argument("--output", type=Path, default=None, help="JSON results file")
    args = parser.parse_args(argv)
    if args.before is not None:
        _before_tree.append(args.before.resolve())
    if args.smoke:
        args.count, args.repeat, args.latency_count = 200, 1, 200
    suites = {
        "cpu": lambda: cpu_section(args.count, args.repeat),
        "callgrind": lambda: callgrind_section(
            args.callgrind_count,
            args.callgrind_warmup,
            args.keep_callgrind,
            args.rows or with_before(ROWS),
        ),
        "latency": lambda: latency_section(
            args.latency_count, 1 if args.smoke else args.latency_repeat
        ),
    }
    chosen = args.only or (["cpu", "latency"] if args.smoke else list(suites))
    if "callgrind" in chosen and shutil.which("valgrind") is None:
        print("valgrind not found: skipping callgrind", file=sys.stderr)
        chosen = [name for name in chosen if name != "callgrind"]
    started = time.time()
    started_load = [round(load, 2) for load in os.getloadavg()]
    sections: dict[str, Row] = {}
    text = []
    for name in chosen:
        sections[name] = suites[name]()
        text.append(render(sections[name], COLUMNS, first="row"))
        print(text[-1], flush=True)
    document = results_document(sections, args.smoke, started)
    output = args.output or RESULTS / ("cpu-smoke.json" if args.smoke else "cpu.json")
    write_results(output, document)
    machine = document["machine"]
    output.with_suffix(".md").write_text(
        f"Run on {document['date']}, Python {machine['python']}, {machine['cpus']} CPUs, "
        f"client and server pinned to separate cores: {machine['pinned']}; load average at the "
        f"start {started_load}, at the end {document['load_average_at_end']} (the load column: "
        "the 1-minute load average after each run, median).\n\n" + "\n".join(text)
    )
    print(f"results: {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
