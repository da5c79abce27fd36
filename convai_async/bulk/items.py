"""What the bulk runner works on: work items, and an input (sync or async) read lazily.

``WorkItem`` is one unit of work: an update to send, or a result decided without a request. The
pullers read a plain iterable without a coroutine or a lock per item, and an async iterable one
item at a time; ``Credits`` bounds how far ahead of the results the input is read.
"""

from __future__ import annotations

import asyncio
import collections
import os
from collections.abc import AsyncIterable, Awaitable, Callable, Iterable
from typing import Any

from attrs import define

from ..errors import ValidationError
from ..models import CharacterUpdate
from .format import Values
from .reader import BadLine
from .report import UpdateResult, UpdateStatus

__all__ = [
    "EXHAUSTED",
    "STOPPED",
    "Credits",
    "Taken",
    "WorkItem",
    "as_is",
    "async_puller",
    "bad_line_item",
    "sync_puller",
    "values_of",
]


@define
class WorkItem:
    """One unit of work: an update to send (``update``), or a result decided without a request
    (``decided``). ``was``: the values before (migrations and rollbacks journal them).
    ``unrecorded``: a rollback note; the item reports NOT_RECORDED even when its request
    succeeds."""

    index: int
    char_id: str
    update: CharacterUpdate | None = None
    was: Values | None = None
    decided: UpdateResult | None = None
    unrecorded: str | None = None


def bad_line_item(journal: str | os.PathLike[str], line: BadLine) -> WorkItem:
    """A FAILED item for a journal line that cannot be read, naming the line (and the item it
    names, when it still does); the run goes on with the rest."""
    error = ValidationError("journal", f"{os.fspath(journal)} {line.describe()}")
    index = line.index if line.index is not None else -line.number
    char_id = line.char_id or f"(line {line.number})"
    result = UpdateResult(index, char_id, None, UpdateStatus.FAILED, error)
    return WorkItem(index, char_id, decided=result)


def as_is(_: int, item: WorkItem) -> WorkItem:
    """``to_item`` for inputs that are WorkItems already (migrations, rollbacks)."""
    return item


def values_of(update: CharacterUpdate) -> Values:
    return Values(update.model, update.temperature)


EXHAUSTED = object()
STOPPED = object()  # stop was set or the input ended: nothing was read

Taken = tuple[WorkItem, asyncio.Future[None] | None]


def async_puller(items: Iterable[Any] | AsyncIterable[Any]) -> Callable[[], Awaitable[Any]] | None:
    """A coroutine function returning the next item or EXHAUSTED for an async iterable; None
    for a sync one, which ``sync_puller`` reads directly (no coroutine, no lock per item)."""
    if isinstance(items, AsyncIterable):
        iterator = aiter(items)

        async def next_async() -> Any:
            try:
                return await iterator.__anext__()
            except StopAsyncIteration:
                return EXHAUSTED

        return next_async
    return None


def sync_puller(items: Iterable[Any] | AsyncIterable[Any]) -> Callable[[], Any] | None:
    """A function returning the next item or EXHAUSTED for a sync iterable (None otherwise)."""
    if isinstance(items, AsyncIterable):
        return None
    plain = iter(items)
    return lambda: next(plain, EXHAUSTED)


class Credits:
    """How many more items may be taken ahead of the results handed out: an asyncio.Semaphore
    without its per-call costs (``left`` is read and decremented directly when positive)."""

    __slots__ = ("left", "waiters")

    def __init__(self, left: int) -> None:
        self.left = left
        self.waiters: collections.deque[asyncio.Future[None]] = collections.deque()

    async def acquire(self) -> None:
        if self.left > 0:
            self.left -= 1
            return
        waiter = asyncio.get_running_loop().create_future()
        self.waiters.append(waiter)
        await waiter  # release hands its credit over

    def release(self) -> None:
        waiters = self.waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self.left += 1
