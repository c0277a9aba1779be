"""OrdersTable: one item per orderId, written once, then marked NOTIFIED once."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import boto3
from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.exceptions import BotoCoreError, ClientError

from orderpipe.models import Order, OrderStatus, utc_timestamp

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

_serializer = TypeSerializer()
_deserializer = TypeDeserializer()
_BATCH_GET_LIMIT = 100  # keys per BatchGetItem request
# Conditional UpdateItems in flight at once when marking orders NOTIFIED: a batch of 500 takes as
# long as 5 requests one after the other, and the client's connection pool holds as many.
MARK_CONCURRENCY = 100


class StorageError(RuntimeError):
    """DynamoDB refused or failed a request; the caller's record should be retried."""


def _is_conditional_check_failure(error: ClientError) -> bool:
    return error.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException"


def to_attribute_values(item: dict[str, Any]) -> dict[str, Any]:
    return {key: _serializer.serialize(value) for key, value in item.items()}


def from_attribute_values(item: dict[str, Any]) -> dict[str, Any]:
    return {key: _deserializer.deserialize(value) for key, value in item.items()}


class OrdersTable:
    def __init__(self, table_name: str, client: DynamoDBClient | None = None) -> None:
        self.table_name = table_name
        self.client: DynamoDBClient = client or boto3.client("dynamodb")
        self._markers: ThreadPoolExecutor | None = None  # started on first use, kept while warm

    def put_new_order(self, order: Order) -> bool:
        """Store the order unless an item with its orderId exists. True if it was stored now."""
        stored = order.model_copy(update={"status": OrderStatus.PLACED, "stored_at": datetime.now(UTC)})
        try:
            self.client.put_item(
                TableName=self.table_name,
                Item=to_attribute_values(stored.to_item()),
                ConditionExpression="attribute_not_exists(orderId)",
            )
        except ClientError as error:
            if _is_conditional_check_failure(error):
                return False
            raise StorageError(f"could not store order {order.order_id}") from error
        except BotoCoreError as error:
            raise StorageError(f"could not store order {order.order_id}") from error
        return True

    def get_order(self, order_id: str) -> Order | None:
        try:
            response = self.client.get_item(
                TableName=self.table_name, Key={"orderId": {"S": order_id}}, ConsistentRead=True
            )
        except (ClientError, BotoCoreError) as error:
            raise StorageError(f"could not read order {order_id}") from error
        item = response.get("Item")
        return Order.model_validate(from_attribute_values(item)) if item else None

    def holds(self, order_id: str) -> bool:
        """Whether an item with this orderId exists (whatever it holds)."""
        try:
            response = self.client.get_item(
                TableName=self.table_name,
                Key={"orderId": {"S": order_id}},
                ProjectionExpression="orderId",
                ConsistentRead=True,
            )
        except (ClientError, BotoCoreError) as error:
            raise StorageError(f"could not read order {order_id}") from error
        return "Item" in response

    def notified_order_ids(self, order_ids: Iterable[str]) -> set[str]:
        """Those of the orders that are already marked NOTIFIED (a retried stream batch)."""
        notified: set[str] = set()
        for chunk in _chunks(sorted(set(order_ids)), _BATCH_GET_LIMIT):
            request: dict[str, Any] = {
                self.table_name: {
                    "Keys": [{"orderId": {"S": order_id}} for order_id in chunk],
                    "ProjectionExpression": "orderId, #status",
                    "ExpressionAttributeNames": {"#status": "status"},
                    "ConsistentRead": True,
                }
            }
            while request:
                try:
                    response = self.client.batch_get_item(RequestItems=request)
                except (ClientError, BotoCoreError) as error:
                    raise StorageError("could not read notification status") from error
                for item in response.get("Responses", {}).get(self.table_name, []):
                    if item.get("status", {}).get("S") == OrderStatus.NOTIFIED:
                        notified.add(item["orderId"]["S"])
                request = dict(response.get("UnprocessedKeys") or {})
        return notified

    def placed_orders_stored_between(
        self, start: datetime, end: datetime, *, time_for_a_request: Callable[[], bool] = lambda: True
    ) -> list[Order]:
        """The orders still PLACED that were stored from `start` to `end`: a failed stream
        batch's orders, once the stream no longer holds its records. A Scan (the whole table
        read, and billed): only the replay of a failure record older than the stream's 24
        hours needs it. Raises StorageError, also when no further request fits in time."""
        orders: list[Order] = []
        request: dict[str, Any] = {
            "TableName": self.table_name,
            "FilterExpression": "#status = :placed AND storedAt BETWEEN :start AND :end",
            "ExpressionAttributeNames": {"#status": "status"},
            "ExpressionAttributeValues": {
                ":placed": {"S": OrderStatus.PLACED.value},
                ":start": {"S": utc_timestamp(start)},
                ":end": {"S": utc_timestamp(end)},
            },
            "ConsistentRead": True,
        }
        while True:
            if not time_for_a_request():
                raise StorageError("no time left to finish reading the orders stored in the range")
            try:
                page = self.client.scan(**request)
            except (ClientError, BotoCoreError) as error:
                raise StorageError("could not read the orders stored in the range") from error
            orders += [Order.model_validate(from_attribute_values(item)) for item in page.get("Items", [])]
            if "LastEvaluatedKey" not in page:
                return orders
            request["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def mark_notified(self, order_id: str, at: datetime | None = None) -> bool:
        """PLACED -> NOTIFIED. False if the order was not PLACED (already notified, or absent).

        True too when the order already carries this very `notifiedAt`: an attempt that timed
        out had been applied, and botocore's retry of it failed the condition on our own write.
        """
        at = at or datetime.now(UTC)
        try:
            self.client.update_item(**self._notified_update(order_id, at))
        except ClientError as error:
            if _is_conditional_check_failure(error):
                old_item: dict[str, Any] = error.response.get("Item", {})  # type: ignore[assignment]
                old = from_attribute_values(old_item)
                ours = {"status": OrderStatus.NOTIFIED.value, "notifiedAt": utc_timestamp(at)}
                return all(old.get(name) == value for name, value in ours.items())
            raise StorageError(f"could not mark order {order_id} notified") from error
        except BotoCoreError as error:
            raise StorageError(f"could not mark order {order_id} notified") from error
        return True

    def mark_all_notified(
        self,
        order_ids: Sequence[str],
        at: datetime | None = None,
        *,
        time_for_a_request: Callable[[], bool] = lambda: True,
    ) -> MarkedOrders:
        """PLACED -> NOTIFIED for many orders: a conditional UpdateItem each, MARK_CONCURRENCY at once.

        One write unit per order (an item up to 1 KB); a transaction would bill two. Each request
        starts only while `time_for_a_request()` says it fits; the orders left, and those
        DynamoDB refused, are `failed`. Never raises: the caller has sent the email, and must not
        be made to send it again.
        """
        at = at or datetime.now(UTC)
        unique = list(dict.fromkeys(order_ids))

        def mark(order_id: str) -> str:
            if not time_for_a_request():
                return "failed"
            try:
                return "marked" if self.mark_notified(order_id, at) else "not_placed"
            except StorageError:
                return "failed"

        if len(unique) <= 1:
            outcomes = [mark(order_id) for order_id in unique]
        else:
            if self._markers is None:
                self._markers = ThreadPoolExecutor(MARK_CONCURRENCY, thread_name_prefix="mark-notified")
            outcomes = list(self._markers.map(mark, unique))
        result = MarkedOrders()
        for order_id, outcome in zip(unique, outcomes, strict=True):
            getattr(result, outcome).append(order_id)
        return result

    def _notified_update(self, order_id: str, at: datetime) -> Any:
        return {
            "TableName": self.table_name,
            "Key": {"orderId": {"S": order_id}},
            "UpdateExpression": "SET #status = :notified, notifiedAt = :at",
            "ConditionExpression": "#status = :placed",
            "ReturnValuesOnConditionCheckFailure": "ALL_OLD",  # to tell our own resent write apart
            "ExpressionAttributeNames": {"#status": "status"},
            "ExpressionAttributeValues": {
                ":notified": {"S": OrderStatus.NOTIFIED.value},
                ":placed": {"S": OrderStatus.PLACED.value},
                ":at": {"S": utc_timestamp(at)},
            },
        }


@dataclass
class MarkedOrders:
    """What `mark_all_notified` did with each order."""

    marked: list[str] = field(default_factory=list)
    not_placed: list[str] = field(default_factory=list)  # already NOTIFIED, or absent
    failed: list[str] = field(default_factory=list)  # DynamoDB refused even one by one


def _chunks(values: list[str], size: int) -> Iterator[list[str]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]
