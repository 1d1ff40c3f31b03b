"""Lambda entry point of the outbox relay (EventBridge Scheduler, every minute).

Commands publish their own events right after they commit; this sends whatever that fast
path missed (a crash, SQS unreachable), so no event is lost. The schedule's event carries
nothing the relay needs.
"""

from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.metrics import MetricUnit

from giftmarket.bootstrap import get_container
from giftmarket.observability import metrics, with_metrics

logger = Logger(service="giftmarket-outbox-relay")


@logger.inject_lambda_context(clear_state=True)
@with_metrics
def handler(event: dict[str, Any], context: Any) -> dict[str, int]:
    report = get_container().relay_outbox()
    metrics.add_metric(name="OutboxPublished", unit=MetricUnit.Count, value=report.published)
    metrics.add_metric(name="OutboxPublishFailed", unit=MetricUnit.Count, value=report.failed)
    logger.info("outbox relayed", extra=report.as_dict())
    return report.as_dict()
