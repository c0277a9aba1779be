"""What the status line of `orderpipe local` shows.

Stored orders are what the tables whose streams trigger a function hold (DescribeTable's
ItemCount, which moto keeps exact), so the count does not lag while the stream's reader waits
on a failing notifier. Notified orders are counted from the stream, as its event source reads
it (every record, before its filter): the notifier's conditional update (PLACED -> NOTIFIED)
makes exactly one MODIFY whose new image is NOTIFIED, whatever is redelivered or retried.
Queue depths come from GetQueueAttributes; injected faults from the endpoint (`moto.faults`)
and the queue sources' duplicate deliveries.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import urllib3
from botocore.exceptions import BotoCoreError, ClientError

from orderpipe.models import OrderStatus
from orderpipe_local.moto.faults import read_faults
from orderpipe_local.runtime.functions import FunctionHealth
from orderpipe_local.sources.dynamodb_stream import DynamoDBStreamEventSource
from orderpipe_local.sources.polling import arn_service, aws_client
from orderpipe_local.sources.sqs import SqsEventSource
from orderpipe_local.stack.provision import Stack

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_sqs import SQSClient
    from mypy_boto3_sqs.literals import QueueAttributeNameType

log = logging.getLogger(__name__)

_QUEUE_DEPTH_ATTRIBUTES: tuple[QueueAttributeNameType, ...] = (
    "ApproximateNumberOfMessages",
    "ApproximateNumberOfMessagesNotVisible",
    "ApproximateNumberOfMessagesDelayed",
)


@dataclass
class PipelineStatus:
    accepted: int = 0
    queued: int = 0
    stored: int = 0
    notified: int = 0
    emails: int = 0
    dead_letters: dict[str, int] = field(default_factory=dict)
    functions: list[FunctionHealth] = field(default_factory=list)
    faults: int | None = None  # injected so far; None while none was ever asked for

    def line(self) -> str:
        parts = [
            f"accepted {self.accepted}",
            f"queued {self.queued}",
            f"stored {self.stored}",
            f"notified {self.notified}",
            f"emails {self.emails}",
            *(f"{name} {count}" for name, count in self.dead_letters.items()),
        ]
        if self.faults is not None:
            parts.append(f"faults {self.faults}")
        if self.functions:  # execution environments up of each function: `writer 4/4`
            parts.append("functions " + ", ".join(health.summary() for health in self.functions))
        return " | ".join(parts)


class StreamCounter:
    """Counts new and notified orders in the records of a table's stream it is shown."""

    def __init__(self) -> None:
        self.inserted = 0
        self.notified = 0
        self._lock = threading.Lock()

    def count(self, record: dict[str, Any]) -> None:
        """One record as Lambda receives it."""
        with self._lock:
            if record["eventName"] == "INSERT":
                self.inserted += 1
            elif record["eventName"] == "MODIFY":
                status = record.get("dynamodb", {}).get("NewImage", {}).get("status", {}).get("S")
                if status == OrderStatus.NOTIFIED.value:
                    self.notified += 1


class PipelineMonitor:
    """Counts for the status line: queue depths, dead letters, stored and notified orders."""

    def __init__(
        self,
        stack: Stack,
        endpoint_url: str,
        stream_sources: list[DynamoDBStreamEventSource],
        queue_sources: list[SqsEventSource] | None = None,
    ) -> None:
        # A status line is no reason to wait: no retries, short timeouts.
        self.endpoint_url = endpoint_url
        self.sqs: SQSClient = aws_client(
            "sqs", endpoint_url, stack.template.region, attempts=1, connect_timeout=2, read_timeout=10
        )
        self.dynamodb: DynamoDBClient = aws_client(
            "dynamodb", endpoint_url, stack.template.region, attempts=1, connect_timeout=2, read_timeout=10
        )
        self.queue_sources = queue_sources or []
        # The tables whose streams are read: the orders a writer stored.
        self.stored_tables = sorted(
            {source.stream_arn.split(":table/", 1)[1].split("/", 1)[0] for source in stream_sources}
        )
        self.source_queues: dict[str, str] = {}
        self.dead_letter_queues: dict[str, str] = {}
        for logical_id in stack.template.resources_of_type("AWS::SQS::Queue"):
            redrive = stack.resolve(
                stack.template.resources[logical_id].get("Properties", {}).get("RedrivePolicy", {})
            )
            if target := redrive.get("deadLetterTargetArn"):
                dlq = stack.logical_id_of(target)
                self.dead_letter_queues[dlq] = stack.ref(dlq)
        for function_id in stack.functions():
            for mapping in stack.event_source_mappings(function_id):
                source = stack.logical_id_of(mapping["EventSourceArn"])
                service = arn_service(mapping["EventSourceArn"])
                if service == "sqs":
                    self.source_queues[source] = stack.ref(source)
                destination = mapping.get("DestinationConfig", {}).get("OnFailure", {}).get("Destination")
                if destination and arn_service(destination) == "sqs":
                    dlq = stack.logical_id_of(destination)
                    self.dead_letter_queues[dlq] = stack.ref(dlq)
        # A destination some function consumes (NotifierRetryQueue) is work still under way,
        # counted as queued, not a dead letter.
        for source in self.source_queues:
            self.dead_letter_queues.pop(source, None)
        # One counter a stream, fed by one of the event sources reading it.
        self.stream_counters: dict[str, StreamCounter] = {}
        for stream_source in stream_sources:
            if stream_source.stream_arn not in self.stream_counters:
                self.stream_counters[stream_source.stream_arn] = counter = StreamCounter()
                stream_source.observe(counter.count)
        self._last = PipelineStatus(dead_letters=dict.fromkeys(self.dead_letter_queues, 0))

    def queue_depth(self, queue_url: str) -> int:
        attributes = self.sqs.get_queue_attributes(
            QueueUrl=queue_url,
            AttributeNames=list(_QUEUE_DEPTH_ATTRIBUTES),
        )["Attributes"]
        return sum(int(attributes.get(name) or 0) for name in _QUEUE_DEPTH_ATTRIBUTES)

    def status(self, accepted: int, emails: int) -> PipelineStatus:
        """The counts now; the last known ones where the endpoint does not answer."""
        status = PipelineStatus(
            accepted=accepted,
            emails=emails,
            queued=self._last.queued,
            stored=self._last.stored,
            notified=self._last.notified,
            dead_letters=dict(self._last.dead_letters),
        )
        try:
            status.queued = sum(self.queue_depth(url) for url in self.source_queues.values())
            for name, url in self.dead_letter_queues.items():
                status.dead_letters[name] = self.queue_depth(url)
            status.stored = sum(
                self.dynamodb.describe_table(TableName=table)["Table"].get("ItemCount", 0)
                for table in self.stored_tables
            )
            status.notified = sum(counter.notified for counter in self.stream_counters.values())
        except (BotoCoreError, ClientError) as error:
            log.debug("status not refreshed: %s", error)
        status.faults = self._faults()
        self._last = status
        return status

    def _faults(self) -> int | None:
        duplicated = sum(source.counters.snapshot()["duplicated"] for source in self.queue_sources)
        wanted = any(source.duplicate_deliveries for source in self.queue_sources)
        try:
            injected: dict[str, int] = read_faults(self.endpoint_url, timeout=2.0)["injected"]
        except (OSError, ValueError, urllib3.exceptions.HTTPError) as error:
            log.debug("fault counts not read: %s", error)
            return self._last.faults
        if not injected and not wanted:
            return None
        return sum(injected.values()) + duplicated
