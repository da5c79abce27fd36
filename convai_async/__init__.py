"""convai-async: an asyncio-first client for Convai's character-settings and custom-LLM APIs."""

import logging

from ._engine.retry import DEFAULT_RETRY, RetryPolicy, set_testing
from ._engine.session import ClientStats
from ._version import __version__
from .bulk import (
    BulkReport,
    MigrationPlan,
    PlannedChange,
    Progress,
    RollbackReport,
    UpdateResult,
    UpdateStatus,
)
from .client import ConvaiClient
from .errors import (
    APIStatusError,
    AuthenticationError,
    BadRequestError,
    ClientClosedError,
    ConflictError,
    ConvaiConnectionError,
    ConvaiError,
    ConvaiTimeoutError,
    JournalError,
    ModelInUseError,
    NotFoundError,
    PermissionDeniedError,
    QuotaExceededError,
    RateLimitError,
    RateLimitPatienceError,
    ServerError,
    TransportError,
    UnexpectedResponseError,
    ValidationError,
)
from .models import (
    Character,
    CharacterUpdate,
    CustomModel,
    DeregisteredModel,
    RegisteredModel,
    UpdatedModel,
)

# A library logs; the application decides where logs go (nothing is printed by default).
logging.getLogger("convai_async").addHandler(logging.NullHandler())

__all__ = [
    "DEFAULT_RETRY",
    "APIStatusError",
    "AuthenticationError",
    "BadRequestError",
    "BulkReport",
    "Character",
    "CharacterUpdate",
    "ClientClosedError",
    "ClientStats",
    "ConflictError",
    "ConvaiClient",
    "ConvaiConnectionError",
    "ConvaiError",
    "ConvaiTimeoutError",
    "CustomModel",
    "DeregisteredModel",
    "JournalError",
    "MigrationPlan",
    "ModelInUseError",
    "NotFoundError",
    "PermissionDeniedError",
    "PlannedChange",
    "Progress",
    "QuotaExceededError",
    "RateLimitError",
    "RateLimitPatienceError",
    "RegisteredModel",
    "RetryPolicy",
    "RollbackReport",
    "ServerError",
    "TransportError",
    "UnexpectedResponseError",
    "UpdateResult",
    "UpdateStatus",
    "UpdatedModel",
    "ValidationError",
    "__version__",
    "set_testing",
]
