"""Where each function finds its AWS resources: environment variables set by `template.yaml`."""

from __future__ import annotations

import os
from functools import cache

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from orderpipe.support_email import SupportEmailDetail

# botocore's standard retry mode waits rand(0, 1) * min(2 ** (attempt - 1), 20) seconds before
# each retry (botocore.retries.standard.ExponentialBackoff).
_MAX_BACKOFF_SECONDS = 20


class MissingSetting(RuntimeError):
    """A function was deployed without an environment variable it needs."""


class InvalidSetting(RuntimeError):
    """A function was deployed with an environment variable it cannot use."""


class Settings(BaseModel):
    """Read once per cold start. Names match the template's `Environment.Variables`."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    ORDERS_QUEUE_URL: str = ""
    ORDERS_TABLE_NAME: str = ""
    IDEMPOTENCY_TABLE_NAME: str = ""
    ORDERS_TOPIC_ARN: str = ""
    # The notifier's and the replay function's: where what the notifier could not finish goes.
    NOTIFIER_RETRY_QUEUE_URL: str = ""
    # The replay function's first backoff; it doubles with each failed receive, up to an hour.
    REPLAY_BACKOFF_SECONDS: int = Field(default=60, ge=0, le=3600)
    # Every AWS call must end, answered or failed, well inside the function's Timeout, so that
    # the handler (not a Lambda timeout) decides what failed. The template sets these per stage;
    # the defaults are its values.
    AWS_CONNECT_TIMEOUT_SECONDS: float = Field(default=0.5, gt=0)
    AWS_READ_TIMEOUT_SECONDS: float = Field(default=0.5, gt=0)
    AWS_MAX_ATTEMPTS: int = Field(default=2, ge=1, le=10)  # the first attempt and the retries
    # SNS Publish is never retried by the client: a retry after a lost answer is a second email.
    SNS_READ_TIMEOUT_SECONDS: float = Field(default=5.0, gt=0)
    # The notifier's; unset, the safe level: a function deployed without it mails no customer data.
    SUPPORT_EMAIL_DETAIL: SupportEmailDetail = SupportEmailDetail.MASKED

    def require(self, name: str) -> str:
        value: str = getattr(self, name)
        if not value:
            raise MissingSetting(f"environment variable {name} is not set")
        return value

    @property
    def orders_queue_url(self) -> str:
        return self.require("ORDERS_QUEUE_URL")

    @property
    def orders_table_name(self) -> str:
        return self.require("ORDERS_TABLE_NAME")

    @property
    def idempotency_table_name(self) -> str:
        return self.require("IDEMPOTENCY_TABLE_NAME")

    @property
    def orders_topic_arn(self) -> str:
        return self.require("ORDERS_TOPIC_ARN")

    @property
    def notifier_retry_queue_url(self) -> str:
        return self.require("NOTIFIER_RETRY_QUEUE_URL")

    @property
    def support_email_detail(self) -> SupportEmailDetail:
        return self.SUPPORT_EMAIL_DETAIL

    @property
    def aws_call_budget_seconds(self) -> float:
        """The longest one DynamoDB or SQS call can take, retries and backoff included."""
        return aws_call_budget(
            self.AWS_CONNECT_TIMEOUT_SECONDS, self.AWS_READ_TIMEOUT_SECONDS, self.AWS_MAX_ATTEMPTS
        )

    @property
    def sns_publish_budget_seconds(self) -> float:
        """The longest one SNS Publish can take: one attempt."""
        return aws_call_budget(self.AWS_CONNECT_TIMEOUT_SECONDS, self.SNS_READ_TIMEOUT_SECONDS, 1)


def aws_call_budget(connect_timeout: float, read_timeout: float, max_attempts: int) -> float:
    """Each attempt may wait out both timeouts, and each retry its longest backoff.

    A read timeout bounds each wait for the next bytes of the answer, not the whole answer: an
    endpoint that trickles bytes could take longer, one that stalls cannot.
    """
    backoff = sum(min(2.0 ** (retry - 1), _MAX_BACKOFF_SECONDS) for retry in range(1, max_attempts))
    return max_attempts * (connect_timeout + read_timeout) + backoff


@cache
def settings() -> Settings:
    """Raises InvalidSetting naming each variable that is wrong, its value and what it may be."""
    try:
        return Settings.model_validate(dict(os.environ))
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(map(str, problem['loc']))}={problem['input']!r}: {problem['msg']}"
            for problem in error.errors()
        )
        raise InvalidSetting(f"invalid environment variable(s): {problems}") from error
