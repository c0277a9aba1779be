"""A stop that cannot finish says so, keeps what is unfinished in a file, and exits 1; `orderpipe
requeue` puts it back into the next run, where it is carried through."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from orderpipe_local.testing import (
    RunningPipeline,
    load_event,
    orderpipe_command,
    start_pipeline,
    wait_until,
)

if TYPE_CHECKING:
    from mypy_boto3_sqs.type_defs import SendMessageBatchRequestEntryTypeDef

pytestmark = pytest.mark.e2e

QUEUED = 300


def requeue(pipeline: RunningPipeline, tmp_path: Path, *files: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*orderpipe_command(), "requeue", *map(str, files), "--state-file", str(tmp_path / "state.json")],
        capture_output=True,
        text=True,
        timeout=60,
    )


def left_over_files(tmp_path: Path) -> list[Path]:
    return sorted((tmp_path / "left-over").glob("*.json"))


def mailed_ids(pipeline: RunningPipeline) -> list[str]:
    return [found for mail in pipeline.emails() for found in re.findall(r"Order id:\s+(\S+)", mail.body)]


def test_a_poison_message_ends_in_the_dlq_within_the_stop_and_survives_it(tmp_path: Path) -> None:
    # Given a message the writer fails on, waiting out its visibility timeout (210 s) after a
    # first failed invocation
    pipeline = start_pipeline(tmp_path)
    sqs = pipeline.sqs()
    queue_url = pipeline.resource("OrdersQueue")
    sqs.send_message(QueueUrl=queue_url, MessageBody="not an order")

    def in_flight() -> bool:
        attributes = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["All"])["Attributes"]
        return (
            attributes["ApproximateNumberOfMessages"] == "0"
            and attributes["ApproximateNumberOfMessagesNotVisible"] == "1"
        )

    wait_until(in_flight, timeout=30)
    time.sleep(2)  # the writer's invocation fails meanwhile; the message stays invisible

    # When the pipeline is stopped
    exit_code = pipeline.terminate(timeout=120)

    # Then its retries ran within the drain, it ended in OrdersDLQ, and the stop says where it is kept
    console = pipeline.console()
    assert exit_code == 1, console
    assert "not finished: 1 in OrdersDLQ" in console, console
    (kept,) = left_over_files(tmp_path)
    assert json.loads(kept.read_text())["messages"] == {
        "OrdersDLQ": [{"body": "not an order", "attributes": {}}]
    }

    # And the next run names the file, and `orderpipe requeue` puts the dead letter back
    again = start_pipeline(tmp_path)
    try:
        assert "1 file(s) of what earlier stops could not finish" in again.console()
        put_back = requeue(again, tmp_path, kept)
        assert put_back.returncode == 0, put_back.stderr
        assert "1 messages back in OrdersDLQ" in put_back.stdout
        assert not kept.exists()
        messages = again.sqs().receive_message(QueueUrl=again.resource("OrdersDLQ"), WaitTimeSeconds=1)
        assert [message["Body"] for message in messages["Messages"]] == ["not an order"]
    finally:
        again.terminate(timeout=120)


def test_orders_a_stop_could_not_carry_through_are_stored_and_mailed_once_by_the_next_run(
    tmp_path: Path,
) -> None:
    # Given a queue deeper than the pipeline can work off before a stop with no time to drain
    pipeline = start_pipeline(tmp_path, "--drain-timeout", "0")
    queued = json.loads(load_event("writer-sqs-batch.json")["Records"][0]["body"])
    accepted = [str(uuid.uuid4()) for _ in range(QUEUED)]
    sqs = pipeline.sqs()
    for start in range(0, QUEUED, 10):
        entries: list[SendMessageBatchRequestEntryTypeDef] = [
            {"Id": str(index), "MessageBody": json.dumps(queued | {"orderId": order_id})}
            for index, order_id in enumerate(accepted[start : start + 10])
        ]
        assert not sqs.send_message_batch(QueueUrl=pipeline.resource("OrdersQueue"), Entries=entries).get(
            "Failed"
        )

    # When it stops at once
    exit_code = pipeline.terminate(timeout=120)
    console = pipeline.console()
    mailed_before = mailed_ids(pipeline)

    # Then it says what is unfinished, where it is kept, and exits 1
    assert not set(accepted) <= set(mailed_before), "the pipeline carried everything through: queue more"
    assert exit_code == 1, console
    assert "not finished:" in console
    files = left_over_files(tmp_path)
    assert len(files) == 1
    assert f"kept in {files[0]}" in console

    # And after `orderpipe requeue` in the next run, every order is mailed exactly once
    again = start_pipeline(tmp_path)  # the same outbox: it holds both runs' emails
    try:
        put_back = requeue(again, tmp_path, *files)
        assert put_back.returncode == 0, put_back.stderr
        wait_until(lambda: set(accepted) <= set(mailed_ids(again)), timeout=90)
        mailed = mailed_ids(again)
        assert sorted(order_id for order_id in mailed if order_id in accepted) == sorted(accepted)
        # (the orders mailed before the stop went with the first run's table: see the README)
        carried = [order_id for order_id in accepted if order_id not in mailed_before]
        wait_until(lambda: all(again.order_status(order_id) == "NOTIFIED" for order_id in carried))
    finally:
        assert again.terminate(timeout=120) == 0, again.console()


def endpoint_pid(pipeline: RunningPipeline) -> int:
    """moto's main process (SQS, SNS; DynamoDB's is its child), a child of the pipeline."""
    children = Path(f"/proc/{pipeline.process.pid}/task/{pipeline.process.pid}/children").read_text().split()
    for child in children:
        command = Path(f"/proc/{child}/cmdline").read_bytes()
        if b"orderpipe_local.moto.endpoint" in command and b"--only-dynamodb" not in command:
            return int(child)
    raise AssertionError("no moto process")


def test_after_moto_crashes_every_accepted_order_not_mailed_is_kept_from_its_journal(tmp_path: Path) -> None:
    # Given orders accepted by the API and a queue deeper than the pipeline works off at once
    pipeline = start_pipeline(tmp_path)
    posted = [pipeline.request("POST", "/orders", json.loads(load_event("ingest-post-order.json")["body"]))]
    posted += [pipeline.request("POST", "/orders", json.loads(load_event("ingest-post-order.json")["body"]))]
    assert [status for status, _, _ in posted] == [202, 202]
    queued = json.loads(load_event("writer-sqs-batch.json")["Records"][0]["body"])
    accepted = [body["orderId"] for _, _, body in posted] + [str(uuid.uuid4()) for _ in range(QUEUED)]
    sqs = pipeline.sqs()
    for start in range(2, len(accepted), 10):
        entries: list[SendMessageBatchRequestEntryTypeDef] = [
            {
                "Id": str(index),
                "MessageBody": json.dumps(queued | {"orderId": order_id}),
                "MessageAttributes": {"orderId": {"DataType": "String", "StringValue": order_id}},
            }
            for index, order_id in enumerate(accepted[start : start + 10])
        ]
        assert not sqs.send_message_batch(QueueUrl=pipeline.resource("OrdersQueue"), Entries=entries).get(
            "Failed"
        )

    # When moto is killed
    os.kill(endpoint_pid(pipeline), signal.SIGKILL)
    exit_code = pipeline.process.wait(120)

    # Then the pipeline exits 1 and keeps every accepted order not yet mailed in a left-over file
    console = pipeline.console()
    mailed_before = mailed_ids(pipeline)
    assert exit_code == 1, console
    assert "the AWS endpoint (moto) is gone; accepted and not mailed, from its journal:" in console
    (kept,) = left_over_files(tmp_path)
    kept_ids = {
        json.loads(message["body"])["orderId"]
        for message in json.loads(kept.read_text())["messages"]["OrdersQueue"]
    }
    assert kept_ids == set(accepted) - set(mailed_before)

    # And the next run, given the file, mails each of them once
    again = start_pipeline(tmp_path)
    try:
        put_back = requeue(again, tmp_path, kept)
        assert put_back.returncode == 0, put_back.stderr
        wait_until(lambda: set(accepted) <= set(mailed_ids(again)), timeout=90)
        mailed = mailed_ids(again)
        assert sorted(order_id for order_id in mailed if order_id in accepted) == sorted(accepted)
    finally:
        assert again.terminate(timeout=120) == 0, again.console()
