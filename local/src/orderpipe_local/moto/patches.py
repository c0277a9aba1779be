"""Patches of moto's internals for the local endpoint, each named in `PATCHES`.

Two kinds. A *fix* corrects a wrong answer or lost data of moto 5.2.5 under the pipeline's
concurrent requests; the endpoint always applies the fixes, and
`local/tests/integration/test_moto_patches.py` shows each one failing on plain moto and passing
patched (so the day moto fixes one upstream, its test says so). A *speed* patch changes no
answer, only moto's CPU per request; they are on by default and switched with
`ORDERPIPE_MOTO_SPEED_PATCHES`: `on` (all), `off` (none) or a comma-separated list of the names
to apply, e.g. `sqs-depth,dynamodb-transaction-sets` (`python -m orderpipe_local.moto.patches`
lists them). `bench/moto_patches.py` times each speed patch against moto without it. The
latency targets need them: `bench/load.py --rate 50 --duration 60` with them off against on, in
one sitting (2026-12-02), gave POST p99 159.1 against 53.9 ms, POST -> mailed p99 26.56 against
1.97 s and 37.6 against 30.8 ms of CPU an order, so they stay on by default.

The first line of each patch's docstring names the moto behaviour it fixes or avoids, in the
words an upstream report would use. Apply them once, in the process that runs moto's server,
before it serves (`apply_moto_patches()`). `orderpipe_local.versions` pins moto to the version
they were written against.
"""

from __future__ import annotations

import base64
import copy
import functools
import json
import math
import os
import re
import sys
import threading
import time
import weakref
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

SPEED_PATCHES_VARIABLE = "ORDERPIPE_MOTO_SPEED_PATCHES"


@dataclass(frozen=True)
class MotoPatch:
    name: str
    kind: Literal["fix", "speed"]
    apply: Callable[[], None]

    @property
    def behaviour(self) -> str:
        """The moto behaviour it fixes or avoids, in one line: its docstring's first paragraph."""
        summary = (self.apply.__doc__ or "").strip().split("\n\n")[0]
        return " ".join(line.strip() for line in summary.splitlines())


_applied: tuple[str, ...] | None = None
_apply_lock = threading.Lock()


def apply_moto_patches(names: Collection[str] | None = None) -> tuple[str, ...]:
    """Patch moto in this process: the named patches, by default the fixes and the speed patches
    `ORDERPIPE_MOTO_SPEED_PATCHES` selects. Idempotent for the same selection; returns the names
    applied, in the order applied."""
    global _applied
    from orderpipe_local.versions import check_pinned_versions

    check_pinned_versions()  # each patch was written against the one moto pinned
    selected = selected_patches() if names is None else _known(names)
    with _apply_lock:
        if _applied is not None:
            if set(_applied) != set(selected):
                raise RuntimeError(f"moto is already patched with {', '.join(_applied) or 'nothing'}")
            return _applied
        for patch in PATCHES.values():  # registry order: the fixes wrap what the speed patches replace
            if patch.name in selected:
                patch.apply()
        _applied = tuple(name for name in PATCHES if name in selected)
        return _applied


def selected_patches(environ: Mapping[str, str] = os.environ) -> tuple[str, ...]:
    """Every fix, and the speed patches `ORDERPIPE_MOTO_SPEED_PATCHES` names (default: all)."""
    fixes = tuple(name for name, patch in PATCHES.items() if patch.kind == "fix")
    speed = tuple(name for name, patch in PATCHES.items() if patch.kind == "speed")
    setting = environ.get(SPEED_PATCHES_VARIABLE, "on").strip()
    if setting.lower() in ("on", "all"):
        chosen: Collection[str] = speed
    elif setting.lower() in ("off", "none", ""):
        chosen = ()
    else:
        chosen = _known(part.strip() for part in setting.split(",") if part.strip())
        if fix := next((name for name in chosen if PATCHES[name].kind == "fix"), None):
            raise ValueError(f"{SPEED_PATCHES_VARIABLE}: {fix} is a fix, always applied")
    return fixes + tuple(name for name in speed if name in chosen)


def _known(names: Iterator[str] | Collection[str]) -> tuple[str, ...]:
    names = tuple(names)
    if unknown := [name for name in names if name not in PATCHES]:
        raise ValueError(f"no moto patch named {', '.join(unknown)}; known: {', '.join(PATCHES)}")
    return names


# ---------------------------------------------------------------------------------------------
# Speed patches: the same answers, less CPU.


def _cache_module_list() -> None:
    """moto 5.2.5: the server finds a request's service by listing moto's package folder on disk (about 200
    stat calls, 1.6 ms) on every request."""
    from moto import backends

    modules = tuple(backends.list_of_moto_modules())
    backends.list_of_moto_modules = lambda: modules


def _cache_method_names() -> None:
    """moto 5.2.5: every request lists its handler class's methods (inspect.getmembers) to find the action's
    method."""
    from moto.core import responses

    responses.method_names_from_class = functools.cache(responses.method_names_from_class)  # type: ignore[attr-defined]


def _sqs_plain_clock() -> None:
    """moto 5.2.5: SQS reads the time by building two datetimes and subtracting them, for every message on
    every scan of a queue."""
    from moto.core import utils as moto_utils
    from moto.sqs import models as sqs_models

    original_unix_time = moto_utils.unix_time

    def unix_time(dt: datetime | None = None) -> float:
        return time.time() if dt is None else original_unix_time(dt)

    def unix_time_millis(dt: datetime | None = None) -> float:
        return unix_time(dt) * 1000.0

    setattr(sqs_models, "unix_time", unix_time)  # noqa: B010 - the model imported them by name
    setattr(sqs_models, "unix_time_millis", unix_time_millis)  # noqa: B010


def _sqs_cache_snake_case() -> None:
    """moto 5.2.5: SQS Queue.attributes turns the same two dozen attribute names into snake case with regular
    expressions on every call."""
    from moto.sqs import models as sqs_models

    to_snake_case = functools.cache(getattr(sqs_models, "camelcase_to_underscores"))  # noqa: B009
    setattr(sqs_models, "camelcase_to_underscores", to_snake_case)  # noqa: B010


def _sqs_retention_alone() -> None:
    """moto 5.2.5: SQS ReceiveMessage computes all of the queue's attributes, each counting the queue's
    messages, for every message it returns (90 scans of the queue for ten messages)."""
    from moto.sqs import models as sqs_models

    def is_message_valid_based_on_retention_period(self: Any, queue_name: str, message: Any) -> bool:
        queue = self.get_queue(queue_name)
        retain_until = int(queue.message_retention_period) + message.sent_timestamp / 1000
        return bool(retain_until > time.time())

    backend = sqs_models.SQSBackend
    backend.is_message_valid_based_on_retention_period = is_message_valid_based_on_retention_period  # type: ignore[method-assign]


def _sqs_deduplication_alone() -> None:
    """moto 5.2.5: SQS SendMessage computes all of the queue's attributes, counting its messages three times,
    to learn whether it dedupes by content: a send costs O(queue depth)."""
    from moto.sqs import models as sqs_models

    queue_class = sqs_models.Queue
    all_attributes = queue_class.attributes.fget  # type: ignore[attr-defined]
    queue_class.attributes = property(lambda queue: _QueueAttributes(queue, all_attributes))  # type: ignore[assignment,method-assign]


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


def _sqs_depth_independent() -> None:
    """moto 5.2.5: SQS ReceiveMessage lists every visible message to return the first ten, and DeleteMessage
    scans every message twice and rebuilds the list: both O(queue depth)."""
    from moto.sqs import models as sqs_models

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


def _dynamodb_item_size_once() -> None:
    """moto 5.2.5: DynamoDB builds an item attribute by attribute, re-summing the size of all the attributes
    before each one (O(n^2) in the attributes)."""
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


def _dynamodb_get_records_as_json() -> None:
    """moto 5.2.5: DynamoDB Streams GetRecords serializes records already in their JSON wire form through the
    generic shape-walking serializer, about 3 ms a record."""
    from moto.dynamodbstreams.responses import DynamoDBStreamsHandler

    DynamoDBStreamsHandler.get_records = get_records  # type: ignore[method-assign,assignment]


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


def _dynamodb_transaction_sets() -> None:
    """moto 5.2.5: DynamoDB parses, validates and executes every update expression afresh, 1.15 ms of CPU for
    a plain `SET a = :x, #b = :y` (115 ms for a 100-item transaction).

    Applies to the updates of a TransactWriteItems, with the dynamodb-transactions fix.
    """
    global _transaction_update
    _transaction_update = _set_values


_PLAIN_NAME = re.compile(r"#?[A-Za-z_][A-Za-z0-9_]*")
_PLACEHOLDER = re.compile(r":[A-Za-z0-9_]+")
_SET = re.compile(r"\s*SET\s+(.+)", re.IGNORECASE | re.DOTALL)


def _set_values(table: Any, key: dict[str, Any], op: dict[str, Any], before: Any) -> bool:
    """Apply an update of the form `SET a = :x, #b = :y` to an existing item directly; False
    (nothing done) for any other update, which moto's own update_item then applies. `before` is
    a copy of the item as it was, the stream record's old image."""
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
    for name, value in assignments:
        item.attrs[name] = DynamoType(value)
    if table.stream_shard is not None:
        table.stream_shard.add(before, item)
    return True


# ---------------------------------------------------------------------------------------------
# Fixes: moto's answers are wrong, or data is lost, without them.


def _sqs_queue_lock() -> None:
    """moto 5.2.5: SQS DeleteMessage rebuilds the queue's message list without a lock: concurrent deletes
    bring deleted messages back, and a SendMessage answered 200 meanwhile is lost.

    Measured: 38 of 1,000 sends lost while eight threads deleted. Receives, deletes, visibility
    changes and purges take the queue's own lock, the one moto's SendMessage already takes (its
    long poll releases it while it waits); concurrent receives then no longer hand out the same
    message twice either.
    """
    from moto.sqs import models as sqs_models

    queue_class = sqs_models.Queue
    queue_class.delete_message = _holding_queue_lock(queue_class.delete_message, _the_queue)  # type: ignore[method-assign]
    backend = sqs_models.SQSBackend
    for name in ("receive_message", "change_message_visibility", "purge_queue"):
        setattr(backend, name, _holding_queue_lock(getattr(backend, name), _named_queue))


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


def _default_transaction_update(table: Any, key: dict[str, Any], op: dict[str, Any], before: Any) -> bool:
    return False  # moto's update_item applies it


# How a transaction's Update is applied first (True: done); the dynamodb-transaction-sets patch
# sets it.
_transaction_update: Callable[[Any, dict[str, Any], dict[str, Any], Any], bool] = _default_transaction_update
# The stream records a thread's transaction has written, held back until all its writes succeeded.
_held_records = threading.local()


def _dynamodb_atomic_transactions() -> None:
    """moto 5.2.5: a cancelled DynamoDB TransactWriteItems puts deep copies back in place of its tables:
    writes other clients made meanwhile are lost, and open stream iterators never see a new record.

    moto deep-copies each table once per item of the transaction (a 100-update transaction on a
    2,000-order table took 10.7 s), writes item by item, and on a cancellation swaps the copies
    in; the table's stream becomes a new object, so every shard iterator already handed out
    reads the old one forever, after seeing the cancelled transaction's writes. Here every
    condition is checked first and the writes made only if all hold, as DynamoDB does; a write
    that fails (a validation error) is undone with the writes before it, from copies of the
    items alone, and the transaction's stream records are added only once all its writes stood.
    """
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
    from moto.dynamodb.models.dynamo_type import DynamoType
    from moto.dynamodb.models.table import StreamShard

    def transact_write_items(self: Any, transact_items: list[dict[str, Any]]) -> None:
        """All conditions first, then the writes: nothing is written unless all hold."""
        if len(transact_items) > 100:
            raise TooManyTransactionsException()
        targets: set[tuple[str, str]] = set()
        errors: list[tuple[str | None, str | None, dict[str, Any] | None]] = []
        writes: list[tuple[int, str, dict[str, Any], dict[str, Any]]] = []
        conditions: dict[tuple[str, str, str], Any] = {}  # the items of a transaction share expressions
        for index, item in enumerate(transact_items):
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
                    writes.append((index, op_type, op, key))
                errors.append((None, None, None))
            except (MultipleTransactionsException, MockValidationException):
                raise
            except ConditionalCheckFailed as error:
                errors.append(("ConditionalCheckFailed", str(error.message), current_item))
            except Exception as error:
                errors.append((type(error).__name__, str(error), current_item))
        if any(code is not None for code, _, _ in errors):
            raise TransactionCanceledException(errors)
        write_all(self, writes, errors)

    def write_all(
        backend: Any,
        writes: list[tuple[int, str, dict[str, Any], dict[str, Any]]],
        errors: list[tuple[str | None, str | None, dict[str, Any] | None]],
    ) -> None:
        undo: list[tuple[Any, Any, Any, Any]] = []  # (table, hash, range, the item before)
        held: list[tuple[Any, tuple[Any, ...], dict[str, Any]]] = []
        _held_records.records = held
        try:
            for index, op_type, op, key in writes:
                common = {
                    "condition_expression": op.get("ConditionExpression"),
                    "expression_attribute_names": op.get("ExpressionAttributeNames"),
                    "expression_attribute_values": op.get("ExpressionAttributeValues"),
                }
                table = backend.get_table(op["TableName"])
                hash_value = DynamoType(key[table.hash_key_attr])
                range_value = DynamoType(key[table.range_key_attr]) if table.range_key_attr else None
                before = table.get_item(hash_value, range_value)
                if op_type == "Update":
                    before = copy.deepcopy(before)  # updates change the item in place
                undo.append((table, hash_value, range_value, before))
                try:
                    if op_type == "Put":
                        backend.put_item(op["TableName"], op["Item"], **common)
                    elif op_type == "Delete":
                        backend.delete_item(op["TableName"], key, **common)
                    elif before is None or not _transaction_update(table, key, op, before):
                        backend.update_item(
                            op["TableName"], key, update_expression=op["UpdateExpression"], **common
                        )
                except (MockValidationException, TransactionCanceledException):
                    raise
                except ConditionalCheckFailed as error:  # changed by another client since the check
                    errors[index] = ("ConditionalCheckFailed", str(error.message), None)
                    raise TransactionCanceledException(errors) from error
                except Exception as error:
                    errors[index] = (type(error).__name__, str(error), None)
                    raise TransactionCanceledException(errors) from error
        except BaseException:
            for table, hash_value, range_value, before in reversed(undo):
                _put_back(table, hash_value, range_value, before)
            raise
        finally:
            _held_records.records = None
        for shard, args, kwargs in held:
            shard.add(*args, **kwargs)

    def _put_back(table: Any, hash_value: Any, range_value: Any, before: Any) -> None:
        place, slot = (table.items[hash_value], range_value) if range_value else (table.items, hash_value)
        if before is None:
            place.pop(slot, None)
        else:
            place[slot] = before

    backend = dynamodb_models.DynamoDBBackend
    backend.transact_write_items = transact_write_items  # type: ignore[method-assign]

    publish = StreamShard.add

    @functools.wraps(publish)
    def add(self: Any, *args: Any, **kwargs: Any) -> None:
        held = getattr(_held_records, "records", None)
        if held is not None:
            held.append((self, args, kwargs))
        else:
            publish(self, *args, **kwargs)

    StreamShard.add = add  # type: ignore[method-assign]


def _dynamodb_stream_sequence() -> None:
    """moto 5.2.5: concurrent DynamoDB writes can give two stream records the same SequenceNumber, and
    GetRecords then hands a record out twice.

    StreamShard.add numbers a record by the shard's length before building it and appends it
    after; the next iterator starts after the highest number read. Appending to a stream takes
    a lock.
    """
    from moto.dynamodb.models.table import StreamShard

    stream_lock = threading.Lock()
    original_add = StreamShard.add

    @functools.wraps(original_add)
    def add(self: Any, *args: Any, **kwargs: Any) -> None:
        with stream_lock:
            original_add(self, *args, **kwargs)

    StreamShard.add = add  # type: ignore[method-assign]


PATCHES: dict[str, MotoPatch] = {
    patch.name: patch
    for patch in (
        MotoPatch("server-module-list", "speed", _cache_module_list),
        MotoPatch("server-method-names", "speed", _cache_method_names),
        MotoPatch("sqs-clock", "speed", _sqs_plain_clock),
        MotoPatch("sqs-snake-case", "speed", _sqs_cache_snake_case),
        MotoPatch("sqs-retention-check", "speed", _sqs_retention_alone),
        MotoPatch("sqs-deduplication-check", "speed", _sqs_deduplication_alone),
        MotoPatch("sqs-depth", "speed", _sqs_depth_independent),
        MotoPatch("dynamodb-item-size", "speed", _dynamodb_item_size_once),
        MotoPatch("dynamodb-get-records-json", "speed", _dynamodb_get_records_as_json),
        MotoPatch("dynamodb-transaction-sets", "speed", _dynamodb_transaction_sets),
        MotoPatch("sqs-queue-lock", "fix", _sqs_queue_lock),
        MotoPatch("dynamodb-transactions", "fix", _dynamodb_atomic_transactions),
        MotoPatch("dynamodb-stream-sequence", "fix", _dynamodb_stream_sequence),
    )
}
FIXES = tuple(name for name, patch in PATCHES.items() if patch.kind == "fix")
SPEED_PATCHES = tuple(name for name, patch in PATCHES.items() if patch.kind == "speed")


def main() -> int:
    """List the patches: name, kind, the moto behaviour."""
    for patch in PATCHES.values():
        print(f"{patch.name:26} {patch.kind:6} {patch.behaviour}")
    print(
        f"\n{SPEED_PATCHES_VARIABLE}=on|off|NAME,NAME... selects the speed patches (default on).",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
