"""WriterFunction: OrdersQueue batches -> OrdersTable, with a partial batch response."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.typing import LambdaContext

from orderpipe.observability import logger, metrics, tracer
from orderpipe.writer import store_queued_orders


@logger.inject_lambda_context
@metrics.log_metrics
@tracer.capture_lambda_handler(capture_response=False)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> PartialItemFailureResponse:
    return store_queued_orders(event, context)
