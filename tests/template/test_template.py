"""The SAM-transformed template: what `sam deploy` would create, checked before it is created.

These read the CloudFormation that the SAM transform produces (`load_template`), so they see
what SAM generates (event source mappings, roles, the HTTP API's stage), not just what
`template.yaml` says.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from typing import Any

import pytest
from samtranslator.yaml_helper import yaml_parse

from orderpipe.notifier import SAFETY_MARGIN_SECONDS
from orderpipe.settings import Settings, aws_call_budget
from orderpipe.support_email import SupportEmailDetail
from orderpipe_local.stack.template import (
    ACCOUNT_ID,
    Resolver,
    Template,
    TemplateError,
    load_template,
    samconfig_parameters,
)
from orderpipe_local.testing import ROOT

REGION = "us-east-1"
FUNCTIONS = ("IngestFunction", "WriterFunction", "NotifierFunction", "ReplayFunction")


@pytest.fixture(scope="module")
def template() -> Template:
    return load_template(ROOT / "template.yaml", overrides={"SupportEmail": "support@example.com"})


@pytest.fixture(scope="module")
def sam_parameters() -> dict[str, dict[str, Any]]:
    """The parameter declarations of `template.yaml` itself (types, bounds)."""
    parameters: dict[str, dict[str, Any]] = yaml_parse((ROOT / "template.yaml").read_text())["Parameters"]
    return parameters


def properties(template: Template, logical_id: str) -> dict[str, Any]:
    props: dict[str, Any] = template.resources[logical_id]["Properties"]
    return props


def event_source_mapping(template: Template, function_id: str) -> dict[str, Any]:
    mappings: list[dict[str, Any]] = [
        resource["Properties"]
        for resource in template.resources_of_type("AWS::Lambda::EventSourceMapping").values()
        if resource["Properties"]["FunctionName"] in (ref(function_id), ref(f"{function_id}Aliaslive"))
    ]
    assert len(mappings) == 1, f"{function_id} should have exactly one event source mapping"
    return mappings[0]


def get_att(logical_id: str, attribute: str) -> dict[str, list[str]]:
    return {"Fn::GetAtt": [logical_id, attribute]}


def ref(name: str) -> dict[str, str]:
    return {"Ref": name}


def emitted_metrics(service: str) -> set[str]:
    """The Powertools metrics a step's module adds (`orderpipe/<service>.py`), directly or as the
    failure metric of its batch processor."""
    source = (ROOT / "src" / "orderpipe" / f"{service}.py").read_text()
    return set(re.findall(r'(?:add_metric\(name=|failure_metric = )"(\w+)"', source))


# --- Event source mappings ----------------------------------------------------------------------


def test_writer_consumes_orders_queue_in_partial_batches(template: Template) -> None:
    # Given the writer's SQS event source mapping
    mapping = event_source_mapping(template, "WriterFunction")

    # Then it reads OrdersQueue with the configured batch, reports single failures, and is capped
    assert mapping["EventSourceArn"] == get_att("OrdersQueue", "Arn")
    assert mapping["BatchSize"] == ref("WriterBatchSize")
    assert mapping["MaximumBatchingWindowInSeconds"] == ref("WriterBatchingWindowSeconds")
    assert mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert mapping["ScalingConfig"] == {"MaximumConcurrency": ref("WriterMaximumConcurrency")}


def test_writer_maximum_concurrency_parameter_stays_within_lambda_bounds(
    sam_parameters: dict[str, dict[str, Any]],
) -> None:
    # Lambda accepts a MaximumConcurrency of 2 to 1000 for SQS sources.
    spec = sam_parameters["WriterMaximumConcurrency"]
    assert spec["MinValue"] >= 2
    assert spec["MaxValue"] <= 1000


def test_notifier_reads_only_inserts_from_the_orders_stream(template: Template) -> None:
    # Given the notifier's DynamoDB stream event source mapping
    mapping = event_source_mapping(template, "NotifierFunction")

    # Then it reads OrdersTable's stream from the oldest record, INSERT events only
    assert mapping["EventSourceArn"] == get_att("OrdersTable", "StreamArn")
    assert mapping["StartingPosition"] == "TRIM_HORIZON"
    assert mapping["FilterCriteria"] == {"Filters": [{"Pattern": '{"eventName": ["INSERT"]}'}]}
    assert mapping["BatchSize"] == ref("NotifierBatchSize")
    assert mapping["MaximumBatchingWindowInSeconds"] == ref("NotifierBatchingWindowSeconds")


def test_notifier_failures_are_isolated_bounded_and_handed_to_the_replay(template: Template) -> None:
    # Given the notifier's DynamoDB stream event source mapping
    mapping = event_source_mapping(template, "NotifierFunction")

    # Then a poison record is isolated, retried a bounded number of times, then handed over
    assert mapping["BisectBatchOnFunctionError"] is True
    assert mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert 0 <= mapping["MaximumRetryAttempts"] <= 10
    # A record must be handed over before the stream trims it (24 h), or it is lost unseen.
    assert 60 <= mapping["MaximumRecordAgeInSeconds"] < 24 * 3600
    assert mapping["DestinationConfig"] == {
        "OnFailure": {"Destination": get_att("NotifierRetryQueue", "Arn")}
    }


def test_the_replay_takes_one_failed_notification_at_a_time_from_the_retry_queue(template: Template) -> None:
    mapping = event_source_mapping(template, "ReplayFunction")

    assert mapping["EventSourceArn"] == get_att("NotifierRetryQueue", "Arn")
    assert mapping["BatchSize"] == 1
    assert mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert mapping["ScalingConfig"] == {"MaximumConcurrency": 2}


def test_what_fails_the_replay_a_bounded_number_of_times_is_parked_in_notifier_dlq(
    template: Template, sam_parameters: dict[str, dict[str, Any]]
) -> None:
    # Given the retry queue's redrive and the replay's doubling backoff (at most an hour)
    queue = properties(template, "NotifierRetryQueue")
    receives = queue["RedrivePolicy"]["maxReceiveCount"]
    base = int(sam_parameters["NotifierReplayBackoffSeconds"]["Default"])
    waited = sum(min(base * 2**attempt, 3600) for attempt in range(receives - 1))

    # Then a failure record reaches NotifierDLQ after a bounded number of tries, while the
    # stream still holds its records (24 h), and the retry queue keeps it that long
    assert queue["RedrivePolicy"]["deadLetterTargetArn"] == get_att("NotifierDLQ", "Arn")
    assert 3 <= receives <= 10
    assert waited < 12 * 3600
    assert queue["MessageRetentionPeriod"] > waited
    assert queue["MessageRetentionPeriod"] < properties(template, "NotifierDLQ")["MessageRetentionPeriod"]
    assert queue["VisibilityTimeout"] >= 6 * properties(template, "ReplayFunction")["Timeout"]


def test_notifier_batching_window_is_never_zero(sam_parameters: dict[str, dict[str, Any]]) -> None:
    # The email rate is bounded by batch size and window; a zero window would mail every trickle.
    assert sam_parameters["NotifierBatchingWindowSeconds"]["MinValue"] >= 1


def test_a_writer_batch_above_ten_requires_a_batching_window(template: Template) -> None:
    # Lambda refuses an SQS batch size above 10 with no batching window; a template rule says so first.
    def holds(batch_size: str, window: str) -> bool:
        values = template.parameters | {"WriterBatchSize": batch_size, "WriterBatchingWindowSeconds": window}
        try:
            Template({}, values, {}, {}, rules=template.rules).check_rules()
        except TemplateError:
            return False
        return True

    assert holds("10", "0")
    assert holds("11", "1")
    assert not holds("11", "0")
    assert not holds("10000", "0")


# --- Queues -------------------------------------------------------------------------------------


def test_orders_queue_redrives_to_orders_dlq_after_five_receives(template: Template) -> None:
    queue = properties(template, "OrdersQueue")

    assert queue["RedrivePolicy"] == {
        "deadLetterTargetArn": get_att("OrdersDLQ", "Arn"),
        "maxReceiveCount": 5,
    }


def test_orders_queue_visibility_covers_six_writer_timeouts_and_the_batching_window(
    template: Template, sam_parameters: dict[str, dict[str, Any]]
) -> None:
    # Given the writer's timeout and the longest batching window the template allows
    writer_timeout = properties(template, "WriterFunction")["Timeout"]
    longest_window = sam_parameters["WriterBatchingWindowSeconds"]["MaxValue"]

    # Then a batch can be retried after throttling before its messages reappear
    assert properties(template, "OrdersQueue")["VisibilityTimeout"] >= 6 * writer_timeout + longest_window


@pytest.mark.parametrize("queue_id", ["OrdersQueue", "OrdersDLQ", "NotifierRetryQueue", "NotifierDLQ"])
def test_queues_are_encrypted(template: Template, queue_id: str) -> None:
    assert properties(template, queue_id)["SqsManagedSseEnabled"] is True


@pytest.mark.parametrize("dlq_id", ["OrdersDLQ", "NotifierDLQ"])
def test_dead_letter_queues_keep_messages_fourteen_days(template: Template, dlq_id: str) -> None:
    assert properties(template, dlq_id)["MessageRetentionPeriod"] == 14 * 24 * 3600


def test_orders_dlq_outlives_the_orders_queue(template: Template) -> None:
    # A dead letter keeps its first enqueue time, so the DLQ must keep messages longer.
    source = properties(template, "OrdersQueue")["MessageRetentionPeriod"]
    assert properties(template, "OrdersDLQ")["MessageRetentionPeriod"] > source


# --- Tables -------------------------------------------------------------------------------------


def test_orders_table_is_on_demand_recoverable_encrypted_and_streams_new_images(template: Template) -> None:
    table = properties(template, "OrdersTable")

    assert table["BillingMode"] == "PAY_PER_REQUEST"
    assert table["KeySchema"] == [{"AttributeName": "orderId", "KeyType": "HASH"}]
    assert table["AttributeDefinitions"] == [{"AttributeName": "orderId", "AttributeType": "S"}]
    assert table["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
    assert table["SSESpecification"] == {"SSEEnabled": True}
    assert table["StreamSpecification"] == {"StreamViewType": "NEW_IMAGE"}


def test_orders_table_survives_stack_deletion_and_replacement(template: Template) -> None:
    resource = template.resources["OrdersTable"]

    assert resource["DeletionPolicy"] == "Retain"
    assert resource["UpdateReplacePolicy"] == "Retain"
    assert properties(template, "OrdersTable")["DeletionProtectionEnabled"] == {
        "Fn::If": ["IsProd", True, False]
    }


def test_idempotency_table_matches_powertools_and_expires_records(template: Template) -> None:
    table = properties(template, "IdempotencyTable")

    assert table["BillingMode"] == "PAY_PER_REQUEST"
    assert table["KeySchema"] == [{"AttributeName": "id", "KeyType": "HASH"}]
    assert table["TimeToLiveSpecification"] == {"AttributeName": "expiration", "Enabled": True}
    assert table["SSESpecification"] == {"SSEEnabled": True}


# --- Topics -------------------------------------------------------------------------------------


def test_orders_topic_is_encrypted(template: Template) -> None:
    assert properties(template, "OrdersTopic")["KmsMasterKeyId"]


def test_support_email_subscription_exists_only_with_a_support_email() -> None:
    # Given the template with and without a SupportEmail
    with_email = load_template(ROOT / "template.yaml", overrides={"SupportEmail": "support@example.com"})
    without_email = load_template(ROOT / "template.yaml", overrides={"SupportEmail": ""})

    # Then the email subscription exists only in the first
    subscription = with_email.resources["SupportEmailSubscription"]
    assert subscription["Condition"] == "HasSupportEmail"
    assert subscription["Properties"] == {
        "TopicArn": ref("OrdersTopic"),
        "Protocol": "email",
        "Endpoint": ref("SupportEmail"),
        "RedrivePolicy": {"deadLetterTargetArn": get_att("EmailSubscriptionsDLQ", "Arn")},
    }
    assert with_email.is_created("SupportEmailSubscription")
    assert not without_email.is_created("SupportEmailSubscription")


# --- Support email detail ---------------------------------------------------------------------


def test_support_email_detail_is_full_or_masked_and_masked_unless_dev_asks_for_full(
    sam_parameters: dict[str, dict[str, Any]],
) -> None:
    declared = sam_parameters["SupportEmailDetail"]

    assert sorted(declared["AllowedValues"]) == sorted(detail.value for detail in SupportEmailDetail)
    assert declared["Default"] == "masked"  # what a deploy gets that names no value
    assert samconfig_parameters(ROOT / "samconfig.toml", "default")["SupportEmailDetail"] == "full"
    assert samconfig_parameters(ROOT / "samconfig.toml", "prod")["SupportEmailDetail"] == "masked"


@pytest.mark.parametrize(
    ("environment", "overrides", "expected"),
    [
        ("default", {}, SupportEmailDetail.FULL),
        ("prod", {}, SupportEmailDetail.MASKED),
        ("default", {"SupportEmailDetail": "masked"}, SupportEmailDetail.MASKED),
        ("prod", {"SupportEmailDetail": "full"}, SupportEmailDetail.FULL),
    ],
)
def test_support_email_detail_reaches_the_notifiers_environment_and_only_its(
    environment: str, overrides: dict[str, str], expected: SupportEmailDetail
) -> None:
    # Given a stage's samconfig values, and a parameter override over them
    template = load_template(ROOT / "template.yaml", environment=environment, overrides=overrides)

    # When the notifier's environment is resolved as CloudFormation would
    resolver = Resolver(template, PhysicalNames(template).lookup)
    variables = properties(template, "NotifierFunction")["Environment"]["Variables"]
    value = resolver.resolve(variables["SUPPORT_EMAIL_DETAIL"])

    # Then the notifier's settings read that level; the other functions have no such variable
    assert Settings.model_validate({"SUPPORT_EMAIL_DETAIL": value}).support_email_detail is expected
    for function_id in ("IngestFunction", "WriterFunction"):
        assert "SUPPORT_EMAIL_DETAIL" not in properties(template, function_id)["Environment"]["Variables"]


def test_a_support_email_detail_outside_its_allowed_values_is_refused_before_any_change() -> None:
    with pytest.raises(
        TemplateError, match=r"SupportEmailDetail='partial' is not one of \['full', 'masked'\]"
    ):
        load_template(ROOT / "template.yaml", overrides={"SupportEmailDetail": "partial"})


# --- Alarms -------------------------------------------------------------------------------------

EXPECTED_ALARMS: dict[str, tuple[str, str, dict[str, Any]]] = {
    # alarm: (namespace, metric, dimensions)
    "OrdersDLQDepthAlarm": (
        "AWS/SQS",
        "ApproximateNumberOfMessagesVisible",
        {"QueueName": get_att("OrdersDLQ", "QueueName")},
    ),
    "NotifierDLQDepthAlarm": (
        "AWS/SQS",
        "ApproximateNumberOfMessagesVisible",
        {"QueueName": get_att("NotifierDLQ", "QueueName")},
    ),
    "OrdersQueueAgeAlarm": (
        "AWS/SQS",
        "ApproximateAgeOfOldestMessage",
        {"QueueName": get_att("OrdersQueue", "QueueName")},
    ),
    "IngestErrorsAlarm": ("AWS/Lambda", "Errors", {"FunctionName": ref("IngestFunction")}),
    "WriterErrorsAlarm": ("AWS/Lambda", "Errors", {"FunctionName": ref("WriterFunction")}),
    "NotifierErrorsAlarm": ("AWS/Lambda", "Errors", {"FunctionName": ref("NotifierFunction")}),
    "NotifierIteratorAgeAlarm": ("AWS/Lambda", "IteratorAge", {"FunctionName": ref("NotifierFunction")}),
    "Api5xxAlarm": ("AWS/ApiGateway", "5xx", {"ApiId": ref("OrdersApi"), "Stage": "$default"}),
    "IngestThrottlesAlarm": ("AWS/Lambda", "Throttles", {"FunctionName": ref("IngestFunction")}),
    "WriterThrottlesAlarm": ("AWS/Lambda", "Throttles", {"FunctionName": ref("WriterFunction")}),
    "NotifierThrottlesAlarm": ("AWS/Lambda", "Throttles", {"FunctionName": ref("NotifierFunction")}),
    "ReplayErrorsAlarm": ("AWS/Lambda", "Errors", {"FunctionName": ref("ReplayFunction")}),
    "ReplayThrottlesAlarm": ("AWS/Lambda", "Throttles", {"FunctionName": ref("ReplayFunction")}),
    "NotifierRetryQueueBacklogAlarm": (
        "AWS/SQS",
        "ApproximateNumberOfMessagesNotVisible",
        {"QueueName": get_att("NotifierRetryQueue", "QueueName")},
    ),
    "OrdersDLQAgeAlarm": (
        "AWS/SQS",
        "ApproximateAgeOfOldestMessage",
        {"QueueName": get_att("OrdersDLQ", "QueueName")},
    ),
    "NotifierDLQAgeAlarm": (
        "AWS/SQS",
        "ApproximateAgeOfOldestMessage",
        {"QueueName": get_att("NotifierDLQ", "QueueName")},
    ),
    "EmailSubscriptionsDLQAgeAlarm": (
        "AWS/SQS",
        "ApproximateAgeOfOldestMessage",
        {"QueueName": get_att("EmailSubscriptionsDLQ", "QueueName")},
    ),
    "EmailSubscriptionsDLQDepthAlarm": (
        "AWS/SQS",
        "ApproximateNumberOfMessagesVisible",
        {"QueueName": get_att("EmailSubscriptionsDLQ", "QueueName")},
    ),
    # Deliveries SNS gave up on, the support email's and the alarm email's.
    "OrdersTopicFailedNotificationsAlarm": (
        "AWS/SNS",
        "NumberOfNotificationsFailed",
        {"TopicName": get_att("OrdersTopic", "TopicName")},
    ),
    "AlarmTopicFailedNotificationsAlarm": (
        "AWS/SNS",
        "NumberOfNotificationsFailed",
        {"TopicName": get_att("AlarmTopic", "TopicName")},
    ),
    # The notifier's own EMF metric: an order was emailed but is still PLACED.
    "NotifiedOrdersNotMarkedAlarm": (
        "Orderpipe",
        "NotifiedOrdersNotMarked",
        {"service": "notifier", "stage": ref("Stage")},
    ),
    # An email SNS did not confirm: counted as sent, someone should check the mailbox.
    "SupportEmailsUnconfirmedAlarm": (
        "Orderpipe",
        "SupportEmailsUnconfirmed",
        {"service": "notifier", "stage": ref("Stage")},
    ),
    # The same two, emitted by the replay, which mails and marks with the notifier's code.
    "ReplayNotifiedOrdersNotMarkedAlarm": (
        "Orderpipe",
        "NotifiedOrdersNotMarked",
        {"service": "replay", "stage": ref("Stage")},
    ),
    "ReplaySupportEmailsUnconfirmedAlarm": (
        "Orderpipe",
        "SupportEmailsUnconfirmed",
        {"service": "replay", "stage": ref("Stage")},
    ),
}


TABLE_THROTTLE_ALARMS = {
    "OrdersTableThrottlesAlarm": "OrdersTable",
    "IdempotencyTableThrottlesAlarm": "IdempotencyTable",
}


@pytest.mark.parametrize(("alarm_id", "table_id"), sorted(TABLE_THROTTLE_ALARMS.items()))
def test_table_throttle_alarm_adds_read_and_write_throttles(
    template: Template, alarm_id: str, table_id: str
) -> None:
    alarm = properties(template, alarm_id)
    metrics = {metric["Id"]: metric for metric in alarm["Metrics"]}

    # The alarm evaluates the one expression; both of the table's throttle metrics feed it.
    assert [m["Id"] for m in alarm["Metrics"] if m.get("ReturnData", True)] == ["throttles"]
    assert metrics["throttles"]["Expression"] == "reads + writes"
    for metric_id, name in (("reads", "ReadThrottleEvents"), ("writes", "WriteThrottleEvents")):
        stat = metrics[metric_id]["MetricStat"]
        assert stat["Metric"] == {
            "Namespace": "AWS/DynamoDB",
            "MetricName": name,
            "Dimensions": [{"Name": "TableName", "Value": ref(table_id)}],
        }
        assert stat["Stat"] == "Sum"
    assert (alarm["Threshold"], alarm["ComparisonOperator"]) == (0, "GreaterThanThreshold")


@pytest.mark.parametrize(
    ("alarm_id", "queue_id", "limit_seconds"),
    [
        # Before SQS drops the order (OrdersDLQ keeps 14 days) and before the stream drops the
        # records a NotifierDLQ failure record points at (24 hours).
        ("OrdersDLQAgeAlarm", "OrdersDLQ", 14 * 86400),
        ("NotifierDLQAgeAlarm", "NotifierDLQ", 86400),
        ("EmailSubscriptionsDLQAgeAlarm", "EmailSubscriptionsDLQ", 14 * 86400),
    ],
)
def test_dlq_age_alarm_fires_while_the_message_can_still_be_recovered(
    template: Template, alarm_id: str, queue_id: str, limit_seconds: int
) -> None:
    alarm = properties(template, alarm_id)
    retention = int(properties(template, queue_id)["MessageRetentionPeriod"])

    assert alarm["Statistic"] == "Maximum"
    assert alarm["Threshold"] <= min(limit_seconds, retention) / 2
    assert alarm["Period"] * alarm["EvaluationPeriods"] <= 3600


@pytest.mark.parametrize("alarm_id", sorted(EXPECTED_ALARMS))
def test_alarm_watches_its_metric(template: Template, alarm_id: str) -> None:
    namespace, metric, dimensions = EXPECTED_ALARMS[alarm_id]
    alarm = properties(template, alarm_id)

    assert (alarm["Namespace"], alarm["MetricName"]) == (namespace, metric)
    assert {d["Name"]: d["Value"] for d in alarm["Dimensions"]} == dimensions
    assert alarm["ComparisonOperator"] == "GreaterThanThreshold"
    assert alarm["TreatMissingData"] == "notBreaching"


def test_every_alarm_notifies_the_alarm_topic(template: Template) -> None:
    alarms = template.resources_of_type("AWS::CloudWatch::Alarm")

    assert set(alarms) == set(EXPECTED_ALARMS) | set(TABLE_THROTTLE_ALARMS) | set(ROLLBACK_ALARMS.values())
    for alarm_id, alarm in alarms.items():
        assert alarm["Properties"]["AlarmActions"] == [ref("AlarmTopic")], alarm_id
        assert alarm["Properties"]["OKActions"] == [ref("AlarmTopic")], alarm_id


@pytest.mark.parametrize(
    ("alarm_id", "function_id"),
    [
        ("NotifiedOrdersNotMarkedAlarm", "NotifierFunction"),
        ("SupportEmailsUnconfirmedAlarm", "NotifierFunction"),
        ("ReplayNotifiedOrdersNotMarkedAlarm", "ReplayFunction"),
        ("ReplaySupportEmailsUnconfirmedAlarm", "ReplayFunction"),
    ],
)
def test_custom_metric_alarm_watches_what_the_function_emits(
    template: Template, alarm_id: str, function_id: str
) -> None:
    # Given the function's metrics namespace and service name, as the template sets them
    variables = properties(template, function_id)["Environment"]["Variables"]
    alarm = properties(template, alarm_id)

    # Then the alarm reads the metric where Powertools writes it, and the notifier's code (which
    # the replay runs too) emits it
    assert alarm["Namespace"] == variables["POWERTOOLS_METRICS_NAMESPACE"]
    assert alarm["Dimensions"] == [
        {"Name": "service", "Value": variables["POWERTOOLS_SERVICE_NAME"]},
        {"Name": "stage", "Value": variables["STAGE"]},
    ]
    assert alarm["MetricName"] in emitted_metrics("notifier")
    assert (alarm["Statistic"], alarm["Threshold"]) == ("Sum", 0)


def test_api_5xx_alarm_names_the_stage_sam_creates(template: Template) -> None:
    # Given the stage SAM generates for the HTTP API
    stages = [
        resource["Properties"]
        for resource in template.resources_of_type("AWS::ApiGatewayV2::Stage").values()
        if resource["Properties"]["ApiId"] == ref("OrdersApi")
    ]

    # Then the alarm's Stage dimension is that stage, which is throttled as configured
    assert [stage["StageName"] for stage in stages] == ["$default"]
    assert stages[0]["DefaultRouteSettings"] == {
        "ThrottlingRateLimit": ref("ApiThrottlingRateLimit"),
        "ThrottlingBurstLimit": ref("ApiThrottlingBurstLimit"),
    }


def test_api_routes(template: Template) -> None:
    paths = properties(template, "OrdersApi")["Body"]["paths"]

    assert {(path, method) for path, methods in paths.items() for method in methods} == {
        ("/orders", "post"),
        ("/orders/{orderId}", "get"),
    }


# --- Dashboard ----------------------------------------------------------------------------------

SERVICES = ("ingest", "writer", "notifier", "replay")
STAGE = "dev"  # the Stage parameter's default, which the dashboard's custom metrics name
# Dimension -> the resource type its value must name (None: a fixed value, checked below).
DIMENSION_TYPES: dict[str, str | None] = {
    "FunctionName": "AWS::Lambda::Function",
    "QueueName": "AWS::SQS::Queue",
    "TableName": "AWS::DynamoDB::Table",
    "ApiId": "AWS::ApiGatewayV2::Api",
    "Stage": None,
    "service": None,
    "stage": None,
}
# What operators must see: (namespace, metric, dimensions by logical id, statistic).
EXPECTED_DASHBOARD_METRICS: set[tuple[str, str, tuple[tuple[str, str], ...], str]] = {
    *(
        ("Orderpipe", metric, (("service", service), ("stage", STAGE)), "Sum")
        for service, metric in [
            ("ingest", "OrdersAccepted"),
            ("writer", "OrdersStored"),
            ("writer", "DuplicateOrders"),
            ("notifier", "OrdersNotified"),
            ("notifier", "SupportEmailsSent"),
        ]
    ),
    ("AWS/SQS", "ApproximateNumberOfMessagesVisible", (("QueueName", "OrdersQueue"),), "Maximum"),
    ("AWS/SQS", "ApproximateAgeOfOldestMessage", (("QueueName", "OrdersQueue"),), "Maximum"),
    ("AWS/SQS", "ApproximateNumberOfMessagesVisible", (("QueueName", "OrdersDLQ"),), "Maximum"),
    ("AWS/SQS", "ApproximateNumberOfMessagesVisible", (("QueueName", "NotifierDLQ"),), "Maximum"),
    ("AWS/SQS", "ApproximateNumberOfMessagesNotVisible", (("QueueName", "NotifierRetryQueue"),), "Maximum"),
    *(
        ("AWS/Lambda", metric, (("FunctionName", function_id),), stat)
        for function_id in FUNCTIONS
        for metric, stat in [("Errors", "Sum"), ("Throttles", "Sum"), ("Duration", "p99")]
    ),
    ("AWS/Lambda", "IteratorAge", (("FunctionName", "NotifierFunction"),), "Maximum"),
    *(
        ("AWS/ApiGateway", metric, (("ApiId", "OrdersApi"), ("Stage", "$default")), stat)
        for metric, stat in [("Count", "Sum"), ("4xx", "Sum"), ("5xx", "Sum"), ("Latency", "p99")]
    ),
    *(
        ("AWS/DynamoDB", metric, (("TableName", table_id),), "Sum")
        for table_id in ("OrdersTable", "IdempotencyTable")
        for metric in ("ReadThrottleEvents", "WriteThrottleEvents")
    ),
}


@pytest.fixture(scope="module")
def dashboard(template: Template) -> dict[str, Any]:
    """The dashboard body, its !Sub resolved with stand-in names (see PhysicalNames)."""
    resolver = Resolver(template, PhysicalNames(template).lookup)
    body = resolver.resolve(properties(template, "OrdersDashboard")["DashboardBody"])
    assert isinstance(body, str)
    parsed: dict[str, Any] = json.loads(body)
    return parsed


def widgets_of_type(dashboard: dict[str, Any], widget_type: str) -> list[dict[str, Any]]:
    return [widget for widget in dashboard["widgets"] if widget["type"] == widget_type]


def shown_metrics(
    template: Template, dashboard: dict[str, Any]
) -> set[tuple[str, str, tuple[tuple[str, str], ...], str]]:
    """Every graphed metric, its dimension values mapped back to logical ids."""
    names = PhysicalNames(template)
    logical_ids = {
        names.lookup(logical_id, attribute): logical_id
        for logical_id in template.resources
        for attribute in (None, "QueueName")
    }
    shown = set()
    for widget in widgets_of_type(dashboard, "metric"):
        for row in widget["properties"]["metrics"]:
            options = row[-1] if isinstance(row[-1], dict) else {}
            namespace, metric, *pairs = row[:-1] if options else row
            dimensions = []
            for name, value in zip(pairs[::2], pairs[1::2], strict=True):
                resource_type = DIMENSION_TYPES[name]
                if resource_type is not None:
                    assert value in logical_ids, f"{metric}: {name}={value} is not a resource of this stack"
                    value = logical_ids[value]
                    assert template.resources[value]["Type"] == resource_type, f"{metric}: {name}={value}"
                dimensions.append((name, value))
            stat = options.get("stat", widget["properties"].get("stat"))
            shown.add((namespace, metric, tuple(dimensions), stat))
    return shown


def test_dashboard_body_is_json_whose_metrics_name_this_stacks_resources(
    template: Template, dashboard: dict[str, Any]
) -> None:
    # Given every metric the dashboard graphs (dimension values resolved, then mapped back)
    shown = shown_metrics(template, dashboard)

    # Then each names a resource of this stack, a service of the pipeline or the API's stage
    for _, _, dimensions, _ in shown:
        for name, value in dimensions:
            if name == "service":
                assert value in SERVICES
            if name == "Stage":
                assert value == "$default"
            if name == "stage":
                assert value == STAGE
    # And every graph reads the stack's own region
    for widget in widgets_of_type(dashboard, "metric"):
        assert widget["properties"]["region"] == REGION, widget["properties"]["title"]


def test_dashboard_shows_orders_queues_functions_api_and_tables(
    template: Template, dashboard: dict[str, Any]
) -> None:
    assert shown_metrics(template, dashboard) >= EXPECTED_DASHBOARD_METRICS


def test_dashboard_shows_every_custom_metric_the_functions_emit(
    template: Template, dashboard: dict[str, Any]
) -> None:
    # Given the Powertools metrics each step adds, under its service name
    emitted = {(service, metric) for service in SERVICES for metric in emitted_metrics(service)}
    variables = properties(template, "IngestFunction")["Environment"]["Variables"]

    # When the dashboard's custom metrics are listed
    custom = {
        (dict(dimensions)["service"], metric)
        for namespace, metric, dimensions, _ in shown_metrics(template, dashboard)
        if namespace == variables["POWERTOOLS_METRICS_NAMESPACE"]
    }

    # Then they are exactly those: none missing, none that nothing emits
    assert len(emitted) == 16
    assert custom == emitted


def test_dashboard_shows_the_state_of_every_alarm(template: Template, dashboard: dict[str, Any]) -> None:
    names = PhysicalNames(template)
    [alarm_widget] = widgets_of_type(dashboard, "alarm")

    assert {names.owner(arn) for arn in alarm_widget["properties"]["alarms"]} == set(EXPECTED_ALARMS) | set(
        TABLE_THROTTLE_ALARMS
    )


def test_dashboard_widgets_fit_the_grid_without_overlapping(dashboard: dict[str, Any]) -> None:
    cells: set[tuple[int, int]] = set()
    for widget in dashboard["widgets"]:
        x, y, width, height = (widget[key] for key in ("x", "y", "width", "height"))
        assert x >= 0
        assert x + width <= 24
        area = {(column, row) for column in range(x, x + width) for row in range(y, y + height)}
        assert not area & cells, widget
        cells |= area


def test_dashboard_is_named_per_stack_and_region_and_its_url_is_an_output(template: Template) -> None:
    # Dashboards are global to the account: dev and prod, or two regions, must not share one.
    assert properties(template, "OrdersDashboard")["DashboardName"] == {
        "Fn::Sub": "${AWS::StackName}-${AWS::Region}"
    }
    resolver = Resolver(template, PhysicalNames(template).lookup)
    url = resolver.resolve(template.outputs["DashboardUrl"]["Value"])
    assert url == (
        f"https://{REGION}.console.aws.amazon.com/cloudwatch/home?region={REGION}"
        "#dashboards:name=orderpipe-OrdersDashboard"
    )


# --- Functions ----------------------------------------------------------------------------------

EXPECTED_ENVIRONMENT: dict[str, dict[str, Any]] = {
    "IngestFunction": {
        "POWERTOOLS_SERVICE_NAME": "ingest",
        "ORDERS_QUEUE_URL": ref("OrdersQueue"),
        "ORDERS_TABLE_NAME": ref("OrdersTable"),
        "IDEMPOTENCY_TABLE_NAME": ref("IdempotencyTable"),
    },
    "WriterFunction": {"POWERTOOLS_SERVICE_NAME": "writer", "ORDERS_TABLE_NAME": ref("OrdersTable")},
    "NotifierFunction": {
        "POWERTOOLS_SERVICE_NAME": "notifier",
        "ORDERS_TABLE_NAME": ref("OrdersTable"),
        "ORDERS_TOPIC_ARN": ref("OrdersTopic"),
        "SUPPORT_EMAIL_DETAIL": ref("SupportEmailDetail"),
        "NOTIFIER_RETRY_QUEUE_URL": ref("NotifierRetryQueue"),
    },
    "ReplayFunction": {
        "POWERTOOLS_SERVICE_NAME": "replay",
        "ORDERS_TABLE_NAME": ref("OrdersTable"),
        "ORDERS_TOPIC_ARN": ref("OrdersTopic"),
        "SUPPORT_EMAIL_DETAIL": ref("SupportEmailDetail"),
        "NOTIFIER_RETRY_QUEUE_URL": ref("NotifierRetryQueue"),
        "REPLAY_BACKOFF_SECONDS": ref("NotifierReplayBackoffSeconds"),
    },
}


@pytest.mark.parametrize("function_id", FUNCTIONS)
def test_function_runs_python313_on_arm64_untraced_unless_sampled_upstream_with_its_own_log_group(
    template: Template, function_id: str
) -> None:
    function = properties(template, function_id)

    assert function["Runtime"] == "python3.13"
    assert function["Architectures"] == ["arm64"]
    assert function["TracingConfig"] == {"Mode": "PassThrough"}
    # Nothing upstream samples: the Tracer would only cost time
    assert function["Environment"]["Variables"]["POWERTOOLS_TRACE_DISABLED"] == "true"
    assert function["LoggingConfig"] == {"LogGroup": ref(function_id.replace("Function", "LogGroup"))}


@pytest.mark.parametrize("function_id", FUNCTIONS)
def test_function_environment(template: Template, function_id: str) -> None:
    variables = properties(template, function_id)["Environment"]["Variables"]

    assert variables["POWERTOOLS_METRICS_NAMESPACE"] == "Orderpipe"
    for name, value in EXPECTED_ENVIRONMENT[function_id].items():
        assert variables[name] == value, name


# --- Timeouts: the handler, not Lambda, decides what failed ---------------------------------------

# Kept for what the handler does besides waiting on AWS (parsing, logging, flushing metrics).
HANDLER_MARGIN_SECONDS = 1.0


def function_settings(template: Template, function_id: str) -> Settings:
    """The function's settings from the values the template gives (references left out)."""
    variables = properties(template, function_id)["Environment"]["Variables"]
    return Settings.model_validate(
        {name: value for name, value in variables.items() if isinstance(value, str)}
    )


def test_a_call_budget_is_every_attempt_waiting_out_both_timeouts_plus_each_backoff() -> None:
    # botocore's standard mode sleeps rand(0, 1) * 2 ** (attempt - 1) s before each retry
    assert aws_call_budget(0.5, 0.5, 1) == 1.0
    assert aws_call_budget(0.5, 0.5, 2) == 2 * 1.0 + 1
    assert aws_call_budget(1, 2, 3) == 3 * 3 + 1 + 2


def test_post_with_an_idempotency_key_answers_inside_the_ingest_timeout(template: Template) -> None:
    # Given the longest a POST can wait on AWS: the idempotency record (PutItem), SendMessage,
    # then the record completed (UpdateItem) or released (DeleteItem), each at its worst
    current = function_settings(template, "IngestFunction")
    worst = 3 * current.aws_call_budget_seconds

    # Then the handler answers (503 and Retry-After) before Lambda would end it
    assert worst + HANDLER_MARGIN_SECONDS <= properties(template, "IngestFunction")["Timeout"]


def test_a_writer_call_fits_inside_the_writer_timeout(template: Template) -> None:
    # A batch runs one PutItem per record; should a stalled table make a whole batch outlast the
    # Timeout, its messages come back after the visibility timeout and are stored once.
    current = function_settings(template, "WriterFunction")

    assert (
        current.aws_call_budget_seconds + HANDLER_MARGIN_SECONDS
        <= properties(template, "WriterFunction")["Timeout"]
    )


def test_a_default_notifier_batch_is_read_mailed_and_marked_inside_the_notifier_timeout(
    template: Template, sam_parameters: dict[str, dict[str, Any]]
) -> None:
    # Given a batch of the default size: its statuses read (BatchGetItem, 100 keys a request),
    # one email published, its orders marked (TransactWriteItems, 100 a request), and those not
    # marked handed to the replay (one SendMessage)
    current = function_settings(template, "NotifierFunction")
    requests = math.ceil(int(sam_parameters["NotifierBatchSize"]["Default"]) / 100)
    worst = (2 * requests + 1) * current.aws_call_budget_seconds + current.sns_publish_budget_seconds

    # Then it all fits, with the notifier's own margin; larger batches publish while it fits
    # (the notifier checks before each email) and leave the rest to Lambda's retry
    assert worst + SAFETY_MARGIN_SECONDS <= properties(template, "NotifierFunction")["Timeout"]


def test_sns_waits_longer_than_dynamodb_and_sqs_but_well_inside_the_notifier_timeout(
    template: Template,
) -> None:
    current = function_settings(template, "NotifierFunction")

    assert current.SNS_READ_TIMEOUT_SECONDS >= current.AWS_READ_TIMEOUT_SECONDS
    assert current.sns_publish_budget_seconds <= properties(template, "NotifierFunction")["Timeout"] / 3


def test_settings_default_to_the_templates_timeouts(template: Template) -> None:
    # So that tests and local runs without the template's environment keep its budget
    defaults = Settings()
    for function_id in FUNCTIONS:
        current = function_settings(template, function_id)
        assert current.AWS_CONNECT_TIMEOUT_SECONDS == defaults.AWS_CONNECT_TIMEOUT_SECONDS
        assert current.AWS_READ_TIMEOUT_SECONDS == defaults.AWS_READ_TIMEOUT_SECONDS
        assert current.AWS_MAX_ATTEMPTS == defaults.AWS_MAX_ATTEMPTS
    assert (
        function_settings(template, "NotifierFunction").SNS_READ_TIMEOUT_SECONDS
        == defaults.SNS_READ_TIMEOUT_SECONDS
    )


def test_outputs_name_the_api_queues_table_and_topic(template: Template) -> None:
    assert {
        "ApiUrl",
        "OrdersQueueUrl",
        "OrdersDLQUrl",
        "NotifierDLQUrl",
        "OrdersTableName",
        "OrdersTopicArn",
    } <= set(template.outputs)
    assert template.outputs["OrdersQueueUrl"]["Value"] == ref("OrdersQueue")
    assert template.outputs["OrdersTopicArn"]["Value"] == ref("OrdersTopic")


# --- Least privilege ----------------------------------------------------------------------------

STREAM = "OrdersTable stream"
EXPECTED_PERMISSIONS: dict[str, set[tuple[str, str]]] = {
    # function: every (action, resource) its role allows; "*" only where IAM has no resource scope
    "IngestFunction": {
        ("logs:CreateLogStream", "IngestLogGroup"),
        ("logs:PutLogEvents", "IngestLogGroup"),
        ("xray:PutTraceSegments", "*"),
        ("xray:PutTelemetryRecords", "*"),
        ("sqs:SendMessage", "OrdersQueue"),
        ("dynamodb:GetItem", "OrdersTable"),
        ("dynamodb:GetItem", "IdempotencyTable"),
        ("dynamodb:PutItem", "IdempotencyTable"),
        ("dynamodb:UpdateItem", "IdempotencyTable"),
        ("dynamodb:DeleteItem", "IdempotencyTable"),
    },
    "WriterFunction": {
        ("logs:CreateLogStream", "WriterLogGroup"),
        ("logs:PutLogEvents", "WriterLogGroup"),
        ("xray:PutTraceSegments", "*"),
        ("xray:PutTelemetryRecords", "*"),
        ("sqs:ReceiveMessage", "OrdersQueue"),
        ("sqs:DeleteMessage", "OrdersQueue"),
        ("sqs:GetQueueAttributes", "OrdersQueue"),
        ("dynamodb:PutItem", "OrdersTable"),
    },
    "NotifierFunction": {
        ("logs:CreateLogStream", "NotifierLogGroup"),
        ("logs:PutLogEvents", "NotifierLogGroup"),
        ("xray:PutTraceSegments", "*"),
        ("xray:PutTelemetryRecords", "*"),
        ("dynamodb:DescribeStream", STREAM),
        ("dynamodb:GetRecords", STREAM),
        ("dynamodb:GetShardIterator", STREAM),
        ("dynamodb:ListStreams", STREAM),
        ("sqs:SendMessage", "NotifierRetryQueue"),
        ("sns:Publish", "OrdersTopic"),
        ("dynamodb:BatchGetItem", "OrdersTable"),
        ("dynamodb:UpdateItem", "OrdersTable"),
    },
    "ReplayFunction": {
        ("logs:CreateLogStream", "ReplayLogGroup"),
        ("logs:PutLogEvents", "ReplayLogGroup"),
        ("xray:PutTraceSegments", "*"),
        ("xray:PutTelemetryRecords", "*"),
        ("sqs:ReceiveMessage", "NotifierRetryQueue"),
        ("sqs:DeleteMessage", "NotifierRetryQueue"),
        ("sqs:GetQueueAttributes", "NotifierRetryQueue"),
        ("sqs:ChangeMessageVisibility", "NotifierRetryQueue"),
        ("sqs:SendMessage", "NotifierRetryQueue"),
        ("dynamodb:GetShardIterator", STREAM),
        ("dynamodb:GetRecords", STREAM),
        ("sns:Publish", "OrdersTopic"),
        ("dynamodb:BatchGetItem", "OrdersTable"),
        ("dynamodb:UpdateItem", "OrdersTable"),
        ("dynamodb:Scan", "OrdersTable"),
        ("dynamodb:GetItem", "OrdersTable"),
    },
}


class PhysicalNames:
    """Stand-in names and ARNs for the template's resources, and the way back to logical ids.

    Resolving a policy against these and mapping each ARN back shows which resource a statement
    really names - whether written as GetAtt, Ref or an ARN built with Fn::Sub - and catches an
    ARN that names nothing of the stack (a wrong service, a stray wildcard, a queue URL).
    """

    def __init__(self, template: Template) -> None:
        self.template = template
        self.owners: dict[str, str] = {"*": "*"}
        for logical_id in template.resources:
            for attribute in (None, "Arn", "StreamArn"):
                value = self.lookup(logical_id, attribute)
                if attribute == "StreamArn":
                    self.owners[value] = f"{logical_id} stream"
                    self.owners[f"{self.lookup(logical_id, 'Arn')}/stream/*"] = f"{logical_id} stream"
                elif value.startswith("arn:"):
                    self.owners[value] = logical_id

    def lookup(self, logical_id: str, attribute: str | None) -> str:
        resource_type = self.template.resources[logical_id]["Type"]
        name = f"orderpipe-{logical_id}"
        prefix = f"arn:aws:{resource_type.split('::')[1].lower()}:{REGION}:{ACCOUNT_ID}"
        match resource_type, attribute:
            case "AWS::SQS::Queue", None:
                return f"https://sqs.{REGION}.amazonaws.com/{ACCOUNT_ID}/{name}"
            case "AWS::SQS::Queue", "Arn":
                return f"{prefix}:{name}"
            case "AWS::DynamoDB::Table", "Arn":
                return f"{prefix}:table/{name}"
            case "AWS::DynamoDB::Table", "StreamArn":
                return f"{prefix}:table/{name}/stream/2025-01-01T00:00:00.000"
            case "AWS::SNS::Topic", None | "TopicArn":
                return f"{prefix}:{name}"
            case "AWS::Logs::LogGroup", "Arn":
                return f"{prefix}:log-group:{name}:*"
            case "AWS::CloudWatch::Alarm", "Arn":
                return f"{prefix}:alarm:{name}"
            case _, "QueueName" | "TopicName" | None:
                return name
        return f"{prefix}:{attribute}/{name}"

    def owner(self, arn: str) -> str:
        assert arn in self.owners, f"{arn} is not a resource of this stack"
        return self.owners[arn]


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def role_of(template: Template, function_id: str) -> str:
    role = properties(template, function_id)["Role"]
    assert role == {"Fn::GetAtt": [role["Fn::GetAtt"][0], "Arn"]}
    role_id: str = role["Fn::GetAtt"][0]
    return role_id


def statements(template: Template, role_id: str) -> Iterator[dict[str, Any]]:
    for policy in properties(template, role_id).get("Policies", []):
        yield from as_list(policy["PolicyDocument"]["Statement"])


@pytest.mark.parametrize("function_id", FUNCTIONS)
def test_function_role_allows_exactly_its_own_actions_on_its_own_resources(
    template: Template, function_id: str
) -> None:
    # Given the function's role, with every resource reference resolved to a logical id
    names = PhysicalNames(template)
    resolver = Resolver(template, names.lookup)
    role_id = role_of(template, function_id)

    # When every statement is expanded to (action, resource) pairs
    allowed: set[tuple[str, str]] = set()
    for statement in statements(template, role_id):
        assert statement["Effect"] == "Allow"
        assert not {"NotAction", "NotResource", "Principal", "NotPrincipal"} & set(statement)
        for action in as_list(statement["Action"]):
            for resource in as_list(resolver.resolve(statement["Resource"])):
                allowed.add((action, names.owner(resource)))

    # Then they are exactly what the function needs, nothing more
    assert allowed == EXPECTED_PERMISSIONS[function_id]


@pytest.mark.parametrize("function_id", FUNCTIONS)
def test_function_role_has_no_managed_policies_and_trusts_only_lambda(
    template: Template, function_id: str
) -> None:
    # SAM's event source policies (AWSLambdaSQSQueueExecutionRole, ...) allow their actions on "*".
    role = properties(template, role_of(template, function_id))

    assert not role.get("ManagedPolicyArns")
    assert role["AssumeRolePolicyDocument"]["Statement"] == [
        {"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}
    ]


def test_each_function_has_a_role_of_its_own(template: Template) -> None:
    roles = [role_of(template, function_id) for function_id in FUNCTIONS]

    assert len(set(roles)) == len(FUNCTIONS)
    # The one role SAM adds: CodeDeploy's, to shift the aliases (AWS's managed policy for it).
    assert set(roles) | {"CodeDeployServiceRole"} == set(template.resources_of_type("AWS::IAM::Role"))
    assert properties(template, "CodeDeployServiceRole")["ManagedPolicyArns"] == [
        "arn:aws:iam::aws:policy/service-role/AWSCodeDeployRoleForLambda"
    ]


# --- Safe deploys: versions, the alias `live`, CodeDeploy ----------------------------------------

ROLLBACK_ALARMS = {
    "IngestFunction": "IngestLiveVersionErrorsAlarm",
    "WriterFunction": "WriterLiveVersionErrorsAlarm",
    "NotifierFunction": "NotifierLiveVersionErrorsAlarm",
    "ReplayFunction": "ReplayLiveVersionErrorsAlarm",
}


def version_of(template: Template, function_id: str) -> str:
    versions = [
        logical_id
        for logical_id, resource in template.resources_of_type("AWS::Lambda::Version").items()
        if resource["Properties"]["FunctionName"] == ref(function_id)
    ]
    assert len(versions) == 1, f"{function_id} should publish exactly one version"
    return versions[0]


@pytest.mark.parametrize("function_id", FUNCTIONS)
def test_alias_live_points_at_the_published_version_through_codedeploy(
    template: Template, function_id: str
) -> None:
    # Given the alias SAM creates for the function
    alias = template.resources[f"{function_id}Aliaslive"]

    # Then it names `live`, points at this deploy's version, and only CodeDeploy moves it
    assert alias["Type"] == "AWS::Lambda::Alias"
    assert alias["Properties"]["Name"] == "live"
    assert alias["Properties"]["FunctionVersion"] == get_att(version_of(template, function_id), "Version")
    assert alias["UpdatePolicy"]["CodeDeployLambdaAliasUpdate"] == {
        "ApplicationName": ref("ServerlessDeploymentApplication"),
        "DeploymentGroupName": ref(f"{function_id}DeploymentGroup"),
    }


def test_one_codedeploy_application_for_lambda(template: Template) -> None:
    applications = template.resources_of_type("AWS::CodeDeploy::Application")

    assert list(applications) == ["ServerlessDeploymentApplication"]
    assert applications["ServerlessDeploymentApplication"]["Properties"]["ComputePlatform"] == "Lambda"


@pytest.mark.parametrize(("stage", "config"), [("dev", "AllAtOnce"), ("prod", "Canary10Percent5Minutes")])
@pytest.mark.parametrize("function_id", FUNCTIONS)
def test_deployment_group_shifts_traffic_by_stage_and_rolls_back_on_the_new_versions_errors(
    function_id: str, stage: str, config: str
) -> None:
    # Given the template transformed for a stage
    template = load_template(ROOT / "template.yaml", overrides={"Stage": stage})

    # When reading the function's deployment group
    group = properties(template, f"{function_id}DeploymentGroup")

    # Then it shifts traffic as the stage wants, watches the rollback alarm and rolls back on it
    assert group["DeploymentConfigName"] == {
        "Fn::Sub": ["CodeDeployDefault.Lambda${ConfigName}", {"ConfigName": config}]
    }
    assert group["ApplicationName"] == ref("ServerlessDeploymentApplication")
    assert group["DeploymentStyle"] == {
        "DeploymentType": "BLUE_GREEN",
        "DeploymentOption": "WITH_TRAFFIC_CONTROL",
    }
    assert group["AlarmConfiguration"] == {
        "Enabled": True,
        "Alarms": [{"Name": ref(ROLLBACK_ALARMS[function_id])}],
    }
    assert group["AutoRollbackConfiguration"]["Enabled"] is True
    assert "DEPLOYMENT_STOP_ON_ALARM" in group["AutoRollbackConfiguration"]["Events"]


@pytest.mark.parametrize("function_id", FUNCTIONS)
def test_rollback_alarm_watches_the_errors_of_the_version_being_deployed(
    template: Template, function_id: str
) -> None:
    alarm = properties(template, ROLLBACK_ALARMS[function_id])

    # Lambda reports a version's errors under the alias with ExecutedVersion; this deploy's version.
    assert (alarm["Namespace"], alarm["MetricName"]) == ("AWS/Lambda", "Errors")
    assert {d["Name"]: d["Value"] for d in alarm["Dimensions"]} == {
        "FunctionName": ref(function_id),
        "Resource": {"Fn::Sub": f"${{{function_id}}}:live"},
        "ExecutedVersion": get_att(version_of(template, function_id), "Version"),
    }
    assert (alarm["Statistic"], alarm["Threshold"], alarm["ComparisonOperator"]) == (
        "Sum",
        0,
        "GreaterThanThreshold",
    )
    # Shorter than the canary's 5 minutes, so that a failing version is caught before it takes all traffic.
    assert alarm["Period"] * alarm["EvaluationPeriods"] <= 300


@pytest.mark.parametrize("function_id", ["WriterFunction", "NotifierFunction", "ReplayFunction"])
def test_event_sources_invoke_the_alias(template: Template, function_id: str) -> None:
    mappings = [
        resource["Properties"]
        for resource in template.resources_of_type("AWS::Lambda::EventSourceMapping").values()
        if resource["Properties"]["FunctionName"] == ref(f"{function_id}Aliaslive")
    ]

    assert len(mappings) == 1
    assert len(template.resources_of_type("AWS::Lambda::EventSourceMapping")) == 3


def test_api_integrations_and_permissions_invoke_the_ingest_alias(template: Template) -> None:
    # Given the HTTP API's OpenAPI body and the permissions SAM grants API Gateway
    body = properties(template, "OrdersApi")["Body"]
    uris = [
        operation["x-amazon-apigateway-integration"]["uri"]
        for operations in body["paths"].values()
        for operation in operations.values()
    ]
    permissions = template.resources_of_type("AWS::Lambda::Permission").values()

    # Then every route invokes IngestFunction's alias, and only the alias may be invoked by the API
    assert len(uris) == 2
    for uri in uris:
        assert "${IngestFunctionAliaslive}" in uri["Fn::Sub"]
    assert {
        p["Properties"]["FunctionName"]["Ref"]
        for p in permissions
        if p["Properties"]["Principal"] == "apigateway.amazonaws.com"
    } == {"IngestFunctionAliaslive"}


def test_a_literal_property_change_publishes_a_new_version(tmp_path: Any) -> None:
    # Given the template with one function's memory size changed in the template itself
    source = (ROOT / "template.yaml").read_text()
    changed = tmp_path / "template.yaml"
    changed.write_text(source.replace("    MemorySize: 512\n", "    MemorySize: 1024\n", 1))
    (tmp_path / "samconfig.toml").write_text((ROOT / "samconfig.toml").read_text())

    # When both are transformed
    before = load_template(ROOT / "template.yaml")
    after = load_template(changed)

    # Then every function gets a new version id (AutoPublishAliasAllProperties hashes all properties)
    assert source != changed.read_text()
    for function_id in FUNCTIONS:
        assert version_of(before, function_id) != version_of(after, function_id)


def test_a_parameter_value_change_alone_publishes_no_new_version() -> None:
    """The trap of SAM issues #1640/#3820, pinned: samtranslator hashes the function's properties
    before resolving parameters (`_construct_version`), so `LogLevel=DEBUG` updates $LATEST but the
    alias keeps the old version. README (Deploy) says how to ship such a change; if this test
    fails, samtranslator now publishes on parameter values and README can say so."""
    # Given the same template transformed with two values of a parameter the environment references
    info = load_template(ROOT / "template.yaml", overrides={"LogLevel": "INFO"})
    debug = load_template(ROOT / "template.yaml", overrides={"LogLevel": "DEBUG"})

    # Then the environment differs only by the unresolved Ref, and the version ids do not differ
    assert info.parameters["LogLevel"] != debug.parameters["LogLevel"]
    for function_id in FUNCTIONS:
        assert properties(info, function_id)["Environment"]["Variables"]["POWERTOOLS_LOG_LEVEL"] == ref(
            "LogLevel"
        )
        assert version_of(info, function_id) == version_of(debug, function_id)


# --- Hygiene: retained queues, the email DLQ, ingest's concurrency ---------------------------------


@pytest.mark.parametrize("queue_id", ["OrdersQueue", "OrdersDLQ"])
def test_queues_holding_unstored_orders_outlive_the_stack(template: Template, queue_id: str) -> None:
    queue = template.resources[queue_id]

    assert (queue["DeletionPolicy"], queue["UpdateReplacePolicy"]) == ("Retain", "Retain")


def test_undeliverable_emails_are_parked_in_a_queue_only_our_topics_may_write() -> None:
    # Given both email subscriptions
    template = load_template(
        ROOT / "template.yaml",
        overrides={"SupportEmail": "support@example.com", "AlarmEmail": "oncall@example.com"},
    )
    policy = properties(template, "EmailSubscriptionsDLQPolicy")
    [statement] = policy["PolicyDocument"]["Statement"]

    # Then each redrives to EmailSubscriptionsDLQ, which SNS may write to for these two topics only
    for subscription_id in ("SupportEmailSubscription", "AlarmEmailSubscription"):
        assert properties(template, subscription_id)["RedrivePolicy"] == {
            "deadLetterTargetArn": get_att("EmailSubscriptionsDLQ", "Arn")
        }
    assert policy["Queues"] == [ref("EmailSubscriptionsDLQ")]
    assert statement["Effect"] == "Allow"
    assert statement["Principal"] == {"Service": "sns.amazonaws.com"}
    assert statement["Action"] == "sqs:SendMessage"
    assert statement["Resource"] == get_att("EmailSubscriptionsDLQ", "Arn")
    assert statement["Condition"] == {"ArnEquals": {"aws:SourceArn": [ref("OrdersTopic"), ref("AlarmTopic")]}}
    assert properties(template, "EmailSubscriptionsDLQ")["SqsManagedSseEnabled"] is True


@pytest.mark.parametrize(("value", "reserved"), [("0", None), ("200", "200")])
def test_ingest_reserved_concurrency_is_set_only_when_asked(value: str, reserved: str | None) -> None:
    template = load_template(ROOT / "template.yaml", overrides={"IngestReservedConcurrency": value})
    setting = properties(template, "IngestFunction")["ReservedConcurrentExecutions"]
    function = Resolver(template, lambda *_: None).resolve(
        {"Concurrency": {"ReservedConcurrentExecutions": setting}}
    )

    # 0 must not reach Lambda: a reservation of 0 would throttle every request.
    resolved = function["Concurrency"].get("ReservedConcurrentExecutions")
    assert (None if resolved is None else str(resolved)) == reserved
