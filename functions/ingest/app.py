"""IngestFunction: `POST /orders` and `GET /orders/{orderId}` behind the HTTP API (payload 2.0)."""

from typing import Any

from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext

from orderpipe.ingest import app
from orderpipe.observability import logger, metrics, tracer


# The request id is the correlation id until the order id is known; ingest then switches to it.
@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_HTTP)
@metrics.log_metrics
@tracer.capture_lambda_handler(capture_response=False)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
