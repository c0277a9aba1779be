"""`orderpipe dlq`: what the dead-letter queues hold and why, and moving it back.

A dead-letter queue is any queue the template names as a `deadLetterTargetArn` (a queue's or
an SNS subscription's RedrivePolicy) or as an event source mapping's on-failure destination,
so a queue added to the template is listed without a change here.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

from botocore.exceptions import ClientError
from pydantic import ValidationError

from orderpipe.writer import QueuedOrder
from orderpipe_local.operate.stack import OperatedStack

# The function whose queue holds orders: its DLQ's messages are read as the writer reads them.
ORDER_WRITER_FUNCTION = "WriterFunction"
# The function whose stream mapping's failures `replay notifier` replays.
NOTIFIER_FUNCTION = "NotifierFunction"

PEEK_NOTE = (
    "peeked with a visibility timeout of 0, nothing deleted; a peek counts as a receive "
    "(ApproximateReceiveCount), so a queue that redrives elsewhere itself moves a message on "
    "after maxReceiveCount peeks and receives"
)
# Long enough to send and delete a batch of 10; an interrupted run's messages come back after it.
MOVE_VISIBILITY_SECONDS = 60
# What an endpoint without StartMessageMoveTask answers it: an SQS-compatible one these codes,
# moto 5.2.5 (which does not implement it) a bare HTTP 500.
_UNSUPPORTED_CODES = {
    "InvalidAction",
    "UnsupportedOperation",
    "AWS.SimpleQueueService.UnsupportedOperation",
    "NotImplemented",
}
_UNSUPPORTED_LOCALLY = {"500", "InternalFailure", "InternalError"}
_FINISHED_TASK = {"COMPLETED", "CANCELLED", "FAILED"}

Progress = Callable[[str], None]


class DlqError(RuntimeError):
    """The stack lacks what the command needs (a retry queue, a queue that redrives)."""


# --- discovery from the template ---------------------------------------------------------------


@dataclass(frozen=True)
class FailureSource:
    """What sends its failures to a DLQ: a queue's redrive, an SNS subscription's, a mapping's."""

    kind: str  # "queue" | "subscription" | "mapping"
    logical_id: str
    function: str | None = None  # the function consuming the queue, or the mapping's function
    max_receive_count: int | None = None


@dataclass(frozen=True)
class DeadLetterQueue:
    logical_id: str
    sources: tuple[FailureSource, ...]
    consumer: str | None = None  # the function that works it off (a retry queue's replay), if any

    @property
    def holds_orders(self) -> bool:
        return any(s.kind == "queue" and s.function == ORDER_WRITER_FUNCTION for s in self.sources)

    @property
    def redriven_from(self) -> list[str]:
        """The queues whose RedrivePolicy names this one."""
        return [s.logical_id for s in self.sources if s.kind == "queue"]

    def describe(self) -> str:
        parts = []
        for source in self.sources:
            match source.kind:
                case "queue":
                    after = f" after {source.max_receive_count} receives" if source.max_receive_count else ""
                    what = "orders" if source.function == ORDER_WRITER_FUNCTION else "messages"
                    parts.append(f"{what} of {source.logical_id}'s redrive{after}")
                case "subscription":
                    parts.append(f"undelivered emails of {source.logical_id}")
                case _:
                    parts.append(
                        f"failure records of {source.function or source.logical_id}'s mapping (on failure)"
                    )
        return "; ".join(parts)


def _referenced_id(value: Any, stack: OperatedStack | None = None) -> str | None:
    """The logical id an ARN property points at (`Fn::GetAtt: [Id, Arn]`, `Ref: Id`, or the ARN)."""
    if isinstance(value, dict) and len(value) == 1:
        ((key, argument),) = value.items()
        if key == "Fn::GetAtt":
            return str(argument[0] if isinstance(argument, list) else str(argument).split(".", 1)[0])
        if key == "Ref":
            return str(argument)
    if isinstance(value, str) and stack is not None and value.startswith("arn:aws:sqs:"):
        name = value.rsplit(":", 1)[-1]
        for logical_id, physical in stack.physical_ids.items():
            if physical.rstrip("/").rsplit("/", 1)[-1] == name:
                return logical_id
    return None


def _policy(value: Any) -> dict[str, Any]:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return {}
    return value if isinstance(value, dict) else {}


def _function_of(resources: Mapping[str, Mapping[str, Any]], value: Any) -> str | None:
    """The function a mapping's FunctionName names, through an alias (AutoPublishAlias)."""
    logical_id = _referenced_id(value)
    resource = resources.get(logical_id or "", {})
    if resource.get("Type") == "AWS::Lambda::Alias":
        return _referenced_id(resource.get("Properties", {}).get("FunctionName"))
    return logical_id


def dead_letter_queues(
    resources: Mapping[str, Mapping[str, Any]], stack: OperatedStack | None = None
) -> list[DeadLetterQueue]:
    """Every queue that receives another resource's failures, in template order."""
    consumers: dict[str, str] = {}
    sources: dict[str, list[FailureSource]] = {}
    mappings = [
        r.get("Properties", {})
        for r in resources.values()
        if r.get("Type") == "AWS::Lambda::EventSourceMapping"
    ]
    for properties in mappings:
        function = _function_of(resources, properties.get("FunctionName"))
        source = _referenced_id(properties.get("EventSourceArn"), stack)
        if source and function and resources.get(source, {}).get("Type") == "AWS::SQS::Queue":
            consumers[source] = function
    for logical_id, resource in resources.items():
        properties = resource.get("Properties", {})
        match resource.get("Type"):
            case "AWS::SQS::Queue" | "AWS::SNS::Subscription":
                redrive = _policy(properties.get("RedrivePolicy"))
                target = _referenced_id(redrive.get("deadLetterTargetArn"), stack)
                if target:
                    is_queue = resource["Type"] == "AWS::SQS::Queue"
                    count = redrive.get("maxReceiveCount")
                    sources.setdefault(target, []).append(
                        FailureSource(
                            "queue" if is_queue else "subscription",
                            logical_id,
                            consumers.get(logical_id) if is_queue else None,
                            int(count) if count is not None else None,
                        )
                    )
            case "AWS::Lambda::EventSourceMapping":
                destination = properties.get("DestinationConfig", {}).get("OnFailure", {}).get("Destination")
                target = _referenced_id(destination, stack)
                if target and resources.get(target, {}).get("Type") == "AWS::SQS::Queue":
                    function = _function_of(resources, properties.get("FunctionName"))
                    sources.setdefault(target, []).append(FailureSource("mapping", logical_id, function))
    return [
        DeadLetterQueue(lid, tuple(sources[lid]), consumers.get(lid)) for lid in resources if lid in sources
    ]


def orders_dlq(dlqs: list[DeadLetterQueue]) -> tuple[DeadLetterQueue, str]:
    """OrdersDLQ and the one queue that redrives into it."""
    for dlq in dlqs:
        if dlq.holds_orders:
            (origin,) = dlq.redriven_from
            return dlq, origin
    raise DlqError(f"no dead-letter queue of a queue {ORDER_WRITER_FUNCTION} consumes")


def notifier_replay_queues(stack: OperatedStack) -> tuple[str, str]:
    """(final DLQ, retry queue that redrives into it) of the notifier's stream mapping.

    The chain starts at the mapping's on-failure destination and follows each queue's redrive
    to its end: today NotifierDLQ alone; with a retry queue, NotifierRetryQueue -> NotifierDLQ.
    """
    dlqs = {dlq.logical_id: dlq for dlq in dead_letter_queues(stack.resources, stack)}
    destinations = [
        dlq.logical_id
        for dlq in dlqs.values()
        for source in dlq.sources
        if source.kind == "mapping" and source.function == NOTIFIER_FUNCTION
    ]
    if not destinations:
        raise DlqError(f"{stack.where}: {NOTIFIER_FUNCTION}'s stream mapping has no on-failure queue")
    chain = [destinations[0]]
    while True:
        redrive = _policy(stack.resources[chain[-1]].get("Properties", {}).get("RedrivePolicy"))
        target = _referenced_id(redrive.get("deadLetterTargetArn"), stack)
        if not target or target in chain:
            break
        chain.append(target)
    if len(chain) < 2:
        raise DlqError(
            f"{stack.where} has no retry queue: {chain[0]} is {NOTIFIER_FUNCTION}'s on-failure "
            "destination itself and no queue redrives into it, so there is no replay to run its "
            "failure records through"
        )
    return chain[-1], chain[-2]


# --- why each message failed ------------------------------------------------------------------


@dataclass(frozen=True)
class FailedMessage:
    message_id: str
    sent_at: datetime | None
    receive_count: int
    reason: str
    order_id: str | None = None


def _timestamp(attributes: Mapping[str, str], name: str) -> datetime | None:
    try:
        return datetime.fromtimestamp(int(attributes[name]) / 1000, UTC)
    except (KeyError, ValueError):
        return None


def order_reason(message: Mapping[str, Any]) -> tuple[str, str | None]:
    """What the writer says of an OrdersQueue message: its model, QueuedOrder, parses the record."""
    attributes = dict(message.get("Attributes", {}))
    now_ms = str(int(time.time() * 1000))
    for name in ("ApproximateReceiveCount", "SentTimestamp", "ApproximateFirstReceiveTimestamp"):
        attributes.setdefault(name, "1" if name == "ApproximateReceiveCount" else now_ms)
    attributes.setdefault("SenderId", "unknown")
    record = {
        "messageId": message.get("MessageId", ""),
        "receiptHandle": message.get("ReceiptHandle", ""),
        "body": message.get("Body", ""),
        "attributes": attributes,
        "messageAttributes": {},
        "md5OfBody": message.get("MD5OfBody", ""),
        "eventSource": "aws:sqs",
        "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:OrdersQueue",
        "awsRegion": "us-east-1",
    }
    try:
        queued = QueuedOrder.model_validate(record)
    except ValidationError as error:
        problems = []
        for problem in error.errors():
            location = [str(part) for part in problem["loc"]]
            if location[:1] == ["body"]:
                location = location[1:]
            if location[:1] == [
                "json-or-python[json=function-after[Order()],python=function-after[Order()]]"
            ]:
                location = location[1:]
            path = ".".join(part for part in location if not part.startswith(("function-", "json-or-python")))
            problems.append(f"{path}: {problem['msg']}" if path else problem["msg"])
        return "does not parse: " + "; ".join(problems), _body_order_id(message.get("Body", ""))
    return "a valid order: its storage failed; redrive it", queued.body.order_id


def _body_order_id(body: str) -> str | None:
    try:
        value = json.loads(body)
    except ValueError:
        return None
    order_id = value.get("orderId") if isinstance(value, dict) else None
    return order_id if isinstance(order_id, str) else None


def stream_failure_reason(record: Mapping[str, Any]) -> str:
    """Lambda's on-failure record of a stream batch: why it was given up, and which records."""
    request = record.get("requestContext", {})
    response = record.get("responseContext", {})
    batch = record.get("DDBStreamBatchInfo", {})
    condition = request.get("condition", "unknown condition")
    error = response.get("functionError")
    invokes = request.get("approximateInvokeCount")
    size = batch.get("batchSize", "?")
    return (
        f"stream batch given up ({condition}"
        + (f", function error {error}" if error else "")
        + (f", {invokes} invocations" if invokes else "")
        + f"): {size} record{'' if size == 1 else 's'} of shard {batch.get('shardId', '?')}, "
        f"sequence numbers {batch.get('startSequenceNumber', '?')} to {batch.get('endSequenceNumber', '?')}"
    )


def sns_failure_reason(message: Mapping[str, Any]) -> str:
    """An undelivered SNS notification: the subject and topic of the body, and the attributes SNS set."""
    body: Any
    try:
        body = json.loads(message.get("Body", ""))
    except ValueError:
        body = None
    attributes = {
        name: value.get("StringValue", "")
        for name, value in message.get("MessageAttributes", {}).items()
        if isinstance(value, dict)
    }
    what = "undelivered notification"
    if isinstance(body, dict):
        topic = str(body.get("TopicArn", "")).rsplit(":", 1)[-1]
        subject = body.get("Subject")
        what += f" of {topic or 'a topic'}" + (f" ({subject!r})" if subject else "")
    given = ", ".join(f"{name}={value}" for name, value in sorted(attributes.items()))
    return f"{what}: {given}" if given else f"{what}: SNS set no message attributes"


# The replay's own messages (orderpipe.aws.notifier_retry_queue), and what each one means.
_REPLAY_WORK = {
    "UnmarkedOrders": "emailed, still to be marked NOTIFIED (the replay could not)",
    "PendingOrders": "of a failed batch partly mailed, still to be announced",
}


def failed_message(message: Mapping[str, Any], dlq: DeadLetterQueue) -> FailedMessage:
    attributes = message.get("Attributes", {})
    body: Any
    try:
        body = json.loads(message.get("Body", ""))
    except ValueError:
        body = None
    order_id = None
    if isinstance(body, dict) and "DDBStreamBatchInfo" in body:
        reason = stream_failure_reason(body)
    elif isinstance(body, dict) and body.get("kind") in _REPLAY_WORK:
        ids = [str(order_id) for order_id in body.get("orderIds", [])]
        reason = f"{_REPLAY_WORK[body['kind']]}: {len(ids)} order(s) {', '.join(ids[:5])}" + (
            ", ..." if len(ids) > 5 else ""
        )
    elif (isinstance(body, dict) and body.get("Type") == "Notification") or (
        any(s.kind == "subscription" for s in dlq.sources) and not dlq.holds_orders
    ):
        reason = sns_failure_reason(message)
    elif dlq.holds_orders:
        reason, order_id = order_reason(message)
    else:
        origin = ", ".join(dlq.redriven_from) or "the stack"
        reason = f"a message of {origin}: {str(message.get('Body', ''))[:120]}"
    return FailedMessage(
        message_id=str(message.get("MessageId", "")),
        sent_at=_timestamp(attributes, "SentTimestamp"),
        receive_count=int(attributes.get("ApproximateReceiveCount", 0)),
        reason=reason,
        order_id=order_id,
    )


# --- list -------------------------------------------------------------------------------------


@dataclass
class QueueDepth:
    visible: int
    in_flight: int
    delayed: int

    @property
    def total(self) -> int:
        return self.visible + self.in_flight + self.delayed


def queue_depth(sqs: Any, url: str) -> QueueDepth:
    attributes = sqs.get_queue_attributes(
        QueueUrl=url,
        AttributeNames=[
            "ApproximateNumberOfMessages",
            "ApproximateNumberOfMessagesNotVisible",
            "ApproximateNumberOfMessagesDelayed",
        ],
    )["Attributes"]
    return QueueDepth(
        int(attributes.get("ApproximateNumberOfMessages", 0)),
        int(attributes.get("ApproximateNumberOfMessagesNotVisible", 0)),
        int(attributes.get("ApproximateNumberOfMessagesDelayed", 0)),
    )


@dataclass
class DlqReport:
    dlq: DeadLetterQueue
    name: str
    depth: QueueDepth
    peeked: list[FailedMessage] = field(default_factory=list)
    # A DLQ that redrives elsewhere itself (a retry queue) is not peeked: each receive counts.
    redrives_after: int | None = None

    def oldest_age(self, now: datetime) -> float | None:
        sent = [m.sent_at for m in self.peeked if m.sent_at is not None]
        return (now - min(sent)).total_seconds() if sent else None


def peek(sqs: Any, url: str, count: int) -> list[dict[str, Any]]:
    """Up to `count` (at most 10) messages, left in the queue and visible to everyone else."""
    response = sqs.receive_message(
        QueueUrl=url,
        MaxNumberOfMessages=max(1, min(count, 10)),
        VisibilityTimeout=0,
        WaitTimeSeconds=1,  # on AWS, asks every server of the queue, not a sample
        AttributeNames=["All"],
        MessageAttributeNames=["All"],
    )
    messages: list[dict[str, Any]] = response.get("Messages", [])
    return messages


def list_dlqs(stack: OperatedStack, peek_count: int = 10) -> list[DlqReport]:
    sqs = stack.client("sqs")
    reports = []
    for dlq in dead_letter_queues(stack.resources, stack):
        url = stack.physical_id(dlq.logical_id)
        depth = queue_depth(sqs, url)
        report = DlqReport(dlq, url.rstrip("/").rsplit("/", 1)[-1], depth)
        redrive = _policy(stack.resources[dlq.logical_id].get("Properties", {}).get("RedrivePolicy"))
        if redrive.get("deadLetterTargetArn"):
            report.redrives_after = int(redrive.get("maxReceiveCount", 0))
        elif depth.visible and peek_count > 0:
            report.peeked = [failed_message(m, dlq) for m in peek(sqs, url, peek_count)]
        reports.append(report)
    return reports


def format_age(seconds: float) -> str:
    seconds = max(0, int(seconds))
    for unit, size, smaller, small_size in (
        ("d", 86400, "h", 3600),
        ("h", 3600, "min", 60),
        ("min", 60, "s", 1),
    ):
        if seconds >= size:
            rest = (seconds % size) // small_size
            return f"{seconds // size} {unit}" + (f" {rest} {smaller}" if rest else "")
    return f"{seconds} s"


def format_reports(reports: list[DlqReport], now: datetime | None = None) -> list[str]:
    now = now or datetime.now(UTC)
    lines = []
    for report in reports:
        depth = report.depth
        count = f"{depth.visible} message{'s' if depth.visible != 1 else ''}"
        if depth.in_flight:
            count += f" (+{depth.in_flight} in flight)"
        age = report.oldest_age(now)
        oldest = ""
        if age is not None:
            qualifier = "" if len(report.peeked) >= depth.visible else " of those peeked"
            oldest = f", oldest {format_age(age)}{qualifier}"
        state = f"{count}{oldest}" if depth.total else "empty"
        lines.append(f"{report.dlq.logical_id} ({report.name}): {state}")
        lines.append(f"  holds {report.dlq.describe()}")
        if report.redrives_after is not None and depth.visible:
            lines.append(
                f"  not peeked: it redrives after {report.redrives_after} receives itself, and a peek is one"
            )
        for message in report.peeked:
            age_text = (
                f", {format_age((now - message.sent_at).total_seconds())} old" if message.sent_at else ""
            )
            order = f" order {message.order_id}:" if message.order_id else ""
            received = f"received {message.receive_count}x{age_text}"
            lines.append(f"  {message.message_id}  {received}:{order} {message.reason}")
    if any(report.peeked for report in reports):
        lines.append(PEEK_NOTE)
    return lines


# --- moving messages back ---------------------------------------------------------------------


@dataclass
class MoveResult:
    source: str
    destination: str
    method: str
    moved: int = 0
    finished_from_earlier_run: int = 0
    order_ids: list[str] = field(default_factory=list)
    interrupted: bool = False
    left: int = 0

    def summary(self) -> str:
        messages = f"{self.moved} message{'s' if self.moved != 1 else ''}"
        text = f"moved {messages} from {self.source} to {self.destination} ({self.method})"
        if self.finished_from_earlier_run:
            text += f"; {self.finished_from_earlier_run} of them sent by an interrupted run, deleted now"
        if self.interrupted:
            text += f"; interrupted, {self.left} left: run it again"
        elif self.left:
            text += f"; {self.left} still in {self.source}"
        return text


class MoveJournal:
    """The DLQ message ids already sent to the destination, so a re-run after a kill deletes
    them instead of sending them a second time. One id per line, flushed to disk before the
    delete."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sent: set[str] = set()
        if path.exists():
            self.sent = {line.strip() for line in path.read_text().splitlines() if line.strip()}

    def record(self, message_id: str) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as journal:
            journal.write(message_id + "\n")
            journal.flush()
            os.fsync(journal.fileno())
        self.sent.add(message_id)

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


class DeferredSignals:
    """SIGINT and SIGTERM are held while a message is in hand; the move stops after it."""

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def _hold(self, signum: int, frame: FrameType | None) -> None:
        self.received = signum

    @contextmanager
    def installed(self) -> Iterator[DeferredSignals]:
        for signum in (signal.SIGINT, signal.SIGTERM):
            self._previous[int(signum)] = signal.signal(signum, self._hold)
        try:
            yield self
        finally:
            for held, handler in self._previous.items():
                signal.signal(held, handler)


def _sendable_attributes(attributes: Mapping[str, Any]) -> dict[str, Any]:
    kept: dict[str, Any] = {}
    for name, value in attributes.items():
        entry = {"DataType": value["DataType"]}
        for key in ("StringValue", "BinaryValue"):
            if key in value:
                entry[key] = value[key]
        kept[name] = entry
    return kept


def _queue_arn(sqs: Any, url: str) -> str:
    return str(sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"])


def move_messages(
    stack: OperatedStack,
    source_id: str,
    destination_id: str,
    *,
    progress: Progress = print,
    timeout: float = 300.0,
    visibility_timeout: int = MOVE_VISIBILITY_SECONDS,
    sqs: Any = None,
) -> MoveResult:
    """Move every message of a DLQ to another queue: StartMessageMoveTask where SQS has it, else
    receive, send (message attributes kept), delete, with a journal against doubles."""
    sqs = sqs or stack.client("sqs")
    source_url, destination_url = stack.physical_id(source_id), stack.physical_id(destination_id)
    source_arn, destination_arn = _queue_arn(sqs, source_url), _queue_arn(sqs, destination_url)
    unsupported = _UNSUPPORTED_CODES | (_UNSUPPORTED_LOCALLY if stack.local else set())
    try:
        # Locally one attempt: moto answers 500, which botocore would retry four times.
        handle = stack.client("sqs", attempts=1 if stack.local else 3).start_message_move_task(
            SourceArn=source_arn, DestinationArn=destination_arn
        )["TaskHandle"]
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") not in unsupported:
            raise
    else:
        return _watch_move_task(sqs, source_id, destination_id, source_arn, handle, progress, timeout)
    journal = MoveJournal(stack.journal_dir() / f"{source_url.rstrip('/').rsplit('/', 1)[-1]}.sent")
    result = MoveResult(source_id, destination_id, "receive, send, delete")
    deadline = time.monotonic() + timeout
    announced_in_flight = False
    # What is there now, as StartMessageMoveTask moves it: a message that fails again and comes
    # back meanwhile waits for the next move instead of going round for ever.
    to_move = queue_depth(sqs, source_url).total
    with DeferredSignals().installed() as signals:
        while signals.received is None and result.moved < to_move and time.monotonic() < deadline:
            messages = sqs.receive_message(
                QueueUrl=source_url,
                MaxNumberOfMessages=10,
                VisibilityTimeout=visibility_timeout,
                WaitTimeSeconds=1,
                AttributeNames=["All"],
                MessageAttributeNames=["All"],
            ).get("Messages", [])
            if not messages:
                depth = queue_depth(sqs, source_url)
                if depth.total == 0:
                    break
                if depth.in_flight and not announced_in_flight:
                    # Received by a run that was killed: they come back after its visibility timeout.
                    progress(
                        f"waiting for {depth.in_flight} message(s) in flight in {source_id} to come back"
                    )
                    announced_in_flight = True
                time.sleep(1.0)
                continue
            for index, message in enumerate(messages):
                if signals.received is not None or result.moved >= to_move:
                    _release(sqs, source_url, messages[index:])
                    break
                _move_one(sqs, message, destination_url, source_url, journal, result)
    result.interrupted = signals.received is not None
    result.left = queue_depth(sqs, source_url).total
    if result.left == 0:
        journal.remove()
    return result


def _move_one(
    sqs: Any,
    message: dict[str, Any],
    destination_url: str,
    source_url: str,
    journal: MoveJournal,
    result: MoveResult,
) -> None:
    message_id = message["MessageId"]
    if message_id in journal.sent:
        result.finished_from_earlier_run += 1
    else:
        request: dict[str, Any] = {"QueueUrl": destination_url, "MessageBody": message["Body"]}
        if message.get("MessageAttributes"):
            request["MessageAttributes"] = _sendable_attributes(message["MessageAttributes"])
        sqs.send_message(**request)
        # A kill between the send and this line is the one window left for a double.
        journal.record(message_id)
    sqs.delete_message(QueueUrl=source_url, ReceiptHandle=message["ReceiptHandle"])
    result.moved += 1
    if order_id := _body_order_id(message["Body"]):
        result.order_ids.append(order_id)


def _release(sqs: Any, url: str, messages: list[dict[str, Any]]) -> None:
    """Make messages received but not moved visible again at once."""
    if messages:
        sqs.change_message_visibility_batch(
            QueueUrl=url,
            Entries=[
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"], "VisibilityTimeout": 0}
                for i, m in enumerate(messages)
            ],
        )


def _watch_move_task(
    sqs: Any,
    source_id: str,
    destination_id: str,
    source_arn: str,
    handle: str,
    progress: Progress,
    timeout: float,
) -> MoveResult:
    result = MoveResult(source_id, destination_id, "StartMessageMoveTask")
    deadline = time.monotonic() + timeout
    task: dict[str, Any] = {}
    try:
        while time.monotonic() < deadline:
            tasks = sqs.list_message_move_tasks(SourceArn=source_arn, MaxResults=1).get("Results", [])
            task = tasks[0] if tasks else {}
            moved, to_move = (
                task.get("ApproximateNumberOfMessagesMoved", 0),
                task.get("ApproximateNumberOfMessagesToMove"),
            )
            total = "?" if to_move is None else to_move
            progress(f"  {task.get('Status', 'unknown')}: {moved} of {total} moved")
            if task.get("Status") in _FINISHED_TASK:
                break
            time.sleep(2.0)
    except KeyboardInterrupt:
        result.interrupted = True
    result.moved = int(task.get("ApproximateNumberOfMessagesMoved", 0))
    if task.get("Status") != "COMPLETED":
        result.interrupted = True
        reason = task.get("FailureReason")
        progress(
            f"  the task goes on in SQS (stop it: aws sqs cancel-message-move-task --task-handle {handle})"
            if task.get("Status") == "RUNNING"
            else f"  task {task.get('Status', 'unknown')}" + (f": {reason}" if reason else "")
        )
    return result


# --- the commands -----------------------------------------------------------------------------


def redrive_orders(stack: OperatedStack, *, progress: Progress = print, timeout: float = 300.0) -> MoveResult:
    dlq, origin = orders_dlq(dead_letter_queues(stack.resources, stack))
    return move_messages(stack, dlq.logical_id, origin, progress=progress, timeout=timeout)


@dataclass
class ReplayResult:
    move: MoveResult
    retry_queue: str
    waited: float
    still_in_retry_queue: int
    back_in_dlq: int

    @property
    def replayed(self) -> int:
        return max(0, self.move.moved - self.still_in_retry_queue - self.back_in_dlq)


def replay_notifier(
    stack: OperatedStack, *, progress: Progress = print, timeout: float = 300.0, interval: float = 1.0
) -> ReplayResult:
    """NotifierDLQ's failure records back through the retry queue, and what became of them."""
    final_dlq, retry_queue = notifier_replay_queues(stack)
    sqs = stack.client("sqs")
    started = time.monotonic()
    move = move_messages(stack, final_dlq, retry_queue, progress=progress, timeout=timeout, sqs=sqs)
    progress(move.summary())
    retry_url, final_url = stack.physical_id(retry_queue), stack.physical_id(final_dlq)
    remaining = queue_depth(sqs, retry_url).total
    while remaining and time.monotonic() - started < timeout:
        time.sleep(interval)
        remaining = queue_depth(sqs, retry_url).total
    return ReplayResult(
        move=move,
        retry_queue=retry_queue,
        waited=time.monotonic() - started,
        still_in_retry_queue=remaining,
        back_in_dlq=queue_depth(sqs, final_url).total if move.moved else 0,
    )
