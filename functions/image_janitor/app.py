"""Lambda entry point of the orphaned-image cleanup (EventBridge Scheduler, 03:00 Asia/Seoul).

The event may carry `{"as_of": "<ISO-8601 with zone>", "dry_run": true}`, at its top level
or under `detail`, for a backfill or a preview; the schedule's own event carries neither
(as of now, deleting). Keys S3 refuses stay for the next run: the run still succeeds, and
the ImagesDeleteFailed metric shows them.
"""

from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.metrics import MetricUnit

from giftmarket.bootstrap import get_container
from giftmarket.jobs.images import CleanupRequest, clean_images
from giftmarket.observability import metrics, with_metrics

logger = Logger(service="giftmarket-image-janitor")

# A synchronous invoke answers at most 6 MB; the full list is in the logs.
ENTRIES_RETURNED = 1000


@logger.inject_lambda_context(clear_state=True)
@with_metrics
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    request = CleanupRequest.from_event(event)
    container = get_container()
    report = clean_images(
        container.unit_of_work,
        container.command_context,
        container.images,
        retries=container.settings.command_retries,
        as_of=request.as_of,
        dry_run=request.dry_run,
    )
    for name, value in (
        ("ImagesDeleted", report.deleted),
        ("ImagesWouldDelete", report.would_delete),
        ("ImagesDeleteFailed", report.failed),
        ("ImagesSkippedLive", report.skipped_live),
    ):
        metrics.add_metric(name=name, unit=MetricUnit.Count, value=value)
    for entry in report.entries:
        logger.info("image cleanup", extra=entry.as_dict())
    logger.info("image cleanup run", extra=report.summary())
    return report.as_dict(max_entries=ENTRIES_RETURNED)
