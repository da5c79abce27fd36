"""The per-request shortcuts mean exactly what the generic machinery means.

Compiled request encoders give the bytes of ``json.dumps(converter.unstructure(request))``
(compact separators), and known success bodies give what ``json.loads`` gives.
"""

from __future__ import annotations

import json
from typing import Any

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from convai_async import ConvaiError, ValidationError
from convai_async._wire.converter import (
    REQUEST_RENAMES,
    body_encoder,
    converter,
    encode_request,
)
from convai_async._wire.known_bodies import KNOWN_BODIES, known_payload
from convai_async._wire.protocol import ENDPOINTS, Endpoint, parse_response
from convai_async.models import (
    CharacterNameQuery,
    CharacterQuery,
    CharacterUpdate,
    ModelReference,
    ModelUpdate,
)


def generic(request: object) -> bytes:
    return json.dumps(converter.unstructure(request), separators=(",", ":")).encode()


texts = st.text(min_size=1, max_size=30)
optional_texts = st.none() | texts
temperatures = st.none() | st.floats(min_value=0.0, max_value=1.0) | st.sampled_from([0, 1])
optional_flags = st.none() | st.booleans()


def built(cls: type, **values: Any) -> object | None:
    try:
        return cls(**values)
    except ValidationError:
        return None  # invalid input never reaches an encoder


# Requests without a custom LLM key: a key is joined in by the transport, not encoded here.
requests = st.one_of(
    st.builds(
        lambda c, m, t: built(CharacterUpdate, char_id=c, model=m, temperature=t),
        texts,
        optional_texts,
        temperatures,
    ),
    st.builds(lambda c: built(CharacterQuery, char_id=c), texts),
    st.builds(lambda n: built(CharacterNameQuery, name=n), texts),
    st.builds(
        lambda g, d, u: built(ModelUpdate, model_group_name=g, display_name=d, is_uncensored=u),
        texts,
        optional_texts,
        optional_flags,
    ),
    st.builds(lambda g: built(ModelReference, model_group_name=g), texts),
)


@given(requests)
def test_compiled_encoders_give_the_converters_bytes(request: object | None) -> None:
    if request is not None:
        assert encode_request(request) == generic(request)


@pytest.mark.parametrize(
    ("request_", "expected"),
    [
        (
            CharacterUpdate("<your character id>", model="gpt-4o"),
            b'{"charID":"<your character id>","model_group_name":"gpt-4o"}',
        ),
        (
            CharacterUpdate("c\u00e9", temperature=0.7),
            b'{"charID":"c\\u00e9","temperature":0.7}',
        ),
        (CharacterQuery("abc"), b'{"charID":"abc"}'),
        (CharacterNameQuery("Bob"), b'{"charName":"Bob"}'),
        (ModelReference("my-group"), b'{"model_group_name":"my-group"}'),
    ],
)
def test_compiled_encoders_use_the_declared_wire_names(request_: object, expected: bytes) -> None:
    assert encode_request(request_) == expected


def test_the_hot_request_classes_have_compiled_encoders_with_the_converters_names() -> None:
    for cls in (CharacterUpdate, CharacterQuery, CharacterNameQuery, ModelReference):
        assert body_encoder(cls).__name__ == "encode", cls
    for cls, renames in REQUEST_RENAMES.items():
        assert set(renames) <= {f.name for f in attrs.fields(cls)}, cls
    sent = converter.unstructure(CharacterUpdate("x", model="m", temperature=0.5))
    assert list(sent) == ["charID", "model_group_name", "temperature"]


@attrs.frozen
class Unlisted:
    when: Any
    items: tuple[int, ...] = ()


def test_a_class_without_a_compiled_encoder_keeps_the_generic_path() -> None:
    request = Unlisted(when="now", items=(1, 2))
    assert encode_request(request) == generic(request) == b'{"when":"now","items":[1,2]}'


def test_fields_of_unusual_scalar_subclasses_are_written_as_json_writes_them() -> None:
    class Name(str):
        pass

    request = CharacterUpdate(Name("x"), model=Name("m"))
    assert encode_request(request) == generic(request)


@pytest.mark.parametrize("body", sorted(KNOWN_BODIES))
def test_known_bodies_decode_as_json_does(body: bytes) -> None:
    first = known_payload(body)
    assert first == json.loads(body)
    second = known_payload(body)
    assert second == first
    assert second is not first  # a caller may keep or change its payload


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b'{"STATUS": "FAILURE"}',
        b'{"STATUS": "SUCCESS", "extra": 1}',
        b'{"status": "success"}',
        b'{"STATUS": "SUCCESS"',
        b' {"STATUS": "SUCCESS"}',
    ],
)
def test_other_bodies_take_the_ordinary_parse(body: bytes) -> None:
    assert known_payload(body) is None


def outcome(endpoint: Endpoint, status: int, body: bytes) -> tuple[str, Any]:
    try:
        return "payload", parse_response(endpoint, status, {}, body)
    except ConvaiError as error:
        return type(error).__name__, str(error)


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=str)
@pytest.mark.parametrize("status", [200, 201, 400, 429, 500])
@pytest.mark.parametrize("body", sorted(KNOWN_BODIES))
def test_a_known_body_means_what_the_ordinary_parse_says(
    endpoint: Endpoint, status: int, body: bytes
) -> None:
    # A leading space keeps the same JSON out of the fast path.
    assert outcome(endpoint, status, body) == outcome(endpoint, status, b" " + body)
