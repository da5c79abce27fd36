"""The endpoints as methods: ``client.characters`` and ``client.llm_models``.

Each method builds a validated request object, hands it to ``Session.call`` and turns the answer
into a model through the converter. Nothing here does I/O of its own. A custom LLM key becomes a
``Secret`` first thing, and the bare argument is dropped, so no local on the call path holds it.
"""

from __future__ import annotations

import logging

from . import _validation as check
from ._engine.session import CallTrace, Session
from ._wire import protocol
from ._wire.converter import structure_answer
from .errors import (
    BadRequestError,
    ConflictError,
    ModelInUseError,
    NotFoundError,
    ValidationError,
)
from .models import (
    Character,
    CharacterNameQuery,
    CharacterQuery,
    CharacterUpdate,
    CustomModel,
    DeregisteredModel,
    ModelReference,
    ModelRegistration,
    ModelUpdate,
    RegisteredModel,
    UpdatedModel,
)

__all__ = ["Characters", "LlmModels"]

logger = logging.getLogger("convai_async")


class Characters:
    """``client.characters``: the character endpoints."""

    def __init__(self, session: Session) -> None:
        self._session = session

    async def update(
        self, char_id: str, model: str | None = None, temperature: float | None = None
    ) -> None:
        """Set the model, the temperature, or both, in one request (only the fields given)."""
        await self.apply(CharacterUpdate(char_id, model=model, temperature=temperature))

    async def set_model(self, char_id: str, model: str) -> None:
        """Set a character's LLM. Any code is accepted: built-ins and custom group names."""
        if model is None:
            raise ValidationError("model", "must not be empty")
        await self.apply(CharacterUpdate(char_id, model=model))

    async def set_temperature(self, char_id: str, temperature: float) -> None:
        """Set a character's temperature, a real number in [0, 1]."""
        if temperature is None:
            raise ValidationError("temperature", "must be a real number in [0, 1], got None")
        await self.apply(CharacterUpdate(char_id, temperature=temperature))

    async def apply(self, update: CharacterUpdate) -> None:
        """Send one CharacterUpdate (what ``update``, ``set_model`` and ``set_temperature`` do)."""
        await self._session.call(protocol.CHARACTER_UPDATE, update)

    async def get(self, char_id: str) -> Character:
        """One character by ID; ``NotFoundError`` when there is none."""
        return await self._get(CharacterQuery(char_id))

    async def get_by_name(self, name: str) -> Character:
        """The character with this name (``charName``), among yours and the public ones;
        ``NotFoundError`` when there is none."""
        return await self._get(CharacterNameQuery(name))

    async def _get(self, query: CharacterQuery | CharacterNameQuery) -> Character:
        try:
            payload = await self._session.call(protocol.CHARACTER_GET, query)
        except BadRequestError as error:
            # The docs' answer for a character that cannot be fetched is a 400 ("one or more
            # database calls failed"); the request itself was validated before it was sent.
            raise NotFoundError(
                error.message,
                status=error.status,
                endpoint=error.endpoint,
                transaction_id=error.transaction_id,
            ) from None
        return structure_answer(payload, Character, protocol.CHARACTER_GET)

    async def list(self) -> list[Character]:
        """Every character of the account, with its current model and temperature."""
        payload = await self._session.call(protocol.CHARACTER_LIST, None)
        return structure_answer(payload["characters"], list[Character], protocol.CHARACTER_LIST)


class LlmModels:
    """``client.llm_models``: the custom LLM endpoints (Enterprise plan)."""

    def __init__(self, session: Session, characters: Characters) -> None:
        self._session = session
        self._characters = characters

    async def register(
        self,
        model_group_name: str,
        model_name: str,
        api_key: str,
        is_uncensored: bool,
        display_name: str | None = None,
        base_url: str | None = None,
    ) -> RegisteredModel:
        """Register a custom LLM. The endpoint is not idempotent: when an earlier attempt went
        unanswered and a retry answers 409, the registered model is compared with what was sent;
        a match is a success (``reconciled=True``), anything else raises ConflictError."""
        key = check.secret("api_key", api_key)
        del api_key
        registration = ModelRegistration(
            model_group_name=model_group_name,
            model_name=model_name,
            api_key=key,
            is_uncensored=is_uncensored,
            display_name=display_name,
            base_url=base_url,
        )
        self._session.register_secret(registration.api_key)
        trace = CallTrace()
        try:
            payload = await self._session.call(protocol.MODEL_REGISTER, registration, trace=trace)
        except ConflictError:
            if not trace.unanswered or not await self._registered_as(registration):
                raise
            logger.info("register %s: lost answer reconciled by listing", model_group_name)
            return RegisteredModel(
                model_group_name=registration.model_group_name,
                model_name=registration.model_name,
                display_name=registration.display_name,
                reconciled=True,
            )
        return structure_answer(payload, RegisteredModel, protocol.MODEL_REGISTER)

    async def _registered_as(self, registration: ModelRegistration) -> bool:
        for model in await self.list():
            if model.model_group_name == registration.model_group_name:
                wanted: dict[str, object] = {
                    "model_name": registration.model_name,
                    "is_uncensored": registration.is_uncensored,
                }
                if registration.display_name is not None:
                    wanted["display_name"] = registration.display_name
                if registration.base_url is not None:
                    wanted["base_url"] = registration.base_url
                return all(getattr(model, key) == value for key, value in wanted.items())
        return False

    async def update(
        self,
        model_group_name: str,
        display_name: str | None = None,
        base_url: str | None = None,
        api_key: str | None = None,
        is_uncensored: bool | None = None,
    ) -> UpdatedModel:
        """Change a custom LLM's display name, base URL, key or censorship flag."""
        key = check.optional_secret("api_key", api_key)
        del api_key
        change = ModelUpdate(
            model_group_name=model_group_name,
            display_name=display_name,
            base_url=base_url,
            api_key=key,
            is_uncensored=is_uncensored,
        )
        if change.api_key is not None:
            self._session.register_secret(change.api_key)
        payload = await self._session.call(protocol.MODEL_UPDATE, change)
        return structure_answer(payload, UpdatedModel, protocol.MODEL_UPDATE)

    async def deregister(self, model_group_name: str, *, force: bool = False) -> DeregisteredModel:
        """Remove a custom LLM.

        Characters still using it stop working (the docs warn), so the fleet is listed first and
        a model in use is refused with ``ModelInUseError`` unless ``force=True``. A 404 after an
        earlier attempt went unanswered means that attempt did the work: that is reported as
        success (``reconciled=True``)."""
        reference = ModelReference(model_group_name)
        if not force:
            users = sum(1 for c in await self._characters.list() if c.model == model_group_name)
            if users:
                raise ModelInUseError(model_group_name, users)
        trace = CallTrace()
        try:
            payload = await self._session.call(protocol.MODEL_DEREGISTER, reference, trace=trace)
        except NotFoundError:
            if not trace.unanswered:
                raise
            if any(m.model_group_name == model_group_name for m in await self.list()):
                raise
            return DeregisteredModel(reconciled=True)
        return structure_answer(payload, DeregisteredModel, protocol.MODEL_DEREGISTER)

    async def list(self) -> list[CustomModel]:
        """The registered custom LLMs."""
        payload = await self._session.call(protocol.MODEL_LIST, None)
        return structure_answer(payload["models"], list[CustomModel], protocol.MODEL_LIST)
