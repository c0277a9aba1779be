"""Requests to the ingest API, built from the `events/` fixtures, and a queue that records orders."""

from __future__ import annotations

import base64
import copy
import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, cast

import pytest

from orderpipe.aws import clients
from orderpipe.ingest import app
from orderpipe.models import Order
from orderpipe_local.runtime.lambda_context import LocalLambdaContext
from orderpipe_local.testing import load_event

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.typing import LambdaContext

VALID_ORDER: dict[str, Any] = json.loads(load_event("ingest-post-order.json")["body"])


def post_order(
    body: str | bytes | None,
    *,
    headers: dict[str, str] | None = None,
    content_type: str | None = "application/json",
    base64_encoded: bool = False,
) -> dict[str, Any]:
    """`ingest-post-order.json` with another body and headers; bytes are sent base64-encoded."""
    event = copy.deepcopy(load_event("ingest-post-order.json"))
    event["headers"].pop("content-length")
    event["headers"].pop("content-type")
    if content_type is not None:
        event["headers"]["content-type"] = content_type
    event["headers"].update(headers or {})
    if isinstance(body, bytes):
        body, base64_encoded = base64.b64encode(body).decode(), True
    event["body"] = body
    event["isBase64Encoded"] = base64_encoded
    return event


def post_order_json(order: Any, **kwargs: Any) -> dict[str, Any]:
    return post_order(json.dumps(order), **kwargs)


def get_order(order_id: str) -> dict[str, Any]:
    event = copy.deepcopy(load_event("ingest-get-order.json"))
    event["rawPath"] = event["requestContext"]["http"]["path"] = f"/orders/{order_id}"
    event["pathParameters"] = {"orderId": order_id}
    return event


def request(method: str, path: str) -> dict[str, Any]:
    """Any method and path, as API Gateway would pass it to a catch-all route."""
    event = copy.deepcopy(load_event("ingest-get-order.json"))
    event["routeKey"] = event["requestContext"]["routeKey"] = "$default"
    event["rawPath"] = event["requestContext"]["http"]["path"] = path
    event["requestContext"]["http"]["method"] = method
    event.pop("pathParameters")
    return event


class RecordingQueue:
    """Stands in for OrdersQueue: keeps what would have been sent."""

    def __init__(self) -> None:
        self.orders: list[Order] = []

    def enqueue(self, order: Order) -> str:
        self.orders.append(order)
        return f"message-{len(self.orders)}"


@contextmanager
def recording_queue() -> Iterator[RecordingQueue]:
    """Ingest enqueues into a RecordingQueue; undone before the shared fixtures reset resources."""
    queue = RecordingQueue()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(clients, "orders_queue", lambda: queue)
        yield queue


def resolve(event: dict[str, Any], context: LocalLambdaContext) -> dict[str, Any]:
    """What the ingest app answers; LocalLambdaContext has all that Powertools reads of a context."""
    return app.resolve(event, cast("LambdaContext", context))


def json_body(response: dict[str, Any]) -> Any:
    assert response["headers"]["Content-Type"] == "application/json"
    return json.loads(response["body"])
