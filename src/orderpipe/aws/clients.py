"""The AWS resources a function talks to, built once per cold start from its settings.

Every cached factory lives here so tests (and the local pipeline) can point them at another
endpoint with one `reset()`.
"""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING

from orderpipe.aws.orders_queue import OrdersQueue
from orderpipe.aws.orders_table import OrdersTable
from orderpipe.aws.orders_topic import OrdersTopic
from orderpipe.settings import settings

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.idempotency import DynamoDBPersistenceLayer


@cache
def orders_table() -> OrdersTable:
    return OrdersTable(settings().orders_table_name)


@cache
def orders_queue() -> OrdersQueue:
    return OrdersQueue(settings().orders_queue_url)


@cache
def idempotency_store() -> DynamoDBPersistenceLayer:
    """Built on first use, as its constructor creates a DynamoDB client (only ingest needs it)."""
    from aws_lambda_powertools.utilities.idempotency import DynamoDBPersistenceLayer

    return DynamoDBPersistenceLayer(table_name=settings().idempotency_table_name)


@cache
def orders_topic() -> OrdersTopic:
    return OrdersTopic(settings().orders_topic_arn)


def reset() -> None:
    """Forget cached settings and clients (after the environment changed)."""
    for factory in (settings, orders_table, orders_queue, idempotency_store, orders_topic):
        factory.cache_clear()
