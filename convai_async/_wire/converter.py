"""The one cattrs converter: every wire name is declared here, once, as an override.

Hooks are generated when the converter is made, not per call. Unstructuring omits fields left at
their default (None), so optional fields that were not given are not sent. Structuring ignores
unknown keys; response classes keep the whole object on ``.raw``.

Request bodies have a second, compiled form: :func:`encode_request` turns a request object into
the exact bytes ``json.dumps(converter.unstructure(request), separators=(",", ":"))`` would give,
through one function per request class generated once from the same table of wire names
(``REQUEST_RENAMES``), without the converter's dispatch or the JSON encoder's generic machinery.
"""

from __future__ import annotations

import json
import math
import types
import typing
from collections.abc import Callable, Mapping
from datetime import datetime
from json.encoder import encode_basestring_ascii
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

__all__ = [
    "REQUEST_RENAMES",
    "body_encoder",
    "converter",
    "encode_request",
    "make_converter",
    "structure_answer",
]

T = TypeVar("T")

# Every request class and its wire names (attribute -> JSON key; unlisted attributes keep their
# name). Both the cattrs unstructure hooks and the compiled body encoders are made from this.
REQUEST_RENAMES: dict[type, dict[str, str]] = {
    CharacterUpdate: {"char_id": "charID", "model": "model_group_name"},
    CharacterQuery: {"char_id": "charID"},
    CharacterNameQuery: {"name": "charName"},
    ModelRegistration: {},
    ModelUpdate: {},
    ModelReference: {},
}
# Request classes whose fields left at their default (None) are not sent.
_OMIT_DEFAULTS = frozenset({CharacterUpdate, ModelRegistration, ModelUpdate, ModelReference})


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

    for request, wire_names in REQUEST_RENAMES.items():
        overrides: dict[str, Any] = {
            name: override(rename=wire) for name, wire in wire_names.items()
        }
        if request in _OMIT_DEFAULTS:
            overrides["_cattrs_omit_if_default"] = True
        conv.register_unstructure_hook(
            request, make_dict_unstructure_fn(request, conv, **overrides)
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


# -- compiled request bodies ----------------------------------------------------------------------

_GENERIC_JSON = json.JSONEncoder(separators=(",", ":"))


def _json_float(value: float) -> str:
    """A float as the json module writes it (repr; NaN and the infinities by name)."""
    if math.isfinite(value):
        return float.__repr__(value)
    if value != value:
        return "NaN"
    return "Infinity" if value > 0 else "-Infinity"


def _json_scalar(value: Any) -> str:
    """One field's JSON text: the common types directly, anything else as the json module does."""
    kind = type(value)
    if kind is str:
        return encode_basestring_ascii(value)
    if kind is float:
        return _json_float(value)
    if value is True:
        return "true"
    if value is False:
        return "false"
    if kind is int:
        return int.__repr__(value)
    return _GENERIC_JSON.encode(converter.unstructure(value))


_SCALARS = (str, float, bool, int, type(None))


def _is_scalar_type(hint: Any) -> bool:
    """Whether values of this annotation unstructure to themselves (str, float, Optional...)."""
    if hint in _SCALARS:
        return True
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return all(arg in _SCALARS for arg in typing.get_args(hint))
    return False


def _encoder_source(cls: type) -> str | None:
    """Straight-line source of ``encode(request) -> bytes`` for ``cls``: each field's
    ``"key":`` prefix written in, a string field escaped inline, fields left at their default
    (None) skipped as cattrs' ``omit_if_default`` skips them. None when a field is not a plain
    scalar or has another default (the generic path)."""
    renames = REQUEST_RENAMES[cls]
    try:
        hints = typing.get_type_hints(cls)
    except (NameError, TypeError):  # an annotation that cannot be resolved: the generic path
        return None
    fields = attrs.fields(cls)
    if not fields or not all(_is_scalar_type(hints[f.name]) for f in fields):
        return None
    omit = cls in _OMIT_DEFAULTS
    if fields[0].default is not attrs.NOTHING or any(
        f.default not in (None, attrs.NOTHING) for f in fields
    ):
        return None  # not the shape of our requests (a required field first, None defaults)
    text = "(_escape(value) if type(value) is str else _scalar(value))"
    first = fields[0]
    key = encode_basestring_ascii(renames.get(first.name, first.name))
    lines = [
        "def encode(request):",
        f"    value = request.{first.name}",
        f"    out = {'{' + key + ':'!r} + {text}",
    ]
    for field in fields[1:]:
        key = encode_basestring_ascii(renames.get(field.name, field.name))
        lines.append(f"    value = request.{field.name}")
        add = f"out += {',' + key + ':'!r} + {text}"
        if omit and field.default is None:
            lines.append(f"    if value is not None: {add}")
        else:
            lines.append(f"    {add}")
    lines.append('    return (out + "}").encode()')
    return "\n".join(lines)


def _compile_encoder(cls: type) -> Callable[[Any], bytes] | None:
    """The compiled encoder for ``cls`` (generated source, as cattrs generates its hooks)."""
    source = _encoder_source(cls)
    if source is None:
        return None
    namespace: dict[str, Any] = {"_scalar": _json_scalar, "_escape": encode_basestring_ascii}
    code = compile(source, f"<convai_async body encoder for {cls.__qualname__}>", "exec")
    exec(code, namespace)  # noqa: S102 - source built above from attribute names and constants
    encoder: Callable[[Any], bytes] = namespace["encode"]
    return encoder


def _generic_body(request: Any) -> bytes:
    return _GENERIC_JSON.encode(converter.unstructure(request)).encode()


_BODY_ENCODERS: dict[type, Callable[[Any], bytes]] = {}


def body_encoder(cls: type) -> Callable[[Any], bytes]:
    """The body encoder for a request class, compiled on first use and kept."""
    encoder = _BODY_ENCODERS.get(cls)
    if encoder is None:
        compiled = _compile_encoder(cls) if cls in REQUEST_RENAMES else None
        encoder = _BODY_ENCODERS[cls] = compiled or _generic_body
    return encoder


def encode_request(request: object) -> bytes:
    """The JSON body of a request object: the same bytes as the converter and ``json.dumps``
    (compact separators, ASCII), from the class's compiled encoder."""
    encoder = _BODY_ENCODERS.get(type(request))
    if encoder is None:
        encoder = body_encoder(type(request))
    return encoder(request)
