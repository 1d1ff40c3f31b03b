"""Lambda entry point of the outbox relay (EventBridge Scheduler, every minute).

Commands leave their events in the outbox and answer; this publishes them. Deployed, each
run polls the outbox every OUTBOX_RELAY_POLL_MS for OUTBOX_RELAY_RUN_SECONDS (a little more
than the schedule's minute) under a lock that the next run waits on, so one loop is always
running and events reach the queue tens of milliseconds after their commit. A crash or an
SQS outage leaves rows unpublished, never lost: the next pass sends them. The schedule's
event carries nothing the relay needs.

Beside the loop it looks after the read side: if Redis holds no read models (a new
deployment, a cache that lost its data), it rebuilds them, so queries go back to Redis
without an operator. The loop does not wait for the rebuild: the events it publishes
meanwhile reach the new generation through the projector (projections/rebuild.py), and
waiting for it would hold every event back for as long as a rebuild takes (minutes at
PRODUCT.md's volumes), on top of the queries SQL answers meanwhile.
"""

from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.metrics import MetricUnit

from giftmarket.bootstrap import Container, get_container
from giftmarket.observability import metrics, with_metrics

logger = Logger(service="giftmarket-outbox-relay")

# The loop stops this long before the function's timeout: its last pass and the metrics
# must fit in what is left.
MARGIN_SECONDS = 10.0


@logger.inject_lambda_context(clear_state=True)
@with_metrics
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    from concurrent.futures import ThreadPoolExecutor

    from giftmarket.adapters.publisher import relay_for

    container = get_container()

    def remaining_seconds() -> float:
        return float(context.get_remaining_time_in_millis()) / 1000 - MARGIN_SECONDS

    # The invocation ends only once the rebuild has (an environment is frozen when it
    # returns); what the rebuild raises is raised then, after the loop has run.
    with ThreadPoolExecutor(1, thread_name_prefix="read-models") as beside:
        rebuilding = beside.submit(_ensure_read_models, container)
        report = relay_for(
            container.database.writer, container.publisher, container.settings, remaining_seconds
        )
        rebuilt = rebuilding.result()
    metrics.add_metric(name="OutboxPublished", unit=MetricUnit.Count, value=report.published)
    metrics.add_metric(name="OutboxPublishFailed", unit=MetricUnit.Count, value=report.failed)
    logger.info("outbox relayed", extra=report.as_dict())
    return {**report.as_dict(), **rebuilt}


def _ensure_read_models(container: Container) -> dict[str, Any]:
    from redis import RedisError  # not at import: the client comes with the read models

    from giftmarket.projections.rebuild import SnapshotRefused, ensure_read_models

    try:
        rebuilt = ensure_read_models(container.read_models, container.settings, container.database)
    except (RedisError, SnapshotRefused) as exc:
        # Queries are answered by SQL meanwhile; the next run tries again.
        logger.warning("read models not checked or not rebuilt: %s", exc)
        return {}
    if rebuilt is None:
        return {}
    metrics.add_metric(name="ReadModelsRebuilt", unit=MetricUnit.Count, value=1)
    logger.info("read models were missing and are rebuilt", extra=rebuilt.as_dict())
    return {"read_models_rebuilt": rebuilt.as_dict()}
