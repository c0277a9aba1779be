"""moto as the endpoint serves it: each fix of `orderpipe_local.moto.patches` shown needed (its
test fails on moto 5.2.5 as it ships, an expected failure, strict: the day moto fixes it, the test
says so) and sufficient (it passes with that fix alone, and with every patch); and the speed
patches giving moto's own answers.

The servers run in child processes, so the patches never leak into other tests' moto.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import boto3
import pytest
from _pytest.mark import ParameterSet
from botocore.config import Config
from botocore.exceptions import ClientError
from moto import mock_aws

from orderpipe_local.moto.endpoint import AwsEndpoint
from orderpipe_local.moto.patches import FIXES, PATCHES, SPEED_PATCHES_VARIABLE

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_dynamodbstreams import DynamoDBStreamsClient
    from mypy_boto3_sqs import SQSClient

AS_SHIPPED = tuple(PATCHES)


@pytest.fixture(scope="module")
def endpoints(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[tuple[str, ...]], str]]:
    """The URL of an endpoint with the given moto patches, started on first use.

    Their Python switches threads every 10 us instead of every 5 ms, so that a race of moto's
    shows within a few hundred requests.
    """
    hooks = tmp_path_factory.mktemp("switch-often")
    (hooks / "sitecustomize.py").write_text("import sys\n\nsys.setswitchinterval(1e-5)\n")
    started: dict[tuple[str, ...], AwsEndpoint] = {}

    def url(moto_patches: tuple[str, ...]) -> str:
        if moto_patches not in started:
            endpoint = AwsEndpoint(moto_patches=moto_patches)
            with pytest.MonkeyPatch.context() as environment:
                environment.setenv("PYTHONPATH", str(hooks))
                endpoint.start()
            started[moto_patches] = endpoint
        return started[moto_patches].url

    yield url
    for endpoint in started.values():
        endpoint.stop()


@pytest.fixture(scope="module")
def patched_endpoint(endpoints: Callable[[tuple[str, ...]], str]) -> str:
    return endpoints(AS_SHIPPED)


def needs(fix: str, *, moto_fails: bool = True) -> pytest.MarkDecorator:
    """Run the test on moto 5.2.5 as it ships (expected to fail unless `moto_fails` is False), with
    `fix` alone, and with every patch."""
    assert PATCHES[fix].kind == "fix"
    unpatched = (
        pytest.mark.xfail(strict=True, raises=AssertionError, reason=f"moto 5.2.5 without {fix}")
        if moto_fails
        else ()
    )
    variants: list[ParameterSet] = [
        pytest.param((), id="moto-5.2.5", marks=unpatched),
        pytest.param((fix,), id=f"{fix}-alone"),
        pytest.param(AS_SHIPPED, id="as-shipped"),
    ]
    return pytest.mark.parametrize("moto_patches", variants)


def client(service: str, endpoint: str) -> Any:
    config = Config(max_pool_connections=20)
    return boto3.client(service, endpoint_url=endpoint, region_name="us-east-1", config=config)  # type: ignore[call-overload]


@needs("sqs-queue-lock")
def test_concurrent_deletes_and_sends_lose_nothing(
    endpoints: Callable[[tuple[str, ...]], str], moto_patches: tuple[str, ...]
) -> None:
    # Given 100 received messages behind which 100 wait, and eight threads deleting the 100 one by
    # one while four threads send 100 more (moto 5.2.5's own receives take 0.3 s or more at this
    # depth, so the test receives little)
    sqs: SQSClient = client("sqs", endpoints(moto_patches))
    queue_url = sqs.create_queue(QueueName="race", Attributes={"VisibilityTimeout": "600"})["QueueUrl"]

    def send_batches(prefix: str, count: int) -> None:
        for start in range(0, count, 10):
            entries: list[Any] = [{"Id": str(i), "MessageBody": f"{prefix}-{start + i}"} for i in range(10)]
            sqs.send_message_batch(QueueUrl=queue_url, Entries=entries)

    send_batches("received", 100)
    received: list[str] = []
    while len(received) < 100:
        messages = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10)["Messages"]
        received += [message["ReceiptHandle"] for message in messages]
    send_batches("waiting", 100)

    def delete(handles: list[str]) -> None:
        for handle in handles:
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=handle)

    def send(sender: int) -> None:
        for n in range(25):
            sqs.send_message(QueueUrl=queue_url, MessageBody=f"new-{sender}-{n}")

    threads = [threading.Thread(target=delete, args=(received[k::8],)) for k in range(8)]
    threads += [threading.Thread(target=send, args=(k,)) for k in range(4)]

    # When they all run at once
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    # Then every deleted message is gone for good (none in flight) and every sent one is there
    attributes = sqs.get_queue_attributes(
        QueueUrl=queue_url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    assert attributes == {"ApproximateNumberOfMessages": "200", "ApproximateNumberOfMessagesNotVisible": "0"}


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


@needs("dynamodb-transactions")
def test_a_cancelled_transaction_writes_nothing_and_streams_keep_flowing(
    endpoints: Callable[[tuple[str, ...]], str], moto_patches: tuple[str, ...]
) -> None:
    # Given a reader part-way through the table's stream
    dynamodb, streams, stream_arn = make_table(endpoints(moto_patches), "cancelled")
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


def read_stream(
    streams: DynamoDBStreamsClient, stream_arn: str, limit: int = 1000, at_most: int = 10_000
) -> list[Any]:
    """Every record of the table's stream, from its start, `limit` a GetRecords. Stops past
    `at_most` records: unpatched moto, handing out one sequence number twice, can send a reader
    back over records it read, for ever."""
    shard_id = streams.describe_stream(StreamArn=stream_arn)["StreamDescription"]["Shards"][0]["ShardId"]
    iterator = streams.get_shard_iterator(
        StreamArn=stream_arn, ShardId=shard_id, ShardIteratorType="TRIM_HORIZON"
    )["ShardIterator"]
    records: list[Any] = []
    while batch := streams.get_records(ShardIterator=iterator, Limit=limit):
        if not batch["Records"]:
            return records
        records += batch["Records"]
        if len(records) > at_most:
            return records
        iterator = batch["NextShardIterator"]
    return records


@needs("dynamodb-transactions")
def test_writes_made_while_a_transaction_is_cancelled_are_kept(
    endpoints: Callable[[tuple[str, ...]], str], moto_patches: tuple[str, ...]
) -> None:
    # Given a transaction that writes to one table and checks 30 items of another, the last missing
    endpoint = endpoints(moto_patches)
    dynamodb, _, _ = make_table(endpoint, "written")
    make_table(endpoint, "checked")
    for n in range(300):
        dynamodb.put_item(TableName="checked", Item={"id": {"S": f"o-{n}"}, "status": {"S": "PLACED"}})
    check = {"TableName": "checked", "ConditionExpression": "attribute_exists(id)"}
    transaction: list[Any] = [
        {"Put": {"TableName": "written", "Item": {"id": {"S": "by-the-transaction"}}}},
        *({"ConditionCheck": {**check, "Key": {"id": {"S": f"o-{n}"}}}} for n in range(29)),
        {"ConditionCheck": {**check, "Key": {"id": {"S": "missing"}}}},
    ]
    cancelled = threading.Event()

    def cancel_three_times() -> None:
        for _ in range(3):
            with pytest.raises(ClientError, match="TransactionCanceledException"):
                dynamodb.transact_write_items(TransactItems=transaction)
        cancelled.set()

    # When another client stores items in the written table meanwhile
    canceller = threading.Thread(target=cancel_three_times)
    canceller.start()
    stored: list[str] = []
    while not cancelled.is_set():
        key = f"meanwhile-{len(stored)}"
        dynamodb.put_item(TableName="written", Item={"id": {"S": key}})
        stored.append(key)
    canceller.join()

    # Then every one of them is there, and nothing of the transactions
    found = {item["id"]["S"] for item in dynamodb.scan(TableName="written")["Items"]}
    assert found == set(stored)


@needs("dynamodb-stream-sequence")
def test_concurrent_writes_give_each_stream_record_its_own_sequence_number(
    endpoints: Callable[[tuple[str, ...]], str], moto_patches: tuple[str, ...]
) -> None:
    # Given a table with a stream, and eight clients each storing 100 items at once
    dynamodb, streams, stream_arn = make_table(endpoints(moto_patches), "concurrent")

    def store(writer: int) -> None:
        for n in range(100):
            dynamodb.put_item(
                TableName="concurrent", Item={"id": {"S": f"w{writer}-{n}"}, "pad": {"S": "x" * 500}}
            )

    writers = [threading.Thread(target=store, args=(k,)) for k in range(8)]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join()

    # When a reader reads the stream from its start, ten records a call
    records = read_stream(streams, stream_arn, limit=10)

    # Then it reads each write once, each record under a sequence number of its own
    keys = sorted(record["dynamodb"]["Keys"]["id"]["S"] for record in records)
    sequence_numbers = {record["dynamodb"]["SequenceNumber"] for record in records}
    assert (len(sequence_numbers), keys) == (800, sorted(f"w{k}-{n}" for k in range(8) for n in range(100)))


@needs("dynamodb-transactions", moto_fails=False)
def test_a_transaction_whose_update_is_refused_writes_nothing(
    endpoints: Callable[[tuple[str, ...]], str], moto_patches: tuple[str, ...]
) -> None:
    # Given two stored items
    dynamodb, streams, stream_arn = make_table(endpoints(moto_patches), "refused")
    for key in ("a", "b"):
        dynamodb.put_item(TableName="refused", Item={"id": {"S": key}, "status": {"S": "PLACED"}})
    refused: Any = {
        "Update": {
            "TableName": "refused",
            "Key": {"id": {"S": "b"}},
            "UpdateExpression": "SET id = :other",  # a key attribute: a validation error
            "ExpressionAttributeValues": {":other": {"S": "c"}},
        }
    }

    # When a transaction's first update is valid and its second is refused
    with pytest.raises(ClientError) as error:
        dynamodb.transact_write_items(TransactItems=[mark("refused", "a"), refused])

    # Then it is refused whole: the first item is untouched and the stream holds the two puts alone
    assert error.value.response["Error"]["Code"] == "ValidationException"
    item = dynamodb.get_item(TableName="refused", Key={"id": {"S": "a"}})["Item"]
    assert item["status"] == {"S": "PLACED"}
    assert [record["eventName"] for record in read_stream(streams, stream_arn)] == ["INSERT", "INSERT"]


def test_speed_patches_switch_off_for_the_benchmark(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given the variable that the load benchmark sets to run moto without the speed patches
    monkeypatch.setenv(SPEED_PATCHES_VARIABLE, "off")

    # When an endpoint starts and serves a call
    with AwsEndpoint() as endpoint:
        queues = client("sqs", endpoint.url).list_queues()

    # Then it applied the fixes alone
    assert endpoint.moto_patches == FIXES
    assert queues["ResponseMetadata"]["HTTPStatusCode"] == 200


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
