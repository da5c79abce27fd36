"""The journal's line format: attrs classes per line kind, one strict cattrs converter, version.

A journal is UTF-8 JSON Lines. Every line is an object whose first key ``k`` names its kind:

``header``    first line: ``format`` ("convai-async-journal"), ``v`` (JOURNAL_VERSION),
              ``kind`` ("bulk", "migration" or "rollback"), ``run`` (a random id), ``created``;
              a migration adds ``plan`` (its arguments), a rollback ``of`` (the migration's path
              and run id) and ``force``.
``plan``      a migration's selected character: ``i`` (its plan index), ``c`` (char_id),
              ``was`` (model and temperature before), ``set`` (the values to set, or null).
``planned``   the end of the plan: ``count`` plan lines precede it. No intent comes before it.
``intent``    written and fsynced BEFORE the request is sent: ``i``, ``c``, ``set``, and for
              migrations and rollbacks ``was``.
``outcome``   after the answer: ``i``, ``s`` (an UpdateStatus value), ``sent`` (whether the
              request may have reached the server), ``attempts``, ``error`` (a message).
``resumed``   a later run appended to the journal; ``torn`` when the line before it was cut
              short by a crash (that line is then ignored).

Nothing in a line comes from a request's headers: the journal never holds a secret.
"""

from __future__ import annotations

import json
import math
import os
import secrets
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

import attrs
from attrs import frozen
from cattrs import Converter
from cattrs.gen import make_dict_structure_fn, make_dict_unstructure_fn, override

__all__ = [
    "FORMAT_NAME",
    "JOURNAL_VERSION",
    "Header",
    "Intent",
    "Line",
    "LineError",
    "Outcome",
    "PlanArgs",
    "PlanEnd",
    "PlanLine",
    "Resumed",
    "RollbackOf",
    "Values",
    "decode",
    "encode",
    "intent_line",
    "make_converter",
    "new_header",
    "now",
    "outcome_line",
]

FORMAT_NAME = "convai-async-journal"
JOURNAL_VERSION = 2


class LineError(ValueError):
    """A journal line that is not a well-formed line of this format."""


@frozen
class Values:
    """A character's model and temperature (either may be absent)."""

    model: str | None = None
    temperature: float | None = None


@frozen
class PlanArgs:
    """The arguments a migration was planned with; a resume must give the same."""

    to_model: str
    temperature: float | None = None
    from_model: str | None = None


@frozen
class RollbackOf:
    """The migration journal a rollback journal belongs to."""

    path: str
    run: str


@frozen
class Header:
    format: str
    v: int
    kind: str
    run: str
    created: str
    pid: int
    plan: PlanArgs | None = None
    of: RollbackOf | None = None
    force: bool | None = None
    k: str = "header"


@frozen
class PlanLine:
    i: int
    c: str
    was: Values
    set: Values | None = None
    k: str = "plan"


@frozen
class PlanEnd:
    count: int
    k: str = "planned"


@frozen
class Intent:
    i: int
    c: str
    set: Values
    was: Values | None = None
    k: str = "intent"


@frozen
class Outcome:
    i: int
    s: str
    sent: bool = False
    attempts: int = 0
    error: str | None = None
    k: str = "outcome"


@frozen
class Resumed:
    at: str
    pid: int
    torn: bool = False
    k: str = "resumed"


Line = Header | PlanLine | PlanEnd | Intent | Outcome | Resumed
_KINDS: dict[str, type[Any]] = {
    "header": Header,
    "plan": PlanLine,
    "planned": PlanEnd,
    "intent": Intent,
    "outcome": Outcome,
    "resumed": Resumed,
}


def _strict_str(value: Any, _: Any) -> str:
    if not isinstance(value, str):
        raise LineError(f"expected a string, got {type(value).__name__}")
    return value


def _strict_int(value: Any, _: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise LineError(f"expected an integer, got {type(value).__name__}")
    return value


def _strict_float(value: Any, _: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise LineError(f"expected a number, got {type(value).__name__}")
    return float(value)


def _strict_bool(value: Any, _: Any) -> bool:
    if not isinstance(value, bool):
        raise LineError(f"expected true or false, got {type(value).__name__}")
    return value


def now() -> str:
    """The time, as journal lines record it (UTC, milliseconds)."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def new_header(kind: str, **extra: Any) -> Header:
    """The first line of a new journal of ``kind`` (a fresh random run id)."""
    return Header(
        format=FORMAT_NAME,
        v=JOURNAL_VERSION,
        kind=kind,
        run=secrets.token_hex(8),
        created=now(),
        pid=os.getpid(),
        **extra,
    )


def make_converter() -> Converter:
    """The journal's converter: strict about types (a wrong type is a bad line, never coerced),
    ``k`` first in every line, fields left at None omitted. Hooks are generated here, once."""
    converter = Converter(forbid_extra_keys=False, detailed_validation=False)
    converter.register_structure_hook(str, _strict_str)
    converter.register_structure_hook(int, _strict_int)
    converter.register_structure_hook(float, _strict_float)
    converter.register_structure_hook(bool, _strict_bool)
    for cls in (Values, PlanArgs, RollbackOf, *_KINDS.values()):
        names = [a.name for a in attrs.fields(cls)]
        ordered: dict[str, Any] = {name: override(omit_if_default=name != "k") for name in names}
        converter.register_unstructure_hook(
            cls, make_dict_unstructure_fn(cls, converter, **ordered)
        )
        converter.register_structure_hook(cls, make_dict_structure_fn(cls, converter))
    return converter


_converter = make_converter()
_unstructure_fns = {cls: _converter.get_unstructure_hook(cls) for cls in _KINDS.values()}


def _generic(line: Line) -> str:
    data = _unstructure_fns[type(line)](line)
    data = {"k": data.pop("k"), **data}
    return json.dumps(data, separators=(",", ":"), allow_nan=False)


# -- the hot path: intents, outcomes and plan lines, compiled once from the attrs fields ---------

_string = json.encoder.encode_basestring_ascii  # as json.dumps writes strings


def _number(value: Any) -> str:
    if type(value) is float and math.isfinite(value):
        return float.__repr__(value)  # what json.dumps writes for a float
    if type(value) is int:
        return int.__repr__(value)
    raise TypeError(type(value).__name__)


def _values(values: Any) -> str:
    if type(values) is not Values:
        raise TypeError(type(values).__name__)
    model, temperature = values.model, values.temperature
    if temperature is None:
        return "{}" if model is None else '{"model":' + _string(model) + "}"
    if model is None:
        return '{"temperature":' + _number(temperature) + "}"
    return '{"model":' + _string(model) + ',"temperature":' + _number(temperature) + "}"


def _text(value: Any) -> str:
    if type(value) is not str:
        raise TypeError(type(value).__name__)
    return str(_string(value))


def _flag(value: Any) -> str:
    if type(value) is not bool:
        raise TypeError(type(value).__name__)
    return "true" if value else "false"


_WRITERS: dict[str, Callable[[Any], str]] = {
    "int": _number,
    "float": _number,
    "str": _text,
    "bool": _flag,
    "Values": _values,
}
# The usual types written inline (no call); anything else goes through the writer, which raises
# TypeError for a value the converter would write otherwise (then the general path writes it).
_INLINE = {
    "int": "(int_repr({v}) if type({v}) is int else {w}({v}))",
    "str": "(string({v}) if type({v}) is str else {w}({v}))",
    "bool": "(true if {v} is True else false if {v} is False else {w}({v}))",
}


def _type_name(annotation: Any) -> str:
    """``int``, ``Values``... for an annotation given as a string or resolved ("X | None": X)."""
    if isinstance(annotation, str):
        return annotation.removesuffix(" | None")
    args = [arg for arg in getattr(annotation, "__args__", ()) if arg is not type(None)]
    return str((args[0] if args else annotation).__name__)


def _literal(text: str) -> str:
    return text.replace("{", "{{").replace("}", "}}")


def _compiled(cls: type[Any]) -> Callable[..., bytes]:
    """An encoder taking ``cls``'s fields as arguments and writing the line the converter would
    (same names, ``k`` first, fields at their default omitted, newline-terminated), generated
    once from the attrs fields as cattrs generates its hooks: one f-string, no call for the
    usual types. A value of another type is written by the general path."""
    names: dict[str, Any] = {
        "int_repr": int.__repr__,
        "string": _string,
        "cls": cls,
        "general": lambda line: (_generic(line) + "\n").encode(),
        "true": "true",
        "false": "false",
        "empty": "",
    }
    fields = [field for field in attrs.fields(cls) if field.name != "k"]
    params, parts = [], [_literal('{"k":' + _string(attrs.fields(cls).k.default))]
    for field in fields:
        name, kind = field.name, _type_name(field.type)
        names[f"write_{name}"] = _WRITERS[kind]
        value = _INLINE.get(kind, "{w}({v})").format(v=name, w=f"write_{name}")
        if field.default is attrs.NOTHING:
            params.append(name)
            parts.append(_literal(',"' + name + '":') + "{" + value + "}")
        else:
            key = f"key_{name}"  # a name, not a literal: no quote inside an f-string expression
            names[key] = ',"' + name + '":'
            names[f"default_{name}"] = field.default
            params.append(f"{name}=default_{name}")
            test = f"{name} is not None" if field.default is None else f"{name} != default_{name}"
            parts.append("{(" + key + " + " + value + f") if {test} else empty" + "}")
    arguments = ", ".join(field.name for field in fields)
    source = "\n".join(
        [
            f"def line_{cls.__name__}({', '.join(params)}):",
            "    try:",
            "        return f'" + "".join(parts) + "}}\\n'.encode()",
            "    except TypeError:",
            "        pass",
            f"    return general(cls({arguments}))",
        ]
    )
    exec(source, names)  # noqa: S102 - our own generated source, as cattrs does
    encoder: Callable[..., bytes] = names[f"line_{cls.__name__}"]
    return encoder


# The runner writes intents and outcomes from their fields, without building the line objects.
intent_line: Callable[..., bytes] = _compiled(Intent)
outcome_line: Callable[..., bytes] = _compiled(Outcome)
_plan_line = _compiled(PlanLine)

_FAST: dict[type[Any], Callable[[Any], bytes]] = {
    Intent: lambda line: intent_line(line.i, line.c, line.set, line.was),
    Outcome: lambda line: outcome_line(line.i, line.s, line.sent, line.attempts, line.error),
    PlanLine: lambda line: _plan_line(line.i, line.c, line.was, line.set),
}


def encode(line: Line) -> bytes:
    """One line, ``k`` first, newline-terminated (the same bytes the converter's dict would give;
    the frequent kinds go through an encoder compiled once from the same attrs fields)."""
    fast = _FAST.get(type(line))
    if fast is not None:
        return fast(line)
    return (_generic(line) + "\n").encode()


def decode(raw: bytes | str) -> Line:
    """The line as its attrs class; LineError naming the problem when it is not one."""
    try:
        data = json.loads(raw.decode() if isinstance(raw, bytes) else raw)
    except ValueError as error:
        raise LineError(f"not JSON ({error.args[0] if error.args else error})") from None
    if not isinstance(data, dict):
        raise LineError("not a JSON object")
    cls = _KINDS.get(data.get("k"))  # type: ignore[arg-type]
    if cls is None:
        raise LineError(f"unknown line kind {data.get('k')!r}")
    try:
        line: Line = _converter.structure(data, cls)
    except Exception as error:  # noqa: BLE001 - cattrs wraps the cause; name it, keep it short
        raise LineError(_first_cause(error)) from None
    return line


def _first_cause(error: BaseException) -> str:
    """The innermost message of a cattrs error group, with the field it concerns when known."""
    exceptions = getattr(error, "exceptions", None)
    if exceptions:
        inner = exceptions[0]
        note = next(iter(getattr(inner, "__notes__", []) or []), "")
        field = note.rsplit(" ", 1)[-1] if note.startswith("Structuring class") else ""
        text = _first_cause(inner)
        return f"{field}: {text}" if field else text
    if isinstance(error, KeyError):
        return f"missing field {error.args[0]!r}"
    return str(error) or type(error).__name__
