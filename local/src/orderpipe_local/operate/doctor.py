"""`orderpipe doctor`: what an operator checks before a sale, one line each.

Locally only what the local pipeline really plays is checked: it creates no CloudWatch alarms,
so their line is N/A rather than a pass nobody measured.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from orderpipe_local.operate.dlq import dead_letter_queues, queue_depth
from orderpipe_local.operate.stack import OperatedStack
from orderpipe_local.sources.email_outbox import EMAIL_PROTOCOLS, EMAILS_PER_SECOND, REFUSALS_FILE

ORDERS_TABLE = "OrdersTable"
ORDERS_TOPIC = "OrdersTopic"
_NEW_IMAGES = {"NEW_IMAGE", "NEW_AND_OLD_IMAGES"}
_DESCRIBE_ALARMS_LIMIT = 100


@dataclass(frozen=True)
class Check:
    status: str  # PASS, FAIL, WARN (worth a look, fails nothing) or N/A
    name: str
    detail: str

    @property
    def failed(self) -> bool:
        return self.status == "FAIL"

    def line(self) -> str:
        return f"{self.status:<4}  {self.name}: {self.detail}"


def _passes(ok: bool, name: str, detail: str) -> Check:
    return Check("PASS" if ok else "FAIL", name, detail)


def run_checks(stack: OperatedStack) -> list[Check]:
    return [
        *subscription_checks(stack),
        *alarm_checks(stack),
        *dlq_checks(stack),
        *table_checks(stack),
        email_rate_check(stack),
    ]


def subscription_checks(stack: OperatedStack) -> list[Check]:
    """Each email subscription confirmed: SNS delivers nothing to a pending one."""
    sns = stack.client("sns")
    checks = []
    for topic_id in stack.of_type("AWS::SNS::Topic"):
        topic_arn = stack.physical_id(topic_id)
        subscriptions = [
            subscription
            for page in sns.get_paginator("list_subscriptions_by_topic").paginate(TopicArn=topic_arn)
            for subscription in page.get("Subscriptions", [])
            if subscription.get("Protocol") in EMAIL_PROTOCOLS
        ]
        if not subscriptions and topic_id == ORDERS_TOPIC:
            checks.append(
                Check(
                    "FAIL",
                    f"{topic_id} email",
                    "no email subscription: support gets no emails (SupportEmail)",
                )
            )
        for subscription in subscriptions:
            name = f"{topic_id} email to {subscription.get('Endpoint', '?')}"
            arn = subscription.get("SubscriptionArn", "")
            pending = arn == "PendingConfirmation" or (
                sns.get_subscription_attributes(SubscriptionArn=arn)["Attributes"].get("PendingConfirmation")
                == "true"
            )
            if pending:
                checks.append(
                    Check(
                        "FAIL",
                        name,
                        "pending confirmation: nothing is delivered until the link SNS mailed is followed",
                    )
                )
            else:
                local = " (moto confirms every subscription at once)" if stack.local else ""
                checks.append(Check("PASS", name, f"confirmed{local}"))
    return checks


def alarm_checks(stack: OperatedStack) -> list[Check]:
    """OK passes and ALARM fails. INSUFFICIENT_DATA fails unless the alarm treats missing data as
    not breaching: then it only means "not evaluated yet" (just created); otherwise its metric
    stopped reporting and the alarm cannot see what it watches."""
    alarm_ids = stack.of_type("AWS::CloudWatch::Alarm")
    if not alarm_ids:
        return [
            Check(
                "N/A",
                "alarms",
                "the local pipeline plays no CloudWatch alarms (it creates the template's queues, tables, "
                "topics and subscriptions only)"
                if stack.local
                else f"{stack.name} has no alarms",
            )
        ]
    cloudwatch = stack.client("cloudwatch")
    names = {stack.physical_id(alarm_id): alarm_id for alarm_id in alarm_ids}
    found: dict[str, dict[str, Any]] = {}
    listed = list(names)
    for start in range(0, len(listed), _DESCRIBE_ALARMS_LIMIT):
        response = cloudwatch.describe_alarms(
            AlarmNames=listed[start : start + _DESCRIBE_ALARMS_LIMIT],
            AlarmTypes=["MetricAlarm", "CompositeAlarm"],
        )
        for alarm in (*response.get("MetricAlarms", []), *response.get("CompositeAlarms", [])):
            found[alarm["AlarmName"]] = alarm
    checks = []
    for name, alarm_id in names.items():
        alarm = found.get(name)
        if alarm is None:
            checks.append(Check("FAIL", f"alarm {alarm_id}", f"{name} not found in CloudWatch"))
            continue
        state, reason = alarm["StateValue"], alarm.get("StateReason", "")
        if state == "INSUFFICIENT_DATA" and alarm.get("TreatMissingData") == "notBreaching":
            checks.append(Check("PASS", f"alarm {alarm_id}", "INSUFFICIENT_DATA: not evaluated yet"))
        else:
            checks.append(
                _passes(state == "OK", f"alarm {alarm_id}", state if state == "OK" else f"{state}: {reason}")
            )
    return checks


def dlq_checks(stack: OperatedStack) -> list[Check]:
    sqs = stack.client("sqs")
    checks = []
    for dlq in dead_letter_queues(stack.resources, stack):
        depth = queue_depth(sqs, stack.physical_id(dlq.logical_id))
        if not depth.total:
            checks.append(Check("PASS", dlq.logical_id, "empty"))
        elif dlq.consumer:
            # A retry queue: the pipeline is healing; its alarms watch a replay that falls behind.
            checks.append(
                Check(
                    "WARN",
                    dlq.logical_id,
                    f"{depth.total} message(s) waiting for {dlq.consumer}'s replay: see orderpipe dlq list",
                )
            )
        else:
            checks.append(Check("FAIL", dlq.logical_id, f"{depth.total} message(s): see orderpipe dlq list"))
    return checks


def table_checks(stack: OperatedStack) -> list[Check]:
    if ORDERS_TABLE not in stack.physical_ids:
        return [Check("FAIL", ORDERS_TABLE, f"not in {stack.where}")]
    dynamodb = stack.client("dynamodb")
    name = stack.physical_id(ORDERS_TABLE)
    backups = dynamodb.describe_continuous_backups(TableName=name)["ContinuousBackupsDescription"]
    pitr = backups.get("PointInTimeRecoveryDescription", {}).get("PointInTimeRecoveryStatus", "DISABLED")
    stream = dynamodb.describe_table(TableName=name)["Table"].get("StreamSpecification", {})
    enabled, view = bool(stream.get("StreamEnabled")), stream.get("StreamViewType", "none")
    return [
        _passes(pitr == "ENABLED", f"{ORDERS_TABLE} point-in-time recovery", pitr),
        _passes(
            enabled and view in _NEW_IMAGES,
            f"{ORDERS_TABLE} stream",
            f"enabled, {view}" if enabled else "disabled: the notifier sees no new orders",
        ),
    ]


def email_rate_check(stack: OperatedStack) -> Check:
    name = "email rate"
    if not stack.local:
        return Check(
            "N/A",
            name,
            "checked locally; on AWS OrdersTopicFailedNotificationsAlarm counts failed deliveries",
        )
    if stack.outbox is None:
        return Check("N/A", name, "the local pipeline has no outbox")
    try:
        refusals = json.loads((stack.outbox / REFUSALS_FILE).read_text())
    except (OSError, ValueError):
        refusals = {"refused": 0}
    refused = int(refusals.get("refused", 0))
    limit = f"SNS's {EMAILS_PER_SECOND} emails a second"
    if refused:
        return Check(
            "FAIL",
            name,
            f"{refused} email(s) refused over {limit} since the pipeline started (last at "
            f"{refusals.get('last', '?')}); they are in the subscription's DLQ",
        )
    return Check("PASS", name, f"no email refused over {limit}")
