"""`orderpipe dlq`: which queues are DLQs (from the template) and why each message failed."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from orderpipe_local.operate.dlq import (
    DeadLetterQueue,
    DlqError,
    FailedMessage,
    FailureSource,
    dead_letter_queues,
    failed_message,
    format_age,
    notifier_replay_queues,
    order_reason,
    orders_dlq,
)
from orderpipe_local.operate.stack import OperatedStack
from orderpipe_local.stack.template import load_template
from orderpipe_local.testing import ROOT, load_event, template_without_notifier_retry_queue


def template_resources(**overrides: str) -> dict[str, dict[str, Any]]:
    template = load_template(ROOT / "template.yaml", overrides=overrides)
    return {lid: r for lid, r in template.resources.items() if template.is_created(lid)}


def operated(resources: dict[str, dict[str, Any]]) -> OperatedStack:
    return OperatedStack("orderpipe", resources, {lid: lid for lid in resources}, "us-east-1")


ORDERS_DLQ = DeadLetterQueue("OrdersDLQ", (FailureSource("queue", "OrdersQueue", "WriterFunction", 5),))
NOTIFIER_DLQ = DeadLetterQueue("NotifierDLQ", (FailureSource("mapping", "NotifierFunctionOrderInserted"),))
EMAIL_DLQ = DeadLetterQueue(
    "EmailSubscriptionsDLQ", (FailureSource("subscription", "SupportEmailSubscription"),)
)


def sqs_message(body: str, **attributes: Any) -> dict[str, Any]:
    return {
        "MessageId": "5d9b2f2e-1111-4222-8333-444455556666",
        "ReceiptHandle": "handle",
        "Body": body,
        "Attributes": {"ApproximateReceiveCount": "5", "SentTimestamp": "1764763200000"},
        **attributes,
    }


def queued_order() -> dict[str, Any]:
    """The order of the writer's fixture, as ingest queues it."""
    (record, *_) = load_event("writer-sqs-batch.json")["Records"]
    order: dict[str, Any] = json.loads(record["body"])
    return order


# --- discovery ----------------------------------------------------------------------------------


def test_the_template_s_dlqs_are_every_redrive_target_and_on_failure_destination() -> None:
    # Given the transformed template with a support address (so its subscription exists)
    resources = template_resources(SupportEmail="support@example.com", AlarmEmail="oncall@example.com")

    # When its dead-letter queues are discovered
    dlqs = {dlq.logical_id: dlq for dlq in dead_letter_queues(resources)}

    # Then they are OrdersQueue's redrive target, the stream mapping's destination (the retry
    # queue), its redrive target and the emails'
    assert list(dlqs) == ["OrdersDLQ", "NotifierRetryQueue", "NotifierDLQ", "EmailSubscriptionsDLQ"]
    assert dlqs["OrdersDLQ"].sources == (FailureSource("queue", "OrdersQueue", "WriterFunction", 5),)
    assert dlqs["OrdersDLQ"].holds_orders
    assert dlqs["NotifierRetryQueue"].sources == (
        FailureSource("mapping", "NotifierFunctionOrderInserted", "NotifierFunction"),
    )
    assert dlqs["NotifierDLQ"].sources == (FailureSource("queue", "NotifierRetryQueue", "ReplayFunction", 8),)
    assert [s.logical_id for s in dlqs["EmailSubscriptionsDLQ"].sources] == [
        "SupportEmailSubscription",
        "AlarmEmailSubscription",
    ]
    assert orders_dlq(list(dlqs.values()))[1] == "OrdersQueue"


def test_without_a_retry_queue_replay_notifier_says_so(tmp_path: Path) -> None:
    # Given a stack from before the replay: the stream mapping fails straight into NotifierDLQ
    template = load_template(template_without_notifier_retry_queue(tmp_path))
    stack = operated({lid: r for lid, r in template.resources.items() if template.is_created(lid)})

    # When the replay's queues are looked up, then it refuses, naming what is missing
    with pytest.raises(DlqError, match="has no retry queue: NotifierDLQ is NotifierFunction's on-failure"):
        notifier_replay_queues(stack)


def test_with_a_retry_queue_it_is_listed_and_replay_moves_notifier_dlq_back_to_it() -> None:
    # Given the template: the notifier's failures go to a retry queue that redrives to NotifierDLQ
    resources = template_resources()

    # When the DLQs and the replay's queues are discovered
    dlqs = {dlq.logical_id: dlq for dlq in dead_letter_queues(resources)}

    # Then the retry queue is a DLQ (it holds failure records), and the replay goes from NotifierDLQ to it
    assert dlqs["NotifierRetryQueue"].sources[0].kind == "mapping"
    assert dlqs["NotifierDLQ"].redriven_from == ["NotifierRetryQueue"]
    assert notifier_replay_queues(operated(resources)) == ("NotifierDLQ", "NotifierRetryQueue")


# --- reasons ------------------------------------------------------------------------------------


def test_an_order_that_breaks_the_model_gets_the_writer_s_reason() -> None:
    order = queued_order()
    order["items"][0]["quantity"] = 0

    reason, order_id = order_reason(sqs_message(json.dumps(order)))

    assert reason == "does not parse: items.0.quantity: Input should be greater than or equal to 1"
    assert order_id == order["orderId"]


def test_an_order_id_that_is_not_a_uuid_is_refused_as_the_writer_refuses_it() -> None:
    order = queued_order() | {"orderId": "not-a-uuid"}

    reason, _ = order_reason(sqs_message(json.dumps(order)))

    assert reason.startswith("does not parse: ")
    assert "orderId must be a UUID" in reason


def test_a_valid_order_failed_in_storage_and_can_be_redriven() -> None:
    order = queued_order()

    failed = failed_message(sqs_message(json.dumps(order)), ORDERS_DLQ)

    assert failed == FailedMessage(
        message_id="5d9b2f2e-1111-4222-8333-444455556666",
        sent_at=datetime(2025, 12, 3, 12, 0, tzinfo=UTC),
        receive_count=5,
        reason="a valid order: its storage failed; redrive it",
        order_id=order["orderId"],
    )


def test_a_body_that_is_not_json_does_not_parse() -> None:
    failed = failed_message(sqs_message("not an order"), ORDERS_DLQ)

    assert failed.reason.startswith("does not parse: Invalid JSON")
    assert failed.order_id is None


def test_a_stream_failure_record_gives_its_condition_batch_and_range() -> None:
    # Given Lambda's on-failure record of a stream batch, in its documented shape
    record = {
        "requestContext": {
            "requestId": "c9b8fa9f-5a7f-4d9c-9b4a-1c1e6d2a7f00",
            "functionArn": "arn:aws:lambda:us-east-1:123456789012:function:NotifierFunction",
            "condition": "RetryAttemptsExhausted",
            "approximateInvokeCount": 6,
        },
        "responseContext": {"statusCode": 200, "executedVersion": "$LATEST", "functionError": "Unhandled"},
        "version": "1.0",
        "timestamp": "2025-12-03T12:00:00.000Z",
        "DDBStreamBatchInfo": {
            "shardId": "shardId-00000001",
            "startSequenceNumber": "100",
            "endSequenceNumber": "104",
            "batchSize": 5,
            "streamArn": "arn:aws:dynamodb:us-east-1:123456789012:table/Orders/stream/x",
        },
    }

    failed = failed_message(sqs_message(json.dumps(record)), NOTIFIER_DLQ)

    assert failed.reason == (
        "stream batch given up (RetryAttemptsExhausted, function error Unhandled, 6 invocations): "
        "5 records of shard shardId-00000001, sequence numbers 100 to 104"
    )


def test_an_undelivered_email_shows_what_sns_put_there() -> None:
    envelope = {
        "Type": "Notification",
        "TopicArn": "arn:aws:sns:us-east-1:1:orderpipe-OrdersTopic",
        "Subject": "1 order",
    }
    attributes = {"ErrorCode": {"DataType": "String", "StringValue": "Throttling"}}

    failed = failed_message(sqs_message(json.dumps(envelope), MessageAttributes=attributes), EMAIL_DLQ)

    assert (
        failed.reason == "undelivered notification of orderpipe-OrdersTopic ('1 order'): ErrorCode=Throttling"
    )


@pytest.mark.parametrize(
    ("seconds", "text"), [(0, "0 s"), (59, "59 s"), (61, "1 min 1 s"), (3600, "1 h"), (90061, "1 d 1 h")]
)
def test_ages_read_as_an_operator_says_them(seconds: float, text: str) -> None:
    assert format_age(seconds) == text


@pytest.mark.parametrize(
    ("kind", "meaning"),
    [
        ("UnmarkedOrders", "emailed, still to be marked NOTIFIED"),
        ("PendingOrders", "of a failed batch partly mailed, still to be announced"),
    ],
)
def test_the_replays_own_messages_say_what_is_left_of_which_orders(kind: str, meaning: str) -> None:
    body = json.dumps({"kind": kind, "orderIds": ["3f6c2a7e-1b9d-4c58-9e2f-7a1d0b4c8e51"]})

    failed = failed_message(sqs_message(body), NOTIFIER_DLQ)

    assert failed.reason.startswith(meaning)
    assert failed.reason.endswith("1 order(s) 3f6c2a7e-1b9d-4c58-9e2f-7a1d0b4c8e51")
