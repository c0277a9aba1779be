"""The replay step: finish what the notifier could not, from NotifierRetryQueue, without a human.

Each message is one of two things (`orderpipe.aws.notifier_retry_queue`):
- a failure record Lambda sent when it gave up a stream batch (retries spent, or records too
  old). The batch's records are read back from the stream over the record's sequence-number
  range; once the stream no longer holds them (24 hours), the orders still PLACED that were
  stored over the range's arrival times are read from the table instead. The orders are then
  announced by the notifier's own code (`announce_new_orders`): one email for the batch (or the
  parts SNS's size limit forces), the orders already NOTIFIED left out, each email's orders
  marked as soon as it is out;
- `UnmarkedOrders`: orders emailed whose marking failed. They are marked, never mailed again.
A message not finished (SNS still failing, a record that does not parse, DynamoDB refusing)
fails alone, and is hidden for a backoff that doubles with each receive (REPLAY_BACKOFF_SECONDS,
at most an hour); after the queue's maxReceiveCount receives, SQS moves it to NotifierDLQ,
which is alarmed, and `orderpipe dlq replay notifier` brings it back once the cause is fixed.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools.utilities.batch import EventType
from aws_lambda_powertools.utilities.parser.models import SqsRecordModel
from pydantic import BaseModel, Json, ValidationError

from orderpipe.aws import clients
from orderpipe.aws.notifier_retry_queue import UnmarkedOrders
from orderpipe.aws.orders_stream import StreamRangeGone
from orderpipe.batch import FailureLoggingProcessor
from orderpipe.models import Order
from orderpipe.notifier import Deadline, OrderStreamRecord, announce_new_orders, new_order_of
from orderpipe.observability import MetricUnit, logger, metrics, tracer
from orderpipe.settings import settings

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
    from aws_lambda_powertools.utilities.typing import LambdaContext

MAX_BACKOFF_SECONDS = 3600
# ApproximateCreationDateTime is rounded down to the second: the table window is widened by it.
_ARRIVAL_PRECISION = timedelta(seconds=1)


class StreamBatchInfo(BaseModel):
    shardId: str
    startSequenceNumber: str
    endSequenceNumber: str
    approximateArrivalOfFirstRecord: datetime
    approximateArrivalOfLastRecord: datetime
    batchSize: int
    streamArn: str


class StreamBatchFailure(BaseModel):
    """The invocation record Lambda sends to a stream mapping's on-failure destination."""

    DDBStreamBatchInfo: StreamBatchInfo
    requestContext: dict[str, Any] = {}


class RetryMessage(SqsRecordModel):
    body: Json[StreamBatchFailure | UnmarkedOrders]


class NotFinished(RuntimeError):
    """Part of the message's work is left: the message is retried after its backoff."""


class ReplayBatchProcessor(FailureLoggingProcessor):
    failure_message = "Replay not finished; retried after a backoff, then parked in NotifierDLQ"
    failure_metric = "ReplaysFailed"
    record_id_field = "message_id"

    def record_id(self, record: Any) -> str | None:
        return getattr(record, "messageId", None) or getattr(record, "message_id", None)


def backoff_seconds(receive_count: int) -> int:
    """How long a message stays hidden after its `receive_count`th receive failed."""
    base = settings().REPLAY_BACKOFF_SECONDS
    return int(min(base * 2 ** max(receive_count - 1, 0), MAX_BACKOFF_SECONDS))


def orders_of_failed_batch(failure: StreamBatchFailure, deadline: Deadline) -> list[Order]:
    """The new orders of a given-up stream batch: from the stream, or the table once trimmed."""
    info = failure.DDBStreamBatchInfo
    call_budget = settings().aws_call_budget_seconds

    def time_for_a_request() -> bool:
        return deadline.allows(call_budget)

    try:
        records = clients.orders_stream().records_between(
            info.streamArn,
            info.shardId,
            info.startSequenceNumber,
            info.endSequenceNumber,
            time_for_a_request=time_for_a_request,
        )
    except StreamRangeGone:
        logger.warning(
            "Failed batch no longer in the stream; its orders still PLACED are read from the table",
            extra={
                "shard_id": info.shardId,
                "first": info.startSequenceNumber,
                "last": info.endSequenceNumber,
            },
        )
        metrics.add_metric(name="ReplaysFromTable", unit=MetricUnit.Count, value=1)
        return clients.orders_table().placed_orders_stored_between(
            info.approximateArrivalOfFirstRecord - _ARRIVAL_PRECISION,
            info.approximateArrivalOfLastRecord + 2 * _ARRIVAL_PRECISION,
            time_for_a_request=time_for_a_request,
        )
    orders = []
    for record in records:
        try:
            change = OrderStreamRecord.model_validate({**record, "eventSourceARN": info.streamArn})
        except ValidationError:
            if _item_is_gone(record):
                continue
            # The item is still there and no order: retried, then parked in NotifierDLQ for a human.
            raise
        order = new_order_of(change)
        if order is not None:
            orders.append(order)
    return orders


def _item_is_gone(record: dict[str, Any]) -> bool:
    """A record that is no order, whose item was deleted since: there is nothing to announce."""
    order_id = record.get("dynamodb", {}).get("Keys", {}).get("orderId", {}).get("S")
    if not order_id or clients.orders_table().holds(order_id):
        return False
    logger.warning(
        "Stream record that is no order, its item deleted since: skipped", extra={"order_id": order_id}
    )
    return True


@tracer.capture_method(capture_response=False)
def replay(message: RetryMessage, deadline: Deadline) -> None:
    work = message.body
    if isinstance(work, UnmarkedOrders):
        result = clients.orders_table().mark_all_notified(
            work.order_ids, time_for_a_request=lambda: deadline.allows(settings().aws_call_budget_seconds)
        )
        logger.info(
            "Announced orders marked NOTIFIED",
            extra={"order_ids": result.marked, "not_placed": result.not_placed},
        )
        if result.failed:
            raise NotFinished(f"{len(result.failed)} order(s) still not marked NOTIFIED: {result.failed}")
        return
    orders = orders_of_failed_batch(work, deadline)
    announcement = announce_new_orders(orders, deadline)
    logger.info(
        "Failed stream batch replayed",
        extra={"condition": work.requestContext.get("condition"), "order_ids": announcement.announced},
    )
    if announcement.announced:
        metrics.add_metric(name="OrdersReplayed", unit=MetricUnit.Count, value=len(announcement.announced))
    if announcement.not_announced:
        raise NotFinished(f"{len(announcement.not_announced)} order(s) not announced yet")


def replay_failed_notifications(
    event: dict[str, Any], context: LambdaContext | None = None
) -> PartialItemFailureResponse:
    """Process one NotifierRetryQueue batch; a failed message is hidden for its backoff."""
    records = event.get("Records", [])
    if not records:
        return {"batchItemFailures": []}
    deadline = Deadline.of(context)
    processor = ReplayBatchProcessor(
        event_type=EventType.SQS, model=RetryMessage, raise_on_entire_batch_failure=False
    )

    def replay_one(record: RetryMessage) -> None:  # Powertools passes it as `record=`
        replay(record, deadline)

    try:
        with processor(records=records, handler=replay_one, lambda_context=context):
            processor.process()
        response = processor.response()
        by_id = {record["messageId"]: record for record in records}
        for failure in response["batchItemFailures"]:
            record = by_id[failure["itemIdentifier"]]
            receives = int(record.get("attributes", {}).get("ApproximateReceiveCount", "1"))
            delay = backoff_seconds(receives)
            if not clients.notifier_retry_queue().postpone(record["receiptHandle"], delay):
                logger.warning("Backoff not set; the message returns after the queue's visibility timeout")
        return response
    finally:
        logger.set_correlation_id(None)
