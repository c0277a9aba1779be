"""A DynamoDB-stream event source mapping played locally, as Lambda's stream poller does it.

Per shard, in order and one batch at a time:
- reads with GetRecords from `StartingPosition` (TRIM_HORIZON or LATEST), polling a caught-up
  shard four times a second as Lambda does; drops records that fail `FilterCriteria` (they
  count as processed);
- gathers up to `BatchSize` records (and under 6 MB) within `MaximumBatchingWindowInSeconds`.
  The window opens when the previous invocation ends, as in Lambda: after a quiet spell a new
  record goes out at once, while under load batches fill and the invocation rate (one email
  per batch here) stays bounded;
- invokes the function with Lambda's DynamoDB event. With `ReportBatchItemFailures` the
  lowest reported SequenceNumber is the checkpoint: the records before it are done and the
  rest is retried. A function error (or an invalid answer) fails the whole batch: it is
  retried, or with `BisectBatchOnFunctionError` split in two halves tried one after the other
  (a split does not count as a retry);
- gives a batch up once it was retried `MaximumRetryAttempts` times or its records are older
  than `MaximumRecordAgeInSeconds`: the `OnFailure` destination (SQS or SNS) gets the
  invocation record Lambda sends for stream sources (the batch's shard and sequence-number
  range, not the records), and the shard moves past it;
- while the function is unavailable (none of its execution environments can be started), holds
  the batch and tries again every UNAVAILABLE_RETRY_SECONDS: as for Lambda's throttles, that
  is no retry attempt and no reason to bisect, and only the records' maximum age still applies.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from orderpipe_local.moto.loopback_http import JsonProtocolApi
from orderpipe_local.runtime.functions import FunctionUnavailable, Invocable
from orderpipe_local.sources.batch_response import reported_failures
from orderpipe_local.sources.event_filter import EventFilter
from orderpipe_local.sources.polling import (
    INVOKE_PAYLOAD_LIMIT,
    Counters,
    arn_service,
    as_bool,
    as_float,
    as_int,
    aws_client,
    wait_until,
)
from orderpipe_local.stack.provision import Stack
from orderpipe_local.stack.template import ACCOUNT_ID

if TYPE_CHECKING:
    from mypy_boto3_dynamodbstreams import DynamoDBStreamsClient
    from mypy_boto3_sns import SNSClient
    from mypy_boto3_sqs import SQSClient

log = logging.getLogger(__name__)

GET_RECORDS_LIMIT = 1000
POLL_INTERVAL_SECONDS = 0.25  # Lambda polls each shard four times a second
RETRY_DELAY_SECONDS = 0.05  # first retry of a failed batch; doubles up to MAX_RETRY_DELAY_SECONDS
MAX_RETRY_DELAY_SECONDS = 1.0
UNAVAILABLE_RETRY_SECONDS = 1.0
SHARD_DISCOVERY_SECONDS = 10.0
_RECORD_OVERHEAD = 512  # bytes of a record's JSON besides its `dynamodb` part, roughly


@dataclass
class _StreamRecord:
    event: dict[str, Any]  # the record as Lambda puts it in the event
    sequence_number: str
    created: datetime
    size: int

    @property
    def sequence(self) -> int:
        return int(self.sequence_number)


@dataclass
class _Batch:
    records: list[_StreamRecord]
    invocations: int = 0  # of these very records; a bisected half starts again from 0
    function_error: bool = False  # the last invocation raised


class DynamoDBStreamEventSource:
    """Reads one table's stream for one function, as the template's DynamoDB event source says."""

    def __init__(
        self,
        stack: Stack,
        mapping: dict[str, Any],
        function: Invocable,
        endpoint_url: str,
        *,
        streams_url: str | None = None,
        poll_interval: float = POLL_INTERVAL_SECONDS,
        retry_delay: float = RETRY_DELAY_SECONDS,
    ) -> None:
        self.stack = stack
        self.function = function
        self.mapping = mapping
        self.stream_arn: str = mapping["EventSourceArn"]
        self.region = stack.template.region
        self.batch_size = as_int(mapping.get("BatchSize"), 100)
        self.batching_window = as_float(mapping.get("MaximumBatchingWindowInSeconds"), 0.0)
        self.starting_position = str(mapping.get("StartingPosition") or "LATEST")
        self.max_retries = as_int(mapping.get("MaximumRetryAttempts"), -1)  # -1: until the record expires
        self.max_record_age = as_int(mapping.get("MaximumRecordAgeInSeconds"), -1)  # -1: no limit
        self.bisect = as_bool(mapping.get("BisectBatchOnFunctionError", False))
        self.report_failures = "ReportBatchItemFailures" in (mapping.get("FunctionResponseTypes") or [])
        self.filter = EventFilter.from_criteria(mapping.get("FilterCriteria"))
        self.enabled = as_bool(mapping.get("Enabled", True))
        destination = ((mapping.get("DestinationConfig") or {}).get("OnFailure") or {}).get("Destination")
        self.on_failure: str | None = destination or None
        self.poll_interval = poll_interval
        self.retry_delay = retry_delay
        if self.starting_position not in ("TRIM_HORIZON", "LATEST"):
            raise ValueError(
                f"{function.function_id}: StartingPosition {self.starting_position} is not supported"
            )
        if not 1 <= self.batch_size <= 10_000:
            raise ValueError(f"{function.function_id}: BatchSize must be 1-10000, not {self.batch_size}")
        for unsupported in ("ParallelizationFactor", "TumblingWindowInSeconds"):
            if unsupported in mapping and str(mapping[unsupported]) not in ("", "1", "0"):
                log.warning("%s: %s is not played locally; ignored", function.function_id, unsupported)

        streams_url = streams_url or endpoint_url
        self._streams: DynamoDBStreamsClient = aws_client("dynamodbstreams", streams_url, self.region)
        # GetRecords, read often and record by record, skips botocore's parsing (see JsonProtocolApi).
        self._records = JsonProtocolApi(streams_url, "DynamoDBStreams_20120810", "dynamodb", self.region)
        self._sqs: SQSClient = aws_client("sqs", endpoint_url, self.region)
        self._sns: SNSClient = aws_client("sns", endpoint_url, self.region)
        try:
            table = stack.logical_id_of(self.stream_arn)
        except KeyError:
            table = self.stream_arn.split(":", 5)[-1].split("/")[1]
        self.name = f"{function.function_id} <- {table} stream"
        self.function_arn = f"arn:aws:lambda:{self.region}:{ACCOUNT_ID}:function:{function.function_id}"

        self.counters = Counters(["batches", "succeeded", "failed", "sent_to_dlq", "filtered", "discarded"])
        self._stopping = threading.Event()
        self._readers: dict[str, _ShardReader] = {}
        self._observers: list[Callable[[dict[str, Any]], None]] = []
        self._skipped: set[str] = set()
        self._watcher: threading.Thread | None = None

    # --- Poller ---------------------------------------------------------------------------

    def start(self) -> None:
        if not self.enabled or self._watcher is not None:
            return
        self._stopping.clear()
        self._discover_shards(initial=True)
        self._watcher = threading.Thread(target=self._watch_shards, name=f"{self.name} shards", daemon=True)
        self._watcher.start()

    def stop(self) -> None:
        """Stop reading; the batch being invoked finishes and its result is applied."""
        self._stopping.set()
        if self._watcher is not None:
            self._watcher.join()
            self._watcher = None
        for reader in list(self._readers.values()):
            reader.join()

    def stats(self) -> dict[str, int]:
        return self.counters.snapshot()

    def observe(self, observer: Callable[[dict[str, Any]], None]) -> None:
        """Have `observer` see every record read from the stream, filtered out or not, once."""
        self._observers.append(observer)

    def drained(self) -> bool:
        """True when every shard is read to its end and nothing is buffered, invoked or retried."""
        return all(reader.drained() for reader in list(self._readers.values()))

    def drain(self, timeout: float) -> bool:
        """Wait (up to `timeout` seconds) until `drained()`."""
        return wait_until(self.drained, timeout)

    # --- shards ---------------------------------------------------------------------------

    def _watch_shards(self) -> None:
        while not self._stopping.wait(SHARD_DISCOVERY_SECONDS):
            try:
                self._discover_shards(initial=False)
            except Exception as exc:
                log.warning("%s: DescribeStream failed: %s", self.name, exc)

    def _discover_shards(self, *, initial: bool) -> None:
        """Start a reader per shard; a child shard waits until its parent is read to the end."""
        shards = []
        start_after: str | None = None
        while True:
            kwargs: dict[str, Any] = {"StreamArn": self.stream_arn}
            if start_after:
                kwargs["ExclusiveStartShardId"] = start_after
            description = self._streams.describe_stream(**kwargs)["StreamDescription"]
            shards.extend(description.get("Shards", []))
            start_after = description.get("LastEvaluatedShardId")
            if not start_after:
                break
        known = {shard["ShardId"] for shard in shards}
        for shard in shards:
            shard_id = shard["ShardId"]
            if shard_id in self._readers or shard_id in self._skipped:
                continue
            closed = "EndingSequenceNumber" in shard.get("SequenceNumberRange", {})
            if initial and self.starting_position == "LATEST" and closed:
                self._skipped.add(shard_id)  # LATEST starts at the open shards' tips
                continue
            parent = shard.get("ParentShardId")
            parent_reader = self._readers.get(parent or "")
            parent_pending = parent_reader is None or parent_reader.is_alive()
            if parent in known and parent not in self._skipped and parent_pending:
                continue  # in order: the parent's records first
            position = self.starting_position if initial else "TRIM_HORIZON"
            reader = _ShardReader(self, shard_id, position)
            reader.open()  # now: LATEST means the tip when the mapping starts, not when the thread runs
            self._readers[shard_id] = reader
            reader.start()

    # --- what each shard reader uses ------------------------------------------------------

    def get_records(self, shard_iterator: str, limit: int) -> dict[str, Any]:
        return self._records.call("GetRecords", ShardIterator=shard_iterator, Limit=limit)

    def lambda_record(self, raw: dict[str, Any]) -> _StreamRecord:
        """One record of the event Lambda sends for a DynamoDB stream, from a record of
        GetRecords' answer as it travels (JSON: attribute values as they are, times in epoch
        seconds)."""
        change = raw["dynamodb"]
        seconds = change.get("ApproximateCreationDateTime")
        created = datetime.fromtimestamp(seconds, UTC) if seconds is not None else datetime.now(UTC)
        dynamodb: dict[str, Any] = {
            # Epoch seconds, rounded down, as the stream records them.
            "ApproximateCreationDateTime": int(created.timestamp()),
            "Keys": change.get("Keys", {}),
        }
        for image in ("NewImage", "OldImage"):
            if image in change:
                dynamodb[image] = change[image]
        sequence_number = change["SequenceNumber"]
        dynamodb |= {
            "SequenceNumber": sequence_number,
            "SizeBytes": change.get("SizeBytes", 0),
            "StreamViewType": change.get("StreamViewType", ""),
        }
        event: dict[str, Any] = {
            "eventID": raw.get("eventID", uuid.uuid4().hex),
            "eventName": raw.get("eventName", ""),
            "eventVersion": "1.1",
            "eventSource": "aws:dynamodb",
            "awsRegion": self.region,
            "dynamodb": dynamodb,
            "eventSourceARN": self.stream_arn,
        }
        if "userIdentity" in raw:  # TTL deletions
            event["userIdentity"] = dict(raw["userIdentity"])
        size = int(dynamodb["SizeBytes"]) + _RECORD_OVERHEAD
        return _StreamRecord(event, sequence_number, created, size)

    def invoke(self, batch: _Batch) -> int | None:
        """Invoke with the batch: how many leading records are done (all if it succeeded), None on
        error. FunctionUnavailable propagates: the function was not invoked."""
        sequence_numbers = [record.sequence_number for record in batch.records]
        # The function gets a copy (a retried batch must not see what a handler changed).
        event = {"Records": [record.event for record in batch.records]}
        error: Exception | None = None
        try:
            response = self.function.invoke(event)
        except FunctionUnavailable:
            raise
        except Exception as exc:
            error = exc
        batch.invocations += 1
        self.counters.add("batches")
        batch.function_error = error is not None
        if error is not None:
            log.warning(
                "%s: function error (%s: %s) on a batch of %d",
                self.name,
                type(error).__name__,
                error,
                len(batch.records),
            )
            log.debug("%s: function error", self.name, exc_info=error)
            return None
        if not self.report_failures:
            return len(batch.records)
        failures = reported_failures(response, sequence_numbers, source=self.name)
        if failures is None:
            return None
        if not failures:
            return len(batch.records)
        checkpoint = min(int(sequence_number) for sequence_number in failures)
        return next(index for index, record in enumerate(batch.records) if record.sequence == checkpoint)

    def give_up(self, shard_id: str, records: list[_StreamRecord], batch: _Batch, condition: str) -> None:
        """Send the invocation record of records given up to the OnFailure destination."""
        first, last = records[0], records[-1]
        log.warning(
            "%s: gave up %d record(s) %s..%s (%s)",
            self.name,
            len(records),
            first.sequence_number,
            last.sequence_number,
            condition,
        )
        if not self.on_failure:
            self.counters.add("discarded", len(records))
            return
        response_context: dict[str, Any] = {"statusCode": 200, "executedVersion": "$LATEST"}
        if batch.function_error:
            response_context["functionError"] = "Unhandled"
        invocation_record = {
            "requestContext": {
                "requestId": str(uuid.uuid4()),
                "functionArn": self.function_arn,
                "condition": condition,
                "approximateInvokeCount": batch.invocations,
            },
            "responseContext": response_context,
            "version": "1.0",
            "timestamp": _iso(datetime.now(UTC)),
            "DDBStreamBatchInfo": {
                "shardId": shard_id,
                "startSequenceNumber": first.sequence_number,
                "endSequenceNumber": last.sequence_number,
                "approximateArrivalOfFirstRecord": _iso(first.created),
                "approximateArrivalOfLastRecord": _iso(last.created),
                "batchSize": len(records),
                "streamArn": self.stream_arn,
            },
        }
        try:
            self._send_to_destination(json.dumps(invocation_record))
        except Exception:
            log.exception("%s: could not send to the on-failure destination %s", self.name, self.on_failure)
            self.counters.add("discarded", len(records))
            return
        self.counters.add("sent_to_dlq", len(records))

    def _send_to_destination(self, body: str) -> None:
        assert self.on_failure is not None
        service = arn_service(self.on_failure)
        if service == "sns":
            self._sns.publish(TopicArn=self.on_failure, Message=body)
            return
        if service != "sqs":
            raise ValueError(f"on-failure destination {self.on_failure} is neither SQS nor SNS")
        try:
            queue_url = self.stack.ref(self.stack.logical_id_of(self.on_failure))
        except KeyError:
            queue_url = self._sqs.get_queue_url(QueueName=self.on_failure.rsplit(":", 1)[-1])["QueueUrl"]
        self._sqs.send_message(QueueUrl=queue_url, MessageBody=body)


class _ShardReader(threading.Thread):
    """Reads one shard in order; one batch at a time goes to the function."""

    def __init__(self, source: DynamoDBStreamEventSource, shard_id: str, position: str) -> None:
        super().__init__(name=f"{source.name} {shard_id}", daemon=True)
        self.source = source
        self.shard_id = shard_id
        self.position = position
        self._opened = False
        self._iterator: str | None = None
        self._last_read: str | None = None  # sequence number of the last record read
        self._buffer: deque[_StreamRecord] = deque()  # read, not yet in a batch
        self._work: deque[_Batch] = deque()  # batches (or bisected halves) to invoke, in order
        self._window_opened = float("-inf")
        self._state = threading.Lock()  # held while reading or invoking, not while waiting
        self._waiting_for_function = False  # the function was unavailable at the last try

    def run(self) -> None:
        source = self.source
        while not source._stopping.is_set():
            try:
                with self._state:
                    delay = self._step()
            except Exception as exc:
                log.warning(
                    "%s: reading shard %s failed (%s); retrying in 1 s", source.name, self.shard_id, exc
                )
                log.debug("%s: shard reader error", source.name, exc_info=True)
                delay = 1.0
            if delay is None:
                return
            if delay > 0:
                source._stopping.wait(delay)

    def drained(self) -> bool:
        """Nothing buffered, invoked or retried, and nothing left to read (peeks at the shard)."""
        if not self.is_alive():
            return True
        if not self._state.acquire(blocking=False):
            return False  # reading or invoking right now
        try:
            if not self._opened or self._work or self._buffer:
                return False
            if self._iterator is None:
                return True
            # Shard iterators can be read more than once: this leaves the reader's position alone.
            peek = self.source.get_records(self._iterator, limit=1)
            return not peek.get("Records")
        finally:
            self._state.release()

    def _step(self) -> float | None:
        """One round: invoke the next batch, or read. How long to wait next; None once the shard is done."""
        source = self.source
        if self._work:
            return self._process(self._work[0])
        if not self._opened:
            self.open()
        more_waiting = False
        if self._iterator is not None and len(self._buffer) < source.batch_size:
            more_waiting = self._read()
        window_closes = self._window_opened + source.batching_window
        if self._buffer and (len(self._buffer) >= source.batch_size or time.monotonic() >= window_closes):
            self._work.append(_Batch(self._take_batch()))
            return 0.0
        if self._iterator is None and not self._buffer:
            return None  # the shard is closed and every record of it is done
        if more_waiting:
            return 0.0
        if self._buffer:
            return min(source.poll_interval, max(0.0, window_closes - time.monotonic()))
        return source.poll_interval

    def open(self) -> None:
        """Take the shard iterator at the starting position."""
        self._iterator = self._shard_iterator()
        self._opened = True

    def _shard_iterator(self) -> str | None:
        kwargs: dict[str, Any] = {"StreamArn": self.source.stream_arn, "ShardId": self.shard_id}
        if self._last_read is not None:
            kwargs |= {"ShardIteratorType": "AFTER_SEQUENCE_NUMBER", "SequenceNumber": self._last_read}
        else:
            kwargs["ShardIteratorType"] = self.position
        return self.source._streams.get_shard_iterator(**kwargs).get("ShardIterator")

    def _read(self) -> bool:
        """One GetRecords; True if it came back full (more records are likely waiting)."""
        source = self.source
        assert self._iterator is not None
        limit = min(GET_RECORDS_LIMIT, source.batch_size - len(self._buffer))
        try:
            response = source.get_records(self._iterator, limit=limit)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "ExpiredIteratorException":
                raise
            self._iterator = self._shard_iterator()
            return True
        self._iterator = response.get("NextShardIterator")
        records = response.get("Records", [])
        for raw in records:
            record = source.lambda_record(raw)
            self._last_read = record.sequence_number
            for observer in source._observers:
                observer(record.event)
            if source.filter.matches(record.event):
                self._buffer.append(record)
            else:
                source.counters.add("filtered")
        return len(records) >= limit

    def _take_batch(self) -> list[_StreamRecord]:
        batch = [self._buffer.popleft()]
        size = batch[0].size
        while self._buffer and len(batch) < self.source.batch_size:
            if size + self._buffer[0].size > INVOKE_PAYLOAD_LIMIT:
                break
            record = self._buffer.popleft()
            batch.append(record)
            size += record.size
        return batch

    def _process(self, batch: _Batch) -> float:
        """Invoke the batch at the head of the work and apply the outcome; the wait before the next step."""
        source = self.source
        if source.max_record_age >= 0:
            now = datetime.now(UTC)
            expired = 0
            for record in batch.records:
                if (now - record.created).total_seconds() <= source.max_record_age:
                    break
                expired += 1
            if expired:
                source.give_up(self.shard_id, batch.records[:expired], batch, "RecordAgeExceeded")
                batch.records = batch.records[expired:]
                if not batch.records:
                    self._work.popleft()
                return 0.0

        try:
            done = source.invoke(batch)
        except FunctionUnavailable as exc:
            if not self._waiting_for_function:
                log.warning("%s: %s; holding the batch of %d", source.name, exc, len(batch.records))
            self._waiting_for_function = True
            return UNAVAILABLE_RETRY_SECONDS
        self._waiting_for_function = False
        self._window_opened = time.monotonic()
        if done == len(batch.records):
            source.counters.add("succeeded", done)
            self._work.popleft()
            return 0.0
        if done is not None:  # a partial batch response: retry from the checkpoint
            source.counters.add("succeeded", done)
            source.counters.add("failed", len(batch.records) - done)
            batch.records = batch.records[done:]
        else:
            source.counters.add("failed", len(batch.records))
            if source.bisect and len(batch.records) > 1:
                half = (len(batch.records) + 1) // 2
                self._work.popleft()
                self._work.extendleft([_Batch(batch.records[half:]), _Batch(batch.records[:half])])
                return 0.0
        if 0 <= source.max_retries < batch.invocations:
            source.give_up(self.shard_id, batch.records, batch, "RetryAttemptsExhausted")
            self._work.popleft()
            return 0.0
        return min(source.retry_delay * 2.0 ** (batch.invocations - 1), MAX_RETRY_DELAY_SECONDS)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
