"""A Lambda context object for handlers invoked outside Lambda (tests, the local pipeline)."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field

from orderpipe_local.stack.template import ACCOUNT_ID, DEFAULT_REGION


@dataclass
class LocalLambdaContext:
    """Carries what Powertools reads from a context: name, ARN, request id, time left."""

    function_name: str
    timeout_seconds: float = 30.0
    memory_limit_in_mb: int = 512
    function_version: str = "$LATEST"
    region: str = DEFAULT_REGION
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    log_group_name: str = ""
    log_stream_name: str = "local"
    _deadline: float = field(default=0.0, repr=False)

    def __post_init__(self) -> None:
        self._deadline = time.monotonic() + self.timeout_seconds
        self.log_group_name = self.log_group_name or f"/aws/lambda/{self.function_name}"

    @property
    def invoked_function_arn(self) -> str:
        return f"arn:aws:lambda:{self.region}:{ACCOUNT_ID}:function:{self.function_name}"

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))
