"""Lambda entry point of the projector: SQS FIFO batches of outbox events → Redis read models.

Partial batch responses (ReportBatchItemFailures): only the failed records come back, and
on a FIFO queue only their message groups are held back, so one poison event does not
stall the others. Errors are never swallowed here: they are the batch processor's to report.
"""

from typing import Any

from aws_lambda_powertools import Logger, Tracer
from aws_lambda_powertools.utilities.batch import (
    SqsFifoPartialProcessor,
    process_partial_response,
)
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

from giftmarket.bootstrap import get_container
from giftmarket.messages import EventEnvelope
from giftmarket.observability import with_metrics

logger = Logger(service="giftmarket-projector")
tracer = Tracer(service="giftmarket-projector", patch_modules=["botocore", "pymysql"])
processor = SqsFifoPartialProcessor(skip_group_on_error=True)


def record_handler(record: SQSRecord) -> None:
    get_container().projector.handle(EventEnvelope.from_json(record.body))


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler(capture_response=False)
@with_metrics
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    response: dict[str, Any] = process_partial_response(  # type: ignore[assignment]
        event=event, record_handler=record_handler, processor=processor, context=context
    )
    return response
