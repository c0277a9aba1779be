"""Environment variables of the functions run locally, and the `--env-vars` file of `sam local`.

One format serves `sam local start-api/invoke --env-vars`, `orderpipe local --env-file` and
`orderpipe invoke --env-file`: a JSON object whose `"Parameters"` entry applies to every function
and whose entries named after a function's logical id apply to that one (and win), as SAM reads
it. As in SAM (and in Lambda), only variables the template declares for a function are set: a
file cannot give a function a variable it would not have when deployed.
"""

from __future__ import annotations

import functools
import json
import logging
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import botocore.session

from orderpipe_local.stack.provision import Stack
from orderpipe_local.stack.template import Resolver

log = logging.getLogger(__name__)

DUMMY_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
}
ENDPOINT_VARIABLE = "AWS_ENDPOINT_URL"
# With `--workers 0` the functions run in one process and share one environment, where the
# service name names the pipeline.
SHARED_SERVICE_NAME = "orderpipe"
_PER_FUNCTION = frozenset({"POWERTOOLS_SERVICE_NAME"})


class EnvFileError(ValueError):
    """The env vars file is not in the format `sam local --env-vars` reads."""


@dataclass(frozen=True)
class EnvVarsFile:
    """A `sam local --env-vars` file: `{"Parameters": {...}, "FunctionId": {...}}`."""

    parameters: dict[str, str] = field(default_factory=dict)
    functions: dict[str, dict[str, str]] = field(default_factory=dict)

    @classmethod
    def read(cls, path: Path) -> EnvVarsFile:
        try:
            content = json.loads(path.read_text())
        except (OSError, ValueError) as error:
            raise EnvFileError(f"cannot read {path}: {error}") from error
        return cls.parse(content, str(path))

    @classmethod
    def parse(cls, content: Any, source: str = "env vars") -> EnvVarsFile:
        if not isinstance(content, dict):
            raise EnvFileError(f"{source}: expected a JSON object of objects")
        sections: dict[str, dict[str, str]] = {}
        for name, variables in content.items():
            if not isinstance(variables, dict):
                raise EnvFileError(f"{source}: {name} must be an object of variable names and values")
            sections[name] = {str(key): _string(value) for key, value in variables.items()}
        parameters = sections.pop("Parameters", {})
        return cls(parameters=parameters, functions=sections)

    def overrides_for(self, function_id: str) -> dict[str, str]:
        return self.parameters | self.functions.get(function_id, {})


def _string(value: Any) -> str:
    """As SAM stringifies values: booleans in lower case, objects and null as empty."""
    if isinstance(value, bool):
        return str(value).lower()
    if value is None or isinstance(value, dict | list):
        return ""
    return str(value)


def function_environment(
    stack: Stack, function_id: str, env_file: EnvVarsFile | None = None
) -> dict[str, str]:
    """The function's variables as the template sets them, with the file's values for those it
    declares; AWS_ENDPOINT_URL aside, as locally it always names the local endpoint."""
    variables = stack.function_environment(function_id)
    if env_file is not None:
        overrides = env_file.overrides_for(function_id)
        ignored = sorted(set(env_file.functions.get(function_id, {})) - set(variables))
        if ignored:
            log.warning(
                "%s does not declare %s; ignored, as sam local ignores them", function_id, ", ".join(ignored)
            )
        variables |= {name: value for name, value in overrides.items() if name in variables}
    variables.pop(ENDPOINT_VARIABLE, None)
    return variables


def shared_environment(
    stack: Stack, function_ids: Iterable[str], env_file: EnvVarsFile | None = None
) -> dict[str, str]:
    """The variables of all functions, for one process that runs them all.

    A variable that differs between functions cannot be set for each in one process; the
    service name becomes the pipeline's, anything else is an error.
    """
    merged: dict[str, str] = {}
    owners: dict[str, str] = {}
    for function_id in function_ids:
        for name, value in function_environment(stack, function_id, env_file).items():
            if name in _PER_FUNCTION:
                merged[name] = SHARED_SERVICE_NAME
            elif name in merged and merged[name] != value:
                raise EnvFileError(
                    f"{name} is {merged[name]!r} for {owners[name]} but {value!r} for {function_id}; "
                    "with --workers 0 the functions run in one process and share one environment"
                )
            else:
                merged[name] = value
                owners.setdefault(name, function_id)
    return merged


@functools.cache
def endpoint_variable(service: str) -> str:
    """botocore's variable for one service's endpoint: AWS_ENDPOINT_URL_ and its service id
    (`dynamodbstreams` -> AWS_ENDPOINT_URL_DYNAMODB_STREAMS)."""
    service_id = botocore.session.get_session().get_service_model(service).service_id
    return f"{ENDPOINT_VARIABLE}_{service_id.hyphenize().replace('-', '_').upper()}"


def aws_environment(
    endpoint_url: str, region: str, service_urls: Mapping[str, str] | None = None
) -> dict[str, str]:
    """What makes every boto3 client of this process talk to the local endpoint, never to AWS;
    `service_urls`: the services the endpoint serves on URLs of their own."""
    return {
        **DUMMY_CREDENTIALS,
        ENDPOINT_VARIABLE: endpoint_url,
        **{endpoint_variable(service): url for service, url in (service_urls or {}).items()},
        "AWS_DEFAULT_REGION": region,
        "AWS_REGION": region,
        "POWERTOOLS_TRACE_DISABLED": "true",  # no X-Ray daemon to send segments to
    }


def apply_environment(variables: Mapping[str, str]) -> None:
    """Set `variables` in os.environ. When they name the endpoint (`aws_environment`), drop first
    whatever else could send a client elsewhere."""
    if ENDPOINT_VARIABLE not in variables:
        os.environ.update(variables)
        return
    for name in list(os.environ):
        if name.startswith(f"{ENDPOINT_VARIABLE}_") or name in (
            "AWS_PROFILE",
            "AWS_DEFAULT_PROFILE",
            "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS",
            "AWS_CONFIG_FILE",
            "AWS_SHARED_CREDENTIALS_FILE",
            "AWS_WEB_IDENTITY_TOKEN_FILE",
            "AWS_ROLE_ARN",
        ):
            del os.environ[name]
    os.environ.update(variables)


def sam_env_vars(stack: Stack, endpoint_url: str, docker_endpoint_url: str) -> dict[str, dict[str, str]]:
    """The `sam local --env-vars` file that points the functions (in Docker) at this endpoint.

    It holds AWS_ENDPOINT_URL and every variable whose value names a created resource, with the
    endpoint as the containers reach it; variables set from template parameters stay out, so
    they keep the values `sam local` resolves.
    """
    variables: dict[str, str] = {ENDPOINT_VARIABLE: docker_endpoint_url}
    for function_id in stack.functions():
        declared = (
            stack.template.resources[function_id]["Properties"].get("Environment", {}).get("Variables", {})
        )
        for name, value in declared.items():
            if name in _PER_FUNCTION or not _names_a_resource(stack, value):
                continue
            variables[name] = str(stack.resolve(value)).replace(endpoint_url, docker_endpoint_url)
    return {"Parameters": dict(sorted(variables.items()))}


def _names_a_resource(stack: Stack, value: Any) -> bool:
    looked_up: list[str] = []

    def lookup(logical_id: str, attribute: str | None) -> str | None:
        looked_up.append(logical_id)
        return stack.lookup(logical_id, attribute)

    Resolver(stack.template, lookup).resolve(value)
    return bool(looked_up)
