"""Fault injection for the fake: the ``Faults`` knobs and the decisions they lead to.

Pure: the server-side rate limit (``ServerLimiter``, with a simple token bucket built in),
quota, ``Retry-After`` formatting and the random fault dice take the time as an argument and
return plain data, so they are tested without a server or an event loop.
"""

from __future__ import annotations

import math
import random
from email.utils import formatdate
from typing import Literal, Protocol

from attrs import define, field
from attrs.validators import ge, in_

from .answers import Answer, llm_error

__all__ = [
    "RETRY_AFTER_STYLES",
    "EdgeGate",
    "FaultDice",
    "Faults",
    "RateLimitBucket",
    "RetryAfterStyle",
    "ServerLimiter",
    "retry_after_headers",
]

RetryAfterStyle = Literal["seconds", "decimal", "http-date", "none"]
RETRY_AFTER_STYLES: tuple[RetryAfterStyle, ...] = ("seconds", "decimal", "http-date", "none")
RATE_LIMITED_MESSAGE = "API rate limit exceeded. Please try again later."
LLM_RATE_LIMITED_MESSAGE = "Rate limit exceeded."
QUOTA_MESSAGE = "API usage limit exceeded for current plan."


class ServerLimiter(Protocol):
    """A server-side rate limiter, consulted at the edge before any work (see ``Faults``)."""

    def admit(self, now: float) -> float | None:
        """A request arrives at `now` (monotonic seconds). None: accepted. A float: refused,
        and the number of seconds until a request would be accepted (for Retry-After)."""

    def done(self, now: float) -> None:
        """An accepted request has finished (a concurrency cap uses it; others ignore it)."""


@define
class Faults:
    """Fault knobs, changeable while the server runs (``fake.faults.tenant_rate = 0``).

    Ratios are probabilities per request in [0, 1]; ``paths`` restricts the random faults (not
    the rate limit or quota) to those endpoint paths; ``limit`` caps how many random faults are
    injected in all (``fake.faults_injected`` counts them).

    Rate limiting: ``limiter`` is any ``ServerLimiter``; without one, ``rate_limit`` (requests
    per second) with ``burst`` builds a token bucket. ``tenant_rate`` is another tenant's load
    (requests per second) through the same limiter. ``retry_after`` is how a 429 says when to
    come back: ``"seconds"`` (whole seconds, rounded up), ``"decimal"`` (``"0.35"``),
    ``"http-date"`` or ``"none"``. ``quota`` refuses every request after that many accepted.
    """

    latency: float | tuple[float, float] = 0.0
    rate_limit: float | None = None
    burst: int = 10
    retry_after: RetryAfterStyle = field(default="seconds", validator=in_(RETRY_AFTER_STYLES))
    limiter: ServerLimiter | None = None
    tenant_rate: float = field(default=0.0, validator=ge(0.0))
    quota: int | None = None
    server_error_ratio: float = 0.0
    server_error_status: int = 503
    drop_before_ratio: float = 0.0
    drop_after_ratio: float = 0.0
    hang_ratio: float = 0.0
    hang_seconds: float = 30.0
    truncate_ratio: float = 0.0
    drip_seconds: float = 0.0
    success_body: bytes | None = None
    oversize_bytes: int | None = None
    redirect_to: str | None = None
    paths: frozenset[str] | None = None
    limit: int | None = None

    def targets(self, path: str) -> bool:
        """Whether the random faults apply to ``path``."""
        return self.paths is None or path in self.paths


@define
class RateLimitBucket:
    """The built-in ``ServerLimiter``: a token bucket of ``burst`` tokens refilled at ``rate``
    per second, one token per request. Its rate and size follow ``Faults`` while it runs."""

    rate: float
    burst: int
    tokens: float = field(init=False)
    last: float | None = None

    def __attrs_post_init__(self) -> None:
        self.tokens = float(self.burst)

    def admit(self, now: float) -> float | None:
        if self.last is not None:
            elapsed = max(0.0, now - self.last)
            self.tokens = min(float(self.burst), self.tokens + elapsed * self.rate)
        self.last = now
        if self.tokens < 1.0:
            return (1.0 - self.tokens) / self.rate
        self.tokens -= 1.0
        return None

    def done(self, now: float) -> None:
        return None


def retry_after_headers(style: RetryAfterStyle, wait: float, wall_now: float) -> dict[str, str]:
    """The ``Retry-After`` header saying "in ``wait`` seconds", never earlier than that.
    ``wall_now`` is the wall-clock time (``time.time()``) an HTTP date is counted from."""
    wait = max(0.0, wait)
    if style == "none":
        return {}
    if style == "decimal":
        millis = math.ceil(round(wait * 1000, 6))
        return {"Retry-After": f"{millis / 1000:.3f}".rstrip("0").rstrip(".")}
    if style == "http-date":
        return {"Retry-After": formatdate(math.ceil(wall_now + wait), usegmt=True)}
    return {"Retry-After": str(max(1, math.ceil(wait)))}


def _too_many(path: str, message: str, headers: dict[str, str]) -> Answer:
    if path.startswith("/llm-models/"):
        return llm_error(429, message, headers)
    return Answer(429, {"API_ERROR": message}, headers)


class EdgeGate:
    """Quota and rate limit, checked when a request arrives, before any work, as a gateway
    does. Also lets another tenant's requests through the same limiter."""

    def __init__(self) -> None:
        self.accepted = 0
        self.rate_limited = 0
        self.tenant_requests = 0
        self.tenant_rate_limited = 0
        self._bucket: RateLimitBucket | None = None

    def limiter(self, faults: Faults) -> ServerLimiter | None:
        """The limiter in force: ``faults.limiter``, else the bucket ``rate_limit`` asks for."""
        if faults.limiter is not None:
            return faults.limiter
        if faults.rate_limit is None:
            return None
        if self._bucket is None:
            self._bucket = RateLimitBucket(faults.rate_limit, faults.burst)
        self._bucket.rate = faults.rate_limit
        self._bucket.burst = faults.burst
        return self._bucket

    def admit(
        self, faults: Faults, path: str, now: float, wall_now: float
    ) -> tuple[Answer | None, ServerLimiter | None]:
        """``(refusal, None)`` for a 429, or ``(None, limiter)``: accepted, and the limiter whose
        ``done`` must be called when the request finishes (``None`` when there is none)."""
        if faults.quota is not None and self.accepted >= faults.quota:
            return _too_many(path, QUOTA_MESSAGE, {}), None
        limiter = self.limiter(faults)
        if limiter is not None:
            wait = limiter.admit(now)
            if wait is not None:
                self.rate_limited += 1
                headers = retry_after_headers(faults.retry_after, wait, wall_now)
                llm = path.startswith("/llm-models/")
                message = LLM_RATE_LIMITED_MESSAGE if llm else RATE_LIMITED_MESSAGE
                return _too_many(path, message, headers), None
        self.accepted += 1
        return None, limiter

    def admit_tenant(self, faults: Faults, now: float) -> bool:
        """One request of the other tenant; it finishes at once. False when it was refused."""
        self.tenant_requests += 1
        limiter = self.limiter(faults)
        if limiter is None:
            return True
        if limiter.admit(now) is not None:
            self.tenant_rate_limited += 1
            return False
        limiter.done(now)
        return True


class FaultDice:
    """The random decisions: whether this request gets a fault (at most ``faults.limit`` in
    all, counted in ``injected``), and how long a latency range lasts this time."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.injected = 0

    def roll(self, faults: Faults, ratio: float) -> bool:
        if ratio <= 0 or (faults.limit is not None and self.injected >= faults.limit):
            return False
        if self.rng.random() >= ratio:
            return False
        self.injected += 1
        return True

    def seconds(self, duration: float | tuple[float, float]) -> float:
        if isinstance(duration, tuple):
            return self.rng.uniform(*duration)
        return duration
