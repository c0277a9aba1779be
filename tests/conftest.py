"""Shared test helpers: the `events/` fixtures, a Lambda context, an AWS-free environment."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from orderpipe import resources
from orderpipe.lambda_context import LocalLambdaContext

ROOT = Path(__file__).resolve().parent.parent
EVENTS = ROOT / "events"

# Powertools' Metrics takes its namespace, and orderpipe its stage dimension, from the environment
# when `orderpipe.observability` is first imported, and test modules import it while they are
# collected, before any fixture runs.
os.environ.setdefault("POWERTOOLS_METRICS_NAMESPACE", "Orderpipe")
os.environ["STAGE"] = "dev"  # what the tests expect in the metrics, whatever the shell exports


def load_event(name: str) -> dict[str, Any]:
    """One of the `sam local invoke -e` fixtures in `events/`."""
    event: dict[str, Any] = json.loads((EVENTS / name).read_text())
    return event


@pytest.fixture(autouse=True)
def offline_aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No test may reach real AWS: dummy credentials, one region, no X-Ray, no endpoint."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.setenv("POWERTOOLS_TRACE_DISABLED", "1")
    monkeypatch.setenv("POWERTOOLS_METRICS_NAMESPACE", "Orderpipe")
    resources.reset()
    yield
    resources.reset()


@pytest.fixture
def lambda_context() -> LocalLambdaContext:
    return LocalLambdaContext(function_name="orderpipe-test")
