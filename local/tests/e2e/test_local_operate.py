"""`orderpipe dlq` and `orderpipe doctor` against a running `orderpipe local`, as an operator types them."""

from __future__ import annotations

import json
import subprocess
import time

import boto3

from orderpipe_local.testing import ROOT, RunningPipeline, load_event, orderpipe_command, wait_until


def orderpipe(pipeline: RunningPipeline, *args: str) -> subprocess.CompletedProcess[str]:
    state_file = pipeline.output.parent / "state.json"
    return subprocess.run(
        [*orderpipe_command(), *args, "--state-file", str(state_file)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def dlq_depth(pipeline: RunningPipeline, logical_id: str) -> int:
    attributes = pipeline.sqs().get_queue_attributes(
        QueueUrl=pipeline.resource(logical_id), AttributeNames=["ApproximateNumberOfMessages"]
    )["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"])


def test_a_poison_order_is_listed_with_its_reason_and_redriven(pipeline: RunningPipeline) -> None:
    # Given an order that breaks the model put straight on OrdersQueue (ingest would refuse it),
    # with a 1 s visibility timeout so that its 5 receives take seconds, not the template's 17 min
    (record, *_) = load_event("writer-sqs-batch.json")["Records"]
    poison = json.loads(record["body"])
    poison["items"][0]["quantity"] = 0
    sqs = pipeline.sqs()
    sqs.set_queue_attributes(QueueUrl=pipeline.resource("OrdersQueue"), Attributes={"VisibilityTimeout": "1"})
    time.sleep(2.0)  # a receive takes the timeout the queue had when it started: let the poll under way end
    sqs.send_message(QueueUrl=pipeline.resource("OrdersQueue"), MessageBody=json.dumps(poison))
    wait_until(lambda: dlq_depth(pipeline, "OrdersDLQ") == 1, timeout=60)

    # When the operator lists the DLQs and asks the doctor
    listed = orderpipe(pipeline, "dlq", "list")
    doctor = orderpipe(pipeline, "doctor")

    # Then OrdersDLQ shows the order with the writer's reason, and the doctor fails on it
    assert listed.returncode == 0, listed.stderr
    assert "OrdersDLQ (orderpipe-local-OrdersDLQ): 1 message, oldest " in listed.stdout
    reason = "does not parse: items.0.quantity: Input should be greater than or equal to 1"
    assert f"order {poison['orderId']}: {reason}" in listed.stdout
    assert "NotifierDLQ (orderpipe-local-NotifierDLQ): empty" in listed.stdout
    assert "a peek counts as a receive" in listed.stdout
    assert doctor.returncode == 1, doctor.stdout
    assert "FAIL  OrdersDLQ: 1 message(s): see orderpipe dlq list" in doctor.stdout
    assert "N/A   alarms: the local pipeline plays no CloudWatch alarms" in doctor.stdout
    assert "PASS  OrdersTable point-in-time recovery: ENABLED" in doctor.stdout

    # When it is redriven
    redriven = orderpipe(pipeline, "dlq", "redrive", "orders")

    # Then it went back to OrdersQueue, where the writer failed it again into OrdersDLQ
    assert redriven.returncode == 0, redriven.stderr
    assert "moved 1 message from OrdersDLQ to OrdersQueue (receive, send, delete)" in redriven.stdout
    assert f"orders: {poison['orderId']}" in redriven.stdout
    wait_until(lambda: dlq_depth(pipeline, "OrdersDLQ") == 1, timeout=60)


def test_a_burst_of_emails_over_sns_s_rate_is_refused_and_the_doctor_says_so(
    pipeline: RunningPipeline,
) -> None:
    # Given a healthy pipeline
    assert orderpipe(pipeline, "doctor").returncode == 0

    # When 30 support emails are published at once, three times SNS's rate
    sns = boto3.client(
        "sns",
        endpoint_url=pipeline.endpoint_url,
        region_name=pipeline.state["region"],
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    for number in range(30):
        sns.publish(TopicArn=pipeline.resource("OrdersTopic"), Subject=f"burst {number}", Message="burst")
    wait_until(
        lambda: len(pipeline.emails()) + dlq_depth(pipeline, "EmailSubscriptionsDLQ") == 30, timeout=30
    )

    # Then some were refused into EmailSubscriptionsDLQ, and both tools show it
    doctor = orderpipe(pipeline, "doctor")
    listed = orderpipe(pipeline, "dlq", "list")
    assert dlq_depth(pipeline, "EmailSubscriptionsDLQ") >= 10
    assert doctor.returncode == 1
    assert "FAIL  email rate: " in doctor.stdout
    assert "FAIL  EmailSubscriptionsDLQ: " in doctor.stdout
    assert "undelivered notification of orderpipe-local-OrdersTopic ('burst " in listed.stdout
    assert "ErrorCode=Throttling, ErrorMessage=over SNS's email rate of 10 a second" in listed.stdout
