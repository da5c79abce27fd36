"""The pure protocol layer, on the vendor docs' examples verbatim: no sockets."""

from __future__ import annotations

import json
import time
from email.utils import formatdate
from typing import Any

import pytest

from convai_async import errors
from convai_async._wire.converter import converter
from convai_async._wire.protocol import (
    CHARACTER_GET,
    CHARACTER_LIST,
    CHARACTER_UPDATE,
    MODEL_DEREGISTER,
    MODEL_LIST,
    MODEL_REGISTER,
    MODEL_UPDATE,
    encode_body,
    is_retryable,
    parse_response,
    retry_after_granularity,
    retry_after_seconds,
)
from convai_async._wire.secrets import Redactor, Secret
from convai_async.models import (
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

from .conftest import character_list_sample, sample_bytes

JSON = {"content-type": "application/json"}


def redactor_of(*secrets: str) -> Redactor:
    redactor = Redactor()
    for secret in secrets:
        redactor.add(Secret(secret))
    return redactor


def body_of(request: object) -> Any:
    body = encode_body(request)
    return json.loads(body if isinstance(body, bytes) else body.reveal())


# -- request bodies ------------------------------------------------------------------------------


def test_model_update_body_matches_docs_sample() -> None:
    assert body_of(CharacterUpdate("<Your-Character-Id>", model="claude-3-5-sonnet")) == {
        "charID": "<Your-Character-Id>",
        "model_group_name": "claude-3-5-sonnet",
    }


def test_temperature_update_body_matches_docs_sample() -> None:
    assert body_of(CharacterUpdate("<Your-Character-Id>", temperature=0.42)) == {
        "charID": "<Your-Character-Id>",
        "temperature": 0.42,
    }


def test_combined_update_is_one_body_with_both_fields() -> None:
    assert body_of(CharacterUpdate("c1", model="gpt-4.1", temperature=1)) == {
        "charID": "c1",
        "model_group_name": "gpt-4.1",
        "temperature": 1.0,
    }


def test_get_body() -> None:
    assert body_of(CharacterQuery("<id of the character>")) == {"charID": "<id of the character>"}


def test_get_by_name_body_matches_docs_sample() -> None:
    assert body_of(CharacterNameQuery("name of the character")) == {
        "charName": "name of the character"
    }


def test_register_body_matches_docs_sample() -> None:
    registration = ModelRegistration(
        model_group_name="my-turbo",
        model_name="gpt-4o-mini",
        api_key="sk-proxy-123",
        is_uncensored=False,
        display_name="Turbo (Private)",
        base_url="https://api.openai.com/v1",
    )
    assert body_of(registration) == {
        "model_group_name": "my-turbo",
        "model_name": "gpt-4o-mini",
        "api_key": "sk-proxy-123",
        "is_uncensored": False,
        "display_name": "Turbo (Private)",
        "base_url": "https://api.openai.com/v1",
    }


def test_register_omits_optional_fields_not_given() -> None:
    body = body_of(ModelRegistration("g", "m", api_key="k", is_uncensored=True))
    assert body == {
        "model_group_name": "g",
        "model_name": "m",
        "api_key": "k",
        "is_uncensored": True,
    }


def test_model_update_body_matches_docs_sample_and_omits_the_rest() -> None:
    change = ModelUpdate("my-turbo", display_name="Turbo v2", api_key="sk-proxy-456")
    assert body_of(change) == {
        "model_group_name": "my-turbo",
        "display_name": "Turbo v2",
        "api_key": "sk-proxy-456",
    }


def test_model_update_keeps_false_flag() -> None:
    assert body_of(ModelUpdate("g", is_uncensored=False)) == {
        "model_group_name": "g",
        "is_uncensored": False,
    }


def test_deregister_and_list_bodies() -> None:
    assert body_of(ModelReference("my-turbo")) == {"model_group_name": "my-turbo"}
    assert encode_body(None) == b""


def test_quotes_and_braces_in_ids_stay_json_values() -> None:
    sneaky = '", "model_group_name": "evil", "x": {"'
    body = body_of(CharacterUpdate(sneaky, temperature=0.5))
    assert body == {"charID": sneaky, "temperature": 0.5}


def test_secrets_are_not_in_request_reprs() -> None:
    assert "sk-proxy-123" not in repr(ModelRegistration("g", "m", "sk-proxy-123", False))
    assert "sk-proxy-456" not in repr(ModelUpdate("g", api_key="sk-proxy-456"))


# -- success responses ---------------------------------------------------------------------------


def test_update_success_sample() -> None:
    body = sample_bytes("character_update_200.json")
    assert parse_response(CHARACTER_UPDATE, 200, JSON, body) == {"STATUS": "SUCCESS"}


def test_get_success_sample() -> None:
    payload = parse_response(CHARACTER_GET, 200, JSON, sample_bytes("character_get_200.json"))
    character = converter.structure(payload, Character)
    assert character.char_id == "<id of the character>"
    assert character.name == "<name of the character>"
    assert character.model is None
    assert character.temperature is None
    assert character.raw["voice_type"] == "<voice type set for the character>"


def test_list_success_sample() -> None:
    body = json.dumps(character_list_sample()).encode()
    payload = parse_response(CHARACTER_LIST, 200, JSON, body)
    characters = converter.structure(payload["characters"], list[Character])
    assert [(c.name, c.model, c.temperature) for c in characters] == [
        ("Rafael", "gpt-4o", 0.07),
        ("Steven", "gpt-4o-mini", 0.7),
    ]
    assert characters[0].char_id == "SOME_CHAR_ID"
    assert characters[0].raw["model_details"]["modelType"] == "RPM-3D"
    assert characters[1].raw["is_narrative_driven"] is True


def test_unknown_character_keys_are_ignored_and_kept_raw() -> None:
    obj = {"character_id": "c", "brand_new_field": [1, 2], "personalised_prompt_config": None}
    character = converter.structure(obj, Character)
    assert character == Character(char_id="c")
    assert character.raw["brand_new_field"] == [1, 2]


def test_register_success_sample() -> None:
    payload = parse_response(MODEL_REGISTER, 200, JSON, sample_bytes("llm_register_200.json"))
    registered = converter.structure(payload, RegisteredModel)
    assert registered == RegisteredModel(
        model_group_name="my-turbo",
        model_name="gpt-4o-mini",
        display_name="Turbo (Private)",
        message="Model 'my-turbo' registered successfully",
        transaction_id="14b0cf96-5230-4b0f-a971-2f4f4f6d5e6a",
    )


def test_update_model_success_sample() -> None:
    payload = parse_response(MODEL_UPDATE, 200, JSON, sample_bytes("llm_update_200.json"))
    updated = converter.structure(payload, UpdatedModel)
    assert updated.updated_fields == ("display_name", "api_key")
    assert updated.transaction_id == "5c0b6c67-97e4-4d78-9d5c-2a3de9d9c8ee"


def test_deregister_success_sample() -> None:
    payload = parse_response(MODEL_DEREGISTER, 200, JSON, sample_bytes("llm_deregister_200.json"))
    result = converter.structure(payload, DeregisteredModel)
    assert result.message == "Model 'my-turbo' deregistered successfully"
    assert result.transaction_id == "b11ac4f7-4cd3-4f43-8a79-3c942a14a8c9"


def test_list_models_success_sample() -> None:
    payload = parse_response(MODEL_LIST, 200, JSON, sample_bytes("llm_list_200.json"))
    models = converter.structure(payload["models"], list[CustomModel])
    assert [m.model_group_name for m in models] == ["my-turbo", "raw-mixtral"]
    mixtral = models[1]
    assert mixtral.model_name == "mixtral-8x22b-base"
    assert mixtral.display_name == "Mixtral Raw"
    assert mixtral.base_url == "https://llm.my-org.net/v1"
    assert mixtral.is_uncensored is True
    assert mixtral.category == "Private"
    assert mixtral.created_at is not None
    assert (mixtral.created_at.year, mixtral.created_at.microsecond) == (2025, 551000)
    assert mixtral.raw["created_at"] == "2025-05-21T14:02:05.551Z"


# -- error responses -----------------------------------------------------------------------------


def test_docs_401_sample_is_invalid_json_and_still_read() -> None:
    body = sample_bytes("character_update_401.json")
    with pytest.raises(ValueError, match=r"Unterminated|Invalid control"):
        json.loads(body)
    with pytest.raises(errors.AuthenticationError) as caught:
        parse_response(CHARACTER_UPDATE, 401, JSON, body)
    assert caught.value.message == "Invalid API key provided."
    assert caught.value.status == 401
    assert caught.value.endpoint == "/character/update"


def test_character_400_sample() -> None:
    with pytest.raises(errors.BadRequestError) as caught:
        parse_response(CHARACTER_GET, 400, JSON, sample_bytes("character_get_400.json"))
    assert "database calls failed" in caught.value.message


def test_llm_error_samples_carry_transaction_id() -> None:
    with pytest.raises(errors.AuthenticationError) as caught:
        parse_response(MODEL_LIST, 401, JSON, sample_bytes("llm_error_401.json"))
    assert caught.value.message == "Unauthorized: missing or invalid CONVAI-API-KEY"
    assert caught.value.transaction_id == "..."
    with pytest.raises(errors.NotFoundError) as not_found:
        parse_response(MODEL_UPDATE, 404, JSON, sample_bytes("llm_error_404.json"))
    assert not_found.value.message == "Model 'x' not found or access denied"


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (400, errors.BadRequestError),
        (401, errors.AuthenticationError),
        (403, errors.PermissionDeniedError),
        (404, errors.NotFoundError),
        (409, errors.ConflictError),
        (429, errors.RateLimitError),
        (500, errors.ServerError),
        (502, errors.ServerError),
        (503, errors.ServerError),
        (504, errors.ServerError),
        (418, errors.UnexpectedResponseError),
        (307, errors.UnexpectedResponseError),
    ],
)
def test_status_to_error_class(status: int, kind: type[errors.APIStatusError]) -> None:
    body = b'{"status": "error", "message": "nope", "transactionID": "t-1"}'
    with pytest.raises(kind) as caught:
        parse_response(MODEL_LIST, status, JSON, body)
    assert type(caught.value) is kind
    assert caught.value.status == status
    assert caught.value.transaction_id == "t-1"
    assert isinstance(caught.value, errors.ConvaiError)


@pytest.mark.parametrize(
    "message",
    ["API rate limit exceeded. Please try again later.", "Rate limit exceeded."],
)
def test_transient_rate_limit_messages(message: str) -> None:
    body = json.dumps({"API_ERROR": message}).encode()
    with pytest.raises(errors.RateLimitError) as caught:
        parse_response(CHARACTER_UPDATE, 429, {"retry-after": "3"}, body)
    assert type(caught.value) is errors.RateLimitError
    assert caught.value.retry_after == 3.0
    assert is_retryable(caught.value)


def test_quota_message_is_its_own_error_and_not_retryable() -> None:
    body = b'{"API_ERROR": "API usage limit exceeded for current plan."}'
    with pytest.raises(errors.QuotaExceededError) as caught:
        parse_response(CHARACTER_UPDATE, 429, JSON, body)
    assert not is_retryable(caught.value)


@pytest.mark.parametrize(
    ("body", "content_type", "expected"),
    [
        (b'{"STATUS": "FAILURE"}', "application/json", "not the documented success shape"),
        (b"<html><body>OK</body></html>", "text/html", "body is not JSON"),
        (b'{"status": "error"}', "application/json", "not the documented success shape"),
        (b"", "application/json", "body is not JSON"),
        (b"[1, 2]", "application/json", "not the documented success shape"),
        (b'{"STATUS": "SUCC', "application/json", "body is not JSON"),
    ],
)
def test_2xx_that_is_not_success_is_unexpected(
    body: bytes, content_type: str, expected: str
) -> None:
    with pytest.raises(errors.UnexpectedResponseError, match=expected):
        parse_response(CHARACTER_UPDATE, 200, {"content-type": content_type}, body)


def test_each_endpoint_rejects_the_other_shapes() -> None:
    character = sample_bytes("character_get_200.json")
    llm_ok = sample_bytes("llm_deregister_200.json")
    with pytest.raises(errors.UnexpectedResponseError):
        parse_response(CHARACTER_UPDATE, 200, JSON, character)
    with pytest.raises(errors.UnexpectedResponseError):
        parse_response(CHARACTER_GET, 200, JSON, b'{"STATUS": "SUCCESS"}')
    with pytest.raises(errors.UnexpectedResponseError):
        parse_response(CHARACTER_LIST, 200, JSON, b'{"characters": {}}')
    with pytest.raises(errors.UnexpectedResponseError):
        parse_response(MODEL_LIST, 200, JSON, llm_ok)  # success, but no "models"


def test_html_error_body_gives_short_message() -> None:
    html = b"<!DOCTYPE html><html>" + b"x" * 10_000 + b"</html>"
    with pytest.raises(errors.ServerError) as caught:
        parse_response(CHARACTER_UPDATE, 502, {"content-type": "text/html"}, html)
    assert caught.value.message == "non-JSON body (text/html)"


def test_messages_are_redacted_of_secrets() -> None:
    body = b'{"API_ERROR": "Invalid API key provided: sekrit-123"}'
    with pytest.raises(errors.AuthenticationError) as caught:
        parse_response(CHARACTER_UPDATE, 401, JSON, body, redactor=redactor_of("sekrit-123"))
    assert "sekrit-123" not in str(caught.value)
    assert "[redacted]" in caught.value.message


# -- Retry-After ---------------------------------------------------------------------------------


def test_retry_after_delta_seconds() -> None:
    assert retry_after_seconds({"retry-after": "7"}) == 7.0
    assert retry_after_seconds({"retry-after": "0"}) == 0.0
    assert retry_after_seconds({"retry-after": "1.5"}) == 1.5
    assert retry_after_seconds({"retry-after-ms": "250"}) == 0.25
    assert retry_after_seconds({}) is None
    assert retry_after_seconds({"retry-after": "soon"}) is None
    assert retry_after_seconds({"retry-after": "-4"}) == 0.0


def test_retry_after_http_date() -> None:
    now = time.time()
    header = formatdate(now + 30, usegmt=True)
    waited = retry_after_seconds({"retry-after": header}, now=now)
    assert waited is not None
    assert 29.0 <= waited <= 30.0
    assert retry_after_seconds({"retry-after": formatdate(now - 30, usegmt=True)}, now=now) == 0.0


@pytest.mark.parametrize(
    ("headers", "granularity"),
    [
        ({"retry-after": "1"}, 1.0),  # whole seconds: perhaps rounded up from 0.005
        ({"retry-after": " 12 "}, 1.0),
        ({"retry-after": formatdate(0, usegmt=True)}, 1.0),  # a date has whole seconds
        ({"retry-after": "0.005"}, 0.0),
        ({"retry-after": "1.5"}, 0.0),
        ({"retry-after-ms": "250", "retry-after": "1"}, 0.0),  # the milliseconds are read
        ({"retry-after-ms": "soon", "retry-after": "1"}, 1.0),  # unreadable: seconds instead
        ({"retry-after": "1.0"}, 0.0),  # written with a fraction: not rounded to seconds
        ({"retry-after": "1e3"}, 0.0),
        ({"retry-after": "soon"}, 1.0),  # no wait is read from it: the value is never used
        ({}, 0.0),
    ],
)
def test_retry_after_granularity(headers: dict[str, str], granularity: float) -> None:
    assert retry_after_granularity(headers) == granularity


# -- retry classification ------------------------------------------------------------------------


def _status_error(status: int) -> errors.APIStatusError:
    try:
        parse_response(MODEL_LIST, status, JSON, b"{}")
    except errors.APIStatusError as error:
        return error
    raise AssertionError("no error")


@pytest.mark.parametrize("status", [429, 500, 502, 503, 504])
def test_retryable_statuses(status: int) -> None:
    assert is_retryable(_status_error(status))


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 501, 505, 418])
def test_not_retryable_statuses(status: int) -> None:
    assert not is_retryable(_status_error(status))


def test_transport_errors_are_retryable_and_validation_is_not() -> None:
    assert is_retryable(errors.ConvaiConnectionError("x", endpoint="/e", request_sent=False))
    assert is_retryable(errors.ConvaiTimeoutError("x", endpoint="/e", request_sent=True))
    assert not is_retryable(errors.ValidationError("f", "bad"))
    with pytest.raises(errors.UnexpectedResponseError) as caught:
        parse_response(CHARACTER_UPDATE, 200, JSON, b'{"STATUS": "FAILURE"}')
    assert not is_retryable(caught.value)
