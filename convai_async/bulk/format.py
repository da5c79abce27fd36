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
import os
import secrets
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
    "generic_line",
    "make_converter",
    "new_header",
    "now",
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


def generic_line(line: Line) -> str:
    """A line as the converter writes it (``k`` first), without its newline."""
    data = _unstructure_fns[type(line)](line)
    data = {"k": data.pop("k"), **data}
    return json.dumps(data, separators=(",", ":"), allow_nan=False)


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
