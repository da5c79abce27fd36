"""Every endpoint against FakeConvai over real sockets: exact wire bodies and headers, parsing,
errors, validation before any I/O, and the client's lifetime."""

from __future__ import annotations

import math
from typing import Any

import aiohttp
import pytest

from convai_async import (
    AuthenticationError,
    Character,
    ClientClosedError,
    ConflictError,
    ConvaiClient,
    ModelInUseError,
    NotFoundError,
    UnexpectedResponseError,
    ValidationError,
    __version__,
)
from convai_async.testing import FakeConvai, Faults

from .conftest import CANARY_KEY, CANARY_LLM_KEY, FAST_RETRY, ClientFactory
from .scripted import scripted_server


def last_body(fake: FakeConvai) -> Any:
    return fake.requests[-1].body


async def test_set_model_wire_format(fake: FakeConvai, client: ConvaiClient) -> None:
    char_id = fake.char_ids[0]
    await client.characters.set_model(char_id, "gpt-4.1")
    request = fake.requests[-1]
    assert request.path == "/character/update"
    assert request.body == {"charID": char_id, "model_group_name": "gpt-4.1"}
    assert request.headers["CONVAI-API-KEY"] == CANARY_KEY
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["User-Agent"] == f"convai-async/{__version__}"
    assert fake.model_of(char_id) == "gpt-4.1"


async def test_set_temperature_wire_format(fake: FakeConvai, client: ConvaiClient) -> None:
    char_id = fake.char_ids[1]
    await client.characters.set_temperature(char_id, 0.42)
    assert last_body(fake) == {"charID": char_id, "temperature": 0.42}
    assert fake.temperature_of(char_id) == 0.42


async def test_update_sends_one_request_with_given_fields_only(
    fake: FakeConvai, client: ConvaiClient
) -> None:
    char_id = fake.char_ids[2]
    await client.characters.update(char_id, model="claude-3-5-sonnet", temperature=0)
    await client.characters.update(char_id, temperature=0.9)
    bodies = [r.body for r in fake.requests_to("/character/update")]
    assert bodies == [
        {"charID": char_id, "model_group_name": "claude-3-5-sonnet", "temperature": 0.0},
        {"charID": char_id, "temperature": 0.9},
    ]
    assert (fake.model_of(char_id), fake.temperature_of(char_id)) == ("claude-3-5-sonnet", 0.9)


async def test_custom_group_names_are_accepted_as_models(
    fake: FakeConvai, client: ConvaiClient
) -> None:
    await client.characters.set_model(fake.char_ids[0], "llama3.1-70b-companyX")
    assert fake.model_of(fake.char_ids[0]) == "llama3.1-70b-companyX"


async def test_get_and_list(fake: FakeConvai, client: ConvaiClient) -> None:
    char_id = fake.char_ids[3]
    character = await client.characters.get(char_id)
    assert last_body(fake) == {"charID": char_id}
    assert character == Character(
        char_id=char_id,
        name=fake.characters[char_id]["character_name"],
        model=fake.model_of(char_id),
        temperature=fake.temperature_of(char_id),
    )
    assert character.raw["backstory"].endswith("test character.")
    characters = await client.characters.list()
    assert fake.requests[-1].raw == b""
    assert [c.char_id for c in characters] == fake.char_ids
    assert {c.model for c in characters} <= {
        "gpt-4o",
        "gpt-4o-mini",
        "claude-4-sonnet",
        "gemini-2.5-flash",
    }


async def test_get_by_name(fake: FakeConvai, client: ConvaiClient) -> None:
    char_id = fake.char_ids[4]
    name = fake.characters[char_id]["character_name"]
    character = await client.characters.get_by_name(name)
    assert fake.requests[-1].body == {"charName": name}
    assert character.char_id == char_id
    with pytest.raises(NotFoundError):
        await client.characters.get_by_name("Rafael")  # the docs' example name; not in this fleet
    with pytest.raises(ValidationError) as caught:
        await client.characters.get_by_name("")
    assert caught.value.field == "name"


async def test_unknown_character_is_not_found_after_one_request(
    fake: FakeConvai, client: ConvaiClient
) -> None:
    with pytest.raises(NotFoundError) as caught:
        await client.characters.get("no-such-character")
    assert caught.value.status == 400  # the docs' answer, kept as the server gave it
    assert "database calls failed" in caught.value.message
    assert fake.request_counts["/character/get"] == 1


async def test_custom_llm_lifecycle(fake: FakeConvai, client: ConvaiClient) -> None:
    registered = await client.llm_models.register(
        model_group_name="my-turbo",
        model_name="gpt-4o-mini",
        api_key="sk-proxy-123",
        is_uncensored=False,
        display_name="Turbo (Private)",
        base_url="https://api.openai.com/v1",
    )
    assert last_body(fake) == {
        "model_group_name": "my-turbo",
        "model_name": "gpt-4o-mini",
        "api_key": "sk-proxy-123",
        "is_uncensored": False,
        "display_name": "Turbo (Private)",
        "base_url": "https://api.openai.com/v1",
    }
    assert registered.model_group_name == "my-turbo"
    assert registered.transaction_id
    assert not registered.reconciled

    updated = await client.llm_models.update(
        "my-turbo", display_name="Turbo v2", api_key="sk-proxy-456"
    )
    assert last_body(fake) == {
        "model_group_name": "my-turbo",
        "display_name": "Turbo v2",
        "api_key": "sk-proxy-456",
    }
    assert updated.updated_fields == ("display_name", "api_key")
    assert fake.custom_models["my-turbo"]["api_key"] == "sk-proxy-456"

    (model,) = await client.llm_models.list()
    assert (model.model_group_name, model.display_name, model.is_uncensored) == (
        "my-turbo",
        "Turbo v2",
        False,
    )
    assert model.category == "Private"
    assert model.created_at is not None
    assert "api_key" not in model.raw
    assert await client.is_known_model("my-turbo")
    assert await client.is_known_model("gpt-4.1")
    assert not await client.is_known_model("claude-3-5-sonnet")

    await client.llm_models.deregister("my-turbo")
    assert last_body(fake) == {"model_group_name": "my-turbo"}
    assert await client.llm_models.list() == []


async def test_llm_errors(fake: FakeConvai, client: ConvaiClient) -> None:
    await client.llm_models.register("a", "m", "k1", False, display_name="Same")
    with pytest.raises(ConflictError, match="Model group name already exists"):
        await client.llm_models.register("a", "m", "k1", False)
    with pytest.raises(ConflictError, match="Display name already exists"):
        await client.llm_models.register("b", "m", "k1", False, display_name="Same")
    with pytest.raises(NotFoundError) as caught:
        await client.llm_models.update("ghost", display_name="x")
    assert caught.value.transaction_id
    with pytest.raises(NotFoundError):
        await client.llm_models.deregister("ghost")
    assert fake.request_counts["/llm-models/deregister"] == 1


async def test_wrong_key_is_authentication_error_after_one_request(
    fake: FakeConvai, make_client: ClientFactory
) -> None:
    client = make_client(api_key="wrong-key")
    with pytest.raises(AuthenticationError) as caught:
        await client.characters.set_model(fake.char_ids[0], "gpt-4.1")
    assert caught.value.message == "Invalid API key provided."
    with pytest.raises(AuthenticationError, match="Unauthorized"):
        await client.llm_models.list()
    assert len(fake.requests) == 2


# -- validation before any I/O --------------------------------------------------------------------


BAD_CALLS: list[tuple[str, str, str, dict[str, Any]]] = [
    ("characters", "set_temperature", "temperature", {"char_id": "c", "temperature": 1.5}),
    ("characters", "set_temperature", "temperature", {"char_id": "c", "temperature": -0.1}),
    ("characters", "set_temperature", "temperature", {"char_id": "c", "temperature": True}),
    ("characters", "set_temperature", "temperature", {"char_id": "c", "temperature": math.nan}),
    ("characters", "set_temperature", "temperature", {"char_id": "c", "temperature": math.inf}),
    ("characters", "set_temperature", "temperature", {"char_id": "c", "temperature": "0.5"}),
    ("characters", "set_temperature", "temperature", {"char_id": "c", "temperature": None}),
    ("characters", "set_model", "char_id", {"char_id": "", "model": "gpt-4.1"}),
    ("characters", "set_model", "char_id", {"char_id": "   ", "model": "gpt-4.1"}),
    ("characters", "set_model", "model", {"char_id": "c", "model": ""}),
    ("characters", "set_model", "model", {"char_id": "c", "model": None}),
    ("characters", "update", "update", {"char_id": "c"}),
    (
        "llm_models",
        "register",
        "model_group_name",
        {"model_group_name": "", "model_name": "m", "api_key": "k", "is_uncensored": False},
    ),
    (
        "llm_models",
        "register",
        "model_name",
        {"model_group_name": "g", "model_name": None, "api_key": "k", "is_uncensored": False},
    ),
    (
        "llm_models",
        "register",
        "api_key",
        {"model_group_name": "g", "model_name": "m", "api_key": "", "is_uncensored": False},
    ),
    (
        "llm_models",
        "register",
        "is_uncensored",
        {"model_group_name": "g", "model_name": "m", "api_key": "k", "is_uncensored": None},
    ),
    (
        "llm_models",
        "register",
        "base_url",
        {
            "model_group_name": "g",
            "model_name": "m",
            "api_key": "k",
            "is_uncensored": False,
            "base_url": "ftp://x",
        },
    ),
    (
        "llm_models",
        "register",
        "base_url",
        {
            "model_group_name": "g",
            "model_name": "m",
            "api_key": "k",
            "is_uncensored": False,
            "base_url": "not a url",
        },
    ),
    ("llm_models", "update", "update", {"model_group_name": "g"}),
    ("llm_models", "update", "base_url", {"model_group_name": "g", "base_url": "//no-scheme"}),
    ("llm_models", "deregister", "model_group_name", {"model_group_name": " "}),
]


@pytest.mark.parametrize(("resource", "method", "field", "kwargs"), BAD_CALLS)
async def test_validation_names_the_field_and_sends_nothing(
    fake: FakeConvai,
    client: ConvaiClient,
    resource: str,
    method: str,
    field: str,
    kwargs: dict[str, Any],
) -> None:
    with pytest.raises(ValidationError) as caught:
        await getattr(getattr(client, resource), method)(**kwargs)
    assert caught.value.field == field
    assert str(caught.value).startswith(f"{field}:")
    assert isinstance(caught.value, ValueError)
    assert fake.requests == []


def test_api_key_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONVAI_API_KEY", "env-key")
    ConvaiClient()
    monkeypatch.delenv("CONVAI_API_KEY")
    with pytest.raises(ValidationError, match="CONVAI_API_KEY"):
        ConvaiClient()


@pytest.mark.parametrize("key", ["", "   ", "abc\r\nX-Injected: 1", "abc\x00", " padded "])
def test_bad_api_keys_refused_at_construction(key: str) -> None:
    with pytest.raises(ValidationError) as caught:
        ConvaiClient(api_key=key)
    assert caught.value.field == "api_key"
    assert key.strip() == "" or key.strip() not in str(caught.value) or len(key.strip()) < 4


@pytest.mark.parametrize(
    ("option", "value"),
    [("timeout", 0), ("max_concurrency", 0), ("max_retries", -1), ("requests_per_second", -5.0)],
)
def test_bad_options_refused(option: str, value: Any) -> None:
    with pytest.raises(ValidationError) as caught:
        ConvaiClient(api_key="k", **{option: value})
    assert caught.value.field == option


# -- lifetime -------------------------------------------------------------------------------------


async def test_closed_client_refuses_calls_and_close_is_idempotent(
    fake: FakeConvai, make_client: ClientFactory
) -> None:
    client = make_client()
    async with client:
        await client.characters.get(fake.char_ids[0])
    assert client.closed
    await client.close()
    with pytest.raises(ClientClosedError, match="closed"):
        await client.characters.get(fake.char_ids[0])


async def test_caller_session_is_used_and_left_open(fake: FakeConvai) -> None:
    async with aiohttp.ClientSession() as session:
        async with ConvaiClient(
            api_key=fake.api_key, base_url=fake.url, session=session, retry=FAST_RETRY
        ) as client:
            await client.characters.get(fake.char_ids[0])
        assert not session.closed
        async with session.post(
            fake.url + "/character/list", headers={"CONVAI-API-KEY": fake.api_key}
        ) as resp:
            assert resp.status == 200


async def test_client_built_outside_a_loop_opens_session_lazily(fake: FakeConvai) -> None:
    client = ConvaiClient(api_key=fake.api_key, base_url=fake.url)  # no I/O yet
    assert fake.requests == []
    try:
        assert (await client.characters.get(fake.char_ids[0])).char_id == fake.char_ids[0]
    finally:
        await client.close()


async def test_keep_alive_reuses_one_connection_for_sequential_calls() -> None:
    async with scripted_server([(200, {}, b'{"STATUS": "SUCCESS"}')]) as (url, seen):
        async with ConvaiClient(api_key="k", base_url=url, retry=FAST_RETRY) as client:
            for _ in range(5):
                await client.characters.set_model("c", "m")
    assert len(seen) == 5
    assert len({request["peer"] for request in seen}) == 1


async def test_undocumented_success_is_never_reported_as_success(
    fake: FakeConvai, client: ConvaiClient
) -> None:
    fake.faults = Faults(success_body=b'{"STATUS": "FAILURE"}')
    with pytest.raises(UnexpectedResponseError, match="not the documented success shape"):
        await client.characters.set_model(fake.char_ids[0], "gpt-4.1")
    assert fake.request_counts["/character/update"] == 1


async def test_trace_configs_are_passed_through(
    fake: FakeConvai, make_client: ClientFactory
) -> None:
    started: list[str] = []

    async def on_start(session: Any, context: Any, params: aiohttp.TraceRequestStartParams) -> None:
        started.append(params.url.path)

    trace = aiohttp.TraceConfig()
    trace.on_request_start.append(on_start)
    client = make_client(trace_configs=[trace])
    await client.characters.list()
    assert started == ["/character/list"]


def test_repr_has_no_key() -> None:
    client = ConvaiClient(api_key=CANARY_KEY)
    assert CANARY_KEY not in repr(client)
    assert "api.convai.com" in repr(client)


async def test_deregister_refuses_a_model_characters_still_use(
    fake: FakeConvai, client: ConvaiClient
) -> None:
    await client.llm_models.register("in-use", "gpt-4o-mini", CANARY_LLM_KEY, False)
    for char_id in fake.char_ids[:3]:
        await client.characters.set_model(char_id, "in-use")
    with pytest.raises(ModelInUseError) as caught:
        await client.llm_models.deregister("in-use")
    assert (caught.value.model_group_name, caught.value.characters) == ("in-use", 3)
    assert "3 character(s)" in str(caught.value)
    assert fake.request_counts["/llm-models/deregister"] == 0
    assert "in-use" in fake.custom_models
    await client.llm_models.deregister("in-use", force=True)
    assert "in-use" not in fake.custom_models
