"""Integration tests run the real handlers against moto resources made from `template.yaml`."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator

import boto3
import pytest
from moto import mock_aws

from orderpipe.aws import clients
from orderpipe_local.runtime.handlers import Handler, load_handler
from orderpipe_local.stack.provision import Stack, provision_stack
from orderpipe_local.stack.template import Template, load_template
from orderpipe_local.testing import ROOT

SUPPORT_EMAIL = "support@example.com"
Email = tuple[str, str]  # subject, body


@pytest.fixture(scope="session")
def template() -> Template:
    return load_template(ROOT / "template.yaml", overrides={"SupportEmail": SUPPORT_EMAIL})


@pytest.fixture
def stack(template: Template, monkeypatch: pytest.MonkeyPatch) -> Iterator[Stack]:
    """A fresh moto account holding the template's queues, tables and topics.

    The environment holds every function's variables as the template sets them: one
    environment for all, so a variable that two functions set differently would leave one of
    them tested with the other's value; that is refused here.
    """
    with mock_aws():
        created = provision_stack(template)
        environment: dict[str, tuple[str, str]] = {}
        for function_id in created.functions():
            for name, value in created.function_environment(function_id).items():
                if name == "POWERTOOLS_SERVICE_NAME":
                    continue
                first_id, first_value = environment.setdefault(name, (function_id, value))
                assert value == first_value, f"{name} differs between {first_id} and {function_id}"
                monkeypatch.setenv(name, value)
        clients.reset()
        yield created


def handler_of(template: Template, function_id: str) -> Handler:
    """The function's handler, loaded from its CodeUri as the template names it."""
    properties = template.resources[function_id]["Properties"]
    return load_handler(
        ROOT / template.source_code_uris[function_id], properties["Handler"], f"{function_id}_app"
    )


@pytest.fixture
def inbox(stack: Stack) -> Callable[[], list[Email]]:
    """An SQS queue subscribed to OrdersTopic; calling it returns the emails published since.

    Each SNS envelope carries the email's Subject and Message.
    """
    sqs = boto3.client("sqs")
    queue_url = sqs.create_queue(QueueName="support-inbox")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    boto3.client("sns").subscribe(TopicArn=stack.ref("OrdersTopic"), Protocol="sqs", Endpoint=queue_arn)

    def emails() -> list[Email]:
        received: list[Email] = []
        while messages := sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10).get("Messages"):
            for message in messages:
                envelope = json.loads(message["Body"])
                received.append((envelope["Subject"], envelope["Message"]))
                sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
        return received

    return emails
