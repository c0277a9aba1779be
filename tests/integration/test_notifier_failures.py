"""NotifierFunction when SNS or DynamoDB stall or lose their answers, and when time runs out:
no email that left is ever sent again by a retry (invariant 3).

What reaches support is read from an SQS queue subscribed to OrdersTopic (`inbox`).
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Callable
from typing import Any

import pytest

from orderpipe import notifier as notifier_step
from orderpipe.aws import clients
from orderpipe.aws.orders_table import from_attribute_values, to_attribute_values
from orderpipe.aws.orders_topic import TopicUnavailable
from orderpipe.models import Order
from orderpipe.settings import settings
from orderpipe_local.runtime.lambda_context import LocalLambdaContext
from orderpipe_local.stack.provision import Stack
from orderpipe_local.stack.template import Template
from orderpipe_local.testing import load_event
from tests.integration.aws_faults import (
    LambdaEnded,
    end_invocation_during,
    fail_calls,
    stall_calls,
    unreachable,
)
from tests.integration.conftest import Email, handler_of
from tests.integration.test_notifier import (
    ADA,
    GRACE,
    ZOE,
    FlakyTopic,
    Handler,
    big_insert_event,
    failed_ids,
    handed_to_the_replay,
    metric_total,
    status_of,
    store_inserted_orders,
)

BATCH = (ADA, GRACE, ZOE)


@pytest.fixture
def notifier(stack: Stack, template: Template) -> Handler:
    return handler_of(template, "NotifierFunction")


def notifier_context(timeout_seconds: float = 30) -> LocalLambdaContext:
    return LocalLambdaContext("NotifierFunction", timeout_seconds=timeout_seconds)


def emitted(output: str) -> dict[str, Any]:
    documents: list[dict[str, Any]] = [json.loads(line) for line in output.splitlines() if '"_aws"' in line]
    (emf,) = documents
    return emf


# --- SNS --------------------------------------------------------------------------------------


def test_when_snss_answer_is_lost_the_email_counts_as_sent_and_no_retry_sends_it_again(
    stack: Stack, notifier: Handler, inbox: Callable[[], list[Email]], capsys: pytest.CaptureFixture[str]
) -> None:
    # Given SNS takes the email but its answer does not come back within the read timeout
    event = load_event("notifier-stream-insert-batch.json")
    store_inserted_orders(stack, event)
    restore = stall_calls(clients.orders_topic().client, "Publish", reaches_aws=True, longest_stall=1)

    # When the batch is handled
    started = time.monotonic()
    response = notifier(event, notifier_context())
    took = time.monotonic() - started

    # Then the handler, not the Timeout, ended it; one email left (no retry by the client) and its
    # orders are marked, counted as unconfirmed, their records not retried
    assert took < 30
    assert failed_ids(response) == []
    assert len(inbox()) == 1
    assert {status_of(stack, order_id) for order_id in BATCH} == {"NOTIFIED"}
    emf = emitted(capsys.readouterr().out)
    assert metric_total(emf, "SupportEmailsUnconfirmed") == 1
    assert metric_total(emf, "OrdersNotified") == 3

    # And were Lambda to retry the records, nothing would be sent again (invariant 3)
    restore()
    assert failed_ids(notifier(event, notifier_context())) == []
    assert inbox() == []


def test_when_sns_cannot_be_reached_nothing_is_marked_and_the_retry_sends_one_email(
    stack: Stack, notifier: Handler, inbox: Callable[[], list[Email]]
) -> None:
    # Given SNS cannot be reached: the request never left
    event = load_event("notifier-stream-insert-batch.json")
    store_inserted_orders(stack, event)
    restore = unreachable(clients.orders_topic().client, "Publish")

    # When
    with pytest.raises(TopicUnavailable):
        notifier(event, notifier_context())

    # Then it is not taken for sent: nothing is marked, so the retry announces every order once
    assert {status_of(stack, order_id) for order_id in BATCH} == {"PLACED"}
    restore()
    assert failed_ids(notifier(event, notifier_context())) == []
    assert len(inbox()) == 1


def test_no_email_is_started_that_could_outlast_the_functions_timeout(
    stack: Stack, notifier: Handler, inbox: Callable[[], list[Email]]
) -> None:
    # Given less time left than one publish and the marking of its orders can take
    event = load_event("notifier-stream-insert-batch.json")
    store_inserted_orders(stack, event)
    too_short = settings().sns_publish_budget_seconds

    # When
    with pytest.raises(TopicUnavailable):
        notifier(event, notifier_context(timeout_seconds=too_short))

    # Then nothing was sent, so nothing can be sent twice; the retry sends the batch once
    assert inbox() == []
    assert {status_of(stack, order_id) for order_id in BATCH} == {"PLACED"}
    assert failed_ids(notifier(event, notifier_context())) == []
    assert len(inbox()) == 1


def test_each_part_of_a_split_digest_is_marked_as_soon_as_it_is_out(
    stack: Stack, notifier: Handler, inbox: Callable[[], list[Email]]
) -> None:
    # Given a batch that takes two emails, and Lambda ending the invocation while the second is
    # being published
    event, order_ids = big_insert_event(stack, 3)
    restore = end_invocation_during(clients.orders_topic().client, "Publish", reaches_aws=False, calls={2})
    with pytest.raises(LambdaEnded):
        notifier(event, notifier_context())
    restore()
    (first_part,) = inbox()

    # When Lambda retries the batch
    assert failed_ids(notifier(event, notifier_context())) == []

    # Then the first part's orders were already marked, so only the second part is sent
    (second_part,) = inbox()
    announced = [
        order_id for _, body in (first_part, second_part) for order_id in order_ids if order_id in body
    ]
    assert sorted(announced) == sorted(order_ids)


# --- DynamoDB after the email went out ----------------------------------------------------------


def test_when_dynamodb_stops_answering_after_the_email_the_records_still_succeed(
    stack: Stack, notifier: Handler, inbox: Callable[[], list[Email]], capsys: pytest.CaptureFixture[str]
) -> None:
    # Given the orders cannot be marked: the table stalls after the email went out
    event = load_event("notifier-stream-insert-batch.json")
    store_inserted_orders(stack, event)
    table = clients.orders_table().client
    stall_calls(table, "UpdateItem", reaches_aws=False)

    # When
    response = notifier(event, notifier_context())

    # Then no record is retried (a retry would mail them again); the orders go to the replay
    # function to be marked, and are counted
    assert failed_ids(response) == []
    assert len(inbox()) == 1
    emf = emitted(capsys.readouterr().out)
    assert metric_total(emf, "OrdersMarkingRetried") == 3
    assert sorted(handed_to_the_replay(stack)) == sorted(BATCH)


def test_when_neither_marking_nor_the_hand_over_works_the_orders_are_counted_not_mailed_again(
    stack: Stack, notifier: Handler, inbox: Callable[[], list[Email]], capsys: pytest.CaptureFixture[str]
) -> None:
    # Given the table stalls after the email went out, and SQS refuses the hand-over too
    event = load_event("notifier-stream-insert-batch.json")
    store_inserted_orders(stack, event)
    table = clients.orders_table().client
    stall_calls(table, "TransactWriteItems", reaches_aws=False)
    stall_calls(table, "UpdateItem", reaches_aws=False)
    fail_calls(clients.notifier_retry_queue().client, "SendMessage", "InternalError", status=500)

    # When
    response = notifier(event, notifier_context())

    # Then the records still succeed (a retry would mail them again); the orders stay PLACED,
    # counted for the alarm
    assert failed_ids(response) == []
    assert len(inbox()) == 1
    emf = emitted(capsys.readouterr().out)
    assert metric_total(emf, "NotifiedOrdersNotMarked") == 3
    assert {status_of(stack, order_id) for order_id in BATCH} == {"PLACED"}
    assert handed_to_the_replay(stack) == []


def test_marking_stops_in_time_to_answer(
    stack: Stack, notifier: Handler, inbox: Callable[[], list[Email]], capsys: pytest.CaptureFixture[str]
) -> None:
    # Given ten orders, a table that stalls once the email is out, and time for one publish and
    # one round of its updates, not for a second
    event, order_ids = small_insert_event(10)
    table = clients.orders_table().client
    stall_calls(table, "UpdateItem", reaches_aws=False)
    current = settings()
    # a publish, its transaction, the hand-over of what was not marked
    one_email = current.sns_publish_budget_seconds + 2 * current.aws_call_budget_seconds
    timeout = notifier_step.SAFETY_MARGIN_SECONDS + one_email + 0.5

    # When
    started = time.monotonic()
    response = notifier(event, notifier_context(timeout_seconds=timeout))

    # Then it answered before its Timeout, the orders it had no time for left unmarked, not retried
    assert time.monotonic() - started < timeout
    assert failed_ids(response) == []
    assert len(inbox()) == 1
    assert metric_total(emitted(capsys.readouterr().out), "OrdersMarkingRetried") == len(order_ids)
    assert sorted(handed_to_the_replay(stack)) == sorted(order_ids)


def small_insert_event(count: int) -> tuple[dict[str, Any], list[str]]:
    """INSERTs of `count` stored copies of the single-insert fixture's order, each its own id."""
    template_record = load_event("notifier-stream-insert.json")["Records"][0]
    base = Order.model_validate(from_attribute_values(template_record["dynamodb"]["NewImage"]))
    records, order_ids = [], []
    for number in range(count):
        order = base.model_copy(update={"order_id": f"00000000-0000-4000-8000-{number:012d}"})
        clients.orders_table().put_new_order(order)
        record = copy.deepcopy(template_record)
        record["dynamodb"]["NewImage"] = to_attribute_values(order.to_item())
        record["dynamodb"]["Keys"] = {"orderId": {"S": order.order_id}}
        record["dynamodb"]["SequenceNumber"] = f"3000000000{number:012d}"
        records.append(record)
        order_ids.append(order.order_id)
    return {"Records": records}, order_ids


def test_when_a_later_email_fails_the_stream_resumes_at_it_and_no_unmarked_order_is_mailed_again(
    stack: Stack, notifier: Handler, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a batch that takes two emails; the first goes out but its orders cannot be marked
    # (the table stalls), and SNS refuses the second
    event, order_ids = big_insert_event(stack, 3)
    table = clients.orders_table().client
    undo_marking = [
        stall_calls(table, "UpdateItem", reaches_aws=False, longest_stall=1),
    ]
    topic = FlakyTopic(failing_calls={2})
    monkeypatch.setattr(clients.orders_topic(), "publish", topic.publish)

    # When
    response = notifier(event, notifier_context())

    # Then the invocation answers instead of failing: the records before the second email's first
    # order succeed (its first order's record is the stream's checkpoint)
    (first_part,) = topic.published
    assert 0 < len(first_part.order_ids) < len(order_ids)
    first_left_out = order_ids.index(next(o for o in order_ids if o not in first_part.order_ids))
    sequence_numbers = [record["dynamodb"]["SequenceNumber"] for record in event["Records"]]
    assert failed_ids(response) == [sequence_numbers[first_left_out]]
    emf = emitted(capsys.readouterr().out)
    assert metric_total(emf, "OrdersMarkingRetried") == len(first_part.order_ids)
    assert {status_of(stack, order_id) for order_id in first_part.order_ids} == {"PLACED"}

    # When Lambda retries the shard from the checkpoint, with the table back
    for undo in undo_marking:
        undo()
    retry = {"Records": event["Records"][first_left_out:]}
    assert failed_ids(notifier(retry, notifier_context())) == []

    # Then each order was mailed exactly once over both invocations (a whole-batch retry would
    # have mailed the first part's unmarked orders again)
    announced = [order_id for email in topic.published for order_id in email.order_ids]
    assert sorted(announced) == sorted(order_ids)


def test_when_the_first_email_fails_the_invocation_fails_as_before(
    stack: Stack, notifier: Handler, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a two-email batch and SNS refusing the first: nothing left, nothing can be doubled
    event, order_ids = big_insert_event(stack, 3)
    topic = FlakyTopic(failing_calls={1})
    monkeypatch.setattr(clients.orders_topic(), "publish", topic.publish)

    # When / Then the invocation fails (counted in Errors, bisected by Lambda); nothing is marked
    with pytest.raises(TopicUnavailable):
        notifier(event, notifier_context())
    assert topic.published == []
    assert {status_of(stack, order_id) for order_id in order_ids} == {"PLACED"}
