"""Side-by-side benchmarks of convai-async against its peers, in one run.

    python -m benchmarks.bench              # the full suite (about ten minutes on 2 cores)
    python -m benchmarks.bench --smoke      # tiny counts: checks that everything still runs

Each measurement starts a fresh FakeConvai in its own process and runs one peer in another
process, so that client CPU time and peak RSS belong to that peer alone. Medians over
``--repeat`` runs; targets are ratios against raw aiohttp measured in the same run.
Results: a table on stdout and JSON in benchmarks/results/.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results"
Row = dict[str, Any]


def pinned(command: list[str], core: int) -> list[str]:
    """Client and server on separate cores, where the machine allows: less migration noise."""
    if shutil.which("taskset") and (os.cpu_count() or 1) >= 2:
        return ["taskset", "-c", str(core), *command]
    return command


@contextmanager
def fake_server(
    *, characters: int, latency: float = 0.0, rate_limit: float | None = None, burst: int = 20
) -> Iterator[str]:
    with fake_server_process(
        characters=characters, latency=latency, rate_limit=rate_limit, burst=burst
    ) as (url, _):
        yield url


def process_cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of a running process (Linux /proc; None elsewhere)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextmanager
def fake_server_process(
    *, characters: int, latency: float = 0.0, rate_limit: float | None = None, burst: int = 20
) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    """A FakeConvai in its own process (pinned to core 1): its URL and the process."""
    command = [
        sys.executable, "-m", "convai_async.testing", "--port", "0", "--seconds", "1800",
        "--characters", str(characters), "--latency", str(latency), "--burst", str(burst),
    ]  # fmt: skip
    if rate_limit is not None:
        command += ["--rate-limit", str(rate_limit)]
    server = subprocess.Popen(pinned(command, 1), stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        yield server.stdout.readline().strip(), server
    finally:
        server.terminate()
        server.wait(10)


def server_stats(url: str) -> Row:
    with urllib.request.urlopen(url + "/_fake/stats", timeout=10) as response:
        return dict(json.load(response))


def run_peer(peer: str, url: str, count: int, concurrency: int) -> Row:
    done = subprocess.run(
        pinned(
            [sys.executable, "-m", "benchmarks.peers", peer, url, str(count), str(concurrency)], 0
        ),
        capture_output=True,
        text=True,
        timeout=1800,
        check=True,
    )
    row: Row = json.loads(done.stdout.strip().splitlines()[-1])
    return row


def measured(peer: str, count: int, concurrency: int, **server: Any) -> Row:
    with fake_server(**server) as url:
        row = run_peer(peer, url, count, concurrency)
        stats = server_stats(url)
    row["server_requests"] = stats["requests"].get("/character/update", 0)
    row["server_429"] = stats["rate_limited"]
    row["server_applied"] = stats["applied_updates"]
    row["models"] = stats["models"]
    return row


def median_row(rows: list[Row]) -> Row:
    merged = dict(rows[0])
    for key in ("wall_s", "cpu_s", "cpu_us_per_item", "items_per_s", "rss_peak_mb"):
        merged[key] = statistics.median(row[key] for row in rows)
    merged["runs"] = len(rows)
    return merged


def repeated(
    peers: list[str], repeat: int, count: Callable[[str], int], concurrency: int, **server: Any
) -> dict[str, Row]:
    """Interleaved repeats (A B C A B C ...) so drift on a noisy machine hits every peer."""
    rows: dict[str, list[Row]] = {peer: [] for peer in peers}
    for _ in range(repeat):
        for peer in peers:
            rows[peer].append(measured(peer, count(peer), concurrency, **server))
    return {peer: median_row(found) for peer, found in rows.items()}


def verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


def overhead(scale: float, repeat: int) -> Row:
    count = max(200, int(20_000 * scale))
    peers = [
        "convai-async bulk",
        "convai-async bulk+journal",
        "convai-async calls",
        "raw aiohttp json",
        "raw aiohttp",
        "httpx",
        "naive gather+backoff",
        "requests (docs)",
    ]
    slow = {"requests (docs)": count // 10, "httpx": count // 4}  # slow here: fewer items
    rows = repeated(
        peers,
        repeat,
        lambda p: slow.get(p, count),
        64,
        characters=1000,
    )
    floor = rows["raw aiohttp json"]["cpu_us_per_item"]
    for row in rows.values():
        row["cpu_vs_aiohttp"] = row["cpu_us_per_item"] / floor
    ratio = {peer: row["cpu_vs_aiohttp"] for peer, row in rows.items()}
    return {
        "title": f"1. Overhead: {count} set_model updates, concurrency 64, no server latency "
        "(CPU against raw aiohttp with json= and resp.json(); see benchmarks.cpu for the full table)",
        "rows": rows,
        "targets": [
            f"{peer} CPU/request {ratio[peer]:.2f}x raw aiohttp json (target <= {limit:.2f}x): "
            f"{verdict(ratio[peer] <= limit)}"
            for peer, limit in (
                ("convai-async bulk", 1.00),
                ("convai-async calls", 1.00),
                ("convai-async bulk+journal", 1.10),
            )
        ],
    }


def latency_bound(scale: float, repeat: int) -> Row:
    count = max(200, int(5_000 * scale))
    peers = ["convai-async bulk", "convai-async calls", "raw aiohttp json", "raw aiohttp", "httpx"]
    rows = repeated(peers, repeat, lambda p: count, 64, characters=1000, latency=0.05)
    floor = rows["raw aiohttp json"]["items_per_s"]
    for row in rows.values():
        row["throughput_vs_aiohttp"] = row["items_per_s"] / floor
    return {
        "title": f"2. Latency-bound: {count} updates, 50 ms server latency, concurrency 64 (ceiling 1,280/s)",
        "rows": rows,
        "targets": [
            f"{peer} throughput {rows[peer]['throughput_vs_aiohttp']:.1%} of raw aiohttp json "
            f"(target >= 98%): {verdict(rows[peer]['throughput_vs_aiohttp'] >= 0.98)}"
            for peer in ("convai-async bulk", "convai-async calls")
        ],
    }


def rate_limited(scale: float) -> Row:
    count = max(300, int(3_000 * scale))
    server = {"characters": count, "rate_limit": 200.0, "burst": 20}
    rows = {
        peer: measured(peer, count, 32, **server)
        for peer in ("convai-async bulk", "naive gather+backoff")
    }
    ideal = (count - 20) / 200.0
    for row in rows.values():
        row["vs_ideal"] = row["wall_s"] / ideal
        row["share_429"] = row["server_429"] / max(1, row["server_requests"])
        row["all_applied"] = row["models"].get("gpt-4.1", 0) == count
    ours = rows["convai-async bulk"]
    return {
        "title": f"3. Rate-limit efficiency: {count} updates, server allows 200/s (burst 20), concurrency 32, ideal {ideal:.1f}s",
        "rows": rows,
        "targets": [
            f"time {ours['vs_ideal']:.2f}x ideal (target <= 1.10x): {verdict(ours['vs_ideal'] <= 1.10)}",
            f"429 share {ours['share_429']:.1%} (target <= 3%): {verdict(ours['share_429'] <= 0.03)}",
            f"every update applied: {verdict(ours['all_applied'])}",
        ],
    }


def memory(scale: float) -> Row:
    small, large = max(500, int(50_000 * scale)), max(2_000, int(200_000 * scale))
    rows = {
        f"convai-async bulk {small}": measured("convai-async bulk", small, 64, characters=1000),
        f"convai-async bulk {large}": measured("convai-async bulk", large, 64, characters=1000),
        f"raw aiohttp {large}": measured("raw aiohttp", large, 64, characters=1000),
        f"naive gather+backoff {small}": measured(
            "naive gather+backoff", small, 64, characters=1000
        ),
    }
    for row in rows.values():
        row["growth_mb"] = row["rss_peak_mb"] - row["rss_before_mb"]
    a, b = rows[f"convai-async bulk {small}"], rows[f"convai-async bulk {large}"]
    ratio = b["rss_peak_mb"] / a["rss_peak_mb"]
    return {
        "title": f"4. Memory: bulk runs of {small} and {large} updates from a generator (peak RSS)",
        "rows": rows,
        "targets": [
            f"growth {b['growth_mb']:.1f} MB at {large} (target < 50 MB): {verdict(b['growth_mb'] < 50)}",
            f"peak at {large} is {ratio:.2f}x peak at {small} (target <= 1.2x): {verdict(ratio <= 1.2)}",
        ],
    }


def scaling(scale: float, levels: list[int]) -> Row:
    rows: dict[str, Row] = {}
    for concurrency in levels:
        count = max(20, min(5_000, int(40 * concurrency * max(scale, 0.05))))
        for peer in ("convai-async bulk", "raw aiohttp"):
            rows[f"{peer} @{concurrency}"] = measured(
                peer, count, concurrency, characters=1000, latency=0.05
            )
    return {
        "title": "5. Scaling: throughput under 50 ms latency by concurrency",
        "rows": rows,
        "targets": [],
    }


COLUMNS = (
    ("count", "items", "{:.0f}"),
    ("wall_s", "wall s", "{:.2f}"),
    ("items_per_s", "items/s", "{:.0f}"),
    ("cpu_us_per_item", "CPU us/item", "{:.0f}"),
    ("cpu_vs_aiohttp", "CPU vs aiohttp", "{:.2f}x"),
    ("throughput_vs_aiohttp", "vs aiohttp", "{:.1%}"),
    ("vs_ideal", "vs ideal", "{:.2f}x"),
    ("server_requests", "requests", "{:.0f}"),
    ("share_429", "429 share", "{:.1%}"),
    ("rss_peak_mb", "peak RSS MB", "{:.1f}"),
    ("growth_mb", "growth MB", "{:.1f}"),
    ("failed", "failed", "{:.0f}"),
)


Column = tuple[str, str, str]  # key in a row, heading, format


def render(section: Row, all_columns: tuple[Column, ...] = COLUMNS, first: str = "peer") -> str:
    """A section as a markdown table (only the columns some row has) and its target lines."""
    rows: dict[str, Row] = section["rows"]
    columns = [c for c in all_columns if any(c[0] in row for row in rows.values())]
    lines = [
        f"### {section['title']}",
        "",
        f"| {first} | " + " | ".join(c[1] for c in columns) + " |",
    ]
    lines.append("|---" * (len(columns) + 1) + "|")
    for name, row in rows.items():
        cells = [fmt.format(row[key]) if key in row else "" for key, _, fmt in columns]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += [""] + [f"- {target}" for target in section["targets"]]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench")
    parser.add_argument("--smoke", action="store_true", help="tiny counts, one run each")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--only", nargs="*", default=None, help="overhead latency ratelimit memory scaling"
    )
    parser.add_argument("--output", type=Path, default=None, help="JSON results file")
    args = parser.parse_args(argv)
    scale, repeat = (0.01, 1) if args.smoke else (1.0, args.repeat)
    levels = [1, 4] if args.smoke else [1, 4, 16, 64, 256]
    suites: dict[str, Callable[[], Row]] = {
        "overhead": lambda: overhead(scale, 1 if args.smoke else max(repeat, 5)),
        "latency": lambda: latency_bound(scale, repeat),
        "ratelimit": lambda: rate_limited(0.1 if args.smoke else 1.0),
        "memory": lambda: memory(scale),
        "scaling": lambda: scaling(scale, levels),
    }
    started = time.time()
    sections = {}
    for name, suite in suites.items():
        if args.only is None or name in args.only:
            sections[name] = suite()
            print(render(sections[name]), flush=True)
    output = args.output or RESULTS / ("smoke.json" if args.smoke else "latest.json")
    write_results(output, results_document(sections, args.smoke, started))
    print(f"results: {output}")
    return 0


def results_document(sections: dict[str, Row], smoke: bool, started: float) -> Row:
    """The JSON document of a run: when, on what machine, and every section."""
    return {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "load_average_at_end": [round(load, 2) for load in os.getloadavg()],
        "machine": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "pinned": bool(shutil.which("taskset")) and (os.cpu_count() or 1) >= 2,
        },
        "smoke": smoke,
        "seconds": round(time.time() - started, 1),
        "sections": sections,
    }


def write_results(output: Path, document: Row) -> None:
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(document, indent=2, default=str) + "\n")


if __name__ == "__main__":
    sys.exit(main())
