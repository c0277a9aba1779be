"""ReplayFunction: NotifierRetryQueue -> the failed notifications finished, each order mailed once."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.typing import LambdaContext

from orderpipe.notifier import check_notifier_settings
from orderpipe.observability import logger, metrics, tracer
from orderpipe.replay import replay_failed_notifications

check_notifier_settings()


@logger.inject_lambda_context
@metrics.log_metrics
@tracer.capture_lambda_handler(capture_response=False)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> PartialItemFailureResponse:
    return replay_failed_notifications(event, context)
