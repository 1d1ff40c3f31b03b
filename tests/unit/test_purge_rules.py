"""The purge's event, its retention instants and its limits (pure: no database)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from sqlalchemy import create_engine
from sqlalchemy.dialects import mysql

from giftmarket.domain.errors import InvalidField
from giftmarket.jobs.purge import RULES, Purger, PurgeRequest, Retention
from giftmarket.settings import Settings

EVENTS = Path(__file__).parents[2] / "functions/purge/events"
KST = timezone(timedelta(hours=9))


def test_the_scheduled_event_purges_and_the_dry_run_event_only_counts() -> None:
    scheduled = json.loads((EVENTS / "scheduled.json").read_text())
    dry_run = json.loads((EVENTS / "dry_run.json").read_text())
    assert PurgeRequest.from_event(scheduled) == PurgeRequest(dry_run=False)
    assert PurgeRequest.from_event(dry_run) == PurgeRequest(dry_run=True)


@pytest.mark.parametrize(
    ("event", "dry_run"),
    [
        ({}, False),
        ({"dry_run": True}, True),
        ({"detail": {"dry_run": True}}, True),
        ({"detail": {"dry_run": True}, "dry_run": False}, False),
    ],
    ids=["nothing", "top-level", "detail", "top-level-wins"],
)
def test_dry_run_comes_from_the_top_or_from_detail(event: dict[str, Any], dry_run: bool) -> None:
    assert PurgeRequest.from_event(event).dry_run is dry_run


@pytest.mark.parametrize("event", [{"dry_run": "yes"}, {"detail": {"dry_run": 1}}, []])
def test_a_dry_run_that_is_not_a_boolean_is_refused(event: Any) -> None:
    with pytest.raises(InvalidField):
        PurgeRequest.from_event(event)


def test_retention_instants_are_utc_as_the_database_stores_them() -> None:
    retention = Retention(datetime(2026, 12, 6, 4, 0, tzinfo=KST), outbox_days=7)
    assert retention.now_db == datetime(2026, 12, 5, 19, 0)
    assert retention.outbox_published_before == datetime(2026, 11, 28, 19, 0)


def test_retention_needs_an_aware_instant_and_a_positive_period() -> None:
    with pytest.raises(InvalidField):
        Retention(datetime(2026, 12, 6, 4, 0))
    with pytest.raises(ValueError, match="outbox_days"):
        Retention(datetime(2026, 12, 6, tzinfo=UTC), outbox_days=0)


@pytest.mark.parametrize("size", [0, 1001])
def test_a_batch_is_1_to_1000_rows(size: int) -> None:
    with pytest.raises(ValueError, match="batch_size"):
        Purger(create_engine("sqlite://"), batch_size=size)
    with pytest.raises(ValidationError):
        Settings(purge_batch_size=size)


def test_the_defaults_keep_a_week_of_outbox_and_rest_3x_after_each_200_row_batch() -> None:
    settings = Settings()
    assert (settings.outbox_retention_days, settings.purge_batch_size) == (7, 200)
    assert settings.purge_rest_ratio == 3.0
    with pytest.raises(ValidationError):
        Settings(outbox_retention_days=0)
    with pytest.raises(ValidationError):
        Settings(purge_rest_ratio=-1)


def compiled(statement: Any) -> str:
    return str(statement.compile(dialect=mysql.dialect(), compile_kwargs={"literal_binds": True}))


def test_no_rule_can_delete_an_unpublished_outbox_row() -> None:
    (outbox,) = [rule for rule in RULES if rule.name == "outbox"]
    condition = compiled(outbox.expired(Retention(datetime(2026, 12, 6, tzinfo=UTC))))
    # A comparison is never true of NULL; "IS NULL" or "OR" could make it so.
    assert condition == "outbox.published_at < '2026-11-29 00:00:00'"


def test_each_batch_is_claimed_in_index_order_skipping_locked_rows() -> None:
    purger = Purger(create_engine("sqlite://"), batch_size=250)
    for rule in RULES:
        sql = compiled(purger.claim(rule, Retention(datetime(2026, 12, 6, tzinfo=UTC))))
        order = ", ".join(f"{rule.name}.{column}" for column in rule.walk)
        assert f"ORDER BY {order}" in sql
        assert sql.endswith("LIMIT 250 FOR UPDATE SKIP LOCKED")
