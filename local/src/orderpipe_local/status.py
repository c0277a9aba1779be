"""What the status line of `orderpipe local` shows.

Stored and notified orders are counted from OrdersTable's stream, as the stream's event source
reads it (every record, before its filter): the writer's conditional put makes exactly one
INSERT per order, and the notifier's conditional update (PLACED -> NOTIFIED) exactly one MODIFY
whose new image is NOTIFIED. That stays exact whatever is redelivered or retried, and costs no
call of its own. Queue depths come from GetQueueAttributes.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from orderpipe.models import OrderStatus
from orderpipe_local.runtime.functions import FunctionHealth
from orderpipe_local.sources.dynamodb_stream import DynamoDBStreamEventSource
from orderpipe_local.sources.polling import arn_service, aws_client
from orderpipe_local.stack.provision import Stack

if TYPE_CHECKING:
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

    def line(self) -> str:
        parts = [
            f"accepted {self.accepted}",
            f"queued {self.queued}",
            f"stored {self.stored}",
            f"notified {self.notified}",
            f"emails {self.emails}",
            *(f"{name} {count}" for name, count in self.dead_letters.items()),
        ]
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
        self, stack: Stack, endpoint_url: str, stream_sources: list[DynamoDBStreamEventSource]
    ) -> None:
        # A status line is no reason to wait: no retries, short timeouts.
        self.sqs: SQSClient = aws_client(
            "sqs", endpoint_url, stack.template.region, attempts=1, connect_timeout=2, read_timeout=10
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
            if self.stream_counters:
                status.stored = sum(counter.inserted for counter in self.stream_counters.values())
                status.notified = sum(counter.notified for counter in self.stream_counters.values())
        except (BotoCoreError, ClientError) as error:
            log.debug("status not refreshed: %s", error)
        self._last = status
        return status
