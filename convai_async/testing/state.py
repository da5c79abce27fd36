"""The fake's data: its characters, custom LLMs and the updates it applied, with seeding.

Plain Python: the endpoint logic reads and changes a ``FakeState``; the server only holds one.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timezone
from typing import Any

__all__ = ["DEFAULT_MODEL_MIX", "FakeState", "utc_timestamp"]

DEFAULT_MODEL_MIX: Mapping[str, float] = {
    "gpt-4o": 0.6,
    "gpt-4o-mini": 0.2,
    "claude-4-sonnet": 0.1,
    "gemini-2.5-flash": 0.1,
}
_NAMES = ("Rafael", "Steven", "Aiko", "Bram", "Chidi", "Dana", "Esme", "Farid", "Greta", "Hugo")


def utc_timestamp() -> str:
    """Now, as the custom LLM endpoints write it (``2025-01-01T12:00:00.000Z``)."""
    stamp = datetime.now(timezone.utc).isoformat(timespec="milliseconds")
    return stamp.replace("+00:00", "Z")


class FakeState:
    """Characters by id, custom LLMs by group name, and the update bodies applied to each
    character. ``characters`` is either how many to seed (deterministic for a given ``seed``,
    models drawn from ``model_mix``) or the character objects themselves."""

    def __init__(
        self,
        characters: int | Iterable[Mapping[str, Any]] = 100,
        *,
        seed: int = 0,
        model_mix: Mapping[str, float] = DEFAULT_MODEL_MIX,
        strict_models: bool = False,
        clock: Callable[[], str] = utc_timestamp,
    ) -> None:
        self.strict_models = strict_models
        self.clock = clock
        self.characters: dict[str, dict[str, Any]] = {}
        self.custom_models: dict[str, dict[str, Any]] = {}
        self.applied_updates = 0
        self.update_log: dict[str, list[dict[str, Any]]] = {}
        self.random = random.Random(seed)
        if isinstance(characters, int):
            for index in range(characters):
                self.add_character(**self._seeded_character(index, model_mix))
        else:
            for character in characters:
                self.characters[character["character_id"]] = dict(character)

    def add_character(
        self, char_id: str, name: str, model: str, temperature: float, **extra: Any
    ) -> dict[str, Any]:
        """Add (or replace) a character with the fields ``/character/list`` shows."""
        character = {
            "character_name": name,
            "collection_name": "convai_default_collection",
            "user_id": "FAKE_USER_ID",
            "character_id": char_id,
            "model_type": "RPM-3D",
            "listing": "unlisted",
            "voice_type": "SOME_VOICE",
            "timestamp": "2024-12-19T10:30:42",
            "backstory": f"{name} is a test character.",
            "character_actions": [],
            "language_codes": ["en-US"],
            "personalised_prompt_config": {
                "MODEL": model,
                "PROMPT": "",
                "VERBOSITY": 2,
                "TEMPERATURE": temperature,
                "MODERATION_ENABLED": True,
            },
            "memory_settings": {"enabled": False},
            **extra,
        }
        self.characters[char_id] = character
        return character

    def _seeded_character(self, index: int, model_mix: Mapping[str, float]) -> dict[str, Any]:
        rng = self.random
        model = rng.choices(list(model_mix), weights=list(model_mix.values()))[0]
        return {
            "char_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            "name": f"{_NAMES[index % len(_NAMES)]} {index}",
            "model": model,
            "temperature": round(rng.random(), 2),
        }

    def model_of(self, char_id: str) -> str:
        return str(self.characters[char_id]["personalised_prompt_config"]["MODEL"])

    def temperature_of(self, char_id: str) -> float:
        return float(self.characters[char_id]["personalised_prompt_config"]["TEMPERATURE"])

    def character_named(self, name: str) -> dict[str, Any] | None:
        for character in self.characters.values():
            if character.get("character_name") == name:
                return character
        return None

    def apply_update(self, char_id: str, body: Mapping[str, Any]) -> None:
        """Apply a validated ``/character/update`` body and log it for ``updates_for``."""
        config = self.characters[char_id].setdefault("personalised_prompt_config", {})
        if body.get("model_group_name") is not None:
            config["MODEL"] = body["model_group_name"]
        if body.get("temperature") is not None:
            config["TEMPERATURE"] = body["temperature"]
        self.applied_updates += 1
        self.update_log.setdefault(char_id, []).append(dict(body))

    def model_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for character in self.characters.values():
            model = str(character.get("personalised_prompt_config", {}).get("MODEL"))
            counts[model] = counts.get(model, 0) + 1
        return counts
