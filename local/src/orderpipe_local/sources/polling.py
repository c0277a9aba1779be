"""What the local event sources share: AWS clients for the endpoint, counters, mapping values."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

import boto3
from botocore.config import Config

# Messages to and from SQS are at most 1 MiB; a synchronous invocation's payload is at most 6 MB.
INVOKE_PAYLOAD_LIMIT = 6 * 1024 * 1024


def aws_client(
    service: str,
    endpoint_url: str,
    region: str,
    *,
    connections: int = 10,
    attempts: int = 3,
    connect_timeout: float = 5,
    read_timeout: float = 60,
) -> Any:
    """A client for the local endpoint; any credentials do, so dummy ones stand in for none."""
    session = boto3.session.Session()
    key_id, secret = (None, None) if session.get_credentials() is not None else ("local", "local")
    config = Config(
        max_pool_connections=connections,
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
        retries={"mode": "standard", "max_attempts": attempts},
    )
    client: Any = session.client(  # type: ignore[call-overload]
        service,
        endpoint_url=endpoint_url,
        region_name=region,
        config=config,
        aws_access_key_id=key_id,
        aws_secret_access_key=secret,
    )
    return client


class Counters:
    """Thread-safe named counters for a source's status line."""

    def __init__(self, names: Iterable[str]) -> None:
        self._lock = threading.Lock()
        self._values = dict.fromkeys(names, 0)

    def add(self, name: str, amount: int = 1) -> None:
        with self._lock:
            self._values[name] = self._values.get(name, 0) + amount

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self._values)


def as_int(value: Any, default: int) -> int:
    """A mapping property that may come from a template parameter (a string) or be absent."""
    return default if value is None or value == "" else int(value)


def as_float(value: Any, default: float) -> float:
    return default if value is None or value == "" else float(value)


def as_bool(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() == "true"
    return bool(value)


def wait_until(condition: Callable[[], bool], timeout: float, interval: float = 0.1) -> bool:
    """Poll `condition` until it holds (True) or `timeout` seconds have passed (False)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)
    return True


def arn_service(arn: str) -> str:
    """The service an ARN names: `arn:aws:sqs:us-east-1:123456789012:q` -> "sqs"."""
    parts = arn.split(":")
    return parts[2] if len(parts) > 2 else ""
