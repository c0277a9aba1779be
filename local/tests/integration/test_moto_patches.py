"""moto as the endpoint serves it, with `apply_moto_patches()`: nothing lost under concurrent
requests, streams keep flowing.

The server runs in a child process, so the patches never leak into other tests' moto.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from moto import mock_aws

from orderpipe_local.moto.endpoint import AwsEndpoint

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_dynamodbstreams import DynamoDBStreamsClient
    from mypy_boto3_sqs import SQSClient


@pytest.fixture(scope="module")
def patched_endpoint() -> Iterator[str]:
    with AwsEndpoint() as endpoint:
        yield endpoint.url


def client(service: str, endpoint: str) -> Any:
    config = Config(max_pool_connections=20)
    return boto3.client(service, endpoint_url=endpoint, region_name="us-east-1", config=config)  # type: ignore[call-overload]


def test_concurrent_deletes_and_sends_lose_nothing(patched_endpoint: str) -> None:
    # Given 1,000 received messages and eight threads deleting them while four threads send more
    sqs: SQSClient = client("sqs", patched_endpoint)
    queue_url = sqs.create_queue(QueueName="race", Attributes={"VisibilityTimeout": "600"})["QueueUrl"]
    for start in range(0, 1000, 10):
        sqs.send_message_batch(
            QueueUrl=queue_url, Entries=[{"Id": str(i), "MessageBody": f"old-{start + i}"} for i in range(10)]
        )
    received: list[list[str]] = []
    while messages := sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10).get("Messages", []):
        received.append([message["ReceiptHandle"] for message in messages])

    def delete(batches: list[list[str]]) -> None:
        for handles in batches:
            entries = [{"Id": str(i), "ReceiptHandle": handle} for i, handle in enumerate(handles)]
            sqs.delete_message_batch(QueueUrl=queue_url, Entries=entries)  # type: ignore[arg-type]

    def send(sender: int) -> None:
        for n in range(100):
            sqs.send_message(QueueUrl=queue_url, MessageBody=f"new-{sender}-{n}")

    threads = [threading.Thread(target=delete, args=(received[k::8],)) for k in range(8)]
    threads += [threading.Thread(target=send, args=(k,)) for k in range(4)]

    # When they all run at once
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    # Then every deleted message is gone for good and every sent one is there
    attributes = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["All"])["Attributes"]
    assert attributes["ApproximateNumberOfMessagesNotVisible"] == "0"
    bodies: set[str] = set()
    while messages := sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10).get("Messages", []):
        bodies.update(message["Body"] for message in messages)
    assert bodies == {f"new-{k}-{n}" for k in range(4) for n in range(100)}


def make_table(endpoint: str, name: str) -> tuple[DynamoDBClient, DynamoDBStreamsClient, str]:
    dynamodb: DynamoDBClient = client("dynamodb", endpoint)
    streams: DynamoDBStreamsClient = client("dynamodbstreams", endpoint)
    stream_arn = dynamodb.create_table(
        TableName=name,
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        BillingMode="PAY_PER_REQUEST",
        StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_IMAGE"},
    )["TableDescription"]["LatestStreamArn"]
    return dynamodb, streams, stream_arn


def mark(table: str, key: str) -> Any:
    return {
        "Update": {
            "TableName": table,
            "Key": {"id": {"S": key}},
            "UpdateExpression": "SET #s = :new",
            "ConditionExpression": "#s = :old",
            "ExpressionAttributeNames": {"#s": "status"},
            "ExpressionAttributeValues": {":new": {"S": "NOTIFIED"}, ":old": {"S": "PLACED"}},
        }
    }


def test_a_cancelled_transaction_writes_nothing_and_streams_keep_flowing(patched_endpoint: str) -> None:
    # Given a reader part-way through the table's stream
    dynamodb, streams, stream_arn = make_table(patched_endpoint, "cancelled")
    for key in ("a", "b"):
        dynamodb.put_item(TableName="cancelled", Item={"id": {"S": key}, "status": {"S": "PLACED"}})
    shard_id = streams.describe_stream(StreamArn=stream_arn)["StreamDescription"]["Shards"][0]["ShardId"]
    iterator = streams.get_shard_iterator(
        StreamArn=stream_arn, ShardId=shard_id, ShardIteratorType="TRIM_HORIZON"
    )["ShardIterator"]
    first = streams.get_records(ShardIterator=iterator)
    assert len(first["Records"]) == 2

    # When a transaction is cancelled (its second condition fails), then another item is stored
    with pytest.raises(ClientError) as cancelled:
        dynamodb.transact_write_items(TransactItems=[mark("cancelled", "a"), mark("cancelled", "missing")])
    dynamodb.put_item(TableName="cancelled", Item={"id": {"S": "c"}, "status": {"S": "PLACED"}})

    # Then nothing of it was written, and the same reader sees the new item
    assert cancelled.value.response["Error"]["Code"] == "TransactionCanceledException"
    reasons = [reason["Code"] for reason in cancelled.value.response["CancellationReasons"]]
    assert reasons == ["None", "ConditionalCheckFailed"]
    item = dynamodb.get_item(TableName="cancelled", Key={"id": {"S": "a"}})["Item"]
    assert item["status"] == {"S": "PLACED"}
    later = streams.get_records(ShardIterator=first["NextShardIterator"])
    assert [(r["eventName"], r["dynamodb"]["Keys"]["id"]["S"]) for r in later["Records"]] == [("INSERT", "c")]


def test_transactions_stay_fast_on_a_large_table(patched_endpoint: str) -> None:
    dynamodb, _, _ = make_table(patched_endpoint, "large")
    for n in range(1000):
        dynamodb.put_item(TableName="large", Item={"id": {"S": f"o-{n}"}, "status": {"S": "PLACED"}})

    started = time.monotonic()
    dynamodb.transact_write_items(TransactItems=[mark("large", f"o-{n}") for n in range(100)])
    elapsed = time.monotonic() - started

    assert elapsed < 2.0  # moto unpatched: about 5 s here, growing with the table
    item = dynamodb.get_item(TableName="large", Key={"id": {"S": "o-99"}})["Item"]
    assert item["status"] == {"S": "NOTIFIED"}


def test_get_records_keeps_its_wire_format(patched_endpoint: str) -> None:
    dynamodb, streams, stream_arn = make_table(patched_endpoint, "wire")
    item = {
        "id": {"S": "o-1"},
        "blob": {"B": b"\x00\xff"},
        "total": {"N": "12.50"},
        "lines": {"L": [{"M": {"sku": {"S": "MOP-001"}, "qty": {"N": "2"}}}]},
        "tags": {"SS": ["a", "b"]},
        "gift": {"BOOL": True},
        "note": {"NULL": True},
    }
    dynamodb.put_item(TableName="wire", Item=item)  # type: ignore[arg-type]
    shard_id = streams.describe_stream(StreamArn=stream_arn)["StreamDescription"]["Shards"][0]["ShardId"]
    iterator = streams.get_shard_iterator(
        StreamArn=stream_arn, ShardId=shard_id, ShardIteratorType="TRIM_HORIZON"
    )["ShardIterator"]

    (record,) = streams.get_records(ShardIterator=iterator, Limit=10)["Records"]

    assert record["eventName"] == "INSERT"
    assert record["dynamodb"]["Keys"] == {"id": {"S": "o-1"}}
    new_image = record["dynamodb"]["NewImage"]
    assert new_image["blob"] == {"B": b"\x00\xff"}
    assert new_image["lines"] == {"L": [{"M": {"sku": {"S": "MOP-001"}, "qty": {"N": "2"}}}]}
    assert sorted(new_image["tags"]["SS"]) == ["a", "b"]
    assert new_image["gift"] == {"BOOL": True}
    assert abs(record["dynamodb"]["ApproximateCreationDateTime"].timestamp() - time.time()) < 60
    assert record["dynamodb"]["SequenceNumber"].isdigit()


def test_queue_attributes_read_alone_still_tell_depth_and_content_deduplication(
    patched_endpoint: str,
) -> None:
    # Given a standard queue with three messages and a FIFO queue that dedupes by content
    sqs: SQSClient = client("sqs", patched_endpoint)
    standard = sqs.create_queue(QueueName="depth")["QueueUrl"]
    fifo = sqs.create_queue(
        QueueName="dedupe.fifo", Attributes={"FifoQueue": "true", "ContentBasedDeduplication": "true"}
    )["QueueUrl"]
    for number in range(3):
        sqs.send_message(QueueUrl=standard, MessageBody=f"m{number}")

    # When the same body goes twice to the FIFO queue
    for _ in range(2):
        sqs.send_message(QueueUrl=fifo, MessageBody="same", MessageGroupId="g")

    # Then the depth is counted, and the FIFO queue kept one copy
    depth = sqs.get_queue_attributes(QueueUrl=standard, AttributeNames=["All"])["Attributes"]
    fifo_attributes = sqs.get_queue_attributes(QueueUrl=fifo, AttributeNames=["All"])["Attributes"]
    assert depth["ApproximateNumberOfMessages"] == "3"
    assert "ContentBasedDeduplication" not in depth
    assert (fifo_attributes["ApproximateNumberOfMessages"], fifo_attributes["ContentBasedDeduplication"]) == (
        "1",
        "true",
    )


def test_a_transactions_plain_sets_write_the_item_and_its_stream_record(patched_endpoint: str) -> None:
    # Given a stored item and a reader at the stream's end
    dynamodb, streams, stream_arn = make_table(patched_endpoint, "sets")
    dynamodb.put_item(TableName="sets", Item={"id": {"S": "a"}, "status": {"S": "PLACED"}, "n": {"N": "1"}})
    shard_id = streams.describe_stream(StreamArn=stream_arn)["StreamDescription"]["Shards"][0]["ShardId"]
    iterator = streams.get_shard_iterator(StreamArn=stream_arn, ShardId=shard_id, ShardIteratorType="LATEST")[
        "ShardIterator"
    ]
    update = mark("sets", "a")
    update["Update"]["UpdateExpression"] = "SET #s = :new, notifiedAt = :at"
    update["Update"]["ExpressionAttributeValues"][":at"] = {"S": "2026-11-30T10:00:00Z"}

    # When a transaction sets two attributes, one through a name placeholder
    dynamodb.transact_write_items(TransactItems=[update])

    # Then the item holds both, its other attributes untouched, and the stream one MODIFY of it
    item = dynamodb.get_item(TableName="sets", Key={"id": {"S": "a"}})["Item"]
    assert item == {
        "id": {"S": "a"},
        "status": {"S": "NOTIFIED"},
        "n": {"N": "1"},
        "notifiedAt": {"S": "2026-11-30T10:00:00Z"},
    }
    records = streams.get_records(ShardIterator=iterator)["Records"]
    assert [(r["eventName"], r["dynamodb"]["NewImage"]["status"]["S"]) for r in records] == [
        ("MODIFY", "NOTIFIED")
    ]


def test_a_transactions_other_updates_keep_moto_s_rules(patched_endpoint: str) -> None:
    # Given a stored item
    dynamodb, _, _ = make_table(patched_endpoint, "rules")
    dynamodb.put_item(TableName="rules", Item={"id": {"S": "a"}, "n": {"N": "1"}})

    def update(expression: str, values: dict[str, Any]) -> Any:
        return {
            "Update": {
                "TableName": "rules",
                "Key": {"id": {"S": "a"}},
                "UpdateExpression": expression,
                "ExpressionAttributeValues": values,
            }
        }

    # When one update does arithmetic and others name a reserved word or the key unquoted
    dynamodb.transact_write_items(TransactItems=[update("SET n = n + :one", {":one": {"N": "1"}})])
    with pytest.raises(ClientError) as reserved:
        dynamodb.transact_write_items(TransactItems=[update("SET status = :s", {":s": {"S": "X"}})])
    with pytest.raises(ClientError) as key:
        dynamodb.transact_write_items(TransactItems=[update("SET id = :s", {":s": {"S": "b"}})])

    # Then moto applied the arithmetic and refused the other two, as DynamoDB does
    assert dynamodb.get_item(TableName="rules", Key={"id": {"S": "a"}})["Item"]["n"] == {"N": "2"}
    assert reserved.value.response["Error"]["Code"] == "ValidationException"
    assert key.value.response["Error"]["Code"] == "ValidationException"


def test_receives_and_deletes_behind_a_backlog_answer_as_moto_does(patched_endpoint: str) -> None:
    # Given the same receives and deletes made on the patched endpoint and on moto itself
    def scenario(sqs: SQSClient) -> list[Any]:
        queue_url = sqs.create_queue(QueueName="backlog")["QueueUrl"]
        for start in range(0, 60, 10):
            sqs.send_message_batch(
                QueueUrl=queue_url,
                Entries=[{"Id": str(i), "MessageBody": f"m-{start + i:02}"} for i in range(10)],
            )

        def receive(visibility: int) -> list[Any]:
            answer = sqs.receive_message(
                QueueUrl=queue_url, MaxNumberOfMessages=10, VisibilityTimeout=visibility
            )
            return list(answer.get("Messages", []))

        def delete(handles: list[str]) -> tuple[list[str], list[str]]:
            answer = sqs.delete_message_batch(
                QueueUrl=queue_url,
                Entries=[{"Id": str(i), "ReceiptHandle": h} for i, h in enumerate(handles)],
            )
            return (
                sorted(entry["Id"] for entry in answer.get("Successful", [])),
                sorted(entry["Code"] for entry in answer.get("Failed", [])),
            )

        first, second = receive(600), receive(600)
        again = receive(0)  # made visible again at once: received anew, with a new handle
        renewed = receive(600)
        observed: list[Any] = [
            [m["Body"] for m in first],
            [m["Body"] for m in second],
            [m["Body"] for m in renewed],
            delete([m["ReceiptHandle"] for m in first]),
            delete([m["ReceiptHandle"] for m in first]),  # deleting twice is no error
            delete([m["ReceiptHandle"] for m in again]),  # the old handles of received-anew messages
            delete(["not-a-receipt-handle"]),
        ]
        attributes = sqs.get_queue_attributes(
            QueueUrl=queue_url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        rest = []
        while messages := receive(600):
            rest += [m["Body"] for m in messages]
        return [*observed, attributes, sorted(rest)]

    patched = scenario(client("sqs", patched_endpoint))
    with mock_aws():
        plain = scenario(boto3.client("sqs", region_name="us-east-1"))

    # Then the answers are moto's: the same messages, deletes, errors and counts
    assert patched == plain
    assert patched[3] == ([str(i) for i in range(10)], [])
    assert patched[6] == ([], ["ReceiptHandleIsInvalid"])
    assert patched[7] == {"ApproximateNumberOfMessages": "30", "ApproximateNumberOfMessagesNotVisible": "10"}


def test_items_keep_moto_s_size_limit(patched_endpoint: str) -> None:
    # Given the same writes on the patched endpoint and on moto: items under and over 400 KB
    def scenario(dynamodb: DynamoDBClient) -> list[Any]:
        dynamodb.create_table(
            TableName="sizes",
            KeySchema=[{"AttributeName": "k", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "k", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
        outcomes: list[Any] = []
        cases: list[tuple[str, dict[str, Any]]] = [
            ("small", {"n": {"N": "12.50"}, "m": {"M": {"a": {"L": [{"S": "x"}, {"BOOL": True}]}}}}),
            ("just-under", {f"a{i}": {"S": "x" * 40_000} for i in range(10)}),
            ("over", {f"a{i}": {"S": "x" * 40_000} for i in range(11)}),
        ]
        for key, attributes in cases:
            try:
                dynamodb.put_item(TableName="sizes", Item={"k": {"S": key}, **attributes})
                stored = dynamodb.get_item(TableName="sizes", Key={"k": {"S": key}})["Item"]
                outcomes.append(stored == {"k": {"S": key}, **attributes})
            except ClientError as error:
                outcomes.append((error.response["Error"]["Code"], error.response["Error"]["Message"]))
        return outcomes

    patched = scenario(client("dynamodb", patched_endpoint))
    with mock_aws():
        plain = scenario(boto3.client("dynamodb", region_name="us-east-1"))

    # Then the answers are moto's: stored whole, or refused as too large
    assert patched == plain
    assert patched[:2] == [True, True]
    assert patched[2][0] == "ValidationException"
