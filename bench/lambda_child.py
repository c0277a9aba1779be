"""One execution environment of `bench/lambda_bench.py`, run by the Lambda runtime's Python.

It imports nothing at module level but the standard library: what it measures (a handler from
a built function folder, or bare boto3) comes from PYTHONPATH, set by the parent as Lambda sets
it (the function folder, then the runtime's boto3). Modes, each reading a JSON plan on stdin and
writing one JSON object to the file named second:
- `function`: import the handler and invoke it with the plan's cold event (timed from the start
  of this process), then the warm events (process CPU time and wall time of each invocation,
  their set-up untimed). Every AWS call the handler makes is recorded, for the floor to replay.
- `floor`: import boto3, create the clients, make the plan's recorded calls of the cold
  invocation once (timed from the start of this process), then those of each warm invocation.
"""

from __future__ import annotations

import time

STARTED_WALL = time.perf_counter()
STARTED_CPU = time.process_time()

import contextlib  # noqa: E402
import importlib  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
from typing import Any  # noqa: E402


class BenchLambdaContext:
    """What Powertools reads of Lambda's context object."""

    def __init__(self, timeout_seconds: float) -> None:
        self.function_name = os.environ.get("AWS_LAMBDA_FUNCTION_NAME", "bench")
        self.function_version = "$LATEST"
        self.memory_limit_in_mb = int(os.environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "512"))
        self.invoked_function_arn = f"arn:aws:lambda:us-east-1:123456789012:function:{self.function_name}"
        self.aws_request_id = "00000000-0000-4000-8000-000000000000"
        self.log_group_name = f"/aws/lambda/{self.function_name}"
        self.log_stream_name = "bench"
        self._deadline = time.monotonic() + timeout_seconds

    def get_remaining_time_in_millis(self) -> int:
        return int((self._deadline - time.monotonic()) * 1000)


def _client_config(botocore_config: Any) -> Any:
    return botocore_config.Config(
        connect_timeout=float(os.environ.get("AWS_CONNECT_TIMEOUT_SECONDS", "0.5")),
        read_timeout=float(os.environ.get("AWS_READ_TIMEOUT_SECONDS", "0.5")),
        retries={"mode": "standard", "total_max_attempts": int(os.environ.get("AWS_MAX_ATTEMPTS", "2"))},
    )


def _set_up(setup_client: Any, table: str, steps: list[dict[str, Any]]) -> None:
    """Untimed: the table as the invocation expects it (its orders absent, or PLACED)."""
    for step in steps:
        if "put" in step:
            setup_client.put_item(TableName=table, Item=step["put"])
        else:
            setup_client.delete_item(TableName=table, Key=step["delete"])


def run_function(plan: dict[str, Any]) -> dict[str, Any]:
    import boto3

    recorded: list[list[Any]] = []

    def record(params: dict[str, Any], model: Any, **_: Any) -> None:
        recorded.append([model.service_model.service_name, model.name, params])

    boto3.setup_default_session()
    boto3.DEFAULT_SESSION.events.register("provide-client-params", record)  # type: ignore[union-attr]
    module_name, _, handler_name = plan["handler"].rpartition(".")
    handler = getattr(importlib.import_module(module_name), handler_name)
    imported_wall = time.perf_counter()
    handler(plan["cold_event"], BenchLambdaContext(plan["timeout"]))
    cold = {
        "import_seconds": imported_wall - STARTED_WALL,
        "init_seconds": time.perf_counter() - STARTED_WALL,
        "init_cpu_seconds": time.process_time() - STARTED_CPU,
    }
    cold_calls = _jsonable(recorded)
    warm: list[dict[str, float]] = []
    warm_calls: list[Any] = []
    if plan["warm"]:
        setup_client = boto3.session.Session().client("dynamodb")
        for index, invocation in enumerate(plan["warm"]):
            _set_up(setup_client, plan["table"], invocation["setup"])
            recorded.clear()
            wall, cpu = time.perf_counter(), time.process_time()
            handler(invocation["event"], BenchLambdaContext(plan["timeout"]))
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
            if index >= plan["warm_up"]:
                warm.append({"cpu_seconds": cpu, "wall_seconds": wall})
            warm_calls.append(_jsonable(recorded))
    return {"cold": cold, "cold_calls": cold_calls, "warm": warm, "warm_calls": warm_calls}


def run_floor(plan: dict[str, Any]) -> dict[str, Any]:
    import boto3
    import botocore.config

    config = _client_config(botocore.config)
    clients: dict[str, Any] = {}

    def replay(calls: list[Any]) -> None:
        for service, operation, params in calls:
            client = clients.get(service)
            if client is None:
                client = clients[service] = boto3.client(service, config=config)
            method = client.meta.method_to_api_mapping
            name = next(python_name for python_name, api in method.items() if api == operation)
            # A refusal is the same answer the function got (a failed condition).
            with contextlib.suppress(client.exceptions.ClientError):
                getattr(client, name)(**params)

    replay(plan["cold_calls"])
    cold = {
        "init_seconds": time.perf_counter() - STARTED_WALL,
        "init_cpu_seconds": time.process_time() - STARTED_CPU,
    }
    warm: list[dict[str, float]] = []
    if plan["warm"]:
        setup_client = boto3.session.Session().client("dynamodb")
        for index, (invocation, calls) in enumerate(zip(plan["warm"], plan["warm_calls"], strict=True)):
            _set_up(setup_client, plan["table"], invocation["setup"])
            wall, cpu = time.perf_counter(), time.process_time()
            replay(calls)
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
            if index >= plan["warm_up"]:
                warm.append({"cpu_seconds": cpu, "wall_seconds": wall})
    return {"cold": cold, "warm": warm}


def _jsonable(calls: list[list[Any]]) -> Any:
    return json.loads(json.dumps(calls, default=str))


def main() -> None:
    mode = sys.argv[1]
    plan = json.loads(sys.stdin.read())
    result = run_function(plan) if mode == "function" else run_floor(plan)
    with open(sys.argv[2], "w", encoding="utf-8") as output:
        json.dump(result, output)


if __name__ == "__main__":
    main()
