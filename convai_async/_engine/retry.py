"""The retry policy: which failures are retried, how long to wait first, and the shared budget.

One ``RetryPolicy`` (frozen, public) says how many retries a call may make, the exponential
full-jitter waits (backoff's ``expo`` and ``full_jitter``) and the size of the client-wide retry
budget. A ``Retrier`` applies it: given a failed attempt, it returns the wait before the next one,
or None to give up. The wait comes from the error: a 429's ``Retry-After`` sets it (the limiter
also holds the whole client back until then); other retryable failures wait with full jitter.

``set_testing(True)`` makes every retry wait zero (as stamina's ``set_testing``), for fast tests.
It does not shorten a pause the server asked for with ``Retry-After``: the limiter still honours it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import backoff
from attrs import define, frozen

from .._wire.protocol import is_retryable
from ..errors import ConvaiError, ConvaiTimeoutError, RateLimitError

__all__ = ["DEFAULT_RETRY", "Retrier", "RetryBudget", "RetryPolicy", "set_testing"]

logger = logging.getLogger("convai_async")


@frozen
class RetryPolicy:
    """How failed attempts are retried (see the README's "Retries" section).

    ``max_retries`` attempts follow the first at most. Waits are exponential with full jitter:
    uniform in [0, min(max_wait, initial_wait * multiplier**n)]. The budget is shared by every
    call of a client: a retry costs ``retry_cost`` tokens (``timeout_cost`` after a timeout) and
    a success refunds ``success_refund``, so an outage cannot multiply the load by
    ``max_retries``. Transient 429s are not charged: the limiter answers them by slowing down.
    """

    max_retries: int = 5
    initial_wait: float = 0.5
    multiplier: float = 2.0
    max_wait: float = 8.0
    budget: int = 500
    retry_cost: int = 5
    timeout_cost: int = 10
    success_refund: int = 1


DEFAULT_RETRY = RetryPolicy()

_testing = False


def set_testing(on: bool) -> None:
    """Make every retry wait zero (True) or real again (False). For test suites."""
    global _testing
    _testing = bool(on)


@define
class RetryBudget:
    """The client-wide token bucket behind ``RetryPolicy.budget`` (botocore's retry quota)."""

    capacity: int
    retry_cost: int
    timeout_cost: int
    success_refund: int
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


class Retrier:
    """A client's policy in action: decides each retry and owns the shared budget."""

    def __init__(self, policy: RetryPolicy) -> None:
        self.policy = policy
        self.budget = RetryBudget(
            capacity=policy.budget,
            retry_cost=policy.retry_cost,
            timeout_cost=policy.timeout_cost,
            success_refund=policy.success_refund,
        )

    def waits(self) -> Iterator[float]:
        """A fresh schedule of jittered waits for one call (exponential, capped)."""
        policy = self.policy
        schedule = backoff.expo(
            base=policy.multiplier, factor=policy.initial_wait, max_value=policy.max_wait
        )
        next(schedule)  # backoff's generators are primed before use
        for ceiling in schedule:
            yield backoff.full_jitter(ceiling)

    def wait_after(
        self,
        error: ConvaiError,
        *,
        failures: int,
        max_retry_after: float,
        waits: Iterator[float],
    ) -> float | None:
        """The wait before retrying after ``error``, or None: give up and raise it.

        ``failures`` counts the call's failed attempts that use up ``max_retries`` (the caller
        leaves 429s out when it is patient). A 429 is retried after its ``Retry-After`` unless
        that exceeds ``max_retry_after``: then the call fails at once rather than retry early.
        429s use no budget; other retryable errors are retried while the budget lasts."""
        if not is_retryable(error) or failures > self.policy.max_retries:
            return None
        if isinstance(error, RateLimitError):
            retry_after = error.retry_after
            if retry_after is not None and retry_after > max_retry_after:
                return None
            return 0.0 if _testing or retry_after is None else retry_after
        if not self.budget.try_spend(error):
            logger.warning("retry budget exhausted; failing fast: %s", error)
            return None
        wait = next(waits)
        return 0.0 if _testing else wait
