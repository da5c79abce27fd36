"""The documented endpoints as pure functions of a ``FakeState`` and a parsed request body.

Each returns an ``Answer``; no HTTP, no event loop:
``answer(state, "/character/get", {"charID": ...})``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..catalog import is_builtin
from .answers import Answer, character_error, llm_error, new_transaction_id, ok
from .state import FakeState

__all__ = ["ENDPOINT_PATHS", "answer"]

_DATABASE_ERROR = "INTERNAL SERVER ERROR, one or more database calls failed!"

Endpoint = Callable[[FakeState, dict[str, Any]], Answer]


def answer(state: FakeState, path: str, body: Any) -> Answer:
    """What the API answers to ``body`` (the parsed JSON, ``None`` when absent or invalid)
    posted to ``path``, once the key and faults have let it through. Changes ``state``."""
    return _ROUTES[path](state, body if isinstance(body, dict) else {})


def _character_for(state: FakeState, body: dict[str, Any]) -> dict[str, Any] | Answer:
    char_id = body.get("charID")
    if not isinstance(char_id, str) or not char_id:
        return character_error("charID is required")
    character = state.characters.get(char_id)
    if character is None:
        return character_error(_DATABASE_ERROR)  # the docs' 400 for an unknown charID
    return character


def update_character(state: FakeState, body: dict[str, Any]) -> Answer:
    character = _character_for(state, body)
    if isinstance(character, Answer):
        return character
    model = body.get("model_group_name")
    temperature = body.get("temperature")
    if model is None and temperature is None:
        return character_error("one of model_group_name or temperature is required")
    if model is not None and (not isinstance(model, str) or not _model_exists(state, model)):
        return character_error(f"Invalid model_group_name: {model!r}")
    if temperature is not None and (
        isinstance(temperature, bool)
        or not isinstance(temperature, (int, float))
        or not 0 <= temperature <= 1
    ):
        return character_error("temperature must be between 0 and 1")
    state.apply_update(character["character_id"], body)
    return ok({"STATUS": "SUCCESS"})


def _model_exists(state: FakeState, code: str) -> bool:
    if not code.strip():
        return False
    return not state.strict_models or code in state.custom_models or is_builtin(code)


def get_character(state: FakeState, body: dict[str, Any]) -> Answer:
    name = body.get("charName")
    if isinstance(name, str) and "charID" not in body:
        found = state.character_named(name)
        # The docs' one answer for a character that cannot be fetched, by ID or by name: a 400
        # (the client raises NotFoundError for it).
        return character_error(_DATABASE_ERROR) if found is None else ok(found)
    character = _character_for(state, body)
    return character if isinstance(character, Answer) else ok(character)


def list_characters(state: FakeState, body: dict[str, Any]) -> Answer:
    return ok({"characters": list(state.characters.values())})


_REQUIRED_FOR_REGISTER = (
    ("model_group_name", str),
    ("model_name", str),
    ("api_key", str),
    ("is_uncensored", bool),
)


def register_model(state: FakeState, body: dict[str, Any]) -> Answer:
    for name, kind in _REQUIRED_FOR_REGISTER:
        if not isinstance(body.get(name), kind):
            return llm_error(400, f"Missing required field: {name}")
    group = body["model_group_name"]
    if group in state.custom_models:
        return llm_error(409, "Model group name already exists")
    display_name = body.get("display_name") or group
    if _display_name_taken(state, display_name, group):
        return llm_error(409, "Display name already exists")
    state.custom_models[group] = {
        "model_group_name": group,
        "model_name": body["model_name"],
        "display_name": display_name,
        "base_url": body.get("base_url") or "https://api.openai.com/v1",
        "is_uncensored": body["is_uncensored"],
        "category": "Private",
        "created_at": state.clock(),
        "api_key": body["api_key"],
    }
    return ok(
        {
            "status": "success",
            "model_group_name": group,
            "model_name": body["model_name"],
            "display_name": display_name,
            "message": f"Model '{group}' registered successfully",
            "transactionID": new_transaction_id(),
        }
    )


def _display_name_taken(state: FakeState, display_name: str, group: str) -> bool:
    return any(
        m["display_name"] == display_name and m["model_group_name"] != group
        for m in state.custom_models.values()
    )


def update_model(state: FakeState, body: dict[str, Any]) -> Answer:
    group = body.get("model_group_name")
    model = state.custom_models.get(group) if isinstance(group, str) else None
    if model is None or not isinstance(group, str):
        return llm_error(404, f"Model '{group}' not found or access denied")
    changes = {
        key: body[key]
        for key in ("display_name", "base_url", "api_key", "is_uncensored")
        if body.get(key) is not None
    }
    if not changes:
        return llm_error(400, "No valid fields to update")
    if "display_name" in changes and _display_name_taken(state, changes["display_name"], group):
        return llm_error(409, "Display name already exists")
    model.update(changes)
    return ok(
        {
            "status": "success",
            "message": f"Model '{group}' updated successfully",
            "updated_fields": list(changes),
            "transactionID": new_transaction_id(),
        }
    )


def deregister_model(state: FakeState, body: dict[str, Any]) -> Answer:
    group = body.get("model_group_name")
    if not isinstance(group, str) or state.custom_models.pop(group, None) is None:
        return llm_error(404, "Model not found")
    return ok(
        {
            "status": "success",
            "message": f"Model '{group}' deregistered successfully",
            "transactionID": new_transaction_id(),
        }
    )


def list_models(state: FakeState, body: dict[str, Any]) -> Answer:
    models = [
        {key: value for key, value in model.items() if key != "api_key"}
        for model in state.custom_models.values()
    ]
    return ok(
        {
            "status": "success",
            "models": models,
            "count": len(models),
            "transactionID": new_transaction_id(),
        }
    )


_ROUTES: dict[str, Endpoint] = {
    "/character/update": update_character,
    "/character/get": get_character,
    "/character/list": list_characters,
    "/llm-models/register": register_model,
    "/llm-models/update": update_model,
    "/llm-models/deregister": deregister_model,
    "/llm-models/list": list_models,
}
ENDPOINT_PATHS: tuple[str, ...] = tuple(_ROUTES)
