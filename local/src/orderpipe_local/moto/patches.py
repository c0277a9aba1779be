"""Fixes to moto's SQS for the local endpoint: no lost messages under concurrent requests, and speed.

Apply once in the process that runs moto's server, before it serves (`apply_moto_patches()`).

1. moto's `Queue.delete_message` rebuilds the queue's message list without a lock. Two deletes
   at once undo each other (the "deleted" message comes back after its visibility timeout),
   and a SendMessage landing meanwhile is lost although it was answered 200: measured, 38 of
   1,000 sends made while eight threads deleted. Receives, deletes and visibility changes
   here take the queue's own lock, the one moto's SendMessage already takes (its long poll
   releases it while it waits). Concurrent receives then no longer hand out the same message
   twice either.
2. Every received message re-read all the queue's attributes (a retention check), each
   counting the queue's messages three times: receiving ten messages cost 90 scans of the
   queue, in-flight messages included (0.09 s at 100 messages, 0.8 s at 1,000). It now reads
   the retention period alone.
3. SendMessage read the queue's attributes to learn whether it dedupes by content, and reading
   them counts the queue's messages three times: each send cost O(queue depth), so a backlog
   slowed the very sends that feed it. That one attribute is now read alone.
4. moto's clock builds datetimes to read the time, and the SQS model reads it for every
   message on every scan; it now reads `time.time()`.
5. moto's TransactWriteItems deep-copies the whole table once per item of the transaction (a
   100-update transaction on a 2,000-order table took 10.7 s) and, when the transaction is
   cancelled, puts the copies back in place of the tables: writes other clients made
   meanwhile are lost, and the table's stream becomes a new object, so every shard iterator
   already handed out reads the old one forever (a stream consumer stalls) after seeing the
   cancelled transaction's writes. It now checks every condition first and writes only if all
   hold, as DynamoDB does, with no copies. Its updates of the form `SET a = :x, #b = :y` are
   applied directly: moto parsed and validated each afresh, 1.15 ms of CPU an item.
6. Two writes at once could give two stream records the same sequence number; appending to
   a table's stream takes a lock.
7. The server looked up which service a request is for by listing moto's package folder on
   disk (some 200 `stat` calls, 1.6 ms), and listed the handler's methods, on every request;
   both lists are now made once.
8. moto 5.2 answers GetRecords through its generic shape-walking serializer, about 3 ms per
   stream record (a 100-record batch took 0.3 s of moto's CPU, every poll of every reader).
   The records are already in their JSON wire form, so they are dumped as JSON directly, as
   moto did before.
9. A queue's backlog slowed every ReceiveMessage and DeleteMessage: a receive listed all the
   visible messages to take the first ten, and a delete scanned every message for the receipt
   handle, twice, then rebuilt the list. Receiving ten and deleting them cost 2.8 ms of moto's
   CPU on an empty queue and 27.2 ms behind 10,000 messages (`bench/sqs_depth.py`). A receive
   now reads the messages in order until it has enough, and a delete finds its message by
   receipt handle and removes it from the list's head, where received messages are: 2.2 ms
   behind 10,000.
10. Building an item checked its size limit after each attribute by summing the sizes of all
   the attributes added before: O(n^2) in the attributes. The same sum is taken once: an
   order's PutItem went from 1.08 to 0.99 ms of moto's CPU.

None of this changes what a client sees, only that it stays true under load.
"""

from __future__ import annotations

import base64
import copy
import functools
import json
import math
import re
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

_applied = False
_apply_lock = threading.Lock()


def apply_moto_patches() -> None:
    """Patch moto's SQS model in this process (idempotent)."""
    global _applied
    with _apply_lock:
        if _applied:
            return
        _patch_server()
        _patch_sqs()
        _patch_dynamodb()
        _applied = True


def _patch_server() -> None:
    from moto import backends

    modules = tuple(backends.list_of_moto_modules())
    backends.list_of_moto_modules = lambda: modules

    from moto.core import responses

    # Every request listed its handler class's methods (inspect.getmembers) to find the action.
    responses.method_names_from_class = functools.cache(responses.method_names_from_class)  # type: ignore[attr-defined]


def _patch_sqs() -> None:
    from moto.core import utils as moto_utils
    from moto.sqs import models as sqs_models

    original_unix_time = moto_utils.unix_time

    def unix_time(dt: datetime | None = None) -> float:
        return time.time() if dt is None else original_unix_time(dt)

    def unix_time_millis(dt: datetime | None = None) -> float:
        return unix_time(dt) * 1000.0

    setattr(sqs_models, "unix_time", unix_time)  # noqa: B010 - the model imported them by name
    setattr(sqs_models, "unix_time_millis", unix_time_millis)  # noqa: B010
    # Queue.attributes turns the same dozen attribute names into snake case on every call.
    to_snake_case = functools.cache(getattr(sqs_models, "camelcase_to_underscores"))  # noqa: B009
    setattr(sqs_models, "camelcase_to_underscores", to_snake_case)  # noqa: B010

    def is_message_valid_based_on_retention_period(self: Any, queue_name: str, message: Any) -> bool:
        queue = self.get_queue(queue_name)
        retain_until = int(queue.message_retention_period) + message.sent_timestamp / 1000
        return bool(retain_until > time.time())

    backend = sqs_models.SQSBackend
    backend.is_message_valid_based_on_retention_period = is_message_valid_based_on_retention_period  # type: ignore[method-assign]

    queue_class = sqs_models.Queue
    queue_class.messages = property(_VisibleMessages)  # type: ignore[assignment,method-assign]
    moto_delete = queue_class.delete_message
    moto_mark_received = sqs_models.Message.mark_received

    def mark_received(message: Any, visibility_timeout: int | None = None) -> None:
        moto_mark_received(message, visibility_timeout)
        _received[message.receipt_handle] = message

    def delete_message(queue: Any, receipt_handle: str) -> None:
        message = _received.get(receipt_handle)
        if receipt_handle in queue.deleted_messages or message is None or message not in queue._messages:
            moto_delete(queue, receipt_handle)  # moto's answer: nothing to do, or an invalid handle
            return
        queue._messages.remove(message)  # received messages are near the head: a short scan
        queue.pending_messages.discard(message)
        queue.deleted_messages.update(message.all_receipt_handles)
        for handle in message.all_receipt_handles:
            _received.pop(handle, None)

    sqs_models.Message.mark_received = mark_received  # type: ignore[assignment,method-assign]
    queue_class.delete_message = delete_message  # type: ignore[assignment,method-assign]
    all_attributes = queue_class.attributes.fget  # type: ignore[attr-defined]
    queue_class.attributes = property(lambda queue: _QueueAttributes(queue, all_attributes))  # type: ignore[assignment,method-assign]
    queue_class.delete_message = _holding_queue_lock(queue_class.delete_message, _the_queue)  # type: ignore[method-assign]
    for name in ("receive_message", "change_message_visibility", "purge_queue"):
        setattr(backend, name, _holding_queue_lock(getattr(backend, name), _named_queue))


# Every message that was received, by each receipt handle it was given, while it exists (a
# purge or a reset lets it go; a delete checks the message is in the queue it deletes from).
_received: weakref.WeakValueDictionary[str, Any] = weakref.WeakValueDictionary()


class _VisibleMessages:
    """A queue's visible messages (not in flight, not delayed), in order, read as they are
    iterated: a receive stops at the tenth. moto's property listed them all."""

    def __init__(self, queue: Any) -> None:
        self._messages: list[Any] = queue._messages

    def __iter__(self) -> Iterator[Any]:
        return (message for message in self._messages if message.visible and not message.delayed)

    def __bool__(self) -> bool:
        return any(True for _ in self)

    def __len__(self) -> int:
        return sum(1 for _ in self)


class _QueueAttributes(Mapping[str, Any]):
    """A queue's attributes, all computed on first use, except ContentBasedDeduplication alone."""

    def __init__(self, queue: Any, compute: Callable[[Any], dict[str, Any]]) -> None:
        self._queue = queue
        self._compute = compute

    @functools.cached_property
    def _all(self) -> dict[str, Any]:
        return self._compute(self._queue)

    def get(self, key: str, default: Any = None) -> Any:
        if key == "ContentBasedDeduplication":
            if not self._queue.fifo_queue:
                return default
            return str(self._queue.content_based_deduplication).lower()
        return self._all.get(key, default)

    def __getitem__(self, key: str) -> Any:
        return self._all[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._all)

    def __len__(self) -> int:
        return len(self._all)


def _the_queue(queue: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    return queue


def _named_queue(backend: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    return backend.get_queue(kwargs["queue_name"] if "queue_name" in kwargs else args[0])


def _holding_queue_lock(method: Callable[..., Any], queue_of: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    def locked(self: Any, *args: Any, **kwargs: Any) -> Any:
        with queue_of(self, args, kwargs)._messages_lock:  # a Condition over an RLock
            return method(self, *args, **kwargs)

    return locked


def _patch_dynamodb() -> None:
    from moto.dynamodb import models as dynamodb_models
    from moto.dynamodb.comparisons import get_filter_expression
    from moto.dynamodb.exceptions import (
        ConditionalCheckFailed,
        MockValidationException,
        MultipleTransactionsException,
        TooManyTransactionsException,
        TransactionCanceledException,
        TransactWriteSingleOpException,
    )
    from moto.dynamodb.models.table import StreamShard

    def transact_write_items(self: Any, transact_items: list[dict[str, Any]]) -> None:
        """All conditions first, then the writes: nothing is written unless all hold."""
        if len(transact_items) > 100:
            raise TooManyTransactionsException()
        targets: set[tuple[str, str]] = set()
        errors: list[tuple[str | None, str | None, dict[str, Any] | None]] = []
        writes: list[tuple[str, dict[str, Any], dict[str, Any]]] = []
        conditions: dict[tuple[str, str, str], Any] = {}  # the items of a transaction share expressions
        for item in transact_items:
            if len(item) > 1:
                raise TransactWriteSingleOpException
            op_type, op = next(iter(item.items()))
            current_item: dict[str, Any] | None = None
            try:
                if op_type not in {"ConditionCheck", "Put", "Delete", "Update"}:
                    raise ValueError("Unsupported transaction operation")
                table_name = op["TableName"]
                if op_type == "Put":
                    table = self.get_table(table_name)
                    key = {table.hash_key_attr: op["Item"][table.hash_key_attr]}
                    if table.range_key_attr is not None:
                        key[table.range_key_attr] = op["Item"][table.range_key_attr]
                else:
                    key = op["Key"]
                target = (str(table_name), str(dict(sorted(key.items()))))
                if target in targets:
                    raise MultipleTransactionsException()
                targets.add(target)
                current = self.get_item(table_name, key)
                condition = op.get("ConditionExpression")
                if condition is not None:
                    names, values = op.get("ExpressionAttributeNames"), op.get("ExpressionAttributeValues")
                    parsed = (condition, repr(names), repr(values))
                    if parsed not in conditions:
                        conditions[parsed] = get_filter_expression(condition, names, values)
                    check = conditions[parsed]
                    if not check.expr(current):
                        if op.get("ReturnValuesOnConditionCheckFailure") == "ALL_OLD" and current:
                            current_item = current.to_json()["Attributes"]
                        raise ConditionalCheckFailed(item=current_item)
                if op_type != "ConditionCheck":
                    writes.append((op_type, op, key))
                errors.append((None, None, None))
            except (MultipleTransactionsException, MockValidationException):
                raise
            except ConditionalCheckFailed as error:
                errors.append(("ConditionalCheckFailed", str(error.message), current_item))
            except Exception as error:
                errors.append((type(error).__name__, str(error), current_item))
        if any(code is not None for code, _, _ in errors):
            raise TransactionCanceledException(errors)
        for op_type, op, key in writes:
            common = {
                "condition_expression": op.get("ConditionExpression"),
                "expression_attribute_names": op.get("ExpressionAttributeNames"),
                "expression_attribute_values": op.get("ExpressionAttributeValues"),
            }
            if op_type == "Put":
                self.put_item(op["TableName"], op["Item"], **common)
            elif op_type == "Delete":
                self.delete_item(op["TableName"], key, **common)
            elif not _set_values(self.get_table(op["TableName"]), key, op):
                self.update_item(op["TableName"], key, update_expression=op["UpdateExpression"], **common)

    backend = dynamodb_models.DynamoDBBackend
    backend.transact_write_items = transact_write_items  # type: ignore[method-assign]

    stream_lock = threading.Lock()
    original_add = StreamShard.add

    @functools.wraps(original_add)
    def add(self: Any, *args: Any, **kwargs: Any) -> None:
        with stream_lock:
            original_add(self, *args, **kwargs)

    StreamShard.add = add  # type: ignore[method-assign]

    from moto.dynamodbstreams.responses import DynamoDBStreamsHandler

    DynamoDBStreamsHandler.get_records = get_records  # type: ignore[method-assign,assignment]

    from moto.dynamodb.exceptions import ItemSizeTooLarge
    from moto.dynamodb.models import dynamo_type
    from moto.dynamodb.models.utilities import bytesize

    def item_init(item: Any, hash_key: Any, range_key: Any, attrs: dict[str, Any]) -> None:
        item.hash_key = hash_key
        item.range_key = range_key
        values = {name: dynamo_type.DynamoType(value) for name, value in attrs.items()}
        # moto's size rule, summed once: each addition re-summed everything added before.
        if sum(bytesize(name) + value.size() for name, value in values.items()) > 405000:
            raise ItemSizeTooLarge
        item.attrs = dynamo_type.LimitedSizeDict()
        dict.update(item.attrs, values)

    dynamo_type.Item.__init__ = item_init  # type: ignore[assignment,method-assign]


_PLAIN_NAME = re.compile(r"#?[A-Za-z_][A-Za-z0-9_]*")
_PLACEHOLDER = re.compile(r":[A-Za-z0-9_]+")
_SET = re.compile(r"\s*SET\s+(.+)", re.IGNORECASE | re.DOTALL)


def _set_values(table: Any, key: dict[str, Any], op: dict[str, Any]) -> bool:
    """Apply an update of the form `SET a = :x, #b = :y` to an existing item directly; False
    (nothing done) for any other update, which moto's own update_item then applies.

    moto parses, validates (some 170 node visits) and executes every update expression
    afresh: 1.15 ms of CPU per item, 115 ms for the notifier's 100-order transaction.
    """
    from moto.dynamodb.models.dynamo_type import DynamoType
    from moto.dynamodb.parsing.reserved_keywords import ReservedKeywords

    match = _SET.fullmatch(op.get("UpdateExpression") or "")
    if match is None:
        return False
    names = op.get("ExpressionAttributeNames") or {}
    values = op.get("ExpressionAttributeValues") or {}
    reserved = ReservedKeywords.get_reserved_keywords()
    assignments: list[tuple[str, dict[str, Any]]] = []
    for assignment in match.group(1).split(","):
        target, equals, placeholder = (part.strip() for part in assignment.partition("="))
        if not equals or not _PLAIN_NAME.fullmatch(target) or not _PLACEHOLDER.fullmatch(placeholder):
            return False
        name = names.get(target) if target.startswith("#") else target
        if name is None or placeholder not in values or target.upper() in reserved:
            return False
        if name in (table.hash_key_attr, table.range_key_attr):
            return False  # an error, as moto words it
        assignments.append((name, values[placeholder]))
    hash_value = DynamoType(key[table.hash_key_attr])
    range_value = DynamoType(key[table.range_key_attr]) if table.range_key_attr else None
    item = table.get_item(hash_value, range_value)
    if item is None:
        return False
    before = copy.deepcopy(item)  # the stream's old image
    for name, value in assignments:
        item.attrs[name] = DynamoType(value)
    if table.stream_shard is not None:
        table.stream_shard.add(before, item)
    return True


def get_records(self: Any) -> tuple[str, dict[str, str]]:
    limit = self._get_param("Limit")
    result = self.backend.get_records(self._get_param("ShardIterator"), 1000 if limit is None else limit)
    return json.dumps(result, default=_wire_value), {"Content-Type": "application/x-amz-json-1.0"}


def _wire_value(value: object) -> object:
    """JSON protocol encodings, as moto's serializer writes them: epoch seconds (to the
    millisecond, rounded down) and base64."""
    if isinstance(value, datetime):
        moment = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
        return math.floor(moment.timestamp() * 1000) / 1000
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    raise TypeError(f"{type(value).__name__} is not JSON serializable")
