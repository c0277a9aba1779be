"""Whatever a client sends, ingest answers a 4xx with a JSON message and queues nothing (invariant 4)."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from typing import Any

import pytest

from orderpipe.models import Order, OrderRequest
from orderpipe_local.runtime.lambda_context import LocalLambdaContext
from tests.unit.ingest_requests import (
    VALID_ORDER,
    RecordingQueue,
    post_order,
    post_order_json,
    recording_queue,
    resolve,
)

VALID_BODY = json.dumps(VALID_ORDER)


@pytest.fixture
def queue() -> Iterator[RecordingQueue]:
    with recording_queue() as queue:
        yield queue


def assert_rejected(response: dict[str, Any], queue: RecordingQueue) -> dict[str, Any]:
    assert 400 <= response["statusCode"] < 500, response
    assert response["headers"]["Content-Type"] == "application/json"
    body: dict[str, Any] = json.loads(response["body"])
    assert isinstance(body["message"], str)
    assert body["message"]
    assert queue.orders == []
    return body


def with_name(name: str) -> str:
    """The valid order whose customer name is `name`, spelled as JSON text."""
    return VALID_BODY.replace('"Ada Lovelace"', name)


HOSTILE_BODIES: dict[str, tuple[str | bytes | None, int]] = {
    "no body": (None, 400),
    "empty": ("", 400),
    "whitespace": (" \n\t ", 400),
    "truncated": (VALID_BODY[:-1], 400),
    "single quotes": (VALID_BODY.replace('"', "'"), 400),
    "trailing garbage": (VALID_BODY + "}", 400),
    "NaN": (VALID_BODY.replace('"12.50"', "NaN"), 400),
    "Infinity": (VALID_BODY.replace("2,", "Infinity,", 1), 400),
    "-Infinity in an ignored field": (VALID_BODY[:-1] + ', "extra": -Infinity}', 400),
    "5000-digit integer": (VALID_BODY.replace("2,", "1" + "0" * 5000 + ",", 1), 400),
    "deeply nested arrays": ("[" * 30_000 + "]" * 30_000, 400),
    "deeply nested objects": ('{"a":' * 10_000 + "1" + "}" * 10_000, 400),
    "deep nesting over the size limit": ("[" * 100_000 + "]" * 100_000, 413),
    "invalid UTF-8": (VALID_BODY.encode().replace(b"Ada", b"Ad\xff"), 400),
    "UTF-16": (VALID_BODY.encode("utf-16"), 400),
    "UTF-8 byte order mark": (b"\xef\xbb\xbf" + VALID_BODY.encode(), 400),
    "lone surrogate, raw": (with_name('"Ada \udc80"'), 400),
    "lone surrogate, escaped": (with_name('"Ada \\udc80"'), 422),
    "U+FFFF, which SQS refuses": (with_name('"Ada \\uffff"'), 422),
    "NUL in a name": (with_name('"Ada\\u0000"'), 422),
    "null": ("null", 422),
    "array": ("[]", 422),
    "array of orders": (json.dumps([VALID_ORDER]), 422),
    "string": ('"order"', 422),
    "number": ("42", 422),
    "boolean": ("true", 422),
    "empty object": ("{}", 422),
    "nulls everywhere": (json.dumps(dict.fromkeys(VALID_ORDER)), 422),
    "items null": (json.dumps(VALID_ORDER | {"items": None}), 422),
    "items an object": (json.dumps(VALID_ORDER | {"items": {"0": VALID_ORDER["items"][0]}}), 422),
    "quantity as string": (VALID_BODY.replace("2,", '"2",', 1), 422),
    "quantity with a fraction": (VALID_BODY.replace("2,", "2.5,", 1), 422),
    "quantity as boolean": (VALID_BODY.replace("2,", "true,", 1), 422),
    "huge float": (VALID_BODY.replace('"12.50"', "1e999999"), 422),
    "negative price": (VALID_BODY.replace('"12.50"', '"-1.00"'), 422),
    "price with 3 places": (VALID_BODY.replace('"12.50"', '"12.505"'), 422),
    "price 'NaN' as string": (VALID_BODY.replace('"12.50"', '"NaN"'), 422),
    "price in exponent form": (VALID_BODY.replace('"12.50"', '"1E+7"'), 422),
    "price in exponent form, in range": (VALID_BODY.replace('"12.50"', '"1E+2"'), 422),
    "price with a sign": (VALID_BODY.replace('"12.50"', '"+12.50"'), 422),
    "price with 3 places, trailing zero": (VALID_BODY.replace('"12.50"', '"12.500"'), 422),
    "price with spaces around": (VALID_BODY.replace('"12.50"', '" 12.50"'), 422),
    "negative price of digits": (VALID_BODY.replace('"12.50"', '"-700"'), 422),
    "price over the limit with a leading zero": (VALID_BODY.replace('"12.50"', '"09007330890"'), 422),
    "price number with 3 places": (VALID_BODY.replace('"12.50"', "0.001"), 422),
    "price with an underscore": (VALID_BODY.replace('"12.50"', '"1_2.50"'), 422),
    "price in Arabic-Indic digits": (VALID_BODY.replace('"12.50"', '"\u0661\u0662"'), 422),
    "price in fullwidth digits": (VALID_BODY.replace('"12.50"', '"\uff11\uff12"'), 422),
    "101 items": (json.dumps(VALID_ORDER | {"items": VALID_ORDER["items"][:1] * 101}), 422),
    "script in sku": (VALID_BODY.replace("MOP-001", "<script>alert(1)</script>"), 422),
    "header injection in name": (with_name('"Ada\\r\\nBcc: all@example.com"'), 422),
    "name of a zero-width space only": (with_name('"\\u200b"'), 422),
    "name of invisible characters only": (with_name('"\\u200b\\u2060\\u00a0\\u200e"'), 422),
    "email with a display name": (VALID_BODY.replace('"ada@example.com"', '"Evil <ada@example.com>"'), 422),
}


@pytest.mark.parametrize(("body", "status"), HOSTILE_BODIES.values(), ids=HOSTILE_BODIES.keys())
def test_hostile_body_gets_the_expected_4xx(
    body: str | bytes | None, status: int, queue: RecordingQueue, lambda_context: LocalLambdaContext
) -> None:
    # Given a body no order could be made from
    event = post_order(body)

    # When it is posted
    response = resolve(event, lambda_context)

    # Then the client is told what is wrong, and nothing is queued
    assert_rejected(response, queue)
    assert response["statusCode"] == status


HOSTILE_HEADERS: dict[str, tuple[dict[str, str], str | None, int]] = {
    "Idempotency-Key of 256 characters": ({"idempotency-key": "k" * 256}, "application/json", 400),
    "Idempotency-Key of 100 KB": ({"idempotency-key": "k" * 100_000}, "application/json", 400),
    "empty Idempotency-Key": ({"idempotency-key": ""}, "application/json", 400),
    "text/plain": ({}, "text/plain", 415),
    "form-encoded": ({}, "application/x-www-form-urlencoded", 415),
    "multipart without boundary": ({}, "multipart/form-data", 415),
    "multipart with boundary": ({}, "multipart/form-data; boundary=xyz", 415),
    "json-like media type": ({}, "application/jsonp", 415),
    "vendor JSON media type": ({}, "application/vnd.api+json", 415),
    "content type with odd bytes": ({}, "\x00\xff;;;=", 415),
}


@pytest.mark.filterwarnings("ignore:Received multipart/form-data without base64 encoding")
@pytest.mark.parametrize(
    ("headers", "content_type", "status"), HOSTILE_HEADERS.values(), ids=HOSTILE_HEADERS.keys()
)
def test_hostile_headers_get_the_expected_4xx(
    headers: dict[str, str],
    content_type: str | None,
    status: int,
    queue: RecordingQueue,
    lambda_context: LocalLambdaContext,
) -> None:
    # Given a valid order with headers no client should send
    event = post_order(VALID_BODY, headers=headers, content_type=content_type)

    # When it is posted
    response = resolve(event, lambda_context)

    # Then the header is refused and nothing is queued
    assert_rejected(response, queue)
    assert response["statusCode"] == status


def test_multipart_body_with_undecodable_part_headers_is_unsupported(
    queue: RecordingQueue, lambda_context: LocalLambdaContext
) -> None:
    # Given a multipart body whose part headers are not UTF-8 (Powertools' parser raises on it)
    body = b'--xyz\r\nContent-Disposition: form-data; name="\xff"\r\n\r\nvalue\r\n--xyz--\r\n'
    event = post_order(body, content_type="multipart/form-data; boundary=xyz")

    # When it is posted
    response = resolve(event, lambda_context)

    # Then it is refused as an unsupported media type
    assert_rejected(response, queue)
    assert response["statusCode"] == 415


def mutations(seed: int, count: int) -> list[str]:
    """Valid orders with bytes flipped, dropped, duplicated or swapped: mostly broken JSON."""
    rng = random.Random(seed)
    text = json.dumps(VALID_ORDER)
    alphabet = '{}[]",:0123456789.-eE \\/tfnaul\u00e9\u2028\ufeff\x00'
    bodies = []
    for _ in range(count):
        chars = list(text)
        for _ in range(rng.randint(1, 4)):
            position = rng.randrange(len(chars))
            match rng.randrange(4):
                case 0:
                    chars[position] = rng.choice(alphabet)
                case 1:
                    del chars[position]
                case 2:
                    chars.insert(position, rng.choice(alphabet))
                case _:
                    other = rng.randrange(len(chars))
                    chars[position], chars[other] = chars[other], chars[position]
        bodies.append("".join(chars))
    return bodies


def test_mutated_orders_never_get_a_5xx(queue: RecordingQueue, lambda_context: LocalLambdaContext) -> None:
    # Given a few hundred randomly damaged orders (seeded, so a failure can be replayed)
    bodies = mutations(seed=20251122, count=300)

    # When each one is posted
    statuses = [resolve(post_order(body), lambda_context)["statusCode"] for body in bodies]

    # Then each gets a 202 (the damage happened to leave a valid order) or a 4xx, never a 5xx
    assert all(status == 202 or 400 <= status < 500 for status in statuses), sorted(set(statuses))
    assert statuses.count(202) == len(queue.orders)
    assert {400, 422} <= set(statuses)


def test_random_bytes_never_get_a_5xx(queue: RecordingQueue, lambda_context: LocalLambdaContext) -> None:
    # Given random bytes of random lengths, sent base64-encoded as API Gateway sends binary bodies
    rng = random.Random(7)
    bodies = [rng.randbytes(rng.choice([1, 10, 1000, 70_000])) for _ in range(100)]

    # When each is posted
    responses = [resolve(post_order(body), lambda_context) for body in bodies]

    # Then every one is refused with a 4xx
    for response in responses:
        assert_rejected(response, queue)


def test_valid_order_with_hostile_but_harmless_text_is_accepted(
    queue: RecordingQueue, lambda_context: LocalLambdaContext
) -> None:
    # Given an order whose free text looks like markup, SQL and a template, with emoji
    order: dict[str, Any] = json.loads(VALID_BODY)
    order["customer"]["name"] = "Robert'); DROP TABLE orders;-- <b>{{7*7}}</b> \U0001f9f9"
    order["note"] = "=cmd|' /C calc'!A0\nSecond line"

    # When it is posted
    response = resolve(post_order_json(order), lambda_context)

    # Then it is accepted as text, unchanged
    assert response["statusCode"] == 202
    assert queue.orders[0].customer.name == order["customer"]["name"]
    assert queue.orders[0].note == order["note"]


@pytest.mark.parametrize("price", ["-0.0", "-0", "-0e3"])
def test_a_negative_zero_price_is_a_zero_price(
    price: str, queue: RecordingQueue, lambda_context: LocalLambdaContext
) -> None:
    # Given an order whose unit price is a JSON number zero with a minus sign (minimum 0 allows it;
    # as a string, only digits are a price: "-0" is refused like "-1")
    body = VALID_BODY.replace('"12.50"', price)

    # When it is posted
    response = resolve(post_order(body), lambda_context)

    # Then it is accepted as a free item: no "-0.00" reaches the queue, the table or an email
    assert response["statusCode"] == 202
    message = json.loads(queue.orders[0].to_message())
    assert message["items"][0]["unitPrice"] == "0.00"
    assert message["items"][0]["lineTotal"] == "0.00"
    assert not queue.orders[0].items[0].unit_price.is_signed()


@pytest.mark.parametrize(
    ("quantity", "price", "stored_quantity", "stored_price"),
    [
        ("2.0", '"12.50"', 2, "12.50"),
        ("1E3", '"12.50"', 1000, "12.50"),
        ("2", "0.07", 2, "0.07"),
        ("2", "1.1", 2, "1.10"),
        ("2", "84700.54000000001", 2, "84700.54"),
    ],
    ids=["integral float", "integer in exponent form", "0.07", "1.1", "one ulp off a cent"],
)
def test_numbers_json_schema_counts_as_valid_are_accepted(
    quantity: str,
    price: str,
    stored_quantity: int,
    stored_price: str,
    queue: RecordingQueue,
    lambda_context: LocalLambdaContext,
) -> None:
    # Given numbers that openapi.json's `type: integer` and `multipleOf: 0.01` allow, as JSON
    # Schema validators (which divide in binary floating point) see them
    body = VALID_BODY.replace("2,", f"{quantity},", 1).replace('"12.50"', price)

    # When it is posted
    response = resolve(post_order(body), lambda_context)

    # Then it is accepted, with the whole number and the amount in cents
    assert response["statusCode"] == 202
    item = json.loads(queue.orders[0].to_message())["items"][0]
    assert (item["quantity"], item["unitPrice"]) == (stored_quantity, stored_price)


def test_text_is_kept_as_sent_and_codes_with_spaces_are_refused(
    queue: RecordingQueue, lambda_context: LocalLambdaContext
) -> None:
    # Given a name with spaces around it, and a currency with a space after it
    spaced_name = with_name('" Ada Lovelace "')
    spaced_currency = VALID_BODY.replace('"USD"', '"USD "')

    # When each is posted
    accepted = resolve(post_order(spaced_name), lambda_context)
    refused = resolve(post_order(spaced_currency), lambda_context)

    # Then the name is kept as sent (openapi.json allows it) and the currency breaks its pattern
    assert accepted["statusCode"] == 202
    assert queue.orders[0].customer.name == " Ada Lovelace "
    assert refused["statusCode"] == 422


def test_names_and_address_lines_that_show_nothing_are_refused_by_field(
    queue: RecordingQueue, lambda_context: LocalLambdaContext
) -> None:
    # Given an order whose name, one item's name and an address line are only invisible characters
    order: dict[str, Any] = json.loads(VALID_BODY)
    order["customer"]["name"] = "\u200b\u2060"
    order["items"][0]["name"] = "\u3164"  # Hangul filler, filed as a letter
    order["shippingAddress"] = {"line1": "\u200e", "city": "Springfield", "postalCode": "1", "country": "US"}

    # When it is posted
    response = resolve(post_order_json(order), lambda_context)

    # Then each is named, and nothing is queued
    body = assert_rejected(response, queue)
    assert response["statusCode"] == 422
    assert body["errors"] == [
        {"field": field, "message": "must contain a visible character"}
        for field in ("customer.name", "items.0.name", "shippingAddress.line1")
    ]


def test_a_stored_order_with_a_blank_name_is_still_read() -> None:
    # Given an order as one accepted before names needed a visible character would be stored
    stored = json.loads(Order.accept(OrderRequest.model_validate_json(VALID_BODY)).to_message())
    stored["customer"]["name"] = "\u200b"

    # Then it still parses (the writer, the notifier and GET read it), and only ingest refuses it
    order = Order.model_validate(stored)
    assert order.blank_text_fields() == ["customer.name"]


@pytest.mark.parametrize("name", ["\U0001e5d1", "Zoë", "\u0915\u094d\u0937", "\U0001f9f9"])
def test_names_in_any_script_or_not_yet_assigned_characters_are_accepted(
    name: str, queue: RecordingQueue, lambda_context: LocalLambdaContext
) -> None:
    response = resolve(post_order(with_name(json.dumps(name))), lambda_context)

    assert response["statusCode"] == 202
    assert queue.orders[0].customer.name == name
