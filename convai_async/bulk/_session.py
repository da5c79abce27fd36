"""The one place bulk work reaches the request engine: send a character update, read stats.

Everything in ``bulk/`` goes through ``send_update`` and ``is_fatal``; nothing else here knows how
the engine is built. (Until the engine's ``Session.call(endpoint, request, trace=...)`` lands,
this adapts the client's call path with a stand-in trace of the same shape.)
"""

from __future__ import annotations

from typing import Any, Protocol

from attrs import define

from .. import protocol
from ..errors import APIStatusError, ConvaiError
from ..models import Character, CharacterUpdate

__all__ = ["BulkSession", "CallTrace", "CharacterSource", "is_fatal", "send_update"]


class BulkSession(Protocol):
    """What bulk work needs of the engine."""

    @property
    def max_concurrency(self) -> int: ...

    @property
    def stats(self) -> Any: ...


class CharacterSource(Protocol):
    """What migrations and rollbacks need to see the fleet (``client.characters``)."""

    async def list(self) -> list[Character]: ...


@define
class CallTrace:
    """What one logical call saw: its attempts, and whether any may have reached the server."""

    attempts: int = 0
    request_sent_unanswered: bool = False
    first_error: ConvaiError | None = None
    answered: bool = False

    @property
    def request_sent(self) -> bool:
        # Conservative: an answer, an ambiguous transport error, or more than one attempt.
        return self.answered or self.request_sent_unanswered or self.attempts > 1


async def send_update(session: Any, update: CharacterUpdate, trace: CallTrace) -> None:
    """Send one update through the engine (limiter, retries); raise its ConvaiError on failure."""
    try:
        await session._call(protocol.CHARACTER_UPDATE, update, trace)
    except APIStatusError:
        trace.answered = True
        raise
    trace.answered = True


def is_fatal(error: ConvaiError | None) -> bool:
    """Whether an error means no further request can succeed (401, 403, quota)."""
    return protocol.is_fatal(error)
