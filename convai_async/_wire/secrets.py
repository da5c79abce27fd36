"""Secrets kept out of sight: ``Secret`` hides a key, ``Redactor`` scrubs keys from server text.

A ``Secret``'s repr and str are redacted and it refuses to be pickled, so a key can sit in a
local variable, an attrs field or a traceback's captured locals without showing. Only
``reveal()`` gives the bare string; the transport calls it inside the aiohttp call itself.
``SecretBody`` is a JSON body whose secret fields are joined in only by ``reveal()``.

``Redactor.clip`` is what every server-controlled string goes through before it reaches an
error or a log line: it redacts every known secret, and any run of ``FRAGMENT_CHARS`` or more
consecutive characters of one (what a cut leaves of a key), and only then truncates.
"""

from __future__ import annotations

import hmac
import json
from typing import NoReturn

__all__ = ["FRAGMENT_CHARS", "REDACTED", "Redactor", "Secret", "SecretBody"]

REDACTED = "[redacted]"
FRAGMENT_CHARS = 8  # a run this long of a secret's characters is redacted wherever it appears


class Secret:
    """A key. ``repr``/``str`` show ``[redacted]``; ``reveal()`` is the only way to the value."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return f"Secret({REDACTED!r})"

    def __str__(self) -> str:
        return REDACTED

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        return hmac.compare_digest(self._value.encode(), other._value.encode())

    def __hash__(self) -> int:
        return hash((Secret, self._value))

    def __reduce__(self) -> NoReturn:
        raise TypeError("a Secret is not picklable: it would write the key out in clear")

    def __copy__(self) -> Secret:
        return self  # immutable

    def __deepcopy__(self, memo: object) -> Secret:
        return self


_ENCODER = json.JSONEncoder(separators=(",", ":"))


class SecretBody:
    """A JSON object body with secret fields appended only by ``reveal()`` (in the transport).

    ``head`` is the encoded object without the secret fields; ``fields`` are (name, secret)."""

    __slots__ = ("_fields", "_head")

    def __init__(self, head: bytes, fields: tuple[tuple[str, Secret], ...]) -> None:
        self._head = head
        self._fields = fields

    def reveal(self) -> bytes:
        """The whole body, secrets included: call it inside the request call, never keep it."""
        parts = [self._head[:-1]] if len(self._head) > 2 else [b"{"]
        for index, (name, secret) in enumerate(self._fields):
            if index or len(self._head) > 2:
                parts.append(b",")
            parts.append(f"{_ENCODER.encode(name)}:{_ENCODER.encode(secret.reveal())}".encode())
        parts.append(b"}")
        return b"".join(parts)

    def __repr__(self) -> str:
        names = ", ".join(name for name, _ in self._fields)
        return f"SecretBody({len(self._head)} bytes + secret fields: {names})"

    def __reduce__(self) -> NoReturn:
        raise TypeError("a SecretBody is not picklable: it holds a key")


class Redactor:
    """The secrets one client knows; ``clip`` scrubs them from text before it is shown."""

    __slots__ = ("_fragments", "_longest", "_secrets")

    def __init__(self) -> None:
        self._secrets: tuple[Secret, ...] = ()
        # Hashes of every run of FRAGMENT_CHARS characters of a secret: the runs themselves
        # would be pieces of the key lying in an attribute. (A collision redacts a few
        # characters too many; it cannot let one through.)
        self._fragments: frozenset[int] = frozenset()
        self._longest = 0

    def add(self, secret: Secret) -> None:
        value = secret.reveal()
        if not value or secret in self._secrets:
            return
        self._secrets = (*self._secrets, secret)
        runs = {hash(value[i : i + FRAGMENT_CHARS]) for i in range(len(value) - FRAGMENT_CHARS + 1)}
        self._fragments = self._fragments | runs
        self._longest = max(self._longest, len(value))

    def __len__(self) -> int:
        return len(self._secrets)

    def __repr__(self) -> str:
        return f"Redactor({len(self._secrets)} secret(s))"

    def redact(self, text: str) -> str:
        """``text`` with every secret, and every run of 8+ characters of one, redacted."""
        if not self._secrets:
            return text
        for secret in self._secrets:
            text = text.replace(secret.reveal(), REDACTED)
        fragments = self._fragments
        if not fragments or len(text) < FRAGMENT_CHARS:
            return text
        covered_to = -1  # the end of the last run found
        spans: list[tuple[int, int]] = []
        for start in range(len(text) - FRAGMENT_CHARS + 1):
            if hash(text[start : start + FRAGMENT_CHARS]) in fragments:
                end = start + FRAGMENT_CHARS
                if spans and start <= covered_to:
                    spans[-1] = (spans[-1][0], end)
                else:
                    spans.append((start, end))
                covered_to = end
        if not spans:
            return text
        pieces: list[str] = []
        position = 0
        for start, end in spans:
            pieces += (text[position:start], REDACTED)
            position = end
        pieces.append(text[position:])
        return "".join(pieces)

    def clip(self, text: str, limit: int) -> str:
        """``text`` redacted, then cut to ``limit`` characters.

        Only a bounded prefix is scanned. When that prefix cut into the text, its last
        ``FRAGMENT_CHARS - 1`` characters are dropped too: they may be the head of a key too
        short to recognise."""
        scanned = limit + 2 * self._longest + FRAGMENT_CHARS
        if len(text) <= scanned:
            return self.redact(text)[:limit]
        return self.redact(text[:scanned])[: -(FRAGMENT_CHARS - 1)][:limit]
