"""NotifierFunction against OrdersTable and OrdersTopic made from template.yaml.

What reaches support is read from an SQS queue subscribed to OrdersTopic: each SNS envelope
carries the email's Subject and Message.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from datetime import datetime
from typing import Any

import boto3
import pytest

from orderpipe.aws import clients
from orderpipe.aws.notifier_retry_queue import UnmarkedOrders
from orderpipe.aws.orders_table import StorageError, from_attribute_values, to_attribute_values
from orderpipe.aws.orders_topic import TopicUnavailable
from orderpipe.models import Order
from orderpipe.support_email import SupportEmail
from orderpipe_local.runtime.lambda_context import LocalLambdaContext
from orderpipe_local.stack.provision import Stack
from orderpipe_local.stack.template import Template
from orderpipe_local.testing import load_event
from tests.integration.aws_faults import fail_calls
from tests.integration.conftest import Email, handler_of

Handler = Callable[[dict[str, Any], Any], Any]

ADA = "3f6c2a7e-1b9d-4c58-9e2f-7a1d0b4c8e51"
GRACE = "8d2e4f10-6a3b-4d7c-a5e9-2c1b0f9e8d73"
ZOE = "c41a9b27-5e8f-4a06-b3d2-91f7e6c5a048"


@pytest.fixture
def notifier(stack: Stack, template: Template) -> Handler:
    return handler_of(template, "NotifierFunction")


def store_inserted_orders(stack: Stack, event: dict[str, Any]) -> None:
    """The items the writer stored, whose INSERTs the event carries."""
    dynamodb = boto3.client("dynamodb")
    for record in event["Records"]:
        if record["eventName"] == "INSERT":
            dynamodb.put_item(TableName=stack.ref("OrdersTable"), Item=record["dynamodb"]["NewImage"])


def status_of(stack: Stack, order_id: str) -> str:
    item = boto3.client("dynamodb").get_item(
        TableName=stack.ref("OrdersTable"), Key={"orderId": {"S": order_id}}, ConsistentRead=True
    )["Item"]
    status: str = item["status"]["S"]
    return status


def handed_to_the_replay(stack: Stack) -> list[str]:
    """The order ids of the `UnmarkedOrders` messages in NotifierRetryQueue (consumed)."""
    sqs = boto3.client("sqs")
    order_ids: list[str] = []
    while messages := sqs.receive_message(
        QueueUrl=stack.ref("NotifierRetryQueue"), MaxNumberOfMessages=10
    ).get("Messages"):
        for message in messages:
            order_ids += UnmarkedOrders.model_validate_json(message["Body"]).order_ids
            sqs.delete_message(
                QueueUrl=stack.ref("NotifierRetryQueue"), ReceiptHandle=message["ReceiptHandle"]
            )
    return order_ids


def failed_ids(response: dict[str, Any]) -> list[str]:
    return [failure["itemIdentifier"] for failure in response["batchItemFailures"]]


def metric_total(emf: dict[str, Any], name: str) -> float:
    """EMF writes one value as a number and several as a list."""
    value = emf[name]
    return float(sum(value)) if isinstance(value, list) else float(value)


# --- one email per batch ----------------------------------------------------------------------


def test_one_insert_sends_a_single_order_email_and_marks_the_order_notified(
    stack: Stack, notifier: Handler, inbox: Callable[[], list[Email]], lambda_context: LocalLambdaContext
) -> None:
    # Given
    event = load_event("notifier-stream-insert.json")
    store_inserted_orders(stack, event)

    # When
    response = notifier(event, lambda_context)

    # Then
    assert failed_ids(response) == []
    ((subject, body),) = inbox()
    assert subject == f"New order {ADA}: 44.99 USD"
    for expected in (
        ADA,
        "2024-05-01 12:00:03 UTC",
        "Ada Lovelace",
        "ada@example.com",
        "SKU MOP-001  qty 2  x 12.50 USD  = 25.00 USD",
        "Total:         44.99 USD",
        "1 Main St",
        "| Leave at the back door.",
    ):
        assert expected in body
    assert status_of(stack, ADA) == "NOTIFIED"


def test_a_batch_of_inserts_sends_one_digest_and_marks_every_order(
    stack: Stack, notifier: Handler, inbox: Callable[[], list[Email]], lambda_context: LocalLambdaContext
) -> None:
    # Given
    event = load_event("notifier-stream-insert-batch.json")
    store_inserted_orders(stack, event)

    # When
    response = notifier(event, lambda_context)

    # Then
    assert failed_ids(response) == []
    ((subject, body),) = inbox()
    assert subject == "3 new orders: 65.93 USD, 32.60 EUR"
    for order_id in (ADA, GRACE, ZOE):
        assert order_id in body
        assert status_of(stack, order_id) == "NOTIFIED"
    assert "Zoë Müller" in body


def test_a_retried_batch_sends_no_second_email(
    stack: Stack, notifier: Handler, inbox: Callable[[], list[Email]], lambda_context: LocalLambdaContext
) -> None:
    # Given the batch was announced once
    event = load_event("notifier-stream-insert-batch.json")
    store_inserted_orders(stack, event)
    notifier(event, lambda_context)

    # When Lambda delivers the same records again
    response = notifier(event, lambda_context)

    # Then (invariant 3)
    assert failed_ids(response) == []
    assert len(inbox()) == 1


def test_modify_records_are_ignored(
    stack: Stack, notifier: Handler, inbox: Callable[[], list[Email]], lambda_context: LocalLambdaContext
) -> None:
    # Given the order is stored and still PLACED, and a MODIFY of it arrives
    store_inserted_orders(stack, load_event("notifier-stream-insert.json"))
    event = load_event("notifier-stream-modify.json")

    # When
    response = notifier(event, lambda_context)

    # Then nothing is sent and nothing changes: only an INSERT announces an order
    assert failed_ids(response) == []
    assert inbox() == []
    assert status_of(stack, ADA) == "PLACED"


def test_a_modify_with_an_unreadable_image_is_still_ignored_not_failed(
    stack: Stack, notifier: Handler, inbox: Callable[[], list[Email]], lambda_context: LocalLambdaContext
) -> None:
    # Given
    event = load_event("notifier-stream-modify.json")
    event["Records"][0]["dynamodb"]["NewImage"] = {"orderId": {"S": ADA}, "junk": {"N": "1"}}

    # When
    response = notifier(event, lambda_context)

    # Then
    assert failed_ids(response) == []
    assert inbox() == []


# --- a bad record -----------------------------------------------------------------------------


def test_a_bad_record_fails_only_itself_and_the_others_are_mailed_and_marked(
    stack: Stack, notifier: Handler, inbox: Callable[[], list[Email]], lambda_context: LocalLambdaContext
) -> None:
    # Given the middle record's image is not an order
    event = load_event("notifier-stream-insert-batch.json")
    store_inserted_orders(stack, event)
    bad = event["Records"][1]
    del bad["dynamodb"]["NewImage"]["customer"]
    bad_sequence_number = bad["dynamodb"]["SequenceNumber"]

    # When
    response = notifier(event, lambda_context)

    # Then (invariant 5)
    assert failed_ids(response) == [bad_sequence_number]
    ((subject, body),) = inbox()
    assert subject == "2 new orders: 44.99 USD, 32.60 EUR"
    assert ADA in body
    assert ZOE in body
    assert GRACE not in body
    assert (status_of(stack, ADA), status_of(stack, GRACE), status_of(stack, ZOE)) == (
        "NOTIFIED",
        "PLACED",
        "NOTIFIED",
    )


def test_lambda_retrying_from_the_bad_record_sends_nothing_twice(
    stack: Stack, notifier: Handler, inbox: Callable[[], list[Email]], lambda_context: LocalLambdaContext
) -> None:
    # Given a batch whose middle record failed; the others were announced
    event = load_event("notifier-stream-insert-batch.json")
    store_inserted_orders(stack, event)
    del event["Records"][1]["dynamodb"]["NewImage"]["customer"]
    notifier(event, lambda_context)
    inbox()

    # When Lambda retries from the failed record's checkpoint: that record and every later one
    retry = {"Records": event["Records"][1:]}
    response = notifier(retry, lambda_context)

    # Then the bad record fails again (until Lambda parks it in NotifierDLQ); no email is repeated
    assert failed_ids(response) == [event["Records"][1]["dynamodb"]["SequenceNumber"]]
    assert inbox() == []


# --- failures around the email ----------------------------------------------------------------


def test_when_sns_fails_nothing_is_marked_and_the_retry_sends_one_email(
    stack: Stack, notifier: Handler, inbox: Callable[[], list[Email]], lambda_context: LocalLambdaContext
) -> None:
    # Given SNS refuses to publish
    event = load_event("notifier-stream-insert-batch.json")
    store_inserted_orders(stack, event)
    restore = fail_calls(clients.orders_topic().client, "Publish", "InternalError", status=500)

    # When
    with pytest.raises(TopicUnavailable):
        notifier(event, lambda_context)

    # Then the invocation fails so Lambda retries every record; no order is marked
    assert inbox() == []
    assert {status_of(stack, order_id) for order_id in (ADA, GRACE, ZOE)} == {"PLACED"}

    # and once SNS is back, the retry announces each order exactly once
    restore()
    assert failed_ids(notifier(event, lambda_context)) == []
    ((subject, _),) = inbox()
    assert subject.startswith("3 new orders")
    assert {status_of(stack, order_id) for order_id in (ADA, GRACE, ZOE)} == {"NOTIFIED"}


def test_when_reading_the_notified_orders_fails_nothing_is_sent(
    stack: Stack, notifier: Handler, inbox: Callable[[], list[Email]], lambda_context: LocalLambdaContext
) -> None:
    # Given the table cannot tell which orders were already announced
    event = load_event("notifier-stream-insert-batch.json")
    store_inserted_orders(stack, event)
    fail_calls(clients.orders_table().client, "BatchGetItem", "InternalServerError", status=500)

    # When
    with pytest.raises(StorageError):
        notifier(event, lambda_context)

    # Then
    assert inbox() == []


def test_when_marking_fails_after_the_email_went_out_the_record_still_succeeds(
    stack: Stack,
    notifier: Handler,
    inbox: Callable[[], list[Email]],
    lambda_context: LocalLambdaContext,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Given marking one order fails
    event = load_event("notifier-stream-insert-batch.json")
    store_inserted_orders(stack, event)
    fail_calls(
        clients.orders_table().client,
        "UpdateItem",
        "InternalServerError",
        status=500,
        when=lambda request: request["Key"]["orderId"]["S"] == GRACE,
    )

    # When
    response = notifier(event, lambda_context)

    # Then no record is retried (a retry would email the batch again); the failure is counted
    assert failed_ids(response) == []
    assert len(inbox()) == 1
    assert (status_of(stack, ADA), status_of(stack, GRACE), status_of(stack, ZOE)) == (
        "NOTIFIED",
        "PLACED",
        "NOTIFIED",
    )
    (emf,) = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"_aws"' in line]
    assert metric_total(emf, "OrdersMarkingRetried") == 1
    assert metric_total(emf, "OrdersNotified") == 3
    # And the order not marked is handed to the replay function, to be marked without a second email
    assert handed_to_the_replay(stack) == [GRACE]
    assert metric_total(emf, "SupportEmailsSent") == 1


class FlakyTopic:
    """Stands in for OrdersTopic: records what it publishes, fails the publishes it is told to."""

    def __init__(self, failing_calls: set[int]) -> None:
        self.failing_calls = failing_calls
        self.calls = 0
        self.published: list[SupportEmail] = []

    def publish(self, email: SupportEmail) -> str:
        self.calls += 1
        if self.calls in self.failing_calls:
            raise TopicUnavailable("injected")
        self.published.append(email)
        return f"message-{self.calls}"


def big_insert_event(stack: Stack, count: int) -> tuple[dict[str, Any], list[str]]:
    """INSERTs of `count` stored orders of about 90 KB of email text each."""
    template_record = load_event("notifier-stream-insert.json")["Records"][0]
    base = Order.model_validate(from_attribute_values(template_record["dynamodb"]["NewImage"]))
    records, order_ids = [], []
    for number in range(count):
        order_id = f"00000000-0000-4000-8000-{number:012d}"
        items = [
            base.items[0].model_copy(update={"name": "\U0001f9f9" * 200, "sku": f"SKU-{i}"})
            for i in range(100)
        ]
        order = base.model_copy(update={"order_id": order_id, "items": items})
        clients.orders_table().put_new_order(order)
        record = copy.deepcopy(template_record)
        record["dynamodb"]["NewImage"] = to_attribute_values(order.to_item())
        record["dynamodb"]["Keys"] = {"orderId": {"S": order_id}}
        record["dynamodb"]["SequenceNumber"] = f"2000000000{number:012d}"
        records.append(record)
        order_ids.append(order_id)
    return {"Records": records}, order_ids


def test_when_a_later_part_of_a_split_digest_fails_the_retry_sends_only_that_part(
    stack: Stack, notifier: Handler, lambda_context: LocalLambdaContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a batch too big for one SNS message, and SNS failing the second part
    event, order_ids = big_insert_event(stack, 3)
    topic = FlakyTopic(failing_calls={2})
    monkeypatch.setattr(clients.orders_topic(), "publish", topic.publish)

    # When
    response = notifier(event, lambda_context)

    # Then the first part's orders are marked, and the stream resumes at the second part's first
    (first_part,) = topic.published
    assert 0 < len(first_part.order_ids) < len(order_ids)
    for order_id in order_ids:
        assert status_of(stack, order_id) == ("NOTIFIED" if order_id in first_part.order_ids else "PLACED")
    resume_at = len(first_part.order_ids)
    assert failed_ids(response) == [event["Records"][resume_at]["dynamodb"]["SequenceNumber"]]

    # When Lambda retries the shard from there
    assert failed_ids(notifier({"Records": event["Records"][resume_at:]}, lambda_context)) == []

    # Then each order was announced exactly once over both invocations
    announced = [order_id for email in topic.published for order_id in email.order_ids]
    assert sorted(announced) == sorted(order_ids)
    assert {status_of(stack, order_id) for order_id in order_ids} == {"NOTIFIED"}


# --- writer -> stream -> notifier -------------------------------------------------------------


@pytest.fixture
def stream_records(stack: Stack) -> Callable[[], dict[str, Any]]:
    """Reads OrdersTable's stream and wraps the records as the event source mapping does."""
    streams = boto3.client("dynamodbstreams")
    stream_arn = stack.attribute("OrdersTable", "StreamArn")

    def read() -> dict[str, Any]:
        shard = streams.describe_stream(StreamArn=stream_arn)["StreamDescription"]["Shards"][0]["ShardId"]
        iterator = streams.get_shard_iterator(
            StreamArn=stream_arn, ShardId=shard, ShardIteratorType="TRIM_HORIZON"
        )["ShardIterator"]
        records = []
        for record in streams.get_records(ShardIterator=iterator)["Records"]:
            change = dict(record["dynamodb"])
            created = change.get("ApproximateCreationDateTime")
            if isinstance(created, datetime):  # boto3 parses it; Lambda sends epoch seconds
                change["ApproximateCreationDateTime"] = created.timestamp()
            records.append({**record, "dynamodb": change, "eventSourceARN": stream_arn})
        return {"Records": records}

    return read


def test_orders_the_writer_stored_reach_support_in_one_email_through_the_stream(
    stack: Stack,
    template: Template,
    notifier: Handler,
    inbox: Callable[[], list[Email]],
    stream_records: Callable[[], dict[str, Any]],
    lambda_context: LocalLambdaContext,
) -> None:
    # Given the writer stored the fixture batch
    handler_of(template, "WriterFunction")(load_event("writer-sqs-batch.json"), lambda_context)

    # When the stream's records reach the notifier
    event = stream_records()
    response = notifier(event, lambda_context)

    # Then
    assert [record["eventName"] for record in event["Records"]] == ["INSERT"] * 3
    assert failed_ids(response) == []
    ((subject, _),) = inbox()
    assert subject == "3 new orders: 65.93 USD, 32.60 EUR"

    # and the MODIFY records our own marking caused are ignored
    modifies = {"Records": [r for r in stream_records()["Records"] if r["eventName"] == "MODIFY"]}
    assert len(modifies["Records"]) == 3
    assert failed_ids(notifier(modifies, lambda_context)) == []
    assert inbox() == []
