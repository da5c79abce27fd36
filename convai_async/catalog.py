"""The built-in model codes documented for ``/character/update``.

The table is informative: ``set_model`` accepts any code, because registered custom LLM group
names are valid too (use ``ConvaiClient.is_known_model`` for a check that includes them).
"""

from __future__ import annotations

from collections.abc import Iterator

from attrs import frozen

__all__ = ["BUILTIN_MODELS", "BuiltinModel", "is_builtin", "models"]


@frozen
class BuiltinModel:
    code: str
    display_name: str
    provider: str
    uncensored: bool
    flagship: bool


BUILTIN_MODELS: tuple[BuiltinModel, ...] = (
    BuiltinModel("gpt-4.1", "GPT-4.1", "OpenAI", uncensored=False, flagship=True),
    BuiltinModel("gpt-4.1-mini", "GPT-4.1-mini", "OpenAI", uncensored=False, flagship=False),
    BuiltinModel("gpt-4.1-nano", "GPT-4.1-nano", "OpenAI", uncensored=False, flagship=False),
    BuiltinModel("gpt-4o", "GPT-4o", "OpenAI", uncensored=False, flagship=True),
    BuiltinModel("gpt-4o-mini", "GPT-4o-mini", "OpenAI", uncensored=False, flagship=False),
    BuiltinModel(
        "claude-opus-4.1", "Claude-Opus-4.1", "Anthropic", uncensored=False, flagship=True
    ),
    BuiltinModel("claude-opus-4", "Claude-Opus-4", "Anthropic", uncensored=False, flagship=True),
    BuiltinModel(
        "claude-4-sonnet", "Claude-4-Sonnet", "Anthropic", uncensored=False, flagship=False
    ),
    BuiltinModel(
        "claude-3-7-sonnet", "Claude-3-7-Sonnet", "Anthropic", uncensored=False, flagship=False
    ),
    BuiltinModel(
        "gemini-2.5-flash", "Gemini-2.5-Flash", "Google", uncensored=False, flagship=False
    ),
    BuiltinModel(
        "gemini-2.5-flash-lite", "Gemini-2.5-Flash-Lite", "Google", uncensored=False, flagship=False
    ),
    BuiltinModel(
        "gemini-2.0-flash", "Gemini-2.0-Flash", "Google", uncensored=False, flagship=False
    ),
    BuiltinModel("gemma-3n-e4b", "Gemma-3n-e4b", "Google", uncensored=False, flagship=False),
    BuiltinModel("gemma-3n-e2b", "Gemma-3n-e2b", "Google", uncensored=False, flagship=False),
    BuiltinModel("llama-4-maverick", "LLama-4-Maverick", "Llama", uncensored=False, flagship=True),
    BuiltinModel("llama-4-scout", "LLama-4-Scout", "Llama", uncensored=False, flagship=False),
    BuiltinModel("llama-3-70B", "LLama-3.3-70B", "Llama", uncensored=True, flagship=False),
)

_CODES = frozenset(model.code for model in BUILTIN_MODELS)


def is_builtin(code: str) -> bool:
    return code in _CODES


def models(
    *, provider: str | None = None, flagship: bool | None = None, uncensored: bool | None = None
) -> Iterator[BuiltinModel]:
    """The built-in models matching every filter given (provider is case-insensitive)."""
    for model in BUILTIN_MODELS:
        if provider is not None and model.provider.lower() != provider.lower():
            continue
        if flagship is not None and model.flagship != flagship:
            continue
        if uncensored is not None and model.uncensored != uncensored:
            continue
        yield model
