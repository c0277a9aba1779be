"""The AWS resources a function talks to, built once per cold start from its settings.

Every cached factory lives here so tests (and the local pipeline) can point them at another
endpoint with one `reset()`. Every client gets bounded timeouts and retries from the settings
(`Settings.aws_call_budget_seconds`): a stalled endpoint fails the call in time for the handler
to answer, rather than Lambda ending the invocation mid-way.
"""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING

import boto3
from botocore.config import Config

from orderpipe.aws.notifier_retry_queue import NotifierRetryQueue
from orderpipe.aws.orders_queue import OrdersQueue
from orderpipe.aws.orders_stream import OrdersStream
from orderpipe.aws.orders_table import MARK_CONCURRENCY, OrdersTable
from orderpipe.aws.orders_topic import OrdersTopic
from orderpipe.settings import Settings, settings

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.idempotency import DynamoDBPersistenceLayer


def client_config(
    current: Settings,
    *,
    read_timeout: float | None = None,
    max_attempts: int | None = None,
    max_pool_connections: int = 10,
) -> Config:
    """Bounded timeouts, and botocore's standard retries (backoff with jitter, a retry quota)."""
    return Config(
        connect_timeout=current.AWS_CONNECT_TIMEOUT_SECONDS,
        read_timeout=read_timeout or current.AWS_READ_TIMEOUT_SECONDS,
        retries={"mode": "standard", "total_max_attempts": max_attempts or current.AWS_MAX_ATTEMPTS},
        max_pool_connections=max_pool_connections,
    )


@cache
def orders_table() -> OrdersTable:
    current = settings()
    config = client_config(current, max_pool_connections=MARK_CONCURRENCY)
    return OrdersTable(current.orders_table_name, boto3.client("dynamodb", config=config))


@cache
def orders_queue() -> OrdersQueue:
    current = settings()
    return OrdersQueue(current.orders_queue_url, boto3.client("sqs", config=client_config(current)))


@cache
def idempotency_store() -> DynamoDBPersistenceLayer:
    """Built on first use, as its constructor creates a DynamoDB client (only ingest needs it)."""
    from aws_lambda_powertools.utilities.idempotency import DynamoDBPersistenceLayer

    current = settings()
    return DynamoDBPersistenceLayer(
        table_name=current.idempotency_table_name, boto_config=client_config(current)
    )


@cache
def orders_topic() -> OrdersTopic:
    current = settings()
    # One attempt: after a lost answer SNS may have taken the email, and a retry would send it again.
    config = client_config(current, read_timeout=current.SNS_READ_TIMEOUT_SECONDS, max_attempts=1)
    return OrdersTopic(current.orders_topic_arn, boto3.client("sns", config=config))


@cache
def orders_stream() -> OrdersStream:
    return OrdersStream(boto3.client("dynamodbstreams", config=client_config(settings())))


@cache
def notifier_retry_queue() -> NotifierRetryQueue:
    current = settings()
    return NotifierRetryQueue(
        current.notifier_retry_queue_url, boto3.client("sqs", config=client_config(current))
    )


def reset() -> None:
    """Forget cached settings and clients (after the environment changed)."""
    for factory in (
        settings,
        orders_table,
        orders_queue,
        idempotency_store,
        orders_topic,
        orders_stream,
        notifier_retry_queue,
    ):
        factory.cache_clear()
