"""Server-side rate limiters, as gateways run them: pure, clock-injected, no I/O.

Each implements :class:`ServerLimiter`: ``admit(now)`` answers ``None`` (accepted) or the seconds
until a request would be accepted (refused: a 429, and the basis of ``Retry-After``);
``done(now)`` tells it an accepted request finished (only the concurrency cap cares).
``now`` is any monotonic clock in seconds, so tests drive them with exact, made-up times::

    bucket = TokenBucket(rate=200, burst=20)
    assert all(bucket.admit(0.0) is None for _ in range(20))
    assert bucket.admit(0.0) == pytest.approx(0.005)

:func:`make_limiter` builds one from a name and its parameters (what ``Faults.limiter`` takes),
and :class:`Tenant` is a background tenant's steady load on a shared limiter.
:func:`retry_after_value` renders a wait in each ``Retry-After`` style a server may use.
"""

from __future__ import annotations

import collections
import math
from collections.abc import Callable
from email.utils import formatdate
from typing import Protocol

from attrs import define, field

__all__ = [
    "ALGORITHMS",
    "RETRY_AFTER_STYLES",
    "ConcurrencyCap",
    "FixedWindow",
    "Gcra",
    "ServerLimiter",
    "SlidingWindowLog",
    "SlidingWindowRefusedCount",
    "Tenant",
    "TokenBucket",
    "make_limiter",
    "retry_after_value",
]

RETRY_AFTER_STYLES = ("seconds", "decimal", "http-date", "none")


class ServerLimiter(Protocol):
    def admit(self, now: float) -> float | None:
        """None: accepted. A float: refused, and the seconds until one would be accepted."""

    def done(self, now: float) -> None:
        """An accepted request finished."""


@define
class TokenBucket:
    """``burst`` tokens, refilled at ``rate`` per second; a request takes one or is refused."""

    rate: float
    burst: int = 1
    _tokens: float = field(init=False, default=-1.0)
    _last: float = field(init=False, default=0.0)

    def admit(self, now: float) -> float | None:
        if self._tokens < 0:
            self._tokens, self._last = float(self.burst), now
        self._tokens = min(float(self.burst), self._tokens + (now - self._last) * self.rate)
        self._last = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return None
        return (1.0 - self._tokens) / self.rate

    def done(self, now: float) -> None:
        pass


@define
class Gcra:
    """The generic cell rate algorithm (a leaky bucket as a meter): one request per
    ``1/rate`` seconds on average, up to ``burst`` at once."""

    rate: float
    burst: int = 1
    _tat: float = field(init=False, default=-math.inf)  # theoretical arrival time

    def admit(self, now: float) -> float | None:
        interval = 1.0 / self.rate
        tat = max(self._tat, now)
        allowed_at = tat - (self.burst - 1) * interval
        if allowed_at > now:
            return allowed_at - now
        self._tat = tat + interval
        return None

    def done(self, now: float) -> None:
        pass


@define
class FixedWindow:
    """At most ``limit`` requests per window of ``window`` seconds, windows aligned to 0."""

    limit: int
    window: float = 1.0
    _index: int = field(init=False, default=-1)
    _count: int = field(init=False, default=0)

    def admit(self, now: float) -> float | None:
        index = math.floor(now / self.window)
        if index != self._index:
            self._index, self._count = index, 0
        if self._count < self.limit:
            self._count += 1
            return None
        return (index + 1) * self.window - now

    def done(self, now: float) -> None:
        pass


@define
class SlidingWindowLog:
    """At most ``limit`` accepted requests in any ``window`` seconds (a log of accepted times)."""

    limit: int
    window: float = 1.0
    _log: collections.deque[float] = field(init=False, factory=collections.deque)

    def admit(self, now: float) -> float | None:
        log = self._log
        while log and log[0] <= now - self.window:
            log.popleft()
        if len(log) < self.limit:
            log.append(now)
            return None
        return log[0] + self.window - now

    def done(self, now: float) -> None:
        pass


@define
class SlidingWindowRefusedCount:
    """A sliding-window log that also logs refused requests: a client that keeps sending over
    the limit is refused for as long as it keeps sending (a common gateway configuration)."""

    limit: int
    window: float = 1.0
    _log: collections.deque[float] = field(init=False, factory=collections.deque)

    def admit(self, now: float) -> float | None:
        log = self._log
        while log and log[0] <= now - self.window:
            log.popleft()
        log.append(now)
        if len(log) <= self.limit:
            return None
        # accepted again once all but limit - 1 of the logged requests have left the window
        return log[len(log) - self.limit] + self.window - now

    def done(self, now: float) -> None:
        pass


@define
class ConcurrencyCap:
    """At most ``limit`` accepted requests in flight; refusals suggest ``retry_after``."""

    limit: int
    retry_after: float = 0.05
    in_flight: int = field(init=False, default=0)

    def admit(self, now: float) -> float | None:
        if self.in_flight < self.limit:
            self.in_flight += 1
            return None
        return self.retry_after

    def done(self, now: float) -> None:
        self.in_flight -= 1


@define
class Tenant:
    """Another tenant's load on a shared limiter: ``rate`` requests per second, sent evenly,
    each finishing at once. Call :meth:`catch_up` before each of your own requests."""

    limiter: ServerLimiter
    rate: float = 0.0
    _next: float | None = field(init=False, default=None)

    def catch_up(self, now: float) -> int:
        """Send the tenant's requests due by ``now``; returns how many it sent."""
        if self.rate <= 0:
            self._next = None
            return 0
        if self._next is None:
            self._next = now
        sent = 0
        while self._next <= now:
            if self.limiter.admit(self._next) is None:
                self.limiter.done(self._next)
            self._next += 1.0 / self.rate
            sent += 1
        return sent


ALGORITHMS: dict[str, Callable[..., ServerLimiter]] = {
    "token-bucket": TokenBucket,
    "gcra": Gcra,
    "fixed-window": FixedWindow,
    "sliding-log": SlidingWindowLog,
    "sliding-refused": SlidingWindowRefusedCount,
    "concurrency": ConcurrencyCap,
}


def make_limiter(algorithm: str, **parameters: float) -> ServerLimiter:
    """``make_limiter("token-bucket", rate=200, burst=20)``; names as in :data:`ALGORITHMS`."""
    try:
        kind = ALGORITHMS[algorithm]
    except KeyError:
        raise ValueError(f"unknown limiter {algorithm!r}; one of {sorted(ALGORITHMS)}") from None
    whole = {"burst", "limit"}
    arguments = {k: int(v) if k in whole else float(v) for k, v in parameters.items()}
    return kind(**arguments)


def retry_after_value(wait: float, style: str, wall_now: float) -> str | None:
    """The ``Retry-After`` header value for a wait of ``wait`` seconds in ``style``:
    ``seconds`` (whole, rounded up, at least 1), ``decimal`` (milliseconds precision),
    ``http-date`` (whole seconds, the date rounded up from ``wall_now``), ``none``."""
    if style == "seconds":
        return str(max(1, math.ceil(wait)))
    if style == "decimal":
        return f"{math.ceil(wait * 1000) / 1000:.3f}"
    if style == "http-date":
        return formatdate(math.ceil(wall_now + wait), usegmt=True)
    if style == "none":
        return None
    raise ValueError(f"unknown Retry-After style {style!r}; one of {RETRY_AFTER_STYLES}")
