"""Redis key names for one API key: a truncated SHA-256 of the key, never the key itself."""

from __future__ import annotations

import hashlib

from attrs import frozen

__all__ = ["DEFAULT_PREFIX", "SharedKeys", "key_digest", "shared_keys"]

DEFAULT_PREFIX = "convai-async"
DIGEST_HEX_CHARS = 24  # 96 bits: no collisions among keys, nothing to reverse
_DOMAIN = b"convai-async/shared-limit/v1\x00"


def key_digest(api_key: str) -> str:
    """A stable, non-reversible name for an API key (hex)."""
    return hashlib.sha256(_DOMAIN + api_key.encode()).hexdigest()[:DIGEST_HEX_CHARS]


@frozen
class SharedKeys:
    """The Redis keys of one API key's shared limit. The digest sits in a hash tag (``{...}``),
    so a Redis Cluster keeps them in one slot and one Lua script may touch them all."""

    tat: str  # hash: GCRA theoretical arrival time (t, Redis time) and its interval (i), us
    pause: str  # pause-until, microseconds of Redis time
    state: str  # hash: version, state (the learnt state, JSON), rush (the first rushes' sum)
    live: str  # sorted set: process id -> heartbeat expiry
    granted: str  # counter: send slots granted, all processes together
    events: str  # pub/sub channel: new pauses and states, pushed to every process

    def all(self) -> list[str]:
        """The keys (not the channel), in the order RESERVE takes them."""
        return [self.tat, self.pause, self.state, self.live, self.granted]


def shared_keys(api_key: str, prefix: str = DEFAULT_PREFIX) -> SharedKeys:
    base = f"{prefix}:{{{key_digest(api_key)}}}"
    return SharedKeys(
        tat=f"{base}:tat",
        pause=f"{base}:pause",
        state=f"{base}:state",
        live=f"{base}:live",
        granted=f"{base}:granted",
        events=f"{base}:events",
    )
