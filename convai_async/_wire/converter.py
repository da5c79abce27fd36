"""The one cattrs converter: every wire name is declared here, once, as an override.

Hooks are generated when the converter is made, not per call. Unstructuring omits fields left at
their default (None), so optional fields that were not given are not sent. Structuring ignores
unknown keys; response classes keep the whole object on ``.raw``.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, TypeVar

import attrs
from attrs import frozen
from cattrs import Converter
from cattrs.gen import make_dict_structure_fn, make_dict_unstructure_fn, override

from ..errors import UnexpectedResponseError
from ..models import (
    Character,
    CharacterNameQuery,
    CharacterQuery,
    CharacterUpdate,
    CustomModel,
    DeregisteredModel,
    ModelReference,
    ModelRegistration,
    ModelUpdate,
    RegisteredModel,
    UpdatedModel,
)

__all__ = ["converter", "make_converter", "structure_answer"]

T = TypeVar("T")


@frozen
class _PromptConfig:
    model: Any = None
    temperature: Any = None


@frozen
class _CharacterFields:
    char_id: str
    name: Any = None
    prompt: _PromptConfig | None = None


def _lenient_float(value: Any) -> float | None:
    """A number the server sent, or None when it sent something else (kept in ``.raw``)."""
    if isinstance(value, bool):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _lenient_datetime(value: Any, _: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def _optional_str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def make_converter() -> Converter:
    conv = Converter()
    conv.register_structure_hook(datetime, _lenient_datetime)

    omit_defaults: dict[str, Any] = {"_cattrs_omit_if_default": True}
    conv.register_unstructure_hook(
        CharacterUpdate,
        make_dict_unstructure_fn(
            CharacterUpdate,
            conv,
            **omit_defaults,
            char_id=override(rename="charID"),
            model=override(rename="model_group_name"),
        ),
    )
    conv.register_unstructure_hook(
        CharacterQuery,
        make_dict_unstructure_fn(CharacterQuery, conv, char_id=override(rename="charID")),
    )
    conv.register_unstructure_hook(
        CharacterNameQuery,
        make_dict_unstructure_fn(CharacterNameQuery, conv, name=override(rename="charName")),
    )
    for request in (ModelRegistration, ModelUpdate, ModelReference):
        conv.register_unstructure_hook(
            request, make_dict_unstructure_fn(request, conv, **omit_defaults)
        )

    conv.register_structure_hook(
        _PromptConfig,
        make_dict_structure_fn(
            _PromptConfig,
            conv,
            model=override(rename="MODEL"),
            temperature=override(rename="TEMPERATURE"),
        ),
    )
    character_fields = make_dict_structure_fn(
        _CharacterFields,
        conv,
        char_id=override(rename="character_id"),
        name=override(rename="character_name"),
        prompt=override(rename="personalised_prompt_config"),
    )

    def structure_character(obj: Mapping[str, Any], _: Any) -> Character:
        fields = character_fields(obj, _CharacterFields)
        prompt = fields.prompt or _PromptConfig()
        return Character(
            char_id=fields.char_id,
            name=_optional_str(fields.name),
            model=_optional_str(prompt.model),
            temperature=_lenient_float(prompt.temperature),
            raw=obj,
        )

    conv.register_structure_hook(Character, structure_character)

    transaction: dict[str, Any] = {"transaction_id": override(rename="transactionID")}
    without_raw: dict[str, Any] = {"raw": override(omit=True)}
    renamed: tuple[tuple[type, dict[str, Any]], ...] = (
        (CustomModel, without_raw),
        (RegisteredModel, {**transaction, "reconciled": override(omit=True)}),
        (UpdatedModel, transaction),
        (DeregisteredModel, {**transaction, "reconciled": override(omit=True)}),
    )
    for response, renames in renamed:
        hook: Any = make_dict_structure_fn(response, conv, **renames)
        if "raw" in attrs.fields_dict(response):
            conv.register_structure_hook(response, _keeping_raw(hook))
        else:
            conv.register_structure_hook(response, hook)
    return conv


def _keeping_raw(hook: Any) -> Any:
    def structure(obj: Mapping[str, Any], cls: type) -> Any:
        return attrs.evolve(hook(obj, cls), raw=obj)

    return structure


converter = make_converter()


def structure_answer(payload: Any, cls: type[T], endpoint: object) -> T:
    """``payload`` as ``cls``; a payload that does not fit is an undocumented answer."""
    try:
        return converter.structure(payload, cls)
    except Exception:  # noqa: BLE001, S110 - any structuring failure: an undocumented answer
        pass
    raise UnexpectedResponseError(
        f"could not read the answer as {getattr(cls, '__name__', cls)}",
        status=200,
        endpoint=str(endpoint),
    )
