import time

import pytest

from giftmarket.domain.ids import (
    CROCKFORD_ALPHABET,
    ID_LENGTH,
    MonotonicUlids,
    encode_ulid,
    new_id,
)

pytestmark = pytest.mark.unit


def timestamp_ms_of(ulid: str) -> int:
    """The millisecond timestamp a ULID starts with (its first 48 of 128 bits)."""
    value = 0
    for char in ulid:
        value = value << 5 | CROCKFORD_ALPHABET.index(char)
    return value >> 80


def test_new_id_is_26_crockford_base32_characters() -> None:
    generated = new_id()

    assert len(generated) == ID_LENGTH == 26
    assert set(generated) <= set(CROCKFORD_ALPHABET)


def test_new_id_carries_the_current_millisecond() -> None:
    before = time.time_ns() // 1_000_000
    generated = MonotonicUlids()()
    after = time.time_ns() // 1_000_000

    assert before <= timestamp_ms_of(generated) <= after


def test_new_ids_are_unique_and_sort_in_creation_order() -> None:
    generated = [new_id() for _ in range(5_000)]

    assert len(set(generated)) == len(generated)
    assert sorted(generated) == generated


def test_ids_made_while_the_clock_stands_still_sort_in_creation_order(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ulids = MonotonicUlids()
    monkeypatch.setattr(time, "time_ns", lambda: 1_741_917_600_123_000_000)

    generated = [ulids() for _ in range(100)]

    assert sorted(generated) == generated
    assert len(set(generated)) == len(generated)
    assert {timestamp_ms_of(ulid) for ulid in generated} == {1_741_917_600_123}


def test_ids_made_after_the_clock_steps_back_still_sort_after_earlier_ids(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ulids = MonotonicUlids()
    earlier = ulids()
    monkeypatch.setattr(time, "time_ns", lambda: 1_000_000_000_000)

    later = ulids()

    assert later > earlier


def test_encoded_ids_order_by_timestamp_before_randomness() -> None:
    early = encode_ulid(1_700_000_000_000, (1 << 80) - 1)
    late = encode_ulid(1_700_000_000_001, 0)

    assert early < late


def test_timestamp_round_trips_through_an_id() -> None:
    assert timestamp_ms_of(encode_ulid(1_741_917_600_123, 12345)) == 1_741_917_600_123


def test_largest_ulid_still_fits_26_characters() -> None:
    assert encode_ulid((1 << 48) - 1, (1 << 80) - 1) == "7" + "Z" * 25


@pytest.mark.parametrize(
    ("timestamp_ms", "randomness"), [(-1, 0), (1 << 48, 0), (0, -1), (0, 1 << 80)]
)
def test_encoding_refuses_values_outside_the_ulid_layout(
    timestamp_ms: int, randomness: int
) -> None:
    with pytest.raises(ValueError):
        encode_ulid(timestamp_ms, randomness)
