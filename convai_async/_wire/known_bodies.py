"""Answers recognised by their exact bytes, so the common success costs no JSON parse.

``/character/update`` answers ``{"STATUS": "SUCCESS"}`` (the vendor docs, verbatim); servers
write it with or without the space and with or without a trailing newline. :func:`known_payload`
returns what ``json.loads`` would for those bodies (a fresh dict each time: the caller may keep
it), and None for any other body, which then takes the ordinary parse. The caller still applies
the endpoint's success check to the payload, so the answer means the same on every endpoint.
"""

from __future__ import annotations

from typing import Any

__all__ = ["KNOWN_BODIES", "known_payload"]

_UPDATE_SUCCESS_TEXTS = ('{"STATUS": "SUCCESS"}', '{"STATUS":"SUCCESS"}')
KNOWN_BODIES: frozenset[bytes] = frozenset(
    (text + end).encode() for text in _UPDATE_SUCCESS_TEXTS for end in ("", "\n", "\r\n")
)


def known_payload(body: bytes) -> dict[str, Any] | None:
    """``json.loads(body)`` when ``body`` is one of ``KNOWN_BODIES``; otherwise None."""
    if body in KNOWN_BODIES:
        return {"STATUS": "SUCCESS"}
    return None
