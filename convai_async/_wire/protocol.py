"""The Convai wire protocol as pure functions: no I/O, no aiohttp.

Given a request object, :func:`encode_body` says what bytes to send; given a status, headers and
body, :func:`parse_response` returns the decoded success payload or raises the matching
:class:`~convai_async.errors.ConvaiError`, every server-sent string in it redacted of the
client's secrets before it is cut short. :func:`retry_after_seconds` reads ``Retry-After`` and
:func:`is_retryable` says which failures a retry may cure. Everything here is tested on the
vendor documentation's examples verbatim.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from email.utils import parsedate_to_datetime
from typing import Any

from attrs import frozen

from ..errors import (
    APIStatusError,
    AuthenticationError,
    BadRequestError,
    ConflictError,
    ConvaiError,
    NotFoundError,
    PermissionDeniedError,
    QuotaExceededError,
    RateLimitError,
    RateLimitPatienceError,
    ServerError,
    TransportError,
    UnexpectedResponseError,
)
from ..models import ModelRegistration, ModelUpdate
from .converter import converter, encode_request
from .known_bodies import known_payload
from .secrets import FRAGMENT_CHARS, REDACTED, Redactor, Secret, SecretBody

__all__ = [
    "CHARACTER_GET",
    "CHARACTER_LIST",
    "CHARACTER_UPDATE",
    "ENDPOINTS",
    "MODEL_DEREGISTER",
    "MODEL_LIST",
    "MODEL_REGISTER",
    "MODEL_UPDATE",
    "NO_SECRETS",
    "REDACTED",
    "Endpoint",
    "encode_body",
    "error_for",
    "error_message",
    "is_retryable",
    "parse_response",
    "retry_after_granularity",
    "retry_after_seconds",
]

RETRYABLE_SERVER_STATUSES = frozenset({500, 502, 503, 504})
_MESSAGE_KEYS = ("message", "API_ERROR", "ERROR", "error", "detail")
_MESSAGE_IN_BROKEN_JSON = re.compile(
    r'"(?:message|API_ERROR|ERROR|error|detail)"\s*:\s*"([^"\r\n]*)'
)
_QUOTA_WORDS = ("usage limit", "quota")
_SHOWN_BODY_CHARS = 200  # of a body that is not JSON
_SHOWN_MESSAGE_CHARS = 500  # of a message the server sent in JSON
_SHOWN_TRANSACTION_ID_CHARS = 100
_SCANNED_BODY_CHARS = 4096  # a non-JSON body is shown from its start: no need to read further
RETRY_AFTER_CEILING = 366 * 24 * 3600.0  # a longer (or infinite) Retry-After reads as this
NO_SECRETS = Redactor()


def _character_update_ok(payload: Any) -> bool:
    return isinstance(payload, dict) and str(payload.get("STATUS", "")).upper() == "SUCCESS"


def _character_ok(payload: Any) -> bool:
    return isinstance(payload, dict) and isinstance(payload.get("character_id"), str)


def _character_list_ok(payload: Any) -> bool:
    return isinstance(payload, dict) and isinstance(payload.get("characters"), list)


def _llm_ok(payload: Any) -> bool:
    return isinstance(payload, dict) and str(payload.get("status", "")).lower() == "success"


def _llm_list_ok(payload: Any) -> bool:
    return _llm_ok(payload) and isinstance(payload.get("models"), list)


@frozen
class Endpoint:
    """One documented endpoint. ``large`` endpoints (lists) get the larger response size cap."""

    path: str
    is_success: Callable[[Any], bool]
    large: bool = False

    def __str__(self) -> str:
        return self.path


CHARACTER_UPDATE = Endpoint("/character/update", _character_update_ok)
CHARACTER_GET = Endpoint("/character/get", _character_ok)
CHARACTER_LIST = Endpoint("/character/list", _character_list_ok, large=True)
MODEL_REGISTER = Endpoint("/llm-models/register", _llm_ok)
MODEL_UPDATE = Endpoint("/llm-models/update", _llm_ok)
MODEL_DEREGISTER = Endpoint("/llm-models/deregister", _llm_ok)
MODEL_LIST = Endpoint("/llm-models/list", _llm_list_ok, large=True)
ENDPOINTS = (
    CHARACTER_UPDATE,
    CHARACTER_GET,
    CHARACTER_LIST,
    MODEL_REGISTER,
    MODEL_UPDATE,
    MODEL_DEREGISTER,
    MODEL_LIST,
)


_ENCODER = json.JSONEncoder(
    separators=(",", ":")
)  # one instance: json.dumps(**options) makes one per call


_CARRY_SECRETS = (ModelRegistration, ModelUpdate)


def encode_body(request: object | None) -> bytes | SecretBody:
    """The JSON body for a request object (None: the list endpoints, which take no body).

    A request carrying a custom LLM key gives a ``SecretBody``: the key is joined in by the
    transport as it sends, so no bytes holding it exist anywhere on the call path."""
    if request is None:
        return b""
    if not isinstance(request, _CARRY_SECRETS):
        return encode_request(request)  # the class's compiled encoder: same bytes, less work
    payload = converter.unstructure(request)
    hidden = tuple((key, value) for key, value in payload.items() if isinstance(value, Secret))
    if hidden:
        for name, _ in hidden:
            del payload[name]
        return SecretBody(_ENCODER.encode(payload).encode(), hidden)
    return _ENCODER.encode(payload).encode()


def _decode(body: bytes) -> Any:
    """The JSON value of a body, or None when it is empty or not JSON."""
    if not body.strip():
        return None
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None


def error_message(
    payload: Any, body: bytes, content_type: str = "", redactor: Redactor = NO_SECRETS
) -> str:
    """The server's human-readable message, from any of the three documented error shapes,
    a body that is not valid JSON (the docs' own 401 example), HTML, or nothing; redacted of
    ``redactor``'s secrets, then cut short."""
    if isinstance(payload, dict):
        for key in _MESSAGE_KEYS:
            value = payload.get(key)
            if isinstance(value, dict):
                value = value.get("message")
            if isinstance(value, str) and value.strip():
                return redactor.clip(value.strip(), _SHOWN_MESSAGE_CHARS)
    text = body.decode("utf-8", "replace").strip()
    found = _MESSAGE_IN_BROKEN_JSON.search(text)
    if found and found.group(1).strip():
        return redactor.clip(found.group(1).strip(), _SHOWN_MESSAGE_CHARS)
    if not text:
        return "empty body"
    if "html" in content_type.lower() or text.lstrip().lower().startswith(("<!doctype", "<html")):
        return "non-JSON body (text/html)"
    if payload is None:
        start = " ".join(text[:_SCANNED_BODY_CHARS].split())
        if len(text) > _SCANNED_BODY_CHARS:  # what the cut left may be the head of a key
            start = start[: -(FRAGMENT_CHARS - 1)]
        shown = redactor.clip(start, _SHOWN_BODY_CHARS)
        return f"non-JSON body: {shown}" if shown.isprintable() else "non-JSON body"
    return f"unexpected JSON {type(payload).__name__}"


def retry_after_seconds(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Seconds to wait from ``Retry-After`` (delta-seconds or HTTP-date; ``retry-after-ms`` is
    honoured too). Keys are expected in lower case. None when absent or unreadable.

    An HTTP-date is read against ``now`` (Unix time, which the caller reads: this layer has no
    clock); without ``now`` a date cannot be read and counts as absent."""
    return _read_retry_after(headers, now)[0]


def retry_after_granularity(headers: Mapping[str, str]) -> float:
    """The resolution of the wait :func:`retry_after_seconds` reads from the same headers: 1.0
    for whole seconds (delta-seconds in digits, RFC 9110's form, or an HTTP-date: a server
    rounds its wait up to them, by up to a second), 0.0 for anything finer (milliseconds, a
    fraction) or when there is no wait to read."""
    return _read_retry_after(headers, None)[1]


def _read_retry_after(headers: Mapping[str, str], now: float | None) -> tuple[float | None, float]:
    """The wait the headers ask for (None: none readable) and its resolution."""
    millis = headers.get("retry-after-ms")
    if millis is not None:
        try:
            return max(0.0, float(millis) / 1000.0), 0.0
        except ValueError:
            pass  # unreadable: Retry-After is read instead
    value = headers.get("retry-after")
    if value is None:
        return None, 0.0
    value = value.strip()
    granularity = 1.0 if value.isdigit() else 0.0
    try:
        seconds = float(value)
    except ValueError:
        granularity = 1.0 if value else 0.0  # a date has whole seconds
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None, granularity
        if when.tzinfo is None or now is None:
            return None, granularity
        seconds = when.timestamp() - now
    if seconds != seconds:  # NaN
        return None, granularity
    # "1e400" is inf: as long as we wait
    return min(max(0.0, seconds), RETRY_AFTER_CEILING), granularity


_STATUS_ERRORS: dict[int, type[APIStatusError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    409: ConflictError,
}


def parse_response(
    endpoint: Endpoint,
    status: int,
    headers: Mapping[str, str],
    body: bytes,
    *,
    redactor: Redactor = NO_SECRETS,
    now: float | None = None,
) -> Any:
    """The decoded success payload, or the error the answer means (raised)."""
    if 200 <= status < 300:
        known = known_payload(body)  # the documented success, recognised without a JSON parse
        if known is not None and endpoint.is_success(known):
            return known
    payload = _decode(body)
    if 200 <= status < 300 and payload is not None and endpoint.is_success(payload):
        return payload
    error = error_for(endpoint, status, headers, body, payload, redactor, now)
    # The answer may echo a key: keep it out of the locals a traceback captures (Sentry, -l).
    del body, payload, headers
    raise error


def error_for(
    endpoint: Endpoint,
    status: int,
    headers: Mapping[str, str],
    body: bytes,
    payload: Any,
    redactor: Redactor = NO_SECRETS,
    now: float | None = None,
) -> ConvaiError:
    """The error an answer that is not a documented success means (returned, not raised)."""
    content_type = headers.get("content-type", "")
    message = error_message(payload, body, content_type, redactor)
    transaction_id = payload.get("transactionID") if isinstance(payload, dict) else None
    if isinstance(transaction_id, str):
        transaction_id = redactor.clip(transaction_id, _SHOWN_TRANSACTION_ID_CHARS)
    else:
        transaction_id = None
    where = endpoint.path
    if 200 <= status < 300:
        problem = "not the documented success shape"
        if payload is None:
            problem = "body is not JSON"
        return UnexpectedResponseError(
            f"{problem}: {message}", status=status, endpoint=where, transaction_id=transaction_id
        )
    if status == 429:
        lowered = message.lower()
        kind = QuotaExceededError if any(w in lowered for w in _QUOTA_WORDS) else RateLimitError
        return kind(
            message,
            status=status,
            endpoint=where,
            transaction_id=transaction_id,
            retry_after=retry_after_seconds(headers, now),
        )
    error_class = _STATUS_ERRORS.get(status)
    if error_class is None:
        error_class = ServerError if 500 <= status < 600 else UnexpectedResponseError
    if 300 <= status < 400:
        message = "redirect not followed; the base URL is probably wrong"
    return error_class(message, status=status, endpoint=where, transaction_id=transaction_id)


def is_retryable(error: BaseException) -> bool:
    """Whether another attempt may help: transport failures, transient 429s, 500/502/503/504."""
    if isinstance(error, TransportError):
        return True
    if isinstance(error, (QuotaExceededError, RateLimitPatienceError)):
        return False
    if isinstance(error, RateLimitError):
        return True
    if isinstance(error, ServerError):
        return error.status in RETRYABLE_SERVER_STATUSES
    return False


def is_fatal(error: ConvaiError | None) -> bool:
    """Whether an error means no further request of this client can succeed (bulk runs stop):
    a wrong key, no permission, an exhausted quota, or nothing but 429s for the patience."""
    fatal = (AuthenticationError, PermissionDeniedError, QuotaExceededError, RateLimitPatienceError)
    return isinstance(error, fatal)
