"""Lambda entry point of the outbox relay (EventBridge Scheduler, every minute).

Commands publish their own events right after they commit; this sends whatever that fast
path missed (a crash, SQS unreachable), so no event is lost. The schedule's event carries
nothing the relay needs.

Then it looks after the read side: if Redis holds no read models (a new deployment, a cache
that lost its data), it rebuilds them, so queries go back to Redis without an operator.
"""

from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.metrics import MetricUnit

from giftmarket.bootstrap import get_container
from giftmarket.observability import metrics, with_metrics

logger = Logger(service="giftmarket-outbox-relay")


@logger.inject_lambda_context(clear_state=True)
@with_metrics
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    from redis import RedisError  # not at import: the client comes with the read models

    from giftmarket.adapters.publisher import relay
    from giftmarket.projections.rebuild import SnapshotRefused, ensure_read_models

    container = get_container()
    report = relay(container.database.writer, container.publisher, container.settings)
    metrics.add_metric(name="OutboxPublished", unit=MetricUnit.Count, value=report.published)
    metrics.add_metric(name="OutboxPublishFailed", unit=MetricUnit.Count, value=report.failed)
    logger.info("outbox relayed", extra=report.as_dict())
    answer: dict[str, Any] = report.as_dict()
    try:
        rebuilt = ensure_read_models(container.read_models, container.settings, container.database)
    except (RedisError, SnapshotRefused) as exc:
        # Queries are answered by SQL meanwhile; the next run tries again.
        logger.warning("read models not checked or not rebuilt: %s", exc)
        rebuilt = None
    if rebuilt is not None:
        metrics.add_metric(name="ReadModelsRebuilt", unit=MetricUnit.Count, value=1)
        logger.info("read models were missing and are rebuilt", extra=rebuilt.as_dict())
        answer["read_models_rebuilt"] = rebuilt.as_dict()
    return answer
