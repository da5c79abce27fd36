"""Compressed answers: identity is asked for, a body compressed anyway is capped after inflating."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import zlib
from pathlib import Path

import aiohttp
import pytest

from convai_async import ConvaiClient, RetryPolicy, UnexpectedResponseError

from .scripted import Reply, gzip_bomb, scripted_server

NO_RETRY = RetryPolicy(max_retries=0)
SUCCESS = b'{"STATUS": "SUCCESS"}'
ROOT = Path(__file__).resolve().parent.parent


def compressed(body: bytes, encoding: str) -> Reply:
    packed = gzip.compress(body) if encoding == "gzip" else zlib.compress(body)
    return (200, {"Content-Type": "application/json", "Content-Encoding": encoding}, packed)


async def test_identity_is_asked_for() -> None:
    async with scripted_server([(200, {}, SUCCESS)]) as (url, seen):
        async with ConvaiClient(api_key="k", base_url=url) as client:
            await client.characters.set_model("c", "m")
    assert seen[0]["headers"]["Accept-Encoding"] == "identity"


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
async def test_an_answer_compressed_anyway_is_read(encoding: str) -> None:
    listing = json.dumps({"characters": [{"character_id": "c1", "character_name": "A"}]})
    replies = [compressed(SUCCESS, encoding), compressed(listing.encode(), encoding)]
    async with scripted_server(replies) as (url, _):
        async with ConvaiClient(api_key="k", base_url=url, retry=NO_RETRY) as client:
            await client.characters.set_model("c", "m")
            characters = await client.characters.list()
    assert [c.char_id for c in characters] == ["c1"]


async def test_a_gzip_bomb_is_refused_at_the_cap_after_inflating() -> None:
    bomb = gzip_bomb(64)  # 64 MiB inflated, about 64 KiB on the wire: under the 1 MiB cap
    assert len(bomb) < 1 << 20
    reply: Reply = (200, {"Content-Type": "application/json", "Content-Encoding": "gzip"}, bomb)
    async with scripted_server([reply]) as (url, seen):
        async with ConvaiClient(api_key="k", base_url=url, retry=NO_RETRY) as client:
            with pytest.raises(UnexpectedResponseError, match="cap") as caught:
                await client.characters.set_model("c", "m")
    assert caught.value.status == 200
    assert len(seen) == 1


async def test_a_caller_session_that_inflates_is_capped_too() -> None:
    bomb = gzip_bomb(64)
    reply: Reply = (200, {"Content-Type": "application/json", "Content-Encoding": "gzip"}, bomb)
    async with scripted_server([reply]) as (url, _):
        async with aiohttp.ClientSession(auto_decompress=True) as session:
            async with ConvaiClient(
                api_key="k", base_url=url, retry=NO_RETRY, session=session
            ) as client:
                with pytest.raises(UnexpectedResponseError, match="cap"):
                    await client.characters.set_model("c", "m")


@pytest.mark.parametrize(
    ("encoding", "body", "problem"),
    [
        ("br", b"\x0b\x02\x80{}\x03", "unsupported Content-Encoding"),
        ("gzip", b"\x1f\x8b\x08\x00garbage-not-deflate", "corrupt"),
        ("gzip", gzip.compress(SUCCESS)[:-12], "ends early"),
    ],
)
async def test_bad_compression_is_an_unexpected_response(
    encoding: str, body: bytes, problem: str
) -> None:
    reply: Reply = (200, {"Content-Type": "application/json", "Content-Encoding": encoding}, body)
    async with scripted_server([reply]) as (url, _):
        async with ConvaiClient(api_key="k", base_url=url, retry=NO_RETRY) as client:
            with pytest.raises(UnexpectedResponseError, match=problem):
                await client.characters.set_model("c", "m")


# The probe runs in a child process so that its peak RSS is its own: one normal call first
# (imports, a pooled connection), then a 1 GiB gzip bomb against a 4 MiB cap.
PROBE = """
import asyncio, json, resource, sys
sys.path.insert(0, sys.argv[1])
from convai_async import ConvaiClient, RetryPolicy, UnexpectedResponseError
from tests.scripted import gzip_bomb, scripted_server

async def main():
    bomb = gzip_bomb(1024)
    head = {"Content-Type": "application/json"}
    replies = [(200, head, b'{"STATUS": "SUCCESS"}'), (200, {**head, "Content-Encoding": "gzip"}, bomb)]
    async with scripted_server(replies) as (url, _):
        async with ConvaiClient(api_key="k", base_url=url, retry=RetryPolicy(max_retries=0),
                                max_response_bytes=4 << 20) as client:
            await client.characters.set_model("c", "m")
            before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            try:
                await client.characters.set_model("c", "m")
                outcome = "success"
            except UnexpectedResponseError as error:
                outcome = str(error)
            after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"outcome": outcome, "growth_kib": after - before, "wire": len(bomb)}))

asyncio.run(main())
"""


def test_a_gzip_bomb_costs_memory_in_proportion_to_the_cap_not_the_inflated_size() -> None:
    child = subprocess.run(
        [sys.executable, "-c", PROBE, str(ROOT)],
        capture_output=True,
        text=True,
        timeout=300,  # hang guard only
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
        check=False,
    )
    assert child.returncode == 0, child.stderr
    result = json.loads(child.stdout.strip().splitlines()[-1])
    assert "cap" in result["outcome"]
    assert result["wire"] < 4 << 20  # the compressed body passes the cap's first check
    # 1 GiB inflated; the cap is 4 MiB: the growth must stay within a small multiple of it
    assert result["growth_kib"] < 64 * 1024, result
