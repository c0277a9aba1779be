"""How moto's SQS, as `orderpipe local` serves it, copes with a backlog.

`python bench/sqs_depth.py` starts the local endpoint, fills queues to a few depths and prints
the endpoint's CPU for what the writer's event source does per batch (ReceiveMessage of ten,
then DeleteMessageBatch) and for a SendMessage, at each depth. moto's own SQS scanned the whole
queue for both: 2.8 ms a batch on an empty queue, 27.2 ms behind 10,000 messages.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3

from orderpipe_local.moto.endpoint import AwsEndpoint

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def fill(sqs: SQSClient, queue_url: str, count: int) -> None:
    for start in range(0, count, 10):
        entries: list[Any] = [{"Id": str(i), "MessageBody": "x" * 600} for i in range(min(10, count - start))]
        sqs.send_message_batch(QueueUrl=queue_url, Entries=entries)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--depths", type=int, nargs="+", default=[0, 2_000, 10_000])
    parser.add_argument("--batches", type=int, default=50, help="receive+delete batches measured per depth")
    args = parser.parse_args(argv)
    with AwsEndpoint() as endpoint:
        pid = endpoint.pid
        assert pid is not None
        sqs: SQSClient = boto3.client(
            "sqs",
            endpoint_url=endpoint.url,
            region_name="us-east-1",
            aws_access_key_id="local",
            aws_secret_access_key="local",
        )
        print(
            f"moto's SQS as `orderpipe local` serves it: the endpoint's CPU per call ({args.batches} batches)"
        )
        print(f"  {'backlog':>8}  {'receive 10 + delete batch':>26}  {'send 1':>8}")
        for depth in args.depths:
            queue_url = sqs.create_queue(QueueName=f"depth-{depth}")["QueueUrl"]
            fill(sqs, queue_url, depth + 10 * args.batches)
            before = cpu_seconds(pid)
            for _ in range(args.batches):
                messages = sqs.receive_message(
                    QueueUrl=queue_url, MaxNumberOfMessages=10, VisibilityTimeout=600
                )
                entries: list[Any] = [
                    {"Id": str(i), "ReceiptHandle": message["ReceiptHandle"]}
                    for i, message in enumerate(messages["Messages"])
                ]
                sqs.delete_message_batch(QueueUrl=queue_url, Entries=entries)
            batch = (cpu_seconds(pid) - before) / args.batches
            before = cpu_seconds(pid)
            for _ in range(100):
                sqs.send_message(QueueUrl=queue_url, MessageBody="x" * 600)
            send = (cpu_seconds(pid) - before) / 100
            print(f"  {depth:>8,}  {batch * 1000:>23.1f} ms  {send * 1000:>5.2f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
