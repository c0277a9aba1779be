"""The writer step: store each queued order once, fail only the messages that cannot be stored.

SQS delivers at least once and ingest may send an order twice, so a second copy of an order
is a success that changes nothing (conditional PutItem). A message that is not an order (an
orderId that is not a UUID included) fails only itself and, after the queue's maxReceiveCount
receives, lands in OrdersDLQ.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aws_lambda_powertools.utilities.batch import EventType, process_partial_response
from aws_lambda_powertools.utilities.parser.models import SqsRecordModel
from pydantic import Json, field_validator

from orderpipe.aws import clients
from orderpipe.batch import FailureLoggingProcessor
from orderpipe.models import Order, is_order_id
from orderpipe.observability import MetricUnit, logger, metrics, tracer

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
    from aws_lambda_powertools.utilities.typing import LambdaContext


class QueuedOrder(SqsRecordModel):
    """An OrdersQueue message whose body is an order; any other body fails this record only."""

    body: Json[Order]

    @field_validator("body")
    @classmethod
    def _order_id_is_a_uuid(cls, order: Order) -> Order:
        """Ingest gives every order a UUID; any other orderId did not come from it, and would be
        stored where GET /orders/{orderId} can never find it."""
        if not is_order_id(order.order_id):
            raise ValueError("orderId must be a UUID in canonical lowercase form")
        return order


class OrderBatchProcessor(FailureLoggingProcessor):
    failure_message = (
        "Message not stored; SQS delivers it again, and after maxReceiveCount moves it to OrdersDLQ"
    )
    failure_metric = "OrderMessagesFailed"
    record_id_field = "message_id"

    def record_id(self, record: Any) -> str | None:
        # A parsed record is the model (camelCase); one that failed to parse, Powertools' data class.
        return getattr(record, "messageId", None) or getattr(record, "message_id", None)

    def correlation_id(self, record: Any) -> str | None:
        return record.body.order_id if isinstance(record, QueuedOrder) else None


@tracer.capture_method(capture_response=False)
def store_queued_order(record: QueuedOrder) -> bool:
    """True if the order was stored now, False if it was already there (a duplicate delivery).

    A StorageError (throttling, a failed request) propagates: only this record is retried.
    """
    order: Order = record.body
    logger.set_correlation_id(order.order_id)
    stored = clients.orders_table().put_new_order(order)
    if stored:
        metrics.add_metric(name="OrdersStored", unit=MetricUnit.Count, value=1)
        logger.debug("Order stored", extra={"message_id": record.messageId})
    else:
        metrics.add_metric(name="DuplicateOrders", unit=MetricUnit.Count, value=1)
        logger.debug(
            "Order already stored; duplicate delivery ignored", extra={"message_id": record.messageId}
        )
    return stored


def store_queued_orders(
    event: dict[str, Any], context: LambdaContext | None = None
) -> PartialItemFailureResponse:
    """Process one SQS batch; the answer names the messages SQS should deliver again."""
    if not event.get("Records"):
        # Powertools raises UnexpectedBatchTypeError for a batch without records; nothing failed.
        return {"batchItemFailures": []}
    # A processor per batch: it holds the batch's outcomes, and the local pipeline may run
    # several batches at once in one process. A batch of only poison messages must still
    # answer batchItemFailures, not raise.
    processor = OrderBatchProcessor(
        event_type=EventType.SQS, model=QueuedOrder, raise_on_entire_batch_failure=False
    )
    stored: list[str] = []
    duplicates: list[str] = []

    def store(record: QueuedOrder) -> bool:
        was_stored = store_queued_order(record)
        (stored if was_stored else duplicates).append(record.body.order_id)
        return was_stored

    try:
        response = process_partial_response(
            event=event, record_handler=store, processor=processor, context=context
        )
    finally:
        logger.set_correlation_id(None)
    # One line per batch at INFO (CloudWatch Logs bills every byte); per order at DEBUG.
    logger.info(
        "Orders stored",
        extra={
            "stored": len(stored),
            "duplicates": len(duplicates),
            "failed": len(response["batchItemFailures"]),
            "order_ids": stored,
        },
    )
    return response
