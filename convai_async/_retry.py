"""Retry policy pieces: the wait schedule handed to ``backoff`` and the client-wide retry budget."""

from __future__ import annotations

import random
from collections.abc import Generator

from attrs import define

from .errors import ConvaiTimeoutError

__all__ = ["RetryBudget", "full_jitter_waits"]


def full_jitter_waits(
    *, initial: float, multiplier: float, maximum: float
) -> Generator[float, BaseException | None, None]:
    """Exponential backoff with full jitter (AWS's "full jitter"): the n-th wait is uniform in
    [0, min(maximum, initial * multiplier**n)]. A ``backoff`` wait generator.

    A 429's ``Retry-After`` is not applied here: the limiter pauses the whole client for it, so
    a retry waiting here also waits there."""
    yield  # type: ignore[misc]  # backoff primes the generator with next()
    ceiling = initial
    while True:
        yield random.uniform(0.0, ceiling)
        ceiling = min(maximum, ceiling * multiplier)


@define
class RetryBudget:
    """A token bucket shared by every call of one client, in the spirit of botocore's retry
    quota: a retry costs ``retry_cost`` tokens (``timeout_cost`` after a timeout), a success
    refunds ``success_refund``. When the server is down the budget runs dry after about
    ``capacity / retry_cost`` retries and calls fail fast with their own error, instead of every
    caller retrying ``max_retries`` times. Transient 429s are not charged: the limiter handles
    them by slowing down."""

    capacity: int = 500
    retry_cost: int = 5
    timeout_cost: int = 10
    success_refund: int = 1
    tokens: int = -1

    def __attrs_post_init__(self) -> None:
        if self.tokens < 0:
            self.tokens = self.capacity

    def try_spend(self, error: BaseException) -> bool:
        cost = self.timeout_cost if isinstance(error, ConvaiTimeoutError) else self.retry_cost
        if cost > self.tokens:
            return False
        self.tokens -= cost
        return True

    def refund(self) -> None:
        if self.tokens < self.capacity:
            self.tokens = min(self.capacity, self.tokens + self.success_refund)
