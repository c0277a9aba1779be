"""Create the template's queues, tables, topics and subscriptions in an AWS endpoint.

Used against moto (in-process `mock_aws` for tests, moto's server for `orderpipe local`).
Resources that only exist in the cloud (functions, roles, the API, alarms, log groups) are
skipped: the local pipeline plays the functions and the API itself.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import boto3

from orderpipe_local.stack.template import Resolver, Template, TemplateError, Unresolved


@dataclass(frozen=True)
class Resource:
    logical_id: str
    type: str
    ref: str
    attributes: dict[str, str] = field(default_factory=dict)


@dataclass
class Stack:
    """The template's resources as created in one AWS endpoint."""

    template: Template
    resources: dict[str, Resource]
    endpoint_url: str | None = None

    def lookup(self, logical_id: str, attribute: str | None) -> str | None:
        resource = self.resources.get(logical_id)
        if resource is None:
            return None
        if attribute is None:
            return resource.ref
        if attribute not in resource.attributes:
            raise TemplateError(f"{logical_id} has no attribute {attribute} locally")
        return resource.attributes[attribute]

    def resolve(self, value: Any) -> Any:
        return Resolver(self.template, self.lookup).resolve(value)

    def ref(self, logical_id: str) -> str:
        return self.resources[logical_id].ref

    def attribute(self, logical_id: str, attribute: str) -> str:
        return self.resources[logical_id].attributes[attribute]

    def function_environment(self, function_id: str) -> dict[str, str]:
        """A function's `Environment.Variables`, resolved to the created resources."""
        properties = self.template.resources[function_id]["Properties"]
        variables = properties.get("Environment", {}).get("Variables", {})
        return {name: str(value) for name, value in self.resolve(variables).items()}

    def functions(self) -> dict[str, dict[str, Any]]:
        return self.template.resources_of_type("AWS::Lambda::Function")

    def event_source_mappings(self, function_id: str) -> list[dict[str, Any]]:
        """The resolved properties of each event source mapping that invokes the function."""
        mappings = []
        for resource in self.template.resources_of_type("AWS::Lambda::EventSourceMapping").values():
            properties = resource["Properties"]
            target = properties.get("FunctionName")
            if (
                isinstance(target, dict)
                and self.template.invoked_function(str(target.get("Ref"))) == function_id
            ):
                resolved = dict(properties, FunctionName=function_id)
                mappings.append(self.resolve(resolved))
        return mappings

    def logical_id_of(self, physical: str) -> str:
        """The logical id of a resource given its URL, ARN or name."""
        for resource in self.resources.values():
            if physical == resource.ref or physical in resource.attributes.values():
                return resource.logical_id
        raise KeyError(physical)

    def outputs(self) -> dict[str, str]:
        """The template's outputs that point at resources created here."""
        values = {}
        for name, output in self.template.outputs.items():
            try:
                values[name] = str(self.resolve(output["Value"]))
            except Unresolved:
                continue
        return values

    def add(self, resource: Resource) -> None:
        """Register a resource played by the local pipeline itself (the API, say)."""
        self.resources[resource.logical_id] = resource


Creator = Callable[["_Provisioner", str, dict[str, Any]], Resource]


def provision_stack(template: Template, *, endpoint_url: str | None = None) -> Stack:
    """Create every data resource of the template (queues, tables, topics, subscriptions)."""
    provisioner = _Provisioner(template, endpoint_url)
    return provisioner.run()


class _Provisioner:
    def __init__(self, template: Template, endpoint_url: str | None) -> None:
        self.stack = Stack(template, {}, endpoint_url)
        kwargs: dict[str, Any] = {"region_name": template.region}
        if endpoint_url:
            kwargs["endpoint_url"] = endpoint_url
        self.sqs = boto3.client("sqs", **kwargs)
        self.dynamodb = boto3.client("dynamodb", **kwargs)
        self.sns = boto3.client("sns", **kwargs)

    def run(self) -> Stack:
        creators: dict[str, Creator] = {
            "AWS::SQS::Queue": _Provisioner.create_queue,
            "AWS::DynamoDB::Table": _Provisioner.create_table,
            "AWS::SNS::Topic": _Provisioner.create_topic,
            "AWS::SNS::Subscription": _Provisioner.create_subscription,
        }
        pending = {
            logical_id: resource
            for logical_id, resource in self.stack.template.resources.items()
            if resource["Type"] in creators and self.stack.template.is_created(logical_id)
        }
        while pending:
            created = []
            for logical_id, resource in pending.items():
                try:
                    properties = self.stack.resolve(resource.get("Properties", {}))
                except Unresolved:
                    continue  # depends on a resource created later in this loop
                self.stack.resources[logical_id] = creators[resource["Type"]](self, logical_id, properties)
                created.append(logical_id)
            if not created:
                raise TemplateError(f"cannot resolve the references of {', '.join(pending)}")
            for logical_id in created:
                del pending[logical_id]
        return self.stack

    def create_queue(self, logical_id: str, properties: dict[str, Any]) -> Resource:
        name = resource_name(self.stack.template.stack_name, logical_id, "AWS::SQS::Queue", properties)
        properties.pop("QueueName", None)
        properties.pop("Tags", None)
        # The queue's CloudFormation properties are its SQS attributes, JSON ones as objects.
        attributes: dict[Any, str] = {key: _attribute_value(value) for key, value in properties.items()}
        url = self.sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
        arn = self.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
            "QueueArn"
        ]
        return Resource(logical_id, "AWS::SQS::Queue", url, {"Arn": arn, "QueueName": name, "QueueUrl": url})

    def create_table(self, logical_id: str, properties: dict[str, Any]) -> Resource:
        name = resource_name(self.stack.template.stack_name, logical_id, "AWS::DynamoDB::Table", properties)
        request: dict[str, Any] = {
            "TableName": name,
            "AttributeDefinitions": properties["AttributeDefinitions"],
            "KeySchema": properties["KeySchema"],
            "BillingMode": properties.get("BillingMode", "PROVISIONED"),
        }
        for key in ("GlobalSecondaryIndexes", "LocalSecondaryIndexes"):
            if key in properties:
                request[key] = [_index_request(index) for index in properties[key]]
        for key in ("ProvisionedThroughput", "TableClass", "DeletionProtectionEnabled", "Tags"):
            if key in properties:
                request[key] = properties[key]
        if "StreamSpecification" in properties:
            request["StreamSpecification"] = {"StreamEnabled": True, **properties["StreamSpecification"]}
        if sse := properties.get("SSESpecification"):
            request["SSESpecification"] = {"Enabled": bool(sse.get("SSEEnabled", False))}
            for key in ("SSEType", "KMSMasterKeyId"):
                if key in sse:
                    request["SSESpecification"][key] = sse[key]
        description = self.dynamodb.create_table(**request)["TableDescription"]
        if ttl := properties.get("TimeToLiveSpecification"):
            self.dynamodb.update_time_to_live(TableName=name, TimeToLiveSpecification=ttl)
        if pitr := properties.get("PointInTimeRecoverySpecification"):
            self.dynamodb.update_continuous_backups(
                TableName=name,
                PointInTimeRecoverySpecification={
                    "PointInTimeRecoveryEnabled": bool(pitr.get("PointInTimeRecoveryEnabled", False))
                },
            )
        attributes = {"Arn": description["TableArn"]}
        if "LatestStreamArn" in description:
            attributes["StreamArn"] = description["LatestStreamArn"]
        return Resource(logical_id, "AWS::DynamoDB::Table", name, attributes)

    def create_topic(self, logical_id: str, properties: dict[str, Any]) -> Resource:
        name = resource_name(self.stack.template.stack_name, logical_id, "AWS::SNS::Topic", properties)
        topic_attributes: dict[str, str] = {
            key: _attribute_value(properties[key])
            for key in (
                "DisplayName",
                "KmsMasterKeyId",
                "FifoTopic",
                "ContentBasedDeduplication",
                "SignatureVersion",
                "TracingConfig",
            )
            if key in properties
        }
        arn = self.sns.create_topic(Name=name, Attributes=topic_attributes)["TopicArn"]
        for subscription in properties.get("Subscription", []):
            self.sns.subscribe(
                TopicArn=arn, Protocol=subscription["Protocol"], Endpoint=subscription["Endpoint"]
            )
        return Resource(logical_id, "AWS::SNS::Topic", arn, {"TopicArn": arn, "TopicName": name})

    def create_subscription(self, logical_id: str, properties: dict[str, Any]) -> Resource:
        attributes: dict[str, str] = {
            key: _attribute_value(properties[key])
            for key in ("FilterPolicyScope", "FilterPolicy", "RawMessageDelivery", "RedrivePolicy")
            if key in properties
        }
        arn = self.sns.subscribe(
            TopicArn=properties["TopicArn"],
            Protocol=properties["Protocol"],
            Endpoint=properties["Endpoint"],
            Attributes=attributes,
            ReturnSubscriptionArn=True,
        )["SubscriptionArn"]
        return Resource(logical_id, "AWS::SNS::Subscription", arn, {"Arn": arn})


def _attribute_value(value: Any) -> str:
    """A CloudFormation property value as an SQS or SNS attribute string."""
    if isinstance(value, dict | list):
        return json.dumps(value)
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


# The property that names a resource of each type, and the one that makes it FIFO.
_NAMING = {
    "AWS::SQS::Queue": ("QueueName", "FifoQueue"),
    "AWS::DynamoDB::Table": ("TableName", None),
    "AWS::SNS::Topic": ("TopicName", "FifoTopic"),
}


def resource_name(stack_name: str, logical_id: str, resource_type: str, properties: Mapping[str, Any]) -> str:
    """The name a queue, table or topic is created with: the template's, else
    `{stack_name}-{LogicalId}`, ending in `.fifo` for a FIFO queue or topic (SQS and SNS require
    it)."""
    name_property, fifo_property = _NAMING[resource_type]
    if properties.get(name_property):
        return str(properties[name_property])
    name = f"{stack_name}-{logical_id}"
    fifo = fifo_property is not None and _attribute_value(properties.get(fifo_property, False)) == "true"
    return f"{name}.fifo" if fifo else name


def _index_request(index: dict[str, Any]) -> dict[str, Any]:
    """A CloudFormation secondary index as CreateTable takes it (no CloudFormation-only keys)."""
    return {key: value for key, value in index.items() if key != "ContributorInsightsSpecification"}
