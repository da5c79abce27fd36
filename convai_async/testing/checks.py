"""The assertions tests make on a ``FakeState``, with failure messages showing actual values."""

from __future__ import annotations

from .state import FakeState

__all__ = ["assert_not_updated", "assert_updated"]


def assert_updated(
    state: FakeState, char_id: str, *, model: str | None = None, temperature: float | None = None
) -> None:
    """At least one update was applied to this character, and it now has ``model`` and
    ``temperature`` (each checked only when given)."""
    _known(state, char_id)
    actual_model = state.model_of(char_id)
    actual_temperature = state.temperature_of(char_id)
    applied = state.update_log.get(char_id, [])
    problems = []
    if not applied:
        problems.append("no update was applied to it")
    if model is not None and actual_model != model:
        problems.append(f"model is {actual_model!r}, expected {model!r}")
    if temperature is not None and actual_temperature != temperature:
        problems.append(f"temperature is {actual_temperature!r}, expected {temperature!r}")
    if problems:
        raise AssertionError(
            f"character {char_id}: {'; '.join(problems)} "
            f"(now model={actual_model!r}, temperature={actual_temperature!r}; "
            f"updates applied: {applied})"
        )


def assert_not_updated(state: FakeState, char_id: str) -> None:
    """No update was applied to this character (since the log was last cleared)."""
    _known(state, char_id)
    applied = state.update_log.get(char_id, [])
    if applied:
        raise AssertionError(
            f"character {char_id} was updated {len(applied)} time(s): {applied} "
            f"(now model={state.model_of(char_id)!r}, "
            f"temperature={state.temperature_of(char_id)!r})"
        )


def _known(state: FakeState, char_id: str) -> None:
    if char_id not in state.characters:
        raise AssertionError(f"FakeConvai has no character {char_id!r}")
