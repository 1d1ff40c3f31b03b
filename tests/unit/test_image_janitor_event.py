"""What the image cleanup accepts from its Lambda event and its --as-of option (pure)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from giftmarket.domain.errors import InvalidField
from giftmarket.jobs.images import CleanupRequest, parse_as_of

EVENTS = Path(__file__).parents[2] / "functions/image_janitor/events"
KST = timezone(timedelta(hours=9))


def test_the_scheduled_event_cleans_as_of_now() -> None:
    event = json.loads((EVENTS / "scheduled.json").read_text())
    assert CleanupRequest.from_event(event) == CleanupRequest(as_of=None, dry_run=False)


def test_the_dry_run_sample_event_is_a_dry_run() -> None:
    event = json.loads((EVENTS / "dry_run.json").read_text())
    assert CleanupRequest.from_event(event) == CleanupRequest(as_of=None, dry_run=True)


@pytest.mark.parametrize(
    "event",
    [
        {"as_of": "2026-11-22T03:00:00+09:00", "dry_run": True},
        {"detail": {"as_of": "2026-11-22T03:00:00+09:00", "dry_run": True}},
        {
            "detail": {"as_of": "1999-01-01T00:00:00Z", "dry_run": False},
            "as_of": "2026-11-21T18:00Z",
            "dry_run": True,
        },
    ],
    ids=["top-level", "detail", "top-level-wins"],
)
def test_as_of_and_dry_run_come_from_the_top_or_from_detail(event: dict[str, Any]) -> None:
    request = CleanupRequest.from_event(event)
    assert request == CleanupRequest(datetime(2026, 11, 21, 18, 0, tzinfo=UTC), True)


@pytest.mark.parametrize(
    "event",
    [
        {"as_of": "2026-11-22T03:00:00"},
        {"as_of": "yesterday"},
        {"as_of": 1732200000},
        {"dry_run": "yes"},
        {"detail": {"dry_run": 1}},
    ],
)
def test_a_bad_as_of_or_dry_run_is_refused(event: dict[str, Any]) -> None:
    with pytest.raises(InvalidField):
        CleanupRequest.from_event(event)


def test_as_of_keeps_its_zone_and_accepts_z() -> None:
    assert parse_as_of("2026-11-22T03:00:00+09:00") == datetime(2026, 11, 22, 3, tzinfo=KST)
    assert parse_as_of(" 2026-11-21T18:00:00Z ") == datetime(2026, 11, 21, 18, tzinfo=UTC)


@pytest.mark.parametrize("text", ["2026-11-22", "2026-11-22T03:00:00", "", "03:00+09:00"])
def test_as_of_without_a_zone_or_a_time_is_refused(text: str) -> None:
    with pytest.raises(InvalidField):
        parse_as_of(text)
