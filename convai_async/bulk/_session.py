"""The one place bulk work reaches the request engine: send a character update, judge an error.

Everything in ``bulk/`` sends through ``send_update`` and asks ``is_fatal``; the session and the
character listing are the engine's and the resources' public interfaces.
"""

from __future__ import annotations

from typing import Protocol

from .._engine.session import CallTrace, Session
from .._wire import protocol
from ..errors import ConvaiError
from ..models import Character, CharacterUpdate

__all__ = ["CallTrace", "CharacterSource", "Session", "is_fatal", "send_update"]


class CharacterSource(Protocol):
    """What migrations and rollbacks need to see the fleet (``client.characters``)."""

    async def list(self) -> list[Character]: ...


async def send_update(session: Session, update: CharacterUpdate, trace: CallTrace) -> None:
    """Send one update through the session (limiter, retries; patient with 429s, as bulk runs
    are); raise its ConvaiError on failure. ``trace`` says whether it may have been sent."""
    await session.call(protocol.CHARACTER_UPDATE, update, trace=trace, patient=True)


def is_fatal(error: ConvaiError | None) -> bool:
    """Whether an error means no further request can succeed (401, 403, quota)."""
    return protocol.is_fatal(error)
