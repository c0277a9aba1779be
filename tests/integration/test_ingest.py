"""IngestFunction, loaded as Lambda loads it, invoked with the `events/` fixtures against
resources made from `template.yaml`: what each answers, and what lands in OrdersQueue."""

from __future__ import annotations

import json
from collections.abc import Callable
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import boto3
import pytest

from orderpipe.aws import clients
from orderpipe.models import MAX_IDEMPOTENCY_KEY_LENGTH, Order, OrderRequest, OrderStatus
from orderpipe.observability import logger, metrics
from orderpipe_local.runtime.handlers import Handler
from orderpipe_local.runtime.lambda_context import LocalLambdaContext
from orderpipe_local.stack.provision import Stack
from orderpipe_local.stack.template import Template
from orderpipe_local.testing import EVENTS, load_event
from tests.integration.conftest import handler_of

# A GET or a refused request publishes no metric, and Powertools says so.
pytestmark = pytest.mark.filterwarnings("ignore:No application metrics to publish")

if TYPE_CHECKING:
    from mypy_boto3_sqs.type_defs import MessageTypeDef

STORED_ORDER_ID = load_event("ingest-get-order.json")["pathParameters"]["orderId"]

Invoke = Callable[[dict[str, Any]], dict[str, Any]]


@pytest.fixture
def ingest(template: Template, stack: Stack) -> Invoke:
    # Tests that call the app without the handler leave metrics behind that the next flush would emit.
    metrics.clear_metrics()
    handler: Handler = handler_of(template, "IngestFunction")

    def invoke(event: dict[str, Any]) -> dict[str, Any]:
        response: dict[str, Any] = handler(event, LocalLambdaContext(function_name="IngestFunction"))
        return response

    return invoke


def body_of(response: dict[str, Any]) -> Any:
    assert response["headers"]["Content-Type"] == "application/json"
    return json.loads(response["body"])


def queued_messages(stack: Stack) -> list[MessageTypeDef]:
    """Every message waiting in OrdersQueue (received once, so call it once per test)."""
    sqs = boto3.client("sqs")
    messages: list[MessageTypeDef] = []
    while batch := sqs.receive_message(
        QueueUrl=stack.ref("OrdersQueue"), MaxNumberOfMessages=10, MessageAttributeNames=["All"]
    ).get("Messages", []):
        messages.extend(batch)
    return messages


def with_body(event: dict[str, Any], body: str) -> dict[str, Any]:
    return event | {"body": body}


def emitted_metrics(output: str) -> dict[str, float]:
    """Metric name -> sum of values over the EMF documents printed on stdout."""
    totals: dict[str, float] = {}
    for line in output.splitlines():
        if '"_aws"' not in line:
            continue
        document = json.loads(line)
        for directive in document["_aws"]["CloudWatchMetrics"]:
            for metric in directive["Metrics"]:
                totals[metric["Name"]] = totals.get(metric["Name"], 0) + sum(document[metric["Name"]])
    return totals


def emitted_dimensions(output: str) -> set[tuple[tuple[str, str], ...]]:
    """Each dimension set of the EMF documents printed on stdout, with its values."""
    found = set()
    for line in output.splitlines():
        if '"_aws"' in line:
            document = json.loads(line)
            for directive in document["_aws"]["CloudWatchMetrics"]:
                for names in directive["Dimensions"]:
                    found.add(tuple((name, document[name]) for name in names))
    return found


# --- Every fixture is exercised --------------------------------------------------------------

FIXTURE_STATUS = {
    "ingest-post-order.json": 202,
    "ingest-post-order-with-idempotency-key.json": 202,
    "ingest-post-order-idempotency-key-reused.json": 422,
    "ingest-post-order-invalid.json": 422,
    "ingest-post-order-not-json.json": 400,
    "ingest-post-order-form-encoded.json": 415,
    "ingest-post-order-too-large.json": 413,
    "ingest-get-order.json": 200,
    "ingest-get-order-unknown.json": 404,
    # Behind the JWT authorizer: tests/integration/test_ingest_access.py
    "ingest-post-order-with-token.json": 202,
    "ingest-get-order-of-another-customer.json": 404,
}


def test_every_ingest_fixture_is_covered_here() -> None:
    # Given the ingest fixtures in events/
    fixtures = {path.name for path in EVENTS.glob("ingest-*.json")}

    # Then each has its expected answer in this module (and each test below uses it)
    assert fixtures == set(FIXTURE_STATUS)


# --- POST /orders ----------------------------------------------------------------------------


def test_post_order_fixture_queues_the_order_and_answers_202(
    ingest: Invoke, stack: Stack, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given the fixture of a valid order
    event = load_event("ingest-post-order.json")
    sent = OrderRequest.model_validate_json(event["body"])

    # When IngestFunction handles it
    response = ingest(event)

    # Then it answers 202 with the new order's id and where to read it
    assert response["statusCode"] == FIXTURE_STATUS["ingest-post-order.json"]
    body = body_of(response)
    assert body == {"orderId": body["orderId"], "status": "ACCEPTED"}
    assert response["headers"]["Location"] == f"/orders/{body['orderId']}"

    # And OrdersQueue holds exactly that order, with the orderId attribute and the server's total
    [message] = queued_messages(stack)
    queued = Order.model_validate_json(message["Body"])
    assert message["MessageAttributes"]["orderId"]["StringValue"] == body["orderId"]
    assert queued.order_id == body["orderId"]
    assert queued.customer == sent.customer
    assert queued.items == sent.items
    assert queued.shipping_address == sent.shipping_address
    assert queued.total == Decimal("49.99")
    assert json.loads(message["Body"])["total"] == "49.99"

    # And the order id is the correlation id, and one accepted order is counted
    assert logger.get_correlation_id() == body["orderId"]
    output = capsys.readouterr().out
    assert emitted_metrics(output).get("OrdersAccepted") == 1
    # And the metric is the stage's own, as the template's alarms and dashboard read it
    assert {dict(dimensions).get("stage") for dimensions in emitted_dimensions(output)} == {"dev"}


def test_client_total_is_ignored(ingest: Invoke, stack: Stack) -> None:
    # Given the valid order fixture with a total of the client's own
    event = load_event("ingest-post-order.json")
    event = with_body(event, json.dumps(json.loads(event["body"]) | {"total": "0.01"}))

    # When IngestFunction handles it
    assert ingest(event)["statusCode"] == 202

    # Then the queued order carries the total computed from its items
    [message] = queued_messages(stack)
    assert json.loads(message["Body"])["total"] == "49.99"


BAD_FIXTURES = [
    "ingest-post-order-invalid.json",
    "ingest-post-order-not-json.json",
    "ingest-post-order-form-encoded.json",
    "ingest-post-order-too-large.json",
]


@pytest.mark.parametrize("fixture", BAD_FIXTURES)
def test_bad_post_fixture_gets_its_4xx_and_never_reaches_the_queue(
    fixture: str, ingest: Invoke, stack: Stack
) -> None:
    # Given a fixture of a request no order can be made from
    event = load_event(fixture)

    # When IngestFunction handles it
    response = ingest(event)

    # Then it answers the status the fixture is named for, with a JSON message
    assert response["statusCode"] == FIXTURE_STATUS[fixture]
    assert body_of(response)["message"]

    # And nothing reaches OrdersQueue (invariant 4)
    assert queued_messages(stack) == []


def test_invalid_fixture_names_each_offending_field(ingest: Invoke) -> None:
    # Given the fixture of an order breaking the schema in five places
    event = load_event("ingest-post-order-invalid.json")

    # When IngestFunction handles it
    response = ingest(event)

    # Then each field is named by its path in the body
    assert response["statusCode"] == 422
    fields = {error["field"] for error in body_of(response)["errors"]}
    assert fields == {"customer.email", "items.0.sku", "items.0.quantity", "items.0.unitPrice", "currency"}


def test_queue_unavailable_is_503_and_a_retry_with_the_same_key_is_accepted_once(
    ingest: Invoke, stack: Stack
) -> None:
    # Given OrdersQueue is gone
    sqs = boto3.client("sqs")
    queue_name = stack.resources["OrdersQueue"].attributes["QueueName"]
    sqs.delete_queue(QueueUrl=stack.ref("OrdersQueue"))
    event = load_event("ingest-post-order-with-idempotency-key.json")

    # When an order is posted with an Idempotency-Key
    first = ingest(event)

    # Then the client is told to retry later: the order was not accepted
    assert first["statusCode"] == 503
    assert int(first["headers"]["Retry-After"]) > 0

    # And when the queue is back and the client retries with the same key
    sqs.create_queue(QueueName=queue_name)
    retry = ingest(event)

    # Then the retry is accepted (the failed attempt did not hold the key), and queued once
    assert retry["statusCode"] == 202
    [message] = queued_messages(stack)
    assert message["MessageAttributes"]["orderId"]["StringValue"] == body_of(retry)["orderId"]


# --- Idempotency-Key -------------------------------------------------------------------------


def test_same_key_and_same_order_answers_the_first_response_and_queues_once(
    ingest: Invoke, stack: Stack, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given the fixture of an order with an Idempotency-Key, already posted once
    event = load_event("ingest-post-order-with-idempotency-key.json")
    first = ingest(event)
    assert first["statusCode"] == 202

    # When the client retries it
    retry = ingest(event)

    # Then the first answer comes back, and only one order is queued
    assert retry["statusCode"] == 202
    assert body_of(retry) == body_of(first)
    assert retry["headers"]["Location"] == first["headers"]["Location"]
    [message] = queued_messages(stack)
    assert message["MessageAttributes"]["orderId"]["StringValue"] == body_of(first)["orderId"]

    # And the replay is counted as such, with the order id as correlation id
    assert emitted_metrics(capsys.readouterr().out) == {"OrdersAccepted": 1, "IdempotentReplays": 1}
    assert logger.get_correlation_id() == body_of(first)["orderId"]


def test_same_order_spelled_differently_counts_as_the_same_body(ingest: Invoke, stack: Stack) -> None:
    # Given an order posted with an Idempotency-Key
    event = load_event("ingest-post-order-with-idempotency-key.json")
    first = ingest(event)

    # When the same order is retried with other whitespace, key order and price spelling
    order = json.loads(event["body"])
    order["items"][0]["unitPrice"] = "12.5"
    respelled = json.dumps(dict(reversed(order.items())), indent=4)
    retry = ingest(with_body(event, respelled))

    # Then it is the same request: same order id, one message
    assert retry["statusCode"] == 202
    assert body_of(retry)["orderId"] == body_of(first)["orderId"]
    assert len(queued_messages(stack)) == 1


def test_same_key_with_a_different_order_is_422_and_queues_nothing_more(ingest: Invoke, stack: Stack) -> None:
    # Given the order with an Idempotency-Key, already accepted
    assert ingest(load_event("ingest-post-order-with-idempotency-key.json"))["statusCode"] == 202

    # When the reused-key fixture (same key, one more mop) is posted
    response = ingest(load_event("ingest-post-order-idempotency-key-reused.json"))

    # Then it is refused, saying why, and the queue still holds one order
    assert response["statusCode"] == FIXTURE_STATUS["ingest-post-order-idempotency-key-reused.json"]
    assert "Idempotency-Key" in body_of(response)["message"]
    assert len(queued_messages(stack)) == 1


def test_same_key_while_the_first_request_is_in_flight_is_409(
    ingest: Invoke, stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given the first request with a key is still queueing its order when its retry arrives
    event = load_event("ingest-post-order-with-idempotency-key.json")
    queue = clients.orders_queue()
    enqueue = queue.enqueue
    answers_in_flight: list[dict[str, Any]] = []

    def enqueue_while_retried(order: Order) -> str:
        answers_in_flight.append(ingest(event))
        return enqueue(order)

    monkeypatch.setattr(queue, "enqueue", enqueue_while_retried)

    # When the first request completes
    first = ingest(event)

    # Then the retry that came in meanwhile was told so (409, retry shortly), and one order is queued
    [in_flight] = answers_in_flight
    assert in_flight["statusCode"] == 409
    assert "in progress" in body_of(in_flight)["message"]
    assert int(in_flight["headers"]["Retry-After"]) > 0
    assert first["statusCode"] == 202
    assert len(queued_messages(stack)) == 1


def test_longest_allowed_key_is_accepted_and_honoured(ingest: Invoke, stack: Stack) -> None:
    # Given an order with a key of the longest allowed length
    event = load_event("ingest-post-order-with-idempotency-key.json")
    event["headers"]["idempotency-key"] = "k" * MAX_IDEMPOTENCY_KEY_LENGTH

    # When it is posted twice
    first, retry = ingest(event), ingest(event)

    # Then both get the same order, queued once
    assert first["statusCode"] == retry["statusCode"] == 202
    assert body_of(first) == body_of(retry)
    assert len(queued_messages(stack)) == 1


def test_without_a_key_every_post_is_a_new_order(ingest: Invoke, stack: Stack) -> None:
    # Given the valid order fixture, which has no Idempotency-Key
    event = load_event("ingest-post-order.json")

    # When it is posted twice
    first, second = ingest(event), ingest(event)

    # Then these are two orders
    assert body_of(first)["orderId"] != body_of(second)["orderId"]
    assert len(queued_messages(stack)) == 2


# --- GET /orders/{orderId} -------------------------------------------------------------------


def store_order(order_id: str) -> Order:
    """The valid order fixture as the writer would have stored it under `order_id`."""
    request = OrderRequest.model_validate_json(load_event("ingest-post-order.json")["body"])
    order = Order.accept(request).model_copy(update={"order_id": order_id})
    assert clients.orders_table().put_new_order(order)
    return order


def test_get_unknown_order_fixture_is_404(ingest: Invoke) -> None:
    # Given an OrdersTable without that order
    event = load_event("ingest-get-order-unknown.json")

    # When it is requested
    response = ingest(event)

    # Then it is not found
    assert response["statusCode"] == FIXTURE_STATUS["ingest-get-order-unknown.json"]
    assert body_of(response) == {"message": "no order has this id"}


def test_get_order_fixture_answers_the_stored_order_as_placed(ingest: Invoke) -> None:
    # Given the order of the GET fixture is stored
    stored = store_order(STORED_ORDER_ID)

    # When it is requested
    response = ingest(load_event("ingest-get-order.json"))

    # Then it comes back in camelCase, with money as strings and status PLACED
    assert response["statusCode"] == FIXTURE_STATUS["ingest-get-order.json"]
    assert response["headers"]["Cache-Control"] == "no-store"
    body = body_of(response)
    assert body["orderId"] == STORED_ORDER_ID
    assert body["status"] == "PLACED"
    assert body["createdAt"] == stored.model_dump(mode="json")["createdAt"]
    assert body["customer"] == {"name": "Ada Lovelace", "email": "ada@example.com"}
    assert body["items"][0] == {
        "sku": "MOP-001",
        "name": "Microfiber mop",
        "quantity": 2,
        "unitPrice": "12.50",
        "lineTotal": "25.00",
    }
    assert body["total"] == "49.99"
    assert body["currency"] == "USD"
    assert body["shippingAddress"]["postalCode"] == "12345"
    assert logger.get_correlation_id() == STORED_ORDER_ID


def with_order_id(order_id: str) -> dict[str, Any]:
    event = load_event("ingest-get-order.json")
    path = f"/orders/{order_id}"
    event["rawPath"] = event["requestContext"]["http"]["path"] = path
    event["pathParameters"] = {"orderId": order_id}
    return event


def test_get_order_with_the_id_in_upper_case_finds_the_order(ingest: Invoke) -> None:
    # Given the order of the GET fixture is stored
    store_order(STORED_ORDER_ID)

    # When it is requested with its id in upper case (UUIDs are case-insensitive)
    response = ingest(with_order_id(STORED_ORDER_ID.upper()))

    # Then it is found, under the id as stored
    assert response["statusCode"] == 200
    assert body_of(response)["orderId"] == STORED_ORDER_ID


@pytest.mark.parametrize("version", [1, 5, 7, 8])
def test_get_order_finds_an_order_whose_id_is_another_uuid_version(ingest: Invoke, version: int) -> None:
    # Given an order stored under a UUID of another version (keyed orders get version 5 ids)
    order_id = f"6ba7b810-9dad-{version}1d1-80b4-00c04fd430c8"
    store_order(order_id)

    # When it is requested
    response = ingest(with_order_id(order_id))

    # Then it is found
    assert response["statusCode"] == 200
    assert body_of(response)["orderId"] == order_id


def test_get_order_after_support_was_notified_is_notified(ingest: Invoke) -> None:
    # Given the order is stored and support staff were emailed about it
    store_order(STORED_ORDER_ID)
    assert clients.orders_table().mark_notified(STORED_ORDER_ID)

    # When it is requested
    response = ingest(load_event("ingest-get-order.json"))

    # Then its status says so
    assert response["statusCode"] == 200
    body = body_of(response)
    assert body["status"] == OrderStatus.NOTIFIED
    assert body["notifiedAt"]


def test_accepted_order_can_be_read_at_its_location_once_stored(ingest: Invoke, stack: Stack) -> None:
    # Given an order accepted by POST and stored from its queue message, as the writer does
    accepted = ingest(load_event("ingest-post-order.json"))
    [message] = queued_messages(stack)
    clients.orders_table().put_new_order(Order.model_validate_json(message["Body"]))

    # When the client follows the Location header
    location = accepted["headers"]["Location"]
    event = load_event("ingest-get-order.json")
    event["rawPath"] = event["requestContext"]["http"]["path"] = location
    event["pathParameters"] = {"orderId": location.rsplit("/", 1)[1]}
    response = ingest(event)

    # Then it reads the order it placed
    assert response["statusCode"] == 200
    assert body_of(response)["orderId"] == body_of(accepted)["orderId"]
    assert body_of(response)["total"] == "49.99"
