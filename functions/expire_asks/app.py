"""Lambda entry point of the daily ask expiry (EventBridge Scheduler, 00:05 Asia/Seoul).

Marks EXPIRED every open ask that buy-now may no longer take (jobs/expiry.py): its voucher
is valid for less than ASK_EXPIRY_MARGIN_DAYS more days in Korea, or its expiry is unknown.
The rule is applied as of the invocation, not the schedule's fire time: a retry hours later
expires what is due then, which includes what was due at 00:05. The event carries nothing
else; a rerun (or `giftmarket jobs expire-asks`) expires nothing more.
"""

from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.metrics import MetricUnit

from giftmarket.bootstrap import get_container
from giftmarket.jobs.expiry import expire_asks
from giftmarket.observability import metrics, with_metrics

logger = Logger(service="giftmarket-expire-asks")


@logger.inject_lambda_context(clear_state=True)
@with_metrics
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    executor = get_container().command_executor
    report = expire_asks(executor, now=executor.context.clock())
    metrics.add_metric(name="AsksExpired", unit=MetricUnit.Count, value=report.expired)
    logger.info("ask expiry run", extra=report.as_dict())
    return report.as_dict()
