"""The pytest plugin: ``fake_convai`` and ``convai_client`` fixtures for testing your own code.

Installed with the package through the ``pytest11`` entry point, so pytest loads it by itself;
it only registers the ``convai`` marker and two fixtures, and nothing runs unless a test asks
for one. Configure the fake per test, class or module::

    @pytest.mark.convai(characters=20, faults=Faults(rate_limit=50))
    async def test_my_migration(fake_convai, convai_client):
        await my_code(convai_client)
        fake_convai.assert_updated(fake_convai.char_ids[0], model="gpt-4.1")

The marker's arguments are ``FakeConvai``'s (``characters``, ``faults``, ``api_key``, ``seed``,
``strict_models``, ...); the closest marker wins. Each test gets its own server and a deep copy
of the marker's ``Faults`` (its ``limiter`` included). The fixtures are async: they need
pytest-asyncio, in its auto or strict mode (they are declared with ``pytest_asyncio.fixture``
when that plugin is active).
"""

from __future__ import annotations

import copy
import importlib
import types
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from .. import ConvaiClient, RetryPolicy
from .faults import Faults
from .server import FakeConvai

__all__ = ["MARKER", "pytest_configure"]

MARKER = "convai"
_MARKER_HELP = (
    f"{MARKER}(**options): configure the fake_convai fixture; the options are FakeConvai's "
    "(characters=100, faults=Faults(...), api_key=..., seed=0, strict_models=False, ...)"
)
# Retry waits off for this client only, so a test of retried calls takes no time; a Retry-After
# is still honoured. (convai_async.set_testing(True) does the same process-wide; a fixture should
# not change what the rest of the user's suite sees.)
_NO_RETRY_WAITS = RetryPolicy(initial_wait=0.0, multiplier=1.0, max_wait=0.0)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", _MARKER_HELP)
    config.pluginmanager.register(_fixtures(_async_fixture(config)), "convai_async_fixtures")


def _async_fixture(config: pytest.Config) -> Callable[..., Any]:
    """``pytest_asyncio.fixture`` when pytest-asyncio is active (so its strict mode accepts
    our fixtures), else ``pytest.fixture``. Imported here, not at the top: pytest-asyncio is
    optional, and merely installing this package must not load it. Found by module, not by
    name: ``-p pytest_asyncio.plugin`` registers it under that name instead of "asyncio"."""
    active = config.pluginmanager.get_plugins()
    if any(getattr(plugin, "__name__", "") == "pytest_asyncio.plugin" for plugin in active):
        decorator: Callable[..., Any] = importlib.import_module("pytest_asyncio").fixture
        return decorator
    return pytest.fixture


def _fixtures(async_fixture: Callable[..., Any]) -> types.ModuleType:
    """A plugin holding the two fixtures, declared with ``async_fixture``."""
    holder = types.ModuleType("convai_async_fixtures")
    holder.fake_convai = async_fixture(fake_convai)  # type: ignore[attr-defined]
    holder.convai_client = async_fixture(convai_client)  # type: ignore[attr-defined]
    return holder


async def fake_convai(request: pytest.FixtureRequest) -> AsyncIterator[FakeConvai]:
    """A running ``FakeConvai`` on loopback, configured by the closest ``convai`` marker."""
    marker = request.node.get_closest_marker(MARKER)
    args: tuple[Any, ...] = marker.args if marker is not None else ()
    options: dict[str, Any] = dict(marker.kwargs) if marker is not None else {}
    if isinstance(options.get("faults"), Faults):
        # A module's or class's marker is shared: each test gets its own knobs and limiter state.
        options["faults"] = copy.deepcopy(options["faults"])
    async with FakeConvai(*args, **options) as fake:
        yield fake


async def convai_client(fake_convai: FakeConvai) -> AsyncIterator[ConvaiClient]:
    """A ``ConvaiClient`` bound to ``fake_convai``, with retry waits off; closed afterwards."""
    client = ConvaiClient(
        api_key=fake_convai.api_key,
        base_url=fake_convai.url,
        retry=_NO_RETRY_WAITS,
    )
    try:
        yield client
    finally:
        await client.close()
