"""Lambda entry point of the daily settlement (EventBridge Scheduler, 00:10 Asia/Seoul).

The scheduled event settles the business date that had just ended in Korea when the
schedule fired (its `time`), so a retry hours later still settles that date. A manual rerun
names the date: `{"business_date": "YYYY-MM-DD"}`, at the top of the event or under
`detail`. A run that settled some sellers but not all fails the invocation after its
metrics are out, so the asynchronous retries (then the DLQ) take up the rest.
"""

from datetime import date, datetime
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.metrics import MetricUnit

from giftmarket.bootstrap import get_container
from giftmarket.domain.errors import InvalidField
from giftmarket.domain.settlement import default_business_date, parse_business_date
from giftmarket.jobs.settlement import SettlementIncomplete, settle
from giftmarket.observability import metrics, with_metrics

logger = Logger(service="giftmarket-settlement")


def requested_business_date(event: dict[str, Any]) -> date | None:
    """The date the event asks for; None (the day just ended) when it names no date and
    carries no schedule time."""
    detail = event.get("detail")
    requested = event.get("business_date")
    if requested is None and isinstance(detail, dict):
        requested = detail.get("business_date")
    if requested is not None:
        if not isinstance(requested, str):
            raise InvalidField("business_date", "business_date must be a string, YYYY-MM-DD.")
        return parse_business_date(requested)
    fired_at = event.get("time")
    if fired_at is None:
        return None
    try:
        return default_business_date(datetime.fromisoformat(str(fired_at)))
    except ValueError:
        raise InvalidField("time", f"time must be an ISO 8601 instant, got {fired_at!r}.") from None


@logger.inject_lambda_context(clear_state=True)
@with_metrics
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    container = get_container()
    report = settle(container.command_executor, container.settings, requested_business_date(event))
    for name, value in (
        ("SettlementOrdersCompleted", report.orders_completed),
        ("SettlementSellersSettled", report.sellers_settled),
        ("SettlementOrdersSettled", report.orders_settled),
        ("SettlementSellersDeferred", report.sellers_deferred),
        ("SettlementSellersFailed", len(report.failed_sellers)),
    ):
        metrics.add_metric(name=name, unit=MetricUnit.Count, value=value)
    metrics.add_metric(name="SettlementGross", unit=MetricUnit.NoUnit, value=report.gross)
    metrics.add_metric(name="SettlementFee", unit=MetricUnit.NoUnit, value=report.fee)
    logger.info("settlement run", extra=report.as_dict())
    if report.failed:
        raise SettlementIncomplete(report)
    return report.as_dict()
