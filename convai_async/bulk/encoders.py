"""Journal lines as bytes: ``encode``, with encoders generated once from the attrs fields.

The frequent lines (intents, outcomes, plan lines) are written by functions generated from their
classes' attrs fields, as cattrs generates its hooks: one f-string each, taking the fields as
arguments, so the runner writes an intent or an outcome without building its line object. They
write the bytes the converter writes (``format.generic_line``); any value of an unusual type
goes through the converter itself.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

import attrs

from .format import Intent, Line, Outcome, PlanLine, Values, generic_line

__all__ = ["encode", "intent_line", "outcome_line", "update_intent_line"]

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
    return _values_of(values.model, values.temperature)


def _values_of(model: Any, temperature: Any) -> str:
    """A Values object's JSON from its fields (in ``Values``' field order)."""
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


def _compiled(cls: type[Any], flat: str | None = None) -> Callable[..., bytes]:
    """An encoder taking ``cls``'s fields as arguments and writing the line the converter would
    (same names, ``k`` first, fields at their default omitted, newline-terminated), generated
    once from the attrs fields as cattrs generates its hooks: one f-string, no call for the
    usual types. A value of another type is written by the general path. ``flat`` names a
    Values field taken as its own fields (``set_model``, ``set_temperature``): no Values built."""
    names: dict[str, Any] = {
        "Values": Values,
        "values_of": _values_of,
        "int_repr": int.__repr__,
        "string": _string,
        "cls": cls,
        "general": lambda line: (generic_line(line) + "\n").encode(),
        "true": "true",
        "false": "false",
        "empty": "",
    }
    fields = [field for field in attrs.fields(cls) if field.name != "k"]
    params, parts = [], [_literal('{"k":' + _string(attrs.fields(cls).k.default))]
    arguments = [field.name for field in fields]
    for field in fields:
        name, kind = field.name, _type_name(field.type)
        names[f"write_{name}"] = _WRITERS[kind]
        value = _INLINE.get(kind, "{w}({v})").format(v=name, w=f"write_{name}")
        if name == flat and kind == "Values" and field.default is attrs.NOTHING:
            parts_of = ", ".join(f"{name}_{part.name}" for part in attrs.fields(Values))
            params.append(parts_of)
            arguments[arguments.index(name)] = f"Values({parts_of})"
            parts.append(_literal(',"' + name + '":') + "{values_of(" + parts_of + ")}")
        elif field.default is attrs.NOTHING:
            params.append(name)
            parts.append(_literal(',"' + name + '":') + "{" + value + "}")
        else:
            key = f"key_{name}"  # a name, not a literal: no quote inside an f-string expression
            names[key] = ',"' + name + '":'
            names[f"default_{name}"] = field.default
            params.append(f"{name}=default_{name}")
            test = f"{name} is not None" if field.default is None else f"{name} != default_{name}"
            parts.append("{(" + key + " + " + value + f") if {test} else empty" + "}")
    source = "\n".join(
        [
            f"def line_{cls.__name__}({', '.join(params)}):",
            "    try:",
            "        return f'" + "".join(parts) + "}}\\n'.encode()",
            "    except TypeError:",
            "        pass",
            f"    return general(cls({', '.join(arguments)}))",
        ]
    )
    exec(source, names)  # noqa: S102 - our own generated source, as cattrs does
    encoder: Callable[..., bytes] = names[f"line_{cls.__name__}"]
    return encoder


# The runner writes intents and outcomes from their fields, without building the line objects.
intent_line: Callable[..., bytes] = _compiled(Intent)
# intent_line(i, c, Values(model, temperature), was) from an update's fields: no Values built
update_intent_line: Callable[..., bytes] = _compiled(Intent, flat="set")
outcome_line: Callable[..., bytes] = _compiled(Outcome)
_plan_line = _compiled(PlanLine)

assert [part.name for part in attrs.fields(Values)] == ["model", "temperature"]  # _values_of's
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
    return (generic_line(line) + "\n").encode()
