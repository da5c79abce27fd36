"""The rate controller against every server limiter in testing.limits, in virtual time.

A simulated server (a ``ServerLimiter`` plus latency, Retry-After rendered in each style) and
many concurrent workers sharing one ``AdaptiveLimiter``, as a bulk run does, all on an event
loop whose clock jumps to the next timer instead of waiting: no sockets, no real sleeping, and
the same result on a busy machine as on an idle one.
"""

from __future__ import annotations

import asyncio
import math
import random
import selectors
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, TypeVar

import pytest
from attrs import define, field

from convai_async._engine.limiter import AdaptiveLimiter
from convai_async.errors import RateLimitPatienceError
from convai_async.testing import limits

T = TypeVar("T")
RATE = 200.0  # the server's real limit, requests per second
LATENCY = (0.010, 0.030)  # seconds per request, uniform
CAP = 4  # the concurrency cap: 4 in flight at 20 ms mean latency is 200/s
WORKERS = 32
JITTER = 0.002  # seconds: sends paced evenly do not arrive evenly


class _JumpingSelector(selectors.DefaultSelector):
    """Never waits: a timeout moves the loop's virtual clock forward instead."""

    def __init__(self, loop: VirtualTimeLoop) -> None:
        super().__init__()
        self._loop = loop

    def select(self, timeout: float | None = None) -> list[Any]:
        ready = super().select(0)
        if not ready and timeout is not None and timeout > 0:
            self._loop.now += timeout
        return ready


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    def __init__(self) -> None:
        self.now = 0.0
        super().__init__(_JumpingSelector(self))

    def time(self) -> float:
        return self.now


def run_virtual(coroutine_factory: Callable[[], Coroutine[Any, Any, T]]) -> T:
    loop = VirtualTimeLoop()
    try:
        return loop.run_until_complete(coroutine_factory())
    finally:
        loop.close()


@define
class SimServer:
    """A limiter in front of a server with some latency, answering in one Retry-After style."""

    limiter: limits.ServerLimiter
    style: str
    tenant: limits.Tenant | None = None
    tenant_stops_at: float = math.inf
    random: random.Random = field(factory=lambda: random.Random(12))
    log: list[tuple[float, bool]] = field(factory=list)  # (time, refused)

    async def request(self, now: Callable[[], float]) -> float | bool | None:
        """True: accepted. Otherwise refused, with the Retry-After the client would read."""
        await asyncio.sleep(self.random.uniform(0.0, JITTER))  # the way there varies
        at = now()
        if self.tenant is not None:
            if at >= self.tenant_stops_at:
                self.tenant.rate = 0.0
            self.tenant.catch_up(at)
        wait = self.limiter.admit(at)
        await asyncio.sleep(self.random.uniform(*LATENCY) / 2)
        self.log.append((at, wait is not None))
        if wait is None:
            await asyncio.sleep(self.random.uniform(*LATENCY) / 2)
            self.limiter.done(now())
            return True
        return retry_after(wait, self.style, at)


def retry_after(wait: float, style: str, at: float) -> float | None:
    """What the client reads from the header: the wall clock is the virtual clock here."""
    if style == "seconds":
        return float(max(1, math.ceil(wait)))
    if style == "decimal":
        return math.ceil(wait * 1000) / 1000
    if style == "http-date":
        return math.ceil(at + wait) - at  # the date has whole seconds
    return None


@define
class Run:
    items: int
    applied: int
    failures: list[BaseException]
    log: list[tuple[float, bool]]
    rates: list[tuple[float, float | None]]  # (time, the controller's rate)
    elapsed: float
    sends: list[float]  # when each request left
    failed_at: list[float]  # when each failure was raised


async def simulate(server: SimServer, items: int, *, patience: float = 300.0) -> Run:
    loop = asyncio.get_running_loop()
    limiter = AdaptiveLimiter(
        max_concurrency=WORKERS, rate_limit_patience=patience, clock=loop.time
    )
    queue: Iterator[int] = iter(range(items))
    applied = 0
    failures: list[BaseException] = []
    rates: list[tuple[float, float | None]] = []
    sends: list[float] = []
    failed_at: list[float] = []

    async def worker() -> None:
        nonlocal applied
        for _ in queue:
            while True:
                try:
                    sent_at = await limiter.acquire()
                except RateLimitPatienceError as error:
                    failures.append(error)
                    failed_at.append(loop.time())
                    break
                sends.append(sent_at)
                try:
                    answer = await server.request(loop.time)
                finally:
                    limiter.release()
                if answer is True:
                    limiter.on_success(sent_at)
                    applied += 1
                    break
                whole = 1.0 if server.style in ("seconds", "http-date") else 0.0
                limiter.on_rate_limited(answer if answer is not False else None, sent_at, whole)

    async def sampler() -> None:
        while True:
            rates.append((loop.time(), limiter.effective_rate))
            await asyncio.sleep(0.1)

    sampling = asyncio.create_task(sampler())
    await asyncio.gather(*(worker() for _ in range(WORKERS)))
    sampling.cancel()
    return Run(items, applied, failures, server.log, rates, loop.time(), sends, failed_at)


BEHAVIOURS: dict[str, Callable[[], tuple[limits.ServerLimiter, float]]] = {
    # name: (server limiter, seconds the tenant runs at half the limit, or 0)
    "token bucket, burst 5": lambda: (limits.TokenBucket(rate=RATE, burst=5), 0.0),
    "token bucket, burst 50": lambda: (limits.TokenBucket(rate=RATE, burst=50), 0.0),
    "gcra, burst 20": lambda: (limits.Gcra(rate=RATE, burst=20), 0.0),
    "fixed window 1s": lambda: (limits.FixedWindow(limit=int(RATE), window=1.0), 0.0),
    "fixed window 10s": lambda: (limits.FixedWindow(limit=int(RATE) * 10, window=10.0), 0.0),
    "sliding log": lambda: (limits.SlidingWindowLog(limit=int(RATE), window=1.0), 0.0),
    "sliding, refused count": lambda: (
        limits.SlidingWindowRefusedCount(limit=int(RATE), window=1.0),
        0.0,
    ),
    "concurrency cap": lambda: (limits.ConcurrencyCap(limit=CAP), 0.0),
    "shared with a tenant": lambda: (limits.TokenBucket(rate=RATE, burst=20), 5.0),
}


def run_behaviour(name: str, style: str, items: int = 4000, seed: int = 12) -> Run:
    limiter, tenant_seconds = BEHAVIOURS[name]()
    server = SimServer(limiter, style, random=random.Random(seed))
    if tenant_seconds:
        server.tenant = limits.Tenant(limiter, rate=RATE / 2)
        server.tenant_stops_at = tenant_seconds
    if name == "fixed window 10s":
        items *= 2
    return run_virtual(lambda: simulate(server, items))


def refused_share_after(run: Run, start: float) -> float:
    later = [refused for at, refused in run.log if at >= start]
    return sum(later) / max(1, len(later))


def second_half_rate(run: Run) -> float:
    half = run.elapsed / 2
    rates = [rate for at, rate in run.rates if at >= half]
    assert all(rate is not None for rate in rates)
    return sum(rate for rate in rates if rate is not None) / len(rates)


@pytest.mark.parametrize("style", limits.RETRY_AFTER_STYLES)
@pytest.mark.parametrize("name", list(BEHAVIOURS))
def test_the_controller_finds_and_holds_the_limit(name: str, style: str) -> None:
    run = run_behaviour(name, style)
    assert run.applied == run.items
    assert not run.failures
    assert refused_share_after(run, 1.0) <= 0.03
    assert second_half_rate(run) == pytest.approx(RATE, rel=0.10)


@pytest.mark.parametrize("seed", range(13, 18))
@pytest.mark.parametrize("style", limits.RETRY_AFTER_STYLES)
def test_a_concurrency_cap_is_found_whatever_the_jitter(style: str, seed: int) -> None:
    # The cap is the behaviour most sensitive to how the sends happen to arrive: the client's
    # count of requests at the server is the server's or one more.
    run = run_behaviour("concurrency cap", style, seed=seed)
    assert run.applied == run.items
    assert refused_share_after(run, 1.0) <= 0.03
    assert second_half_rate(run) == pytest.approx(RATE, rel=0.10)


def test_endless_429s_end_every_item_with_patience_error() -> None:
    server = SimServer(limits.FixedWindow(limit=0, window=1e9), "none")
    run = run_virtual(lambda: simulate(server, 200, patience=10.0))
    assert run.applied == 0
    assert len(run.failures) == 200
    assert all(isinstance(error, RateLimitPatienceError) for error in run.failures)
    assert min(run.failed_at) >= 10.0  # not before patience has run out
    assert max(run.sends) <= min(run.failed_at)  # and nothing sent after: no trickle
