"""Shared fixtures: a FakeConvai on loopback and clients with fast retry waits."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from convai_async import ConvaiClient, RetryPolicy, set_testing
from convai_async.testing import FakeConvai

from .docs import doc_example

FAST_RETRY = RetryPolicy(initial_wait=0.001, multiplier=2.0, max_wait=0.01)
CANARY_KEY = "canary-convai-key-7f3a9c"
CANARY_LLM_KEY = "sk-canary-llm-key-41d2e8"


@pytest.fixture(autouse=True, scope="session")
def zero_retry_waits() -> None:
    """Retry waits are zero in tests (the switch users get too); Retry-After is still honoured."""
    set_testing(True)


def sample_bytes(name: str) -> bytes:
    """A documentation example by name (``character_get_200.json``): see tests/docs.py."""
    return doc_example(name.partition(".")[0])


def sample_json(name: str) -> Any:
    return json.loads(sample_bytes(name))


def character_list_sample() -> dict[str, Any]:
    """The docs' /character/list example, verbatim but for its closing ", .... ]" ellipsis."""
    text = sample_bytes("character_list_200").decode()
    head, _, _ = text.rpartition("}, ....")
    return json.loads(head + "}]}")


@pytest.fixture
async def fake() -> AsyncIterator[FakeConvai]:
    async with FakeConvai(characters=50, api_key=CANARY_KEY) as server:
        yield server


ClientFactory = Callable[..., ConvaiClient]


@pytest.fixture
async def make_client(fake: FakeConvai) -> AsyncIterator[ClientFactory]:
    made: list[ConvaiClient] = []

    def make(**options: Any) -> ConvaiClient:
        options.setdefault("api_key", fake.api_key)
        options.setdefault("base_url", fake.url)
        options.setdefault("retry", FAST_RETRY)
        client = ConvaiClient(**options)
        made.append(client)
        return client

    yield make
    for client in made:
        await client.close()


@pytest.fixture
async def client(make_client: ClientFactory) -> ConvaiClient:
    return make_client()
