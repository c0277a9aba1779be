"""Faults injected by the local endpoint, met by real boto3 clients, and changed while it runs."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from orderpipe_local.moto.endpoint import AwsEndpoint
from orderpipe_local.moto.faults import FaultError, add_faults, clear_faults, read_faults

ONE_ATTEMPT = Config(retries={"total_max_attempts": 1, "mode": "standard"})


@pytest.fixture(scope="module")
def endpoint() -> Iterator[AwsEndpoint]:
    with AwsEndpoint(port=0, fault_seed=11) as running:
        yield running


def client(endpoint: AwsEndpoint, service: str, config: Config = ONE_ATTEMPT) -> Any:
    return boto3.client(  # type: ignore[call-overload]
        service,
        endpoint_url=endpoint.url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=config,
    )


@pytest.fixture
def resources(endpoint: AwsEndpoint) -> Iterator[dict[str, str]]:
    clear_faults(endpoint.url)
    dynamodb, sqs, sns = (client(endpoint, name) for name in ("dynamodb", "sqs", "sns"))
    dynamodb.create_table(
        TableName="faulty",
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    names = {
        "queue": sqs.create_queue(QueueName="faulty")["QueueUrl"],
        "topic": sns.create_topic(Name="faulty")["TopicArn"],
    }
    yield names
    clear_faults(endpoint.url)
    dynamodb.delete_table(TableName="faulty")
    sqs.delete_queue(QueueUrl=names["queue"])
    sns.delete_topic(TopicArn=names["topic"])


def error_of(call: Any, **arguments: Any) -> tuple[str, int]:
    with pytest.raises(ClientError) as raised:
        call(**arguments)
    response: Any = raised.value.response
    return response["Error"]["Code"], response["ResponseMetadata"]["HTTPStatusCode"]


def test_each_service_answers_the_injected_aws_error(
    endpoint: AwsEndpoint, resources: dict[str, str]
) -> None:
    add_faults(
        endpoint.url,
        [
            "dynamodb:PutItem=ProvisionedThroughputExceededException@1",
            "sqs:SendMessage=InternalError@1",
            "sns:Publish=InternalError@1",
        ],
    )
    dynamodb, sqs, sns = (client(endpoint, name) for name in ("dynamodb", "sqs", "sns"))

    assert error_of(dynamodb.put_item, TableName="faulty", Item={"pk": {"S": "a"}}) == (
        "ProvisionedThroughputExceededException",
        400,
    )
    assert error_of(sqs.send_message, QueueUrl=resources["queue"], MessageBody="x") == ("InternalError", 500)
    assert error_of(sns.publish, TopicArn=resources["topic"], Message="x") == ("InternalError", 500)
    # Other operations of the same services go through, and nothing was applied.
    assert dynamodb.get_item(TableName="faulty", Key={"pk": {"S": "a"}}).get("Item") is None
    assert sqs.receive_message(QueueUrl=resources["queue"], WaitTimeSeconds=0).get("Messages") is None


def test_botocore_retries_a_throttled_call_that_then_succeeds(
    endpoint: AwsEndpoint, resources: dict[str, str]
) -> None:
    add_faults(endpoint.url, ["dynamodb:PutItem=ThrottlingException@0.5"])
    dynamodb = client(endpoint, "dynamodb", Config(retries={"total_max_attempts": 10, "mode": "standard"}))

    for key in range(20):
        dynamodb.put_item(TableName="faulty", Item={"pk": {"S": str(key)}})

    injected = read_faults(endpoint.url)["injected"]["dynamodb:PutItem=ThrottlingException@0.5"]
    assert injected >= 5  # about 20 of 40 attempts; each one retried until it went through
    assert dynamodb.scan(TableName="faulty", Select="COUNT")["Count"] == 20


def test_a_delay_stalls_the_call_then_lets_it_through(
    endpoint: AwsEndpoint, resources: dict[str, str]
) -> None:
    add_faults(endpoint.url, ["sqs:SendMessage=1.5@1"])
    sqs = client(endpoint, "sqs")

    started = time.monotonic()
    sqs.send_message(QueueUrl=resources["queue"], MessageBody="late")
    took = time.monotonic() - started

    assert took >= 1.5
    messages = sqs.receive_message(QueueUrl=resources["queue"], WaitTimeSeconds=0)["Messages"]
    assert [message["Body"] for message in messages] == ["late"]


def test_faults_are_listed_counted_across_both_processes_and_cleared(
    endpoint: AwsEndpoint, resources: dict[str, str]
) -> None:
    # DynamoDB's calls are served by the endpoint's second process, SNS's by the first.
    specs = ["dynamodb:GetItem=InternalServerError@1", "sns:Publish=InternalError@1"]
    before = read_faults(endpoint.url)["injected"]  # counts are kept over clears, as other tests left them
    add_faults(endpoint.url, specs)
    dynamodb, sns = client(endpoint, "dynamodb"), client(endpoint, "sns")
    for _ in range(3):
        error_of(dynamodb.get_item, TableName="faulty", Key={"pk": {"S": "a"}})
    error_of(sns.publish, TopicArn=resources["topic"], Message="x")

    listed = read_faults(endpoint.url)
    assert listed["seed"] == 11
    assert listed["faults"] == [*specs]
    assert {spec: listed["injected"][spec] - before.get(spec, 0) for spec in specs} == {
        specs[0]: 3,
        specs[1]: 1,
    }

    cleared = clear_faults(endpoint.url)
    assert cleared["faults"] == []
    assert dynamodb.get_item(TableName="faulty", Key={"pk": {"S": "a"}}).get("Item") is None
    sns.publish(TopicArn=resources["topic"], Message="x")


def test_a_bad_spec_is_refused_and_changes_nothing(endpoint: AwsEndpoint, resources: dict[str, str]) -> None:
    add_faults(endpoint.url, ["sns:Publish=InternalError@1"])

    with pytest.raises(FaultError, match="sqs has no operation Send"):
        add_faults(endpoint.url, ["dynamodb:PutItem=InternalServerError@1", "sqs:Send=InternalError@1"])

    assert read_faults(endpoint.url)["faults"] == ["sns:Publish=InternalError@1"]
    client(endpoint, "dynamodb").put_item(TableName="faulty", Item={"pk": {"S": "b"}})
