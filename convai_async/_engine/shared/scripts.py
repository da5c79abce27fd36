"""The shared limit's Lua scripts, and their replies read into plain values (no I/O here).

Every script reads the clock with Redis's own ``TIME``, so the hosts' clocks never matter.
Times are whole microseconds of Redis time (exact in Lua's doubles).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from attrs import frozen

__all__ = [
    "PAUSE",
    "PUBLISH",
    "RESERVE",
    "Event",
    "Published",
    "Reservation",
    "read_event",
    "read_published",
    "read_reservation",
]

# KEYS: tat (hash: t, i), pause, state, live, granted
# ARGV: rate (per second; 0: not paced), burst, want, process id, heartbeat ttl (us),
#       the caller's state version, its first rush to add (0: none), the state's ttl (ms)
# Reply: {now, granted, first slot, interval, live processes, version, state or false,
#         granted total, pause-until, the key's first rush}
# Grants ``want`` consecutive GCRA slots; slot i may be used from max(now, first + i*interval).
# The slots booked ahead are a number of slots, not a length of time: when the rate changes,
# the time booked ahead (the theoretical arrival time ``t`` minus now) is rescaled from the
# interval it was booked at (``i``) to the new one, so slots booked at a slow rate do not hold
# the key back once the rate has risen (and a fall does not let a burst through).
# During a pause nothing is granted and ``pause-until`` says when to come back.
# The key's first rush: what the processes' unpaced requests before its first 429 were accepted,
# each process adding its own once (the rushes overlap: the key's bucket accepted their sum;
# "r:<process id>" marks it added, so a reservation retried after a late answer adds nothing),
# kept beside the learnt state and gone with it.
RESERVE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local ttl = tonumber(ARGV[5])
redis.call('ZADD', KEYS[4], now + ttl, ARGV[4])
redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', now)
redis.call('PEXPIRE', KEYS[4], math.floor(ttl / 1000) + 1000)
local live = redis.call('ZCARD', KEYS[4])
local version = tonumber(redis.call('HGET', KEYS[3], 'version') or '0')
local state = false
if version > tonumber(ARGV[6]) then
  state = redis.call('HGET', KEYS[3], 'state')
end
local rush = tonumber(ARGV[7] or '0')
if rush > 0 and redis.call('HSETNX', KEYS[3], 'r:' .. ARGV[4], rush) == 1 then
  rush = redis.call('HINCRBY', KEYS[3], 'rush', rush)
  if redis.call('PTTL', KEYS[3]) < 0 then
    redis.call('PEXPIRE', KEYS[3], tonumber(ARGV[8]))
  end
else
  rush = tonumber(redis.call('HGET', KEYS[3], 'rush') or '0')
end
local pause = tonumber(redis.call('GET', KEYS[2]) or '0')
if pause > now then
  local total = tonumber(redis.call('GET', KEYS[5]) or '0')
  return {now, 0, 0, 0, live, version, state, total, pause, rush}
end
local want = tonumber(ARGV[3])
local total = redis.call('INCRBY', KEYS[5], want)
local rate = tonumber(ARGV[1])
if rate <= 0 then
  return {now, want, now, 0, live, version, state, total, 0, rush}
end
local interval = math.floor(1000000 / rate)
local tau = (tonumber(ARGV[2]) - 1) * interval
local booked = redis.call('HMGET', KEYS[1], 't', 'i')
local tat, was = tonumber(booked[1] or '0'), tonumber(booked[2] or '0')
if tat < now then
  tat = now
elseif was > 0 and was ~= interval then
  tat = now + math.floor((tat - now) * interval / was)
end
local first = tat - tau
tat = tat + want * interval
redis.call('HSET', KEYS[1], 't', string.format('%.0f', tat), 'i', interval)
redis.call('PEXPIRE', KEYS[1], math.floor((tat - now) / 1000) + 1000)
return {now, want, first, interval, live, version, state, total, 0, rush}
"""

# KEYS: pause; ARGV: seconds (us), the events channel. Reply: {now, pause-until}.
# A pause only ever lengthens; a new one is pushed to every process ("p:<until>").
PAUSE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local wanted = now + tonumber(ARGV[1])
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if wanted > current then
  redis.call('SET', KEYS[1], string.format('%.0f', wanted), 'PX',
    math.floor((wanted - now) / 1000) + 1000)
  current = wanted
  redis.call('PUBLISH', ARGV[2], 'p:' .. string.format('%.0f', wanted))
end
return {now, current}
"""

# KEYS: state; ARGV: the version the new state was computed from, the state (JSON), ttl (ms),
# the events channel, its rate (0: unknown), "1" for a merge. Compare-and-set: reply {1, new
# version, state} when stored (and pushed to every process as "s:<version>:<state>"), else
# {0, version, current state}. A merge (a state learnt apart, offered again after an outage,
# when the versions may have started again) is stored instead when there is none, or when its
# rate is lower than the stored one's: the cautious one wins.
PUBLISH = """
local version = tonumber(redis.call('HGET', KEYS[1], 'version') or '0')
local stored, offered = tonumber(redis.call('HGET', KEYS[1], 'rate') or '0'), tonumber(ARGV[5])
local wins = version == tonumber(ARGV[1])
if ARGV[6] == '1' then
  wins = version == 0 or (offered > 0 and (stored <= 0 or offered < stored))
end
if not wins then
  return {0, version, redis.call('HGET', KEYS[1], 'state')}
end
version = version + 1
redis.call('HSET', KEYS[1], 'version', version, 'state', ARGV[2], 'rate', ARGV[5])
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[3]))
redis.call('PUBLISH', ARGV[4], 's:' .. version .. ':' .. ARGV[2])
return {1, version, ARGV[2]}
"""

_MICROS = 1_000_000


@frozen
class Reservation:
    """RESERVE's reply, in seconds of Redis time."""

    now: float
    granted: int
    first_slot: float
    interval: float
    live: int
    version: int
    state: Mapping[str, Any] | None
    granted_total: int
    paused_until: float
    rush: int

    def slots(self) -> list[float]:
        """When each granted slot may be used (Redis time)."""
        return [max(self.now, self.first_slot + i * self.interval) for i in range(self.granted)]


@frozen
class Published:
    """PUBLISH's reply: whether ours was stored, and the state now in force."""

    stored: bool
    version: int
    state: Mapping[str, Any] | None


def _state(raw: Any) -> Mapping[str, Any] | None:
    if not raw:
        return None
    try:
        value = json.loads(raw)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def read_reservation(reply: Sequence[Any]) -> Reservation:
    now, granted, first, interval, live, version, state, total, paused, rush = reply
    return Reservation(
        now=int(now) / _MICROS,
        granted=int(granted),
        first_slot=int(first) / _MICROS,
        interval=int(interval) / _MICROS,
        live=max(1, int(live)),
        version=int(version),
        state=_state(state),
        granted_total=int(total),
        paused_until=int(paused) / _MICROS,
        rush=int(rush),
    )


@frozen
class Event:
    """A message pushed on the events channel: a new pause (``paused_until``, Redis time) or a
    new state (``version`` and ``state``)."""

    paused_until: float | None = None
    version: int = 0
    state: Mapping[str, Any] | None = None


def read_event(data: Any) -> Event | None:
    """An events-channel message, or None when it is not one of ours."""
    text = data.decode() if isinstance(data, bytes) else str(data)
    kind, _, rest = text.partition(":")
    try:
        if kind == "p":
            return Event(paused_until=int(rest) / _MICROS)
        if kind == "s":
            version, _, state = rest.partition(":")
            return Event(version=int(version), state=_state(state))
    except ValueError:
        return None
    return None


def read_published(reply: Sequence[Any]) -> Published:
    stored, version, state = reply
    return Published(stored=bool(int(stored)), version=int(version), state=_state(state))
