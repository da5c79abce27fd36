"""Requests and responses as frozen attrs classes.

Requests validate their fields when constructed, so bad input fails before any I/O. Wire names
(``charID``, ``personalised_prompt_config.MODEL``, ...) are declared once, in ``_converter``.
Secret fields (custom LLM keys) hold a ``Secret``: redacted in repr and str, unpicklable, and
revealed only by the transport as the request is sent.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from attrs import field, frozen

from . import _validation as check
from ._wire.secrets import Secret
from .errors import ValidationError

__all__ = [
    "Character",
    "CharacterUpdate",
    "CustomModel",
    "DeregisteredModel",
    "ModelUpdate",
    "RegisteredModel",
    "UpdatedModel",
]


def _char_id(value: Any) -> str:
    return check.text("char_id", value)


def _model_code(value: Any) -> str | None:
    return check.optional_text("model", value)


def _temperature(value: Any) -> float | None:
    return check.optional_temperature("temperature", value)


def _llm_key(value: Any) -> Secret:
    return check.secret("api_key", value)


def _optional_llm_key(value: Any) -> Secret | None:
    return check.optional_secret("api_key", value)


@frozen
class CharacterUpdate:
    """One change to a character: its LLM model, its temperature, or both (one request)."""

    char_id: str = field(converter=_char_id)
    model: str | None = field(default=None, converter=_model_code)
    temperature: float | None = field(default=None, converter=_temperature)

    def __attrs_post_init__(self) -> None:
        if self.model is None and self.temperature is None:
            raise ValidationError("update", "give at least one of model or temperature")


@frozen
class CharacterQuery:
    """Body of /character/get."""

    char_id: str = field(converter=_char_id)


def _char_name(value: Any) -> str:
    return check.text("name", value)


@frozen
class CharacterNameQuery:
    """Body of /character/get by name (the docs' "Search by charName")."""

    name: str = field(converter=_char_name)


@frozen
class Character:
    """A character as returned by /character/get or /character/list.

    ``model`` and ``temperature`` come from ``personalised_prompt_config``; ``raw`` is the whole
    object as the server sent it, including the fields this class does not model.
    """

    char_id: str
    name: str | None = None
    model: str | None = None
    temperature: float | None = None
    raw: Mapping[str, Any] = field(factory=dict, repr=False, eq=False)


@frozen
class ModelRegistration:
    """Body of /llm-models/register."""

    model_group_name: str
    model_name: str
    api_key: Secret = field(converter=_llm_key, repr=False)
    is_uncensored: bool
    display_name: str | None = None
    base_url: str | None = None

    def __attrs_post_init__(self) -> None:
        check.text("model_group_name", self.model_group_name)
        check.text("model_name", self.model_name)
        check.flag("is_uncensored", self.is_uncensored)
        check.optional_text("display_name", self.display_name)
        check.optional_http_url("base_url", self.base_url)


@frozen
class ModelUpdate:
    """Body of /llm-models/update: the group name and at least one field to change."""

    model_group_name: str
    display_name: str | None = None
    base_url: str | None = None
    api_key: Secret | None = field(default=None, converter=_optional_llm_key, repr=False)
    is_uncensored: bool | None = None

    def __attrs_post_init__(self) -> None:
        check.text("model_group_name", self.model_group_name)
        check.optional_text("display_name", self.display_name)
        check.optional_http_url("base_url", self.base_url)
        check.optional_flag("is_uncensored", self.is_uncensored)
        if (self.display_name, self.base_url, self.api_key, self.is_uncensored) == (None,) * 4:
            raise ValidationError(
                "update", "give at least one of display_name, base_url, api_key, is_uncensored"
            )


@frozen
class ModelReference:
    """Body of /llm-models/deregister."""

    model_group_name: str

    def __attrs_post_init__(self) -> None:
        check.text("model_group_name", self.model_group_name)


@frozen
class CustomModel:
    """A registered custom LLM, as listed by /llm-models/list."""

    model_group_name: str
    model_name: str | None = None
    display_name: str | None = None
    base_url: str | None = None
    is_uncensored: bool | None = None
    category: str | None = None
    created_at: datetime | None = None
    raw: Mapping[str, Any] = field(factory=dict, repr=False, eq=False)


@frozen
class RegisteredModel:
    """The answer to /llm-models/register. ``reconciled`` is true when a lost answer was
    recovered by listing after the retry answered 409 (see the README on ambiguous writes)."""

    model_group_name: str
    model_name: str | None = None
    display_name: str | None = None
    message: str | None = None
    transaction_id: str | None = None
    reconciled: bool = False


@frozen
class UpdatedModel:
    """The answer to /llm-models/update."""

    updated_fields: tuple[str, ...] = ()
    message: str | None = None
    transaction_id: str | None = None


@frozen
class DeregisteredModel:
    """The answer to /llm-models/deregister."""

    message: str | None = None
    transaction_id: str | None = None
    reconciled: bool = False
