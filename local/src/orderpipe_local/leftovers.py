"""What a stop leaves unfinished, kept in a file instead of going down with moto's memory.

When `orderpipe local` stops, every queue's messages (OrdersQueue's orders not stored yet, the
DLQs' dead letters) and every streamed table's items not yet announced (orders stored but not
NOTIFIED) would vanish with the endpoint. They are written to `.orderpipe/left-over/<time>.json`
first, and `orderpipe requeue FILE` puts them back into a running pipeline: each message onto
its queue, each item into its table (whose stream then announces it). A put back that is cut
short can be run again: the file keeps only what is still to put back, and an item goes back
only where the table does not hold it already.
"""

from __future__ import annotations

import contextlib
import email
import email.policy
import json
import re
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orderpipe.models import OrderStatus
from orderpipe_local.moto.journal import read_journal
from orderpipe_local.sources.polling import aws_client
from orderpipe_local.stack.provision import Stack

LEFTOVER_DIR = "left-over"
# An order id as the support emails show it: every id in the outbox is a mailed order's.
_ORDER_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_RECEIVE_LIMIT = 10
_HIDDEN_WHILE_COLLECTED = 600  # seconds: each message is received once while the queue is read


@dataclass
class Leftovers:
    # By queue (logical id): {"body": ..., "attributes": {...}} as SendMessage takes them.
    messages: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    # By table (logical id): items in DynamoDB's JSON, stored but not announced.
    items: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return any(self.messages.values()) or any(self.items.values())

    def summary(self) -> str:
        """One clause a queue or table, e.g. '3 messages in OrdersQueue, 1 in OrdersDLQ'."""
        parts = [f"{len(kept)} in {queue}" for queue, kept in self.messages.items() if kept]
        parts += [
            f"{len(kept)} stored in {table} but not announced" for table, kept in self.items.items() if kept
        ]
        return ", ".join(parts)

    def write(self, directory: Path) -> Path:
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / time.strftime("%Y%m%dT%H%M%S.json")
        for attempt in range(1, 100):
            if not path.exists():
                break
            path = directory / time.strftime(f"%Y%m%dT%H%M%S-{attempt}.json")
        _write_atomically(path, self)
        return path

    @classmethod
    def read(cls, path: Path) -> Leftovers:
        """Raises ValueError for a file that is not one of ours."""
        try:
            content = json.loads(path.read_text())
            return cls(messages=dict(content["messages"]), items=dict(content["items"]))
        except (KeyError, TypeError, json.JSONDecodeError) as error:
            raise ValueError(f"{path} is not a left-over file of orderpipe local: {error}") from error


def collect(stack: Stack, outbox_dir: Path) -> Leftovers:
    """Every message of the stack's queues (received, not deleted: the endpoint is about to go)
    and every item of its streamed tables that is not NOTIFIED, except the orders the outbox
    holds an email for (mailed, then not marked: put back, they would be mailed again), and
    except the replay's work (`is_replay_work`). Call it once nothing polls."""
    sqs, dynamodb = _clients(stack)
    mailed = mailed_order_ids(outbox_dir)
    leftovers = Leftovers()
    for logical_id, resource in stack.resources.items():
        if resource.type == "AWS::SQS::Queue":
            if messages := [m for m in _read_queue(sqs, resource.ref) if not is_replay_work(m["body"])]:
                leftovers.messages[logical_id] = messages
        elif (
            resource.type == "AWS::DynamoDB::Table"
            and "StreamArn" in resource.attributes
            and (items := _unannounced(dynamodb, resource.ref, mailed))
        ):
            leftovers.items[logical_id] = items
    return leftovers


def from_journal(journal: Path, stack: Stack, outbox_dir: Path) -> Leftovers:
    """What the endpoint's journal (`moto.journal`) says was accepted and is not finished: every
    message sent to one of the stack's queues, except those of orders the outbox holds an
    email for. For when moto is gone and cannot be asked (it crashed, or the pipeline did)."""
    queues = {
        resource.attributes.get("QueueName", resource.ref.rpartition("/")[2]): logical_id
        for logical_id, resource in stack.resources.items()
        if resource.type == "AWS::SQS::Queue"
    }
    mailed = mailed_order_ids(outbox_dir)
    leftovers = Leftovers()
    for entry in read_journal(journal):
        queue = queues.get(entry.get("queue", ""))
        order_id = entry.get("attributes", {}).get("orderId", {}).get("StringValue")
        if queue is None or (order_id is not None and order_id in mailed) or is_replay_work(entry["body"]):
            continue
        leftovers.messages.setdefault(queue, []).append(
            {"body": entry["body"], "attributes": entry.get("attributes", {})}
        )
    return leftovers


def is_replay_work(body: str) -> bool:
    """A stream batch's failure record, or orders handed over to be marked or announced
    (NotifierRetryQueue's and NotifierDLQ's messages): not kept. They point into the stream and
    the table, which go with the endpoint; the orders they name are kept as items if not
    announced (a next run's stream announces them), and were mailed if handed over to be marked."""
    try:
        message = json.loads(body)
    except ValueError:
        return False
    return isinstance(message, dict) and (
        "DDBStreamBatchInfo" in message or message.get("kind") in ("UnmarkedOrders", "PendingOrders")
    )


def mailed_order_ids(outbox_dir: Path) -> set[str]:
    """The order ids in the outbox's emails (their text, whatever its transfer encoding)."""
    return set(mailed_order_counts(outbox_dir))


def mailed_order_counts(outbox_dir: Path) -> Counter[str]:
    """How many of the outbox's emails name each order id."""
    counts: Counter[str] = Counter()
    for path in outbox_dir.glob("*.eml") if outbox_dir.is_dir() else []:
        message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        named: set[str] = set()
        for part in message.walk():
            if part.get_content_maintype() == "text":
                named.update(_ORDER_ID.findall(part.get_content()))
        counts.update(named)
    return counts


def put_back(
    leftovers: Leftovers, stack: Stack, path: Path, progress: Callable[[str], None] = print
) -> Leftovers:
    """Send each message to its queue and put each item into its table, rewriting `path` as
    each batch lands (so that a put back cut short resumes where it stopped); the file is
    removed once everything is back. What was put back is returned."""
    sqs, dynamodb = _clients(stack)
    done = Leftovers()
    for queue in list(leftovers.messages):
        queue_url = stack.ref(queue)
        messages = leftovers.messages[queue]
        while messages:
            batch = messages[:_RECEIVE_LIMIT]
            entries = [
                {"Id": str(index), "MessageBody": message["body"]}
                | ({"MessageAttributes": message["attributes"]} if message.get("attributes") else {})
                for index, message in enumerate(batch)
            ]
            answer = sqs.send_message_batch(QueueUrl=queue_url, Entries=entries)
            if answer.get("Failed"):
                raise RuntimeError(f"{queue} refused messages: {answer['Failed']}")
            del messages[: len(batch)]
            done.messages.setdefault(queue, []).extend(batch)
            _write_atomically(path, leftovers)
        progress(f"{len(done.messages.get(queue, []))} messages back in {queue}")
    for table in list(leftovers.items):
        table_name = stack.ref(table)
        key = [
            element["AttributeName"]
            for element in dynamodb.describe_table(TableName=table_name)["Table"]["KeySchema"]
        ]
        items = leftovers.items[table]
        while items:
            item = items[0]
            # Not over an item already there (a put back run twice): it is announced from there.
            with contextlib.suppress(dynamodb.exceptions.ConditionalCheckFailedException):
                dynamodb.put_item(
                    TableName=table_name,
                    Item=item,
                    ConditionExpression=" AND ".join(f"attribute_not_exists(#k{i})" for i in range(len(key))),
                    ExpressionAttributeNames={f"#k{i}": name for i, name in enumerate(key)},
                )
            items.pop(0)
            done.items.setdefault(table, []).append(item)
            _write_atomically(path, leftovers)
        progress(f"{len(done.items.get(table, []))} items back in {table} (its stream announces them)")
    path.unlink(missing_ok=True)
    return done


def left_over_files(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.json")) if directory.is_dir() else []


def _clients(stack: Stack) -> tuple[Any, Any]:
    if stack.endpoint_url is None:
        raise ValueError("the stack has no endpoint to reach")
    region = stack.template.region
    return aws_client("sqs", stack.endpoint_url, region), aws_client("dynamodb", stack.endpoint_url, region)


def _read_queue(sqs: Any, queue_url: str) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    while True:
        received = sqs.receive_message(
            QueueUrl=queue_url,
            MaxNumberOfMessages=_RECEIVE_LIMIT,
            WaitTimeSeconds=0,
            VisibilityTimeout=_HIDDEN_WHILE_COLLECTED,
            MessageAttributeNames=["All"],
        ).get("Messages", [])
        if not received:
            return messages
        for message in received:
            attributes = {
                name: {
                    key: value
                    for key, value in attribute.items()
                    if key != "StringListValues" and key != "BinaryListValues"
                }
                for name, attribute in message.get("MessageAttributes", {}).items()
            }
            messages.append({"body": message["Body"], "attributes": attributes})


def _unannounced(dynamodb: Any, table_name: str, mailed: set[str]) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    request: dict[str, Any] = {
        "TableName": table_name,
        "FilterExpression": "#status <> :notified",
        "ExpressionAttributeNames": {"#status": "status"},
        "ExpressionAttributeValues": {":notified": {"S": OrderStatus.NOTIFIED.value}},
    }
    while True:
        page = dynamodb.scan(**request)
        items += [item for item in page.get("Items", []) if item.get("orderId", {}).get("S") not in mailed]
        if "LastEvaluatedKey" not in page:
            return items
        request["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def _write_atomically(path: Path, leftovers: Leftovers) -> None:
    temporary = path.with_suffix(".tmp")
    temporary.write_text(
        json.dumps({"messages": leftovers.messages, "items": leftovers.items}, indent=1) + "\n"
    )
    temporary.replace(path)
