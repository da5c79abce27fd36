"""The pytest plugin, run as users run it: pytester sessions over small test files."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

HERE = Path(__file__).parent
INI = "[pytest]\nasyncio_default_fixture_loop_scope = function\n"  # as users' configs set it
EXAMPLE = HERE / "test_plugin_example.py"  # the README's "Testing your code" file, verbatim
README = HERE.parent / "README.md"


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    """An in-process pytest session, without hypothesis's plugin (seconds of start-up)."""
    return pytester.runpytest("-p", "no:hypothesispytest", *args)


@pytest.fixture(autouse=True)
def user_config(pytester: pytest.Pytester) -> None:
    pytester.makeini(INI)


@pytest.mark.parametrize("mode", ["strict", "auto"])
def test_readme_example_passes_in_both_asyncio_modes(pytester: pytest.Pytester, mode: str) -> None:
    pytester.makepyfile(test_example=EXAMPLE.read_text())
    result = run(pytester, f"--asyncio-mode={mode}", "-W", "error")
    result.assert_outcomes(passed=4)


def test_readme_shows_the_tested_example() -> None:
    """Once the README carries the example, it is the tested file, byte for byte."""
    example = EXAMPLE.read_text()
    first_line = example.splitlines()[0]
    readme = README.read_text()
    if first_line not in readme:
        pytest.skip("the README does not show the example yet")
    blocks = re.findall(r"```python\n(.*?)```", readme, flags=re.DOTALL)
    assert example in blocks


def test_marker_configures_the_fake_and_each_test_gets_its_own(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_marker="""
        import pytest
        from convai_async.testing import Faults

        class Counting:
            def __init__(self):
                self.calls = 0

            def admit(self, now):
                self.calls += 1
                return None

            def done(self, now):
                pass

        pytestmark = [
            pytest.mark.asyncio,
            pytest.mark.convai(
                characters=7, api_key="k-1", faults=Faults(burst=3, limiter=Counting())
            ),
        ]

        async def test_first(fake_convai, convai_client):
            assert len(fake_convai.char_ids) == 7
            assert fake_convai.api_key == "k-1"
            assert fake_convai.faults.burst == 3
            await convai_client.characters.list()
            assert fake_convai.faults.limiter.calls == 1
            fake_convai.faults.burst = 99  # must not leak into the next test

        async def test_second(fake_convai, convai_client):
            assert fake_convai.faults.burst == 3
            await convai_client.characters.list()
            assert fake_convai.faults.limiter.calls == 1

        @pytest.mark.convai(characters=2, seed=5)
        async def test_closest_marker_wins(fake_convai):
            assert len(fake_convai.char_ids) == 2

        async def test_client_is_bound_and_closed_after(fake_convai, convai_client):
            character = await convai_client.characters.get(fake_convai.char_ids[0])
            assert character.char_id == fake_convai.char_ids[0]
            assert fake_convai.requests[-1].headers["CONVAI-API-KEY"] == "k-1"
        """
    )
    result = run(pytester, "--asyncio-mode=strict", "-W", "error")
    result.assert_outcomes(passed=4)


def test_without_a_marker_the_fake_has_its_defaults(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_default="""
        from convai_async.testing import DEFAULT_FAKE_API_KEY

        async def test_default(fake_convai):
            assert len(fake_convai.char_ids) == 100
            assert fake_convai.api_key == DEFAULT_FAKE_API_KEY
        """
    )
    result = run(pytester, "--asyncio-mode=auto", "-W", "error")
    result.assert_outcomes(passed=1)


def test_plugins_named_by_hand_when_autoload_is_off(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    pytester.makepyfile(test_example=EXAMPLE.read_text())
    plugins = ["-p", "convai_async", "-p", "pytest_asyncio.plugin"]
    result = run(pytester, *plugins, "--asyncio-mode=strict")
    result.assert_outcomes(passed=4)


def test_helpers_fail_with_the_actual_values(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_failing="""
        import pytest

        pytestmark = pytest.mark.convai(characters=2)

        async def test_expects_an_update_that_never_came(fake_convai):
            fake_convai.assert_updated(fake_convai.char_ids[0], model="gpt-4.1")

        async def test_expects_no_update_but_one_came(fake_convai, convai_client):
            await convai_client.characters.set_temperature(fake_convai.char_ids[1], 0.5)
            fake_convai.assert_not_updated(fake_convai.char_ids[1])
        """
    )
    result = run(pytester, "--asyncio-mode=auto")
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines(
        [
            "*AssertionError: character *: no update was applied to it; "
            "model is '*', expected 'gpt-4.1' (now model='*'*",
            "*AssertionError: character * was updated 1 time(s): *'temperature': 0.5}*",
        ]
    )


def test_installed_plugin_is_loaded_by_itself_and_registers_the_marker(
    pytester: pytest.Pytester,
) -> None:
    result = run(pytester, "--markers")  # no -p: the pytest11 entry point loads it
    result.stdout.fnmatch_lines(["@pytest.mark.convai(**options): configure the fake_convai*"])


def test_plugin_has_no_effect_on_tests_that_do_not_use_it(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\n")  # pytest-asyncio's options would be unknown without it
    pytester.makepyfile(test_plain="def test_plain():\n    assert 1 + 1 == 2\n")
    result = run(pytester, "-p", "no:asyncio", "-W", "error")
    result.assert_outcomes(passed=1)


def test_importing_the_plugin_loads_no_async_plugin_and_starts_nothing() -> None:
    code = (
        "import asyncio, sys, threading\n"
        "import convai_async.testing.pytest_plugin\n"
        "print('pytest_asyncio' in sys.modules, threading.active_count())\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.split() == ["False", "1"]
