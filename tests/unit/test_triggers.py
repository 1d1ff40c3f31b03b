from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import pytest

from giftmarket_local.supervisor import _relay_environment
from giftmarket_local.template import read_application
from giftmarket_local.triggers import _every, rate_seconds, scheduler_event


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


def test_a_schedule_ticks_at_once_then_every_period_not_waiting_for_its_runs() -> None:
    ticks: list[float] = []
    release = threading.Event()

    class Host:
        spec = SimpleNamespace(logical_id="OutboxRelayFunction")

        def invoke(self, event: dict[str, Any]) -> None:
            ticks.append(time.monotonic())
            release.wait(10)  # every run outlasts the period, as the relay's loop does

    stop = threading.Event()
    began = time.monotonic()
    ticker = threading.Thread(target=_every, args=(0.2, Host(), "rate(1 minute)", stop))
    ticker.start()
    try:
        deadline = time.monotonic() + 10
        while len(ticks) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        stop.set()
        release.set()
        ticker.join(5)
    assert len(ticks) >= 3, ticks  # three runs at once: no tick waited for the one before
    assert ticks[0] - began < 0.2  # the first tick at start
    assert ticks[2] - ticks[0] >= 0.3  # then one a period (0.2 s; the threads start late)


def test_the_runner_gives_the_relay_its_template_settings_unless_the_environment_does(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    application = read_application()
    monkeypatch.delenv("OUTBOX_RELAY_RUN_SECONDS", raising=False)
    monkeypatch.delenv("OUTBOX_RELAY_POLL_MS", raising=False)
    assert _relay_environment(application) == {
        "OUTBOX_RELAY_RUN_SECONDS": "70",
        "OUTBOX_RELAY_POLL_MS": "20",
    }
    monkeypatch.setenv("OUTBOX_RELAY_POLL_MS", "5")
    assert _relay_environment(application)["OUTBOX_RELAY_POLL_MS"] == "5"
