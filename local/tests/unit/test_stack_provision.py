"""`provision_stack`: the template's queues, tables and topics, created in moto as `sam deploy` would."""

from __future__ import annotations

import json
import textwrap
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from moto import mock_aws

from orderpipe_local.stack.provision import Resource, Stack, provision_stack
from orderpipe_local.stack.template import Template, TemplateError, load_template
from orderpipe_local.testing import ROOT

SUPPORT_EMAIL = "support@example.com"


@pytest.fixture(scope="module")
def template() -> Template:
    return load_template(ROOT / "template.yaml", overrides={"SupportEmail": SUPPORT_EMAIL})


@pytest.fixture
def stack(template: Template) -> Iterator[Stack]:
    with mock_aws():
        yield provision_stack(template)


def queue_attributes(stack: Stack, queue_id: str) -> dict[str, str]:
    sqs = boto3.client("sqs", region_name=stack.template.region)
    response = sqs.get_queue_attributes(QueueUrl=stack.ref(queue_id), AttributeNames=["All"])
    return {str(name): value for name, value in response["Attributes"].items()}


def test_orders_queue_has_the_template_attributes_and_redrive(stack: Stack, template: Template) -> None:
    # Given the queue as the template declares it
    declared = template.resources["OrdersQueue"]["Properties"]

    # When its attributes are read back from SQS
    attributes = queue_attributes(stack, "OrdersQueue")

    # Then they are the template's, and failed messages go to OrdersDLQ after 5 receives
    assert attributes["VisibilityTimeout"] == str(declared["VisibilityTimeout"])
    assert attributes["MessageRetentionPeriod"] == str(declared["MessageRetentionPeriod"])
    assert attributes["SqsManagedSseEnabled"] == "true"
    assert json.loads(attributes["RedrivePolicy"]) == {
        "deadLetterTargetArn": stack.attribute("OrdersDLQ", "Arn"),
        "maxReceiveCount": 5,
    }


@pytest.mark.parametrize("dlq_id", ["OrdersDLQ", "NotifierDLQ"])
def test_dead_letter_queues_keep_messages_fourteen_days(stack: Stack, dlq_id: str) -> None:
    assert queue_attributes(stack, dlq_id)["MessageRetentionPeriod"] == str(14 * 24 * 3600)


def test_orders_table_has_its_key_stream_and_point_in_time_recovery(stack: Stack) -> None:
    dynamodb = boto3.client("dynamodb", region_name=stack.template.region)

    table = dynamodb.describe_table(TableName=stack.ref("OrdersTable"))["Table"]
    backups = dynamodb.describe_continuous_backups(TableName=stack.ref("OrdersTable"))

    assert table["KeySchema"] == [{"AttributeName": "orderId", "KeyType": "HASH"}]
    assert table["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
    assert table["StreamSpecification"] == {"StreamEnabled": True, "StreamViewType": "NEW_IMAGE"}
    assert table["LatestStreamArn"] == stack.attribute("OrdersTable", "StreamArn")
    recovery = backups["ContinuousBackupsDescription"]["PointInTimeRecoveryDescription"]
    assert recovery["PointInTimeRecoveryStatus"] == "ENABLED"


def test_idempotency_table_expires_records_by_ttl(stack: Stack) -> None:
    dynamodb = boto3.client("dynamodb", region_name=stack.template.region)

    table = dynamodb.describe_table(TableName=stack.ref("IdempotencyTable"))["Table"]
    ttl = dynamodb.describe_time_to_live(TableName=stack.ref("IdempotencyTable"))["TimeToLiveDescription"]

    assert table["KeySchema"] == [{"AttributeName": "id", "KeyType": "HASH"}]
    assert ttl == {"TimeToLiveStatus": "ENABLED", "AttributeName": "expiration"}


def test_orders_topic_is_encrypted_and_mails_support(stack: Stack) -> None:
    sns = boto3.client("sns", region_name=stack.template.region)
    topic_arn = stack.ref("OrdersTopic")

    attributes = sns.get_topic_attributes(TopicArn=topic_arn)["Attributes"]
    subscriptions = sns.list_subscriptions_by_topic(TopicArn=topic_arn)["Subscriptions"]

    assert attributes["KmsMasterKeyId"] == "alias/aws/sns"
    assert [(s["Protocol"], s["Endpoint"]) for s in subscriptions] == [("email", SUPPORT_EMAIL)]
    assert stack.ref("SupportEmailSubscription") == subscriptions[0]["SubscriptionArn"]


def test_no_support_email_means_no_subscription() -> None:
    # Given the template without a SupportEmail
    template = load_template(ROOT / "template.yaml", overrides={"SupportEmail": ""})

    with mock_aws():
        # When its stack is created
        stack = provision_stack(template)
        sns = boto3.client("sns", region_name=template.region)

        # Then the topic exists but nobody is subscribed
        assert "SupportEmailSubscription" not in stack.resources
        assert sns.list_subscriptions_by_topic(TopicArn=stack.ref("OrdersTopic"))["Subscriptions"] == []


def test_only_data_resources_are_created(stack: Stack) -> None:
    # Functions, roles, the API, alarms and log groups are played by the local pipeline or not at all.
    assert set(stack.resources) == {
        "OrdersQueue",
        "OrdersDLQ",
        "NotifierRetryQueue",
        "NotifierDLQ",
        "EmailSubscriptionsDLQ",
        "OrdersTable",
        "IdempotencyTable",
        "OrdersTopic",
        "SupportEmailSubscription",
        "AlarmTopic",
    }


def test_function_environment_points_at_the_created_resources(stack: Stack) -> None:
    environment = stack.function_environment("IngestFunction")

    assert environment["ORDERS_QUEUE_URL"] == stack.ref("OrdersQueue")
    assert environment["ORDERS_TABLE_NAME"] == stack.ref("OrdersTable")
    assert environment["IDEMPOTENCY_TABLE_NAME"] == stack.ref("IdempotencyTable")
    assert environment["POWERTOOLS_SERVICE_NAME"] == "ingest"
    assert stack.function_environment("NotifierFunction")["ORDERS_TOPIC_ARN"] == stack.ref("OrdersTopic")


def test_event_source_mappings_resolve_to_the_created_sources(stack: Stack) -> None:
    (writer,) = stack.event_source_mappings("WriterFunction")
    (notifier,) = stack.event_source_mappings("NotifierFunction")

    assert writer["FunctionName"] == "WriterFunction"
    assert writer["EventSourceArn"] == stack.attribute("OrdersQueue", "Arn")
    assert writer["BatchSize"] == stack.template.parameters["WriterBatchSize"]
    assert notifier["EventSourceArn"] == stack.attribute("OrdersTable", "StreamArn")
    assert notifier["DestinationConfig"]["OnFailure"]["Destination"] == stack.attribute(
        "NotifierRetryQueue", "Arn"
    )
    (replay,) = stack.event_source_mappings("ReplayFunction")
    assert replay["EventSourceArn"] == stack.attribute("NotifierRetryQueue", "Arn")
    assert stack.logical_id_of(notifier["EventSourceArn"]) == "OrdersTable"


def test_logical_id_of_a_url_arn_or_name(stack: Stack) -> None:
    assert stack.logical_id_of(stack.ref("OrdersQueue")) == "OrdersQueue"
    assert stack.logical_id_of(stack.attribute("OrdersDLQ", "Arn")) == "OrdersDLQ"
    assert stack.logical_id_of(stack.ref("OrdersTable")) == "OrdersTable"
    with pytest.raises(KeyError):
        stack.logical_id_of("arn:aws:sqs:us-east-1:123456789012:elsewhere")


def test_outputs_resolve_once_the_api_is_added(stack: Stack) -> None:
    # Given the outputs before and after the local pipeline registers its API
    before = stack.outputs()
    stack.add(Resource("OrdersApi", "AWS::Serverless::HttpApi", "local-api"))
    after = stack.outputs()

    # Then the API URL appears only once the API exists
    assert before["OrdersQueueUrl"] == stack.ref("OrdersQueue")
    assert before["OrdersTopicArn"] == stack.ref("OrdersTopic")
    assert "ApiUrl" not in before
    assert after["ApiUrl"] == "https://local-api.execute-api.us-east-1.amazonaws.com"


# --- Templates beyond the project's own --------------------------------------------------------


def load_small(tmp_path: Path, resources: str) -> Template:
    (tmp_path / "template.yaml").write_text(
        'AWSTemplateFormatVersion: "2010-09-09"\nResources:\n'
        + textwrap.indent(textwrap.dedent(resources), "  ")
    )
    return load_template(tmp_path / "template.yaml")


def test_fifo_queues_and_topics_get_the_fifo_suffix_and_subscription_attributes(tmp_path: Path) -> None:
    # Given FIFO resources and a filtered SQS subscription
    template = load_small(
        tmp_path,
        """
        Queue:
          Type: AWS::SQS::Queue
          Properties:
            FifoQueue: true
            ContentBasedDeduplication: true
        Topic:
          Type: AWS::SNS::Topic
          Properties:
            FifoTopic: true
        Plain:
          Type: AWS::SNS::Topic
        Listener:
          Type: AWS::SQS::Queue
        Subscription:
          Type: AWS::SNS::Subscription
          Properties:
            TopicArn: !Ref Plain
            Protocol: sqs
            Endpoint: !GetAtt Listener.Arn
            RawMessageDelivery: true
            FilterPolicy:
              kind: [order]
        """,
    )

    with mock_aws():
        # When they are created
        stack = provision_stack(template)
        sqs = boto3.client("sqs", region_name=template.region)
        sns = boto3.client("sns", region_name=template.region)

        # Then names and attributes follow SQS and SNS rules
        assert stack.attribute("Queue", "QueueName").endswith(".fifo")
        fifo = sqs.get_queue_attributes(QueueUrl=stack.ref("Queue"), AttributeNames=["All"])["Attributes"]
        assert fifo["FifoQueue"] == "true"
        assert stack.attribute("Topic", "TopicName").endswith(".fifo")
        attributes = sns.get_subscription_attributes(SubscriptionArn=stack.ref("Subscription"))["Attributes"]
        assert attributes["RawMessageDelivery"] == "true"
        assert json.loads(attributes["FilterPolicy"]) == {"kind": ["order"]}


def test_a_reference_that_never_resolves_is_a_template_error(tmp_path: Path) -> None:
    # Given two queues that each name the other as their dead-letter queue
    template = load_small(
        tmp_path,
        """
        First:
          Type: AWS::SQS::Queue
          Properties:
            RedrivePolicy: {deadLetterTargetArn: !GetAtt Second.Arn, maxReceiveCount: 1}
        Second:
          Type: AWS::SQS::Queue
          Properties:
            RedrivePolicy: {deadLetterTargetArn: !GetAtt First.Arn, maxReceiveCount: 1}
        """,
    )

    with mock_aws(), pytest.raises(TemplateError, match="First, Second"):
        provision_stack(template)
