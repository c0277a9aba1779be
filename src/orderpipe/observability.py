"""The Logger, Tracer and Metrics every function shares.

Service name and metrics namespace come from POWERTOOLS_SERVICE_NAME and
POWERTOOLS_METRICS_NAMESPACE, set per function by `template.yaml`; STAGE, set there for all of
them, is a dimension of every metric, so that two stacks in one account and region (dev and
prod) keep their metrics and alarms apart.
"""

import os
import warnings

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit

logger = Logger()
tracer = Tracer()
metrics = Metrics()
if stage := os.environ.get("STAGE"):
    metrics.set_default_dimensions(stage=stage)
# A GET or a refused request adds no metric; that is expected, not worth a warning in the log.
warnings.filterwarnings("ignore", message="No application metrics to publish", category=UserWarning)

__all__ = ["MetricUnit", "logger", "metrics", "tracer"]
