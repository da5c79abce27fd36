"""The exceptions raised by convai-async.

The tree::

    ConvaiError
    ├── ValidationError (also ValueError)     bad input, raised before any request is sent
    ├── ClientClosedError (also RuntimeError) the client was closed (before or during the call)
    ├── WrongEventLoopError (also RuntimeError) the client is used from another event loop
    ├── JournalError (also OSError)           a bulk journal cannot be written, read or locked
    ├── ModelInUseError                       deregister refused: characters still use the model
    ├── TransportError                        no HTTP answer was received
    │   ├── ConvaiConnectionError             connect failed, connection dropped, body cut short
    │   └── ConvaiTimeoutError (also TimeoutError)
    └── APIStatusError                        the server answered with an error
        ├── BadRequestError                   400
        ├── AuthenticationError               401
        ├── PermissionDeniedError             403
        ├── NotFoundError                     404
        ├── ConflictError                     409
        ├── RateLimitError                    429, transient
        │   ├── QuotaExceededError            429 "usage limit exceeded for current plan"
        │   └── RateLimitPatienceError        429s only, for longer than rate_limit_patience
        ├── ServerError                       5xx
        └── UnexpectedResponseError           other status, or a 2xx not of the documented shape

No exception carries request headers, a response object or anything else that could hold the
API key; messages are built from the status, the endpoint and the server's own message, redacted.

Every exception is an ordinary value: it pickles and deep-copies with its attributes (so one
raised in a ``ProcessPoolExecutor`` job arrives intact), whatever its constructor's signature.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "APIStatusError",
    "AuthenticationError",
    "BadRequestError",
    "ClientClosedError",
    "ConflictError",
    "ConvaiConnectionError",
    "ConvaiError",
    "ConvaiTimeoutError",
    "JournalError",
    "ModelInUseError",
    "NotFoundError",
    "PermissionDeniedError",
    "QuotaExceededError",
    "RateLimitError",
    "RateLimitPatienceError",
    "ServerError",
    "TransportError",
    "UnexpectedResponseError",
    "ValidationError",
    "WrongEventLoopError",
]


class ConvaiError(Exception):
    """Root of every exception this library raises on purpose."""

    def __reduce__(self) -> tuple[Any, ...]:
        # BaseException's own reduce calls ``cls(*args)``, which our keyword-only constructors
        # refuse: rebuild without __init__ instead, then restore every attribute.
        return (_rebuilt, (type(self), self.args, dict(vars(self))))


def _rebuilt(cls: type[ConvaiError], args: tuple[Any, ...], state: dict[str, Any]) -> ConvaiError:
    """An exception of ``cls`` with these ``args`` and attributes, without calling __init__."""
    error = cls.__new__(cls)
    error.args = args  # set here: OSError's __new__ (TimeoutError) drops them for subclasses
    error.__dict__.update(state)
    return error


class ValidationError(ConvaiError, ValueError):
    """An argument is invalid; nothing was sent. ``field`` names the offending argument."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


class ClientClosedError(ConvaiError, RuntimeError):
    """The client was closed: the call was refused, or was waiting or in flight when it closed.

    ``request_sent`` is true when the call was cancelled while its request was in flight: a
    write may then have been applied (an ambiguous outcome, as for ``TransportError``)."""

    def __init__(self, message: str, *, request_sent: bool = False) -> None:
        super().__init__(message)
        self.request_sent = request_sent


class WrongEventLoopError(ConvaiError, RuntimeError):
    """The client is bound to the event loop it first ran in and was used from another one.

    Create one client per event loop (a second ``asyncio.run``, another thread's loop)."""


class JournalError(ConvaiError, OSError):
    """A journal could not be created, locked, written or synced (disk full, read-only, a
    directory in its place, held by another process). ``path`` names the journal."""

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"journal {path}: {problem}")
        self.path = path
        self.problem = problem


class ModelInUseError(ConvaiError):
    """``llm_models.deregister`` refused: characters still use the model (``force=True`` to
    deregister anyway; those characters stop working). Nothing was sent to /llm-models/deregister.
    """

    def __init__(self, model_group_name: str, characters: int) -> None:
        super().__init__(
            f"{characters} character(s) still use {model_group_name!r}; move them to another "
            "model first, or force the deregistration"
        )
        self.model_group_name = model_group_name
        self.characters = characters


class TransportError(ConvaiError):
    """No HTTP answer was received.

    ``request_sent`` tells whether the request may have reached the server: when true, a write
    may have been applied even though no answer came back (an ambiguous outcome).
    """

    def __init__(self, message: str, *, endpoint: str, request_sent: bool) -> None:
        super().__init__(f"{message} ({endpoint})")
        self.endpoint = endpoint
        self.request_sent = request_sent


class ConvaiConnectionError(TransportError):
    """The connection could not be made, was dropped, or the body was cut short."""


class ConvaiTimeoutError(TransportError, TimeoutError):
    """An attempt or the whole call ran past its time limit."""


class APIStatusError(ConvaiError):
    """The server answered with an error status or an unusable body."""

    def __init__(
        self,
        message: str,
        *,
        status: int,
        endpoint: str,
        transaction_id: str | None = None,
    ) -> None:
        detail = f"HTTP {status} from {endpoint}: {message}"
        if transaction_id:
            detail += f" (transactionID {transaction_id})"
        super().__init__(detail)
        self.message = message
        self.status = status
        self.endpoint = endpoint
        self.transaction_id = transaction_id


class BadRequestError(APIStatusError):
    """400: malformed request, unknown character, missing field."""


class AuthenticationError(APIStatusError):
    """401: the API key is missing or invalid."""


class PermissionDeniedError(APIStatusError):
    """403: the key is valid but the plan or owner does not allow this call."""


class NotFoundError(APIStatusError):
    """404: the custom model does not exist or is not owned by this key."""


class ConflictError(APIStatusError):
    """409: duplicate model group name or display name."""


class RateLimitError(APIStatusError):
    """429: too many requests. ``retry_after`` is the server's wait in seconds, if it gave one."""

    def __init__(
        self,
        message: str,
        *,
        status: int,
        endpoint: str,
        transaction_id: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, status=status, endpoint=endpoint, transaction_id=transaction_id)
        self.retry_after = retry_after


class QuotaExceededError(RateLimitError):
    """429 with the plan's usage limit exhausted: retrying cannot help."""


class RateLimitPatienceError(RateLimitError):
    """Every request has been refused with 429 for ``rate_limit_patience`` seconds: the client
    stops waiting. Nothing was sent for the call that raised it; ``waited`` is how long the
    429s have lasted, ``retry_after`` is None. Bulk runs treat it as fatal."""

    def __init__(self, waited: float, *, endpoint: str = "(any)") -> None:
        super().__init__(
            f"every request refused with 429 for {waited:.0f}s (rate_limit_patience); giving up",
            status=429,
            endpoint=endpoint,
        )
        self.waited = waited


class ServerError(APIStatusError):
    """5xx: the server failed."""


class UnexpectedResponseError(APIStatusError):
    """The answer is not a documented one: an unexpected status, or a 2xx whose body is not the
    documented success shape (``{"STATUS": "FAILURE"}``, HTML, invalid JSON, too large)."""
