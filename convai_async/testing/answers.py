"""The fake's answers as plain data: a status, headers and a JSON body or raw bytes.

Also the documented error bodies of the two API families, so the endpoint logic and the fault
injection build answers without knowing anything about the HTTP server that sends them.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from attrs import field, frozen

__all__ = [
    "HTML_5XX",
    "INVALID_KEY_BODY",
    "Answer",
    "character_error",
    "gateway_error",
    "llm_error",
    "new_transaction_id",
    "ok",
    "unauthorized",
]

HTML_5XX = (
    b"<html><head><title>503 Service Unavailable</title></head><body><h1>503</h1></body></html>"
)
INVALID_KEY_BODY = b'{\n    "API_ERROR": "Invalid API key provided.\n}'  # sic: the docs' own 401


@frozen
class Answer:
    """What the fake answers: ``body`` is sent as JSON unless it is ``bytes`` (sent as is)."""

    status: int
    body: Any
    headers: Mapping[str, str] = field(factory=dict)
    content_type: str = "application/json"


def ok(body: Any) -> Answer:
    return Answer(200, body)


def character_error(message: str, status: int = 400) -> Answer:
    """The character endpoints' error shape: ``{"ERROR": message}``."""
    return Answer(status, {"ERROR": message})


def llm_error(status: int, message: str, headers: Mapping[str, str] | None = None) -> Answer:
    """The custom LLM endpoints' error shape: ``{"status": "error", message, transactionID}``."""
    body = {"status": "error", "message": message, "transactionID": new_transaction_id()}
    return Answer(status, body, headers or {})


def new_transaction_id() -> str:
    return str(uuid.uuid4())


def unauthorized(path: str) -> Answer:
    """A missing or revoked key: the docs' (invalid JSON) 401, or the LLM endpoints' own."""
    if path.startswith("/llm-models/"):
        return llm_error(401, "Unauthorized: missing or invalid CONVAI-API-KEY")
    return Answer(401, INVALID_KEY_BODY)


def gateway_error(status: int) -> Answer:
    """An HTML error page, as a gateway in front of the API sends one."""
    return Answer(status, HTML_5XX, content_type="text/html")
