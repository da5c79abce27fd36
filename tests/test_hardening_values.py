"""Errors are ordinary values (pickle, deepcopy, process pools); numbers are checked, never crash."""

from __future__ import annotations

import copy
import math
import multiprocessing
import numbers
import pickle
from concurrent.futures import ProcessPoolExecutor
from decimal import Decimal
from fractions import Fraction
from typing import Any

import pytest

from convai_async import CharacterUpdate, ConvaiClient, RetryPolicy, ValidationError, errors

# -- errors travel -------------------------------------------------------------------------------


def sample_error(name: str) -> errors.ConvaiError:
    """One instance of ``errors.<name>`` with every attribute set to a telling value."""
    cls = getattr(errors, name)
    if issubclass(cls, errors.RateLimitPatienceError):
        return cls(312.5, endpoint="/character/update")
    if issubclass(cls, errors.RateLimitError):
        return cls("slow down", status=429, endpoint="/x", transaction_id="t-1", retry_after=2.5)
    if issubclass(cls, errors.APIStatusError):
        return cls("bad", status=418, endpoint="/character/get", transaction_id="t-2")
    if issubclass(cls, errors.TransportError):
        return cls("timed out", endpoint="/character/update", request_sent=True)
    if issubclass(cls, errors.ValidationError):
        return cls("temperature", "must be in [0, 1], got 2")
    if issubclass(cls, errors.ModelInUseError):
        return cls("my-group", 3)
    if issubclass(cls, errors.ClientClosedError):
        return cls("closed", request_sent=True)
    if issubclass(cls, errors.JournalError):
        return cls("/tmp/run.jsonl", "write failed: No space left on device")
    own_init = any("__init__" in vars(k) for k in cls.__mro__ if k.__module__ == errors.__name__)
    assert not own_init, f"add a sample for {name}'s constructor"
    return cls("something")


ERROR_NAMES = [name for name in errors.__all__ if isinstance(getattr(errors, name), type)]


def same(copied: BaseException, original: BaseException) -> None:
    assert type(copied) is type(original)
    assert copied is not original
    assert str(copied) == str(original)
    assert copied.args == original.args
    assert vars(copied) == vars(original)


def test_every_error_class_is_sampled() -> None:
    assert len(ERROR_NAMES) == len(errors.__all__) >= 18
    for name in ERROR_NAMES:
        assert isinstance(sample_error(name), errors.ConvaiError)


@pytest.mark.parametrize("name", ERROR_NAMES)
def test_every_error_pickles_and_deep_copies_with_its_attributes(name: str) -> None:
    error = sample_error(name)
    error.add_note("seen in a test")
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
        same(pickle.loads(pickle.dumps(error, protocol)), error)
    same(copy.deepcopy(error), error)
    same(copy.copy(error), error)
    assert getattr(pickle.loads(pickle.dumps(error)), "__notes__", None) == ["seen in a test"]


def raise_sample(name: str) -> None:
    raise sample_error(name)


def test_errors_raised_in_a_process_pool_arrive_intact() -> None:
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        futures = {name: pool.submit(raise_sample, name) for name in ERROR_NAMES}
        for name, future in futures.items():
            error = future.exception(timeout=120)  # hang guard only
            assert error is not None
            same(error, sample_error(name))


# -- numbers -------------------------------------------------------------------------------------


class Tenths:
    """A third-party real number type, registered as numpy registers its scalars."""

    def __init__(self, tenths: int) -> None:
        self.tenths = tenths

    def __float__(self) -> float:
        return self.tenths / 10

    def __repr__(self) -> str:
        return f"Tenths({self.tenths})"


numbers.Real.register(Tenths)


HUGE: list[Any] = [10**400, -(10**400), Fraction(10**400), Decimal("1e400"), 10**5000]
NOT_NUMBERS: list[Any] = [True, False, "0.5", None, math.nan, math.inf, -math.inf, Decimal("NaN")]
NOT_NUMBERS += [Decimal("sNaN"), 1j, [0.5], b"1"]

CLIENT_SECONDS = ["timeout", "connect_timeout", "deadline", "max_retry_after"]
CLIENT_SECONDS += ["rate_limit_patience"]
CLIENT_WHOLES = ["max_retries", "max_concurrency", "burst", "max_response_bytes"]
CLIENT_WHOLES += ["max_list_response_bytes"]


def shown(value: Any) -> str:
    try:
        text = repr(value)
    except ValueError:
        return f"{type(value).__name__}-huge"
    return text if len(text) < 30 else f"{type(value).__name__}-{len(text)}"


def client_with(**option: Any) -> ConvaiClient:
    return ConvaiClient(api_key="k", **option)


@pytest.mark.parametrize("option", [*CLIENT_SECONDS, "requests_per_second"])
@pytest.mark.parametrize("value", HUGE + NOT_NUMBERS + [0, -1, Decimal("-0.5")], ids=shown)
def test_bad_client_numbers_are_validation_errors(option: str, value: Any) -> None:
    if value is None and option in ("deadline", "requests_per_second"):
        return  # documented: None means no deadline, no rate cap
    with pytest.raises(ValidationError) as caught:
        client_with(**{option: value})
    assert caught.value.field == option


@pytest.mark.parametrize("option", CLIENT_WHOLES)
@pytest.mark.parametrize(
    "value", [10**400, 10**5000, -1, 0.5, Decimal(3), True, "3", math.nan], ids=shown
)
def test_bad_client_whole_numbers_are_validation_errors(option: str, value: Any) -> None:
    with pytest.raises(ValidationError) as caught:
        client_with(**{option: value})
    assert caught.value.field == option


@pytest.mark.parametrize(
    "field", ["max_retries", "initial_wait", "multiplier", "max_wait", "budget", "retry_cost"]
)
@pytest.mark.parametrize("value", [10**400, -1, math.nan, True, "1"], ids=shown)
def test_bad_retry_policy_numbers_are_validation_errors(field: str, value: Any) -> None:
    with pytest.raises(ValidationError) as caught:
        client_with(retry=RetryPolicy(**{field: value}))
    assert caught.value.field == f"retry.{field}"


@pytest.mark.parametrize(
    "value", [Decimal("2.5"), Fraction(5, 2), Tenths(25), 2, 2.5, 10**9 // 10**8], ids=shown
)
def test_any_real_number_type_is_accepted_in_range(value: Any) -> None:
    client = client_with(timeout=value, deadline=value, requests_per_second=value)
    assert "closed=False" in repr(client)


@pytest.mark.parametrize("value", [Decimal("0.4"), Fraction(2, 5), Tenths(4), 0, 1, 0.4], ids=shown)
def test_temperatures_accept_real_numbers(value: Any) -> None:
    update = CharacterUpdate("c", temperature=value)
    assert update.temperature == pytest.approx(0.4 if value not in (0, 1) else value)
    assert type(update.temperature) is float


def test_numpy_scalars_are_accepted() -> None:
    numpy = pytest.importorskip("numpy")
    assert CharacterUpdate("c", temperature=numpy.float32(0.4)).temperature == pytest.approx(0.4)
    assert client_with(max_concurrency=numpy.int64(8)).max_concurrency == 8


@pytest.mark.parametrize("value", HUGE + NOT_NUMBERS + [1.0001, -0.1, Fraction(3, 2)], ids=shown)
async def test_bad_temperatures_are_validation_errors_everywhere(value: Any) -> None:
    if value is None:
        return  # None means "leave the temperature alone" for CharacterUpdate
    with pytest.raises(ValidationError):
        CharacterUpdate("c", temperature=value)
    client = client_with()
    with pytest.raises(ValidationError):
        await client.characters.set_temperature("c", value)
    with pytest.raises(ValidationError):
        await client.bulk_set_temperature(["c"], value)
    assert client.stats.requests == 0
