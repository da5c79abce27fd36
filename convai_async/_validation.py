"""Argument checks, run before anything is sent. Each raises ValidationError naming the field.

Numbers: any real number is accepted (int, float, ``Decimal``, ``Fraction``, numpy scalars, any
``numbers.Real``), but never a bool, NaN, an infinity, or a value too large for a float
(``10**400``): those raise ValidationError, never OverflowError. Whole numbers accept any
``numbers.Integral`` and have a documented maximum.
"""

from __future__ import annotations

import decimal
import ipaddress
import math
import numbers
import re
from typing import Any
from urllib.parse import urlsplit

from ._wire.secrets import Secret
from .errors import ValidationError

MAX_SECONDS = 365 * 24 * 3600.0  # the longest timeout, deadline or wait an option may ask for

_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]")
_SHOWN_VALUE_CHARS = 60


def _shown(value: Any) -> str:
    """A short, safe rendering of a rejected (non-secret) value for an error message."""
    try:
        text = repr(value)
    except ValueError:  # an int past the digit limit of int-to-str conversion
        return f"<{type(value).__name__} too large to show>"
    return text if len(text) <= _SHOWN_VALUE_CHARS else text[:_SHOWN_VALUE_CHARS] + "..."


def text(field: str, value: Any) -> str:
    """A non-empty string without control characters (IDs, model codes, names)."""
    if not isinstance(value, str):
        raise ValidationError(field, f"must be a string, got {type(value).__name__}")
    if not value.strip():
        raise ValidationError(field, "must not be empty")
    if (not value.isascii() or not value.isprintable()) and _CONTROL_CHARS.search(value):
        raise ValidationError(field, f"must not contain control characters, got {_shown(value)}")
    return value


def optional_text(field: str, value: Any) -> str | None:
    return None if value is None else text(field, value)


def real(field: str, value: Any, what: str = "a real number") -> float:
    """A finite real number as a float: bool, strings, NaN, infinities and overflow refused."""
    if isinstance(value, bool) or not isinstance(value, (numbers.Real, decimal.Decimal)):
        raise ValidationError(field, f"must be {what}, got {type(value).__name__} {_shown(value)}")
    try:
        number = float(value)
    except (OverflowError, ValueError, ArithmeticError):
        number = math.inf  # 10**400, Fraction(10**400), ...: out of any documented range
    if not math.isfinite(number):
        raise ValidationError(field, f"must be {what}, got {_shown(value)}")
    return number


def temperature(field: str, value: Any) -> float:
    """A real number in [0, 1]; bool, NaN, infinities, strings and None are refused."""
    number = real(field, value, "a real number in [0, 1]")
    if not 0.0 <= number <= 1.0:
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


def secret(field: str, value: Any) -> Secret:
    """A key (a string or a Secret): non-empty, no control characters or surrounding white
    space. Returned as a Secret; the value is never shown."""
    bare = value.reveal() if isinstance(value, Secret) else value
    if not isinstance(bare, str):
        raise ValidationError(field, f"must be a string, got {type(bare).__name__}")
    if not bare.strip():
        raise ValidationError(field, "must not be empty")
    if _CONTROL_CHARS.search(bare) or bare != bare.strip():
        raise ValidationError(
            field, "must not contain control characters (CR, LF, ...) or surrounding white space"
        )
    return value if isinstance(value, Secret) else Secret(bare)


def optional_secret(field: str, value: Any) -> Secret | None:
    return None if value is None else secret(field, value)


def positive(field: str, value: Any, *, maximum: float = math.inf) -> float:
    """A finite real number above zero and at most ``maximum`` (rates)."""
    number = real(field, value, "a number above 0")
    if number <= 0:
        raise ValidationError(field, f"must be above 0, got {_shown(value)}")
    if number > maximum:
        raise ValidationError(field, f"must be at most {maximum:g}, got {_shown(value)}")
    return number


def optional_positive(field: str, value: Any, *, maximum: float = math.inf) -> float | None:
    return None if value is None else positive(field, value, maximum=maximum)


def seconds(field: str, value: Any, *, allow_zero: bool = False) -> float:
    """A duration: a real number of seconds above 0 (or 0 too), at most ``MAX_SECONDS``."""
    if allow_zero:
        number = real(field, value, "a number of seconds")
        if number < 0:
            raise ValidationError(field, f"must be 0 or more, got {_shown(value)}")
        if number > MAX_SECONDS:
            raise ValidationError(field, f"must be at most {MAX_SECONDS:g}, got {_shown(value)}")
        return number
    return positive(field, value, maximum=MAX_SECONDS)


def optional_seconds(field: str, value: Any) -> float | None:
    return None if value is None else seconds(field, value)


def whole(field: str, value: Any, *, minimum: int, maximum: int | None = None) -> int:
    """A whole number (any ``numbers.Integral`` but bool) in [minimum, maximum]."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValidationError(field, f"must be a whole number, got {type(value).__name__}")
    number = int(value)
    if number < minimum:
        raise ValidationError(field, f"must be at least {minimum}, got {_shown(number)}")
    if maximum is not None and number > maximum:
        raise ValidationError(field, f"must be at most {maximum}, got {_shown(number)}")
    return number


def _is_loopback(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def api_base_url(field: str, value: Any, allow_insecure_http: bool) -> str:
    """The API's base URL: http(s); plain http only to loopback unless explicitly allowed
    (the key would travel in clear). Returned without a trailing slash."""
    url = http_url(field, value)
    parts = urlsplit(url)
    if (
        parts.scheme == "http"
        and not allow_insecure_http
        and not _is_loopback(parts.hostname or "")
    ):
        raise ValidationError(
            field,
            "plain http:// to a non-loopback host would send the API key in clear; "
            "use https:// or pass allow_insecure_http=True",
        )
    return url.rstrip("/")
