"""Property-based tests of the pure protocol layer: whatever a server sends, the result is a
parsed success or a ConvaiError, never another exception."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from convai_async import ConvaiError
from convai_async._wire.converter import structure_answer
from convai_async._wire.protocol import (
    ENDPOINTS,
    Endpoint,
    is_retryable,
    parse_response,
    retry_after_seconds,
)
from convai_async._wire.secrets import Redactor, Secret
from convai_async.models import (
    Character,
    CustomModel,
    DeregisteredModel,
    RegisteredModel,
    UpdatedModel,
)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=12,
)
interesting_keys = st.sampled_from(
    [
        "STATUS",
        "status",
        "message",
        "API_ERROR",
        "ERROR",
        "error",
        "detail",
        "transactionID",
        "characters",
        "models",
        "character_id",
        "personalised_prompt_config",
        "updated_fields",
    ]
)
shaped_objects = st.dictionaries(interesting_keys, json_values, max_size=6)
bodies = st.one_of(
    st.binary(max_size=200),
    json_values.map(lambda v: json.dumps(v).encode()),
    shaped_objects.map(lambda v: json.dumps(v).encode()),
    st.text(max_size=100).map(str.encode),
)
SEKRIT = Redactor()
SEKRIT.add(Secret("sekrit"))

headers = st.dictionaries(
    st.sampled_from(["content-type", "retry-after", "retry-after-ms"]),
    st.text(max_size=40),
    max_size=3,
)


@settings(max_examples=800, deadline=None)
@given(endpoint=st.sampled_from(ENDPOINTS), status=st.integers(100, 599), body=bodies, head=headers)
def test_any_answer_is_a_success_or_a_convai_error(
    endpoint: Endpoint, status: int, body: bytes, head: dict[str, str]
) -> None:
    outcome: Any
    try:
        outcome = parse_response(endpoint, status, head, body, redactor=SEKRIT)
    except ConvaiError as error:
        outcome = error
    if isinstance(outcome, ConvaiError):
        assert "sekrit" not in str(outcome)
        is_retryable(outcome)  # classification never raises either
    else:
        assert 200 <= status < 300
        assert endpoint.is_success(outcome)


@settings(max_examples=300, deadline=None)
@given(value=st.text(max_size=60))
def test_retry_after_never_raises_and_is_never_negative(value: str) -> None:
    seconds = retry_after_seconds({"retry-after": value})
    assert seconds is None or seconds >= 0


STRUCTURED = [Character, CustomModel, RegisteredModel, UpdatedModel, DeregisteredModel]


@settings(max_examples=500, deadline=None)
@given(payload=st.one_of(shaped_objects, json_values), target=st.sampled_from(STRUCTURED))
def test_structuring_any_payload_gives_a_model_or_a_convai_error(
    payload: Any, target: type
) -> None:
    try:
        result = structure_answer(payload, target, ENDPOINTS[0])
    except ConvaiError:
        return
    assert isinstance(result, target)
