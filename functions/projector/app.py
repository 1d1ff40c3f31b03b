"""Lambda entry point of the projector: SQS FIFO batches of outbox events → Redis read models.

Partial batch responses (ReportBatchItemFailures): only the failed records come back, and
on a FIFO queue only their message groups are held back, so one poison event does not
stall the others. Errors are never swallowed here: they are the batch processor's to report.

Metrics: ProjectionLag (ms from the event's commit to its read-model write, per event) and
EventsRetried (records handed back to the queue: failed, or behind a failure in their group).
"""

from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.batch import (
    SqsFifoPartialProcessor,
    process_partial_response,
)
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

from giftmarket.bootstrap import get_container
from giftmarket.messages import EventEnvelope
from giftmarket.observability import metrics, with_metrics, with_tracing
from giftmarket.projections.projector import projection_lag_ms

logger = Logger(service="giftmarket-projector")
processor = SqsFifoPartialProcessor(skip_group_on_error=True)


def record_handler(record: SQSRecord) -> None:
    envelope = EventEnvelope.from_json(record.body)
    get_container().projector.handle(envelope)
    metrics.add_metric(
        name="ProjectionLag", unit=MetricUnit.Milliseconds, value=projection_lag_ms(envelope)
    )


@logger.inject_lambda_context(clear_state=True)
@with_tracing("giftmarket-projector")
@with_metrics
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    response: dict[str, Any] = process_partial_response(  # type: ignore[assignment]
        event=event, record_handler=record_handler, processor=processor, context=context
    )
    retried = len(response.get("batchItemFailures", ()))
    metrics.add_metric(name="EventsRetried", unit=MetricUnit.Count, value=retried)
    return response
