"""A compact index of a journal, built in one streaming pass: what each item's last word was.

States live in a ``bytearray`` (one byte per item index) and bulk fingerprints in an
``array('Q')`` (eight bytes per index), so a 1,000,000-entry journal indexes in about 9 MB.
Per-character bookkeeping (for resume order) is kept only for characters that have an item still
unresolved, found in a second pass that runs only when there is one.
"""

from __future__ import annotations

import enum
import hashlib
import os
from array import array
from collections.abc import Iterator

from attrs import define, field

from .format import Header, Intent, Outcome, PlanEnd, Values
from .reader import BadLine, read_lines

__all__ = ["JournalIndex", "State", "fingerprint", "index_journal"]

MAX_INDEX = 1 << 40  # an index beyond this is a bad line, not a reason to allocate terabytes
BAD_SAMPLE = 100


class State(enum.IntEnum):
    NONE = 0  # no line about this item
    IN_DOUBT = 1  # an intent without an outcome after it: the request may have been sent
    APPLIED = 2
    UNRESOLVED = 3  # failed, skipped, conflict, ...: to do again
    SUPERSEDED = 4
    BAD = 5  # its last line could not be read


def fingerprint(char_id: str, values: Values) -> int:
    """A stable 64-bit digest of an update (the same in every process)."""
    text = f"{char_id}\0{values.model}\0{values.temperature!r}"
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


def _grow(states: bytearray, index: int) -> None:
    if index >= len(states):
        states.extend(bytes(max(index + 1 - len(states), len(states))))


@define
class JournalIndex:
    header: Header | None = None
    states: bytearray = field(factory=bytearray)
    fingerprints: array[int] = field(factory=lambda: array("Q"))
    bad: dict[int, BadLine] = field(factory=dict)  # item index -> its unreadable last line
    loose_bad: list[BadLine] = field(factory=list)  # a sample of bad lines naming no item
    loose_bad_count: int = 0
    plan_count: int | None = None  # lines in the recorded plan; None: the plan is incomplete
    intents: int = 0
    superseded_by: dict[str, int] = field(factory=dict)  # char -> its last applied index

    def state(self, index: int) -> State:
        return State(self.states[index]) if index < len(self.states) else State.NONE

    def applied(self, index: int, digest: int | None = None) -> bool:
        """Whether the journal records this item as applied (and, given a digest, as the same
        update: a different item at this index is not the one that was applied)."""
        if self.state(index) is not State.APPLIED:
            return False
        return digest is None or (
            index < len(self.fingerprints) and self.fingerprints[index] == digest
        )


_OUTCOME_STATES = {"applied": State.APPLIED, "superseded": State.SUPERSEDED}


def index_journal(path: str | os.PathLike[str], *, fingerprints: bool = False) -> JournalIndex:
    """Index a journal in one pass (and a second one only if resume order needs it)."""
    index = JournalIndex()
    states = index.states
    prints = index.fingerprints
    for _, line in read_lines(path):
        if isinstance(line, Intent):
            if line.i >= MAX_INDEX:
                continue
            _grow(states, line.i)
            states[line.i] = State.IN_DOUBT
            index.intents += 1
            if fingerprints:
                if line.i >= len(prints):
                    grow = max(line.i + 1 - len(prints), len(prints))
                    prints.frombytes(bytes(8 * grow))
                prints[line.i] = fingerprint(line.c, line.set)
        elif isinstance(line, Outcome):
            if line.i < MAX_INDEX:
                _grow(states, line.i)
                states[line.i] = _OUTCOME_STATES.get(line.s, State.UNRESOLVED)
                index.bad.pop(line.i, None)
        elif isinstance(line, BadLine):
            _note_bad(index, line)
        elif isinstance(line, Header) and index.header is None:
            index.header = line
        elif isinstance(line, PlanEnd):
            index.plan_count = line.count
    if fingerprints and any(
        state in (State.IN_DOUBT, State.UNRESOLVED, State.BAD) for state in states
    ):
        index.superseded_by = _superseding(path, states)
    return index


def _note_bad(index: JournalIndex, line: BadLine) -> None:
    if line.index is not None and line.index < MAX_INDEX:
        _grow(index.states, line.index)
        index.states[line.index] = State.BAD
        index.bad[line.index] = line
    else:
        index.loose_bad_count += 1
        if len(index.loose_bad) < BAD_SAMPLE:
            index.loose_bad.append(line)


def _first_intents(path: str | os.PathLike[str]) -> Iterator[Intent]:
    seen = bytearray()
    for _, line in read_lines(path, only="intent"):
        if isinstance(line, Intent) and line.i < MAX_INDEX:
            _grow(seen, line.i)
            if not seen[line.i]:
                seen[line.i] = 1
                yield line


def _superseding(path: str | os.PathLike[str], states: bytearray) -> dict[str, int]:
    """For each character with an unresolved item, the last index of it that was applied after
    that item. A run writes an item's first intent in index order, so one pass in file order
    sees every earlier item of a character before a later one."""
    pending: set[str] = set()
    last: dict[str, int] = {}
    for intent in _first_intents(path):
        state = states[intent.i]
        if state == State.APPLIED:
            if intent.c in pending:
                last[intent.c] = intent.i
        elif state != State.SUPERSEDED:
            pending.add(intent.c)
    return last
