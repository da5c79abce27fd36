"""The contenders. Each runs ``count`` model updates against ``url`` and returns what it saw.

Run one in a fresh process (``python -m benchmarks.peers PEER URL COUNT CONCURRENCY``) so that
CPU time and peak RSS belong to it alone; it prints one JSON line.
"""

from __future__ import annotations

import asyncio
import json
import resource
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import backoff

from convai_async import ConvaiClient
from convai_async.testing import DEFAULT_FAKE_API_KEY

MODEL = "gpt-4.1"
HEADERS = {"CONVAI-API-KEY": DEFAULT_FAKE_API_KEY, "Content-Type": "application/json"}


def char_ids(count: int, fleet: list[str]) -> Iterator[str]:
    """A generator, as a real bulk job would read IDs from a file."""
    for index in range(count):
        yield fleet[index % len(fleet)]


def body(char_id: str) -> bytes:
    return json.dumps({"charID": char_id, "model_group_name": MODEL}).encode()


async def convai_bulk(url: str, ids: Iterator[str], concurrency: int) -> dict[str, Any]:
    async with ConvaiClient(
        api_key=DEFAULT_FAKE_API_KEY, base_url=url, max_concurrency=concurrency
    ) as client:
        report = await client.bulk_set_model(ids, MODEL)
        return {"ok": report.succeeded, "failed": report.failed, "requests": report.requests}


async def convai_bulk_journal(url: str, ids: Iterator[str], concurrency: int) -> dict[str, Any]:
    """The bulk run with a write-ahead journal in a temporary directory."""
    with tempfile.TemporaryDirectory(prefix="convai-bench-") as directory:
        async with ConvaiClient(
            api_key=DEFAULT_FAKE_API_KEY, base_url=url, max_concurrency=concurrency
        ) as client:
            report = await client.bulk_set_model(
                ids, MODEL, journal=Path(directory) / "journal.jsonl"
            )
            return {"ok": report.succeeded, "failed": report.failed, "requests": report.requests}


async def convai_calls(url: str, ids: Iterator[str], concurrency: int) -> dict[str, Any]:
    """Individual awaited calls, as request handlers make them (one task per caller)."""
    ok = failed = 0
    async with ConvaiClient(
        api_key=DEFAULT_FAKE_API_KEY, base_url=url, max_concurrency=concurrency
    ) as client:

        async def caller() -> None:
            nonlocal ok, failed
            for char_id in ids:
                try:
                    await client.characters.set_model(char_id, MODEL)
                    ok += 1
                except Exception:
                    failed += 1

        await asyncio.gather(*(caller() for _ in range(concurrency)))
        return {"ok": ok, "failed": failed, "requests": client.stats.requests}


async def bounded(
    ids: Iterator[str], concurrency: int, post: Callable[[str], Coroutine[Any, Any, bool]]
) -> dict[str, Any]:
    """What users write: a semaphore, and a task per item created as slots free up."""
    ok = failed = 0
    semaphore = asyncio.Semaphore(concurrency)

    async def one(char_id: str) -> None:
        nonlocal ok, failed
        try:
            if await post(char_id):
                ok += 1
            else:
                failed += 1
        finally:
            semaphore.release()

    tasks = set()
    for char_id in ids:
        await semaphore.acquire()
        task = asyncio.create_task(one(char_id))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    await asyncio.gather(*tasks)
    return {"ok": ok, "failed": failed, "requests": ok + failed}


async def raw_aiohttp_json(url: str, ids: Iterator[str], concurrency: int) -> dict[str, Any]:
    """What users write by hand: ``session.post(url, json=body)``, then ``await resp.json()``."""
    connector = aiohttp.TCPConnector(limit=concurrency)
    headers = {"CONVAI-API-KEY": DEFAULT_FAKE_API_KEY}
    async with aiohttp.ClientSession(connector=connector) as session:

        async def post(char_id: str) -> bool:
            try:
                async with session.post(
                    url + "/character/update",
                    json={"charID": char_id, "model_group_name": MODEL},
                    headers=headers,
                ) as response:
                    payload = await response.json()
                    return response.status == 200 and payload.get("STATUS") == "SUCCESS"
            except aiohttp.ClientError:
                return False

        return await bounded(ids, concurrency, post)


async def raw_aiohttp(url: str, ids: Iterator[str], concurrency: int) -> dict[str, Any]:
    """A lower floor for this stack: pre-encoded bytes, ``data=`` and ``read()``."""
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def post(char_id: str) -> bool:
            try:
                async with session.post(
                    url + "/character/update", data=body(char_id), headers=HEADERS
                ) as response:
                    payload = await response.read()
                    return response.status == 200 and b"SUCCESS" in payload
            except aiohttp.ClientError:
                return False

        return await bounded(ids, concurrency, post)


async def httpx_async(url: str, ids: Iterator[str], concurrency: int) -> dict[str, Any]:
    import httpx

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=30.0) as client:

        async def post(char_id: str) -> bool:
            try:
                response = await client.post(
                    url + "/character/update", content=body(char_id), headers=HEADERS
                )
            except httpx.HTTPError:
                return False
            return response.status_code == 200 and b"SUCCESS" in response.content

        return await bounded(ids, concurrency, post)


async def vendor_requests(url: str, ids: Iterator[str], concurrency: int) -> dict[str, Any]:
    """The vendor docs' sample: requests.post, one call after another."""
    import requests

    ok = failed = 0
    for char_id in ids:
        response = requests.post(url + "/character/update", headers=HEADERS, data=body(char_id))
        if response.status_code == 200:
            ok += 1
        else:
            failed += 1
    return {"ok": ok, "failed": failed, "requests": ok + failed}


async def naive_gather(url: str, ids: Iterator[str], concurrency: int) -> dict[str, Any]:
    """asyncio.gather over every item, with a backoff.on_exception retry decorator."""
    attempts = 0
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, raise_for_status=True) as session:

        @backoff.on_exception(backoff.expo, aiohttp.ClientError, max_tries=8, logger=None)
        async def one(char_id: str) -> None:
            nonlocal attempts
            attempts += 1
            async with session.post(
                url + "/character/update", data=body(char_id), headers=HEADERS
            ) as response:
                await response.read()

        results = await asyncio.gather(*(one(c) for c in ids), return_exceptions=True)
    failed = sum(1 for r in results if isinstance(r, BaseException))
    return {"ok": len(results) - failed, "failed": failed, "requests": attempts}


PEERS: dict[str, Callable[[str, Iterator[str], int], Coroutine[Any, Any, dict[str, Any]]]] = {
    "convai-async bulk": convai_bulk,
    "convai-async bulk+journal": convai_bulk_journal,
    "convai-async calls": convai_calls,
    "raw aiohttp json": raw_aiohttp_json,
    "raw aiohttp": raw_aiohttp,
    "httpx": httpx_async,
    "requests (docs)": vendor_requests,
    "naive gather+backoff": naive_gather,
}


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def measure(peer: str, url: str, count: int, concurrency: int) -> dict[str, Any]:
    async with aiohttp.ClientSession() as session:
        async with session.post(url + "/character/list", headers=HEADERS) as response:
            fleet = [c["character_id"] for c in (await response.json())["characters"]]
    rss_before = peak_rss_mb()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu, wall = time.process_time(), time.perf_counter()
    outcome = await PEERS[peer](url, char_ids(count, fleet), concurrency)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    after = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "peer": peer,
        "count": count,
        "concurrency": concurrency,
        "wall_s": wall,
        "cpu_s": cpu,
        "cpu_us_per_item": cpu / max(count, 1) * 1e6,
        "user_s": after.ru_utime - usage.ru_utime,
        "system_s": after.ru_stime - usage.ru_stime,
        "items_per_s": count / max(wall, 1e-9),
        "rss_before_mb": rss_before,
        "rss_peak_mb": peak_rss_mb(),
        **outcome,
    }


if __name__ == "__main__":
    name, target, items, width = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    print(json.dumps(asyncio.run(measure(name, target, items, width))))
