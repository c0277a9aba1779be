"""`orderpipe invoke`: one function, one event, in this process - `sam local invoke` without Docker.

Against the resources of a running `orderpipe local` (found through its state file, or named
by `--endpoint-url`), else against a throwaway endpoint whose resources are made from the
template for this one invocation.
"""

from __future__ import annotations

import contextlib
import sys
import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orderpipe.aws import clients
from orderpipe_local.config import PipelineConfig, load_local_template
from orderpipe_local.environment import (
    EnvVarsFile,
    apply_environment,
    aws_environment,
    function_environment,
)
from orderpipe_local.moto.endpoint import AwsEndpoint
from orderpipe_local.runtime.functions import load_functions
from orderpipe_local.stack.provision import Stack, provision_stack
from orderpipe_local.stack.template import Template, load_template
from orderpipe_local.state import PipelineState, find_stack


class UnknownFunction(LookupError):
    pass


def resolve_function_id(template: Template, name: str) -> str:
    """`IngestFunction`, `ingest` or `Ingest`: the logical id, or it without `Function`."""
    function_ids = list(template.resources_of_type("AWS::Lambda::Function"))
    wanted = name.lower()
    for function_id in function_ids:
        if wanted in (function_id.lower(), function_id.lower().removesuffix("function")):
            return function_id
    raise UnknownFunction(f"no function {name!r} in the template; choose one of {', '.join(function_ids)}")


@dataclass
class Invocation:
    function_id: str
    endpoint_url: str
    against: str  # what the resources are: "running pipeline", "throwaway endpoint", ...
    response: Any = None
    error: BaseException | None = None

    def error_response(self) -> dict[str, Any]:
        """The error as Lambda reports it."""
        assert self.error is not None
        return {
            "errorMessage": str(self.error),
            "errorType": type(self.error).__name__,
            "stackTrace": traceback.format_tb(self.error.__traceback__),
        }


@contextlib.contextmanager
def _resources(config: PipelineConfig, endpoint_url: str | None) -> Iterator[tuple[Stack, str]]:
    """The stack to invoke against, and what it is; this process's AWS clients pointed at it."""
    state = PipelineState.read(config.state_file) if config.state_file else None
    if state is not None and (endpoint_url is None or endpoint_url.rstrip("/") == state.endpoint_url):
        template = load_template(
            config.root / "template.yaml", overrides=state.parameters, stack_name=state.stack_name
        )
        apply_environment(aws_environment(state.endpoint_url, template.region))
        yield state.stack(template), f"the running orderpipe local ({state.endpoint_url})"
    elif endpoint_url is not None:
        template = load_local_template(config)
        apply_environment(aws_environment(endpoint_url, template.region))
        yield find_stack(template, endpoint_url), endpoint_url
    else:
        endpoint = AwsEndpoint(config.aws_host, 0, None)
        endpoint.launch()  # moto starts while the template is read
        try:
            template = load_local_template(config)
            endpoint.wait_ready()
            apply_environment(aws_environment(endpoint.url, template.region))
            stack = provision_stack(template, endpoint_url=endpoint.url)
            yield stack, f"a throwaway endpoint ({endpoint.url})"
        finally:
            endpoint.stop()


def invoke(
    config: PipelineConfig,
    function_name: str,
    event: dict[str, Any],
    *,
    endpoint_url: str | None = None,
) -> Invocation:
    """Invoke one function with `event`; the handler's output (its logs) goes to stderr."""
    env_file = EnvVarsFile.read(config.env_file) if config.env_file else None
    with _resources(config, endpoint_url) as (stack, against):
        function_id = resolve_function_id(stack.template, function_name)
        assert stack.endpoint_url is not None
        apply_environment(function_environment(stack, function_id, env_file))
        clients.reset()
        invocation = Invocation(function_id, stack.endpoint_url, against)
        # As `sam local invoke`: the function's logs on stderr, its response alone on stdout.
        with contextlib.redirect_stdout(sys.stderr):
            function = load_functions(stack, config.root)[function_id]
            try:
                invocation.response = function.invoke(event)
            except Exception as error:
                invocation.error = error
        return invocation


def read_event(source: str | None) -> dict[str, Any]:
    """The event: a JSON file, `-` for stdin, nothing for `{}` (as sam does)."""
    import json

    if source is None:
        return {}
    text = sys.stdin.read() if source == "-" else Path(source).read_text()
    event = json.loads(text)
    if not isinstance(event, dict):
        raise ValueError("the event must be a JSON object")
    return event
