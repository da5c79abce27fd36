"""Many processes, one API key: the shared rate limit through Redis, measured side by side.

    python -m benchmarks.shared_limit               # every scenario, about 4 minutes on 2 cores
    python -m benchmarks.shared_limit --only shared alone --items 600

Each process is a real one (``python -m benchmarks.shared_limit worker ...``) running a bulk
run at ``max_concurrency=32``; FakeConvai runs alone in its own process
(``python -m convai_async.testing --rate-limit 200 --burst 20``), redis-server in a third.
Workers get ready first and all start on one "go" line, so import time is not measured.

Scenarios:
  shared   4 processes, 1,500 items each, with one redis_url: time against ideal, 429 share,
           and the Redis round trips per request (count and cost);
  alone    the same 4 processes without Redis (each learns the limit alone);
  told     the same 4 with one redis_url, told the key's rate (requests_per_second=200, the
           whole key's): no learning, so what is left beyond ideal is the sharing's own cost;
  told-alone  the same 4 without Redis, each told a quarter (50/s): the local pacing's cost;
  joiner   one process alone for 12 s, then 3 more: each one's rate, alone and together;
  restart  Redis stopped 4 s into a shared run and started 4 s later: items applied,
           WARNINGs per process, failures counted, shared again at the end;
  cost     one process, no server limit, with and without Redis: the time a request gains.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from convai_async import ConvaiClient
from convai_async._engine.shared import SharedAdaptiveLimiter
from convai_async.bulk.updates import updates_for
from convai_async.testing import DEFAULT_FAKE_API_KEY, FakeConvai
from tests.redis_server import RedisServer, redis_server_binary

RATE, BURST, CONCURRENCY, PROCESSES = 200.0, 20, 32, 4
MODEL = "gpt-4.1"
Row = dict[str, Any]
TRACE = False
RETRY_AFTER = "seconds"  # how the fake's 429s say when to retry (its default: whole seconds)


# -- one worker process --------------------------------------------------------------------------


class _Warnings(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


async def _work(
    url: str, first: int, count: int, total: int, redis_url: str | None, rate: float | None
) -> Row:
    warnings = _Warnings()
    logging.getLogger("convai_async").addHandler(warnings)
    ids = FakeConvai(characters=total).char_ids[first : first + count]  # the server's own seed
    options: dict[str, Any] = {} if redis_url is None else {"redis_url": redis_url}
    if rate is not None:
        options["requests_per_second"] = rate
    if redis_url is not None and os.environ.get("BENCH_REDIS_TIMEOUT"):
        options["redis_timeout"] = float(os.environ["BENCH_REDIS_TIMEOUT"])
    async with ConvaiClient(
        api_key=DEFAULT_FAKE_API_KEY, base_url=url, max_concurrency=CONCURRENCY, **options
    ) as client:
        print("ready", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        started = time.time()
        trace: list[tuple[float, float | None, str]] = []  # the rate over time, for --trace

        async def sample() -> None:
            while True:
                now = client.stats
                rate = now.effective_rate and round(now.effective_rate, 1)
                trace.append((round(time.time() - started, 2), rate, now.shared_limit))
                await asyncio.sleep(0.25)

        sampler = asyncio.create_task(sample())
        done: list[float] = []
        failed = 0
        async for result in client.stream_updates(updates_for(ids, model=MODEL)):
            done.append(time.time())
            failed += not result.ok
        ended = time.time()
        sampler.cancel()
        stats = client.stats
        limiter = client._session._limiter  # the shared limit's round trips, for the figures
        shared = limiter.shared if isinstance(limiter, SharedAdaptiveLimiter) else None
        if shared is not None:  # give the reconnect loop its chance, then report the status
            give_up = time.monotonic() + 30
            while shared.status != "shared" and time.monotonic() < give_up:
                await asyncio.sleep(0.05)
        row: Row = {
            "started": started,
            "ended": ended,
            "done": done,
            "failed": failed,
            "requests": stats.requests,
            "rate_limited": stats.rate_limited,
            "effective_rate": stats.effective_rate,
            "warnings": [m for m in warnings.messages if "Redis" in m],
            "shared_limit": client.stats.shared_limit,
            "shared_limit_failures": stats.shared_limit_failures,
            "trace": trace,
        }
        if shared is not None:
            row["round_trips"] = shared.round_trips
            row["round_trip_ms"] = 1000 * shared.round_trip_seconds / max(1, shared.round_trips)
            row["timeouts"] = shared.link.timeouts
            row["late_answers"] = shared.link.late
    return row


def worker(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.shared_limit worker")
    parser.add_argument("url")
    parser.add_argument("first", type=int)
    parser.add_argument("count", type=int)
    parser.add_argument("total", type=int)
    parser.add_argument("--redis-url")
    parser.add_argument("--rate", type=float)
    args = parser.parse_args(argv)
    row = asyncio.run(
        _work(args.url, args.first, args.count, args.total, args.redis_url, args.rate)
    )
    print(json.dumps(row), flush=True)


# -- the parent ----------------------------------------------------------------------------------


@contextmanager
def fake_server(characters: int, limited: bool = True) -> Iterator[str]:
    command = [
        sys.executable, "-m", "convai_async.testing", "--port", "0", "--seconds", "1800",
        "--characters", str(characters), "--burst", str(BURST), "--retry-after", RETRY_AFTER,
    ]  # fmt: skip
    if limited:
        command += ["--rate-limit", str(RATE)]
    server = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        yield server.stdout.readline().strip()
    finally:
        server.terminate()
        server.wait(10)


@contextmanager
def redis_server() -> Iterator[RedisServer]:
    with tempfile.TemporaryDirectory(prefix="convai-bench-redis-") as directory:
        server = RedisServer(redis_server_binary(), Path(directory)).start()
        try:
            yield server
        finally:
            server.stop()


def server_stats(url: str) -> Row:
    with urllib.request.urlopen(url + "/_fake/stats", timeout=10) as response:
        return dict(json.load(response))


def spawn(
    url: str, first: int, count: int, total: int, redis_url: str | None, rate: float | None = None
) -> Any:
    command = [sys.executable, "-m", "benchmarks.shared_limit", "worker", url]
    command += [str(first), str(count), str(total)]
    if redis_url is not None:
        command += ["--redis-url", redis_url]
    if rate is not None:
        command += ["--rate", str(rate)]
    process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    assert process.stdout.readline().strip() == "ready"
    return process


def go(process: Any) -> None:
    process.stdin.write("go\n")
    process.stdin.flush()


def collect(process: Any) -> Row:
    out, _ = process.communicate(timeout=600)
    row: Row = json.loads(out.strip().splitlines()[-1])
    return row


def bulk_run(
    items: int, redis_url: str | None, during: Any = None, rate: float | None = None
) -> tuple[Row, list[Row]]:
    """The 4 processes; ``rate``: the requests per second each is told (none: learnt)."""
    total = items * PROCESSES
    with fake_server(total) as url:
        before = server_stats(url)
        workers = [spawn(url, i * items, items, total, redis_url, rate) for i in range(PROCESSES)]
        started = time.time()
        for process in workers:
            go(process)
        if during is not None:
            during()
        rows = [collect(process) for process in workers]
        after = server_stats(url)
    if TRACE:
        for row in rows:
            print(row["trace"], file=sys.stderr)
    requests = after["requests"].get("/character/update", 0) - before["requests"].get(
        "/character/update", 0
    )
    wall = max(row["ended"] for row in rows) - started
    ideal = (total - BURST) / RATE
    summary: Row = {
        "items": total,
        "applied": after["applied_updates"],
        "failed": sum(row["failed"] for row in rows),
        "wall_s": wall,
        "ideal_s": ideal,
        "vs_ideal": wall / ideal,
        "requests": requests,
        "answered_429": after["rate_limited"],
        "share_429": after["rate_limited"] / max(1, requests),
    }
    if redis_url is not None:
        trips = sum(row.get("round_trips", 0) for row in rows)
        summary["round_trips_per_request"] = trips / max(1, sum(r["requests"] for r in rows))
        summary["round_trip_ms"] = sum(r.get("round_trip_ms", 0) for r in rows) / len(rows)
        summary["warnings_per_process"] = [len(row["warnings"]) for row in rows]
        summary["failures_per_process"] = [row["shared_limit_failures"] for row in rows]
        summary["timeouts_per_process"] = [row.get("timeouts") for row in rows]
        summary["late_answers_per_process"] = [row.get("late_answers") for row in rows]
        summary["status_at_end"] = [row["shared_limit"] for row in rows]
    return summary, rows


def rate_between(done: list[float], start: float, end: float) -> float:
    return sum(1 for at in done if start <= at < end) / max(1e-9, end - start)


def joiner(items: int) -> Row:
    alone_for, settle = 12.0, 3.0  # alone long enough for the controller to learn the limit
    with redis_server() as redis, fake_server(items * 6) as url:
        first = spawn(url, 0, items * 3, items * 6, redis.url)
        others = [spawn(url, items * (3 + i), items, items * 6, redis.url) for i in range(3)]
        go(first)
        started = time.time()
        time.sleep(alone_for)
        for process in others:
            go(process)
        rows = [collect(first), *(collect(process) for process in others)]
    together_end = min(row["ended"] for row in rows)
    together = (started + alone_for + settle, together_end)
    return {
        "alone_rate": rate_between(rows[0]["done"], started + 2.0, started + alone_for),
        "alone_rate_last_3s": rate_between(
            rows[0]["done"], started + alone_for - 3.0, started + alone_for
        ),
        "together_rates": [rate_between(row["done"], *together) for row in rows],
        "together_window_s": together[1] - together[0],
    }


def restart(items: int) -> Row:
    with redis_server() as redis:

        def outage() -> None:
            time.sleep(4.0)
            redis.stop()
            time.sleep(4.0)
            redis.start()

        summary, _ = bulk_run(items, redis.url, during=outage)
    return summary


def cost(items: int, repeat: int = 3) -> Row:
    """One process, no server limit: what the Redis round trips add per request (medians)."""
    walls: dict[str, list[float]] = {"redis": [], "local": []}
    trips: list[float] = []
    rtt: list[float] = []
    with redis_server() as redis:
        for _ in range(repeat):
            for mode in ("local", "redis"):
                with fake_server(items, limited=False) as url:
                    process = spawn(url, 0, items, items, redis.url if mode == "redis" else None)
                    started = time.time()
                    go(process)
                    row = collect(process)
                walls[mode].append((row["ended"] - started) / items * 1e6)
                if mode == "redis":
                    trips.append(row["round_trips"] / max(1, row["requests"]))
                    rtt.append(row["round_trip_ms"])
    local, shared = statistics.median(walls["local"]), statistics.median(walls["redis"])
    return {
        "items": items,
        "wall_us_per_item_local": local,
        "wall_us_per_item_redis": shared,
        "added_us_per_item": shared - local,
        "round_trips_per_request": statistics.median(trips),
        "round_trip_ms": statistics.median(rtt),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.shared_limit")
    parser.add_argument("--items", type=int, default=1500, help="items per process")
    parser.add_argument(
        "--only",
        nargs="+",
        default=["shared", "alone", "told", "told-alone", "joiner", "restart", "cost"],
        metavar="SCENARIO",
    )
    parser.add_argument("--trace", action="store_true", help="each process's rate, to stderr")
    parser.add_argument(
        "--retry-after", choices=["seconds", "decimal", "http-date", "none"], default="seconds"
    )
    args = parser.parse_args(argv)
    global TRACE, RETRY_AFTER
    TRACE, RETRY_AFTER = args.trace, args.retry_after
    results: Row = {}
    for scenario in args.only:
        if scenario == "shared":
            with redis_server() as redis:
                results["shared"] = bulk_run(args.items, redis.url)[0]
        elif scenario == "alone":
            results["alone"] = bulk_run(args.items, None)[0]
        elif scenario == "told":  # the key's rate told through Redis: the sharing's own cost
            with redis_server() as redis:
                results["told"] = bulk_run(args.items, redis.url, rate=RATE)[0]
        elif scenario == "told-alone":  # each told a quarter, no Redis: the local pacing's cost
            results["told-alone"] = bulk_run(args.items, None, rate=RATE / PROCESSES)[0]
        elif scenario == "joiner":
            results["joiner"] = joiner(args.items)
        elif scenario == "cost":
            results["cost"] = cost(args.items * 2)
        elif scenario == "restart":
            results["restart"] = restart(args.items)
        print(scenario, json.dumps(results[scenario], indent=1), flush=True)
    results["retry_after"] = args.retry_after
    name = (
        "shared_limit.json"
        if args.retry_after == "seconds"
        else f"shared_limit_{args.retry_after}.json"
    )
    out = Path(__file__).parent / "results" / name
    out.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    if sys.argv[1:2] == ["worker"]:
        worker(sys.argv[2:])
    else:
        main()
