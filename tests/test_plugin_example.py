"""My code's tests, against convai-async's fake Convai server: no network, no real key."""

import pytest

from convai_async import AuthenticationError, ConvaiClient
from convai_async.testing import FakeConvai, Faults

pytestmark = pytest.mark.asyncio  # needed in pytest-asyncio's strict mode, harmless in auto


async def move_to_gpt41(client: ConvaiClient, char_ids: list[str]) -> None:
    """The code under test (in your project, import it instead)."""
    for char_id in char_ids:
        await client.characters.set_model(char_id, "gpt-4.1")


@pytest.mark.convai(characters=5)
async def test_moves_only_the_characters_asked(
    fake_convai: FakeConvai, convai_client: ConvaiClient
) -> None:
    first, second, *others = fake_convai.char_ids
    await move_to_gpt41(convai_client, [first, second])
    fake_convai.assert_updated(first, model="gpt-4.1")
    fake_convai.assert_updated(second, model="gpt-4.1")
    for char_id in others:
        fake_convai.assert_not_updated(char_id)
    assert fake_convai.updates_for(first) == [{"charID": first, "model_group_name": "gpt-4.1"}]
    assert len(fake_convai.requests_to("/character/update")) == 2


@pytest.mark.convai(characters=3, faults=Faults(server_error_ratio=1.0, limit=2))
async def test_rides_out_two_server_errors(
    fake_convai: FakeConvai, convai_client: ConvaiClient
) -> None:
    char_id = fake_convai.char_ids[0]
    await move_to_gpt41(convai_client, [char_id])
    fake_convai.assert_updated(char_id, model="gpt-4.1")
    answered = [r.status for r in fake_convai.requests_to("/character/update")]
    assert answered == [503, 503, 200]


async def test_only_what_follows_a_reset_counts(
    fake_convai: FakeConvai, convai_client: ConvaiClient
) -> None:
    char_id = fake_convai.char_ids[0]
    await convai_client.characters.set_temperature(char_id, 0.2)  # the arrangement
    fake_convai.reset_requests()
    await move_to_gpt41(convai_client, [char_id])
    fake_convai.assert_updated(char_id, model="gpt-4.1", temperature=0.2)
    assert fake_convai.updates_for(char_id) == [{"charID": char_id, "model_group_name": "gpt-4.1"}]


async def test_a_revoked_key_is_refused(
    fake_convai: FakeConvai, convai_client: ConvaiClient
) -> None:
    fake_convai.revoke_key()
    with pytest.raises(AuthenticationError):
        await move_to_gpt41(convai_client, fake_convai.char_ids[:1])
    fake_convai.assert_not_updated(fake_convai.char_ids[0])
