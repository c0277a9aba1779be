"""The pipeline's contract, end to end, over HTTP and AWS APIs only: by default against a local
pipeline these tests start, or against a deployed stack with `--stack-name NAME`.

Against a deployed stack they change OrdersQueue's attributes for a while (restored after) and
write one unreadable item into OrdersTable: run them against a dev stack, not prod's.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, cast

import pytest

from orderpipe_local.testing import Email, load_event, wait_until
from tests.acceptance.conftest import OrdersTarget, emails_or_skip

if TYPE_CHECKING:
    from mypy_boto3_sqs.literals import QueueAttributeNameType

pytestmark = pytest.mark.acceptance

ORDER: dict[str, Any] = json.loads(load_event("ingest-post-order.json")["body"])


def place_order(target: OrdersTarget, name: str = "Ada Lovelace", **headers: str) -> str:
    order = dict(ORDER, customer={"name": name, "email": "ada@example.com"})
    status, _, body = target.request("POST", "/orders", order, headers)
    assert status == 202, body
    order_id: str = body["orderId"]
    return order_id


def emails_naming(emails: list[Email], order_id: str) -> list[Email]:
    return [mail for mail in emails if order_id in mail.body]


def notified(target: OrdersTarget, *order_ids: str) -> bool:
    return all(target.order_status(order_id) == "NOTIFIED" for order_id in order_ids)


@contextmanager
def queue_attributes(target: OrdersTarget, logical_id: str, **attributes: str) -> Iterator[None]:
    """Set attributes of one of the pipeline's queues, then restore them."""
    sqs = target.sqs()
    url = target.resource(logical_id)
    wanted = {cast("QueueAttributeNameType", name): value for name, value in attributes.items()}
    before = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=list(wanted))["Attributes"]
    sqs.set_queue_attributes(QueueUrl=url, Attributes=wanted)
    try:
        yield
    finally:
        sqs.set_queue_attributes(QueueUrl=url, Attributes=before)


def test_an_order_is_accepted_with_its_location_and_unknown_routes_are_api_gateways_404(
    target: OrdersTarget,
) -> None:
    status, headers, body = target.request("POST", "/orders", ORDER)
    missing = target.request("GET", "/nowhere")

    assert status == 202, body
    assert body["status"] == "ACCEPTED"
    assert headers["Location"] == f"/orders/{body['orderId']}"
    assert missing[0] == 404
    assert missing[2] == {"message": "Not Found"}
    # (and its batch is closed before the next test's single order is posted)
    wait_until(lambda: notified(target, body["orderId"]), target.mail_timeout)


def test_an_order_is_stored_and_mailed_alone_and_a_burst_in_a_digest(target: OrdersTarget) -> None:
    # Given one order on its own, then a burst of orders
    single = place_order(target, "Single Order")
    wait_until(lambda: notified(target, single), target.mail_timeout)
    burst = [place_order(target, f"Burst {n}") for n in range(6)]

    # Then every one is marked NOTIFIED
    wait_until(lambda: notified(target, *burst), target.mail_timeout)

    # And (where the emails can be read) the first came out alone, named in the subject, and
    # each of the burst in exactly one email, at least one a digest
    emails = emails_or_skip(target)
    (mail,) = emails_naming(emails, single)
    assert single in mail.subject
    assert "Single Order" in mail.body
    for order_id in burst:
        assert len(emails_naming(emails, order_id)) == 1
    digests = [mail for mail in emails if sum(order_id in mail.body for order_id in burst) >= 2]
    assert digests
    assert all(re.match(r"\d+ new orders", mail.subject) for mail in digests)


def test_get_goes_from_404_to_placed_to_notified(target: OrdersTarget) -> None:
    # Given accepted orders reach the writer two seconds late (queue delay)
    with queue_attributes(target, "OrdersQueue", DelaySeconds="2"):
        order_id = place_order(target, "Watched Order")

    # When its status is read until it is NOTIFIED
    seen: list[str | int] = []

    def is_notified() -> bool:
        status = target.order_status(order_id)
        if not seen or seen[-1] != status:
            seen.append(status)
        return status == "NOTIFIED"

    wait_until(is_notified, target.mail_timeout, interval=0.05)

    # Then it went through the states in order, never back (PLACED lasts as long as the
    # notifier's batching window, which a GET on a busy machine can miss)
    assert seen in ([404, "PLACED", "NOTIFIED"], [404, "NOTIFIED"])


def test_a_replayed_post_with_an_idempotency_key_gives_one_order(target: OrdersTarget) -> None:
    # Given an order posted twice with the same Idempotency-Key
    key = f"checkout-{uuid.uuid4()}"
    name = f"Replay {key}"
    first = place_order(target, name, **{"Idempotency-Key": key})
    second = place_order(target, name, **{"Idempotency-Key": key})

    # And the same key with another body
    other = dict(ORDER, customer={"name": "Someone Else", "email": "else@example.com"})
    conflict = target.request("POST", "/orders", other, {"Idempotency-Key": key})

    # Then both answers name one order, the other body is refused, and one order is stored
    assert second == first
    assert conflict[0] == 422
    wait_until(lambda: notified(target, first), target.mail_timeout)
    items = target.dynamodb().scan(
        TableName=target.resource("OrdersTable"),
        FilterExpression="customer.#n = :name",
        ExpressionAttributeNames={"#n": "name"},
        ExpressionAttributeValues={":name": {"S": name}},
    )["Items"]
    assert [item["orderId"]["S"] for item in items] == [first]
    assert len(emails_naming(emails_or_skip(target), first)) == 1


def test_a_poison_message_reaches_orders_dlq_and_blocks_nothing(target: OrdersTarget) -> None:
    # Given a one-second visibility timeout (so five receives take seconds, not 17 minutes)
    # and a message no writer can store, put straight on the queue between valid orders
    poison = f"not an order {uuid.uuid4()}"
    with queue_attributes(target, "OrdersQueue", VisibilityTimeout="1"):
        before = place_order(target, "Before Poison")
        target.sqs().send_message(QueueUrl=target.resource("OrdersQueue"), MessageBody=poison)
        after = place_order(target, "After Poison")

        # Then the orders around it are stored and mailed
        wait_until(lambda: notified(target, before, after), target.mail_timeout)

        # And the poison message lands in OrdersDLQ after its five receives
        def poison_in_dlq() -> bool:
            messages = (
                target.sqs()
                .receive_message(
                    QueueUrl=target.resource("OrdersDLQ"), MaxNumberOfMessages=10, VisibilityTimeout=0
                )
                .get("Messages", [])
            )
            for message in messages:
                if message["Body"] == poison:  # taken out: the target's DLQ holds only real dead letters
                    target.sqs().delete_message(
                        QueueUrl=target.resource("OrdersDLQ"), ReceiptHandle=message["ReceiptHandle"]
                    )
                    return True
            return False

        wait_until(poison_in_dlq, 60.0, interval=0.5)


def test_a_record_the_notifier_cannot_handle_is_handed_to_the_replay_and_isolated(
    target: OrdersTarget,
) -> None:
    # Given an item no notifier can read, written straight into OrdersTable, and valid orders around it
    broken_id = f"broken-{uuid.uuid4()}"
    before = place_order(target, "Before Broken")
    target.dynamodb().put_item(
        TableName=target.resource("OrdersTable"),
        Item={"orderId": {"S": broken_id}, "status": {"S": "PLACED"}},
    )
    after = place_order(target, "After Broken")

    # Then the valid orders are mailed
    wait_until(lambda: notified(target, before, after), target.mail_timeout)

    # And the notifier's mapping hands the broken record over to NotifierRetryQueue (where the
    # replay function takes it, and fails it: it is no order)
    def retry_queue_depth() -> int:
        attributes = target.sqs().get_queue_attributes(
            QueueUrl=target.resource("NotifierRetryQueue"),
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        return sum(int(value) for value in attributes.values())

    wait_until(lambda: retry_queue_depth() >= 1, 60.0, interval=0.5)

    # When the broken item is deleted, the replay's next try finds nothing to announce, and the
    # failure record leaves the retry queue without reaching NotifierDLQ
    target.dynamodb().delete_item(TableName=target.resource("OrdersTable"), Key={"orderId": {"S": broken_id}})
    wait_until(lambda: retry_queue_depth() == 0, target.replay_timeout, interval=1.0)
    parked = target.sqs().get_queue_attributes(
        QueueUrl=target.resource("NotifierDLQ"), AttributeNames=["ApproximateNumberOfMessages"]
    )["Attributes"]["ApproximateNumberOfMessages"]
    assert parked == "0"
    assert not emails_naming(emails_or_skip(target), broken_id)
