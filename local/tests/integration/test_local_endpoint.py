"""The local AWS endpoint: moto's server in a child process, provisioned from the template over HTTP."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import textwrap
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws
from moto.dynamodbstreams.responses import DynamoDBStreamsHandler
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
from werkzeug.test import Client, TestResponse

from orderpipe_local.config import LOCAL_STACK_NAME, LOCAL_SUPPORT_EMAIL, PipelineConfig, load_local_template
from orderpipe_local.environment import sam_env_vars
from orderpipe_local.moto import patches as moto_patches
from orderpipe_local.moto.endpoint import AwsEndpoint, EndpointError, JsonProtocolRoutes
from orderpipe_local.stack.provision import Stack, provision_stack
from orderpipe_local.stack.template import Template, load_template
from orderpipe_local.state import find_stack
from orderpipe_local.testing import EVENTS, ROOT

DOCKER_ENDPOINT = "http://host.docker.internal:4566"
# What moto's app reads of a signed request: the service and region of its credential scope.
_SIGNATURE = "AWS4-HMAC-SHA256 Credential=testing/20261130/us-east-1/{service}/aws4_request"


@pytest.fixture(scope="module")
def endpoint() -> Iterator[AwsEndpoint]:
    with AwsEndpoint(port=0) as running:
        yield running


@pytest.fixture(scope="module")
def template() -> Template:
    return load_local_template(PipelineConfig(root=ROOT))


@pytest.fixture(scope="module")
def stack(endpoint: AwsEndpoint, template: Template) -> Iterator[Stack]:
    # Module-scoped, so set up before the per-test dummy credentials (tests/conftest.py)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AWS_ACCESS_KEY_ID", "testing")
        patch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        yield provision_stack(template, endpoint_url=endpoint.url)


def test_the_endpoint_answers_on_a_loopback_port(endpoint: AwsEndpoint) -> None:
    assert endpoint.running
    assert endpoint.url.startswith("http://127.0.0.1:")
    sqs = boto3.client("sqs", endpoint_url=endpoint.url, region_name="us-east-1")
    assert "QueueUrls" not in sqs.list_queues(QueueNamePrefix="nothing-here")


def test_the_template_is_provisioned_over_http(endpoint: AwsEndpoint, stack: Stack) -> None:
    # Given the stack provisioned against the endpoint (fixture)
    sqs = boto3.client("sqs", endpoint_url=endpoint.url, region_name="us-east-1")
    dynamodb = boto3.client("dynamodb", endpoint_url=endpoint.url, region_name="us-east-1")
    sns = boto3.client("sns", endpoint_url=endpoint.url, region_name="us-east-1")

    # Then its resources exist there under deterministic names
    queue = sqs.get_queue_url(QueueName=f"{LOCAL_STACK_NAME}-OrdersQueue")["QueueUrl"]
    assert queue == stack.ref("OrdersQueue")
    redrive = json.loads(
        sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["RedrivePolicy"])["Attributes"][
            "RedrivePolicy"
        ]
    )
    assert redrive["deadLetterTargetArn"] == stack.attribute("OrdersDLQ", "Arn")
    table = dynamodb.describe_table(TableName=f"{LOCAL_STACK_NAME}-OrdersTable")["Table"]
    assert table["StreamSpecification"]["StreamViewType"] == "NEW_IMAGE"
    subscriptions = sns.list_subscriptions_by_topic(TopicArn=stack.ref("OrdersTopic"))["Subscriptions"]
    assert [(s["Protocol"], s["Endpoint"]) for s in subscriptions] == [("email", LOCAL_SUPPORT_EMAIL)]


def test_resources_are_found_again_by_name(endpoint: AwsEndpoint, stack: Stack, template: Template) -> None:
    found = find_stack(template, endpoint.url)

    for logical_id in (
        "OrdersQueue",
        "OrdersDLQ",
        "NotifierDLQ",
        "OrdersTable",
        "IdempotencyTable",
        "OrdersTopic",
    ):
        assert found.ref(logical_id) == stack.ref(logical_id)
    assert found.attribute("OrdersTable", "StreamArn") == stack.attribute("OrdersTable", "StreamArn")
    assert found.function_environment("IngestFunction") == stack.function_environment("IngestFunction")


def test_env_local_json_names_the_resources_orderpipe_local_creates(
    endpoint: AwsEndpoint, stack: Stack
) -> None:
    # Given the `sam local --env-vars` file of the repository
    committed = json.loads((EVENTS / "env.local.json").read_text())

    # When the file is derived from the resources provisioned here, as containers reach them
    derived = sam_env_vars(stack, endpoint.url, DOCKER_ENDPOINT)

    # Then they are the same: `sam local` functions and `orderpipe local` share one set of resources
    assert committed == derived


def test_a_taken_port_is_an_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]

        with pytest.raises(EndpointError, match=f"could not listen on 127.0.0.1:{port}"):
            AwsEndpoint(port=port).start()


def test_stop_ends_the_process_and_frees_the_port() -> None:
    # Given a running endpoint
    endpoint = AwsEndpoint(port=0)
    endpoint.start()
    process, port = endpoint._process, endpoint.port
    dynamodb_port = urllib.parse.urlsplit(endpoint.url_for("dynamodb")).port
    assert process is not None
    assert dynamodb_port not in (None, port)

    # When it is stopped
    endpoint.stop()

    # Then the child exited on SIGTERM with status 0 and both its ports are free again
    assert process.returncode == 0
    assert not endpoint.running
    assert port_frees(port or 0)
    assert port_frees(dynamodb_port or 0)


def test_the_endpoint_exits_when_its_parent_goes_away() -> None:
    # Given a running endpoint
    endpoint = AwsEndpoint(port=0)
    endpoint.start()
    process = endpoint._process
    dynamodb_port = urllib.parse.urlsplit(endpoint.url_for("dynamodb")).port
    assert process is not None
    assert process.stdin is not None

    # When the pipe from its parent closes (as when the parent dies)
    process.stdin.close()

    # Then it exits by itself, and so does its DynamoDB endpoint
    assert process.wait(timeout=10) == 0
    assert port_frees(dynamodb_port or 0)
    endpoint.stop()


def test_the_endpoint_exits_when_its_dynamodb_process_dies() -> None:
    # Given a running endpoint
    with AwsEndpoint(port=0) as endpoint:
        assert endpoint.dynamodb_pid is not None

        # When its DynamoDB process is killed
        os.kill(endpoint.dynamodb_pid, signal.SIGKILL)

        # Then the endpoint exits with an error, so that the pipeline sees it gone
        assert endpoint.wait(timeout=10) == 1
        assert not endpoint.running


def test_the_one_url_serves_dynamodb_kept_by_the_second_moto(endpoint: AwsEndpoint) -> None:
    # Given a table created through the endpoint's URL
    public, direct = (
        endpoint_client(url, "dynamodb") for url in (endpoint.url, endpoint.url_for("dynamodb"))
    )
    public.create_table(**keyed_table("served-twice"))

    # When an item is written on the DynamoDB URL, and a conditional write fails on the URL
    direct.put_item(TableName="served-twice", Item={"k": {"S": "order-1"}})
    with pytest.raises(public.exceptions.ConditionalCheckFailedException):
        public.put_item(
            TableName="served-twice",
            Item={"k": {"S": "order-1"}},
            ConditionExpression="attribute_not_exists(k)",
        )

    # Then both see the same table and item: one DynamoDB, in the second moto
    assert public.get_item(TableName="served-twice", Key={"k": {"S": "order-1"}})["Item"] == {
        "k": {"S": "order-1"}
    }
    assert "served-twice" in direct.list_tables()["TableNames"]


def test_a_reset_of_the_endpoint_resets_its_dynamodb_too() -> None:
    with AwsEndpoint(port=0) as endpoint:
        dynamodb = endpoint_client(endpoint.url_for("dynamodb"), "dynamodb")
        dynamodb.create_table(**keyed_table("reset-me"))

        urllib.request.urlopen(
            urllib.request.Request(f"{endpoint.url}/moto-api/reset", method="POST"), timeout=10
        )

        assert dynamodb.list_tables()["TableNames"] == []


def port_frees(port: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
                return True
            except OSError:
                if time.monotonic() > deadline:
                    return False
        time.sleep(0.1)


def test_the_endpoints_fast_get_records_answers_what_moto_would(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a stream holding inserts, a modification and a removal of items of every attribute type
    with mock_aws():
        dynamodb = boto3.client("dynamodb", region_name="us-east-1")
        streams = boto3.client("dynamodbstreams", region_name="us-east-1")
        stream_arn = dynamodb.create_table(
            TableName="t",
            KeySchema=[{"AttributeName": "k", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "k", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
            StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_IMAGE"},
        )["TableDescription"]["LatestStreamArn"]
        for key in ("a", "b"):
            dynamodb.put_item(
                TableName="t",
                Item={
                    "k": {"S": key},
                    "n": {"N": "12.50"},
                    "b": {"B": b"\x00\x01"},
                    "bs": {"BS": [b"\x02"]},
                    "ss": {"SS": ["x", "y"]},
                    "ns": {"NS": ["1", "2"]},
                    "l": {"L": [{"BOOL": True}, {"NULL": True}, {"M": {"s": {"S": "Zoë"}}}]},
                },
            )
        dynamodb.update_item(
            TableName="t",
            Key={"k": {"S": "a"}},
            UpdateExpression="SET #s = :s",
            ExpressionAttributeNames={"#s": "status"},
            ExpressionAttributeValues={":s": {"S": "NOTIFIED"}},
        )
        dynamodb.delete_item(TableName="t", Key={"k": {"S": "b"}})
        shard_id = streams.describe_stream(StreamArn=stream_arn)["StreamDescription"]["Shards"][0]["ShardId"]
        iterator = streams.get_shard_iterator(
            StreamArn=stream_arn, ShardId=shard_id, ShardIteratorType="TRIM_HORIZON"
        )["ShardIterator"]

        # When the records are read through moto's serializer and through the endpoint's shortcut
        by_moto = streams.get_records(ShardIterator=iterator, Limit=10)
        monkeypatch.setattr(DynamoDBStreamsHandler, "get_records", moto_patches.get_records)
        by_shortcut = streams.get_records(ShardIterator=iterator, Limit=10)

    # Then a client sees the same records
    assert [record["eventName"] for record in by_moto["Records"]] == ["INSERT", "INSERT", "MODIFY", "REMOVE"]
    assert by_shortcut["Records"] == by_moto["Records"]


def test_the_endpoints_direct_json_routes_answer_what_moto_s_app_would() -> None:
    # Given moto's app, and the same app with the JSON protocol's hot calls routed directly
    moto_app = Client(DomainDispatcherApplication(create_backend_app))
    direct = Client(JsonProtocolRoutes(DomainDispatcherApplication(create_backend_app)))
    table = keyed_table("direct-routes")
    conditional_put = {
        "TableName": "direct-routes",
        "Item": {"k": {"S": "taken"}},
        "ConditionExpression": "attribute_not_exists(k)",
    }
    calls: list[tuple[str, dict[str, Any]]] = [
        ("DynamoDB_20120810.ListTables", {}),
        ("DynamoDB_20120810.DescribeTable", {"TableName": "missing"}),
        ("DynamoDB_20120810.PutItem", conditional_put),
        ("DynamoDB_20120810.GetItem", {"TableName": "direct-routes", "Key": {"k": {"S": "taken"}}}),
        ("DynamoDBStreams_20120810.ListStreams", {}),
        ("AmazonSQS.GetQueueUrl", {"QueueName": "missing"}),
        ("AmazonSQS.ListQueues", {}),
    ]
    with mock_aws():
        _json_call(moto_app, "DynamoDB_20120810.CreateTable", table)
        _json_call(moto_app, "DynamoDB_20120810.PutItem", conditional_put)

        # When each call is made to both
        for target, body in calls:
            expected = _json_call(moto_app, target, body)
            answer = _json_call(direct, target, body)

            # Then the answers are the same: status, content type and body
            assert (answer.status_code, answer.content_type) == (
                expected.status_code,
                expected.content_type,
            ), target
            assert answer.get_json(force=True) == expected.get_json(force=True), target

        # And what is not a JSON protocol call still reaches moto's app (SNS speaks the query protocol)
        topics = direct.post(
            "/",
            data="Action=ListTopics&Version=2010-03-31",
            content_type="application/x-www-form-urlencoded",
            headers={"Authorization": _SIGNATURE.format(service="sns")},
        )
        assert topics.status_code == 200
        assert b"ListTopicsResponse" in topics.data


def _json_call(client: Client, target: str, body: dict[str, Any]) -> TestResponse:
    service = "sqs" if target.startswith("AmazonSQS") else "dynamodb"
    headers = {
        "X-Amz-Target": target,
        "Content-Type": "application/x-amz-json-1.0",
        "Authorization": _SIGNATURE.format(service=service),
    }
    return client.post("/", data=json.dumps(body), headers=headers)


def test_json_protocol_calls_answer_json_and_errors_as_botocore_would(endpoint: AwsEndpoint) -> None:
    # Given DynamoDB Streams called without botocore, and with it
    from botocore.exceptions import ClientError

    from orderpipe_local.moto.loopback_http import JsonProtocolApi

    raw = JsonProtocolApi(
        endpoint.url_for("dynamodbstreams"), "DynamoDBStreams_20120810", "dynamodb", "us-east-1"
    )
    streams = endpoint_client(endpoint.url_for("dynamodbstreams"), "dynamodbstreams")
    missing = "arn:aws:dynamodb:us-east-1:123456789012:table/missing/stream/2026-01-01T00:00:00.000"
    endpoint_client(endpoint.url_for("dynamodb"), "dynamodb").create_table(
        **keyed_table("streamed-raw", stream=True)
    )

    # Then a success is the answer's JSON, and an error is a ClientError with botocore's code
    listed = raw.call("ListStreams")["Streams"]
    assert "streamed-raw" in [stream["TableName"] for stream in listed]
    assert listed == streams.list_streams()["Streams"]
    with pytest.raises(ClientError) as expected:
        streams.describe_stream(StreamArn=missing)
    with pytest.raises(ClientError) as answered:
        raw.call("DescribeStream", StreamArn=missing)
    assert answered.value.response["Error"]["Code"] == expected.value.response["Error"]["Code"]
    assert answered.value.response["Error"]["Code"] == "ResourceNotFoundException"

    # And SQS's error codes, which travel in a header, are botocore's too
    sqs_raw = JsonProtocolApi(endpoint.url, "AmazonSQS", "sqs", "us-east-1")
    sqs = endpoint_client(endpoint.url, "sqs")
    with pytest.raises(ClientError) as expected:
        sqs.get_queue_url(QueueName="missing")
    with pytest.raises(ClientError) as answered:
        sqs_raw.call("GetQueueUrl", QueueName="missing")
    assert answered.value.response["Error"]["Code"] == expected.value.response["Error"]["Code"]


def test_a_chunked_dynamodb_request_is_forwarded_whole(endpoint: AwsEndpoint) -> None:
    # Given a CreateTable sent to the endpoint's URL with a chunked body
    url = urllib.parse.urlsplit(endpoint.url)
    connection = http.client.HTTPConnection(url.hostname or "127.0.0.1", url.port)
    body = json.dumps(keyed_table("sent-in-chunks")).encode()
    connection.request(
        "POST",
        "/",
        body=iter([body[:20], body[20:]]),
        headers={
            "X-Amz-Target": "DynamoDB_20120810.CreateTable",
            "Content-Type": "application/x-amz-json-1.0",
            "Authorization": _SIGNATURE.format(service="dynamodb"),
        },
        encode_chunked=True,
    )

    # Then the second moto took it whole: the table exists
    response = connection.getresponse()
    answer = json.loads(response.read())
    connection.close()
    assert response.status == 200, answer
    dynamodb = endpoint_client(endpoint.url_for("dynamodb"), "dynamodb")
    assert "sent-in-chunks" in dynamodb.list_tables()["TableNames"]


def test_fifo_queues_and_topics_are_found_again_by_name(endpoint: AwsEndpoint, tmp_path: Path) -> None:
    # Given FIFO and named resources provisioned on the endpoint
    (tmp_path / "template.yaml").write_text(
        textwrap.dedent(
            """
            AWSTemplateFormatVersion: "2010-09-09"
            Resources:
              FifoQueue:
                Type: AWS::SQS::Queue
                Properties: {FifoQueue: true, ContentBasedDeduplication: true}
              FifoTopic:
                Type: AWS::SNS::Topic
                Properties: {FifoTopic: true}
              NamedTable:
                Type: AWS::DynamoDB::Table
                Properties:
                  TableName: named-by-the-template
                  BillingMode: PAY_PER_REQUEST
                  KeySchema: [{AttributeName: k, KeyType: HASH}]
                  AttributeDefinitions: [{AttributeName: k, AttributeType: S}]
            """
        )
    )
    template = load_template(tmp_path / "template.yaml", stack_name="found-again")
    created = provision_stack(template, endpoint_url=endpoint.url)

    # When they are looked up by name, as `orderpipe invoke --endpoint-url` does
    found = find_stack(template, endpoint.url)

    # Then each is the one created (FIFO names end in .fifo, the template's names are kept)
    for logical_id in ("FifoQueue", "FifoTopic", "NamedTable"):
        assert found.ref(logical_id) == created.ref(logical_id)
    assert found.ref("NamedTable") == "named-by-the-template"


def endpoint_client(url: str, service: str) -> Any:
    """A boto3 client of the endpoint (tests/conftest.py gives every test dummy credentials)."""
    return boto3.client(service, endpoint_url=url, region_name="us-east-1")  # type: ignore[call-overload]


def keyed_table(name: str, *, stream: bool = False) -> dict[str, Any]:
    """CreateTable's parameters for an on-demand table keyed by a string `k`."""
    table: dict[str, Any] = {
        "TableName": name,
        "KeySchema": [{"AttributeName": "k", "KeyType": "HASH"}],
        "AttributeDefinitions": [{"AttributeName": "k", "AttributeType": "S"}],
        "BillingMode": "PAY_PER_REQUEST",
    }
    if stream:
        table["StreamSpecification"] = {"StreamEnabled": True, "StreamViewType": "NEW_IMAGE"}
    return table
