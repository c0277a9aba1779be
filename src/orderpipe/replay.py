"""The replay step: finish what the notifier could not, from NotifierRetryQueue, without a human.

Each message is one of three things (`orderpipe.aws.notifier_retry_queue`):
- a failure record Lambda sent when it gave up a stream batch (retries spent, or records too
  old). The batch's records are read back from the stream over the record's sequence-number
  range; once the stream no longer holds them (24 hours), the orders still PLACED that were
  stored over the range's arrival times are read from the table instead. The orders are then
  announced by the notifier's own code (`announce_new_orders`): one email for the batch (or the
  parts SNS's size limit forces), the orders already NOTIFIED left out, each email's orders
  marked as soon as it is out;
- `UnmarkedOrders`: orders emailed whose marking failed. They are marked, never mailed again;
- `PendingOrders`: the orders of a replayed batch still to announce, read from the table.
A message not finished (SNS still failing, a record that does not parse, DynamoDB refusing)
fails alone, and is hidden for a backoff that doubles with each receive (REPLAY_BACKOFF_SECONDS,
at most an hour); after the queue's maxReceiveCount receives, SQS moves it to NotifierDLQ,
which is alarmed, and `orderpipe dlq replay notifier` brings it back once the cause is fixed.
Once part of a message's orders was mailed, it is not retried as a whole (that would mail again
those of its orders whose marking failed): the orders left are handed over as `PendingOrders`
and the message succeeds.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools.utilities.batch import EventType
from aws_lambda_powertools.utilities.parser.models import SqsRecordModel
from pydantic import BaseModel, Json, ValidationError

from orderpipe.aws import clients
from orderpipe.aws.notifier_retry_queue import PendingOrders, RetryQueueUnavailable, UnmarkedOrders
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
# The writer stamps storedAt before its PutItem, which may take a call budget (3 s) and retries to
# commit, and the stream's ApproximateCreationDateTime is rounded down to the second: the table
# window is widened on both sides by more than that.
_STORED_AT_MARGIN = timedelta(seconds=10)


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
    body: Json[StreamBatchFailure | UnmarkedOrders | PendingOrders]


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


def orders_of_failed_batch(failure: StreamBatchFailure, deadline: Deadline) -> tuple[list[Order], list[str]]:
    """The new orders of a given-up stream batch, from the stream or, once it is trimmed, the
    table; and the ids of its records that are no order (their items still there)."""
    info = failure.DDBStreamBatchInfo
    try:
        records = clients.orders_stream().records_between(
            info.streamArn,
            info.shardId,
            info.startSequenceNumber,
            info.endSequenceNumber,
            time_for_a_request=_time_for_a_request(deadline),
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
        stored = clients.orders_table().placed_orders_stored_between(
            info.approximateArrivalOfFirstRecord - _STORED_AT_MARGIN,
            info.approximateArrivalOfLastRecord + _STORED_AT_MARGIN,
            time_for_a_request=_time_for_a_request(deadline),
        )
        return stored, []
    orders: list[Order] = []
    not_orders: list[str] = []
    for record in records:
        try:
            change = OrderStreamRecord.model_validate({**record, "eventSourceARN": info.streamArn})
        except ValidationError:
            order_id = record.get("dynamodb", {}).get("Keys", {}).get("orderId", {}).get("S")
            if order_id and not _item_is_gone(order_id):
                not_orders.append(order_id)  # still there and no order: for a human, after retries
            continue
        order = new_order_of(change)
        if order is not None:
            orders.append(order)
    return orders, not_orders


def pending_orders(work: PendingOrders) -> tuple[list[Order], list[str]]:
    """The orders handed over to announce, as the table holds them now (absent ones left out);
    and the ids of items that are no order."""
    table = clients.orders_table()
    orders: list[Order] = []
    not_orders: list[str] = []
    for order_id in work.order_ids:
        try:
            order = table.get_order(order_id)
        except ValidationError:
            not_orders.append(order_id)
            continue
        if order is not None:
            orders.append(order)
    return orders, not_orders


def _time_for_a_request(deadline: Deadline) -> Callable[[], bool]:
    budget = settings().aws_call_budget_seconds
    return lambda: deadline.allows(budget)


def _item_is_gone(order_id: str) -> bool:
    """A record that is no order, whose item was deleted since: there is nothing to announce."""
    if clients.orders_table().holds(order_id):
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
            work.order_ids, time_for_a_request=_time_for_a_request(deadline)
        )
        logger.info(
            "Announced orders marked NOTIFIED",
            extra={"order_ids": result.marked, "not_placed": result.not_placed},
        )
        if result.failed:
            raise NotFinished(f"{len(result.failed)} order(s) still not marked NOTIFIED: {result.failed}")
        return
    if isinstance(work, PendingOrders):
        orders, not_orders = pending_orders(work)
        condition = "PendingOrders"
    else:
        orders, not_orders = orders_of_failed_batch(work, deadline)
        condition = str(work.requestContext.get("condition"))
    # Raises if the first email fails: nothing left, so the message is retried whole.
    announcement = announce_new_orders(orders, deadline)
    logger.info(
        "Failed notification replayed", extra={"condition": condition, "order_ids": announcement.announced}
    )
    if announcement.announced:
        metrics.add_metric(name="OrdersReplayed", unit=MetricUnit.Count, value=len(announcement.announced))
    left = announcement.not_announced + not_orders
    if not left:
        return
    if not announcement.announced:
        raise NotFinished(f"{len(left)} order(s) not announced yet")
    try:
        message_id = clients.notifier_retry_queue().send_pending(left)
    except RetryQueueUnavailable as error:
        raise NotFinished(f"{len(left)} order(s) not announced yet, and not handed over") from error
    logger.warning(
        "Part of a failed notification announced; the rest handed over to announce",
        extra={"order_ids": left, "sqs_message_id": message_id},
    )


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
