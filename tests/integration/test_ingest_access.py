"""IngestFunction behind a JWT authorizer, against resources made from `template.yaml`: the order
goes back only to its customer or to `orders/read-all`, and one customer's Idempotency-Key is
not another's."""

from __future__ import annotations

import json
from typing import Any

import boto3
import pytest

from orderpipe.access import PLACE_ORDERS_SCOPE, READ_ALL_ORDERS_SCOPE
from orderpipe.aws import clients
from orderpipe.models import Order, OrderRequest
from orderpipe.observability import metrics
from orderpipe_local.runtime.lambda_context import LocalLambdaContext
from orderpipe_local.stack.provision import Stack
from orderpipe_local.stack.template import Template
from orderpipe_local.testing import load_event
from tests.integration.conftest import handler_of
from tests.integration.test_ingest import FIXTURE_STATUS
from tests.unit.test_ingest_access import ADA, GRACE, token_claims, with_claims

pytestmark = pytest.mark.filterwarnings("ignore:No application metrics to publish")


class Customer:
    """IngestFunction's handler, called with the claims of one token."""

    def __init__(self, template: Template, sub: str | None, *scopes: str) -> None:
        self.handler = handler_of(template, "IngestFunction")
        self.claims = token_claims(sub, *scopes)

    def __call__(self, event: dict[str, Any]) -> dict[str, Any]:
        response: dict[str, Any] = self.handler(
            with_claims(event, self.claims), LocalLambdaContext(function_name="IngestFunction")
        )
        return response

    def place(self, headers: dict[str, str] | None = None) -> dict[str, Any]:
        event = load_event("ingest-post-order.json")
        event["headers"].update(headers or {})
        return self(event)

    def read(self, order_id: str) -> dict[str, Any]:
        event = load_event("ingest-get-order.json")
        event["rawPath"] = event["requestContext"]["http"]["path"] = f"/orders/{order_id}"
        event["pathParameters"] = {"orderId": order_id}
        return self(event)


def store_queued_orders(stack: Stack) -> None:
    """What the writer would do with every message in OrdersQueue."""
    sqs = boto3.client("sqs")
    while batch := sqs.receive_message(QueueUrl=stack.ref("OrdersQueue"), MaxNumberOfMessages=10).get(
        "Messages", []
    ):
        for message in batch:
            assert clients.orders_table().put_new_order(Order.model_validate_json(message["Body"]))
            sqs.delete_message(QueueUrl=stack.ref("OrdersQueue"), ReceiptHandle=message["ReceiptHandle"])


@pytest.fixture(autouse=True)
def no_leftover_metrics() -> None:
    metrics.clear_metrics()


def test_the_owner_reads_its_order_with_its_customer_id(template: Template, stack: Stack) -> None:
    # Given an order Ada placed, stored by the writer
    ada = Customer(template, ADA, PLACE_ORDERS_SCOPE)
    order_id = json.loads(ada.place()["body"])["orderId"]
    store_queued_orders(stack)

    # When Ada reads it
    response = ada.read(order_id)

    # Then she gets it, with her subject as its customerId
    assert response["statusCode"] == 200
    assert json.loads(response["body"])["customerId"] == ADA


def test_another_customer_gets_the_404_of_an_unknown_id(template: Template, stack: Stack) -> None:
    # Given Ada's stored order
    order_id = json.loads(Customer(template, ADA, PLACE_ORDERS_SCOPE).place()["body"])["orderId"]
    store_queued_orders(stack)
    grace = Customer(template, GRACE, PLACE_ORDERS_SCOPE)

    # When Grace reads it, and an id no order has
    hidden = grace.read(order_id)
    unknown = grace.read("00000000-0000-4000-8000-000000000000")

    # Then both answers are the same 404: the id reveals nothing
    assert hidden["statusCode"] == unknown["statusCode"] == 404
    assert hidden["body"] == unknown["body"]
    assert json.loads(hidden["body"]) == {"message": "no order has this id"}


def test_read_all_reads_any_customers_order(template: Template, stack: Stack) -> None:
    # Given Ada's stored order
    order_id = json.loads(Customer(template, ADA, PLACE_ORDERS_SCOPE).place()["body"])["orderId"]
    store_queued_orders(stack)

    # When support reads it with orders/read-all
    response = Customer(template, "support-agent", READ_ALL_ORDERS_SCOPE).read(order_id)

    # Then it is answered, Ada's customerId included
    assert response["statusCode"] == 200
    assert json.loads(response["body"])["customerId"] == ADA


def test_a_token_without_claims_reads_nothing(template: Template, stack: Stack) -> None:
    # Given Ada's stored order, and an event whose authorizer entry lost its claims
    order_id = json.loads(Customer(template, ADA, PLACE_ORDERS_SCOPE).place()["body"])["orderId"]
    store_queued_orders(stack)
    event = load_event("ingest-get-order.json")
    event["pathParameters"] = {"orderId": order_id}
    event["requestContext"]["authorizer"] = {"jwt": {"claims": None}}

    # When it is read
    response = handler_of(template, "IngestFunction")(
        event, LocalLambdaContext(function_name="IngestFunction")
    )

    # Then it is not found (fail closed), not answered as to an API without an authorizer
    assert response["statusCode"] == 404


def test_one_customers_idempotency_key_is_not_anothers(template: Template, stack: Stack) -> None:
    # Given Ada placed an order with an Idempotency-Key
    key = {"Idempotency-Key": "checkout-7f3a"}
    ada, grace = Customer(template, ADA, PLACE_ORDERS_SCOPE), Customer(template, GRACE, PLACE_ORDERS_SCOPE)
    first = ada.place(key)

    # When Grace sends the same order with the same key, and Ada retries hers
    theirs, retried = grace.place(key), ada.place(key)

    # Then Grace gets an order of her own, and Ada's retry answers her first order again
    assert first["statusCode"] == theirs["statusCode"] == retried["statusCode"] == 202
    ada_id, grace_id = (json.loads(r["body"])["orderId"] for r in (first, theirs))
    assert grace_id != ada_id
    assert json.loads(retried["body"])["orderId"] == ada_id
    store_queued_orders(stack)
    assert json.loads(grace.read(grace_id)["body"])["customerId"] == GRACE


# --- The fixtures (sam local invoke -e / orderpipe invoke -e) -----------------------------------


def invoke_fixture(template: Template, name: str) -> dict[str, Any]:
    response: dict[str, Any] = handler_of(template, "IngestFunction")(
        load_event(name), LocalLambdaContext(function_name="IngestFunction")
    )
    return response


def test_post_fixture_with_a_token_queues_the_order_of_its_subject(template: Template, stack: Stack) -> None:
    # Given the fixture of a POST that API Gateway's JWT authorizer let through
    event = load_event("ingest-post-order-with-token.json")
    subject = event["requestContext"]["authorizer"]["jwt"]["claims"]["sub"]

    # When it is invoked
    response = invoke_fixture(template, "ingest-post-order-with-token.json")

    # Then the order is accepted and queued with the token's subject as its customer
    assert response["statusCode"] == FIXTURE_STATUS["ingest-post-order-with-token.json"]
    [message] = boto3.client("sqs").receive_message(QueueUrl=stack.ref("OrdersQueue")).get("Messages", [])
    assert Order.model_validate_json(message["Body"]).customer_id == subject


def test_get_fixture_of_another_customers_order_is_404(template: Template, stack: Stack) -> None:
    # Given the fixture's order stored as placed by Ada, and the fixture's token Grace's
    event = load_event("ingest-get-order-of-another-customer.json")
    assert event["requestContext"]["authorizer"]["jwt"]["claims"]["sub"] == GRACE
    order_id = event["pathParameters"]["orderId"]
    request = OrderRequest.model_validate_json(load_event("ingest-post-order.json")["body"])
    assert clients.orders_table().put_new_order(Order.accept(request, order_id=order_id, customer_id=ADA))
    ada = Customer(template, ADA, PLACE_ORDERS_SCOPE)

    # When it is invoked
    response = invoke_fixture(template, "ingest-get-order-of-another-customer.json")

    # Then it is the 404 of an unknown id, and Ada still reads the order
    assert response["statusCode"] == FIXTURE_STATUS["ingest-get-order-of-another-customer.json"]
    assert json.loads(response["body"]) == {"message": "no order has this id"}
    assert ada.read(order_id)["statusCode"] == 200
