"""Argument checks, run before anything is sent. Each raises ValidationError naming the field."""

from __future__ import annotations

import math
import re
from typing import Any
from urllib.parse import urlsplit

from .errors import ValidationError

_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]")
_SHOWN_VALUE_CHARS = 60


def _shown(value: Any) -> str:
    """A short, safe rendering of a rejected (non-secret) value for an error message."""
    text = repr(value)
    return text if len(text) <= _SHOWN_VALUE_CHARS else text[:_SHOWN_VALUE_CHARS] + "..."


def text(field: str, value: Any) -> str:
    """A non-empty string without control characters (IDs, model codes, names)."""
    if not isinstance(value, str):
        raise ValidationError(field, f"must be a string, got {type(value).__name__}")
    if not value.strip():
        raise ValidationError(field, "must not be empty")
    if _CONTROL_CHARS.search(value):
        raise ValidationError(field, f"must not contain control characters, got {_shown(value)}")
    return value


def optional_text(field: str, value: Any) -> str | None:
    return None if value is None else text(field, value)


def temperature(field: str, value: Any) -> float:
    """A real number in [0, 1]; bool, NaN, infinities, strings and None are refused."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValidationError(
            field, f"must be a real number in [0, 1], got {type(value).__name__} {_shown(value)}"
        )
    number = float(value)
    if not math.isfinite(number) or not 0.0 <= number <= 1.0:
        raise ValidationError(field, f"must be in [0, 1], got {_shown(value)}")
    return number


def optional_temperature(field: str, value: Any) -> float | None:
    return None if value is None else temperature(field, value)


def flag(field: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValidationError(field, f"must be True or False, got {_shown(value)}")
    return value


def optional_flag(field: str, value: Any) -> bool | None:
    return None if value is None else flag(field, value)


def http_url(field: str, value: Any) -> str:
    """An absolute http(s) URL with a host."""
    url = text(field, value)
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValidationError(field, f"must be an http(s) URL, got {_shown(url)}")
    return url


def optional_http_url(field: str, value: Any) -> str | None:
    return None if value is None else http_url(field, value)


def secret(field: str, value: Any) -> str:
    """A key: non-empty, no whitespace or control characters. The value is never shown."""
    if not isinstance(value, str):
        raise ValidationError(field, f"must be a string, got {type(value).__name__}")
    if not value.strip():
        raise ValidationError(field, "must not be empty")
    if _CONTROL_CHARS.search(value) or value != value.strip():
        raise ValidationError(
            field, "must not contain control characters (CR, LF, ...) or surrounding white space"
        )
    return value


def optional_secret(field: str, value: Any) -> str | None:
    return None if value is None else secret(field, value)


def positive(field: str, value: Any) -> float:
    """A finite number above zero (timeouts, rates)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValidationError(field, f"must be a number, got {type(value).__name__}")
    if not math.isfinite(value) or value <= 0:
        raise ValidationError(field, f"must be above 0, got {_shown(value)}")
    return float(value)


def optional_positive(field: str, value: Any) -> float | None:
    return None if value is None else positive(field, value)


def whole(field: str, value: Any, *, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationError(field, f"must be a whole number, got {type(value).__name__}")
    if value < minimum:
        raise ValidationError(field, f"must be at least {minimum}, got {value}")
    return value
