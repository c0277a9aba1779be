"""Where the acceptance tests send their traffic: a local pipeline they start (the default), or
a deployed stack (`pytest tests/acceptance --stack-name orderpipe-dev [--region us-east-1]`).

Either way the tests speak only HTTP to the API and AWS APIs to the stack's queues and table,
so the same tests face `orderpipe local` and the cloud. A deployed stack is found through
CloudFormation: the API URL from its outputs, each resource by its logical id.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import boto3
import pytest

from orderpipe_local.testing import Email, http_request, start_pipeline

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_sqs import SQSClient


class OrdersTarget(Protocol):
    """What the acceptance tests need of a pipeline, local or deployed."""

    mail_timeout: float
    # How long a failed notification may take to be replayed: two of the replay's backoffs
    # (the template's 60 s doubling; 1 s on the local pipeline the tests start).
    replay_timeout: float

    @property
    def api_url(self) -> str: ...

    def request(
        self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], Any]: ...

    def sqs(self) -> SQSClient: ...

    def dynamodb(self) -> DynamoDBClient: ...

    def resource(self, logical_id: str) -> str: ...

    def emails(self) -> list[Email] | None: ...

    def order_status(self, order_id: str) -> str | int: ...


@dataclass
class DeployedStack:
    """A stack made by `sam deploy`, reached with the caller's own AWS credentials.

    Its emails go to the support mailbox, which no test can read: they are checked through the
    orders' `NOTIFIED` status instead, and the tests of the emails' contents are skipped.
    """

    api_url: str
    physical_ids: dict[str, str]
    session: boto3.session.Session
    mail_timeout: float = 120.0
    replay_timeout: float = 600.0

    @classmethod
    def find(cls, stack_name: str, region: str | None) -> DeployedStack:
        session = boto3.session.Session(region_name=region)
        cloudformation = session.client("cloudformation")
        (stack,) = cloudformation.describe_stacks(StackName=stack_name)["Stacks"]
        outputs = {output["OutputKey"]: output["OutputValue"] for output in stack.get("Outputs", [])}
        resources = cloudformation.get_paginator("list_stack_resources").paginate(StackName=stack_name)
        physical_ids = {
            summary["LogicalResourceId"]: summary["PhysicalResourceId"]
            for page in resources
            for summary in page["StackResourceSummaries"]
        }
        return cls(outputs["ApiUrl"].rstrip("/"), physical_ids, session)

    def request(
        self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], Any]:
        return http_request(self.api_url + path, method, body, headers, timeout=30)

    def sqs(self) -> SQSClient:
        return self.session.client("sqs")

    def dynamodb(self) -> DynamoDBClient:
        return self.session.client("dynamodb")

    def resource(self, logical_id: str) -> str:
        return self.physical_ids[logical_id]

    def emails(self) -> None:
        return None

    def order_status(self, order_id: str) -> str | int:
        status, _, body = self.request("GET", f"/orders/{order_id}")
        return str(body["status"]) if status == 200 else status


@pytest.fixture(scope="session")
def target(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OrdersTarget]:
    stack_name = request.config.getoption("stack_name")
    if stack_name:
        yield DeployedStack.find(stack_name, request.config.getoption("region"))
        return
    running = start_pipeline(
        tmp_path_factory.mktemp("pipeline"), "--parameter-overrides", "NotifierReplayBackoffSeconds=1"
    )
    yield running
    if running.process.poll() is None:
        assert running.terminate() == 0, running.console()


def emails_or_skip(target: OrdersTarget) -> list[Email]:
    emails = target.emails()
    if emails is None:
        pytest.skip("a deployed stack's emails reach the support mailbox: checked as NOTIFIED above")
    return emails
