"""Why a batch record failed, in one line for the logs, and a batch processor that logs it."""

from __future__ import annotations

from typing import Any, ClassVar

from aws_lambda_powertools.utilities.batch import BatchProcessor
from aws_lambda_powertools.utilities.batch.base import FailureResponse
from aws_lambda_powertools.utilities.batch.exceptions import ExceptionInfo
from pydantic import ValidationError

from orderpipe.observability import MetricUnit, logger, metrics


def failure_reason(exception: ExceptionInfo) -> str:
    """`Type: message`, then the AWS error behind a domain error.

    Validation errors name each field and rule but never echo the input (customer data).
    """
    error = exception[1]
    if error is None:
        return "unknown error"
    if isinstance(error, ValidationError):
        problems = "; ".join(
            f"{'.'.join(str(part) for part in problem['loc'])}: {problem['msg']}"
            for problem in error.errors(include_url=False, include_input=False)
        )
        return f"ValidationError: {problems}"
    reason = f"{type(error).__name__}: {error}"
    if error.__cause__ is not None:
        reason += f" (caused by {type(error.__cause__).__name__}: {error.__cause__})"
    return reason


class FailureLoggingProcessor(BatchProcessor):
    """Logs why each failed record failed, with its id, and counts it.

    A record that does not parse never reaches the record handler, so this is the one place
    that sees every failure. Subclasses name the message, the metric and the record's id.
    """

    failure_message: ClassVar[str]
    failure_metric: ClassVar[str]
    record_id_field: ClassVar[str]

    def record_id(self, record: Any) -> str | None:
        raise NotImplementedError

    def correlation_id(self, record: Any) -> str | None:
        return None

    def failure_handler(self, record: Any, exception: ExceptionInfo) -> FailureResponse:
        logger.set_correlation_id(self.correlation_id(record))
        logger.warning(
            self.failure_message,
            extra={self.record_id_field: self.record_id(record), "reason": failure_reason(exception)},
        )
        metrics.add_metric(name=self.failure_metric, unit=MetricUnit.Count, value=1)
        return super().failure_handler(record, exception)
