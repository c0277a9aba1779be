"""NotifierRetryQueue: what the notifier could not finish, for the replay function to finish.

It holds three kinds of message: the failure records Lambda sends when it gives up a stream batch
(the mapping's on-failure destination, written by Lambda), and two of ours (written here):
`UnmarkedOrders`, the ids of orders already emailed whose NOTIFIED marking failed, and
`PendingOrders`, the ids of a replayed batch's orders still to announce once part of it was
mailed (so that a retry never takes the whole batch again). The queue's redrive
policy moves a message that fails the replay too, a bounded number of times, to NotifierDLQ.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import boto3
from botocore.exceptions import BotoCoreError, ClientError
from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient

# The longest SQS lets a message stay invisible (ChangeMessageVisibility).
MAX_VISIBILITY_TIMEOUT_SECONDS = 43200


class UnmarkedOrders(BaseModel):
    """Orders emailed but not marked NOTIFIED: the replay marks them, and never mails them."""

    model_config = ConfigDict(validate_by_name=True, validate_by_alias=True)

    kind: Literal["UnmarkedOrders"] = "UnmarkedOrders"
    order_ids: list[str] = Field(alias="orderIds", min_length=1)

    def to_message(self) -> str:
        return self.model_dump_json(by_alias=True)


class PendingOrders(BaseModel):
    """Orders still to announce (read from the table; those no longer PLACED are left out)."""

    model_config = ConfigDict(validate_by_name=True, validate_by_alias=True)

    kind: Literal["PendingOrders"] = "PendingOrders"
    order_ids: list[str] = Field(alias="orderIds", min_length=1)

    def to_message(self) -> str:
        return self.model_dump_json(by_alias=True)


class RetryQueueUnavailable(RuntimeError):
    """SQS refused the message or did not answer."""


class NotifierRetryQueue:
    def __init__(self, queue_url: str, client: SQSClient | None = None) -> None:
        self.queue_url = queue_url
        self.client: SQSClient = client or boto3.client("sqs")

    def send_unmarked(self, order_ids: list[str]) -> str:
        """Hand the replay function orders to mark NOTIFIED; returns the SQS message id."""
        return self._send(UnmarkedOrders(order_ids=order_ids))

    def send_pending(self, order_ids: list[str]) -> str:
        """Hand the replay function orders still to announce; returns the SQS message id."""
        return self._send(PendingOrders(order_ids=order_ids))

    def _send(self, work: UnmarkedOrders | PendingOrders) -> str:
        try:
            response = self.client.send_message(QueueUrl=self.queue_url, MessageBody=work.to_message())
        except (ClientError, BotoCoreError) as error:
            raise RetryQueueUnavailable(f"could not queue {len(work.order_ids)} {work.kind}") from error
        return response["MessageId"]

    def postpone(self, receipt_handle: str, seconds: int) -> bool:
        """Keep a message hidden for `seconds` from now (its backoff); False if SQS refused."""
        try:
            self.client.change_message_visibility(
                QueueUrl=self.queue_url,
                ReceiptHandle=receipt_handle,
                VisibilityTimeout=min(seconds, MAX_VISIBILITY_TIMEOUT_SECONDS),
            )
        except (ClientError, BotoCoreError):
            return False
        return True
