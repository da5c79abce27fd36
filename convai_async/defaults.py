"""Every default of the client and the CLI, as named constants in one place."""

from __future__ import annotations

__all__ = [
    "API_KEY_ENV",
    "BASE_URL_ENV",
    "DEFAULT_BASE_URL",
    "DEFAULT_BURST",
    "DEFAULT_CLOSE_GRACE",
    "DEFAULT_CONNECT_TIMEOUT",
    "DEFAULT_MAX_CONCURRENCY",
    "DEFAULT_MAX_LIST_RESPONSE_BYTES",
    "DEFAULT_MAX_RESPONSE_BYTES",
    "DEFAULT_MAX_RETRIES",
    "DEFAULT_MAX_RETRY_AFTER",
    "DEFAULT_RATE_LIMIT_PATIENCE",
    "DEFAULT_TIMEOUT",
    "REDIS_URL_ENV",
]

API_KEY_ENV = "CONVAI_API_KEY"
BASE_URL_ENV = "CONVAI_BASE_URL"
REDIS_URL_ENV = "CONVAI_REDIS_URL"
DEFAULT_BASE_URL = "https://api.convai.com"
DEFAULT_TIMEOUT = 30.0  # seconds per attempt
DEFAULT_CONNECT_TIMEOUT = 10.0
DEFAULT_MAX_RETRIES = 5
DEFAULT_MAX_CONCURRENCY = 16
DEFAULT_MAX_RETRY_AFTER = 60.0  # a single call fails at once when the server asks for longer
DEFAULT_RATE_LIMIT_PATIENCE = 300.0  # seconds of nothing but 429s before calls give up
DEFAULT_BURST = 4
DEFAULT_MAX_RESPONSE_BYTES = 1 << 20
DEFAULT_MAX_LIST_RESPONSE_BYTES = 256 << 20
DEFAULT_CLOSE_GRACE = 1.0  # seconds close() lets calls in flight finish before cancelling them
