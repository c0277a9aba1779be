"""NotifierFunction: OrdersTable stream batches -> one support email per batch on OrdersTopic."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.typing import LambdaContext

from orderpipe.notifier import check_notifier_settings, notify_support
from orderpipe.observability import logger, metrics, tracer

check_notifier_settings()


@logger.inject_lambda_context
@metrics.log_metrics
@tracer.capture_lambda_handler(capture_response=False)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> PartialItemFailureResponse:
    return notify_support(event, context)
