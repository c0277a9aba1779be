"""The notifier step: one support email per stream batch of new orders, each order mailed once.

Per record (Batch Processor): parse the new image into an Order; a record that does not parse
fails only itself (its SequenceNumber in the partial batch response; Lambda retries from it,
bisects, and finally parks its metadata in NotifierDLQ). Anything but an INSERT is ignored:
our own PLACED -> NOTIFIED update comes back as a MODIFY.

Per batch: skip the orders already NOTIFIED (a retried batch), publish one email (or the parts
SNS's size limit forces) for the rest, and mark each email's orders NOTIFIED as soon as it is
out, so that whatever happens next, a retry leaves them out.
- SNS refuses the email or cannot be reached: nothing of that email is marked.
- SNS does not answer (read timeout, dropped connection): the email most likely went out, and
  a standard topic cannot drop a second copy. It is counted as sent: its orders are marked,
  logged and counted (SupportEmailsUnconfirmed, alarmed) for someone to check the mailbox.
- Not enough time left for the next email and its marking: it is not published, rather than
  Lambda ending the invocation between a publish and its marking.
- Marking fails after the email went out: its record still succeeds, as retrying it would mail
  it twice; the order ids go to NotifierRetryQueue (`UnmarkedOrders`), where the replay function
  marks them later. Should that send fail too, they are logged and counted
  (NotifiedOrdersNotMarked, alarmed) and stay PLACED.
When an email is not sent, what happens to the batch depends on whether one already left:
- none did: the invocation fails, and Lambda retries the records (bisecting);
- one did: the records from the first order not announced on are answered as failed (the
  stream's checkpoint), and the ones before succeed. A failed invocation would have Lambda
  retry them all, mailing again the orders whose marking failed.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools.utilities.batch import EventType
from aws_lambda_powertools.utilities.parser.models import (
    DynamoDBStreamChangedRecordModel,
    DynamoDBStreamRecordModel,
)
from pydantic import model_validator

from orderpipe.aws import clients
from orderpipe.aws.notifier_retry_queue import RetryQueueUnavailable
from orderpipe.aws.orders_table import MARK_CONCURRENCY
from orderpipe.aws.orders_topic import PublishOutcomeUnknown, TopicUnavailable
from orderpipe.batch import FailureLoggingProcessor
from orderpipe.models import Order, OrderStatus
from orderpipe.observability import MetricUnit, logger, metrics, tracer
from orderpipe.settings import MissingSetting, settings
from orderpipe.support_email import SupportEmailDetail, render_support_emails

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
    from aws_lambda_powertools.utilities.typing import LambdaContext

    from orderpipe.support_email import SupportEmail

# Kept back from the function's Timeout for what follows the last AWS call: the partial batch
# response, flushing metrics and logs.
SAFETY_MARGIN_SECONDS = 1.0


class NotEnoughTime(TopicUnavailable):
    """The next email and its marking might not finish before the function's Timeout."""


@dataclass(frozen=True)
class Deadline:
    """When the invocation must be done with AWS calls (monotonic clock)."""

    at: float

    @classmethod
    def of(cls, context: LambdaContext | None) -> Deadline:
        if context is None:
            return cls(math.inf)
        return cls(time.monotonic() + context.get_remaining_time_in_millis() / 1000 - SAFETY_MARGIN_SECONDS)

    def allows(self, seconds: float) -> bool:
        return time.monotonic() + seconds <= self.at


class OrderChange(DynamoDBStreamChangedRecordModel):
    NewImage: Order | None = None


class OrderStreamRecord(DynamoDBStreamRecordModel):
    """A record of OrdersTable's stream; an INSERT's new image is an Order."""

    dynamodb: OrderChange

    @model_validator(mode="before")
    @classmethod
    def _only_inserts_carry_new_orders(cls, data: Any) -> Any:
        """Other changes are ignored, so their images are not parsed and can never fail."""
        if (
            isinstance(data, dict)
            and data.get("eventName") != "INSERT"
            and isinstance(data.get("dynamodb"), dict)
        ):
            change = {key: value for key, value in data["dynamodb"].items() if key != "NewImage"}
            return {**data, "dynamodb": change}
        return data


class StreamBatchProcessor(FailureLoggingProcessor):
    failure_message = "Stream record not processed; Lambda retries it, then parks it in NotifierDLQ"
    failure_metric = "StreamRecordsFailed"
    record_id_field = "sequence_number"

    def record_id(self, record: Any) -> str | None:
        # A parsed record is the model (camelCase); one that failed to parse, Powertools' data class.
        change = getattr(record, "dynamodb", None)
        return getattr(change, "SequenceNumber", None) or getattr(change, "sequence_number", None)


def check_notifier_settings() -> SupportEmailDetail:
    """Called at cold start, so that a bad setting (SUPPORT_EMAIL_DETAIL) fails the function's
    init, before any record is taken, rather than every batch; raises InvalidSetting."""
    detail = settings().support_email_detail
    logger.info("Notifier ready", extra={"support_email_detail": str(detail)})
    return detail


def new_order_of(record: OrderStreamRecord) -> Order | None:
    """The order an INSERT announces; None for any other change."""
    if record.eventName != "INSERT":
        logger.debug("Ignoring a stream record that is not an INSERT", extra={"event_name": record.eventName})
        return None
    order = record.dynamodb.NewImage
    if order is None:
        raise ValueError("INSERT record without a new image (the stream must be NEW_IMAGE)")
    logger.set_correlation_id(order.order_id)
    logger.debug("New order in the stream")
    return order


@dataclass(frozen=True)
class Announcement:
    """What became of a batch's new orders: the ids mailed (or counted as mailed), and the ids
    of the emails not sent, in batch order, which the stream must bring back."""

    announced: list[str]
    not_announced: list[str]


@tracer.capture_method(capture_response=False)
def announce_new_orders(orders: Sequence[Order], deadline: Deadline | None = None) -> Announcement:
    """Email support about the orders not yet NOTIFIED, marking each email's orders as soon as it
    is out. An email not sent raises if none left before it (TopicUnavailable or the storage
    error), and otherwise ends the announcement: its orders and the rest are `not_announced`."""
    logger.set_correlation_id(None)  # batch-level logs; per-order ones set the order id
    deadline = deadline or Deadline(math.inf)
    unique = list({order.order_id: order for order in orders if order.status == OrderStatus.PLACED}.values())
    if not unique:
        return Announcement([], [])
    table = clients.orders_table()
    # A StorageError here propagates: without knowing what was sent, send nothing.
    already_notified = table.notified_order_ids(order.order_id for order in unique)
    if already_notified:
        metrics.add_metric(name="OrdersAlreadyNotified", unit=MetricUnit.Count, value=len(already_notified))
        logger.info("Skipping orders already announced", extra={"order_ids": sorted(already_notified)})
    to_announce = [order for order in unique if order.order_id not in already_notified]

    announced: list[str] = []
    topic = clients.orders_topic()
    emails = render_support_emails(to_announce, detail=settings().support_email_detail)
    for position, email in enumerate(emails):
        log_fields = {"subject": email.subject, "order_ids": list(email.order_ids)}
        try:
            if not deadline.allows(_time_to_send(email)):
                logger.warning("Not enough time left to send the next support email", extra=log_fields)
                raise NotEnoughTime(f"not enough time left to publish {email.subject!r} and mark its orders")
            message_id = topic.publish(email)
        except PublishOutcomeUnknown:
            # Most likely sent: count it as sent, so that no retry mails these orders again.
            logger.exception(
                "Support email unconfirmed: SNS did not answer; counted as sent, check the mailbox",
                extra=log_fields,
            )
            metrics.add_metric(name="SupportEmailsUnconfirmed", unit=MetricUnit.Count, value=1)
            _mark_notified(email.order_ids, deadline)
            announced.extend(email.order_ids)
            return _stopped_after(announced, emails[position + 1 :])
        except Exception:
            logger.exception("Support email not sent; its records are retried", extra=log_fields)
            if not announced:
                raise
            return _stopped_after(announced, emails[position:])
        metrics.add_metric(name="SupportEmailsSent", unit=MetricUnit.Count, value=1)
        logger.info("Support email sent", extra={"sns_message_id": message_id, **log_fields})
        _mark_notified(email.order_ids, deadline)
        announced.extend(email.order_ids)
    return Announcement(announced, [])


def _stopped_after(announced: list[str], not_sent: Sequence[SupportEmail]) -> Announcement:
    not_announced = [order_id for email in not_sent for order_id in email.order_ids]
    if not_announced:
        metrics.add_metric(name="OrdersNotAnnounced", unit=MetricUnit.Count, value=len(not_announced))
    return Announcement(announced, not_announced)


def _time_to_send(email: SupportEmail) -> float:
    """The longest a publish and the marking of its orders can take (MARK_CONCURRENCY updates at
    once), and the hand-over of those whose marking failed to NotifierRetryQueue."""
    current = settings()
    rounds = math.ceil(len(email.order_ids) / MARK_CONCURRENCY)
    return current.sns_publish_budget_seconds + (rounds + 1) * current.aws_call_budget_seconds


def _mark_notified(order_ids: Sequence[str], deadline: Deadline) -> None:
    if not order_ids:
        return
    metrics.add_metric(name="OrdersNotified", unit=MetricUnit.Count, value=len(order_ids))
    call_budget = settings().aws_call_budget_seconds
    result = clients.orders_table().mark_all_notified(
        order_ids, at=datetime.now(UTC), time_for_a_request=lambda: deadline.allows(call_budget)
    )
    if result.failed:
        _hand_over_unmarked(result.failed)
    for order_id in result.not_placed:
        logger.set_correlation_id(order_id)
        logger.warning("Order announced but was not PLACED (already NOTIFIED, or absent)")
    logger.set_correlation_id(None)
    logger.info("Orders announced and marked NOTIFIED", extra={"order_ids": result.marked})


def _hand_over_unmarked(order_ids: list[str]) -> None:
    """Retrying their records would email these orders a second time: the replay function marks
    them instead. If even that cannot be arranged, they stay PLACED, logged and alarmed."""
    try:
        message_id = clients.notifier_retry_queue().send_unmarked(order_ids)
    except (RetryQueueUnavailable, MissingSetting):
        for order_id in order_ids:
            logger.set_correlation_id(order_id)
            logger.exception("Order announced but not marked NOTIFIED, nor handed to the replay")
        logger.set_correlation_id(None)
        metrics.add_metric(name="NotifiedOrdersNotMarked", unit=MetricUnit.Count, value=len(order_ids))
        return
    logger.warning(
        "Orders announced but not marked NOTIFIED; handed to the replay function to mark",
        extra={"order_ids": order_ids, "sqs_message_id": message_id},
    )
    metrics.add_metric(name="OrdersMarkingRetried", unit=MetricUnit.Count, value=len(order_ids))


def _checkpoint(outcomes: Sequence[tuple[Any, Any, Any]], announcement: Announcement) -> str:
    """The sequence number of the first record whose order was not announced (outcomes hold the
    records as Lambda sent them): Lambda retries the shard from there."""
    not_announced = set(announcement.not_announced)
    return next(
        str(record["dynamodb"]["SequenceNumber"])
        for status, order, record in outcomes
        if status == "success" and order is not None and order.order_id in not_announced
    )


def notify_support(event: dict[str, Any], context: LambdaContext | None = None) -> PartialItemFailureResponse:
    """Process one stream batch; the answer names the records Lambda should retry."""
    processor = StreamBatchProcessor(  # one per batch: it holds the batch's outcomes
        event_type=EventType.DynamoDBStreams, model=OrderStreamRecord, raise_on_entire_batch_failure=False
    )
    deadline = Deadline.of(context)
    try:
        with processor(records=event.get("Records", []), handler=new_order_of, lambda_context=context):
            outcomes = processor.process()
        new_orders = [result for status, result, _ in outcomes if status == "success" and result is not None]
        announcement = announce_new_orders(new_orders, deadline)
        response = processor.response()
        if announcement.not_announced:
            response["batchItemFailures"].append({"itemIdentifier": _checkpoint(outcomes, announcement)})
        return response
    finally:
        logger.set_correlation_id(None)
