"""The local event source mappings and email outbox against moto's server, from `template.yaml`.

Small handlers of the tests' own stand in for the functions, so each Lambda rule (batching,
partial batch responses, bisect, retries, the on-failure record, redrive to the DLQ) shows
on its own.
"""

from __future__ import annotations

import base64
import copy
import json
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3
import pytest

from orderpipe_local.moto.endpoint import AwsEndpoint
from orderpipe_local.runtime.functions import (
    FunctionHealth,
    FunctionState,
    FunctionUnavailable,
    LocalFunction,
)
from orderpipe_local.sources.dynamodb_stream import DynamoDBStreamEventSource
from orderpipe_local.sources.email_outbox import EmailOutbox
from orderpipe_local.sources.sqs import SqsEventSource
from orderpipe_local.stack.provision import Stack, provision_stack
from orderpipe_local.stack.template import Template, load_template
from orderpipe_local.status import PipelineMonitor
from orderpipe_local.testing import ROOT

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_sns import SNSClient
    from mypy_boto3_sqs import SQSClient

SUPPORT_EMAIL = "support@example.com"
Respond = Callable[[dict[str, Any]], Any]


# --- fixtures and helpers ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def endpoint() -> Iterator[AwsEndpoint]:
    with AwsEndpoint(port=0) as running:
        yield running


@cache
def _template(**overrides: str) -> Template:
    return load_template(ROOT / "template.yaml", overrides={"SupportEmail": SUPPORT_EMAIL, **overrides})


def make_stack(endpoint: AwsEndpoint, **overrides: str) -> Stack:
    """A fresh moto account holding the template's resources (parameters overridden as given)."""
    request = urllib.request.Request(f"{endpoint.url}/moto-api/reset", method="POST")
    with urllib.request.urlopen(request, timeout=10):
        pass
    return provision_stack(_template(**overrides), endpoint_url=endpoint.url)


def sqs_client(endpoint: AwsEndpoint) -> SQSClient:
    return boto3.client("sqs", endpoint_url=endpoint.url, region_name="us-east-1")


def dynamodb_client(endpoint: AwsEndpoint) -> DynamoDBClient:
    return boto3.client("dynamodb", endpoint_url=endpoint.url, region_name="us-east-1")


def sns_client(endpoint: AwsEndpoint) -> SNSClient:
    return boto3.client("sns", endpoint_url=endpoint.url, region_name="us-east-1")


def wait_until(condition: Callable[[], bool], timeout: float = 10.0, interval: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {timeout} s")
        time.sleep(interval)


class RecordingHandler:
    """Keeps a copy of each event and answers as `respond` says (raising is a function error)."""

    def __init__(self, respond: Respond | None = None) -> None:
        self.respond = respond or (lambda event: {"batchItemFailures": []})
        self.events: list[dict[str, Any]] = []
        self.times: list[float] = []
        self._lock = threading.Lock()

    def __call__(self, event: dict[str, Any], context: Any) -> Any:
        with self._lock:
            self.events.append(copy.deepcopy(event))
            self.times.append(time.monotonic())
        return self.respond(event)

    @property
    def batches(self) -> list[list[dict[str, Any]]]:
        with self._lock:
            return [event["Records"] for event in self.events]


def local_function(function_id: str, handler: RecordingHandler) -> LocalFunction:
    return LocalFunction(function_id=function_id, handler=handler, timeout_seconds=30, memory_mb=512)


class FunctionWithOutage:
    """A function the test takes down: unavailable, as a pool is once none of its execution
    environments can be started. `refusals`: invocations refused even while it looks available
    (the outage beginning after the batch was received)."""

    concurrency = 1

    def __init__(self, function: LocalFunction, *, refusals: int = 0) -> None:
        self.function = function
        self.function_id = function.function_id
        self.down = threading.Event()
        self.refusals = refusals
        self.refused = 0
        self.invocations = self.errors = 0  # the wrapped function counts its own

    @property
    def available(self) -> bool:
        return not self.down.is_set()

    def invoke(self, event: dict[str, Any]) -> Any:
        if self.down.is_set() or self.refused < self.refusals:
            self.refused += 1
            raise FunctionUnavailable(f"{self.function_id} is unavailable")
        return self.function.invoke(event)

    def health(self) -> FunctionHealth:
        state = FunctionState.UNAVAILABLE if self.down.is_set() else FunctionState.OK
        return FunctionHealth(self.function_id, state, alive=int(self.available), environments=1)


def queue_counts(sqs: SQSClient, queue_url: str) -> tuple[int, int]:
    """(visible, in flight) messages of a queue."""
    attributes = sqs.get_queue_attributes(
        QueueUrl=queue_url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"]), int(
        attributes["ApproximateNumberOfMessagesNotVisible"]
    )


def send_bodies(sqs: SQSClient, queue_url: str, bodies: list[str]) -> None:
    for start in range(0, len(bodies), 10):
        sqs.send_message_batch(
            QueueUrl=queue_url,
            Entries=[
                {"Id": str(i), "MessageBody": body} for i, body in enumerate(bodies[start : start + 10])
            ],
        )


def fail_bodies_containing(word: str) -> Respond:
    def respond(event: dict[str, Any]) -> Any:
        return {
            "batchItemFailures": [
                {"itemIdentifier": record["messageId"]}
                for record in event["Records"]
                if word in record["body"]
            ]
        }

    return respond


@pytest.fixture
def started() -> Iterator[list[Any]]:
    """Sources a test starts are stopped at its end, whatever happens."""
    sources: list[Any] = []
    yield sources
    for source in sources:
        source.stop()


# --- SQS --------------------------------------------------------------------------------------


def test_sqs_records_have_the_shape_lambda_sends(endpoint: AwsEndpoint, started: list[Any]) -> None:
    # Given the writer's mapping and a message with every kind of message attribute
    stack = make_stack(endpoint)
    sqs = sqs_client(endpoint)
    queue_url = stack.ref("OrdersQueue")
    sent = sqs.send_message(
        QueueUrl=queue_url,
        MessageBody='{"orderId": "o-1", "note": "Zoë"}',
        MessageAttributes={
            "kind": {"DataType": "String", "StringValue": "order"},
            "count": {"DataType": "Number", "StringValue": "3"},
            "blob": {"DataType": "Binary", "BinaryValue": b"\x00\xff"},
        },
    )
    handler = RecordingHandler()
    (mapping,) = stack.event_source_mappings("WriterFunction")
    source = SqsEventSource(stack, mapping, local_function("WriterFunction", handler), endpoint.url)

    # When it polls
    source.start()
    started.append(source)
    wait_until(lambda: len(handler.events) == 1)

    # Then the record is Lambda's SQS record
    (record,) = handler.batches[0]
    assert list(record) == [
        "messageId",
        "receiptHandle",
        "body",
        "attributes",
        "messageAttributes",
        "md5OfBody",
        "md5OfMessageAttributes",
        "eventSource",
        "eventSourceARN",
        "awsRegion",
    ]
    assert record["messageId"] == sent["MessageId"]
    assert record["body"] == '{"orderId": "o-1", "note": "Zoë"}'
    assert record["md5OfBody"] == sent["MD5OfMessageBody"]
    assert record["md5OfMessageAttributes"] == sent["MD5OfMessageAttributes"]
    assert record["eventSource"] == "aws:sqs"
    assert record["eventSourceARN"] == stack.attribute("OrdersQueue", "Arn")
    assert record["awsRegion"] == "us-east-1"
    attributes = record["attributes"]
    assert list(attributes)[:4] == [
        "ApproximateReceiveCount",
        "SentTimestamp",
        "SenderId",
        "ApproximateFirstReceiveTimestamp",
    ]
    assert attributes["ApproximateReceiveCount"] == "1"
    assert record["messageAttributes"] == {
        "kind": {
            "stringValue": "order",
            "stringListValues": [],
            "binaryListValues": [],
            "dataType": "String",
        },
        "count": {"stringValue": "3", "stringListValues": [], "binaryListValues": [], "dataType": "Number"},
        "blob": {
            "binaryValue": base64.b64encode(b"\x00\xff").decode(),
            "stringListValues": [],
            "binaryListValues": [],
            "dataType": "Binary",
        },
    }
    wait_until(lambda: queue_counts(sqs, queue_url) == (0, 0))


def test_sqs_batches_gather_within_the_batching_window(endpoint: AwsEndpoint, started: list[Any]) -> None:
    # Given batches of up to 25 messages within 1 s
    stack = make_stack(endpoint, WriterBatchSize="25", WriterBatchingWindowSeconds="1")
    sqs = sqs_client(endpoint)
    queue_url = stack.ref("OrdersQueue")
    handler = RecordingHandler()
    (mapping,) = stack.event_source_mappings("WriterFunction")
    source = SqsEventSource(stack, mapping, local_function("WriterFunction", handler), endpoint.url)
    source.start()
    started.append(source)

    # When one message comes after a quiet spell, then 40 at once
    sent_first = time.monotonic()
    send_bodies(sqs, queue_url, ["first"])
    wait_until(lambda: len(handler.events) == 1)
    send_bodies(sqs, queue_url, [f"m-{i}" for i in range(40)])
    wait_until(lambda: sum(len(batch) for batch in handler.batches) == 41)

    # Then the lone message went at once, and the burst in batches of at most 25, each once
    assert handler.times[0] - sent_first < 1.0
    batches = handler.batches
    assert [record["body"] for record in batches[0]] == ["first"]
    assert all(len(batch) <= 25 for batch in batches)
    assert max(len(batch) for batch in batches[1:]) > 10  # more than one ReceiveMessage call's worth
    bodies = [record["body"] for batch in batches[1:] for record in batch]
    assert sorted(bodies) == sorted(f"m-{i}" for i in range(40))
    wait_until(lambda: queue_counts(sqs, queue_url) == (0, 0))
    assert source.stats() | {"filtered": 0} == {
        "batches": len(batches),
        "succeeded": 41,
        "failed": 0,
        "filtered": 0,
        "returned": 0,
        "duplicated": 0,
    }


def test_sqs_batches_wait_in_the_queue_while_every_execution_environment_is_busy(
    endpoint: AwsEndpoint, started: list[Any]
) -> None:
    # Given a function with one execution environment, busy with a first message, and no window
    stack = make_stack(
        endpoint, WriterBatchSize="10", WriterBatchingWindowSeconds="0", WriterMaximumConcurrency="5"
    )
    sqs = sqs_client(endpoint)
    queue_url = stack.ref("OrdersQueue")
    busy = threading.Event()
    handler = RecordingHandler(lambda event: busy.wait(10) and {"batchItemFailures": []})
    (mapping,) = stack.event_source_mappings("WriterFunction")
    source = SqsEventSource(stack, mapping, local_function("WriterFunction", handler), endpoint.url)
    source.start()
    started.append(source)
    send_bodies(sqs, queue_url, ["first"])
    wait_until(lambda: len(handler.events) == 1)

    # When 30 messages arrive meanwhile, and then the first invocation ends
    send_bodies(sqs, queue_url, [f"m-{i}" for i in range(30)])
    time.sleep(0.5)
    in_queue_meanwhile = queue_counts(sqs, queue_url)
    busy.set()
    wait_until(lambda: sum(len(batch) for batch in handler.batches) == 31)

    # Then they waited in the queue, not in batches for an environment, and went in full batches
    assert source.concurrency == 1
    assert in_queue_meanwhile == (30, 1)  # visible; the first in flight
    assert [len(batch) for batch in handler.batches] == [1, 10, 10, 10]


def test_sqs_partial_failure_deletes_only_the_successes(endpoint: AwsEndpoint, started: list[Any]) -> None:
    # Given a handler that reports the poison messages of its batch
    stack = make_stack(endpoint)
    sqs = sqs_client(endpoint)
    queue_url = stack.ref("OrdersQueue")
    handler = RecordingHandler(fail_bodies_containing("poison"))
    (mapping,) = stack.event_source_mappings("WriterFunction")
    source = SqsEventSource(stack, mapping, local_function("WriterFunction", handler), endpoint.url)

    # When a batch holds two poison messages among good ones
    send_bodies(sqs, queue_url, ["good-1", "poison-1", "good-2", "poison-2", "good-3"])
    source.start()
    started.append(source)
    wait_until(lambda: source.stats()["succeeded"] + source.stats()["failed"] == 5)
    source.stop()

    # Then the good ones are deleted, the poison ones wait out the visibility timeout (180 s)
    assert queue_counts(sqs, queue_url) == (0, 2)
    assert source.stats()["succeeded"] == 3
    assert source.stats()["failed"] == 2


@pytest.mark.parametrize(
    "respond",
    [
        pytest.param(lambda event: (_ for _ in ()).throw(RuntimeError("boom")), id="function-error"),
        pytest.param(lambda event: {"batchItemFailures": [{"itemIdentifier": "nope"}]}, id="unknown-id"),
        pytest.param(lambda event: {"batchItemFailures": [{"itemIdentifier": ""}]}, id="empty-id"),
        pytest.param(lambda event: {"batchItemFailures": [{"id": "x"}]}, id="bad-key"),
        pytest.param(lambda event: "ok", id="not-an-object"),
    ],
)
def test_sqs_function_error_or_invalid_answer_fails_the_whole_batch(
    endpoint: AwsEndpoint, started: list[Any], respond: Respond
) -> None:
    stack = make_stack(endpoint)
    sqs = sqs_client(endpoint)
    queue_url = stack.ref("OrdersQueue")
    handler = RecordingHandler(respond)
    (mapping,) = stack.event_source_mappings("WriterFunction")
    source = SqsEventSource(stack, mapping, local_function("WriterFunction", handler), endpoint.url)
    send_bodies(sqs, queue_url, ["a", "b", "c"])

    source.start()
    started.append(source)
    wait_until(lambda: source.stats()["failed"] == 3)
    source.stop()

    assert queue_counts(sqs, queue_url) == (0, 3)
    assert source.stats()["succeeded"] == 0


@pytest.mark.parametrize(
    "response",
    [None, {}, {"batchItemFailures": None}, {"batchItemFailures": []}],
    ids=["null", "empty", "null-list", "empty-list"],
)
def test_sqs_empty_answers_are_complete_successes(
    endpoint: AwsEndpoint, started: list[Any], response: Any
) -> None:
    stack = make_stack(endpoint)
    sqs = sqs_client(endpoint)
    queue_url = stack.ref("OrdersQueue")
    handler = RecordingHandler(lambda event: response)
    (mapping,) = stack.event_source_mappings("WriterFunction")
    source = SqsEventSource(stack, mapping, local_function("WriterFunction", handler), endpoint.url)
    send_bodies(sqs, queue_url, ["a", "b"])

    source.start()
    started.append(source)
    wait_until(lambda: source.stats()["succeeded"] == 2)
    wait_until(lambda: queue_counts(sqs, queue_url) == (0, 0))


def test_a_poison_message_reaches_the_dlq_after_five_receives(
    endpoint: AwsEndpoint, started: list[Any]
) -> None:
    # Given OrdersQueue with a 1 s visibility timeout (the template's 180 s would take 15 minutes)
    # and its redrive policy from the template (OrdersDLQ after 5 receives)
    stack = make_stack(endpoint)
    sqs = sqs_client(endpoint)
    queue_url = stack.ref("OrdersQueue")
    sqs.set_queue_attributes(QueueUrl=queue_url, Attributes={"VisibilityTimeout": "1"})
    handler = RecordingHandler(fail_bodies_containing("poison"))
    (mapping,) = stack.event_source_mappings("WriterFunction")
    source = SqsEventSource(stack, mapping, local_function("WriterFunction", handler), endpoint.url)
    send_bodies(sqs, queue_url, ["good-1", "poison", "good-2"])

    # When the writer keeps failing it
    source.start()
    started.append(source)
    dlq_url = stack.ref("OrdersDLQ")
    wait_until(lambda: queue_counts(sqs, dlq_url)[0] == 1, timeout=30)

    # Then it was tried exactly five times, and the good messages were stored once
    received = [r for batch in handler.batches for r in batch if r["body"] == "poison"]
    assert [r["attributes"]["ApproximateReceiveCount"] for r in received] == ["1", "2", "3", "4", "5"]
    good = [r["body"] for batch in handler.batches for r in batch if r["body"] != "poison"]
    assert sorted(good) == ["good-1", "good-2"]
    (dead,) = sqs.receive_message(QueueUrl=dlq_url, AttributeNames=["All"])["Messages"]
    assert dead["Body"] == "poison"
    assert dead["MessageId"] == received[0]["messageId"]
    wait_until(lambda: queue_counts(sqs, queue_url) == (0, 0))


def test_sqs_receives_nothing_while_the_function_is_unavailable(
    endpoint: AwsEndpoint, started: list[Any]
) -> None:
    # Given the writer's mapping, its function unavailable, and messages in the queue
    stack = make_stack(endpoint)
    sqs = sqs_client(endpoint)
    queue_url = stack.ref("OrdersQueue")
    handler = RecordingHandler()
    function = FunctionWithOutage(local_function("WriterFunction", handler))
    function.down.set()
    (mapping,) = stack.event_source_mappings("WriterFunction")
    source = SqsEventSource(stack, mapping, function, endpoint.url)
    send_bodies(sqs, queue_url, ["o-1", "o-2", "o-3"])

    # When the source runs through the outage, and the function comes back
    source.start()
    started.append(source)
    time.sleep(1.5)
    during = queue_counts(sqs, queue_url)
    function.down.clear()
    wait_until(lambda: sum(len(batch) for batch in handler.batches) == 3)

    # Then the messages waited in the queue, visible, and their receives were not spent on it
    assert during == (3, 0)
    received = [record for batch in handler.batches for record in batch]
    assert {record["attributes"]["ApproximateReceiveCount"] for record in received} == {"1"}
    wait_until(lambda: queue_counts(sqs, queue_url) == (0, 0))
    assert source.stats()["failed"] == 0


def test_sqs_a_batch_the_function_is_unavailable_for_goes_back_to_the_queue_at_once(
    endpoint: AwsEndpoint, started: list[Any]
) -> None:
    # Given the writer's mapping (a 180 s visibility timeout) and a function that becomes
    # unavailable just after a batch was received
    stack = make_stack(endpoint, WriterBatchingWindowSeconds="0")
    sqs = sqs_client(endpoint)
    queue_url = stack.ref("OrdersQueue")
    handler = RecordingHandler()
    function = FunctionWithOutage(local_function("WriterFunction", handler), refusals=1)
    (mapping,) = stack.event_source_mappings("WriterFunction")
    source = SqsEventSource(stack, mapping, function, endpoint.url)
    send_bodies(sqs, queue_url, ["o-1", "o-2"])

    # When the source invokes it
    source.start()
    started.append(source)
    wait_until(lambda: sum(len(batch) for batch in handler.batches) == 2)

    # Then the refused batch was visible again at once (not after 180 s), and counts as returned,
    # not failed
    assert function.refused == 1
    assert source.stats()["returned"] == 2
    assert source.stats()["failed"] == 0
    wait_until(lambda: queue_counts(sqs, queue_url) == (0, 0))


def test_sqs_filter_criteria_delete_what_does_not_match(endpoint: AwsEndpoint, started: list[Any]) -> None:
    # Given a mapping that only lets JSON bodies of kind "order" through
    stack = make_stack(endpoint)
    sqs = sqs_client(endpoint)
    queue_url = stack.ref("OrdersQueue")
    handler = RecordingHandler()
    (mapping,) = stack.event_source_mappings("WriterFunction")
    mapping = mapping | {"FilterCriteria": {"Filters": [{"Pattern": '{"body": {"kind": ["order"]}}'}]}}
    source = SqsEventSource(stack, mapping, local_function("WriterFunction", handler), endpoint.url)
    send_bodies(
        sqs, queue_url, ['{"kind": "order", "n": 1}', '{"kind": "ping"}', "not json", '{"kind": "order"}']
    )

    source.start()
    started.append(source)
    wait_until(lambda: queue_counts(sqs, queue_url) == (0, 0))
    wait_until(lambda: source.stats()["filtered"] == 2)

    bodies = sorted(r["body"] for batch in handler.batches for r in batch)
    assert bodies == ['{"kind": "order", "n": 1}', '{"kind": "order"}']


def test_sqs_stop_lets_the_batch_in_flight_finish(endpoint: AwsEndpoint) -> None:
    # Given a slow handler busy with a batch
    stack = make_stack(endpoint)
    sqs = sqs_client(endpoint)
    queue_url = stack.ref("OrdersQueue")
    release = threading.Event()

    def slow(event: dict[str, Any]) -> Any:
        release.wait(5)
        return None

    handler = RecordingHandler(slow)
    (mapping,) = stack.event_source_mappings("WriterFunction")
    source = SqsEventSource(stack, mapping, local_function("WriterFunction", handler), endpoint.url)
    send_bodies(sqs, queue_url, ["a", "b"])
    source.start()
    wait_until(lambda: len(handler.events) == 1)
    assert not source.drained()

    # When it is stopped mid-batch
    stopping = threading.Thread(target=source.stop)
    stopping.start()
    time.sleep(0.3)
    assert stopping.is_alive()  # waits for the batch
    release.set()
    stopping.join(10)

    # Then the batch's result was applied before stop() returned
    assert not stopping.is_alive()
    assert queue_counts(sqs, queue_url) == (0, 0)
    assert source.drained()
    assert source.drain(1.0)


# --- DynamoDB stream --------------------------------------------------------------------------


def put_order(dynamodb: DynamoDBClient, stack: Stack, order_id: str, **extra: Any) -> None:
    item = {"orderId": {"S": order_id}, "status": {"S": "PLACED"}} | extra
    dynamodb.put_item(TableName=stack.ref("OrdersTable"), Item=item)


def order_ids(records: list[dict[str, Any]]) -> list[str]:
    return [record["dynamodb"]["Keys"]["orderId"]["S"] for record in records]


def stream_source(
    endpoint: AwsEndpoint, stack: Stack, handler: RecordingHandler, **changes: Any
) -> DynamoDBStreamEventSource:
    (mapping,) = stack.event_source_mappings("NotifierFunction")
    return DynamoDBStreamEventSource(
        stack, mapping | changes, local_function("NotifierFunction", handler), endpoint.url
    )


def fail_order(order_id: str, *, times: int | None = None) -> Respond:
    """Report the record of `order_id` as failed (the first `times` times, or always)."""
    failed = 0

    def respond(event: dict[str, Any]) -> Any:
        nonlocal failed
        for record in event["Records"]:
            if record["dynamodb"]["Keys"]["orderId"]["S"] == order_id and (times is None or failed < times):
                failed += 1
                return {"batchItemFailures": [{"itemIdentifier": record["dynamodb"]["SequenceNumber"]}]}
        return {"batchItemFailures": []}

    return respond


def dead_letters(sqs: SQSClient, stack: Stack, expected: int) -> list[dict[str, Any]]:
    """What the notifier's mapping sent to its on-failure destination (NotifierRetryQueue)."""
    queue_url = stack.ref("NotifierRetryQueue")
    wait_until(lambda: queue_counts(sqs, queue_url)[0] == expected)
    messages = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10).get("Messages", [])
    return [json.loads(message["Body"]) for message in messages]


def test_stream_delivers_inserts_only_in_lambda_shape(endpoint: AwsEndpoint, started: list[Any]) -> None:
    # Given the notifier's mapping (filter eventName INSERT)
    stack = make_stack(endpoint)
    dynamodb = dynamodb_client(endpoint)
    handler = RecordingHandler()
    source = stream_source(endpoint, stack, handler)
    source.start()
    started.append(source)

    # When an order is stored, then updated
    put_order(dynamodb, stack, "o-1", blob={"B": b"\x01\x02"}, total={"N": "12.50"})
    dynamodb.update_item(
        TableName=stack.ref("OrdersTable"),
        Key={"orderId": {"S": "o-1"}},
        UpdateExpression="SET #s = :n",
        ExpressionAttributeNames={"#s": "status"},
        ExpressionAttributeValues={":n": {"S": "NOTIFIED"}},
    )
    wait_until(lambda: source.stats()["filtered"] == 1)

    # Then only the INSERT reached the function, as Lambda builds it
    assert len(handler.events) == 1
    (record,) = handler.batches[0]
    assert record["eventName"] == "INSERT"
    assert record["eventVersion"] == "1.1"
    assert record["eventSource"] == "aws:dynamodb"
    assert record["awsRegion"] == "us-east-1"
    assert record["eventSourceARN"] == stack.attribute("OrdersTable", "StreamArn")
    assert len(record["eventID"]) == 32
    change = record["dynamodb"]
    assert set(change) == {
        "ApproximateCreationDateTime",
        "Keys",
        "NewImage",
        "SequenceNumber",
        "SizeBytes",
        "StreamViewType",
    }
    assert isinstance(change["ApproximateCreationDateTime"], int)
    assert abs(change["ApproximateCreationDateTime"] - time.time()) < 60
    assert change["Keys"] == {"orderId": {"S": "o-1"}}
    assert change["NewImage"]["blob"] == {"B": base64.b64encode(b"\x01\x02").decode()}
    assert change["NewImage"]["total"] == {"N": "12.50"}
    assert change["SequenceNumber"].isdigit()
    assert change["StreamViewType"] == "NEW_IMAGE"
    json.dumps(handler.events[0])  # what Lambda sends is JSON
    assert source.stats()["succeeded"] == 1


def test_stream_batches_within_the_window_and_batch_size(endpoint: AwsEndpoint, started: list[Any]) -> None:
    # Given batches of up to 5 records within 1 s
    stack = make_stack(endpoint, NotifierBatchSize="5", NotifierBatchingWindowSeconds="1")
    dynamodb = dynamodb_client(endpoint)
    handler = RecordingHandler()
    source = stream_source(endpoint, stack, handler)
    source.start()
    started.append(source)

    # When one order is stored after a quiet spell, then twelve right after
    stored_first = time.monotonic()
    put_order(dynamodb, stack, "first")
    wait_until(lambda: len(handler.events) == 1)
    for i in range(12):
        put_order(dynamodb, stack, f"o-{i:02d}")
    wait_until(lambda: source.stats()["succeeded"] == 13)

    # Then the first went out at once, the rest in order, in full batches of five at most
    assert handler.times[0] - stored_first < 0.9  # polled four times a second, not held for the window
    assert order_ids(handler.batches[0]) == ["first"]
    assert [len(batch) for batch in handler.batches[1:]] == [5, 5, 2]
    assert [i for batch in handler.batches[1:] for i in order_ids(batch)] == [f"o-{i:02d}" for i in range(12)]
    # and the window held the second batch back until it filled or a second passed
    assert handler.times[1] - handler.times[0] < 1.5


def test_stream_window_gathers_a_trickle_into_one_batch(endpoint: AwsEndpoint, started: list[Any]) -> None:
    stack = make_stack(endpoint, NotifierBatchSize="100", NotifierBatchingWindowSeconds="1")
    dynamodb = dynamodb_client(endpoint)
    handler = RecordingHandler()
    source = stream_source(endpoint, stack, handler)
    source.start()
    started.append(source)

    put_order(dynamodb, stack, "first")
    wait_until(lambda: len(handler.events) == 1)
    for i in range(6):
        put_order(dynamodb, stack, f"o-{i}")
        time.sleep(0.05)
    wait_until(lambda: source.stats()["succeeded"] == 7)

    assert [len(batch) for batch in handler.batches] == [1, 6]
    assert 0.8 < handler.times[1] - handler.times[0] < 2.0


def test_stream_partial_failure_retries_from_the_failed_record(
    endpoint: AwsEndpoint, started: list[Any]
) -> None:
    # Given five stored orders and a function that fails o-3 once
    stack = make_stack(endpoint)
    dynamodb = dynamodb_client(endpoint)
    for i in range(1, 6):
        put_order(dynamodb, stack, f"o-{i}")
    handler = RecordingHandler(fail_order("o-3", times=1))
    source = stream_source(endpoint, stack, handler)

    # When the batch comes back with o-3's sequence number
    source.start()
    started.append(source)
    wait_until(lambda: source.stats()["succeeded"] == 5)

    # Then the retry starts at o-3: the records before it are done
    assert [order_ids(batch) for batch in handler.batches] == [
        ["o-1", "o-2", "o-3", "o-4", "o-5"],
        ["o-3", "o-4", "o-5"],
    ]
    assert source.stats() == {
        "batches": 2,
        "succeeded": 5,
        "failed": 3,
        "sent_to_dlq": 0,
        "filtered": 0,
        "discarded": 0,
    }


def test_stream_lowest_reported_sequence_number_is_the_checkpoint(
    endpoint: AwsEndpoint, started: list[Any]
) -> None:
    stack = make_stack(endpoint)
    dynamodb = dynamodb_client(endpoint)
    for i in range(1, 6):
        put_order(dynamodb, stack, f"o-{i}")
    answered = False

    def fail_four_then_two(event: dict[str, Any]) -> Any:
        nonlocal answered
        if answered:
            return None
        answered = True
        by_id = {order_ids([r])[0]: r["dynamodb"]["SequenceNumber"] for r in event["Records"]}
        return {"batchItemFailures": [{"itemIdentifier": by_id["o-4"]}, {"itemIdentifier": by_id["o-2"]}]}

    handler = RecordingHandler(fail_four_then_two)
    source = stream_source(endpoint, stack, handler)
    source.start()
    started.append(source)
    wait_until(lambda: source.stats()["succeeded"] == 5)

    assert [order_ids(batch) for batch in handler.batches][1] == ["o-2", "o-3", "o-4", "o-5"]


def test_stream_bisects_a_failing_batch_and_parks_the_poison_record(
    endpoint: AwsEndpoint, started: list[Any]
) -> None:
    # Given four orders, the third of which makes the function raise
    stack = make_stack(endpoint)
    dynamodb = dynamodb_client(endpoint)
    sqs = sqs_client(endpoint)
    for i in range(1, 5):
        put_order(dynamodb, stack, f"o-{i}")

    def raise_on_poison(event: dict[str, Any]) -> Any:
        if "o-3" in order_ids(event["Records"]):
            raise RuntimeError("poison")
        return None

    handler = RecordingHandler(raise_on_poison)
    source = stream_source(endpoint, stack, handler)

    # When the stream is processed (the template: bisect on, 5 retries, NotifierRetryQueue on failure)
    source.start()
    started.append(source)
    (record,) = dead_letters(sqs, stack, expected=1)
    wait_until(lambda: source.stats()["succeeded"] == 3)

    # Then the batch was split in two until o-3 stood alone, retried 5 times, then parked
    assert [order_ids(batch) for batch in handler.batches] == [
        ["o-1", "o-2", "o-3", "o-4"],
        ["o-1", "o-2"],
        ["o-3", "o-4"],
        *[["o-3"]] * 6,
        ["o-4"],
    ]
    poison = handler.batches[-2][0]["dynamodb"]["SequenceNumber"]
    info = record["DDBStreamBatchInfo"]
    assert info["startSequenceNumber"] == info["endSequenceNumber"] == poison
    assert info["batchSize"] == 1
    assert info["streamArn"] == stack.attribute("OrdersTable", "StreamArn")
    assert info["shardId"].startswith("shardId-")
    assert info["approximateArrivalOfFirstRecord"].endswith("Z")
    assert record["requestContext"]["condition"] == "RetryAttemptsExhausted"
    assert record["requestContext"]["approximateInvokeCount"] == 6
    assert record["requestContext"]["functionArn"].endswith(":function:NotifierFunction")
    assert record["responseContext"] == {
        "statusCode": 200,
        "executedVersion": "$LATEST",
        "functionError": "Unhandled",
    }
    assert record["version"] == "1.0"
    assert source.stats()["sent_to_dlq"] == 1

    # and later records still flow
    put_order(dynamodb, stack, "o-5")
    wait_until(lambda: source.stats()["succeeded"] == 4)


def test_stream_retries_exhausted_send_the_range_from_the_checkpoint(
    endpoint: AwsEndpoint, started: list[Any]
) -> None:
    # Given a function that always reports o-2 (a partial batch response, no error)
    stack = make_stack(endpoint)
    dynamodb = dynamodb_client(endpoint)
    sqs = sqs_client(endpoint)
    for i in range(1, 4):
        put_order(dynamodb, stack, f"o-{i}")
    handler = RecordingHandler(fail_order("o-2"))
    source = stream_source(endpoint, stack, handler)

    source.start()
    started.append(source)
    (record,) = dead_letters(sqs, stack, expected=1)

    # Then after 1 + 5 invocations the records from the checkpoint on are given up
    assert [order_ids(batch) for batch in handler.batches] == [["o-1", "o-2", "o-3"], *[["o-2", "o-3"]] * 5]
    sequence = {order_ids([r])[0]: r["dynamodb"]["SequenceNumber"] for r in handler.batches[0]}
    info = record["DDBStreamBatchInfo"]
    assert (info["startSequenceNumber"], info["endSequenceNumber"]) == (sequence["o-2"], sequence["o-3"])
    assert info["batchSize"] == 2
    assert record["requestContext"]["approximateInvokeCount"] == 6
    assert "functionError" not in record["responseContext"]

    # and processing continues with later records
    put_order(dynamodb, stack, "o-4")
    wait_until(lambda: ["o-4"] in [order_ids(batch) for batch in handler.batches])
    assert source.stats()["sent_to_dlq"] == 2


def test_stream_holds_a_batch_while_the_function_is_unavailable_without_spending_retries(
    endpoint: AwsEndpoint, started: list[Any]
) -> None:
    # Given a mapping that gives a batch up at its first failure, and a function unavailable for
    # its first two tries
    stack = make_stack(endpoint)
    dynamodb = dynamodb_client(endpoint)
    handler = RecordingHandler()
    (mapping,) = stack.event_source_mappings("NotifierFunction")
    function = FunctionWithOutage(local_function("NotifierFunction", handler), refusals=2)
    source = DynamoDBStreamEventSource(stack, mapping | {"MaximumRetryAttempts": 0}, function, endpoint.url)
    source.start()
    started.append(source)

    # When an order is stored
    put_order(dynamodb, stack, "o-1")
    wait_until(lambda: len(handler.events) == 1, timeout=15)

    # Then the batch waited for the function, and reached it: no retry spent, nothing given up
    assert function.refused == 2
    assert [order_ids(batch) for batch in handler.batches] == [["o-1"]]
    stats = source.stats()
    assert (stats["batches"], stats["succeeded"], stats["failed"], stats["sent_to_dlq"]) == (1, 1, 0, 0)


def test_stream_records_older_than_the_maximum_age_are_given_up(
    endpoint: AwsEndpoint, started: list[Any]
) -> None:
    stack = make_stack(endpoint)
    dynamodb = dynamodb_client(endpoint)
    sqs = sqs_client(endpoint)
    put_order(dynamodb, stack, "o-1")
    handler = RecordingHandler(lambda event: (_ for _ in ()).throw(RuntimeError("down")))
    source = stream_source(endpoint, stack, handler, MaximumRetryAttempts=-1, MaximumRecordAgeInSeconds=1)

    source.start()
    started.append(source)
    (record,) = dead_letters(sqs, stack, expected=1)

    assert record["requestContext"]["condition"] == "RecordAgeExceeded"
    assert record["DDBStreamBatchInfo"]["batchSize"] == 1


def test_stream_latest_skips_what_was_stored_before(endpoint: AwsEndpoint, started: list[Any]) -> None:
    stack = make_stack(endpoint)
    dynamodb = dynamodb_client(endpoint)
    put_order(dynamodb, stack, "before")
    handler = RecordingHandler()
    source = stream_source(endpoint, stack, handler, StartingPosition="LATEST")
    source.start()
    started.append(source)

    put_order(dynamodb, stack, "after")
    wait_until(lambda: source.stats()["succeeded"] == 1)
    assert [order_ids(batch) for batch in handler.batches] == [["after"]]


def test_stream_drained_only_when_everything_is_handled(endpoint: AwsEndpoint) -> None:
    stack = make_stack(endpoint)
    dynamodb = dynamodb_client(endpoint)
    handler = RecordingHandler()
    source = DynamoDBStreamEventSource(
        stack,
        stack.event_source_mappings("NotifierFunction")[0],
        local_function("NotifierFunction", handler),
        endpoint.url,
        poll_interval=2.0,
    )
    source.start()
    try:
        assert source.drain(5)
        put_order(dynamodb, stack, "o-1")
        assert not source.drained()  # stored, not yet read: the reader sleeps between polls
        assert source.drain(10)
        assert source.stats()["succeeded"] == 1
    finally:
        source.stop()


# --- email outbox -----------------------------------------------------------------------------


class Inbox:
    def __init__(self) -> None:
        self.emails: list[tuple[Path, str]] = []
        self._lock = threading.Lock()

    def __call__(self, path: Path, summary: str) -> None:
        with self._lock:
            self.emails.append((path, summary))

    def __len__(self) -> int:
        with self._lock:
            return len(self.emails)


def read_email(path: Path) -> EmailMessage:
    message = BytesParser(policy=policy.default).parsebytes(path.read_bytes())
    assert isinstance(message, EmailMessage)
    return message


def test_outbox_writes_an_email_per_published_message(
    endpoint: AwsEndpoint, tmp_path: Path, started: list[Any]
) -> None:
    # Given the outbox on a stack whose OrdersTopic has the support email subscription
    stack = make_stack(endpoint)
    sns = sns_client(endpoint)
    inbox = Inbox()
    outbox = EmailOutbox(stack, endpoint.url, tmp_path / "outbox", inbox)
    outbox.start()
    started.append(outbox)

    # When the notifier publishes an email with customer text beyond ASCII
    body = "Order o-1 from Zoë Ångström <zoe@example.com>\nNote: «ça marche» — 漢字 ✓\n"
    published = sns.publish(
        TopicArn=stack.ref("OrdersTopic"), Subject="New order o-1: 25.00 USD", Message=body
    )
    wait_until(lambda: len(inbox) == 1)

    # Then one .eml holds it, with the headers SNS's email has
    ((path, summary),) = inbox.emails
    assert path.parent == tmp_path / "outbox"
    assert path.suffix == ".eml"
    email = read_email(path)
    assert email["From"] == "Orderpipe orders <no-reply@sns.amazonaws.com>"
    assert email["To"] == SUPPORT_EMAIL
    assert email["Subject"] == "New order o-1: 25.00 USD"
    assert email["Date"].datetime is not None
    assert email["Message-ID"].startswith(f"<{published['MessageId']}.")
    assert email["MIME-Version"] == "1.0"
    assert email.get_content_type() == "text/plain"
    assert email.get_content_charset() == "utf-8"
    assert email.get_content() == body
    assert path.read_bytes().isascii()  # transfer-encoded: any mail client reads it
    assert SUPPORT_EMAIL in summary
    assert "New order o-1: 25.00 USD" in summary
    assert "\n" not in summary
    wait_until(outbox.drained)
    assert outbox.stats()["emails"] == 1


def test_outbox_names_sort_by_time_and_serve_each_email_subscription(
    endpoint: AwsEndpoint, tmp_path: Path, started: list[Any]
) -> None:
    stack = make_stack(endpoint)
    sns = sns_client(endpoint)
    topic = stack.ref("OrdersTopic")
    sns.subscribe(TopicArn=topic, Protocol="email-json", Endpoint="robot@example.com")
    inbox = Inbox()
    outbox = EmailOutbox(stack, endpoint.url, tmp_path, inbox)
    outbox.start()
    started.append(outbox)

    for n in range(3):
        sns.publish(TopicArn=topic, Subject=f"Digest {n}", Message=f"message {n}")
        wait_until(lambda n=n: len(inbox) == 2 * (n + 1))  # type: ignore[misc]

    paths = [path for path, _ in inbox.emails]
    assert len(set(paths)) == 6
    assert sorted(paths) == sorted(paths, key=lambda p: p.stat().st_mtime_ns)
    by_recipient: dict[str, list[EmailMessage]] = {}
    for path in sorted(paths):
        email = read_email(path)
        by_recipient.setdefault(str(email["To"]), []).append(email)
    assert [e["Subject"] for e in by_recipient[SUPPORT_EMAIL]] == ["Digest 0", "Digest 1", "Digest 2"]
    # (a text part ends with a newline)
    assert [e.get_content() for e in by_recipient[SUPPORT_EMAIL]] == [
        "message 0\n",
        "message 1\n",
        "message 2\n",
    ]
    notification = json.loads(by_recipient["robot@example.com"][0].get_content())
    assert notification["Message"] == "message 0"
    assert notification["TopicArn"] == topic
    assert not list(tmp_path.glob(".*.tmp"))


def test_outbox_follows_subscriptions_made_while_it_runs(
    endpoint: AwsEndpoint, tmp_path: Path, started: list[Any]
) -> None:
    # Given the alarm topic, which has no email subscription at first
    stack = make_stack(endpoint)
    sns = sns_client(endpoint)
    topic = stack.ref("AlarmTopic")
    inbox = Inbox()
    outbox = EmailOutbox(stack, endpoint.url, tmp_path, inbox)
    outbox.start()
    started.append(outbox)
    assert topic not in outbox._subscribed_topics

    # When someone subscribes an address (with the aws CLI, say) and an alarm goes off
    sns.subscribe(TopicArn=topic, Protocol="email", Endpoint="oncall@example.com")
    outbox.refresh_subscriptions()
    sns.publish(TopicArn=topic, Message="ALARM: OrdersDLQDepthAlarm")
    wait_until(lambda: len(inbox) == 1)

    # Then it is delivered, with SNS's default subject
    email = read_email(inbox.emails[0][0])
    assert email["To"] == "oncall@example.com"
    assert email["Subject"] == "AWS Notification Message"
    assert email["From"] == "Orderpipe alarms <no-reply@sns.amazonaws.com>"


def test_outbox_stop_delivers_what_was_published_last(endpoint: AwsEndpoint, tmp_path: Path) -> None:
    stack = make_stack(endpoint)
    sns = sns_client(endpoint)
    inbox = Inbox()
    outbox = EmailOutbox(stack, endpoint.url, tmp_path, inbox)
    outbox.start()

    sns.publish(TopicArn=stack.ref("OrdersTopic"), Subject="Last", Message="last one")
    outbox.stop()

    assert len(inbox) == 1


# --- the status line ---------------------------------------------------------------------------


def test_the_monitor_counts_stored_and_notified_orders_from_what_the_stream_source_reads(
    endpoint: AwsEndpoint,
) -> None:
    # Given the notifier's stream source running with a monitor watching it, and two orders
    # stored, one of them then marked NOTIFIED, one filtered out by the source (a MODIFY)
    stack = make_stack(endpoint)
    handler = RecordingHandler()
    source = stream_source(endpoint, stack, handler)
    monitor = PipelineMonitor(stack, endpoint.url, [source])
    source.start()
    try:
        assert source.drain(5)  # reading from the stream's end
        dynamodb = dynamodb_client(endpoint)
        table = stack.ref("OrdersTable")
        for order_id in ("order-1", "order-2"):
            dynamodb.put_item(TableName=table, Item={"orderId": {"S": order_id}, "status": {"S": "PLACED"}})
        dynamodb.update_item(
            TableName=table,
            Key={"orderId": {"S": "order-1"}},
            UpdateExpression="SET #s = :n",
            ExpressionAttributeNames={"#s": "status"},
            ExpressionAttributeValues={":n": {"S": "NOTIFIED"}},
        )
        sqs = sqs_client(endpoint)
        sqs.send_message(QueueUrl=stack.ref("OrdersQueue"), MessageBody="{}")
        sqs.send_message(QueueUrl=stack.ref("NotifierDLQ"), MessageBody="{}")
        assert source.drain(10)

        # When the monitor is asked
        status = monitor.status(accepted=2, emails=1)
    finally:
        source.stop()

    # Then it counts both orders and the notified one, the queued message and the dead letter,
    # in pipeline order; the function saw only the INSERTs
    assert [order_ids(batch) for batch in handler.batches] in (
        [["order-1", "order-2"]],
        [["order-1"], ["order-2"]],
    )
    assert (status.stored, status.notified, status.queued) == (2, 1, 1)
    assert status.dead_letters == {"OrdersDLQ": 0, "NotifierDLQ": 1}
    assert status.line() == (
        "accepted 2 | queued 1 | stored 2 | notified 1 | emails 1 | OrdersDLQ 0 | NotifierDLQ 1"
    )
