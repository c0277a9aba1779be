"""OrdersTopic: the SNS topic whose email subscription reaches support staff."""

from __future__ import annotations

from typing import TYPE_CHECKING

import boto3
from botocore.exceptions import BotoCoreError, ClientError, HTTPClientError
from botocore.exceptions import ConnectionError as EndpointUnreachable

from orderpipe.support_email import SupportEmail

if TYPE_CHECKING:
    from mypy_boto3_sns import SNSClient


class TopicUnavailable(RuntimeError):
    """SNS did not take the email; the stream records behind it should be retried."""


class PublishOutcomeUnknown(TopicUnavailable):
    """SNS got the request but its answer was lost (a read timeout, a dropped connection): the
    email may have gone out, and a standard topic cannot deduplicate a second one."""


class OrdersTopic:
    def __init__(self, topic_arn: str, client: SNSClient | None = None) -> None:
        self.topic_arn = topic_arn
        self.client: SNSClient = client or boto3.client("sns")

    def publish(self, email: SupportEmail) -> str:
        """Publish one email (Subject + plain-text Message); returns the SNS message id."""
        try:
            response = self.client.publish(TopicArn=self.topic_arn, Subject=email.subject, Message=email.body)
        except EndpointUnreachable as error:  # no connection: the request never reached SNS
            raise TopicUnavailable(f"could not reach SNS to publish {email.subject!r}") from error
        except HTTPClientError as error:  # sent, then no answer
            raise PublishOutcomeUnknown(f"SNS did not answer the publish of {email.subject!r}") from error
        except (ClientError, BotoCoreError) as error:  # SNS refused it, or it was never sent
            raise TopicUnavailable(f"could not publish {email.subject!r}") from error
        return response["MessageId"]
