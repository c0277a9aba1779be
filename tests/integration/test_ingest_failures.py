"""IngestFunction when SQS or DynamoDB fail the way networks fail: unreachable, stalled, or
answering too late (the request applied, its answer lost), and when Lambda ends an invocation.

Every such failure answers 503 with Retry-After within the clients' budget, and a retry with the
same Idempotency-Key never makes a second order (invariant 1), down to what the writer stores.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import boto3
import pytest

from orderpipe.aws import clients
from orderpipe.models import is_order_id
from orderpipe.observability import metrics
from orderpipe.settings import settings
from orderpipe_local.runtime.lambda_context import LocalLambdaContext
from orderpipe_local.stack.provision import Stack
from orderpipe_local.stack.template import Template
from orderpipe_local.testing import load_event
from tests.integration.aws_faults import LambdaEnded, end_invocation_during, stall_calls, unreachable
from tests.integration.conftest import handler_of
from tests.integration.test_writer import as_lambda_event

if TYPE_CHECKING:
    from mypy_boto3_sqs.type_defs import MessageTypeDef

pytestmark = pytest.mark.filterwarnings("ignore:No application metrics to publish")

Post = Callable[..., dict[str, Any]]
# What the handler may take besides its AWS calls (parsing, logging) on a busy test machine.
SLACK_SECONDS = 1.0


@pytest.fixture
def post(template: Template, stack: Stack) -> Post:
    """Invokes IngestFunction as API Gateway does: a failed invocation is a 500 to the client."""
    metrics.clear_metrics()
    handler = handler_of(template, "IngestFunction")

    def invoke(event: dict[str, Any], context: LocalLambdaContext | None = None) -> dict[str, Any]:
        try:
            response: dict[str, Any] = handler(event, context or LocalLambdaContext("IngestFunction", 10))
        except Exception:
            return {"statusCode": 500, "headers": {}, "body": '{"message":"Internal Server Error"}'}
        return response

    return invoke


def queued(stack: Stack) -> list[MessageTypeDef]:
    """Every message in OrdersQueue (received once, so call it once per test)."""
    sqs = boto3.client("sqs")
    messages: list[MessageTypeDef] = []
    while batch := sqs.receive_message(
        QueueUrl=stack.ref("OrdersQueue"),
        MaxNumberOfMessages=10,
        AttributeNames=["All"],
        MessageAttributeNames=["All"],
    ).get("Messages", []):
        messages.extend(batch)
    return messages


def queued_order_ids(messages: list[MessageTypeDef]) -> list[str]:
    return [message["MessageAttributes"]["orderId"]["StringValue"] for message in messages]


def stored_order_ids(stack: Stack) -> list[str]:
    items = boto3.client("dynamodb").scan(TableName=stack.ref("OrdersTable"), ConsistentRead=True)["Items"]
    return [item["orderId"]["S"] for item in items]


def write_queued_orders(template: Template, stack: Stack, messages: list[MessageTypeDef]) -> None:
    """WriterFunction handles the queued messages, as its event source mapping would."""
    event = as_lambda_event(messages, stack.attribute("OrdersQueue", "Arn"))
    response = handler_of(template, "WriterFunction")(event, LocalLambdaContext("WriterFunction"))
    assert response["batchItemFailures"] == []


def forget_idempotency_records(stack: Stack) -> None:
    dynamodb, table = boto3.client("dynamodb"), stack.ref("IdempotencyTable")
    for item in dynamodb.scan(TableName=table)["Items"]:
        dynamodb.delete_item(TableName=table, Key={"id": item["id"]})


def order_id_of(response: dict[str, Any]) -> str:
    order_id: str = json.loads(response["body"])["orderId"]
    return order_id


def assert_unavailable(response: dict[str, Any]) -> None:
    assert response["statusCode"] == 503
    assert int(response["headers"]["Retry-After"]) > 0
    assert json.loads(response["body"])["message"]


# --- SQS -------------------------------------------------------------------------------------


def test_queue_unreachable_is_503_with_retry_after(post: Post, stack: Stack) -> None:
    # Given SQS cannot be reached (no connection)
    unreachable(clients.orders_queue().client, "SendMessage")

    # When an order is posted
    response = post(load_event("ingest-post-order.json"))

    # Then the client is told to retry later, as DESIGN promises for any AWS failure
    assert_unavailable(response)
    assert queued(stack) == []


def test_queue_stalled_is_503_within_the_clients_budget(post: Post, stack: Stack) -> None:
    # Given SQS stops answering: each attempt waits out the read timeout
    stall_calls(clients.orders_queue().client, "SendMessage", reaches_aws=False)

    # When an order is posted with an Idempotency-Key
    started = time.monotonic()
    response = post(load_event("ingest-post-order-with-idempotency-key.json"))
    took = time.monotonic() - started

    # Then it is a 503 within one call's budget (the idempotency calls answer at once)
    assert_unavailable(response)
    assert took < settings().aws_call_budget_seconds + SLACK_SECONDS


def test_a_retry_after_the_queues_answer_was_lost_gives_the_same_order_stored_once(
    post: Post, stack: Stack, template: Template
) -> None:
    # Given SQS takes each message of a keyed order but its answers never come back
    event = load_event("ingest-post-order-with-idempotency-key.json")
    restore = stall_calls(clients.orders_queue().client, "SendMessage", reaches_aws=True)
    first = post(event)
    assert first["statusCode"] != 202  # the client never learnt that SQS had the order

    # When the client retries with the same key once SQS answers again
    restore()
    retry = post(event)

    # Then every message queued for it carries the retry's orderId
    assert retry["statusCode"] == 202
    messages = queued(stack)
    assert len(messages) > 1  # the lost attempts' messages are there too
    assert set(queued_order_ids(messages)) == {order_id_of(retry)}

    # And the writer stores one order (invariant 1, 2)
    write_queued_orders(template, stack, messages)
    assert stored_order_ids(stack) == [order_id_of(retry)]


def test_a_retry_after_lambda_ended_the_first_attempt_gives_the_same_order(
    post: Post, stack: Stack, template: Template
) -> None:
    # Given the first attempt's message reached SQS, then Lambda ended the invocation at its
    # Timeout, leaving its idempotency record in progress until that Timeout
    event = load_event("ingest-post-order-with-idempotency-key.json")
    restore = end_invocation_during(clients.orders_queue().client, "SendMessage", reaches_aws=True)
    first_context = LocalLambdaContext("IngestFunction", timeout_seconds=2)
    with pytest.raises(LambdaEnded):
        post(event, first_context)
    restore()

    # When the client retries within that Timeout, and again after it
    in_flight = post(event)
    time.sleep(first_context.get_remaining_time_in_millis() / 1000 + 0.1)
    retry = post(event)

    # Then it is told to wait, then accepted under the orderId SQS already holds
    assert in_flight["statusCode"] == 409
    assert retry["statusCode"] == 202
    messages = queued(stack)
    assert set(queued_order_ids(messages)) == {order_id_of(retry)}
    write_queued_orders(template, stack, messages)
    assert stored_order_ids(stack) == [order_id_of(retry)]


def test_a_keyed_order_can_be_read_at_its_location(post: Post, stack: Stack, template: Template) -> None:
    # Given a keyed order, accepted and stored
    accepted = post(load_event("ingest-post-order-with-idempotency-key.json"))
    write_queued_orders(template, stack, queued(stack))

    # When the client follows its Location
    order_id = order_id_of(accepted)
    event = load_event("ingest-get-order.json")
    event["rawPath"] = event["requestContext"]["http"]["path"] = accepted["headers"]["Location"]
    event["pathParameters"] = {"orderId": order_id}

    # Then its id is an order id like any other, and the order is there
    assert is_order_id(order_id)
    assert post(event)["statusCode"] == 200


def test_the_same_key_with_another_order_never_gets_the_first_orders_id(post: Post, stack: Stack) -> None:
    # Given a keyed order whose idempotency record is gone (expired, or its attempt failed)
    first = post(load_event("ingest-post-order-with-idempotency-key.json"))
    forget_idempotency_records(stack)

    # When another order comes under the same key
    other = post(load_event("ingest-post-order-idempotency-key-reused.json"))

    # Then it is a new order, not taken for a copy of the first (which the writer would drop)
    assert other["statusCode"] == 202
    assert order_id_of(other) != order_id_of(first)


# --- DynamoDB (idempotency records, GET) ------------------------------------------------------


def test_idempotency_table_stalled_is_503_within_the_clients_budget(post: Post, stack: Stack) -> None:
    # Given the idempotency table stops answering
    stall_calls(clients.idempotency_store().client, "PutItem", reaches_aws=False)

    # When a keyed order is posted
    started = time.monotonic()
    response = post(load_event("ingest-post-order-with-idempotency-key.json"))
    took = time.monotonic() - started

    # Then it is a 503 within one call's budget, and nothing is queued
    assert_unavailable(response)
    assert took < settings().aws_call_budget_seconds + SLACK_SECONDS
    assert queued(stack) == []


def test_idempotency_record_not_completed_is_503_and_the_retry_is_the_same_order(
    post: Post, stack: Stack, template: Template
) -> None:
    # Given the order is queued but its idempotency record cannot be completed
    event = load_event("ingest-post-order-with-idempotency-key.json")
    restore = stall_calls(clients.idempotency_store().client, "UpdateItem", reaches_aws=False)
    first_context = LocalLambdaContext("IngestFunction", timeout_seconds=3)
    first = post(event, first_context)
    restore()
    assert_unavailable(first)

    # When the client retries after the record's in-progress time ran out
    time.sleep(first_context.get_remaining_time_in_millis() / 1000 + 0.1)
    retry = post(event)

    # Then the retry is the order SQS holds, stored once
    assert retry["statusCode"] == 202
    messages = queued(stack)
    assert set(queued_order_ids(messages)) == {order_id_of(retry)}
    write_queued_orders(template, stack, messages)
    assert stored_order_ids(stack) == [order_id_of(retry)]


def test_get_with_the_table_unreachable_is_503_with_retry_after(post: Post) -> None:
    # Given OrdersTable cannot be reached
    unreachable(clients.orders_table().client, "GetItem")

    # When an order is read
    response = post(load_event("ingest-get-order.json"))

    # Then
    assert_unavailable(response)
