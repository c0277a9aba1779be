"""How ingest answers: 202 for an order, and the one HTTP status DESIGN names for each problem."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from botocore.stub import Stubber

from orderpipe import ingest
from orderpipe.aws import clients
from orderpipe.models import MAX_BODY_BYTES, is_order_id
from orderpipe_local.runtime.lambda_context import LocalLambdaContext
from tests.unit.ingest_requests import (
    VALID_ORDER,
    RecordingQueue,
    get_order,
    json_body,
    post_order,
    post_order_json,
    recording_queue,
    request,
    resolve,
)

QUEUE_URL = "https://sqs.us-east-1.amazonaws.com/123456789012/orderpipe-OrdersQueue"


@pytest.fixture
def queue() -> Iterator[RecordingQueue]:
    with recording_queue() as queue:
        yield queue


def padded_to(size: int, order: dict[str, Any] = VALID_ORDER) -> str:
    """The order as JSON, padded with trailing whitespace to exactly `size` bytes."""
    text = json.dumps(order)
    return text + " " * (size - len(text.encode()))


# --- 202 ------------------------------------------------------------------------------------


def test_valid_order_is_queued_and_answered_202_with_its_location(
    queue: RecordingQueue, lambda_context: LocalLambdaContext
) -> None:
    # Given a valid order that also claims a total of its own
    order = VALID_ORDER | {"total": "0.01"}

    # When it is posted
    response = resolve(post_order_json(order), lambda_context)

    # Then it is queued under a new id, with the total the server computed
    assert response["statusCode"] == 202
    body = json_body(response)
    assert body == {"orderId": body["orderId"], "status": "ACCEPTED"}
    assert is_order_id(body["orderId"])
    assert response["headers"]["Location"] == f"/orders/{body['orderId']}"
    [queued] = queue.orders
    assert queued.order_id == body["orderId"]
    assert queued.total == Decimal("49.99")


@pytest.mark.parametrize(
    "content_type",
    [
        None,
        "application/json; charset=utf-8",
        "application/json;charset=UTF-8",
        "Application/JSON",
        "APPLICATION/JSON; charset=UTF-8",
    ],
)
def test_json_content_types_and_a_missing_one_are_accepted(
    content_type: str | None, queue: RecordingQueue, lambda_context: LocalLambdaContext
) -> None:
    # Given a valid order sent with a JSON content type, or none at all
    event = post_order_json(VALID_ORDER, content_type=content_type)

    # When it is posted
    response = resolve(event, lambda_context)

    # Then it is accepted
    assert response["statusCode"] == 202
    assert len(queue.orders) == 1


def test_base64_encoded_body_is_decoded(queue: RecordingQueue, lambda_context: LocalLambdaContext) -> None:
    # Given a valid order that API Gateway passed base64-encoded
    event = post_order(json.dumps(VALID_ORDER).encode())

    # When it is posted
    response = resolve(event, lambda_context)

    # Then it is accepted
    assert response["statusCode"] == 202
    assert queue.orders[0].customer.name == "Ada Lovelace"


# --- 413 ------------------------------------------------------------------------------------


def test_body_of_exactly_the_limit_is_accepted(
    queue: RecordingQueue, lambda_context: LocalLambdaContext
) -> None:
    # Given a valid order padded to exactly 64 KiB
    event = post_order(padded_to(MAX_BODY_BYTES))

    # When it is posted
    response = resolve(event, lambda_context)

    # Then it is accepted
    assert response["statusCode"] == 202


@pytest.mark.parametrize("base64_encoded", [False, True])
def test_body_one_byte_over_the_limit_is_413_even_when_otherwise_valid(
    base64_encoded: bool, queue: RecordingQueue, lambda_context: LocalLambdaContext
) -> None:
    # Given a valid order padded to one byte over 64 KiB, sent as text or base64-encoded
    body = padded_to(MAX_BODY_BYTES + 1)
    event = post_order(body.encode() if base64_encoded else body)

    # When it is posted
    response = resolve(event, lambda_context)

    # Then it is refused as too large, and nothing is queued
    assert response["statusCode"] == 413
    assert str(MAX_BODY_BYTES) in json_body(response)["message"]
    assert queue.orders == []


def test_size_is_counted_in_decoded_bytes_not_characters(
    queue: RecordingQueue, lambda_context: LocalLambdaContext
) -> None:
    # Given an order of fewer than 64 Ki characters that are more than 64 KiB in UTF-8
    order = VALID_ORDER | {"comment": "\u20ac" * 22_000}  # 3 bytes each; an ignored field
    body = json.dumps(order, ensure_ascii=False)
    assert len(body) < MAX_BODY_BYTES < len(body.encode())

    # When it is posted
    response = resolve(post_order(body), lambda_context)

    # Then it is too large
    assert response["statusCode"] == 413


def test_base64_body_is_measured_after_decoding(
    queue: RecordingQueue, lambda_context: LocalLambdaContext
) -> None:
    # Given a body whose base64 form is over 64 KiB but whose bytes are not
    body = padded_to(60_000).encode()
    event = post_order(body)
    assert len(event["body"]) > MAX_BODY_BYTES

    # When it is posted
    response = resolve(event, lambda_context)

    # Then it is accepted
    assert response["statusCode"] == 202


def test_oversized_invalid_order_is_413_not_422(
    queue: RecordingQueue, lambda_context: LocalLambdaContext
) -> None:
    # Given an order that breaks the schema and is too large
    order = VALID_ORDER | {"note": "x" * (MAX_BODY_BYTES + 1)}

    # When it is posted
    response = resolve(post_order_json(order), lambda_context)

    # Then the size is what the client hears about first
    assert response["statusCode"] == 413


# --- 415 ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/xml", "application/x-www-form-urlencoded"]
)
def test_valid_json_sent_as_another_content_type_is_415(
    content_type: str, queue: RecordingQueue, lambda_context: LocalLambdaContext
) -> None:
    # Given a valid order labelled as something other than JSON
    event = post_order_json(VALID_ORDER, content_type=content_type)

    # When it is posted
    response = resolve(event, lambda_context)

    # Then the content type is refused
    assert response["statusCode"] == 415
    assert json_body(response) == {"message": "Content-Type must be application/json"}
    assert queue.orders == []


@pytest.mark.parametrize("encoding", ["gzip", "GZIP", "deflate, br", "x-gzip"])
def test_a_compressed_body_is_415_naming_the_encoding(
    encoding: str, queue: RecordingQueue, lambda_context: LocalLambdaContext
) -> None:
    # Given a gzip-compressed order, which API Gateway passes through as it came (base64)
    body = gzip.compress(json.dumps(VALID_ORDER).encode())
    event = post_order(body, headers={"content-encoding": encoding})

    # When it is posted
    response = resolve(event, lambda_context)

    # Then the encoding is refused by name, not taken for a body that is not UTF-8
    assert response["statusCode"] == 415
    assert json_body(response)["message"].startswith(f"Content-Encoding {encoding} is not supported")
    assert queue.orders == []


def test_identity_content_encoding_is_no_encoding(
    queue: RecordingQueue, lambda_context: LocalLambdaContext
) -> None:
    event = post_order(json.dumps(VALID_ORDER), headers={"content-encoding": "identity"})

    response = resolve(event, lambda_context)

    assert response["statusCode"] == 202
    assert len(queue.orders) == 1


def test_oversized_body_of_another_content_type_is_413(
    queue: RecordingQueue, lambda_context: LocalLambdaContext
) -> None:
    # Given a body over the limit, labelled as plain text
    event = post_order(padded_to(MAX_BODY_BYTES + 1), content_type="text/plain")

    # When it is posted
    response = resolve(event, lambda_context)

    # Then the size is what the client hears about first, whatever the content type
    assert response["statusCode"] == 413


# --- 400 ------------------------------------------------------------------------------------


def test_body_that_is_not_json_is_400_with_where_it_broke(
    queue: RecordingQueue, lambda_context: LocalLambdaContext
) -> None:
    # Given a body cut short
    event = post_order('{"customer": {"name": "Ada"')

    # When it is posted
    response = resolve(event, lambda_context)

    # Then the client learns it is not JSON, and where
    assert response["statusCode"] == 400
    assert json_body(response)["message"].startswith("the body is not valid JSON: ")
    assert "line 1 column 28" in json_body(response)["message"]


@pytest.mark.parametrize("key", ["", "k" * 256])
def test_idempotency_key_outside_1_to_255_characters_is_400(
    key: str, queue: RecordingQueue, lambda_context: LocalLambdaContext
) -> None:
    # Given a valid order with an empty or overlong Idempotency-Key
    event = post_order_json(VALID_ORDER, headers={"idempotency-key": key})

    # When it is posted
    response = resolve(event, lambda_context)

    # Then the header is refused and nothing is queued
    assert response["statusCode"] == 400
    assert "Idempotency-Key" in json_body(response)["message"]
    assert queue.orders == []


# --- 422 ------------------------------------------------------------------------------------


def test_schema_violations_are_422_naming_each_field_as_the_client_spelled_it(
    queue: RecordingQueue, lambda_context: LocalLambdaContext
) -> None:
    # Given an order with a bad email, a zero quantity, a price with 3 places and a bad postal code
    order = json.loads(json.dumps(VALID_ORDER))
    order["customer"]["email"] = "ada.example.com"
    order["items"][1]["quantity"] = 0
    order["items"][1]["unitPrice"] = "24.999"
    order["shippingAddress"]["postalCode"] = ""

    # When it is posted
    response = resolve(post_order_json(order), lambda_context)

    # Then each offending field is named by its path in the body
    assert response["statusCode"] == 422
    body = json_body(response)
    assert body["message"]
    fields = {error["field"]: error["message"] for error in body["errors"]}
    assert set(fields) == {
        "customer.email",
        "items.1.quantity",
        "items.1.unitPrice",
        "shippingAddress.postalCode",
    }
    assert all(message for message in fields.values())
    assert "greater than or equal to 1" in fields["items.1.quantity"]
    assert queue.orders == []


def test_missing_required_fields_are_named(queue: RecordingQueue, lambda_context: LocalLambdaContext) -> None:
    # Given an order with neither customer nor items
    event = post_order_json({"currency": "USD"})

    # When it is posted
    response = resolve(event, lambda_context)

    # Then both are named as required
    assert response["statusCode"] == 422
    errors = json_body(response)["errors"]
    assert {error["field"] for error in errors} == {"customer", "items"}
    assert {error["message"] for error in errors} == {"Field required"}


def test_validator_messages_lose_pydantic_prefix(
    queue: RecordingQueue, lambda_context: LocalLambdaContext
) -> None:
    # Given an order whose quantity is a string
    order = json.loads(json.dumps(VALID_ORDER))
    order["items"][0]["quantity"] = "2"

    # When it is posted
    response = resolve(post_order_json(order), lambda_context)

    # Then the message is the model's own words
    assert json_body(response)["errors"] == [
        {"field": "items.0.quantity", "message": "must be a whole number"}
    ]


@pytest.mark.parametrize("body", ["null", "[]", json.dumps([VALID_ORDER]), '"order"'])
def test_body_that_is_json_but_not_an_object_is_422_for_the_whole_body(
    body: str, queue: RecordingQueue, lambda_context: LocalLambdaContext
) -> None:
    # Given JSON that is not an object (an array of valid orders included)
    event = post_order(body)

    # When it is posted
    response = resolve(event, lambda_context)

    # Then the body as a whole is the offending field
    assert response["statusCode"] == 422
    assert json_body(response)["errors"] == [
        {"field": "", "message": "the body must be a JSON object: an order"}
    ]
    assert queue.orders == []


# --- 404 ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"), [("GET", "/"), ("GET", "/orders"), ("DELETE", "/orders/x"), ("PUT", "/orders")]
)
def test_unknown_route_is_404_json(method: str, path: str, lambda_context: LocalLambdaContext) -> None:
    # Given a route the API does not have
    event = request(method, path)

    # When it is requested
    response = resolve(event, lambda_context)

    # Then it is not found, in JSON
    assert response["statusCode"] == 404
    assert json_body(response) == {"message": "not found"}


@pytest.mark.parametrize(
    "order_id",
    ["not-an-id", "7c9e6679-7425-00de-944b-e07fc1f90ae7", "7C9E6679742540DE944BE07FC1F90AE7", "1" * 3000],
)
def test_order_id_that_cannot_exist_is_404_without_reading_the_table(
    order_id: str, monkeypatch: pytest.MonkeyPatch, lambda_context: LocalLambdaContext
) -> None:
    # Given an OrdersTable that must not be read
    monkeypatch.setenv("ORDERS_TABLE_NAME", "orderpipe-OrdersTable")
    with Stubber(clients.orders_table().client) as table:
        # When an id that is no order id is requested
        response = resolve(get_order(order_id), lambda_context)

        # Then it is not found, and DynamoDB was not asked
        table.assert_no_pending_responses()
    assert response["statusCode"] == 404
    assert json_body(response) == {"message": "no order has this id"}


# --- 503 ------------------------------------------------------------------------------------


def test_queue_unavailable_is_503_with_retry_after(
    monkeypatch: pytest.MonkeyPatch, lambda_context: LocalLambdaContext
) -> None:
    # Given an OrdersQueue that SQS cannot reach
    monkeypatch.setenv("ORDERS_QUEUE_URL", QUEUE_URL)
    with Stubber(clients.orders_queue().client) as sqs:
        sqs.add_client_error("send_message", "AWS.SimpleQueueService.NonExistentQueue", http_status_code=400)

        # When a valid order is posted
        response = resolve(post_order_json(VALID_ORDER), lambda_context)

        # Then the client is told to retry later, without internals
        sqs.assert_no_pending_responses()
    assert response["statusCode"] == 503
    assert response["headers"]["Retry-After"] == str(ingest.RETRY_AFTER_SECONDS)
    assert json_body(response) == {"message": "the service is unavailable; retry later"}


def test_idempotency_store_unavailable_is_503_and_nothing_is_queued(
    monkeypatch: pytest.MonkeyPatch, queue: RecordingQueue, lambda_context: LocalLambdaContext
) -> None:
    # Given an idempotency table that DynamoDB cannot serve
    monkeypatch.setenv("IDEMPOTENCY_TABLE_NAME", "orderpipe-IdempotencyTable")
    with Stubber(clients.idempotency_store().client) as dynamodb:
        dynamodb.add_client_error("put_item", "InternalServerError", http_status_code=500)

        # When a valid order is posted with an Idempotency-Key
        event = post_order_json(VALID_ORDER, headers={"idempotency-key": "checkout-1"})
        response = resolve(event, lambda_context)

        # Then the client is told to retry later, and the order was not queued
        dynamodb.assert_no_pending_responses()
    assert response["statusCode"] == 503
    assert "Retry-After" in response["headers"]
    assert queue.orders == []


def test_table_unavailable_on_read_is_503(
    monkeypatch: pytest.MonkeyPatch, lambda_context: LocalLambdaContext
) -> None:
    # Given an OrdersTable that throttles every read
    monkeypatch.setenv("ORDERS_TABLE_NAME", "orderpipe-OrdersTable")
    with Stubber(clients.orders_table().client) as table:
        table.add_client_error("get_item", "ProvisionedThroughputExceededException", http_status_code=400)

        # When an order is requested
        response = resolve(get_order("7c9e6679-7425-40de-944b-e07fc1f90ae7"), lambda_context)

    # Then the client is told to retry later
    assert response["statusCode"] == 503
    assert response["headers"]["Retry-After"] == str(ingest.RETRY_AFTER_SECONDS)


# --- Not the client's fault -----------------------------------------------------------------


def test_a_bug_is_not_disguised_as_a_client_error(
    monkeypatch: pytest.MonkeyPatch, queue: RecordingQueue, lambda_context: LocalLambdaContext
) -> None:
    # Given a valid order, and a defect that raises ValueError while accepting it
    def broken(order: object, **kwargs: object) -> None:
        raise ValueError("a bug")

    monkeypatch.setattr(ingest, "accept_order", broken)

    # When the order is posted
    # Then the error reaches the Lambda runtime (a 5xx and an alarm), not the client as a 4xx
    with pytest.raises(ValueError, match="a bug"):
        resolve(post_order_json(VALID_ORDER), lambda_context)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("3f6c2a7e-1b9d-4c58-9e2f-7a1d0b4c8e51", True),
        ("6ba7b810-9dad-11d1-80b4-00c04fd430c8", True),  # version 1
        ("886313e1-3b8a-5372-9b90-0c9aee199e5d", True),  # version 5, as keyed orders get
        ("017f22e2-79b0-7cc3-98c4-dc0c0c07398f", True),  # version 7
        ("3F6C2A7E-1B9D-4C58-9E2F-7A1D0B4C8E51", False),  # stored ids are lowercase
        ("00000000-0000-0000-0000-000000000000", False),  # nil: version 0
        ("3f6c2a7e-1b9d-9c58-9e2f-7a1d0b4c8e51", False),  # version 9
        ("3f6c2a7e-1b9d-4c58-7e2f-7a1d0b4c8e51", False),  # not the RFC 4122 variant
        ("3f6c2a7e1b9d4c589e2f7a1d0b4c8e51", False),
        ("3f6c2a7e-1b9d-4c58-9e2f-7a1d0b4c8e51\n", False),
        ("x", False),
    ],
)
def test_order_ids_are_canonical_uuids_of_any_version(value: str, expected: bool) -> None:
    assert is_order_id(value) is expected
