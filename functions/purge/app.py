"""Lambda entry point of the daily purge (EventBridge Scheduler, 04:00 Asia/Seoul).

Deletes the rows past their retention (jobs/purge.py): published outbox rows older than
OUTBOX_RETENTION_DAYS and expired idempotency records, in short transactions of at most
PURGE_BATCH_SIZE rows, resting between them. `{"dry_run": true}`, at the top of the event or
under `detail`, only counts them. A backlog larger than one invocation can delete is left,
cleanly, for the next day's run (the report says `complete: false`) rather than timed out.
"""

from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.metrics import MetricUnit

from giftmarket.bootstrap import get_container
from giftmarket.jobs.purge import PurgeRequest, purge
from giftmarket.observability import metrics, with_metrics

logger = Logger(service="giftmarket-purge")

# Stop starting batches this long before the function's timeout: one batch takes well
# under a second, and the report and metrics still have to go out.
MARGIN_SECONDS = 30.0


@logger.inject_lambda_context(clear_state=True)
@with_metrics
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    request = PurgeRequest.from_event(event)
    seconds_left = context.get_remaining_time_in_millis() / 1000 - MARGIN_SECONDS
    container = get_container()
    report = purge(
        container.database.writer,
        container.settings,
        dry_run=request.dry_run,
        seconds_left=seconds_left,
    )
    metrics.add_metric(name="PurgedRows", unit=MetricUnit.Count, value=report.deleted)
    metrics.add_metric(name="PurgeWouldDelete", unit=MetricUnit.Count, value=report.would_delete)
    metrics.add_metric(
        name="PurgeIncomplete", unit=MetricUnit.Count, value=int(not report.complete)
    )
    logger.info("purge run", extra=report.as_dict())
    return report.as_dict()
