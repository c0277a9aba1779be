"""`orderpipe dlq` and `orderpipe doctor` against moto: the template's resources, real SQS moves."""

from __future__ import annotations

import json
import os
import signal
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws
from moto.sns.models import sns_backends

from orderpipe_local.moto.endpoint import AwsEndpoint
from orderpipe_local.operate import dlq
from orderpipe_local.operate.doctor import Check, run_checks
from orderpipe_local.operate.stack import OperatedStack, deployed_stack
from orderpipe_local.sources.email_outbox import EMAILS_PER_SECOND, REFUSALS_FILE, EmailOutbox
from orderpipe_local.stack.provision import Stack, provision_stack
from orderpipe_local.stack.template import ACCOUNT_ID, Template, load_template
from orderpipe_local.testing import ROOT, load_event, template_without_notifier_retry_queue, wait_until

SUPPORT_EMAIL = "support@example.com"


class SimulatedKill(BaseException):
    """The process dies here: nothing after it runs, no handler catches it."""


@pytest.fixture(scope="module")
def endpoint() -> Iterator[AwsEndpoint]:
    with AwsEndpoint(port=0) as running:
        yield running


def reset(endpoint: AwsEndpoint) -> None:
    request = urllib.request.Request(f"{endpoint.url}/moto-api/reset", method="POST")
    with urllib.request.urlopen(request, timeout=10):
        pass


def operated(template: Template, stack: Stack, work_dir: Path, outbox: Path | None = None) -> OperatedStack:
    """What `orderpipe dlq` makes of a running local pipeline's state file."""
    return OperatedStack(
        name=template.stack_name,
        resources={lid: r for lid, r in template.resources.items() if template.is_created(lid)},
        physical_ids={lid: resource.ref for lid, resource in stack.resources.items()},
        region=template.region,
        endpoint_url=stack.endpoint_url,
        work_dir=work_dir,
        outbox=outbox,
    )


@pytest.fixture
def local(endpoint: AwsEndpoint, tmp_path: Path) -> OperatedStack:
    reset(endpoint)
    template = load_template(ROOT / "template.yaml", overrides={"SupportEmail": SUPPORT_EMAIL})
    return operated(
        template, provision_stack(template, endpoint_url=endpoint.url), tmp_path, tmp_path / "outbox"
    )


def order_bodies(count: int) -> list[str]:
    (record, *_) = load_event("writer-sqs-batch.json")["Records"]
    order = json.loads(record["body"])
    return [
        json.dumps(order | {"orderId": f"0b7f3c9e-6a51-4c1e-9d3a-{index:012d}"}) for index in range(count)
    ]


def send(stack: OperatedStack, queue_id: str, bodies: list[str]) -> None:
    sqs = stack.client("sqs")
    for body in bodies:
        sqs.send_message(
            QueueUrl=stack.physical_id(queue_id),
            MessageBody=body,
            MessageAttributes={"origin": {"DataType": "String", "StringValue": "test"}},
        )


def drain(stack: OperatedStack, queue_id: str) -> list[dict[str, Any]]:
    """Every message of a queue, taken out (each one once)."""
    sqs, url, taken = stack.client("sqs"), stack.physical_id(queue_id), []
    while messages := sqs.receive_message(
        QueueUrl=url, MaxNumberOfMessages=10, MessageAttributeNames=["All"], WaitTimeSeconds=0
    ).get("Messages", []):
        for message in messages:
            sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
        taken.extend(messages)
    return taken


def depth(stack: OperatedStack, queue_id: str) -> int:
    return dlq.queue_depth(stack.client("sqs"), stack.physical_id(queue_id)).total


# --- list ---------------------------------------------------------------------------------------


def test_list_shows_each_dlq_its_depth_oldest_and_reasons_without_taking_anything(
    local: OperatedStack,
) -> None:
    # Given an order that breaks the model in OrdersDLQ and an empty NotifierDLQ
    bad = json.loads(order_bodies(1)[0])
    bad["items"][0]["quantity"] = 0
    send(local, "OrdersDLQ", [json.dumps(bad)])

    # When the DLQs are listed
    reports = {report.dlq.logical_id: report for report in dlq.list_dlqs(local)}
    lines = dlq.format_reports(list(reports.values()))

    # Then each DLQ shows, the order with the writer's reason, and nothing was consumed
    assert list(reports) == ["OrdersDLQ", "NotifierRetryQueue", "NotifierDLQ", "EmailSubscriptionsDLQ"]
    (peeked,) = reports["OrdersDLQ"].peeked
    assert peeked.order_id == bad["orderId"]
    assert peeked.reason == "does not parse: items.0.quantity: Input should be greater than or equal to 1"
    assert lines[0].startswith("OrdersDLQ (orderpipe-OrdersDLQ): 1 message, oldest ")
    assert "NotifierDLQ (orderpipe-NotifierDLQ): empty" in lines
    assert lines[-1] == dlq.PEEK_NOTE
    assert depth(local, "OrdersDLQ") == 1
    assert dlq.list_dlqs(local)[0].depth.visible == 1  # still visible: a peek hides nothing


# --- redrive ------------------------------------------------------------------------------------


def test_redrive_orders_moves_every_message_back_with_its_attributes(local: OperatedStack) -> None:
    # Given 12 orders in OrdersDLQ (more than one receive's worth)
    bodies = order_bodies(12)
    send(local, "OrdersDLQ", bodies)

    # When they are redriven (moto lacks StartMessageMoveTask: receive, send, delete)
    result = dlq.redrive_orders(local, progress=lambda line: None, timeout=60)

    # Then each is in OrdersQueue once, attributes kept, OrdersDLQ is empty and the journal gone
    assert (result.moved, result.method, result.interrupted) == (12, "receive, send, delete", False)
    assert sorted(result.order_ids) == sorted(json.loads(body)["orderId"] for body in bodies)
    moved = drain(local, "OrdersQueue")
    assert sorted(m["Body"] for m in moved) == sorted(bodies)
    assert all(m["MessageAttributes"]["origin"]["StringValue"] == "test" for m in moved)
    assert depth(local, "OrdersDLQ") == 0
    assert not list(local.journal_dir().glob("*"))


def test_a_move_killed_between_send_and_delete_loses_and_doubles_nothing_when_run_again(
    local: OperatedStack,
) -> None:
    # Given 5 orders in OrdersDLQ, and a move that dies right after sending the third
    bodies = order_bodies(5)
    send(local, "OrdersDLQ", bodies)
    sqs = local.client("sqs")
    deletes = 0

    def die_on_third_delete(**kwargs: Any) -> None:
        nonlocal deletes
        deletes += 1
        if deletes == 3:
            raise SimulatedKill

    sqs.meta.events.register("before-call.sqs.DeleteMessage", die_on_third_delete)
    with pytest.raises(SimulatedKill):
        dlq.move_messages(local, "OrdersDLQ", "OrdersQueue", visibility_timeout=5, sqs=sqs, progress=print)

    # When the move runs again (the killed run's messages are still invisible for 5 s)
    lines: list[str] = []
    again = dlq.move_messages(local, "OrdersDLQ", "OrdersQueue", visibility_timeout=5, progress=lines.append)

    # Then the third is deleted, not sent again; every order is in OrdersQueue exactly once
    assert again.finished_from_earlier_run == 1
    assert again.moved == 3
    assert any("in flight" in line for line in lines)
    assert sorted(m["Body"] for m in drain(local, "OrdersQueue")) == sorted(bodies)
    assert depth(local, "OrdersDLQ") == 0


def test_sigterm_during_a_move_finishes_the_message_in_hand_then_stops(local: OperatedStack) -> None:
    # Given 6 orders in OrdersDLQ, and SIGTERM arriving as the second is sent
    bodies = order_bodies(6)
    send(local, "OrdersDLQ", bodies)
    sqs = local.client("sqs")
    sends = 0

    def terminate_on_second_send(**kwargs: Any) -> None:
        nonlocal sends
        sends += 1
        if sends == 2:
            os.kill(os.getpid(), signal.SIGTERM)

    sqs.meta.events.register("after-call.sqs.SendMessage", terminate_on_second_send)
    handler_before = signal.getsignal(signal.SIGTERM)
    first = dlq.move_messages(local, "OrdersDLQ", "OrdersQueue", sqs=sqs, progress=print)

    # Then it stopped after the second message, the others visible again at once
    assert (first.moved, first.interrupted, first.left) == (2, True, 4)
    assert signal.getsignal(signal.SIGTERM) is handler_before

    # When it is run again, the rest move, and nothing is doubled
    rest = dlq.move_messages(local, "OrdersDLQ", "OrdersQueue", progress=print, timeout=30)
    assert (rest.moved, rest.interrupted) == (4, False)
    assert sorted(m["Body"] for m in drain(local, "OrdersQueue")) == sorted(bodies)


# --- replay -------------------------------------------------------------------------------------


def test_replay_notifier_needs_a_retry_queue(endpoint: AwsEndpoint, tmp_path: Path) -> None:
    # Given a stack from before the replay: the notifier fails straight into NotifierDLQ
    reset(endpoint)
    template = load_template(template_without_notifier_retry_queue(tmp_path))
    stack = operated(template, provision_stack(template, endpoint_url=endpoint.url), tmp_path)

    with pytest.raises(dlq.DlqError, match="has no retry queue"):
        dlq.replay_notifier(stack, timeout=5)


def test_replay_notifier_moves_notifier_dlq_to_the_retry_queue_and_counts_what_it_consumed(
    endpoint: AwsEndpoint, tmp_path: Path
) -> None:
    # Given a stack whose notifier failures go through a retry queue, and 3 records in NotifierDLQ
    reset(endpoint)
    template = load_template(ROOT / "template.yaml")
    stack = operated(template, provision_stack(template, endpoint_url=endpoint.url), tmp_path)
    records = [json.dumps({"DDBStreamBatchInfo": {"batchSize": 1, "shardId": f"s-{n}"}}) for n in range(3)]
    send(stack, "NotifierDLQ", records)

    # And a replay that consumes the retry queue: two records succeed, one fails for good
    consumed: list[str] = []

    def replay_function() -> None:
        sqs, url = stack.client("sqs"), stack.physical_id("NotifierRetryQueue")
        while len(consumed) < 3:
            for message in sqs.receive_message(QueueUrl=url, WaitTimeSeconds=1).get("Messages", []):
                consumed.append(message["Body"])
                if len(consumed) == 3:  # as SQS's redrive does: in the DLQ before out of the queue
                    send(stack, "NotifierDLQ", [message["Body"]])
                sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])

    consumer = threading.Thread(target=replay_function, daemon=True)
    consumer.start()

    # When the replay runs
    result = dlq.replay_notifier(stack, progress=lambda line: None, timeout=30, interval=0.2)
    consumer.join(10)

    # Then all 3 were moved to the retry queue, 2 replayed and 1 is back in NotifierDLQ
    assert (result.move.moved, result.retry_queue) == (3, "NotifierRetryQueue")
    assert sorted(consumed) == sorted(records)
    assert (result.replayed, result.still_in_retry_queue, result.back_in_dlq) == (2, 0, 1)


# --- doctor -------------------------------------------------------------------------------------


def statuses(checks: list[Check]) -> dict[str, str]:
    return {check.name: check.status for check in checks}


def test_doctor_passes_a_healthy_local_pipeline_and_says_alarms_are_not_played(local: OperatedStack) -> None:
    checks = run_checks(local)

    assert statuses(checks) == {
        f"OrdersTopic email to {SUPPORT_EMAIL}": "PASS",
        "alarms": "N/A",
        "OrdersDLQ": "PASS",
        "NotifierRetryQueue": "PASS",
        "NotifierDLQ": "PASS",
        "EmailSubscriptionsDLQ": "PASS",
        "OrdersTable point-in-time recovery": "PASS",
        "OrdersTable stream": "PASS",
        "email rate": "PASS",
    }
    assert not any(check.failed for check in checks)


def test_doctor_fails_a_dlq_with_messages_and_a_table_without_point_in_time_recovery(
    local: OperatedStack,
) -> None:
    # Given a message in OrdersDLQ and OrdersTable's point-in-time recovery turned off
    send(local, "OrdersDLQ", order_bodies(1))
    local.client("dynamodb").update_continuous_backups(
        TableName=local.physical_id("OrdersTable"),
        PointInTimeRecoverySpecification={"PointInTimeRecoveryEnabled": False},
    )

    checks = {check.name: check for check in run_checks(local)}

    assert checks["OrdersDLQ"].line() == "FAIL  OrdersDLQ: 1 message(s): see orderpipe dlq list"
    assert (
        checks["OrdersTable point-in-time recovery"].line()
        == "FAIL  OrdersTable point-in-time recovery: DISABLED"
    )
    assert checks["NotifierDLQ"].status == "PASS"


def test_doctor_warns_of_a_pending_replay_and_fails_nothing_for_it(local: OperatedStack) -> None:
    # Given a failure record in the retry queue, which the replay function works off
    send(local, "NotifierRetryQueue", ["{}"])

    checks = {check.name: check for check in run_checks(local)}

    assert checks["NotifierRetryQueue"].line() == (
        "WARN  NotifierRetryQueue: 1 message(s) waiting for ReplayFunction's replay: see orderpipe dlq list"
    )
    assert not any(check.failed for check in checks.values())


@pytest.fixture
def deployed(tmp_path: Path) -> Iterator[tuple[OperatedStack, Template]]:
    """The template in moto in-process, with its alarms, as a deployed stack looks to the doctor."""
    with mock_aws():
        template = load_template(ROOT / "template.yaml", overrides={"SupportEmail": SUPPORT_EMAIL})
        stack = provision_stack(template)
        physical = {lid: resource.ref for lid, resource in stack.resources.items()}
        cloudwatch = boto3.client("cloudwatch", region_name=template.region)
        for alarm_id in template.resources_of_type("AWS::CloudWatch::Alarm"):
            name = f"{template.stack_name}-{alarm_id}"
            cloudwatch.put_metric_alarm(
                AlarmName=name,
                MetricName="M",
                Namespace="N",
                Statistic="Sum",
                Period=60,
                EvaluationPeriods=1,
                Threshold=0,
                ComparisonOperator="GreaterThanThreshold",
                TreatMissingData="notBreaching",
            )
            cloudwatch.set_alarm_state(AlarmName=name, StateValue="OK", StateReason="fine")
            physical[alarm_id] = name
        resources = {lid: r for lid, r in template.resources.items() if template.is_created(lid)}
        yield OperatedStack(template.stack_name, resources, physical, template.region), template


def test_doctor_fails_an_unconfirmed_subscription_and_an_alarm_in_alarm(
    deployed: tuple[OperatedStack, Template],
) -> None:
    stack, template = deployed
    # Given the support subscription pending (moto confirms at once; SNS waits for the link)
    subscription_arn = stack.physical_id("SupportEmailSubscription")
    backend = sns_backends[ACCOUNT_ID][template.region]
    backend.subscriptions[subscription_arn].attributes["PendingConfirmation"] = "true"
    # And OrdersDLQDepthAlarm firing
    boto3.client("cloudwatch", region_name=template.region).set_alarm_state(
        AlarmName=stack.physical_id("OrdersDLQDepthAlarm"), StateValue="ALARM", StateReason="1 message"
    )

    checks = {check.name: check for check in run_checks(stack)}

    assert checks[f"OrdersTopic email to {SUPPORT_EMAIL}"].status == "FAIL"
    assert "pending confirmation" in checks[f"OrdersTopic email to {SUPPORT_EMAIL}"].detail
    assert checks["alarm OrdersDLQDepthAlarm"].line() == "FAIL  alarm OrdersDLQDepthAlarm: ALARM: 1 message"
    assert checks["alarm OrdersTopicFailedNotificationsAlarm"].status == "PASS"
    assert checks["email rate"].status == "N/A"


# --- the outbox's email rate ---------------------------------------------------------------------


def test_a_burst_over_sns_s_email_rate_is_refused_into_the_subscription_s_dlq(
    local: OperatedStack, endpoint: AwsEndpoint, tmp_path: Path
) -> None:
    # Given the outbox delivering the support subscription
    assert local.outbox is not None
    template = load_template(ROOT / "template.yaml", overrides={"SupportEmail": SUPPORT_EMAIL})
    stack = Stack(template, {}, endpoint.url)
    delivered: list[Path] = []
    outbox = EmailOutbox(stack, endpoint.url, local.outbox, lambda path, summary: delivered.append(path))
    outbox.start()
    try:
        # When 30 support emails are published at once
        sns = local.client("sns")
        for number in range(30):
            sns.publish(TopicArn=local.physical_id("OrdersTopic"), Subject=f"order {number}", Message="m")
        wait_until(lambda: outbox.stats()["emails"] + outbox.stats()["refused"] == 30, timeout=30)
    finally:
        outbox.stop()

    # Then no more than the rate went out in any second, the rest sit in the subscription's DLQ
    refused = outbox.stats()["refused"]
    assert len(delivered) == 30 - refused
    assert refused >= 30 - 2 * EMAILS_PER_SECOND  # the burst spans well under 2 s
    parked = drain(local, "EmailSubscriptionsDLQ")
    assert len(parked) == refused
    assert {m["MessageAttributes"]["ErrorCode"]["StringValue"] for m in parked} == {"Throttling"}
    assert json.loads(parked[0]["Body"])["TopicArn"] == local.physical_id("OrdersTopic")
    assert json.loads((local.outbox / REFUSALS_FILE).read_text())["refused"] == refused

    # And the doctor reports it
    (rate,) = [check for check in run_checks(local) if check.name == "email rate"]
    assert rate.status == "FAIL"
    assert rate.detail.startswith(f"{refused} email(s) refused over SNS's 10 emails a second")


def test_refusals_of_an_outbox_start_from_zero(local: OperatedStack) -> None:
    assert local.outbox is not None
    local.outbox.mkdir(parents=True)
    (local.outbox / REFUSALS_FILE).write_text(json.dumps({"refused": 3}))
    template = load_template(ROOT / "template.yaml", overrides={"SupportEmail": SUPPORT_EMAIL})
    assert local.endpoint_url is not None
    outbox = EmailOutbox(Stack(template, {}, local.endpoint_url), local.endpoint_url, local.outbox, print)
    outbox.start()
    outbox.stop()

    assert json.loads((local.outbox / REFUSALS_FILE).read_text())["refused"] == 0


# --- a deployed stack, found through CloudFormation -------------------------------------------

DEPLOYED_TEMPLATE = """
Resources:
  OrdersQueue:
    Type: AWS::SQS::Queue
    Properties:
      RedrivePolicy:
        deadLetterTargetArn: !GetAtt OrdersDLQ.Arn
        maxReceiveCount: 5
  OrdersDLQ:
    Type: AWS::SQS::Queue
"""


def test_stack_name_finds_the_dlqs_through_cloudformation_s_template_and_resources() -> None:
    # Given a stack CloudFormation created (its queues have generated names)
    with mock_aws():
        cloudformation = boto3.client("cloudformation", region_name="us-east-1")
        cloudformation.create_stack(StackName="orderpipe-test", TemplateBody=DEPLOYED_TEMPLATE)
        stack = deployed_stack("orderpipe-test", "us-east-1")
        send(stack, "OrdersDLQ", order_bodies(1))

        # When its DLQs are listed
        (report,) = dlq.list_dlqs(stack)

    # Then OrdersDLQ is found by its physical id, with OrdersQueue's redrive and its message
    assert not stack.local
    assert report.name.startswith("orderpipe-test-OrdersDLQ-")
    assert report.dlq.redriven_from == ["OrdersQueue"]
    assert report.depth.visible == 1
    # (no WriterFunction consumes this stack's queue, so its messages are not read as orders)
    assert report.peeked[0].reason.startswith('a message of OrdersQueue: {"customer": ')


def test_list_does_not_peek_a_retry_queue_whose_receives_count_towards_its_redrive(
    endpoint: AwsEndpoint, tmp_path: Path
) -> None:
    # Given a failure record waiting in the notifier's retry queue
    reset(endpoint)
    template = load_template(ROOT / "template.yaml")
    stack = operated(template, provision_stack(template, endpoint_url=endpoint.url), tmp_path)
    send(stack, "NotifierRetryQueue", [json.dumps({"DDBStreamBatchInfo": {"batchSize": 1}})])

    # When the DLQs are listed
    reports = {report.dlq.logical_id: report for report in dlq.list_dlqs(stack)}
    lines = dlq.format_reports(list(reports.values()))

    # Then its depth shows, but it was not received: its receive count is untouched
    assert reports["NotifierRetryQueue"].depth.visible == 1
    assert reports["NotifierRetryQueue"].peeked == []
    assert "  not peeked: it redrives after 8 receives itself, and a peek is one" in lines
    (message,) = stack.client("sqs").receive_message(
        QueueUrl=stack.physical_id("NotifierRetryQueue"), AttributeNames=["ApproximateReceiveCount"]
    )["Messages"]
    assert message["Attributes"]["ApproximateReceiveCount"] == "1"  # this receive is its first
