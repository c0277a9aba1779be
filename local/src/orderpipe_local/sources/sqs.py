"""An SQS event source mapping played locally, as Lambda's SQS poller does it.

- Long-polls the queue (up to 10 messages a call, all system and message attributes) and
  gathers up to `BatchSize` messages within `MaximumBatchingWindowInSeconds`. As in Lambda, the
  next window opens when the previous batch left, so a lone message after a quiet spell goes
  out at once and a busy queue fills its batches; a batch also closes before 6 MB.
- Invokes the function with Lambda's SQS event. On success it deletes the batch
  (DeleteMessageBatch); with `ReportBatchItemFailures` it deletes all but the reported
  messages; a function error or an invalid answer leaves the whole batch. Messages left come
  back after the queue's own visibility timeout, and the queue's own RedrivePolicy (moto's,
  applied on ReceiveMessage) moves them to the DLQ after maxReceiveCount receives.
- Messages that fail `FilterCriteria` are deleted unseen, as Lambda does.
- Up to `ScalingConfig.MaximumConcurrency` batches are invoked at once (threads). One thread
  receives for all of them: moto hands a message to every ReceiveMessage that races for it,
  so concurrent receivers would only multiply duplicates.
- `duplicate_deliveries` (a fault to inject, 0 to 1): that fraction of the messages is delivered
  a second time, in a later batch, as SQS's at-least-once delivery may; whichever delivery
  succeeds deletes the message.
- While the function is unavailable (none of its execution environments can be started) nothing
  is received, so the messages' receive counts, which send them to the DLQ, are not spent on
  the outage; a batch received just before it is made visible again at once, uncounted as a
  failure.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from orderpipe_local.moto.loopback_http import JsonProtocolApi
from orderpipe_local.runtime.functions import FunctionUnavailable, Invocable
from orderpipe_local.sources.batch_response import reported_failures
from orderpipe_local.sources.event_filter import EventFilter
from orderpipe_local.sources.polling import (
    INVOKE_PAYLOAD_LIMIT,
    Counters,
    as_bool,
    as_float,
    as_int,
    aws_client,
)
from orderpipe_local.stack.provision import Stack

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient

log = logging.getLogger(__name__)

SQS_RECEIVE_LIMIT = 10  # messages per ReceiveMessage and entries per DeleteMessageBatch
DEFAULT_CONCURRENCY = 5  # Lambda starts five pollers when ScalingConfig does not say
UNAVAILABLE_POLL_SECONDS = 0.5  # how often an unavailable function is looked at again
_ATTRIBUTE_ORDER = (
    "ApproximateReceiveCount",
    "SentTimestamp",
    "SenderId",
    "ApproximateFirstReceiveTimestamp",
)
_RECORD_OVERHEAD = 1024  # bytes of a record's JSON besides its body, roughly


class SqsEventSource:
    """Polls one queue for one function, as the template's SQS event source mapping says."""

    def __init__(
        self,
        stack: Stack,
        mapping: dict[str, Any],
        function: Invocable,
        endpoint_url: str,
        *,
        max_concurrency: int | None = None,
        wait_seconds: int = 1,
        duplicate_deliveries: float = 0.0,
        seed: int = 0,
    ) -> None:
        self.function = function
        self.mapping = mapping
        self.queue_arn: str = mapping["EventSourceArn"]
        self.region = stack.template.region
        self.batch_size = as_int(mapping.get("BatchSize"), 10)
        self.batching_window = as_float(mapping.get("MaximumBatchingWindowInSeconds"), 0.0)
        self.report_failures = "ReportBatchItemFailures" in (mapping.get("FunctionResponseTypes") or [])
        self.filter = EventFilter.from_criteria(mapping.get("FilterCriteria"), body_key="body")
        self.enabled = as_bool(mapping.get("Enabled", True))
        scaling = mapping.get("ScalingConfig") or {}
        # No more batches in flight than the function has execution environments, as in Lambda:
        # the messages stay in the queue meanwhile, and the next receive takes more of them.
        self.concurrency = max_concurrency or min(
            as_int(scaling.get("MaximumConcurrency"), DEFAULT_CONCURRENCY), function.concurrency
        )
        # Short long-polls keep stop() prompt; moto wakes a waiting receive as soon as a message lands.
        self.wait_seconds = wait_seconds
        if not 1 <= self.batch_size <= 10_000:
            raise ValueError(f"{function.function_id}: SQS BatchSize must be 1-10000, not {self.batch_size}")
        if self.batch_size > SQS_RECEIVE_LIMIT and self.batching_window < 1:
            raise ValueError(
                f"{function.function_id}: an SQS BatchSize above 10 needs MaximumBatchingWindowInSeconds >= 1"
            )

        self._sqs: SQSClient = aws_client("sqs", endpoint_url, self.region, connections=self.concurrency + 4)
        # Receives and deletes, made for every batch, skip botocore's parsing (see JsonProtocolApi).
        self._messages = JsonProtocolApi(
            endpoint_url, "AmazonSQS", "sqs", self.region, connections=self.concurrency + 4
        )
        self.queue_url, queue_name = self._queue_url(stack)
        self.name = f"{function.function_id} <- {queue_name}"

        # `returned`: messages made visible again, not invoked, as the function was unavailable;
        # `duplicated`: messages delivered a second time (`duplicate_deliveries`)
        self.counters = Counters(["batches", "succeeded", "failed", "filtered", "returned", "duplicated"])
        self.duplicate_deliveries = duplicate_deliveries
        self._draws = random.Random(f"{seed}:{self.queue_arn}")
        self._duplicates: list[dict[str, Any]] = []  # copies waiting for a later batch
        self._in_flight_duplicates: set[int] = set()  # id() of the copies being invoked
        self._stopping = threading.Event()
        self._slots = threading.Semaphore(self.concurrency)
        self._lock = threading.Condition()
        self._held = 0  # messages received and not yet deleted or released
        # Received and not deleted, by message id: their receipt handles, to make them visible
        # again when the pipeline stops (see `return_unsettled`).
        self._unsettled: dict[str, str] = {}
        # Of those, the ones whose invocation failed: they wait out their visibility timeout.
        self._awaiting_retry: set[str] = set()
        self._empty_receives = 0
        self._carry: list[dict[str, Any]] = []  # received, but over the payload limit of the last batch
        self._receiver: threading.Thread | None = None
        self._invokers: ThreadPoolExecutor | None = None

    def _queue_url(self, stack: Stack) -> tuple[str, str]:
        queue_name = self.queue_arn.rsplit(":", 1)[-1]
        try:
            logical_id = stack.logical_id_of(self.queue_arn)
        except KeyError:
            return self._sqs.get_queue_url(QueueName=queue_name)["QueueUrl"], queue_name
        return stack.ref(logical_id), logical_id

    # --- Poller ---------------------------------------------------------------------------

    def start(self) -> None:
        if not self.enabled or self._receiver is not None:
            return
        self._stopping.clear()
        self._invokers = ThreadPoolExecutor(
            self.concurrency, thread_name_prefix=f"{self.function.function_id}"
        )
        self._receiver = threading.Thread(target=self._receive_loop, name=f"{self.name} poller", daemon=True)
        self._receiver.start()

    def stop(self) -> None:
        """Stop receiving; the batches already received are invoked and their results applied."""
        self._stopping.set()
        if self._receiver is not None:
            self._receiver.join()
            self._receiver = None
        if self._invokers is not None:
            self._invokers.shutdown(wait=True)
            self._invokers = None

    def stats(self) -> dict[str, int]:
        return self.counters.snapshot()

    def drained(self) -> bool:
        """Nothing visible or delayed in the queue and no message held here (a quick check).

        A message received in the very instant of the check may be missed; `stop()` still
        invokes such a batch and applies its result before it returns.
        """
        with self._lock:
            if self._held:
                return False
        empty = self._queue_is_empty()
        with self._lock:
            return empty and self._held == 0

    def drain(self, timeout: float) -> bool:
        """Wait until the queue holds no message - visible, delayed or in flight - and none is
        being processed here.

        A message whose invocation failed would wait out its visibility timeout (longer than a
        drain): it is made visible again at once, so that its retries (and, past the queue's
        maxReceiveCount, its move to the DLQ) happen within the drain.
        """
        deadline = time.monotonic() + timeout
        while True:
            self._retry_failed_now()
            with self._lock:
                receives_before = self._empty_receives
                idle = self._held == 0
            if idle and self._queue_is_empty():
                if self._receiver is None:
                    return True
                # Empty only counts once the poller itself came back empty-handed afterwards.
                if self._wait_for_empty_receive(receives_before, deadline):
                    return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(min(0.1, max(0.0, deadline - time.monotonic())))

    def _wait_for_empty_receive(self, receives_before: int, deadline: float) -> bool:
        with self._lock:
            self._lock.wait_for(
                lambda: self._empty_receives > receives_before or self._held > 0,
                timeout=max(0.0, deadline - time.monotonic()),
            )
            return self._empty_receives > receives_before and self._held == 0

    def _queue_is_empty(self) -> bool:
        attributes = self._sqs.get_queue_attributes(
            QueueUrl=self.queue_url,
            AttributeNames=[
                "ApproximateNumberOfMessages",
                "ApproximateNumberOfMessagesDelayed",
                "ApproximateNumberOfMessagesNotVisible",
            ],
        )["Attributes"]
        return all(int(value) == 0 for value in attributes.values())

    def _retry_failed_now(self) -> None:
        with self._lock:
            handles = {
                message_id: self._unsettled[message_id]
                for message_id in self._awaiting_retry
                if message_id in self._unsettled  # not deleted meanwhile by a duplicate's success
            }
            self._awaiting_retry.clear()
        self._make_visible(handles)

    def return_unsettled(self) -> int:
        """Make every message received here and not deleted visible again (once stopped: the
        invocations that held them are over, or were ended). The number returned."""
        with self._lock:
            handles, self._unsettled = self._unsettled, {}
            self._awaiting_retry.clear()
        self._make_visible(handles)
        return len(handles)

    def _make_visible(self, handles: dict[str, str]) -> None:
        entries = [
            {"Id": str(index), "ReceiptHandle": handle} for index, handle in enumerate(handles.values())
        ]
        for start in range(0, len(entries), SQS_RECEIVE_LIMIT):
            try:
                self._messages.call(
                    "ChangeMessageVisibilityBatch",
                    QueueUrl=self.queue_url,
                    Entries=[
                        entry | {"VisibilityTimeout": 0}
                        for entry in entries[start : start + SQS_RECEIVE_LIMIT]
                    ],
                )
            except ClientError as error:  # handles that expired meanwhile: the messages came back anyway
                log.debug("%s: could not make messages visible: %s", self.name, error)

    # --- receiving ------------------------------------------------------------------------

    def _receive_loop(self) -> None:
        window_opened = float("-inf")
        while not self._stopping.is_set():
            if not self.function.available:
                self._stopping.wait(UNAVAILABLE_POLL_SECONDS)
                continue
            if not self._slots.acquire(timeout=0.2):
                continue  # every invoker is busy: leave the messages in the queue meanwhile
            try:
                batch = self._gather(window_opened + self.batching_window)
            except Exception as exc:
                self._slots.release()
                log.warning("%s: receiving failed (%s); retrying in 1 s", self.name, exc)
                self._stopping.wait(1.0)
                continue
            if not batch:
                self._slots.release()
                continue
            window_opened = time.monotonic()
            self._submit(batch)
        with self._lock:  # copies not delivered yet are dropped: they were only copies
            self._held -= len(self._duplicates)
            self._duplicates = []
            self._lock.notify_all()
        if self._carry:
            with self._lock:
                batch, self._carry = self._carry, []
            self._slots.acquire()
            self._submit(batch)

    def _submit(self, batch: list[dict[str, Any]]) -> None:
        assert self._invokers is not None
        self._invokers.submit(self._invoke_batch, batch)

    def _gather(self, window_closes: float) -> list[dict[str, Any]]:
        """Up to BatchSize messages: what one receive brings once the window is over, else more."""
        with self._lock:
            batch, self._carry = self._carry, []
            duplicates, self._duplicates = (
                self._duplicates[: self.batch_size],
                self._duplicates[self.batch_size :],
            )
            self._in_flight_duplicates.update(id(record) for record in duplicates)
        batch = duplicates + batch
        size = sum(_record_size(record) for record in batch)
        while len(batch) < self.batch_size and not self._stopping.is_set():
            left = window_closes - time.monotonic()
            if batch and left <= 0:
                break
            wait = self.wait_seconds if not batch or left >= 1 else 0  # WaitTimeSeconds is whole seconds
            messages = self._receive(min(SQS_RECEIVE_LIMIT, self.batch_size - len(batch)), wait)
            if not messages:
                if not batch:
                    with self._lock:
                        self._empty_receives += 1
                        self._lock.notify_all()
                    return []
                if wait == 0:
                    self._stopping.wait(min(0.05, max(0.0, left)))
                continue
            passed: list[dict[str, Any]] = []
            rejected: list[dict[str, Any]] = []
            for message in messages:
                record = self._lambda_record(message)
                (passed if self.filter.matches(record) else rejected).append(record)
            if rejected:
                self._drop_filtered(rejected)
            self._copy_some(passed)
            for record in passed:
                if batch and size + _record_size(record) > INVOKE_PAYLOAD_LIMIT:
                    with self._lock:
                        self._carry.append(record)
                else:
                    batch.append(record)
                    size += _record_size(record)
            if self._carry:
                break
        return batch

    def _copy_some(self, records: list[dict[str, Any]]) -> None:
        """Keep a copy of `duplicate_deliveries` of the records for a later batch (held, like the
        messages received, so that a drain waits for them)."""
        if not self.duplicate_deliveries:
            return
        copies = []
        for record in records:
            if self._draws.random() < self.duplicate_deliveries:
                copy = json.loads(json.dumps(record))
                attributes = copy["attributes"]
                attributes["ApproximateReceiveCount"] = str(
                    int(attributes.get("ApproximateReceiveCount", 1)) + 1
                )
                copies.append(copy)
        if copies:
            with self._lock:
                self._duplicates.extend(copies)
                self._held += len(copies)
            self.counters.add("duplicated", len(copies))

    def _receive(self, count: int, wait: int) -> list[dict[str, Any]]:
        """Messages as ReceiveMessage's JSON has them (binary values base64-encoded)."""
        response = self._messages.call(
            "ReceiveMessage",
            QueueUrl=self.queue_url,
            MaxNumberOfMessages=count,
            WaitTimeSeconds=wait,
            AttributeNames=["All"],
            MessageAttributeNames=["All"],
        )
        messages: list[dict[str, Any]] = response.get("Messages", [])
        if messages:
            with self._lock:
                self._held += len(messages)
                for message in messages:
                    self._unsettled[message["MessageId"]] = message["ReceiptHandle"]
                    self._awaiting_retry.discard(message["MessageId"])
        return messages

    def _drop_filtered(self, records: list[dict[str, Any]]) -> None:
        """Lambda deletes the messages that fail the filter criteria."""
        try:
            self._delete(records)
        finally:
            self._release(len(records))
        self.counters.add("filtered", len(records))

    def _lambda_record(self, message: dict[str, Any]) -> dict[str, Any]:
        """One record of the event Lambda sends for SQS."""
        attributes = dict(message.get("Attributes", {}))
        ordered = {name: attributes.pop(name) for name in _ATTRIBUTE_ORDER if name in attributes}
        record: dict[str, Any] = {
            "messageId": message["MessageId"],
            "receiptHandle": message["ReceiptHandle"],
            "body": message.get("Body", ""),
            "attributes": ordered | attributes,
            "messageAttributes": {
                name: _lambda_message_attribute(value)
                for name, value in message.get("MessageAttributes", {}).items()
            },
            "md5OfBody": message.get("MD5OfBody", ""),
        }
        if "MD5OfMessageAttributes" in message:
            record["md5OfMessageAttributes"] = message["MD5OfMessageAttributes"]
        record |= {"eventSource": "aws:sqs", "eventSourceARN": self.queue_arn, "awsRegion": self.region}
        return record

    # --- invoking -------------------------------------------------------------------------

    def _invoke_batch(self, batch: list[dict[str, Any]]) -> None:
        try:
            message_ids = [record["messageId"] for record in batch]
            try:
                failed = self._failed_message_ids(batch, message_ids)
            except FunctionUnavailable as exc:
                log.warning("%s: %s; the batch of %d goes back to the queue", self.name, exc, len(batch))
                self._return_to_queue(batch)
                return
            done = [record for record in batch if record["messageId"] not in failed]
            self.counters.add("batches")
            self.counters.add("succeeded", len(done))
            self.counters.add("failed", len(batch) - len(done))
            if done:
                self._delete(done)
            with self._lock:
                # A copy's failure is not the message's: its own delivery decides what comes back.
                self._awaiting_retry.update(
                    record["messageId"]
                    for record in batch
                    if record["messageId"] in failed and id(record) not in self._in_flight_duplicates
                )
        except Exception:
            log.exception("%s: applying the result of a batch failed", self.name)
        finally:
            with self._lock:
                self._in_flight_duplicates.difference_update(id(record) for record in batch)
            self._release(len(batch))
            self._slots.release()

    def _failed_message_ids(self, batch: list[dict[str, Any]], message_ids: list[str]) -> set[str]:
        try:
            response = self.function.invoke({"Records": batch})
        except FunctionUnavailable:
            raise
        except Exception as exc:
            log.warning(
                "%s: function error (%s: %s); the batch of %d comes back after the visibility timeout",
                self.name,
                type(exc).__name__,
                exc,
                len(batch),
            )
            log.debug("%s: function error", self.name, exc_info=True)
            return set(message_ids)
        if not self.report_failures:
            return set()
        failures = reported_failures(response, message_ids, source=self.name)
        return set(message_ids) if failures is None else set(failures)

    def _delete(self, records: list[dict[str, Any]]) -> None:
        for start in range(0, len(records), SQS_RECEIVE_LIMIT):
            chunk = records[start : start + SQS_RECEIVE_LIMIT]
            response = self._messages.call(
                "DeleteMessageBatch",
                QueueUrl=self.queue_url,
                Entries=[
                    {"Id": str(index), "ReceiptHandle": record["receiptHandle"]}
                    for index, record in enumerate(chunk)
                ],
            )
            failed = {int(failure["Id"]) for failure in response.get("Failed", [])}
            for failure in response.get("Failed", []):
                message_id = chunk[int(failure["Id"])]["messageId"]
                log.warning("%s: could not delete message %s: %s", self.name, message_id, failure)
            with self._lock:
                for index, record in enumerate(chunk):
                    if index not in failed:
                        self._unsettled.pop(record["messageId"], None)

    def _return_to_queue(self, records: list[dict[str, Any]]) -> None:
        """Make messages visible again now: the receiver waits for the function meanwhile."""
        with self._lock:
            handles = {
                record["messageId"]: self._unsettled.pop(record["messageId"], record["receiptHandle"])
                for record in records
            }
        self._make_visible(handles)
        self.counters.add("returned", len(records))

    def _release(self, count: int) -> None:
        with self._lock:
            self._held -= count
            self._lock.notify_all()


def _record_size(record: dict[str, Any]) -> int:
    return len(record["body"].encode()) + _RECORD_OVERHEAD


def _lambda_message_attribute(value: dict[str, Any]) -> dict[str, Any]:
    """SQS's MessageAttributeValue (as JSON: binary values base64-encoded) in the camelCase
    shape of Lambda's event."""
    attribute: dict[str, Any] = {}
    if "StringValue" in value:
        attribute["stringValue"] = value["StringValue"]
    if "BinaryValue" in value:
        attribute["binaryValue"] = value["BinaryValue"]
    attribute["stringListValues"] = list(value.get("StringListValues", []))
    attribute["binaryListValues"] = list(value.get("BinaryListValues", []))
    attribute["dataType"] = value["DataType"]
    return attribute
