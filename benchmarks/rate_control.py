"""Rate control against every server limiter of issue 12, side by side in one run.

    python -m benchmarks.rate_control                 # 4,000 items at 200/s, 32 in flight
    python -m benchmarks.rate_control --items 400     # a quick look

For each server behaviour, a fresh server process (a minimal aiohttp.web app applying a
limiter from ``convai_async.testing.limits`` to ``/character/update``, 10-30 ms latency) and,
one after another against it, three clients: this client's ``bulk_set_model``; naive
``asyncio.gather`` with ``backoff``; and ``aiolimiter`` told the true rate (the oracle).
Columns: wall time against the ideal (items / limit) and the share of requests answered 429.
Results: a markdown table on stdout, JSON and markdown in benchmarks/results/.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Coroutine, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import aiohttp
import backoff
from aiohttp import web
from aiolimiter import AsyncLimiter

from convai_async import ConvaiClient, RetryPolicy
from convai_async.testing import limits

RESULTS = Path(__file__).parent / "results"
KEY = "bench-key"
RATE = 200.0
CONCURRENCY = 32
TENANT_SECONDS = 5.0
# The limiter pauses and paces after a 429; the retry loop's own backoff would add its waits on
# top (up to 8 s by default), which measures the retry policy, not the rate control.
RETRY = RetryPolicy(initial_wait=0.001, multiplier=2.0, max_wait=0.01)
BEHAVIOURS: dict[str, tuple[str, dict[str, float], float]] = {
    # row: (algorithm, parameters, tenant rate for TENANT_SECONDS)
    "token bucket, burst 5": ("token-bucket", {"rate": RATE, "burst": 5}, 0.0),
    "token bucket, burst 50": ("token-bucket", {"rate": RATE, "burst": 50}, 0.0),
    "gcra, burst 20": ("gcra", {"rate": RATE, "burst": 20}, 0.0),
    "fixed window 1s": ("fixed-window", {"limit": RATE, "window": 1.0}, 0.0),
    "fixed window 10s": ("fixed-window", {"limit": RATE * 10, "window": 10.0}, 0.0),
    "sliding log": ("sliding-log", {"limit": RATE, "window": 1.0}, 0.0),
    "sliding, refused count": ("sliding-refused", {"limit": RATE, "window": 1.0}, 0.0),
    "concurrency cap": ("concurrency", {"limit": 4}, 0.0),
    "shared with a tenant": ("token-bucket", {"rate": RATE, "burst": 20}, RATE / 2),
}


# -- the server (its own process) --------------------------------------------------------------


def serve(behaviour: str, style: str) -> None:
    algorithm, parameters, tenant_rate = BEHAVIOURS[behaviour]
    limiter = limits.make_limiter(algorithm, **parameters)
    tenant = limits.Tenant(limiter, rate=tenant_rate)
    counts = {"requests": 0, "refused": 0}
    started: list[float] = []
    rng = random.Random(7)

    async def update(request: web.Request) -> web.Response:
        await request.read()
        now = time.monotonic()
        if not started:
            started.append(now)
        if now - started[0] >= TENANT_SECONDS:
            tenant.rate = 0.0
        tenant.catch_up(now)
        counts["requests"] += 1
        wait = limiter.admit(now)
        await asyncio.sleep(rng.uniform(0.010, 0.030))
        if wait is not None:
            counts["refused"] += 1
            value = limits.retry_after_value(wait, style, time.time())
            headers = {} if value is None else {"Retry-After": value}
            return web.json_response({"API_ERROR": "rate limited"}, status=429, headers=headers)
        limiter.done(time.monotonic())
        return web.json_response({"STATUS": "SUCCESS"})

    async def stats(request: web.Request) -> web.Response:
        return web.json_response(counts)

    async def main() -> None:
        app = web.Application()
        app.router.add_post("/character/update", update)
        app.router.add_get("/stats", stats)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        print(f"http://127.0.0.1:{port}", flush=True)
        await asyncio.sleep(1800)  # stops by itself
        await runner.cleanup()

    asyncio.run(main())


# -- the clients -----------------------------------------------------------------------------


def ids(count: int) -> Iterator[str]:
    return (f"char-{index}" for index in range(count))


def body(char_id: str) -> bytes:
    return json.dumps({"charID": char_id, "model_group_name": "gpt-4.1"}).encode()


async def this_client(url: str, count: int) -> int:
    async with ConvaiClient(
        api_key=KEY, base_url=url, max_concurrency=CONCURRENCY, allow_insecure_http=True,
        max_retries=100, retry=RETRY,
    ) as client:  # fmt: skip
        report = await client.bulk_set_model(ids(count), "gpt-4.1")
        return int(report.failed)


async def naive(url: str, count: int) -> int:
    connector = aiohttp.TCPConnector(limit=CONCURRENCY)
    headers = {"CONVAI-API-KEY": KEY, "Content-Type": "application/json"}
    async with aiohttp.ClientSession(connector=connector, raise_for_status=True) as session:

        @backoff.on_exception(backoff.expo, aiohttp.ClientError, max_tries=8, logger=None)
        async def one(char_id: str) -> None:
            async with session.post(
                url + "/character/update", data=body(char_id), headers=headers
            ) as response:
                await response.read()

        results = await asyncio.gather(*(one(c) for c in ids(count)), return_exceptions=True)
    return sum(1 for result in results if isinstance(result, BaseException))


async def oracle(url: str, count: int) -> int:
    """aiolimiter at the true rate, a semaphore, and Retry-After honoured on a 429."""
    rate = AsyncLimiter(1, 1.0 / RATE)  # one per interval: no burst beyond the limit
    slots = asyncio.Semaphore(CONCURRENCY)
    headers = {"CONVAI-API-KEY": KEY, "Content-Type": "application/json"}
    failed = 0
    connector = aiohttp.TCPConnector(limit=CONCURRENCY)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one(char_id: str) -> None:
            nonlocal failed
            for _ in range(100):
                async with slots:
                    await rate.acquire()
                    async with session.post(
                        url + "/character/update", data=body(char_id), headers=headers
                    ) as response:
                        await response.read()
                        if response.status == 200:
                            return
                        wait = response.headers.get("Retry-After", "0.1")
                await asyncio.sleep(min(float(wait) if wait[0].isdigit() else 1.0, 10.0))
            failed += 1

        await asyncio.gather(*(one(c) for c in ids(count)))
    return failed


PEERS: dict[str, Callable[[str, int], Coroutine[Any, Any, int]]] = {
    "convai-async": this_client,
    "naive gather+backoff": naive,
    "aiolimiter (oracle)": oracle,
}


def measure(behaviour: str, style: str, peer: str, count: int, limit_s: float) -> dict[str, Any]:
    server = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.rate_control", "--serve", behaviour, style],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        url = server.stdout.readline().strip()
        started = time.perf_counter()
        try:
            failed = asyncio.run(asyncio.wait_for(PEERS[peer](url, count), limit_s))
            timed_out = False
        except asyncio.TimeoutError:
            failed, timed_out = -1, True
        wall = time.perf_counter() - started
        stats = server_counts(url + "/stats")
    finally:
        server.terminate()
        server.wait(10)
    ideal = ideal_seconds(behaviour, count)
    return {
        "behaviour": behaviour,
        "style": style,
        "peer": peer,
        "items": count,
        "wall_s": wall,
        "ideal_s": ideal,
        "vs_ideal": wall / ideal,
        "requests": stats["requests"],
        "refused": stats["refused"],
        "refused_share": stats["refused"] / max(1, stats["requests"]),
        "failed": failed,
        "timed_out": timed_out,
    }


def ideal_seconds(behaviour: str, count: int) -> float:
    """The time at the limit, less what a background tenant takes of it while it runs."""
    _, parameters, tenant_rate = BEHAVIOURS[behaviour]
    rate = parameters.get("rate", RATE)
    return (count + tenant_rate * TENANT_SECONDS) / rate


def server_counts(url: str) -> dict[str, int]:
    with urllib.request.urlopen(url, timeout=10) as response:
        return dict(json.load(response))


def table(rows: list[dict[str, Any]]) -> str:
    peers = list(PEERS)
    head = "| behaviour | " + " | ".join(f"{p} time/ideal | {p} 429 share" for p in peers)
    lines = [head + " | this client / oracle time |", "|---" * (2 + 2 * len(peers)) + "|"]
    for behaviour in dict.fromkeys(row["behaviour"] for row in rows):
        cells, walls = [], {}
        for peer in peers:
            found = [r for r in rows if r["behaviour"] == behaviour and r["peer"] == peer]
            if not found:
                cells += ["-", "-"]
                continue
            found.sort(key=lambda r: r["wall_s"])
            row = found[(len(found) - 1) // 2]  # the median run (the lower one of an even count)
            walls[peer] = row["wall_s"]
            timing = f"{row['vs_ideal']:.2f}x" + (" (timed out)" if row["timed_out"] else "")
            if len(found) > 1:
                timing += f" ({found[0]['vs_ideal']:.2f}-{found[-1]['vs_ideal']:.2f})"
            cells += [timing, f"{row['refused_share'] * 100:.1f}%"]
        ours, oracle_s = walls.get(peers[0]), walls.get(peers[-1])
        cells.append(f"{ours / oracle_s:.2f}" if ours and oracle_s else "-")
        lines.append(f"| {behaviour} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_results(meta: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    styles = list(dict.fromkeys(row["style"] for row in rows))
    text = "\n\n".join(
        f"Retry-After style {style!r}:\n\n" + table([r for r in rows if r["style"] == style])
        for style in styles
    )
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "rate_control.json").write_text(json.dumps({**meta, "rows": rows}, indent=2))
    (RESULTS / "rate_control.md").write_text(
        f"Run {meta['run_at']}: {meta['items']} items (twice that for the 10 s window), limit "
        f"{RATE:g}/s, {CONCURRENCY} in flight, at most {meta.get('limit_s', '?')} s per run, "
        f"load average before the run {meta.get('load', '?')}, {meta.get('rounds', 1)} round(s) "
        f"interleaved: each cell is the median run (with the range of all runs) and that run's "
        f"429 share. Ideal: items / limit (the tenant row adds the {TENANT_SECONDS:g} s the "
        f"tenant uses half the limit).\n\n{text}\n"
    )
    return text


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--serve", nargs=2, metavar=("BEHAVIOUR", "STYLE"))
    parser.add_argument("--items", type=int, default=4000)
    parser.add_argument(
        "--style", nargs="*", default=["decimal", "seconds"], choices=limits.RETRY_AFTER_STYLES
    )
    parser.add_argument("--only", nargs="*", default=None)
    parser.add_argument("--peers", nargs="*", default=list(PEERS))
    parser.add_argument("--limit", type=float, default=240.0, help="seconds per run, at most")
    parser.add_argument("--rounds", type=int, default=1, help="runs per cell, interleaved")
    parser.add_argument("--render", metavar="JSON", help="write the tables again from results")
    args = parser.parse_args()
    if args.serve:
        serve(*args.serve)
        return
    if args.render:
        saved = json.loads(Path(args.render).read_text())
        rows = saved.pop("rows")
        print(write_results(saved, rows))
        return
    rows = []
    load = " ".join(f"{value:.1f}" for value in os.getloadavg())
    for round_ in range(args.rounds):
        for style in args.style:
            for behaviour in args.only or BEHAVIOURS:
                count = args.items * (2 if behaviour == "fixed window 10s" else 1)
                for peer in args.peers:
                    row = {**measure(behaviour, style, peer, count, args.limit), "round": round_}
                    rows.append(row)
                    print(json.dumps(row), file=sys.stderr, flush=True)
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    meta = {
        "run_at": stamp,
        "items": args.items,
        "styles": args.style,
        "rate": RATE,
        "load": load,
        "rounds": args.rounds,
    }
    print(write_results({**meta, "limit_s": args.limit}, rows))


if __name__ == "__main__":
    main()
