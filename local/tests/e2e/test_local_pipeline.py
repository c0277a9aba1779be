"""The whole pipeline under `orderpipe local`, driven over HTTP only: its API and its AWS endpoint."""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import pytest

from orderpipe_local.testing import (
    EVENTS,
    ROOT,
    RunningPipeline,
    load_event,
    orderpipe_command,
    start_pipeline,
    wait_until,
)

if TYPE_CHECKING:
    from mypy_boto3_sqs.literals import QueueAttributeNameType

pytestmark = pytest.mark.e2e

ORDER: dict[str, Any] = json.loads(load_event("ingest-post-order.json")["body"])
MAIL_TIMEOUT_SECONDS = 20.0


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningPipeline]:
    """One pipeline for the tests of this module; each test only looks at its own orders."""
    running = start_pipeline(tmp_path_factory.mktemp("pipeline"))
    yield running
    if running.process.poll() is None:
        assert running.terminate() == 0, running.console()


def place_order(pipeline: RunningPipeline, name: str = "Ada Lovelace", **headers: str) -> str:
    order = dict(ORDER, customer={"name": name, "email": "ada@example.com"})
    status, _, body = pipeline.request("POST", "/orders", order, headers)
    assert status == 202, body
    order_id: str = body["orderId"]
    return order_id


def emails_naming(pipeline: RunningPipeline, order_id: str) -> list[Any]:
    return [mail for mail in pipeline.emails() if order_id in mail.body]


@contextmanager
def queue_attributes(pipeline: RunningPipeline, logical_id: str, **attributes: str) -> Iterator[None]:
    """Set attributes of one of the pipeline's queues through its endpoint, then restore them."""
    sqs = pipeline.sqs()
    url = pipeline.resource(logical_id)
    wanted = {cast("QueueAttributeNameType", name): value for name, value in attributes.items()}
    before = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=list(wanted))["Attributes"]
    sqs.set_queue_attributes(QueueUrl=url, Attributes=wanted)
    try:
        yield
    finally:
        sqs.set_queue_attributes(QueueUrl=url, Attributes=before)


def test_an_order_is_stored_and_mailed_alone_and_a_burst_in_a_digest(pipeline: RunningPipeline) -> None:
    # Given one order on its own
    single = place_order(pipeline, "Single Order")

    # Then it comes out in one email of its own, whose subject names it
    (mail,) = wait_until(lambda: emails_naming(pipeline, single), MAIL_TIMEOUT_SECONDS)
    assert single in mail.subject
    assert mail.to == "support@orderpipe.local"
    assert "Single Order" in mail.body

    # When a burst of orders follows
    burst = [place_order(pipeline, f"Burst {n}") for n in range(6)]

    # Then every one of them is in exactly one email, and at least one email is a digest
    wait_until(lambda: all(emails_naming(pipeline, order_id) for order_id in burst), MAIL_TIMEOUT_SECONDS)
    for order_id in burst:
        assert len(emails_naming(pipeline, order_id)) == 1
    digests = [mail for mail in pipeline.emails() if sum(order_id in mail.body for order_id in burst) >= 2]
    assert digests
    assert all(re.match(r"\d+ new orders", mail.subject) for mail in digests)
    wait_until(lambda: all(pipeline.order_status(order_id) == "NOTIFIED" for order_id in [single, *burst]))


def test_get_goes_from_404_to_placed_to_notified(pipeline: RunningPipeline) -> None:
    # Given accepted orders reach the writer two seconds late (queue delay, set through the endpoint)
    with queue_attributes(pipeline, "OrdersQueue", DelaySeconds="2"):
        order_id = place_order(pipeline, "Watched Order")

    # When its status is read until it is NOTIFIED
    seen: list[str | int] = []

    def notified() -> bool:
        status = pipeline.order_status(order_id)
        if not seen or seen[-1] != status:
            seen.append(status)
        return status == "NOTIFIED"

    wait_until(notified, MAIL_TIMEOUT_SECONDS, interval=0.05)

    # Then it went through each state once, in order
    assert seen == [404, "PLACED", "NOTIFIED"]


def test_a_replayed_post_with_an_idempotency_key_gives_one_order(pipeline: RunningPipeline) -> None:
    # Given an order posted twice with the same Idempotency-Key
    key = f"checkout-{uuid.uuid4()}"
    name = f"Replay {key}"
    first = place_order(pipeline, name, **{"Idempotency-Key": key})
    second = place_order(pipeline, name, **{"Idempotency-Key": key})

    # And the same key with another body
    other = dict(ORDER, customer={"name": "Someone Else", "email": "else@example.com"})
    conflict = pipeline.request("POST", "/orders", other, {"Idempotency-Key": key})

    # Then both answers name one order, the other body is refused, and one order is stored and mailed
    assert second == first
    assert conflict[0] == 422
    wait_until(lambda: pipeline.order_status(first) == "NOTIFIED", MAIL_TIMEOUT_SECONDS)
    items = pipeline.dynamodb().scan(
        TableName=pipeline.resource("OrdersTable"),
        FilterExpression="customer.#n = :name",
        ExpressionAttributeNames={"#n": "name"},
        ExpressionAttributeValues={":name": {"S": name}},
    )["Items"]
    assert [item["orderId"]["S"] for item in items] == [first]
    assert len(emails_naming(pipeline, first)) == 1


def test_a_poison_message_reaches_orders_dlq_and_blocks_nothing(pipeline: RunningPipeline) -> None:
    # Given a one-second visibility timeout (so five receives take seconds, not 17 minutes)
    # and a message no writer can store, put straight on the queue between valid orders
    poison = f"not an order {uuid.uuid4()}"
    with queue_attributes(pipeline, "OrdersQueue", VisibilityTimeout="1"):
        before = place_order(pipeline, "Before Poison")
        pipeline.sqs().send_message(QueueUrl=pipeline.resource("OrdersQueue"), MessageBody=poison)
        after = place_order(pipeline, "After Poison")

        # Then the orders around it are stored and mailed
        wait_until(
            lambda: all(pipeline.order_status(order_id) == "NOTIFIED" for order_id in (before, after)),
            MAIL_TIMEOUT_SECONDS,
        )

        # And the poison message lands in OrdersDLQ after its five receives
        def poison_in_dlq() -> bool:
            messages = (
                pipeline.sqs()
                .receive_message(
                    QueueUrl=pipeline.resource("OrdersDLQ"),
                    MaxNumberOfMessages=10,
                    VisibilityTimeout=0,
                    AttributeNames=["ApproximateReceiveCount"],
                )
                .get("Messages", [])
            )
            return any(message["Body"] == poison for message in messages)

        wait_until(poison_in_dlq, 60.0, interval=0.5)


def test_a_record_the_notifier_cannot_handle_goes_to_notifier_dlq_with_its_metadata(
    pipeline: RunningPipeline,
) -> None:
    # Given an item no notifier can read, written straight into OrdersTable, and valid orders around it
    broken_id = f"broken-{uuid.uuid4()}"
    before = place_order(pipeline, "Before Broken")
    pipeline.dynamodb().put_item(
        TableName=pipeline.resource("OrdersTable"),
        Item={"orderId": {"S": broken_id}, "status": {"S": "PLACED"}},
    )
    after = place_order(pipeline, "After Broken")

    # Then the valid orders are mailed
    wait_until(
        lambda: all(pipeline.order_status(order_id) == "NOTIFIED" for order_id in (before, after)),
        MAIL_TIMEOUT_SECONDS,
    )

    # And NotifierDLQ receives the failed record's metadata, as Lambda sends it (not the record)
    table_arn_prefix = f":table/{pipeline.resource('OrdersTable')}/stream/"

    def failure_record() -> dict[str, Any] | None:
        messages = (
            pipeline.sqs()
            .receive_message(
                QueueUrl=pipeline.resource("NotifierDLQ"), MaxNumberOfMessages=10, VisibilityTimeout=0
            )
            .get("Messages", [])
        )
        records = [json.loads(message["Body"]) for message in messages]
        return next((record for record in records if "DDBStreamBatchInfo" in record), None)

    record = wait_until(failure_record, 60.0, interval=0.5)
    info = record["DDBStreamBatchInfo"]
    assert table_arn_prefix in info["streamArn"]
    assert info["batchSize"] >= 1
    assert int(info["startSequenceNumber"]) <= int(info["endSequenceNumber"])
    assert record["requestContext"]["condition"] in ("RetryAttemptsExhausted", "RecordAgeExceeded")
    assert broken_id not in json.dumps(record)
    assert not emails_naming(pipeline, broken_id)


@pytest.mark.parametrize("found_by", ["state file", "endpoint URL"])
def test_orderpipe_invoke_runs_a_function_against_the_running_pipeline(
    pipeline: RunningPipeline, found_by: str
) -> None:
    # When the ingest function is invoked with a fixture, against the running pipeline: found
    # through its state file (as by default), or through its endpoint's URL
    where = (
        ["--state-file", str(pipeline.output.parent / "state.json")]
        if found_by == "state file"
        else ["--endpoint-url", pipeline.endpoint_url]
    )
    invoked = subprocess.run(
        [*orderpipe_command(), "invoke", "ingest", "-e", str(EVENTS / "ingest-post-order.json"), *where],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    # Then it prints the handler's response alone on stdout, as sam local invoke does
    assert invoked.returncode == 0, invoked.stderr
    response = json.loads(invoked.stdout)
    assert response["statusCode"] == 202
    order_id = json.loads(response["body"])["orderId"]
    expected = (
        "the running orderpipe local" if found_by == "state file" else f"against {pipeline.endpoint_url}"
    )
    assert expected in invoked.stderr

    # And the order it queued goes through the running pipeline: stored, then mailed
    wait_until(lambda: pipeline.order_status(order_id) == "NOTIFIED", MAIL_TIMEOUT_SECONDS)
    assert emails_naming(pipeline, order_id)


def test_each_function_logs_and_counts_under_its_own_service_name(pipeline: RunningPipeline) -> None:
    # Given an order that went all the way through
    status, _, body = pipeline.request("POST", "/orders", ORDER)
    assert status == 202, body
    wait_until(lambda: pipeline.order_status(body["orderId"]) == "NOTIFIED", MAIL_TIMEOUT_SECONDS)

    # Then each function's log lines and EMF metrics carry the service name the template gives
    # it, as in Lambda, though all three run on this machine
    log = pipeline.output.parent / "functions.log"
    services: dict[str, set[str]] = {}
    for line in log.read_text().splitlines():
        record = json.loads(line)
        if "function_name" in record:
            services.setdefault(record["function_name"], set()).add(record["service"])
    assert services == {
        "IngestFunction": {"ingest"},
        "WriterFunction": {"writer"},
        "NotifierFunction": {"notifier"},
    }


def test_what_works_off_the_queue_and_the_stream_runs_below_the_api(pipeline: RunningPipeline) -> None:
    # Given the running pipeline's processes: itself, its function workers, moto and moto's DynamoDB
    processes = descendants(pipeline.process.pid)
    endpoints = {
        pid: command for pid, command in processes.items() if "orderpipe_local.moto.endpoint" in command
    }
    workers = [pid for pid in processes if pid not in endpoints]
    (dynamodb,) = [pid for pid, command in endpoints.items() if "--only-dynamodb" in command]
    (moto,) = [pid for pid in endpoints if pid != dynamodb]

    # Then the API's side (the pipeline, moto's SQS, the ingest workers) keeps the priority it was
    # started with, and the writer's and notifier's workers and moto's DynamoDB run 10 below it
    base = niceness(pipeline.process.pid)
    assert niceness(moto) == base
    assert niceness(dynamodb) == base + 10
    # 4 ingest workers and their pool's zygote; 4 writer and 1 notifier workers, and a zygote each
    by_niceness = sorted(niceness(pid) for pid in workers)
    assert by_niceness == [base] * 5 + [base + 10] * 7


def test_only_the_pipeline_holds_the_apis_port(pipeline: RunningPipeline) -> None:
    # Given the API's listening socket, as the kernel lists it
    port = int(pipeline.api_url.rsplit(":", 1)[1].split("/")[0])
    inode = listening_socket_inode(port)

    # Then the pipeline holds it and none of its workers or moto processes does: once the
    # pipeline closes it on SIGTERM, new connections are refused instead of left unanswered
    holders = [pid for pid in [pipeline.process.pid, *descendants(pipeline.process.pid)] if holds(pid, inode)]
    assert holders == [pipeline.process.pid]


def listening_socket_inode(port: int) -> str:
    # /proc/net/tcp: local address (hex ip:port) is field 2, state 0A is LISTEN, the inode field 10
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1].endswith(f":{port:04X}") and fields[3] == "0A":
            return fields[9]
    raise AssertionError(f"nothing listens on port {port}")


def holds(pid: int, inode: str) -> bool:
    """Whether the process has the socket open; its descriptors may come and go while read."""
    with contextlib.suppress(FileNotFoundError, ProcessLookupError):
        for descriptor in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(FileNotFoundError):
                if os.readlink(descriptor) == f"socket:[{inode}]":
                    return True
    return False


def descendants(pid: int) -> dict[int, str]:
    """Every process under `pid`, with its command line."""
    found: dict[int, str] = {}
    pending = [pid]
    while pending:
        parent = pending.pop()
        for task in Path(f"/proc/{parent}/task").iterdir():
            for child in map(int, (task / "children").read_text().split()):
                found[child] = (Path(f"/proc/{child}/cmdline").read_bytes()).replace(b"\0", b" ").decode()
                pending.append(child)
    return found


def niceness(pid: int) -> int:
    # /proc/PID/stat: the command (in parentheses) is field 2; niceness is field 19
    return int(Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[16])
