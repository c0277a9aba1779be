"""Who may place and read orders: the JWT claims API Gateway passes on, read fail-closed.

Ingest enforces access whenever the event carries an authorizer, whatever its configuration
says: a function version published before the authorizer was turned on must enforce it too.
"""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

import pytest

from orderpipe.access import READ_ALL_ORDERS_SCOPE, Caller, caller_of
from orderpipe.models import Order, OrderRequest
from orderpipe_local.runtime.lambda_context import LocalLambdaContext
from tests.unit.ingest_requests import VALID_ORDER, json_body, post_order_json, recording_queue, resolve

ADA = "6f1e3c2a-ada0-4c1e-9d2b-0a1b2c3d4e5f"
GRACE = "0b7d9e41-9ace-4f3a-8c6d-5e4f3a2b1c0d"


def with_claims(event: dict[str, Any], claims: dict[str, Any] | None, scopes: Any = None) -> dict[str, Any]:
    """`event` as API Gateway passes it after its JWT authorizer accepted a token with `claims`."""
    event = copy.deepcopy(event)
    jwt: dict[str, Any] = {"claims": claims, "scopes": scopes}
    event["requestContext"]["authorizer"] = {"jwt": jwt}
    return event


def token_claims(sub: str | None, *scopes: str) -> dict[str, Any]:
    """Claims as API Gateway passes them: every value a string, scopes space-separated."""
    claims: dict[str, Any] = {
        "iss": "https://cognito-idp.us-east-1.amazonaws.com/us-east-1_example",
        "client_id": "storefront",
        "token_use": "access",
        "exp": "1764000000",
        "iat": "1763996400",
        "scope": " ".join(scopes),
    }
    if sub is not None:
        claims["sub"] = sub
    return claims


def an_order(customer_id: str | None) -> Order:
    return Order.accept(
        OrderRequest.model_validate(VALID_ORDER),
        now=datetime(2025, 5, 1, tzinfo=UTC),
        customer_id=customer_id,
    )


# --- Reading the caller from the event -------------------------------------------------------


def test_an_event_without_an_authorizer_has_no_caller() -> None:
    # Given an event from an API without an authorizer
    event = post_order_json(VALID_ORDER)

    # Then there is no caller to check: access is not enforced
    assert "authorizer" not in event["requestContext"]
    assert caller_of(event) is None


def test_the_caller_is_the_tokens_subject_with_its_scopes() -> None:
    # Given claims with a subject and two scopes, space-separated as Cognito writes them
    event = with_claims(
        post_order_json(VALID_ORDER), token_claims(ADA, "orders/write", READ_ALL_ORDERS_SCOPE)
    )

    # Then the caller is that subject with both scopes
    assert caller_of(event) == Caller(ADA, frozenset({"orders/write", READ_ALL_ORDERS_SCOPE}))


@pytest.mark.parametrize(
    ("claims", "scopes"),
    [
        pytest.param({"scp": "[orders/write orders/read-all]"}, None, id="scp-list-as-apigw-stringifies-it"),
        pytest.param({"scp": ["orders/write", "orders/read-all"]}, None, id="scp-list"),
        pytest.param({}, ["orders/write", "orders/read-all"], id="jwt-scopes"),
    ],
)
def test_scopes_are_read_from_each_place_providers_put_them(claims: dict[str, Any], scopes: Any) -> None:
    # Given the scopes in an `scp` claim or in the authorizer's own `scopes` list
    event = with_claims(post_order_json(VALID_ORDER), {"sub": ADA, **claims}, scopes)

    # Then they are the caller's scopes
    caller = caller_of(event)
    assert caller is not None
    assert caller.scopes == {"orders/write", READ_ALL_ORDERS_SCOPE}


@pytest.mark.parametrize(
    "authorizer",
    [
        pytest.param({}, id="empty"),
        pytest.param({"jwt": {}}, id="jwt-without-claims"),
        pytest.param({"jwt": {"claims": None}}, id="null-claims"),
        pytest.param({"lambda": {"sub": ADA}}, id="another-kind-of-authorizer"),
        pytest.param("not-an-object", id="malformed"),
    ],
)
def test_an_authorizer_without_claims_is_a_caller_who_may_do_nothing(authorizer: Any) -> None:
    # Given an event whose authorizer entry holds no JWT claims
    event = copy.deepcopy(post_order_json(VALID_ORDER))
    event["requestContext"]["authorizer"] = authorizer

    # Then access is enforced (fail closed): the caller may neither place nor read orders
    caller = caller_of(event)
    assert caller == Caller(None, frozenset())
    assert not caller.may_place_orders()
    assert not caller.may_read(an_order(customer_id=None))


# --- Who may read which order ----------------------------------------------------------------


def test_a_customer_may_read_only_its_own_orders() -> None:
    # Given Ada's order
    order = an_order(customer_id=ADA)

    # Then Ada may read it, Grace may not
    assert Caller(ADA, frozenset()).may_read(order)
    assert not Caller(GRACE, frozenset({"orders/write"})).may_read(order)


def test_read_all_reads_every_order_even_one_placed_without_a_customer() -> None:
    # Given orders of a customer and one placed while the API had no authorizer
    orders = [an_order(customer_id=ADA), an_order(customer_id=None)]

    # Then a support token with orders/read-all reads both; a customer token only its own
    support = Caller("support-agent", frozenset({READ_ALL_ORDERS_SCOPE}))
    assert all(support.may_read(order) for order in orders)
    assert not Caller(ADA, frozenset()).may_read(orders[1])


def test_a_token_without_a_subject_reads_no_one_elses_order() -> None:
    # Given an order placed without a customer, and a token without `sub`
    order = an_order(customer_id=None)

    # Then None == None does not count as ownership
    assert not Caller(None, frozenset({"orders/write"})).may_read(order)


# --- POST /orders with claims ----------------------------------------------------------------


def test_post_with_claims_stores_the_subject_as_the_customer(lambda_context: LocalLambdaContext) -> None:
    # Given a token of Ada with orders/write
    event = with_claims(post_order_json(VALID_ORDER), token_claims(ADA, "orders/write"))

    # When the order is posted
    with recording_queue() as queue:
        response = resolve(event, lambda_context)

    # Then it is accepted, and the queued order carries Ada as its customer
    assert response["statusCode"] == 202
    assert [order.customer_id for order in queue.orders] == [ADA]
    assert '"customerId":"' + ADA + '"' in queue.orders[0].to_message()


def test_post_without_an_authorizer_stores_no_customer(lambda_context: LocalLambdaContext) -> None:
    # Given an API without an authorizer (auth off)
    event = post_order_json(VALID_ORDER)

    # When the order is posted
    with recording_queue() as queue:
        response = resolve(event, lambda_context)

    # Then it is accepted as before, with no customerId in the message
    assert response["statusCode"] == 202
    assert queue.orders[0].customer_id is None
    assert "customerId" not in queue.orders[0].to_message()


@pytest.mark.parametrize(
    "claims",
    [
        pytest.param(token_claims(ADA), id="no-scope"),
        pytest.param(token_claims(ADA, "orders/read-all"), id="another-scope"),
        pytest.param(token_claims(None, "orders/write"), id="no-subject"),
        pytest.param(None, id="no-claims"),
    ],
)
def test_post_with_claims_that_do_not_allow_it_is_forbidden_and_queues_nothing(
    claims: dict[str, Any] | None, lambda_context: LocalLambdaContext
) -> None:
    # Given claims API Gateway would have stopped, had the route's scope been configured
    event = with_claims(post_order_json(VALID_ORDER), claims)

    # When the order is posted
    with recording_queue() as queue:
        response = resolve(event, lambda_context)

    # Then ingest answers API Gateway's 403 itself, and nothing is queued
    assert response["statusCode"] == 403
    assert json_body(response) == {"message": "Forbidden"}
    assert queue.orders == []
