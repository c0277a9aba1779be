"""`openapi.json` is exactly as strict as ingest (DESIGN: the contract). Orders generated from its
request schema are all accepted; an order with one field that breaks that field's schema is
refused with a 4xx, never a 5xx. IngestFunction runs as Lambda loads it, against moto's queue."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis_jsonschema import from_schema

from orderpipe.models import MAX_BODY_BYTES, MAX_UNIT_PRICE, is_order_id
from orderpipe.observability import metrics
from orderpipe_local.runtime.handlers import Handler
from orderpipe_local.runtime.lambda_context import LocalLambdaContext
from orderpipe_local.stack.provision import Stack
from orderpipe_local.stack.template import Template
from orderpipe_local.testing import ROOT, load_event
from tests.integration.conftest import handler_of

pytestmark = pytest.mark.filterwarnings("ignore:No application metrics to publish")

DOCUMENT: dict[str, Any] = json.loads((ROOT / "openapi.json").read_text())
SCHEMAS: dict[str, Any] = DOCUMENT["components"]["schemas"]
POST_EVENT = load_event("ingest-post-order.json")
VALID_ORDER: dict[str, Any] = json.loads(POST_EVENT["body"])

# Examples are derived from a fixed seed, so CI runs the same orders every time.
CONTRACT_SETTINGS = settings(
    max_examples=200,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,  # one moto stack for all examples is what we want
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
        HealthCheck.data_too_large,
    ],
)

Invoke = Callable[[str], dict[str, Any]]


def closed(node: Any) -> Any:
    """The schema with `additionalProperties: false` on each object: ingest ignores fields it does
    not know (`test_client_total_is_ignored`), and generating them makes each example ten times
    slower."""
    if isinstance(node, list):
        return [closed(value) for value in node]
    if not isinstance(node, dict):
        return node
    copied = {key: closed(value) for key, value in node.items()}
    if isinstance(copied.get("properties"), dict) and copied.get("type") == "object":
        copied["additionalProperties"] = False
    return copied


COMPONENTS = closed(DOCUMENT["components"])


def resolvable(schema: dict[str, Any]) -> dict[str, Any]:
    """A schema whose `#/components/...` references resolve, as they do in openapi.json."""
    return {**schema, "components": COMPONENTS}


def request_schema() -> dict[str, Any]:
    post = DOCUMENT["paths"]["/orders"]["post"]
    schema: dict[str, Any] = post["requestBody"]["content"]["application/json"]["schema"]
    return resolvable({"$ref": schema["$ref"]})


@pytest.fixture
def post(template: Template, stack: Stack) -> Invoke:
    metrics.clear_metrics()
    handler: Handler = handler_of(template, "IngestFunction")

    def invoke(body: str) -> dict[str, Any]:
        headers = {k: v for k, v in POST_EVENT["headers"].items() if k != "content-length"}
        event = POST_EVENT | {"body": body, "headers": headers}
        response: dict[str, Any] = handler(event, LocalLambdaContext(function_name="IngestFunction"))
        return response

    return invoke


@CONTRACT_SETTINGS
@given(order=from_schema(request_schema()))
def test_every_order_valid_by_openapi_json_is_accepted(post: Invoke, order: dict[str, Any]) -> None:
    # Given an order generated from the request schema of POST /orders
    body = json.dumps(order)

    # When it is posted
    response = post(body)

    # Then it is accepted, unless it is over the body limit (which no JSON Schema can state)
    if len(body.encode()) > MAX_BODY_BYTES:
        assert response["statusCode"] == 413, response
    else:
        assert response["statusCode"] == 202, (response["body"], body)
        assert is_order_id(json.loads(response["body"])["orderId"])


def field_schema(model: str, field: str) -> dict[str, Any]:
    return resolvable(SCHEMAS[model]["properties"][field])


# Where a field sits in an order, and the schema openapi.json gives it there.
FIELDS: dict[str, tuple[tuple[str | int, ...], dict[str, Any]]] = {
    "customer": (("customer",), field_schema("OrderRequest", "customer")),
    "items": (("items",), field_schema("OrderRequest", "items")),
    "currency": (("currency",), field_schema("OrderRequest", "currency")),
    "shippingAddress": (("shippingAddress",), field_schema("OrderRequest", "shippingAddress")),
    "note": (("note",), field_schema("OrderRequest", "note")),
    "customer.name": (("customer", "name"), field_schema("Customer", "name")),
    "customer.email": (("customer", "email"), field_schema("Customer", "email")),
    **{
        f"items.0.{name}": (("items", 0, name), field_schema("LineItem-Input", name))
        for name in ("sku", "name", "quantity", "unitPrice")
    },
    **{
        f"shippingAddress.{name}": (("shippingAddress", name), field_schema("ShippingAddress", name))
        for name in ("line1", "line2", "city", "region", "postalCode", "country")
    },
}


def is_cent_amount(value: object) -> bool:
    """A JSON number that is a multiple of 0.01 read as the decimal it is written as.

    Validators check multipleOf in binary floating point and call 1.1 or 0.07 no multiple of
    0.01; ingest takes them as the prices they spell (and takes what such validators accept too).
    """
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    try:
        amount = Decimal(repr(value))
    except InvalidOperation:
        return False
    return amount.is_finite() and 0 <= amount <= MAX_UNIT_PRICE and amount == amount.quantize(Decimal("0.01"))


@st.composite
def orders_with_one_bad_field(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    """The fixture order with one field replaced by a value that field's schema forbids."""
    order = copy.deepcopy(VALID_ORDER)
    field = draw(st.sampled_from(sorted(FIELDS)))
    path, schema = FIELDS[field]
    bad = draw(from_schema({"not": schema, "components": COMPONENTS}))
    if field == "items.0.unitPrice":
        assume(not is_cent_amount(bad))
    parent: Any = order
    for step in path[:-1]:
        parent = parent[step]
    parent[path[-1]] = bad
    return field, order


@CONTRACT_SETTINGS
@given(case=orders_with_one_bad_field())
def test_an_order_with_a_field_openapi_json_forbids_is_refused(
    post: Invoke, case: tuple[str, dict[str, Any]]
) -> None:
    # Given the valid fixture order with one field that breaks that field's schema
    field, order = case
    body = json.dumps(order)

    # When it is posted
    response = post(body)

    # Then it is refused as the contract says: 422 naming the field (413 if it is over the limit)
    if len(body.encode()) > MAX_BODY_BYTES:
        assert response["statusCode"] == 413, response
        return
    assert response["statusCode"] == 422, (field, body, response["body"])
    errors = json.loads(response["body"])["errors"]
    assert any(error["field"] == field or error["field"].startswith(f"{field}.") for error in errors), errors
