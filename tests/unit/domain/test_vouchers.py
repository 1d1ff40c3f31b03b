"""Voucher facts (PRODUCT.md, "Vouchers"): the KST dates a voucher must reach, the barcode's
shape, and the keyed fingerprints that find a voucher again under every key."""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import UTC, date, datetime

import pytest

from giftmarket.adapters.barcodes import BarcodeKeys, HmacBarcodeFingerprinter
from giftmarket.domain.errors import InvalidField, VoucherExpiring
from giftmarket.domain.vouchers import (
    Fingerprint,
    InspectionMode,
    Voucher,
    VoucherRules,
    require_barcode,
)

pytestmark = pytest.mark.unit

RULES = VoucherRules()
# 14:59:59 UTC on 2025-03-14 is 23:59:59 KST the same day; a second later it is the 15th
# in Korea while still the 14th in UTC.
LAST_SECOND_OF_14TH_KST = datetime(2025, 3, 14, 14, 59, 59, tzinfo=UTC)
FIRST_SECOND_OF_15TH_KST = datetime(2025, 3, 14, 15, 0, 0, tzinfo=UTC)
FINGERPRINTS = (Fingerprint("k1", "ab" * 32),)


def test_defaults_are_three_days_to_list_one_day_to_buy_and_auto_inspection() -> None:
    assert (RULES.min_validity_days, RULES.ask_expiry_margin_days, RULES.inspection) == (
        3,
        1,
        InspectionMode.AUTO,
    )


@pytest.mark.parametrize(
    ("margin", "validity"), [(0, 3), (-1, 3), (2, 1)], ids=["no-margin", "negative", "inverted"]
)
def test_rules_that_would_sell_a_last_day_voucher_are_refused(margin: int, validity: int) -> None:
    with pytest.raises(ValueError):
        VoucherRules(min_validity_days=validity, ask_expiry_margin_days=margin)


def test_a_voucher_valid_exactly_three_korean_days_ahead_is_listable() -> None:
    now = datetime(2025, 3, 14, 3, 0, tzinfo=UTC)  # 12:00 KST on the 14th

    RULES.ensure_listable(date(2025, 3, 17), now)


def test_a_voucher_valid_one_day_short_is_refused_as_expiring() -> None:
    now = datetime(2025, 3, 14, 3, 0, tzinfo=UTC)

    with pytest.raises(VoucherExpiring) as refused:
        RULES.ensure_listable(date(2025, 3, 16), now)
    assert "2025-03-17" in str(refused.value)


def test_listability_counts_from_the_korean_date_not_the_utc_one() -> None:
    # At 15:00 UTC the UTC date is still the 14th, but Korea is on the 15th: the 17th is
    # then only two Korean days ahead.
    RULES.ensure_listable(date(2025, 3, 17), LAST_SECOND_OF_14TH_KST)
    with pytest.raises(VoucherExpiring):
        RULES.ensure_listable(date(2025, 3, 17), FIRST_SECOND_OF_15TH_KST)
    RULES.ensure_listable(date(2025, 3, 18), FIRST_SECOND_OF_15TH_KST)


def test_buy_now_takes_vouchers_valid_from_tomorrow_in_korea() -> None:
    assert RULES.takeable_from(LAST_SECOND_OF_14TH_KST) == date(2025, 3, 15)
    assert RULES.takeable_from(FIRST_SECOND_OF_15TH_KST) == date(2025, 3, 16)


@pytest.mark.parametrize(
    ("expires_on", "takeable"),
    [(date(2025, 3, 14), False), (date(2025, 3, 15), True), (date(2025, 3, 16), True)],
    ids=["today", "tomorrow", "after"],
)
def test_a_voucher_on_its_last_valid_day_is_not_takeable(expires_on: date, takeable: bool) -> None:
    assert RULES.is_takeable(expires_on, LAST_SECOND_OF_14TH_KST) is takeable


def test_a_voucher_becomes_untakeable_at_midnight_korean_time() -> None:
    assert RULES.is_takeable(date(2025, 3, 15), LAST_SECOND_OF_14TH_KST)
    assert not RULES.is_takeable(date(2025, 3, 15), FIRST_SECOND_OF_15TH_KST)


def test_an_ask_with_no_known_expiry_is_never_takeable() -> None:
    assert not RULES.is_takeable(None, LAST_SECOND_OF_14TH_KST)


def test_a_wider_margin_moves_both_boundaries() -> None:
    rules = VoucherRules(min_validity_days=5, ask_expiry_margin_days=2)
    now = datetime(2025, 3, 14, 3, 0, tzinfo=UTC)

    assert rules.takeable_from(now) == date(2025, 3, 16)
    rules.ensure_listable(date(2025, 3, 19), now)
    with pytest.raises(VoucherExpiring):
        rules.ensure_listable(date(2025, 3, 18), now)


def test_a_naive_clock_is_refused() -> None:
    with pytest.raises(InvalidField):
        RULES.takeable_from(datetime(2025, 3, 14, 3, 0))


# --- barcodes -------------------------------------------------------------------------------


@pytest.mark.parametrize("barcode", ["1" * 8, "0" * 8, "1234567890123", "9" * 32])
def test_barcodes_of_8_to_32_ascii_digits_are_accepted(barcode: str) -> None:
    assert require_barcode(barcode) == barcode


@pytest.mark.parametrize(
    "barcode",
    [
        "1" * 7,
        "1" * 33,
        "",
        "1234 5678",
        "1234-5678",
        "12345678a",
        " 12345678",
        "12345678\n",
        "+12345678",
        "١٢٣٤٥٦٧٨٩",  # Arabic-Indic digits: str.isdigit() says yes, a scanner says no
        "１２３４５６７８",  # fullwidth digits
        "१२३४५६७८",  # Devanagari digits
        "12345678²",
    ],
    ids=[
        "7",
        "33",
        "empty",
        "space",
        "dash",
        "letter",
        "leading-space",
        "newline",
        "sign",
        "arabic-indic",
        "fullwidth",
        "devanagari",
        "superscript",
    ],
)
def test_malformed_barcodes_are_refused(barcode: str) -> None:
    with pytest.raises(InvalidField) as refused:
        require_barcode(barcode)
    assert refused.value.field == "barcode"


def test_a_declared_voucher_keeps_only_the_last_four_digits_and_the_fingerprints() -> None:
    now = datetime(2025, 3, 14, 3, 0, tzinfo=UTC)

    voucher = Voucher.declared(
        barcode="8801234567890",
        expires_on=date(2025, 3, 17),
        fingerprints=FINGERPRINTS,
        rules=RULES,
        now=now,
    )

    assert voucher == Voucher("7890", date(2025, 3, 17), FINGERPRINTS)
    assert "8801234567890" not in repr(voucher)


def test_declaring_a_malformed_barcode_is_refused_before_its_expiry() -> None:
    with pytest.raises(InvalidField):
        Voucher.declared(
            barcode="١٢٣٤٥٦٧٨٩",
            expires_on=date(2025, 3, 14),
            fingerprints=FINGERPRINTS,
            rules=RULES,
            now=datetime(2025, 3, 14, 3, 0, tzinfo=UTC),
        )


def test_declaring_an_expiring_voucher_is_refused() -> None:
    with pytest.raises(VoucherExpiring):
        Voucher.declared(
            barcode="8801234567890",
            expires_on=date(2025, 3, 16),
            fingerprints=FINGERPRINTS,
            rules=RULES,
            now=datetime(2025, 3, 14, 3, 0, tzinfo=UTC),
        )


def test_a_voucher_without_fingerprints_cannot_be_declared() -> None:
    with pytest.raises(ValueError):
        Voucher.declared(
            barcode="8801234567890",
            expires_on=date(2025, 3, 20),
            fingerprints=(),
            rules=RULES,
            now=datetime(2025, 3, 14, 3, 0, tzinfo=UTC),
        )


# --- the keyed fingerprints (adapters/barcodes.py) -----------------------------------------

KEY_1 = "a" * 32
KEY_2 = "b" * 40


def keys_json(current: str = "k2", **keys: str) -> str:
    return json.dumps({"current": current, **(keys or {"k1": KEY_1, "k2": KEY_2})})


def fingerprinter(text: str) -> HmacBarcodeFingerprinter:
    return HmacBarcodeFingerprinter(lambda: text)


def digest(key: str, barcode: str) -> str:
    return hmac.new(key.encode(), barcode.encode(), hashlib.sha256).hexdigest()


def test_keys_parse_into_the_current_kid_and_every_key() -> None:
    keys = BarcodeKeys.parse(keys_json())

    assert keys.current == "k2"
    assert dict(keys.keys) == {"k1": KEY_1.encode(), "k2": KEY_2.encode()}
    assert KEY_1 not in repr(keys)


@pytest.mark.parametrize(
    "text",
    [
        "not json",
        "",
        "[]",
        '"k1"',
        json.dumps({"k1": KEY_1}),
        json.dumps({"current": 1, "k1": KEY_1}),
        json.dumps({"current": "k3", "k1": KEY_1}),
        json.dumps({"current": "k1", "k1": "short"}),
        json.dumps({"current": "k1", "k1": KEY_1, "k2": "a" * 31}),
        json.dumps({"current": "", "": KEY_1}),
        json.dumps({"current": "k" * 33, "k" * 33: KEY_1}),
        json.dumps({"current": "clé", "clé": KEY_1}),
    ],
    ids=[
        "not-json",
        "empty",
        "array",
        "string",
        "no-current",
        "current-not-text",
        "current-unknown",
        "short-key",
        "short-old-key",
        "empty-kid",
        "long-kid",
        "non-ascii-kid",
    ],
)
def test_bad_keys_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        BarcodeKeys.parse(text)


def test_fingerprints_come_under_every_kid_the_current_one_first() -> None:
    prints = fingerprinter(keys_json(current="k2", k1=KEY_1, k2=KEY_2, k0="c" * 32)).fingerprints(
        "8801234567890"
    )

    assert [p.kid for p in prints] == ["k2", "k0", "k1"]
    assert prints[0] == Fingerprint("k2", digest(KEY_2, "8801234567890"))
    assert prints[2] == Fingerprint("k1", digest(KEY_1, "8801234567890"))


def test_fingerprints_are_deterministic_and_differ_by_barcode() -> None:
    hasher = fingerprinter(keys_json())

    assert hasher.fingerprints("8801234567890") == hasher.fingerprints("8801234567890")
    assert hasher.fingerprints("8801234567890") != hasher.fingerprints("8801234567891")


def test_a_different_key_gives_a_different_digest_under_the_same_kid() -> None:
    one = fingerprinter(keys_json(current="k1", k1=KEY_1)).fingerprints("8801234567890")
    other = fingerprinter(keys_json(current="k1", k1="z" * 32)).fingerprints("8801234567890")

    assert one[0].kid == other[0].kid == "k1"
    assert one[0].digest != other[0].digest


def test_after_a_rotation_the_old_keys_fingerprint_is_still_made() -> None:
    before = fingerprinter(keys_json(current="k1", k1=KEY_1)).fingerprints("8801234567890")
    after = fingerprinter(keys_json(current="k2", k1=KEY_1, k2=KEY_2)).fingerprints("8801234567890")

    assert after[0].kid == "k2"
    assert set(before) <= set(after)


def test_keys_are_read_again_and_a_rotation_takes_effect_without_a_new_fingerprinter() -> None:
    texts = [keys_json(current="k1", k1=KEY_1)]
    hasher = HmacBarcodeFingerprinter(lambda: texts[-1])
    assert [p.kid for p in hasher.fingerprints("12345678")] == ["k1"]

    texts.append(keys_json(current="k2", k1=KEY_1, k2=KEY_2))

    assert [p.kid for p in hasher.fingerprints("12345678")] == ["k2", "k1"]


def test_the_fingerprint_is_64_hex_characters_and_never_the_barcode() -> None:
    (print_,) = fingerprinter(keys_json(current="k1", k1=KEY_1)).fingerprints("8801234567890")

    assert len(print_.digest) == 64
    int(print_.digest, 16)
    assert "8801234567890" not in print_.digest
    assert print_.digest != hashlib.sha256(b"8801234567890").hexdigest()  # keyed, not plain
