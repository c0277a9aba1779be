"""OrdersQueue: one message per accepted order, its body the order as JSON."""

from __future__ import annotations

from typing import TYPE_CHECKING

import boto3
from botocore.exceptions import BotoCoreError, ClientError

from orderpipe.models import Order

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient


class QueueUnavailable(RuntimeError):
    """SQS refused the message, or did not answer in time: the client may retry.

    Without an answer SQS may still have the message; a retry with the same Idempotency-Key
    sends the same orderId, which the writer stores once.
    """


class OrdersQueue:
    def __init__(self, queue_url: str, client: SQSClient | None = None) -> None:
        self.queue_url = queue_url
        self.client: SQSClient = client or boto3.client("sqs")

    def enqueue(self, order: Order) -> str:
        """Send the order; returns the SQS message id."""
        try:
            response = self.client.send_message(
                QueueUrl=self.queue_url,
                MessageBody=order.to_message(),
                MessageAttributes={"orderId": {"DataType": "String", "StringValue": order.order_id}},
            )
        except (ClientError, BotoCoreError) as error:  # an answer, or none (timeouts, connection)
            raise QueueUnavailable(f"could not enqueue order {order.order_id}") from error
        return response["MessageId"]
