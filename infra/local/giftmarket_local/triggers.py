"""The non-HTTP triggers of the template, locally: SQS event sources and rate schedules."""

from __future__ import annotations

import logging
import re
import threading
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import boto3

from giftmarket_local.runner import Abandoned, Gateway
from giftmarket_local.sqs_source import SqsEventSource

log = logging.getLogger("giftmarket.triggers")
_RATE = re.compile(r"^rate\((\d+) (minute|minutes|hour|hours)\)$")


def scheduler_event(function: str, expression: str, now: datetime | None = None) -> dict[str, Any]:
    """The event EventBridge Scheduler sends to a Lambda target (the input is ours: {})."""
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "Scheduled Event",
        "source": "aws.scheduler",
        "account": "000000000000",
        "time": (now or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": "us-east-1",
        "resources": [f"arn:aws:scheduler:us-east-1:000000000000:schedule/default/{function}"],
        "detail": {},
    }


def rate_seconds(expression: str) -> int | None:
    match = _RATE.match(expression.strip())
    if match is None:
        return None
    amount, unit = int(match.group(1)), match.group(2)
    return amount * (3600 if unit.startswith("hour") else 60)


def start_triggers(
    gateway: Gateway, env: dict[str, str], stop: threading.Event
) -> list[threading.Thread]:
    threads: list[threading.Thread] = []
    queue_url = env.get("EVENTS_QUEUE_URL")
    for name, host in gateway.hosts.items():
        spec = host.spec
        if spec.sqs_sources and queue_url:
            sqs = boto3.client(
                "sqs", endpoint_url=env.get("AWS_ENDPOINT_URL"), region_name=env.get("AWS_REGION")
            )
            source = SqsEventSource(sqs, queue_url, host.invoke)
            threads.append(threading.Thread(target=source.run, args=(stop,), name=f"sqs-{name}"))
        for expression in spec.schedules:
            period = rate_seconds(expression)
            if period is None:
                # cron() schedules (the daily jobs) run in AWS; locally use the CLI.
                log.info("%s: %s is not run locally; use the giftmarket CLI", name, expression)
                continue
            threads.append(
                threading.Thread(
                    target=_every, args=(period, host, expression, stop), name=f"schedule-{name}"
                )
            )
    for thread in threads:
        thread.daemon = True
        thread.start()
    return threads


def _every(period: float, host: Any, expression: str, stop: threading.Event) -> None:
    """As EventBridge Scheduler does: a tick every `period` seconds, each an asynchronous
    invocation, so a run still going when the next tick comes overlaps it (the relay's
    loops hand over that way). The first tick comes at once, not a period later: a local
    stack has its events flowing as soon as it serves."""
    next_tick = time.monotonic()
    while not stop.wait(max(0.0, next_tick - time.monotonic())):
        threading.Thread(
            target=_tick,
            args=(host, expression),
            name=f"tick-{host.spec.logical_id}",
            daemon=True,
        ).start()
        next_tick += period


def _tick(host: Any, expression: str) -> None:
    try:
        result = host.invoke(scheduler_event(host.spec.logical_id, expression))
        log.info("%s (%s): %s", host.spec.logical_id, expression, result)
    except Abandoned:
        log.info("%s: the runner stopped during its run", host.spec.logical_id)
    except Exception:
        log.exception("%s failed on its schedule", host.spec.logical_id)
