"""``convai_async.testing``: a fake Convai server for tests, demos and benchmarks.

``FakeConvai`` implements the documented endpoints with their documented bodies and error
shapes (including the docs' invalid-JSON 401), records every request, and has fault knobs so you
can test your own code against latency, rate limits, quota exhaustion, 5xx, dropped connections,
hangs, truncated or slow bodies, redirects and undocumented success bodies::

    async with FakeConvai(characters=100, faults=Faults(latency=(0.03, 0.08))) as fake:
        async with ConvaiClient(api_key=fake.api_key, base_url=fake.url) as client:
            await client.characters.set_model(fake.char_ids[0], "gpt-4.1")
        fake.assert_updated(fake.char_ids[0], model="gpt-4.1")

Faults can be changed while the server runs (``fake.faults.server_error_ratio = 0.1``). Any
``ServerLimiter`` can stand in for the built-in token bucket (``Faults(limiter=...)``), with
another tenant's load through it (``Faults(tenant_rate=...)``). It listens on loopback only.
``python -m convai_async.testing --help`` serves it alone; the pytest plugin gives the
``fake_convai`` and ``convai_client`` fixtures.

The parts: ``state`` (the data), ``endpoints`` (the API's logic), ``faults`` (the knobs and
their decisions), ``answers`` (answers as data), ``checks`` (test assertions), all pure;
``server`` (aiohttp), ``__main__`` (the command line), ``pytest_plugin`` (the fixtures).
"""

from __future__ import annotations

from .faults import RETRY_AFTER_STYLES, Faults, RetryAfterStyle, ServerLimiter
from .server import DEFAULT_FAKE_API_KEY, FakeConvai, RecordedRequest
from .state import DEFAULT_MODEL_MIX

__all__ = [
    "DEFAULT_FAKE_API_KEY",
    "DEFAULT_MODEL_MIX",
    "RETRY_AFTER_STYLES",
    "FakeConvai",
    "Faults",
    "RecordedRequest",
    "RetryAfterStyle",
    "ServerLimiter",
]
