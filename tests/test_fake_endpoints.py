"""The fake's endpoint logic, pure: a FakeState and a body in, an Answer out, no server."""

from __future__ import annotations

from typing import Any

import pytest

from convai_async.testing.answers import INVALID_KEY_BODY, unauthorized
from convai_async.testing.endpoints import ENDPOINT_PATHS, answer
from convai_async.testing.state import FakeState


@pytest.fixture
def state() -> FakeState:
    return FakeState(5)


def first(state: FakeState) -> str:
    return next(iter(state.characters))


def test_serves_the_documented_paths() -> None:
    assert set(ENDPOINT_PATHS) == {
        "/character/update",
        "/character/get",
        "/character/list",
        "/llm-models/register",
        "/llm-models/update",
        "/llm-models/deregister",
        "/llm-models/list",
    }


def test_seeding_is_deterministic_per_seed() -> None:
    assert FakeState(20, seed=3).characters == FakeState(20, seed=3).characters
    assert list(FakeState(20, seed=3).characters) != list(FakeState(20, seed=4).characters)


def test_update_applies_and_logs_the_body(state: FakeState) -> None:
    char_id = first(state)
    body: dict[str, Any] = {"charID": char_id, "model_group_name": "gpt-4.1", "temperature": 0.4}
    reply = answer(state, "/character/update", body)
    assert (reply.status, reply.body) == (200, {"STATUS": "SUCCESS"})
    assert (state.model_of(char_id), state.temperature_of(char_id)) == ("gpt-4.1", 0.4)
    assert state.update_log == {char_id: [body]}
    assert state.applied_updates == 1


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({}, "charID is required"),
        ({"charID": "nope", "temperature": 0.1}, "INTERNAL SERVER ERROR"),
        ({"charID": None}, "charID is required"),
        ({"temperature": 2.0}, "charID is required"),
    ],
)
def test_update_errors_have_the_character_shape(
    state: FakeState, body: dict[str, Any], message: str
) -> None:
    reply = answer(state, "/character/update", body)
    assert reply.status == 400
    assert message in reply.body["ERROR"]
    assert state.applied_updates == 0


@pytest.mark.parametrize(
    "change", [{}, {"temperature": 1.5}, {"temperature": True}, {"model_group_name": " "}]
)
def test_invalid_updates_change_nothing(state: FakeState, change: dict[str, Any]) -> None:
    char_id = first(state)
    before = dict(state.characters[char_id]["personalised_prompt_config"])
    reply = answer(state, "/character/update", {"charID": char_id, **change})
    assert reply.status == 400
    assert state.characters[char_id]["personalised_prompt_config"] == before
    assert state.update_log == {}


def test_strict_models_accept_builtins_and_registered_groups_only(state: FakeState) -> None:
    state.strict_models = True
    char_id = first(state)
    assert answer(state, "/character/update", {"charID": char_id, "model_group_name": "gpt-4.1"})
    unknown = answer(state, "/character/update", {"charID": char_id, "model_group_name": "mine"})
    assert unknown.status == 400
    state.custom_models["mine"] = {"model_group_name": "mine", "display_name": "mine"}
    known = answer(state, "/character/update", {"charID": char_id, "model_group_name": "mine"})
    assert known.status == 200


def test_get_by_id_and_by_name(state: FakeState) -> None:
    char_id = first(state)
    name = state.characters[char_id]["character_name"]
    assert answer(state, "/character/get", {"charID": char_id}).body["character_id"] == char_id
    assert answer(state, "/character/get", {"charName": name}).body["character_id"] == char_id


@pytest.mark.parametrize("body", [{"charID": "missing"}, {"charName": "Nobody At All"}])
def test_unknown_id_or_name_is_the_documented_400(state: FakeState, body: dict[str, Any]) -> None:
    reply = answer(state, "/character/get", body)
    assert reply.status == 400
    assert reply.body == {"ERROR": "INTERNAL SERVER ERROR, one or more database calls failed!"}


def test_list_returns_every_character(state: FakeState) -> None:
    reply = answer(state, "/character/list", None)
    assert [c["character_id"] for c in reply.body["characters"]] == list(state.characters)


def test_custom_llm_lifecycle(state: FakeState) -> None:
    register = {
        "model_group_name": "g1",
        "model_name": "m",
        "api_key": "sk-x",
        "is_uncensored": False,
    }
    created = answer(state, "/llm-models/register", register)
    assert created.status == 200
    assert created.body["display_name"] == "g1"
    assert answer(state, "/llm-models/register", register).status == 409
    listed = answer(state, "/llm-models/list", None).body
    assert listed["count"] == 1
    assert "api_key" not in listed["models"][0]
    updated = answer(state, "/llm-models/update", {"model_group_name": "g1", "display_name": "G"})
    assert updated.body["updated_fields"] == ["display_name"]
    assert answer(state, "/llm-models/update", {"model_group_name": "g1"}).status == 400
    assert answer(state, "/llm-models/deregister", {"model_group_name": "g1"}).status == 200
    gone = answer(state, "/llm-models/deregister", {"model_group_name": "g1"})
    assert (gone.status, gone.body["status"]) == (404, "error")


def test_register_names_the_missing_field(state: FakeState) -> None:
    reply = answer(state, "/llm-models/register", {"model_group_name": "g"})
    assert reply.status == 400
    assert reply.body["message"] == "Missing required field: model_name"


def test_unauthorized_answers_differ_by_family() -> None:
    assert unauthorized("/character/get").body == INVALID_KEY_BODY
    llm = unauthorized("/llm-models/list")
    assert (llm.status, llm.body["status"]) == (401, "error")
