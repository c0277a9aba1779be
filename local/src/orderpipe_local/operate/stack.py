"""The stack an operator tool works on: its template's resources and their physical ids.

Either the running `orderpipe local` (its state file and template.yaml with the parameters it
runs with) or a deployed stack (CloudFormation's processed template and stack resources), so
the tools find queues, tables, topics, subscriptions and alarms the same way in both and
discover from the template what is a dead-letter queue, instead of naming them.
"""

from __future__ import annotations

import hashlib
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config
from samtranslator.yaml_helper import yaml_parse

from orderpipe_local.sources.polling import aws_client
from orderpipe_local.stack.template import load_template
from orderpipe_local.state import PipelineState

# Every client of an operator tool: short timeouts, the standard retries.
_CLIENT_CONFIG = Config(connect_timeout=5, read_timeout=20, retries={"mode": "standard", "max_attempts": 3})


class StackNotFound(LookupError):
    """No local pipeline runs here, or CloudFormation has no such stack."""


@dataclass
class OperatedStack:
    """Template resources (as after the SAM transform) of the resources that exist, by logical id."""

    name: str
    resources: dict[str, dict[str, Any]]
    physical_ids: dict[str, str]
    region: str
    endpoint_url: str | None = None
    # Locally, where the tools keep their files (`.orderpipe/`); deployed, a temporary folder.
    work_dir: Path | None = None
    outbox: Path | None = None

    @property
    def local(self) -> bool:
        return self.endpoint_url is not None

    @property
    def where(self) -> str:
        return (
            f"the local pipeline ({self.endpoint_url})"
            if self.local
            else f"stack {self.name} ({self.region})"
        )

    def client(self, service: str, *, attempts: int = 3) -> Any:
        if self.endpoint_url is not None:
            return aws_client(service, self.endpoint_url, self.region, read_timeout=20, attempts=attempts)
        config = _CLIENT_CONFIG.merge(Config(retries={"mode": "standard", "max_attempts": attempts}))
        return boto3.session.Session().client(service, region_name=self.region, config=config)  # type: ignore[call-overload]

    def physical_id(self, logical_id: str) -> str:
        return self.physical_ids[logical_id]

    def of_type(self, resource_type: str) -> list[str]:
        """Logical ids of the existing resources of a type, in template order."""
        return [
            logical_id
            for logical_id, resource in self.resources.items()
            if resource.get("Type") == resource_type and logical_id in self.physical_ids
        ]

    def journal_dir(self) -> Path:
        """Where a move keeps its journal of messages already sent."""
        if self.work_dir is not None:
            return self.work_dir / "dlq-moves"
        key = hashlib.sha256(f"{self.region}/{self.name}".encode()).hexdigest()[:16]
        return Path(tempfile.gettempdir()) / "orderpipe-dlq-moves" / key


def local_stack(root: Path, state_file: Path) -> OperatedStack:
    """The running `orderpipe local` whose state file this is."""
    state = PipelineState.read(state_file)
    if state is None:
        raise StackNotFound("no orderpipe local is running here: start it (make run), or give --stack-name")
    template = load_template(root / "template.yaml", overrides=state.parameters, stack_name=state.stack_name)
    physical_ids = {logical_id: str(value["ref"]) for logical_id, value in state.resources.items()}
    return OperatedStack(
        name=state.stack_name,
        # All the template creates: the functions' mappings too, which only the pipeline plays.
        resources={lid: r for lid, r in template.resources.items() if template.is_created(lid)},
        physical_ids=physical_ids,
        region=state.region,
        endpoint_url=state.endpoint_url,
        work_dir=state_file.parent,
        outbox=root / state.outbox if state.outbox else None,  # relative to where it runs, the root
    )


def deployed_stack(stack_name: str, region: str | None = None) -> OperatedStack:
    """A deployed stack, found through CloudFormation with the usual boto3 credentials and region."""
    session = boto3.session.Session()
    region = region or session.region_name
    if not region:
        raise StackNotFound("no AWS region: set AWS_REGION or AWS_DEFAULT_REGION, or a profile's region")
    cloudformation = session.client("cloudformation", region_name=region, config=_CLIENT_CONFIG)
    try:
        body: Any = cloudformation.get_template(StackName=stack_name, TemplateStage="Processed")[
            "TemplateBody"
        ]
        physical_ids: dict[str, str] = {}
        for page in cloudformation.get_paginator("list_stack_resources").paginate(StackName=stack_name):
            for summary in page["StackResourceSummaries"]:
                if summary.get("PhysicalResourceId") and summary["ResourceStatus"] != "DELETE_COMPLETE":
                    physical_ids[summary["LogicalResourceId"]] = summary["PhysicalResourceId"]
    except cloudformation.exceptions.ClientError as error:
        raise StackNotFound(f"stack {stack_name} in {region}: {error}") from error
    template = body if isinstance(body, dict) else yaml_parse(body)
    resources = template.get("Resources", {})
    return OperatedStack(
        name=stack_name,
        resources={lid: r for lid, r in resources.items() if lid in physical_ids},
        physical_ids=physical_ids,
        region=region,
    )
