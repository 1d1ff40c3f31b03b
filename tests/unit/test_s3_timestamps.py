"""S3's timestamps: the standard library where they are ISO 8601, botocore otherwise (pure)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from botocore.utils import parse_timestamp

from giftmarket.adapters.images import parse_s3_timestamp


@pytest.mark.parametrize(
    "text",
    [
        "2026-12-02T09:45:49.000Z",
        "2026-12-02T09:45:49.123456Z",
        "2026-12-02T18:45:49+09:00",
        "Wed, 02 Dec 2026 09:45:49 GMT",
        "2026-12-02T09:45:49",
    ],
    ids=["listing", "microseconds", "offset", "http-date", "no-zone"],
)
def test_s3_times_parse_as_botocore_parses_them(text: str) -> None:
    assert parse_s3_timestamp(text) == parse_timestamp(text)


def test_a_listing_time_is_an_aware_utc_instant() -> None:
    parsed = parse_s3_timestamp("2026-12-02T09:45:49.000Z")
    assert parsed == datetime(2026, 12, 2, 9, 45, 49, tzinfo=UTC)
    assert parsed.utcoffset() is not None
