"""The endpoint's call log (ORDERPIPE_CALL_LOG), which `make bench-lambda` bills from."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import boto3
import pytest

from orderpipe_local.moto.call_log import CALL_LOG_VARIABLE
from orderpipe_local.moto.endpoint import AwsEndpoint


def logged_calls(directory: Path) -> list[dict[str, Any]]:
    return [
        json.loads(line)
        for path in sorted(directory.glob("calls-*.jsonl"))
        for line in path.read_text().splitlines()
    ]


def test_each_call_is_logged_once_by_the_process_that_serves_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given an endpoint started with the call log on
    monkeypatch.setenv(CALL_LOG_VARIABLE, str(tmp_path))
    with AwsEndpoint(port=0) as endpoint:
        session = boto3.session.Session(
            aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1"
        )
        sqs = session.client("sqs", endpoint_url=endpoint.url)
        # DynamoDB through the endpoint's one URL: the first process forwards it to the second
        dynamodb = session.client("dynamodb", endpoint_url=endpoint.url)
        sns = session.client("sns", endpoint_url=endpoint.url)

        # When
        queue = sqs.create_queue(QueueName="logged")["QueueUrl"]
        sqs.send_message(QueueUrl=queue, MessageBody="an order")
        dynamodb.create_table(
            TableName="logged",
            KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
        dynamodb.put_item(TableName="logged", Item={"id": {"S": "a"}})
        topic = sns.create_topic(Name="logged")["TopicArn"]
        sns.publish(TopicArn=topic, Message="an email")

    # Then every call is there once, with the content of those whose bill depends on it
    calls = logged_calls(tmp_path)
    assert sorted((call["service"], call["operation"]) for call in calls) == [
        ("dynamodb", "CreateTable"),
        ("dynamodb", "PutItem"),
        ("sns", "CreateTopic"),
        ("sns", "Publish"),
        ("sqs", "CreateQueue"),
        ("sqs", "SendMessage"),
    ]
    by_operation = {call["operation"]: call for call in calls}
    assert json.loads(by_operation["SendMessage"]["request"])["MessageBody"] == "an order"
    assert json.loads(by_operation["PutItem"]["request"])["Item"] == {"id": {"S": "a"}}
    assert "an+email" in by_operation["Publish"]["request"]
    assert all(call["status"] == 200 for call in calls)
    assert "request" not in by_operation["CreateQueue"]
