"""What each speed patch of `orderpipe_local.moto.patches` saves: moto's CPU per call, with and without it.

`python bench/moto_patches.py [--patch NAME ...]` starts the local endpoint as `orderpipe local`
does (every patch), and once more without each speed patch in turn, runs the calls that patch is
about on both, and prints the endpoint's CPU per call (its SQS/SNS process and its DynamoDB
process together) and the wall time per call. Each patch takes 5-20 s.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3

from orderpipe_local.moto.endpoint import AwsEndpoint
from orderpipe_local.moto.patches import PATCHES, SPEED_PATCHES


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def clients(url: str) -> dict[str, Any]:
    return {
        service: boto3.client(
            service,
            endpoint_url=url,
            region_name="us-east-1",
            aws_access_key_id="local",
            aws_secret_access_key="local",
        )
        for service in ("sqs", "sns", "dynamodb", "dynamodbstreams")
    }


@dataclass
class Workload:
    """`prepare` makes what the calls need and returns one call; `calls` of it are measured."""

    what: str
    calls: int
    prepare: Callable[[dict[str, Any]], Callable[[], None]]


def queue_with(aws: dict[str, Any], name: str, depth: int) -> str:
    url: str = aws["sqs"].create_queue(QueueName=name)["QueueUrl"]
    for start in range(0, depth, 10):
        entries = [{"Id": str(i), "MessageBody": "x" * 600} for i in range(min(10, depth - start))]
        aws["sqs"].send_message_batch(QueueUrl=url, Entries=entries)
    return url


def send_message(depth: int) -> Callable[[dict[str, Any]], Callable[[], None]]:
    def prepare(aws: dict[str, Any]) -> Callable[[], None]:
        url = queue_with(aws, f"send-{depth}", depth)
        return lambda: aws["sqs"].send_message(QueueUrl=url, MessageBody="x" * 600)

    return prepare


def receive_and_delete(depth: int) -> Callable[[dict[str, Any]], Callable[[], None]]:
    """The writer's event source: ReceiveMessage of ten, then DeleteMessageBatch of them."""

    def prepare(aws: dict[str, Any]) -> Callable[[], None]:
        url = queue_with(aws, f"receive-{depth}", depth + 10 * 30)  # 26 batches are read

        def batch() -> None:
            messages = aws["sqs"].receive_message(QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=600)
            entries = [
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]}
                for i, m in enumerate(messages["Messages"])
            ]
            aws["sqs"].delete_message_batch(QueueUrl=url, Entries=entries)

        return batch

    return prepare


def get_queue_attributes(aws: dict[str, Any]) -> Callable[[], None]:
    url = queue_with(aws, "attributes", 10)
    return lambda: aws["sqs"].get_queue_attributes(QueueUrl=url, AttributeNames=["All"])


def publish(aws: dict[str, Any]) -> Callable[[], None]:
    """SNS speaks the query protocol: moto's Flask app and its routing by host."""
    arn = aws["sns"].create_topic(Name="bench")["TopicArn"]
    return lambda: aws["sns"].publish(TopicArn=arn, Message="x" * 600, Subject="Order")


def table(aws: dict[str, Any], name: str) -> str:
    arn: str = aws["dynamodb"].create_table(
        TableName=name,
        AttributeDefinitions=[{"AttributeName": "orderId", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "orderId", "KeyType": "HASH"}],
        BillingMode="PAY_PER_REQUEST",
        StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
    )["TableDescription"]["LatestStreamArn"]
    return arn


def order(n: int) -> dict[str, Any]:
    """About the shape of a stored order: a score of attributes, its lines a list of maps."""
    line = {"M": {"sku": {"S": "MOP-001"}, "quantity": {"N": "2"}, "unitPrice": {"N": "12.50"}}}
    return {
        "orderId": {"S": f"o-{n:08}"},
        "status": {"S": "PLACED"},
        "lines": {"L": [line] * 3},
        **{f"field{i}": {"S": f"value {i} of order {n}"} for i in range(18)},
    }


def put_item(aws: dict[str, Any]) -> Callable[[], None]:
    table(aws, "put")
    count = iter(range(10**9))
    return lambda: aws["dynamodb"].put_item(TableName="put", Item=order(next(count)))


def get_records(aws: dict[str, Any]) -> Callable[[], None]:
    """The stream poller: GetRecords of 100 records, from the stream's start."""
    arn = table(aws, "stream")
    for n in range(100):
        aws["dynamodb"].put_item(TableName="stream", Item=order(n))
    shard = aws["dynamodbstreams"].describe_stream(StreamArn=arn)["StreamDescription"]["Shards"][0]["ShardId"]

    def read() -> None:
        iterator = aws["dynamodbstreams"].get_shard_iterator(
            StreamArn=arn, ShardId=shard, ShardIteratorType="TRIM_HORIZON"
        )["ShardIterator"]
        aws["dynamodbstreams"].get_records(ShardIterator=iterator, Limit=100)

    return read


def notify_transaction(aws: dict[str, Any]) -> Callable[[], None]:
    """The notifier's: 100 orders from PLACED to NOTIFIED, conditionally."""
    table(aws, "notified")
    for n in range(2_000):
        aws["dynamodb"].put_item(TableName="notified", Item=order(n))
    batches = iter(range(0, 2_000, 100))

    def transaction() -> None:
        first = next(batches)
        aws["dynamodb"].transact_write_items(
            TransactItems=[
                {
                    "Update": {
                        "TableName": "notified",
                        "Key": {"orderId": {"S": f"o-{n:08}"}},
                        "UpdateExpression": "SET #s = :new, notifiedAt = :at",
                        "ConditionExpression": "#s = :old",
                        "ExpressionAttributeNames": {"#s": "status"},
                        "ExpressionAttributeValues": {
                            ":new": {"S": "NOTIFIED"},
                            ":old": {"S": "PLACED"},
                            ":at": {"S": "2026-11-30T10:00:00Z"},
                        },
                    }
                }
                for n in range(first, first + 100)
            ]
        )

    return transaction


WORKLOADS: dict[str, list[Workload]] = {
    "server-module-list": [Workload("SNS Publish", 300, publish)],
    "server-method-names": [Workload("SQS SendMessage, empty queue", 300, send_message(0))],
    "sqs-clock": [
        Workload("ReceiveMessage 10 + DeleteMessageBatch, 2,000 behind", 25, receive_and_delete(2_000))
    ],
    "sqs-snake-case": [Workload("SQS GetQueueAttributes All", 300, get_queue_attributes)],
    "sqs-retention-check": [
        Workload("ReceiveMessage 10 + DeleteMessageBatch, 2,000 behind", 25, receive_and_delete(2_000))
    ],
    "sqs-deduplication-check": [Workload("SQS SendMessage, 2,000 behind", 100, send_message(2_000))],
    "sqs-depth": [
        Workload("ReceiveMessage 10 + DeleteMessageBatch, empty queue", 25, receive_and_delete(0)),
        Workload("ReceiveMessage 10 + DeleteMessageBatch, 2,000 behind", 25, receive_and_delete(2_000)),
    ],
    "dynamodb-item-size": [Workload("PutItem of an order", 300, put_item)],
    "dynamodb-get-records-json": [Workload("GetRecords of 100 records", 20, get_records)],
    "dynamodb-transaction-sets": [
        Workload("TransactWriteItems of 100 updates, 2,000 in the table", 5, notify_transaction)
    ],
}


def measure(moto_patches: tuple[str, ...], workload: Workload) -> tuple[float, float]:
    """(the endpoint's CPU per call, the wall time per call), in ms."""
    with AwsEndpoint(moto_patches=moto_patches) as endpoint:
        pids = [pid for pid in (endpoint.pid, endpoint.dynamodb_pid) if pid is not None]
        call = workload.prepare(clients(endpoint.url))
        call()  # the first call of a kind loads what it needs
        cpu, wall = sum(map(cpu_seconds, pids)), time.perf_counter()
        for _ in range(workload.calls):
            call()
        wall = time.perf_counter() - wall
        cpu = sum(map(cpu_seconds, pids)) - cpu
    return cpu / workload.calls * 1000, wall / workload.calls * 1000


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--patch", nargs="+", choices=SPEED_PATCHES, default=list(SPEED_PATCHES))
    args = parser.parse_args(argv)
    shipped = tuple(PATCHES)
    print("moto's CPU per call (the endpoint's two processes), and wall time per call, in ms:")
    print(f"  {'speed patch':26} {'calls':54} {'with':>13} {'without':>13}")
    for name in args.patch:
        for workload in WORKLOADS[name]:
            with_cpu, with_wall = measure(shipped, workload)
            without_cpu, without_wall = measure(tuple(p for p in shipped if p != name), workload)
            print(
                f"  {name:26} {workload.what:54} {with_cpu:6.2f} /{with_wall:6.2f}"
                f" {without_cpu:6.2f} /{without_wall:6.2f}  (x{workload.calls})",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
