"""WriterFunction against OrdersQueue, OrdersDLQ and OrdersTable made from template.yaml."""

from __future__ import annotations

import copy
import json
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import boto3
import pytest

from orderpipe.aws import clients
from orderpipe.models import Order
from orderpipe_local.runtime.lambda_context import LocalLambdaContext
from orderpipe_local.stack.provision import Stack
from orderpipe_local.stack.template import Template
from orderpipe_local.testing import load_event
from tests.integration.aws_faults import fail_calls
from tests.integration.conftest import handler_of

Handler = Callable[[dict[str, Any], Any], Any]

VALID_ORDER_IDS = {
    "3f6c2a7e-1b9d-4c58-9e2f-7a1d0b4c8e51",
    "8d2e4f10-6a3b-4d7c-a5e9-2c1b0f9e8d73",
    "c41a9b27-5e8f-4a06-b3d2-91f7e6c5a048",
}
POISON_MESSAGE_ID = "4f5cae7a-6d8b-4acc-9e9f-9b7a6f5e4d35"
DUPLICATE_MESSAGE_ID = "3e4b9d6f-5c7a-4fbb-8d8e-8a6f5e4d3c24"


@pytest.fixture
def writer(stack: Stack, template: Template) -> Handler:
    return handler_of(template, "WriterFunction")


def stored_items(stack: Stack) -> dict[str, dict[str, Any]]:
    items = boto3.client("dynamodb").scan(TableName=stack.ref("OrdersTable"), ConsistentRead=True)["Items"]
    return {item["orderId"]["S"]: item for item in items}


def failed_ids(response: dict[str, Any]) -> list[str]:
    return [failure["itemIdentifier"] for failure in response["batchItemFailures"]]


def metric_total(emf: dict[str, Any], name: str) -> float:
    """EMF writes one value as a number and several as a list."""
    value = emf[name]
    return float(sum(value)) if isinstance(value, list) else float(value)


def record_with_id(event: dict[str, Any], message_id: str) -> dict[str, Any]:
    record: dict[str, Any] = next(r for r in event["Records"] if r["messageId"] == message_id)
    return record


# --- the fixture batch ------------------------------------------------------------------------


def test_batch_stores_each_valid_order_once_and_fails_only_the_poison_message(
    stack: Stack, writer: Handler, lambda_context: LocalLambdaContext
) -> None:
    # Given three orders, a second copy of the first and a message that is not an order
    event = load_event("writer-sqs-batch.json")

    # When
    response = writer(event, lambda_context)

    # Then only the poison message is handed back to SQS (invariant 5)
    assert failed_ids(response) == [POISON_MESSAGE_ID]
    # and each order is stored once, as its message carried it (invariant 2)
    items = stored_items(stack)
    assert set(items) == VALID_ORDER_IDS
    for record in event["Records"]:
        if record["messageId"] != POISON_MESSAGE_ID:
            sent = Order.model_validate_json(record["body"])
            stored = items[sent.order_id]
            assert stored["status"] == {"S": "PLACED"}
            assert stored["total"] == {"N": str(sent.total)}
            assert stored["customer"]["M"]["email"] == {"S": str(sent.customer.email)}
            assert len(stored["items"]["L"]) == len(sent.items)


def test_redelivered_batch_succeeds_and_changes_nothing(
    stack: Stack, writer: Handler, lambda_context: LocalLambdaContext
) -> None:
    # Given the batch was processed once
    event = load_event("writer-sqs-batch.json")
    writer(event, lambda_context)
    before = stored_items(stack)

    # When SQS delivers the whole batch again
    response = writer(event, lambda_context)

    # Then every order is a success that changed nothing; the poison message fails again
    assert failed_ids(response) == [POISON_MESSAGE_ID]
    assert stored_items(stack) == before


def test_a_second_copy_of_an_order_never_overwrites_the_first(
    stack: Stack, writer: Handler, lambda_context: LocalLambdaContext
) -> None:
    # Given the order was stored, then a copy of its message arrives that differs
    event = load_event("writer-sqs-batch.json")
    writer(event, lambda_context)
    before = stored_items(stack)
    duplicate = copy.deepcopy(record_with_id(event, DUPLICATE_MESSAGE_ID))
    body = json.loads(duplicate["body"])
    body["note"] = "Overwritten?"
    body["items"][0]["quantity"] = 999
    duplicate["body"] = json.dumps(body)
    duplicate["messageId"] = "9f9f9f9f-0000-4000-8000-000000000001"

    # When
    response = writer({"Records": [duplicate]}, lambda_context)

    # Then the message succeeds (it must leave the queue) and the stored order is the first one
    assert failed_ids(response) == []
    assert stored_items(stack) == before
    assert before[body["orderId"]]["note"] == {"S": "Leave at the back door.\nThe dog is friendly."}


@pytest.mark.parametrize(
    "body",
    ["", "not json", "{}", '{"orderId": "x", "customer": {"name": "Eve"}, "items": []}'],
    ids=["empty", "not-json", "empty-object", "not-an-order"],
)
def test_a_batch_of_only_poison_messages_still_answers_which_failed(
    stack: Stack, writer: Handler, lambda_context: LocalLambdaContext, body: str
) -> None:
    # Given
    event = load_event("writer-sqs-batch.json")
    poison = copy.deepcopy(record_with_id(event, POISON_MESSAGE_ID))
    poison["body"] = body

    # When
    response = writer({"Records": [poison]}, lambda_context)

    # Then a partial batch response, not an exception that would fail the invocation
    assert failed_ids(response) == [POISON_MESSAGE_ID]
    assert stored_items(stack) == {}


@pytest.mark.parametrize(
    "order_id",
    ["x", "ORDER-1", "3F6C2A7E-1B9D-4C58-9E2F-7A1D0B4C8E51", "3f6c2a7e1b9d4c589e2f7a1d0b4c8e51"],
    ids=["word", "other-id-scheme", "upper-case", "no-hyphens"],
)
def test_an_order_whose_id_is_no_canonical_uuid_is_a_poison_message(
    stack: Stack,
    writer: Handler,
    lambda_context: LocalLambdaContext,
    caplog: pytest.LogCaptureFixture,
    order_id: str,
) -> None:
    # Given a well-formed order whose orderId ingest could never have given
    event = load_event("writer-sqs-batch.json")
    record = copy.deepcopy(record_with_id(event, DUPLICATE_MESSAGE_ID))
    record["body"] = json.dumps(json.loads(record["body"]) | {"orderId": order_id})

    # When
    response = writer({"Records": [record]}, lambda_context)

    # Then it fails, like any poison message (OrdersDLQ after maxReceiveCount), and is not stored
    assert failed_ids(response) == [DUPLICATE_MESSAGE_ID]
    assert stored_items(stack) == {}
    (warning,) = [r for r in caplog.records if getattr(r, "message_id", None) == DUPLICATE_MESSAGE_ID]
    assert "orderId must be a UUID" in getattr(warning, "reason", "")


def test_an_order_whose_id_is_another_uuid_version_is_stored(
    stack: Stack, writer: Handler, lambda_context: LocalLambdaContext
) -> None:
    # Given an order with a version 5 UUID, as keyed orders get
    order_id = "886313e1-3b8a-5372-9b90-0c9aee199e5d"
    event = load_event("writer-sqs-batch.json")
    record = copy.deepcopy(record_with_id(event, DUPLICATE_MESSAGE_ID))
    record["body"] = json.dumps(json.loads(record["body"]) | {"orderId": order_id})

    # When
    response = writer({"Records": [record]}, lambda_context)

    # Then it is stored
    assert failed_ids(response) == []
    assert set(stored_items(stack)) == {order_id}


@pytest.mark.parametrize("event", [{"Records": []}, {}], ids=["no-records", "no-records-key"])
def test_an_empty_batch_answers_no_failures(
    stack: Stack, writer: Handler, lambda_context: LocalLambdaContext, event: dict[str, Any]
) -> None:
    # When the writer is invoked with no messages (a test event, a hand-made invoke)
    response = writer(event, lambda_context)

    # Then it answers an empty partial batch response rather than failing the invocation
    assert response == {"batchItemFailures": []}


def test_the_reason_a_message_failed_is_logged_with_its_message_id(
    stack: Stack, writer: Handler, lambda_context: LocalLambdaContext, caplog: pytest.LogCaptureFixture
) -> None:
    # Given
    event = load_event("writer-sqs-batch.json")

    # When
    writer(event, lambda_context)

    # Then the log names the message, the fields and the rules, but not the customer's input
    (warning,) = [
        record for record in caplog.records if getattr(record, "message_id", None) == POISON_MESSAGE_ID
    ]
    assert warning.levelname == "WARNING"
    reason = getattr(warning, "reason", "")
    assert "body.customer.email" in reason
    assert "body.items.0.quantity" in reason
    assert "not-an-email" not in reason


def test_metrics_count_stored_and_duplicate_orders(
    stack: Stack, writer: Handler, lambda_context: LocalLambdaContext, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given
    event = load_event("writer-sqs-batch.json")

    # When
    writer(event, lambda_context)

    # Then
    (emf,) = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"_aws"' in line]
    assert metric_total(emf, "OrdersStored") == 3
    assert metric_total(emf, "DuplicateOrders") == 1
    assert metric_total(emf, "OrderMessagesFailed") == 1


# --- a throttled write ------------------------------------------------------------------------


@pytest.fixture
def throttled_order(stack: Stack) -> Iterator[Callable[[str], None]]:
    """Makes OrdersTable answer PutItem for chosen orderIds with a throttling error."""
    throttled: set[str] = set()
    undo = fail_calls(
        clients.orders_table().client,
        "PutItem",
        "ProvisionedThroughputExceededException",
        when=lambda request: request["Item"]["orderId"]["S"] in throttled,
    )
    yield throttled.add
    undo()


def test_a_throttled_write_fails_only_its_own_record(
    stack: Stack, writer: Handler, lambda_context: LocalLambdaContext, throttled_order: Callable[[str], None]
) -> None:
    # Given DynamoDB throttles the writes of one order
    event = load_event("writer-sqs-batch.json")
    throttled_id = "8d2e4f10-6a3b-4d7c-a5e9-2c1b0f9e8d73"
    throttled_order(throttled_id)

    # When
    response = writer(event, lambda_context)

    # Then that order's message is retried along with the poison one; the others are stored
    assert failed_ids(response) == ["1c2f7b4d-3a5e-4d9f-8b6c-6e4d3c2b1a02", POISON_MESSAGE_ID]
    assert set(stored_items(stack)) == VALID_ORDER_IDS - {throttled_id}


# --- the queue and its redrive policy ---------------------------------------------------------


def as_lambda_event(messages: Sequence[Mapping[str, Any]], queue_arn: str) -> dict[str, Any]:
    """ReceiveMessage results in the shape the SQS event source mapping gives a function."""
    return {
        "Records": [
            {
                "messageId": message["MessageId"],
                "receiptHandle": message["ReceiptHandle"],
                "body": message["Body"],
                "attributes": message["Attributes"],
                "messageAttributes": {
                    name: {
                        "stringValue": value.get("StringValue"),
                        "stringListValues": [],
                        "binaryListValues": [],
                        "dataType": value["DataType"],
                    }
                    for name, value in message.get("MessageAttributes", {}).items()
                },
                "md5OfBody": message["MD5OfBody"],
                "eventSource": "aws:sqs",
                "eventSourceARN": queue_arn,
                "awsRegion": "us-east-1",
            }
            for message in messages
        ]
    }


def test_a_poison_message_reaches_orders_dlq_after_max_receive_count_and_the_order_beside_it_is_stored(
    stack: Stack, writer: Handler, lambda_context: LocalLambdaContext
) -> None:
    # Given a valid order and a poison message on the queue made from the template
    sqs = boto3.client("sqs")
    queue_url, dlq_url = stack.ref("OrdersQueue"), stack.ref("OrdersDLQ")
    queue_arn = stack.attribute("OrdersQueue", "Arn")
    redrive = json.loads(
        sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["RedrivePolicy"])["Attributes"][
            "RedrivePolicy"
        ]
    )
    max_receive_count = int(redrive["maxReceiveCount"])
    assert max_receive_count == int(
        stack.template.resources["OrdersQueue"]["Properties"]["RedrivePolicy"]["maxReceiveCount"]
    )
    fixture = load_event("writer-sqs-batch.json")
    for message_id in ("0b1e6a3c-2f4d-4c8e-9a7b-5d3c2b1a0f91", POISON_MESSAGE_ID):
        sqs.send_message(QueueUrl=queue_url, MessageBody=record_with_id(fixture, message_id)["body"])

    # When the queue is polled as the event source mapping does: invoke, delete the successes,
    # and let the failures become visible again once their visibility timeout is over
    deliveries_of_poison = 0
    for _ in range(max_receive_count + 2):
        messages = sqs.receive_message(
            QueueUrl=queue_url, MaxNumberOfMessages=10, AttributeNames=["All"], MessageAttributeNames=["All"]
        ).get("Messages", [])
        if not messages:
            break
        response = writer(as_lambda_event(messages, queue_arn), lambda_context)
        failed = set(failed_ids(response))
        for message in messages:
            if message["MessageId"] in failed:
                deliveries_of_poison += 1
                sqs.change_message_visibility(
                    QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=0
                )
            else:
                sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])

    # Then the order is stored, the poison message was tried maxReceiveCount times and now waits
    # in OrdersDLQ as it was sent (invariant 1)
    assert set(stored_items(stack)) == {"3f6c2a7e-1b9d-4c58-9e2f-7a1d0b4c8e51"}
    assert deliveries_of_poison == max_receive_count
    assert sqs.receive_message(QueueUrl=queue_url).get("Messages", []) == []
    dead = sqs.receive_message(QueueUrl=dlq_url, MaxNumberOfMessages=10)["Messages"]
    assert [message["Body"] for message in dead] == [record_with_id(fixture, POISON_MESSAGE_ID)["body"]]


def test_a_batch_is_logged_in_one_line_at_info_naming_each_order_stored(
    writer: Handler, lambda_context: LocalLambdaContext, caplog: pytest.LogCaptureFixture
) -> None:
    # Given the fixture batch: three orders, a duplicate delivery and a poison message
    event = load_event("writer-sqs-batch.json")

    # When
    writer(event, lambda_context)

    # Then its INFO line is the batch's one (the poison message has its warning)
    info = [record for record in caplog.records if record.levelno == logging.INFO]
    assert [record.getMessage() for record in info] == ["Orders stored"]
    assert sorted(getattr(info[0], "order_ids", [])) == sorted(VALID_ORDER_IDS)
    assert (getattr(info[0], "stored", None), getattr(info[0], "duplicates", None)) == (3, 1)
    assert getattr(info[0], "failed", None) == 1
