"""ReplayFunction against NotifierRetryQueue, OrdersTable (and its stream) and OrdersTopic made
from template.yaml: a given-up stream batch ends announced, each order in exactly one email.

The failure records are built as Lambda sends them, over the real sequence numbers moto's
stream gave the orders stored here.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest

from orderpipe.aws import clients
from orderpipe.aws.notifier_retry_queue import UnmarkedOrders
from orderpipe.aws.orders_table import from_attribute_values, to_attribute_values
from orderpipe.models import Order, utc_timestamp
from orderpipe.replay import backoff_seconds
from orderpipe_local.runtime.lambda_context import LocalLambdaContext
from orderpipe_local.stack.provision import Stack
from orderpipe_local.stack.template import Template
from orderpipe_local.testing import load_event
from tests.integration.aws_faults import fail_calls
from tests.integration.conftest import Email, handler_of
from tests.integration.test_notifier import (
    FlakyTopic,
    Handler,
    big_insert_event,
    failed_ids,
    metric_total,
    status_of,
)

SINGLE_ORDER = load_event("notifier-stream-insert.json")["Records"][0]["dynamodb"]["NewImage"]


@pytest.fixture
def replay(stack: Stack, template: Template) -> Handler:
    return handler_of(template, "ReplayFunction")


def replay_context() -> LocalLambdaContext:
    return LocalLambdaContext("ReplayFunction", timeout_seconds=60)


def store_orders(count: int, *, start: int = 0) -> list[str]:
    """`count` copies of the fixture's order, each its own id, stored by the writer's code."""
    base = Order.model_validate(from_attribute_values(SINGLE_ORDER))
    order_ids = []
    for number in range(start, start + count):
        order = base.model_copy(update={"order_id": f"00000000-0000-4000-8000-{number:012d}"})
        assert clients.orders_table().put_new_order(order)
        order_ids.append(order.order_id)
    return order_ids


def stream_inserts(stack: Stack) -> list[dict[str, Any]]:
    """Every INSERT record OrdersTable's stream holds, in order."""
    streams = boto3.client("dynamodbstreams")
    stream_arn = stack.attribute("OrdersTable", "StreamArn")
    (shard,) = streams.describe_stream(StreamArn=stream_arn)["StreamDescription"]["Shards"]
    iterator = streams.get_shard_iterator(
        StreamArn=stream_arn, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
    )["ShardIterator"]
    records = streams.get_records(ShardIterator=iterator, Limit=1000)["Records"]
    return [record | {"shardId": shard["ShardId"]} for record in records if record["eventName"] == "INSERT"]


def given_up(stack: Stack, records: list[dict[str, Any]]) -> dict[str, Any]:
    """The invocation record Lambda sends to the on-failure destination for these records."""
    first, last = records[0], records[-1]
    return {
        "requestContext": {"condition": "RetryAttemptsExhausted", "approximateInvokeCount": 6},
        "responseContext": {"statusCode": 200, "functionError": "Unhandled"},
        "version": "1.0",
        "timestamp": utc_timestamp(datetime.now(UTC)),
        "DDBStreamBatchInfo": {
            "shardId": first["shardId"],
            "startSequenceNumber": first["dynamodb"]["SequenceNumber"],
            "endSequenceNumber": last["dynamodb"]["SequenceNumber"],
            "approximateArrivalOfFirstRecord": utc_timestamp(
                first["dynamodb"]["ApproximateCreationDateTime"]
            ),
            "approximateArrivalOfLastRecord": utc_timestamp(last["dynamodb"]["ApproximateCreationDateTime"]),
            "batchSize": len(records),
            "streamArn": stack.attribute("OrdersTable", "StreamArn"),
        },
    }


def delivered(stack: Stack, body: dict[str, Any] | str, visibility_timeout: int = 30) -> dict[str, Any]:
    """The SQS event Lambda invokes the replay with, for `body` sent to NotifierRetryQueue."""
    boto3.client("sqs").send_message(
        QueueUrl=stack.ref("NotifierRetryQueue"),
        MessageBody=body if isinstance(body, str) else json.dumps(body),
    )
    (event,) = waiting(stack, visibility_timeout)
    return event


def waiting(stack: Stack, visibility_timeout: int = 30) -> list[dict[str, Any]]:
    """An SQS event for each message NotifierRetryQueue holds now, as Lambda would receive them."""
    sqs = boto3.client("sqs")
    queue_url = stack.ref("NotifierRetryQueue")
    events = []
    while messages := sqs.receive_message(
        QueueUrl=queue_url,
        AttributeNames=["All"],
        MaxNumberOfMessages=10,
        VisibilityTimeout=visibility_timeout,
    ).get("Messages"):
        events += [
            {
                "Records": [
                    {
                        "messageId": message["MessageId"],
                        "receiptHandle": message["ReceiptHandle"],
                        "body": message["Body"],
                        "attributes": message["Attributes"],
                        "messageAttributes": {},
                        "md5OfBody": message["MD5OfBody"],
                        "eventSource": "aws:sqs",
                        "eventSourceARN": stack.attribute("NotifierRetryQueue", "Arn"),
                        "awsRegion": "us-east-1",
                    }
                ]
            }
            for message in messages
        ]
        if visibility_timeout == 0:
            break  # each receive would bring the same messages again
    return events


def test_a_given_up_batch_is_announced_in_one_email_and_a_second_delivery_mails_nothing(
    stack: Stack, replay: Handler, inbox: Callable[[], list[Email]]
) -> None:
    # Given three stored orders whose stream batch the notifier gave up
    order_ids = store_orders(3)
    failure = given_up(stack, stream_inserts(stack))

    # When the replay takes the failure record
    response = replay(delivered(stack, failure), replay_context())

    # Then one email announces the three, which are NOTIFIED
    assert failed_ids(response) == []
    emails = inbox()
    assert len(emails) == 1
    assert all(order_id in emails[0][1] for order_id in order_ids)
    assert {status_of(stack, order_id) for order_id in order_ids} == {"NOTIFIED"}

    # When SQS delivers the same record again
    assert failed_ids(replay(delivered(stack, failure), replay_context())) == []

    # Then nothing is mailed a second time
    assert inbox() == []


def test_only_the_range_of_the_failure_record_is_replayed_and_orders_already_notified_are_left_out(
    stack: Stack, replay: Handler, inbox: Callable[[], list[Email]]
) -> None:
    # Given five orders in the stream, of which the failed batch held the 2nd to the 4th, and the
    # 3rd already NOTIFIED
    order_ids = store_orders(5)
    inserts = stream_inserts(stack)
    assert clients.orders_table().mark_notified(order_ids[2])

    # When
    response = replay(delivered(stack, given_up(stack, inserts[1:4])), replay_context())

    # Then one email holds the 2nd and the 4th, and nothing else
    assert failed_ids(response) == []
    ((_, body),) = inbox()
    assert [order_id for order_id in order_ids if order_id in body] == [order_ids[1], order_ids[3]]
    assert [status_of(stack, order_id) for order_id in order_ids] == [
        "PLACED",
        "NOTIFIED",
        "NOTIFIED",
        "NOTIFIED",
        "PLACED",
    ]


@pytest.mark.parametrize("backoff", [0, 60])
def test_while_sns_still_fails_the_message_fails_alone_and_waits_out_its_backoff(
    stack: Stack,
    replay: Handler,
    inbox: Callable[[], list[Email]],
    monkeypatch: pytest.MonkeyPatch,
    backoff: int,
) -> None:
    # Given SNS refusing every publish, and the replay's first backoff
    monkeypatch.setenv("REPLAY_BACKOFF_SECONDS", str(backoff))
    clients.reset()
    order_ids = store_orders(2)
    fail_calls(clients.orders_topic().client, "Publish", "InternalError", status=500)
    # (received as Lambda's poller would, but hidden for only 1 s by the receive itself)
    event = delivered(stack, given_up(stack, stream_inserts(stack)), visibility_timeout=1)

    # When
    response = replay(event, replay_context())

    # Then the message is reported failed, nothing is marked, and it stays hidden for its backoff
    # (0: back at once), past the receive's own 1 s
    assert failed_ids(response) == [event["Records"][0]["messageId"]]
    assert inbox() == []
    assert {status_of(stack, order_id) for order_id in order_ids} == {"PLACED"}
    time.sleep(1.5)
    again = boto3.client("sqs").receive_message(QueueUrl=stack.ref("NotifierRetryQueue")).get("Messages", [])
    assert len(again) == (1 if backoff == 0 else 0)


def test_the_backoff_doubles_with_each_receive_up_to_an_hour(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REPLAY_BACKOFF_SECONDS", "60")
    clients.reset()

    assert [backoff_seconds(receives) for receives in range(1, 9)] == [
        60,
        120,
        240,
        480,
        960,
        1920,
        3600,
        3600,
    ]


def test_once_the_stream_no_longer_holds_the_range_its_orders_still_placed_come_from_the_table(
    stack: Stack, replay: Handler, inbox: Callable[[], list[Email]]
) -> None:
    # Given a failure record whose records the stream has trimmed (24 hours later), over two
    # orders still PLACED and one NOTIFIED since; and an order stored long after the range
    order_ids = store_orders(3)
    failure = given_up(stack, stream_inserts(stack))
    assert clients.orders_table().mark_notified(order_ids[0])
    later = Order.model_validate(from_attribute_values(SINGLE_ORDER)).model_copy(
        update={"order_id": "00000000-0000-4000-8000-999999999999"}
    )
    stored_later = later.model_copy(update={"stored_at": datetime.now(UTC) + timedelta(hours=1)})
    clients.orders_table().client.put_item(
        TableName=stack.ref("OrdersTable"),
        Item=to_attribute_values(stored_later.to_item()),
    )
    fail_calls(clients.orders_stream().client, "GetShardIterator", "TrimmedDataAccessException")

    # When
    response = replay(delivered(stack, failure), replay_context())

    # Then the two orders still PLACED of the range are mailed, in one email; the rest is not
    assert failed_ids(response) == []
    ((_, body),) = inbox()
    assert order_ids[1] in body
    assert order_ids[2] in body
    assert order_ids[0] not in body
    assert later.order_id not in body
    assert status_of(stack, later.order_id) == "PLACED"


def test_orders_emailed_but_not_marked_are_marked_and_never_mailed_again(
    stack: Stack, replay: Handler, inbox: Callable[[], list[Email]]
) -> None:
    # Given the notifier handed over two orders it mailed but could not mark, one marked since
    order_ids = store_orders(2)
    assert clients.orders_table().mark_notified(order_ids[1])

    # When
    response = replay(delivered(stack, UnmarkedOrders(order_ids=order_ids).to_message()), replay_context())

    # Then both are NOTIFIED and no email left
    assert failed_ids(response) == []
    assert {status_of(stack, order_id) for order_id in order_ids} == {"NOTIFIED"}
    assert inbox() == []


def test_when_marking_still_fails_the_hand_over_is_retried(stack: Stack, replay: Handler) -> None:
    order_ids = store_orders(1)
    table = clients.orders_table().client
    fail_calls(table, "TransactWriteItems", "InternalServerError", status=500)
    fail_calls(table, "UpdateItem", "InternalServerError", status=500)
    event = delivered(stack, UnmarkedOrders(order_ids=order_ids).to_message())

    assert failed_ids(replay(event, replay_context())) == [event["Records"][0]["messageId"]]
    assert status_of(stack, order_ids[0]) == "PLACED"


def test_a_message_that_is_neither_kind_fails_alone(stack: Stack, replay: Handler) -> None:
    event = delivered(stack, {"hello": "world"})

    assert failed_ids(replay(event, replay_context())) == [event["Records"][0]["messageId"]]


@pytest.mark.parametrize(
    "fixture", ["replay-sqs-stream-batch-given-up.json", "replay-sqs-unmarked-orders.json"]
)
def test_replay_fixtures_run_to_completion(
    stack: Stack,
    replay: Handler,
    inbox: Callable[[], list[Email]],
    capsys: pytest.CaptureFixture[str],
    fixture: str,
) -> None:
    # Given the fixture's order stored and PLACED, its stream long gone (the fixture's stream ARN
    # names no stream here: the table is read instead), and its receipt handle unknown to SQS
    clients.orders_table().put_new_order(Order.model_validate(from_attribute_values(SINGLE_ORDER)))

    # When
    response = replay(load_event(fixture), replay_context())

    # Then the record succeeds: the given-up batch is looked for in the table, whose window (2024)
    # holds no PLACED order stored now, so nothing is mailed; the unmarked order is marked
    assert failed_ids(response) == []
    assert inbox() == []
    emf = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"_aws"' in line]
    from_table = sum(
        metric_total(document, "ReplaysFromTable") for document in emf if "ReplaysFromTable" in document
    )
    if fixture == "replay-sqs-unmarked-orders.json":
        assert status_of(stack, "3f6c2a7e-1b9d-4c58-9e2f-7a1d0b4c8e51") == "NOTIFIED"
        assert from_table == 0
    else:
        assert status_of(stack, "3f6c2a7e-1b9d-4c58-9e2f-7a1d0b4c8e51") == "PLACED"
        assert from_table == 1


def test_a_record_that_is_no_order_blocks_nothing_and_waits_for_its_item_to_go(
    stack: Stack, replay: Handler, inbox: Callable[[], list[Email]]
) -> None:
    # Given a failed batch of an order and an item that is no order
    order_ids = store_orders(1)
    dynamodb = boto3.client("dynamodb")
    dynamodb.put_item(
        TableName=stack.ref("OrdersTable"), Item={"orderId": {"S": "broken"}, "status": {"S": "PLACED"}}
    )

    # When it is replayed
    first = replay(delivered(stack, given_up(stack, stream_inserts(stack))), replay_context())

    # Then the order is announced, and the broken record alone is handed over, which fails while
    # its item is there (for a human, after its tries) and succeeds once it is deleted
    assert failed_ids(first) == []
    ((_, body),) = inbox()
    assert order_ids[0] in body
    assert status_of(stack, order_ids[0]) == "NOTIFIED"
    (pending,) = waiting(stack, visibility_timeout=1)
    assert json.loads(pending["Records"][0]["body"]) == {"kind": "PendingOrders", "orderIds": ["broken"]}
    assert len(failed_ids(replay(pending, replay_context()))) == 1
    dynamodb.delete_item(TableName=stack.ref("OrdersTable"), Key={"orderId": {"S": "broken"}})
    boto3.client("sqs").change_message_visibility(
        QueueUrl=stack.ref("NotifierRetryQueue"),
        ReceiptHandle=pending["Records"][0]["receiptHandle"],
        VisibilityTimeout=0,
    )
    (pending,) = waiting(stack)
    assert failed_ids(replay(pending, replay_context())) == []
    assert inbox() == []


def test_once_part_of_a_batch_is_mailed_a_retry_takes_only_the_rest(
    stack: Stack, replay: Handler, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a given-up batch that takes two emails; the first goes out but its orders cannot be
    # marked (the table refuses), and SNS refuses the second
    _, order_ids = big_insert_event(stack, 3)
    failure = given_up(stack, stream_inserts(stack))
    table = clients.orders_table().client
    undo_marking = [
        fail_calls(table, "TransactWriteItems", "InternalServerError", status=500),
        fail_calls(table, "UpdateItem", "InternalServerError", status=500),
    ]
    topic = FlakyTopic(failing_calls={2})
    monkeypatch.setattr(clients.orders_topic(), "publish", topic.publish)

    # When the replay takes the failure record
    response = replay(delivered(stack, failure), replay_context())

    # Then the record succeeds (a retry of all of it would mail the first email's orders again):
    # the first email's orders are handed over to be marked, the rest to be announced
    (first_part,) = topic.published
    rest = [order_id for order_id in order_ids if order_id not in first_part.order_ids]
    assert rest
    assert failed_ids(response) == []
    handed_over = [json.loads(event["Records"][0]["body"]) for event in waiting(stack)]
    assert sorted(handed_over, key=lambda work: str(work["kind"])) == [
        {"kind": "PendingOrders", "orderIds": rest},
        {"kind": "UnmarkedOrders", "orderIds": list(first_part.order_ids)},
    ]

    # When the table and SNS are back and both are replayed
    for undo in undo_marking:
        undo()
    for body in handed_over:
        assert failed_ids(replay(delivered(stack, body), replay_context())) == []

    # Then every order was mailed exactly once, and is NOTIFIED
    announced = [order_id for email in topic.published for order_id in email.order_ids]
    assert sorted(announced) == sorted(order_ids)
    assert {status_of(stack, order_id) for order_id in order_ids} == {"NOTIFIED"}
