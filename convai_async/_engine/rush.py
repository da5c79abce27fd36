"""The first rush: what a client's unpaced requests before its first 429 were accepted.

Before any 429 the limiter does not pace, so its first requests go out as fast as the in-flight
cap lets them, and a server's limiter accepts what it holds at once: a bucket's burst, or a
window's quota. That count is the ``burst`` the rate controller fits a token bucket with
(:func:`._engine.controller.on_rate_limited`). The rush's successes are answered after its
first refusal too (they were in flight), so the count is taken once their answers are in.

Processes sharing a key (issue 13) rush together: the key's bucket accepted the sum of their
rushes, which :class:`KeyRush` keeps (each process adds its own through Redis).
"""

from __future__ import annotations

import collections

__all__ = ["TAIL_SECONDS", "FirstRush", "KeyRush"]

TAIL_SECONDS = 2.0  # the rush's successes counted: those sent this long before it ended, or less


class FirstRush:
    """The rush's successes (their send times), until :meth:`count` says how many there were."""

    __slots__ = ("_ended_at", "_sent", "accepted", "counted")

    def __init__(self) -> None:
        self._sent: collections.deque[float] = collections.deque()
        self._ended_at: float | None = None  # the send time of the first request refused
        self.accepted = 0
        self.counted = False

    def succeeded(self, sent_at: float) -> None:
        """A success to a request sent at ``sent_at``."""
        if self.counted:
            return
        ended_at, sent = self._ended_at, self._sent
        if ended_at is None:
            sent.append(sent_at)
            while sent[0] < sent_at - TAIL_SECONDS:
                sent.popleft()
        elif sent_at <= ended_at:  # answered after the first 429, sent before its request
            sent.append(sent_at)

    def end(self, at: float) -> None:
        """The limit is met (a 429 to a request sent ``at``, or another process's pause by
        then): requests sent later are paced, not the rush's. The first end counts."""
        if self._ended_at is None:
            self._ended_at = at

    def count(self, at: float) -> bool:
        """Count the rush's successes, once its answers are in (``at``: when it ended, if
        :meth:`end` was not told); True the first time."""
        if self.counted:
            return False
        ended_at = at if self._ended_at is None else self._ended_at
        self.accepted = sum(1 for sent_at in self._sent if sent_at >= ended_at - TAIL_SECONDS)
        self.counted = True
        self._sent.clear()
        return True


class KeyRush:
    """The key's first rush, all processes together, as Redis last reported it (each process's
    own is added with its next reservation)."""

    __slots__ = ("_own", "_reported", "pending")

    def __init__(self) -> None:
        self._own = self._reported = self.pending = 0

    @property
    def accepted(self) -> int:
        """Requests the key's first rush was accepted (0: not known)."""
        return max(self._reported, self._own)

    def add(self, accepted: int) -> None:
        """This process's own rush: to be added to the key's."""
        self._own = self.pending = accepted

    def again(self) -> None:
        """Redis lost the key's (it restarted): add this process's own again."""
        self.pending = self._own

    def reported(self, added: int, total: int) -> None:
        """A reservation added ``added`` (of what was pending) and reported ``total``. An
        answer to a reservation sent before another's addition is older: the larger stands."""
        self.pending -= added
        self._reported = max(self._reported, total)
