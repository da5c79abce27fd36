"""A rate limit shared by every process using one API key, through Redis (the ``redis`` extra).

Nothing here imports redis-py until ``SharedLimit.from_url`` is called.
"""

from .adapter import SharedAdaptiveLimiter, SharedPacer, limiter_for, shared_limit
from .keys import DEFAULT_PREFIX, SharedKeys, key_digest, shared_keys
from .limit import DEFAULT_BATCH, SharedLimit
from .link import CONNECTING, DEFAULT_OPERATION_TIMEOUT, FALLBACK, SHARED

__all__ = [
    "CONNECTING",
    "DEFAULT_BATCH",
    "DEFAULT_OPERATION_TIMEOUT",
    "DEFAULT_PREFIX",
    "FALLBACK",
    "SHARED",
    "SharedAdaptiveLimiter",
    "SharedKeys",
    "SharedLimit",
    "SharedPacer",
    "key_digest",
    "limiter_for",
    "shared_keys",
    "shared_limit",
]
