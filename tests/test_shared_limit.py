"""The shared limit against a real redis-server: its scripts, the shared pause and learnt state,
the live set, key names, and failing open when Redis stops or stalls."""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import subprocess
import sys
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis

from convai_async import ConvaiClient
from convai_async._engine.shared import FALLBACK, SHARED, SharedLimit, key_digest, shared_keys
from convai_async._engine.shared.scripts import (
    PAUSE,
    PUBLISH,
    RESERVE,
    read_published,
    read_reservation,
)
from convai_async.cli import make_client
from convai_async.cli.parser import build_parser
from convai_async.errors import ValidationError

from .redis_server import RedisServer, serve_redis, take_turn, until

KEY = "canary-convai-key-7f3a9c"
GUARD = 60.0  # hang guard for waits on a condition; a correct run never comes near it
GENEROUS = 2.0  # an operation timeout no busy machine reaches, where failing open is not tested
redis_server = pytest.fixture(serve_redis)


@pytest.fixture
async def raw(redis_server: RedisServer) -> AsyncIterator[Any]:
    client = aioredis.Redis.from_url(redis_server.url, decode_responses=True)
    yield client
    await client.aclose()


@pytest.fixture
async def limits(redis_server: RedisServer) -> AsyncIterator[list[SharedLimit]]:
    made: list[SharedLimit] = []
    yield made
    for limit in made:
        await limit.close()


def make(
    server: RedisServer, made: list[SharedLimit], timeout: float = GENEROUS, **options: Any
) -> SharedLimit:
    limit = SharedLimit.from_url(server.url, KEY, operation_timeout=timeout, **options)
    made.append(limit)
    return limit


# -- keys and the optional import --------------------------------------------------------------


def test_keys_are_a_hash_of_the_api_key_under_the_prefix() -> None:
    keys = shared_keys(KEY, "game-eu")
    digest = key_digest(KEY)
    assert KEY not in digest
    assert len(digest) == 24
    assert digest != key_digest(KEY + "x")
    for name in keys.all():
        assert name.startswith(f"game-eu:{{{digest}}}:")
        assert KEY not in name
    assert shared_keys(KEY).tat.startswith("convai-async:")


def test_redis_is_imported_only_when_a_redis_url_is_given() -> None:
    probe = (
        "import sys, convai_async\n"
        "from convai_async import ConvaiClient\n"
        "ConvaiClient(api_key='k', base_url='http://127.0.0.1:1')\n"
        "assert not any(m == 'redis' or m.startswith('redis.') for m in sys.modules), 'imported'\n"
        "ConvaiClient(api_key='k', base_url='http://127.0.0.1:1', redis_url='redis://127.0.0.1:1')\n"
        "assert 'redis' in sys.modules\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=GUARD, check=False
    )
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"redis_url": "http://127.0.0.1:6379"}, "redis_url"),
        ({"redis_url": "redis://127.0.0.1:6379", "redis_prefix": ""}, "redis_prefix"),
        ({"redis_url": "redis://127.0.0.1:6379", "redis_timeout": 0}, "redis_timeout"),
    ],
)
def test_bad_redis_options_are_validation_errors(options: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError, match=field):
        ConvaiClient(api_key=KEY, base_url="http://127.0.0.1:1", **options)


async def test_the_clis_redis_url_reaches_the_client(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CONVAI_REDIS_URL", raising=False)
    base = ["--api-key", "k", "models"]
    shared = make_client(build_parser().parse_args(["--redis-url", "redis://127.0.0.1:9/0", *base]))
    local = make_client(build_parser().parse_args(base))
    try:
        assert shared.stats.shared_limit == "connecting"  # nothing sent yet: not connected
        assert local.stats.shared_limit == "off"
    finally:
        await shared.close()
        await local.close()


# -- the scripts -------------------------------------------------------------------------------


async def test_every_process_draws_its_slots_from_one_gcra(raw: Any) -> None:
    keys = shared_keys(KEY).all()
    reserve = raw.register_script(RESERVE)
    rate, burst = 100.0, 3
    replies = []
    for process in ("a", "b", "a", "c", "b"):
        replies.append(
            read_reservation(await reserve(keys=keys, args=[rate, burst, 4, process, 5_000_000, 0]))
        )
    slots = [slot for reply in replies for slot in reply.slots()]
    assert [reply.granted for reply in replies] == [4] * 5
    assert replies[-1].granted_total == 20
    assert replies[-1].live == 3
    # one schedule across the processes: after the burst, exactly one interval apart, in order
    first = replies[0]
    assert slots[:burst] == [first.now] * burst
    assert slots[burst] == pytest.approx(first.first_slot + burst * 0.01)
    gaps = [b - a for a, b in itertools.pairwise(slots[burst:])]
    assert gaps == pytest.approx([0.01] * len(gaps), abs=1e-6)  # whole microseconds


async def test_slots_booked_at_a_slow_rate_are_rebooked_when_it_rises(raw: Any) -> None:
    keys = shared_keys(KEY).all()
    reserve = raw.register_script(RESERVE)

    async def book(rate: float, want: int) -> Any:
        return read_reservation(await reserve(keys=keys, args=[rate, 1, want, "a", 5_000_000, 0]))

    slow = await book(4.0, 8)  # two seconds of a slow start's first rate booked ahead
    assert slow.slots()[-1] - slow.now == pytest.approx(7 * 0.25)
    fast = await book(1000.0, 1)  # the rate has risen 250-fold: so has the booking
    assert fast.first_slot - fast.now <= 8 * 0.001  # not 2 s, whatever the time between


async def test_a_state_learnt_apart_is_merged_the_lower_rate_winning(raw: Any) -> None:
    keys = shared_keys(KEY)
    publish = raw.register_script(PUBLISH)

    async def offer(based_on: int, rate: float, merge: bool) -> Any:
        state = json.dumps({"rate": rate})
        args = [based_on, state, 60_000, keys.events, rate, int(merge)]
        return read_published(await publish(keys=[keys.state], args=args))

    assert (await offer(5, 300.0, merge=True)).version == 1  # Redis lost it: offered again
    assert not (await offer(5, 250.0, merge=False)).stored  # a plain offer: compare-and-set
    assert not (await offer(5, 350.0, merge=True)).stored  # higher: the stored one stands
    lower = await offer(5, 200.0, merge=True)
    assert (lower.stored, lower.version, lower.state) == (True, 2, {"rate": 200.0})
    assert (await offer(2, 400.0, merge=False)).stored  # compare-and-set as ever
    assert not (await offer(3, 500.0, merge=True)).stored  # a version from before: no matter


async def test_the_processes_first_rushes_are_summed_beside_the_state(raw: Any) -> None:
    keys = shared_keys(KEY)
    reserve = raw.register_script(RESERVE)

    async def reported(adding: int = 0, process: str = "a") -> int:
        args = [0, 1, 0, process, 5_000_000, 0, adding, 60_000]
        return int(read_reservation(await reserve(keys=keys.all(), args=args)).rush)

    assert await reported() == 0  # no rush counted yet: unknown
    assert await reported(adding=7) == 7
    assert await reported(adding=12, process="b") == 19  # overlapping rushes: a sum
    # a reservation retried (its answer came too late) adds nothing again
    assert await reported(adding=7) == 19
    assert await reported() == 19
    assert 0 < await raw.pttl(keys.state) <= 60_000  # gone with the learnt state
    await raw.set(keys.pause, "99999999999999999")  # paused: still reported
    assert await reported() == 19


async def test_a_pause_holds_every_reservation_until_it_ends(raw: Any) -> None:
    keys = shared_keys(KEY)
    pause = raw.register_script(PAUSE)
    reserve = raw.register_script(RESERVE)
    now, until = await pause(keys=[keys.pause], args=[2_000_000, keys.events])
    assert int(until) == int(now) + 2_000_000
    shorter = await pause(keys=[keys.pause], args=[1_000_000, keys.events])
    assert int(shorter[1]) == int(until)  # a pause only lengthens
    reply = read_reservation(await reserve(keys=keys.all(), args=[0, 1, 4, "b", 5_000_000, 0]))
    assert reply.granted == 0
    assert reply.paused_until == int(until) / 1e6 > reply.now


# -- SharedLimit -------------------------------------------------------------------------------


async def test_one_process_pause_reaches_the_others_at_once(
    redis_server: RedisServer, limits: list[SharedLimit]
) -> None:
    first, second = make(redis_server, limits), make(redis_server, limits)
    await take_turn(first, None, 4)
    await take_turn(second, None, 4)
    assert second._slots  # it holds slots it was granted before any pause
    first.pause(2.0)
    # pushed, not polled: the other process learns it without sending or reserving
    await until(lambda: second.paused_until > 0, "the pause pushed to the other process")
    assert not second._slots  # the slots it held predate the pause: dropped
    # the pause is in Redis time; on one machine both clocks agree to the round trip
    assert second.paused_until == pytest.approx(first.paused_until, abs=0.5)
    turn = asyncio.create_task(take_turn(second, None, 4))
    await asyncio.sleep(0)
    assert not turn.done()
    turn.cancel()
    with pytest.raises(asyncio.CancelledError):
        await turn


async def test_the_first_turn_after_connecting_is_a_shared_slot(
    redis_server: RedisServer, limits: list[SharedLimit], raw: Any
) -> None:
    limit = make(redis_server, limits)
    assert await limit.connect()  # its first hello (reserving nothing) is still in flight
    assert await limit.try_turn(100.0, 4, asyncio.get_running_loop().time()) == 0.0
    assert limit._local_tat == 0.0  # not a local turn
    assert int(await raw.get(shared_keys(KEY).granted)) >= 1


async def test_held_slots_are_rebooked_when_the_rate_rises(
    redis_server: RedisServer, limits: list[SharedLimit]
) -> None:
    limit = make(redis_server, limits)
    clock = asyncio.get_running_loop().time
    assert await limit.connect()
    await limit.drain()  # its first hello (reserving nothing)
    assert await limit.try_turn(4.0, 1, clock()) == 0.0  # and the next slot booked, 0.25 s on
    await limit.drain()
    assert len(limit._slots) == 1
    wait = await limit.try_turn(1000.0, 1, clock())  # a slow start has doubled 8 times since
    assert wait <= 0.25 / 250 + 1e-6


async def test_learnt_state_is_shared_with_compare_and_set(
    redis_server: RedisServer, limits: list[SharedLimit], raw: Any
) -> None:
    first, second, third = (make(redis_server, limits) for _ in range(3))
    for limit in (first, second, third):
        assert await limit.connect()
    await take_turn(first, None, 4)  # a first round trip: the offset to Redis time is known
    first.publish_state({"rate": 150.0})
    await first.drain()
    assert first.version == 1
    await until(lambda: second.version == 1, "the state pushed to the others")
    # its times are readable after a round trip: connecting makes one (reserving nothing)
    await until(lambda: second.round_trips >= 1, "the round trip made on connecting")
    assert second.take_newer_state() == {"rate": 150.0}
    assert second.take_newer_state() is None
    assert second.version == 1
    # two processes react to the same overload: one is stored, the other adopts it
    second.publish_state({"rate": 100.0})
    first.publish_state({"rate": 90.0})
    await asyncio.gather(first.drain(), second.drain())
    stored = json.loads(await raw.hget(shared_keys(KEY).state, "state"))
    assert await raw.hget(shared_keys(KEY).state, "version") == "2"
    loser = first if stored == {"rate": 100.0} else second
    assert loser.take_newer_state() == stored
    assert first.version == second.version == 2
    await take_turn(third, None, 4)
    assert third.take_newer_state() == stored


async def test_live_processes_are_counted_and_leave_on_close(
    redis_server: RedisServer, limits: list[SharedLimit]
) -> None:
    first, second = make(redis_server, limits), make(redis_server, limits)
    await take_turn(first, None, 4)
    await take_turn(second, None, 4)
    assert second.live_processes == 2
    await second.close()
    first._slots.clear()  # held slots would serve the next turn without asking Redis
    await take_turn(first, None, 4)
    assert first.live_processes == 1


async def test_nothing_in_redis_carries_the_api_key(
    redis_server: RedisServer, limits: list[SharedLimit], raw: Any
) -> None:
    limit = make(redis_server, limits, prefix="replica-set")
    await take_turn(limit, 50.0, 2)
    limit.pause(0.5)
    limit.publish_state({"rate": 50.0})
    await limit.drain()
    names = await raw.keys("*")
    assert len(names) == 5
    for name in names:
        assert name.startswith("replica-set:{")
        assert KEY not in name
        kind = await raw.type(name)
        values = {
            "string": lambda n: raw.get(n),
            "hash": lambda n: raw.hgetall(n),
            "zset": lambda n: raw.zrange(n, 0, -1),
        }[kind]
        assert KEY not in str(await values(name))


async def test_fails_open_with_one_warning_then_shares_again(
    redis_server: RedisServer,
    limits: list[SharedLimit],
    raw: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    limit = make(redis_server, limits)
    await take_turn(limit, None, 4)
    limit.publish_state({"rate": 120.0})
    await limit.drain()
    redis_server.stop()
    caplog.set_level(logging.INFO, logger="convai_async")
    for _ in range(50):
        limit._slots.clear()  # every turn asks Redis, as a busy process would
        await take_turn(limit, None, 4)
        await take_turn(limit, 400.0, 4)  # local pacing at the rate over the live processes
    assert limit.status == FALLBACK
    assert limit.failures >= 1
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "Redis did not answer" in warnings[0].getMessage()
    redis_server.start()  # an empty Redis on the same port: the learnt state was lost
    await until(lambda: limit.status == SHARED, "reconnected")
    limit._slots.clear()
    await take_turn(limit, None, 4)
    await limit.drain()
    stored = await raw.hgetall(shared_keys(KEY).state)
    assert json.loads(stored["state"]) == {"rate": 120.0}  # offered again after the restart
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 1


async def test_a_stalled_redis_times_out_and_fails_open(
    redis_server: RedisServer, limits: list[SharedLimit], raw: Any
) -> None:
    limit = make(redis_server, limits, timeout=0.05)
    await raw.client_pause(3_000)  # every other client's commands wait 3 s
    await asyncio.wait_for(take_turn(limit, None, 4), GUARD)
    assert limit.status == FALLBACK
    assert limit.failures == 1


async def test_a_late_joiner_gets_a_fair_share_and_one_alone_gets_all(
    redis_server: RedisServer, limits: list[SharedLimit]
) -> None:
    processes = [make(redis_server, limits) for _ in range(4)]
    turns = [0] * len(processes)
    enough = asyncio.Event()

    async def busy(index: int, until_total: int) -> None:
        while not enough.is_set():
            await take_turn(processes[index], 2000.0, 1)
            turns[index] += 1
            if sum(turns) >= until_total:
                enough.set()

    await asyncio.wait_for(busy(0, 200), GUARD)  # alone: every slot is its own
    assert processes[0].recent_share == 1.0
    alone, turns[0], enough = turns[0], 0, asyncio.Event()
    await asyncio.wait_for(asyncio.gather(*(busy(i, 800) for i in range(4))), GUARD)
    assert alone == 200
    assert min(turns) >= 0.15 * sum(turns)  # fair: a quarter each, give or take scheduling
    assert 0.1 < processes[0].recent_share < 0.45


async def test_after_redis_restarts_the_lower_rate_learnt_apart_wins(
    redis_server: RedisServer, limits: list[SharedLimit], raw: Any
) -> None:
    first, second = make(redis_server, limits), make(redis_server, limits)
    for limit in (first, second):
        await take_turn(limit, None, 4)  # connected, the clocks' offset known
    first.publish_state({"rate": 300.0}, rate=300.0)
    await first.drain()
    redis_server.stop()
    for limit in (first, second):
        while limit.status != FALLBACK:  # each turn asks Redis, until the outage is declared
            limit._slots.clear()
            await asyncio.wait_for(take_turn(limit, None, 4), GUARD)
    first.publish_state({"rate": 900.0}, rate=900.0)  # each learns alone meanwhile
    second.publish_state({"rate": 180.0}, rate=180.0)
    redis_server.start()  # empty: both offer theirs again
    await until(lambda: first.status == SHARED and second.status == SHARED, "both reconnected")
    await until(lambda: first.version == second.version > 0, "one state agreed")
    for limit in (first, second):
        await limit.drain()
    stored = await raw.hgetall(shared_keys(KEY).state)
    assert json.loads(stored["state"]) == {"rate": 180.0}
    assert first.take_newer_state() == {"rate": 180.0}  # adopted by the one that probed high
