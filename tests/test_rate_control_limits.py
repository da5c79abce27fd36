"""The server-side limiters of testing.limits, each alone, with exact counts on a made-up clock."""

from __future__ import annotations

from email.utils import parsedate_to_datetime

import pytest

from convai_async.testing import limits


def admitted(limiter: limits.ServerLimiter, times: list[float]) -> list[bool]:
    return [limiter.admit(at) is None for at in times]


def test_token_bucket_without_burst_admits_one_per_interval() -> None:
    bucket = limits.TokenBucket(rate=10.0)
    assert admitted(bucket, [0.0, 0.05, 0.1, 0.15, 0.2]) == [True, False, True, False, True]
    assert bucket.admit(0.2) == pytest.approx(0.1)


def test_token_bucket_with_burst_admits_the_burst_then_the_rate() -> None:
    bucket = limits.TokenBucket(rate=100.0, burst=20)
    assert sum(admitted(bucket, [0.0] * 30)) == 20
    assert bucket.admit(0.0) == pytest.approx(0.01)
    # one second later: 100 refilled, capped at the burst of 20
    assert sum(admitted(bucket, [1.0] * 30)) == 20


def test_gcra_admits_the_burst_then_one_per_interval() -> None:
    gcra = limits.Gcra(rate=10.0, burst=3)
    assert admitted(gcra, [0.0] * 4) == [True, True, True, False]
    assert gcra.admit(0.0) == pytest.approx(0.1)
    assert admitted(gcra, [0.15, 0.15, 0.25]) == [True, False, True]


@pytest.mark.parametrize("window", [1.0, 10.0])
def test_fixed_window_resets_at_each_boundary(window: float) -> None:
    fixed = limits.FixedWindow(limit=5, window=window)
    assert sum(admitted(fixed, [0.1] * 8)) == 5
    assert fixed.admit(0.1 * window) == pytest.approx(0.9 * window)
    assert sum(admitted(fixed, [window] * 8)) == 5  # a new window at its start


def test_sliding_log_counts_accepted_requests_in_any_window() -> None:
    log = limits.SlidingWindowLog(limit=3, window=1.0)
    assert admitted(log, [0.0, 0.4, 0.8, 0.9]) == [True, True, True, False]
    assert log.admit(0.9) == pytest.approx(0.1)
    assert admitted(log, [1.0, 1.1, 1.45]) == [True, False, True]


def test_sliding_window_counting_refusals_locks_out_a_client_that_keeps_sending() -> None:
    counting = limits.SlidingWindowRefusedCount(limit=3, window=1.0)
    assert admitted(counting, [0.0, 0.1, 0.2]) == [True, True, True]
    # sending every 0.3 s keeps at least three in every window: refused for ever
    assert not any(admitted(counting, [0.3 * k for k in range(1, 20)]))
    # after a full quiet window, admitted again
    assert counting.admit(10.0) is None
    # the wait it announces is exact: until all but limit - 1 logged requests have left
    counting = limits.SlidingWindowRefusedCount(limit=2, window=1.0)
    assert admitted(counting, [0.0, 0.5]) == [True, True]
    wait = counting.admit(0.6)  # refused, and logged: the 0.5 entry must leave first
    assert wait == pytest.approx(0.9)
    assert counting.admit(1.4) is not None  # the 0.5 and 0.6 entries still in the window
    assert counting.admit(2.5) is None


def test_concurrency_cap_counts_what_is_in_flight() -> None:
    cap = limits.ConcurrencyCap(limit=2, retry_after=0.05)
    assert admitted(cap, [0.0, 0.0, 0.0]) == [True, True, False]
    cap.done(0.1)
    assert admitted(cap, [0.1, 0.1]) == [True, False]
    assert cap.admit(0.1) == 0.05


def test_a_tenant_takes_its_share_of_a_shared_limit() -> None:
    bucket = limits.TokenBucket(rate=10.0, burst=1)
    tenant = limits.Tenant(bucket, rate=5.0)
    assert tenant.catch_up(0.0) == 1  # its first request, at once
    assert tenant.catch_up(1.0) == 5  # at 0.2, 0.4, ... 1.0
    # so between the tenant's sends, half the bucket's rate is left
    assert bucket.admit(1.0) is not None
    assert bucket.admit(1.1) is None
    tenant.rate = 0.0
    assert tenant.catch_up(5.0) == 0


def test_make_limiter_by_name_and_unknown_names() -> None:
    limiter = limits.make_limiter("sliding-refused", limit=2, window=1.0)
    assert isinstance(limiter, limits.SlidingWindowRefusedCount)
    assert limiter.limit == 2
    with pytest.raises(ValueError, match="unknown limiter"):
        limits.make_limiter("leaky-faucet")


def test_retry_after_values_in_each_style() -> None:
    assert limits.retry_after_value(0.004, "seconds", 0.0) == "1"
    assert limits.retry_after_value(2.2, "seconds", 0.0) == "3"
    assert limits.retry_after_value(0.0041, "decimal", 0.0) == "0.005"
    date = limits.retry_after_value(0.2, "http-date", 1_000_000_000.5)
    assert date is not None
    assert parsedate_to_datetime(date).timestamp() == 1_000_000_001
    assert limits.retry_after_value(5.0, "none", 0.0) is None
    with pytest.raises(ValueError, match="Retry-After style"):
        limits.retry_after_value(1.0, "fortnights", 0.0)
