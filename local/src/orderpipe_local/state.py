"""`.orderpipe/state.json`: where a running `orderpipe local` can be reached.

Written at start and removed at exit, so `orderpipe invoke` (and anyone curious) can find the
endpoint, the API and the resources of the pipeline that runs now.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from orderpipe_local.sources.polling import aws_client
from orderpipe_local.stack.provision import Resource, Stack, resource_name
from orderpipe_local.stack.template import ACCOUNT_ID, Template

STATE_DIR = ".orderpipe"
STATE_FILE = "state.json"


@dataclass
class PipelineState:
    pid: int
    endpoint_url: str
    region: str
    stack_name: str
    parameters: dict[str, str]
    resources: dict[str, dict[str, Any]] = field(default_factory=dict)
    api_url: str | None = None
    outbox: str | None = None
    # With `--auth`: the local issuer's `issuer`, `audience` and `key_file`, for `orderpipe token`.
    auth: dict[str, str] | None = None

    @classmethod
    def of(
        cls,
        stack: Stack,
        endpoint_url: str,
        api_url: str | None,
        outbox: Path | None,
        auth: dict[str, str] | None = None,
    ) -> PipelineState:
        return cls(
            pid=os.getpid(),
            endpoint_url=endpoint_url,
            region=stack.template.region,
            stack_name=stack.template.stack_name,
            parameters=dict(stack.template.parameters),
            resources={
                logical_id: {"type": resource.type, "ref": resource.ref, "attributes": resource.attributes}
                for logical_id, resource in stack.resources.items()
            },
            api_url=api_url,
            outbox=str(outbox) if outbox else None,
            auth=auth,
        )

    def write(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_suffix(".tmp")
        temporary.write_text(json.dumps(asdict(self), indent=2) + "\n")
        temporary.replace(path)

    @classmethod
    def read(cls, path: Path) -> PipelineState | None:
        """The state of a pipeline that still runs, else None."""
        try:
            state = cls(**json.loads(path.read_text()))
        except (OSError, ValueError, TypeError):
            return None
        return state if _is_running(state.pid) else None

    def stack(self, template: Template) -> Stack:
        """The running pipeline's resources, as a Stack of `template`."""
        resources = {
            logical_id: Resource(logical_id, value["type"], value["ref"], dict(value["attributes"]))
            for logical_id, value in self.resources.items()
        }
        return Stack(template, resources, self.endpoint_url)


def remove_state(path: Path) -> None:
    """Remove the state file if it is this process's."""
    try:
        if json.loads(path.read_text()).get("pid") == os.getpid():
            path.unlink()
    except (OSError, ValueError):
        pass


def _is_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def find_stack(template: Template, endpoint_url: str) -> Stack:
    """The template's queues, tables and topics as they exist in an endpoint, found by name.

    For an endpoint whose state file is not at hand: the names are deterministic
    (`provision.resource_name`).
    """
    sqs = aws_client("sqs", endpoint_url, template.region)
    dynamodb = aws_client("dynamodb", endpoint_url, template.region)
    sns = aws_client("sns", endpoint_url, template.region)
    stack = Stack(template, {}, endpoint_url)
    missing = []
    for logical_id, resource in template.resources.items():
        if not template.is_created(logical_id):
            continue
        properties = resource.get("Properties", {})
        try:
            match resource["Type"]:
                case "AWS::SQS::Queue":
                    name = resource_name(template.stack_name, logical_id, resource["Type"], properties)
                    url = sqs.get_queue_url(QueueName=name)["QueueUrl"]
                    arn = f"arn:aws:sqs:{template.region}:{ACCOUNT_ID}:{name}"
                    attributes = {"Arn": arn, "QueueName": name, "QueueUrl": url}
                    stack.add(Resource(logical_id, resource["Type"], url, attributes))
                case "AWS::DynamoDB::Table":
                    name = resource_name(template.stack_name, logical_id, resource["Type"], properties)
                    table = dynamodb.describe_table(TableName=name)["Table"]
                    attributes = {"Arn": table["TableArn"]}
                    if "LatestStreamArn" in table:
                        attributes["StreamArn"] = table["LatestStreamArn"]
                    stack.add(Resource(logical_id, resource["Type"], name, attributes))
                case "AWS::SNS::Topic":
                    name = resource_name(template.stack_name, logical_id, resource["Type"], properties)
                    arn = f"arn:aws:sns:{template.region}:{ACCOUNT_ID}:{name}"
                    sns.get_topic_attributes(TopicArn=arn)
                    stack.add(
                        Resource(logical_id, resource["Type"], arn, {"TopicArn": arn, "TopicName": name})
                    )
        except (BotoCoreError, ClientError):
            missing.append(logical_id)
    if missing:
        raise LookupError(f"not found at {endpoint_url}: {', '.join(missing)}")
    return stack
