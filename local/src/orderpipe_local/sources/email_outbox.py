"""SNS email subscriptions delivered to a folder of `.eml` files.

moto keeps email subscriptions but sends nothing. Rather than re-implement SNS, a local-only
queue (`{stack}-LocalEmailOutbox`) is subscribed to every topic that has email or email-json
subscriptions; moto delivers to it for real (the JSON envelope with Subject, Message,
Timestamp, TopicArn, MessageId). Each envelope then becomes one message per email
subscription, written as a file the way SNS would mail it: From the topic's display name
<no-reply@sns.amazonaws.com>, To the endpoint, the Subject (SNS's default when none was
given), Date, Message-ID, and a UTF-8 plain-text body holding the Message (for email-json,
the JSON envelope). File names sort by delivery time.

Unconfirmed subscriptions get mail too (nobody can click a confirmation link locally).

SNS's email rate is played: past EMAILS_PER_SECOND deliveries in a second (for the whole
pipeline, as SNS counts them per account) a delivery is refused and goes where SNS sends an
email it could not deliver, the subscription's RedrivePolicy dead-letter queue, with the
reason; refusals are counted in REFUSALS_FILE in the outbox, which `orderpipe doctor` reads.
"""

from __future__ import annotations

import email.policy
import hashlib
import json
import logging
import os
import re
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orderpipe_local.sources.polling import Counters, aws_client, wait_until
from orderpipe_local.stack.provision import Stack

if TYPE_CHECKING:
    from mypy_boto3_sns import SNSClient
    from mypy_boto3_sqs import SQSClient
    from mypy_boto3_sqs.type_defs import MessageTypeDef

log = logging.getLogger(__name__)

EMAIL_PROTOCOLS = ("email", "email-json")
SNS_SENDER = "no-reply@sns.amazonaws.com"
DEFAULT_DISPLAY_NAME = "AWS Notifications"
DEFAULT_SUBJECT = "AWS Notification Message"
SUBSCRIPTION_REFRESH_SECONDS = 2.0
# Amazon SNS quotas, "Email messages: 10 messages per second" per account
# (https://docs.aws.amazon.com/general/latest/gr/sns.html); past it SNS throttles and may
# deactivate the subscription.
EMAILS_PER_SECOND = 10
REFUSALS_FILE = ".refused-deliveries.json"
REFUSED_ERROR_CODE = "Throttling"
_CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f]+")

OnEmail = Callable[[Path, str], None]
# 7-bit clean files: non-ASCII text goes quoted-printable or base64, headers RFC 2047-encoded.
_EML_POLICY = email.policy.default.clone(cte_type="7bit")


class EmailOutbox:
    """Delivers every topic's email subscriptions into `outbox_dir`; `on_email(path, summary)` per email."""

    name = "email outbox"

    def __init__(
        self,
        stack: Stack,
        endpoint_url: str,
        outbox_dir: Path,
        on_email: OnEmail,
        *,
        wait_seconds: int = 1,
    ) -> None:
        self.outbox_dir = Path(outbox_dir)
        self.on_email = on_email
        self.region = stack.template.region
        self.queue_name = f"{stack.template.stack_name}-LocalEmailOutbox"
        self.wait_seconds = wait_seconds
        self._sqs: SQSClient = aws_client("sqs", endpoint_url, self.region)
        self._sns: SNSClient = aws_client("sns", endpoint_url, self.region)
        self.counters = Counters(["emails", "notifications", "refused"])
        self.rate_limit = EmailRateLimit(EMAILS_PER_SECOND)
        self._dead_letter_urls: dict[str, str | None] = {}
        self.queue_url = ""
        self.queue_arn = ""
        self._subscribed_topics: set[str] = set()
        self._display_names: dict[str, str] = {}
        self._stopping = threading.Event()
        self._lock = threading.Condition()
        self._held = 0
        self._thread: threading.Thread | None = None
        self._sequence = 0
        self._last_refresh = 0.0

    # --- Poller ---------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            return
        self.outbox_dir.mkdir(parents=True, exist_ok=True)
        self._write_refusals(None)
        self.queue_url = self._sqs.create_queue(
            QueueName=self.queue_name, Attributes={"VisibilityTimeout": "30"}
        )["QueueUrl"]
        self.queue_arn = self._sqs.get_queue_attributes(QueueUrl=self.queue_url, AttributeNames=["QueueArn"])[
            "Attributes"
        ]["QueueArn"]
        self.refresh_subscriptions()
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop polling, after delivering what already reached the outbox queue."""
        self._stopping.set()
        if self._thread is None:
            return
        self._thread.join()
        self._thread = None
        try:
            self.deliver_pending(deadline=time.monotonic() + 5.0)
        except Exception as exc:
            log.warning("%s: last delivery failed: %s", self.name, exc)

    def stats(self) -> dict[str, int]:
        return self.counters.snapshot()

    def drained(self) -> bool:
        """True when nothing waits in the outbox queue and nothing is being written."""
        with self._lock:
            if self._held:
                return False
        attributes = self._sqs.get_queue_attributes(
            QueueUrl=self.queue_url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        with self._lock:
            return self._held == 0 and all(int(value) == 0 for value in attributes.values())

    def drain(self, timeout: float) -> bool:
        return wait_until(self.drained, timeout)

    # --- subscriptions --------------------------------------------------------------------

    def refresh_subscriptions(self) -> None:
        """Subscribe the outbox queue to each topic that has (gained) an email subscription."""
        self._last_refresh = time.monotonic()
        for topic_arn in self._topic_arns():
            if topic_arn in self._subscribed_topics or not self._email_subscriptions(topic_arn):
                continue
            self._sns.subscribe(TopicArn=topic_arn, Protocol="sqs", Endpoint=self.queue_arn)
            self._subscribed_topics.add(topic_arn)

    def _topic_arns(self) -> list[str]:
        arns: list[str] = []
        for page in self._sns.get_paginator("list_topics").paginate():
            arns.extend(topic["TopicArn"] for topic in page.get("Topics", []))
        return arns

    def _email_subscriptions(self, topic_arn: str) -> list[tuple[str, str, str]]:
        """(protocol, address, subscription ARN) of the topic's email subscriptions, confirmed or pending."""
        found = []
        paginator = self._sns.get_paginator("list_subscriptions_by_topic")
        for page in paginator.paginate(TopicArn=topic_arn):
            for subscription in page.get("Subscriptions", []):
                protocol = subscription.get("Protocol", "")
                if protocol in EMAIL_PROTOCOLS and subscription.get("Endpoint"):
                    found.append(
                        (protocol, subscription["Endpoint"], subscription.get("SubscriptionArn", ""))
                    )
        return found

    def _display_name(self, topic_arn: str) -> str:
        if topic_arn not in self._display_names:
            attributes = self._sns.get_topic_attributes(TopicArn=topic_arn)["Attributes"]
            self._display_names[topic_arn] = attributes.get("DisplayName") or DEFAULT_DISPLAY_NAME
        return self._display_names[topic_arn]

    # --- delivery -------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                if time.monotonic() - self._last_refresh >= SUBSCRIPTION_REFRESH_SECONDS:
                    self.refresh_subscriptions()
                self._deliver_batch(self.wait_seconds)
            except Exception as exc:
                log.warning("%s: delivery failed (%s); retrying in 1 s", self.name, exc)
                log.debug("%s: delivery error", self.name, exc_info=True)
                self._stopping.wait(1.0)

    def deliver_pending(self, deadline: float) -> None:
        """Deliver what waits in the outbox queue now (used when stopping)."""
        while time.monotonic() < deadline and self._deliver_batch(0):
            pass

    def _deliver_batch(self, wait: int) -> int:
        messages = self._sqs.receive_message(
            QueueUrl=self.queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=wait
        ).get("Messages", [])
        if not messages:
            return 0
        with self._lock:
            self._held += len(messages)
        try:
            delivered = []
            for message in messages:
                try:
                    self._deliver(message)
                except OSError as exc:
                    # Not deleted: the notification comes back after the visibility timeout.
                    log.error("%s: could not write an email to %s: %s", self.name, self.outbox_dir, exc)
                    continue
                delivered.append(message)
            if delivered:
                self._sqs.delete_message_batch(
                    QueueUrl=self.queue_url,
                    Entries=[
                        {"Id": str(index), "ReceiptHandle": message["ReceiptHandle"]}
                        for index, message in enumerate(delivered)
                    ],
                )
        finally:
            with self._lock:
                self._held -= len(messages)
                self._lock.notify_all()
        return len(messages)

    def _deliver(self, message: MessageTypeDef) -> None:
        body = message.get("Body", "")
        try:
            envelope: dict[str, Any] = json.loads(body)
            topic_arn = envelope["TopicArn"]
        except (ValueError, KeyError, TypeError):
            log.warning("%s: not an SNS notification, dropped: %.200r", self.name, body)
            return
        self.counters.add("notifications")
        sent = _parse_timestamp(envelope.get("Timestamp"))
        for protocol, address, subscription_arn in self._email_subscriptions(topic_arn):
            if not self.rate_limit.allow():
                self._refuse(body, address, subscription_arn)
                continue
            mail = self._render(envelope, sent, protocol, address)
            path = self._write(mail)
            self.counters.add("emails")
            self.on_email(path, f"{sent.astimezone():%H:%M:%S} to {address}: {mail['Subject']}")

    def _refuse(self, body: str, address: str, subscription_arn: str) -> None:
        """Put a delivery over the email rate where SNS puts an undeliverable one."""
        self.counters.add("refused")
        reason = f"over SNS's email rate of {EMAILS_PER_SECOND} a second; not delivered to {address}"
        dead_letter_url = self._dead_letter_url(subscription_arn)
        if dead_letter_url is None:
            log.warning("%s: email %s, and the subscription has no DLQ: dropped", self.name, reason)
        else:
            self._sqs.send_message(
                QueueUrl=dead_letter_url,
                MessageBody=body,
                MessageAttributes={
                    "ErrorCode": {"DataType": "String", "StringValue": REFUSED_ERROR_CODE},
                    "ErrorMessage": {"DataType": "String", "StringValue": reason},
                    "SubscriptionArn": {"DataType": "String", "StringValue": subscription_arn},
                },
            )
            log.warning("%s: email %s; parked in its DLQ", self.name, reason)
        self._write_refusals(reason)

    def _dead_letter_url(self, subscription_arn: str) -> str | None:
        if subscription_arn not in self._dead_letter_urls:
            url = None
            try:
                attributes = self._sns.get_subscription_attributes(SubscriptionArn=subscription_arn)[
                    "Attributes"
                ]
                target = json.loads(attributes.get("RedrivePolicy") or "{}").get("deadLetterTargetArn")
                if target:
                    account, name = target.split(":")[4:6]
                    url = self._sqs.get_queue_url(QueueName=name, QueueOwnerAWSAccountId=account)["QueueUrl"]
            except (ValueError, self._sns.exceptions.ClientError) as exc:
                log.warning("%s: no DLQ found for %s: %s", self.name, subscription_arn, exc)
            self._dead_letter_urls[subscription_arn] = url
        return self._dead_letter_urls[subscription_arn]

    def _write_refusals(self, reason: str | None) -> None:
        refusals = {
            "refused": self.counters.snapshot()["refused"],
            "emails_per_second": EMAILS_PER_SECOND,
            "last": datetime.now(UTC).isoformat() if reason else None,
            "reason": reason,
        }
        path = self.outbox_dir / REFUSALS_FILE
        temporary = path.with_suffix(".tmp")
        temporary.write_text(json.dumps(refusals) + "\n")
        temporary.replace(path)

    def _render(self, envelope: dict[str, Any], sent: datetime, protocol: str, address: str) -> EmailMessage:
        topic_arn = envelope["TopicArn"]
        message_id = str(envelope.get("MessageId", ""))
        mail = EmailMessage(policy=_EML_POLICY)
        mail["From"] = Address(display_name=_header_text(self._display_name(topic_arn)), addr_spec=SNS_SENDER)
        mail["To"] = address
        mail["Subject"] = _header_text(envelope.get("Subject") or DEFAULT_SUBJECT)
        mail["Date"] = format_datetime(sent)
        recipient = hashlib.sha256(address.encode()).hexdigest()[:12]
        mail["Message-ID"] = (
            f"<{message_id or os.urandom(8).hex()}.{recipient}@{self.region}.sns.amazonaws.com>"
        )
        mail["X-Amz-Sns-Message-Id"] = message_id
        mail["X-Amz-Sns-Topic-Arn"] = topic_arn
        text = (
            json.dumps(envelope, indent=2) if protocol == "email-json" else str(envelope.get("Message", ""))
        )
        mail.set_content(text, charset="utf-8")  # adds MIME-Version
        return mail

    def _write(self, mail: EmailMessage) -> Path:
        """Write atomically (a reader never sees half a file) under a unique, time-sortable name."""
        data = mail.as_bytes()
        with tempfile.NamedTemporaryFile(dir=self.outbox_dir, prefix=".", suffix=".tmp", delete=False) as tmp:
            tmp.write(data)
        while True:
            with self._lock:
                self._sequence += 1
                sequence = self._sequence
            path = self.outbox_dir / f"{datetime.now(UTC):%Y%m%dT%H%M%S%fZ}-{sequence:06d}.eml"
            if not path.exists():
                os.replace(tmp.name, path)
                return path


class EmailRateLimit:
    """At most `per_second` deliveries in any sliding one-second window."""

    def __init__(self, per_second: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_second = per_second
        self._clock = clock
        self._recent: deque[float] = deque()
        self._lock = threading.Lock()

    def allow(self) -> bool:
        now = self._clock()
        with self._lock:
            while self._recent and now - self._recent[0] >= 1.0:
                self._recent.popleft()
            if len(self._recent) >= self.per_second:
                return False
            self._recent.append(now)
            return True


def _header_text(text: str) -> str:
    """SNS refuses control characters in subjects; never let one split a header."""
    return _CONTROL_CHARACTERS.sub(" ", text).strip()


def _parse_timestamp(value: Any) -> datetime:
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC)
        except ValueError:
            pass
    return datetime.now(UTC)
