from __future__ import annotations

from datetime import UTC, datetime

import pytest

from giftmarket_local.template import read_application
from giftmarket_local.triggers import rate_seconds, scheduler_event


@pytest.mark.parametrize(
    ("expression", "seconds"),
    [("rate(1 minute)", 60), ("rate(5 minutes)", 300), ("rate(2 hours)", 7200)],
)
def test_rate_schedules_run_locally_at_their_period(expression: str, seconds: int) -> None:
    assert rate_seconds(expression) == seconds


def test_cron_schedules_are_not_run_locally() -> None:
    assert rate_seconds("cron(10 0 * * ? *)") is None


def test_scheduler_event_has_eventbridge_schedulers_shape() -> None:
    event = scheduler_event(
        "OutboxRelayFunction", "rate(1 minute)", datetime(2026, 11, 22, tzinfo=UTC)
    )
    assert event["source"] == "aws.scheduler"
    assert event["detail-type"] == "Scheduled Event"
    assert event["time"] == "2026-11-22T00:00:00Z"
    assert event["resources"][0].endswith("schedule/default/OutboxRelayFunction")


def test_the_runner_loads_the_purge_and_leaves_its_daily_cron_to_the_cli() -> None:
    purge = read_application().functions["PurgeFunction"]
    assert purge.module_file.is_file()
    assert purge.schedules == ("cron(0 4 * * ? *)",)
    assert [rate_seconds(expression) for expression in purge.schedules] == [None]


def test_the_runner_loads_the_ask_expiry_and_leaves_its_daily_cron_to_the_cli() -> None:
    expiry = read_application().functions["ExpireAsksFunction"]
    assert expiry.module_file.is_file()
    assert expiry.schedules == ("cron(5 0 * * ? *)",)
    assert [rate_seconds(expression) for expression in expiry.schedules] == [None]
