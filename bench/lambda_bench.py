"""What the functions cost in Lambda, against the floor: `make bench-lambda` (after `make build`).

1. Package size of each built function (`.aws-sam/build/<Function>/`), unzipped and zipped.
2. Cold init: a fresh Python 3.13 process (the Lambda runtime's) on a fresh copy of the built
   folder with PYTHONDONTWRITEBYTECODE=1, so only the bytecode the build ships helps; the
   function's environment from the template; PYTHONPATH the folder, then the runtime's boto3 (a
   folder of the lock's boto3 and its dependencies, as Lambda puts /var/runtime after
   /var/task); X-Ray on, as `Tracing: Active` runs it (segments go to a loopback UDP port no one
   reads). Timed from the first line of the process to the end of the first invocation with the
   function's `events/` fixture, against a local moto endpoint provisioned from template.yaml.
   The floor: a fresh process that imports the same runtime boto3, creates the same clients and
   replays the AWS calls that invocation made. Median of `--runs`, function and floor
   interleaved. Native extensions of a build made for another machine (arm64 here on x86_64)
   are replaced by this machine's wheel of the same version (pip, no dependencies).
3. Warm CPU: process CPU time per invocation (after warm-up invocations), ingest one POST, the
   writer a batch of 10, the notifier a stream batch of 100 inserts; the floor replays the same
   AWS calls with bare boto3.
4. Billed calls: `--orders` orders through `orderpipe local` with prod's batch settings, every
   call at the endpoint logged (orderpipe_local.moto.call_log), turned into billed units, then
   dollars per million orders, for a flash sale and a trickle (see `dollars_per_million`).

The last line: `lambda bench: cold init x floor: ...; warm CPU x floor: ...; $ per 1M orders: ...`.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import tomllib
import uuid
import zipfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3

from orderpipe_local.environment import DUMMY_CREDENTIALS, aws_environment
from orderpipe_local.moto.call_log import CALL_LOG_VARIABLE
from orderpipe_local.moto.endpoint import AwsEndpoint
from orderpipe_local.stack.provision import Stack, provision_stack
from orderpipe_local.stack.template import load_template, parse_parameter_overrides
from orderpipe_local.testing import http_request, order_bodies, start_pipeline, wait_until

ROOT = Path(__file__).resolve().parent.parent
BUILD = ROOT / ".aws-sam" / "build"
WORK = ROOT / ".aws-sam" / "bench-lambda"
CHILD = Path(__file__).resolve().parent / "lambda_child.py"
FUNCTIONS = {"ingest": "IngestFunction", "writer": "WriterFunction", "notifier": "NotifierFunction"}
COLD_EVENTS = {
    "ingest": "ingest-post-order.json",
    "writer": "writer-sqs-batch.json",
    "notifier": "notifier-stream-insert-batch.json",
}
# The Lambda runtime's boto3: these pins of requirements/dev.lock, installed for Python 3.13.
RUNTIME_PACKAGES = ("boto3", "botocore", "jmespath", "s3transfer", "python-dateutil", "six", "urllib3")

# us-east-1 list prices (USD), no free tier. Read on 2026-12-03 from the figures this project's
# README gave for each AWS pricing page (API Gateway, Lambda, SQS, DynamoDB on-demand, SNS,
# CloudWatch Logs, X-Ray); this machine cannot reach aws.amazon.com, so check them there.
PRICES_READ = "2026-12-03"
PRICES = {
    "http_api_request": 1.00 / 1e6,
    "lambda_request": 0.20 / 1e6,
    "lambda_arm64_gb_second": 0.0000133334,
    "sqs_request": 0.40 / 1e6,  # per 64 KB chunk of a request's payload
    "dynamodb_write_unit": 0.625 / 1e6,  # on-demand write request unit
    "dynamodb_read_unit": 0.125 / 1e6,  # on-demand read request unit
    "sns_publish": 0.50 / 1e6,  # per 64 KB chunk
    "sns_email": 2.00 / 1e5,
    "log_gb_ingested": 0.50,
    "xray_trace": 5.00 / 1e6,
}
# An order id in a batch's log line: 36 characters, quotes, comma and space.
ID_LOG_BYTES = 40
# CloudWatch Logs bills each event's bytes plus 26 bytes of metadata.
LOG_EVENT_OVERHEAD = 26
# Lambda's own lines per invocation (START, END, REPORT with X-Ray), as it writes them.
PLATFORM_LINES = (
    "START RequestId: 3f6c2a7e-1b9d-4c58-9e2f-7a1d0b4c8e51 Version: 12\n",
    "END RequestId: 3f6c2a7e-1b9d-4c58-9e2f-7a1d0b4c8e51\n",
    "REPORT RequestId: 3f6c2a7e-1b9d-4c58-9e2f-7a1d0b4c8e51\tDuration: 12.34 ms\tBilled Duration: 13 ms\t"
    "Memory Size: 512 MB\tMax Memory Used: 98 MB\t\nXRAY TraceId: 1-6750a1b2-0123456789abcdef01234567\t"
    "SegmentId: 0123456789abcdef\tSampled: true\t\n",
)
# The API's access log line (template.yaml's AccessLogSettings.Format, typical values).
ACCESS_LOG_LINE = (
    '{"requestId":"Ab1CdEfGhIJKLmn=","ip":"203.0.113.10","routeKey":"POST /orders",'
    '"status":"202","latencyMs":"31","integrationError":"-"}'
)
# X-Ray's default sampling rule: the first request each second, then 5%.
XRAY_RESERVOIR_PER_SECOND = 1.0
XRAY_RATE = 0.05
# Lambda polls a queue with 5 pollers at least, each a 20 s long poll while the queue is empty.
SQS_IDLE_RECEIVES_PER_SECOND = 5 / 20
TRICKLE_SECONDS = 30 * 24 * 3600.0
FLASH_SALE_RATE = 2000.0  # orders/s: prod's ApiThrottlingRateLimit
GB = 1024**3


# --- the build -----------------------------------------------------------------------------------


def package_sizes(function_dir: Path) -> tuple[int, int]:
    """Bytes unzipped and zipped (deflate, as `sam deploy` zips the folder)."""
    unzipped = sum(path.stat().st_size for path in function_dir.rglob("*") if path.is_file())
    with tempfile.TemporaryFile() as archive:
        with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as writer:
            for path in sorted(function_dir.rglob("*")):
                if path.is_file():
                    writer.write(path, path.relative_to(function_dir).as_posix())
        zipped = archive.tell()
    return unzipped, zipped


def pip_install(python: str, target: Path, arguments: list[str]) -> None:
    completed = subprocess.run(
        [python, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(target), *arguments],
        capture_output=True,
        text=True,
        env=dict(os.environ, PIP_ROOT_USER_ACTION="ignore", PIP_DISABLE_PIP_VERSION_CHECK="1"),
    )
    if completed.returncode != 0:
        raise RuntimeError(f"pip install {' '.join(arguments)} failed:\n{completed.stderr[-4000:]}")


def runtime_boto3(python: str) -> Path:
    """The lock's boto3 and its dependencies for `python`, made once per lock."""
    lock = (ROOT / "requirements" / "dev.lock").read_text().split("\n")
    pins: list[str] = []
    for index, line in enumerate(lock):
        if line.split("==")[0] in RUNTIME_PACKAGES and "==" in line and not line.startswith(" "):
            block = [line.split(";")[0].rstrip(" \\") + " \\"]
            for follow in lock[index + 1 :]:
                if not follow.startswith("    --hash"):
                    break
                block.append(follow)
            pins.append("\n".join(block).rstrip(" \\"))
    digest = hashlib.sha256("\n".join(pins).encode()).hexdigest()[:12]
    target = WORK / f"runtime-{digest}"
    if not (target / ".complete").exists():
        shutil.rmtree(target, ignore_errors=True)
        requirements = WORK / f"runtime-{digest}.txt"
        requirements.parent.mkdir(parents=True, exist_ok=True)
        requirements.write_text("\n".join(pins) + "\n")
        pip_install(python, target, ["--require-hashes", "-r", str(requirements)])
        (target / ".complete").touch()
    return target


def runnable_copy(python: str, function_id: str) -> tuple[Path, list[str]]:
    """A fresh copy of the built folder, its foreign native extensions swapped for this machine's."""
    source = BUILD / function_id
    target = WORK / "functions" / function_id
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(source, target, symlinks=True)
    machine = platform.machine()
    swapped: list[str] = []
    for record in sorted(target.glob("*.dist-info/RECORD")):
        files = [line.split(",")[0] for line in record.read_text().splitlines()]
        foreign = [name for name in files if name.endswith(".so") and machine not in name]
        if not foreign:
            continue
        metadata = (record.parent / "METADATA").read_text().splitlines()
        name = next(line.split(": ", 1)[1] for line in metadata if line.startswith("Name: "))
        version = next(line.split(": ", 1)[1] for line in metadata if line.startswith("Version: "))
        overlay = WORK / "native" / f"{name}-{version}"
        if not (overlay / ".complete").exists():
            shutil.rmtree(overlay, ignore_errors=True)
            pip_install(python, overlay, [f"{name}=={version}"])
            (overlay / ".complete").touch()
        for so in foreign:
            (target / so).unlink()
        for path in overlay.rglob("*.so"):
            destination = target / path.relative_to(overlay)
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, destination)
        swapped.append(f"{name} {version}")
    return target, swapped


# --- the local endpoint and the plans ------------------------------------------------------------


@dataclass
class Bench:
    python: str
    stack: Stack
    endpoint: AwsEndpoint
    runtime: Path
    table: str
    setup: Any = field(repr=False)
    traced: set[str] = field(default_factory=set)

    def environment(self, function: str, folder: Path) -> dict[str, str]:
        function_id = FUNCTIONS[function]
        properties = self.stack.template.resources[function_id]["Properties"]
        variables = {
            name: value
            for name, value in self.stack.function_environment(function_id).items()
            if name != "AWS_ENDPOINT_URL"
        }
        aws = aws_environment(self.endpoint.url, "us-east-1", self.endpoint.service_urls)
        aws.pop("POWERTOOLS_TRACE_DISABLED", None)  # the template's own setting applies
        variables = aws | variables
        return {
            "PATH": os.environ.get("PATH", ""),
            "LANG": "C.UTF-8",
            "PYENV_VERSION": os.environ.get("PYENV_VERSION", ""),  # how pyenv finds --python
            **variables,
            "PYTHONPATH": f"{folder}:{self.runtime}",
            "PYTHONDONTWRITEBYTECODE": "1",
            "AWS_LAMBDA_FUNCTION_NAME": function_id,
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(properties.get("MemorySize", 512)),
            "AWS_EXECUTION_ENV": "AWS_Lambda_python3.13",
            "LAMBDA_TASK_ROOT": str(folder),
            "_HANDLER": str(properties["Handler"]),
            # As Lambda sets it: sampled under Tracing: Active, not under PassThrough (nothing
            # upstream of these functions samples).
            "_X_AMZN_TRACE_ID": "Root=1-6750a1b2-0123456789abcdef01234567;Parent=0123456789abcdef;"
            f"Sampled={int(function in self.traced)}",
            "AWS_XRAY_DAEMON_ADDRESS": "127.0.0.1:2000",
            "AWS_XRAY_CONTEXT_MISSING": "IGNORE_ERROR",
        }

    def timeout(self, function: str) -> float:
        properties = self.stack.template.resources[FUNCTIONS[function]]["Properties"]
        return float(properties.get("Timeout", 10))

    def child(self, mode: str, function: str, folder: Path, plan: dict[str, Any]) -> dict[str, Any]:
        with tempfile.NamedTemporaryFile("r", suffix=".json", dir=WORK) as output:
            completed = subprocess.run(
                [self.python, str(CHILD), mode, output.name],
                input=json.dumps(plan),
                text=True,
                cwd=folder,
                env=self.environment(function, folder),
                capture_output=True,
                timeout=300,
            )
            if completed.returncode != 0:
                raise RuntimeError(f"{mode} {function} failed:\n{completed.stderr[-4000:]}")
            result: dict[str, Any] = json.loads(Path(output.name).read_text())
            return result

    def apply(self, steps: list[dict[str, Any]]) -> None:
        for step in steps:
            if "put" in step:
                self.setup.put_item(TableName=self.table, Item=step["put"])
            else:
                self.setup.delete_item(TableName=self.table, Key=step["delete"])


def load_event(name: str) -> dict[str, Any]:
    event: dict[str, Any] = json.loads((ROOT / "events" / name).read_text())
    return event


def cold_setup(function: str, event: dict[str, Any]) -> list[dict[str, Any]]:
    """The table as each cold invocation finds it: the writer's orders absent, the notifier's PLACED."""
    steps: list[dict[str, Any]] = []
    for record in event.get("Records", []):
        if function == "writer":
            with contextlib.suppress(ValueError, KeyError, TypeError):
                steps.append({"delete": {"orderId": {"S": json.loads(record["body"])["orderId"]}}})
        elif function == "notifier" and record.get("eventName") == "INSERT":
            steps.append({"put": record["dynamodb"]["NewImage"]})
    return steps


def warm_invocations(function: str, count: int) -> list[dict[str, Any]]:
    """Events with orders of their own: ingest one POST, the writer 10 messages, the notifier 100
    inserts (each from the first order of its fixture, with new order ids)."""
    if function == "ingest":
        return [{"event": load_event(COLD_EVENTS["ingest"]), "setup": []} for _ in range(count)]
    invocations = []
    if function == "writer":
        record = load_event(COLD_EVENTS["writer"])["Records"][0]
        for _ in range(count):
            records, steps = [], []
            for _ in range(10):
                order_id = str(uuid.uuid4())
                body = json.loads(record["body"]) | {"orderId": order_id}
                records.append(record | {"messageId": str(uuid.uuid4()), "body": json.dumps(body)})
                steps.append({"delete": {"orderId": {"S": order_id}}})
            invocations.append({"event": {"Records": records}, "setup": steps})
        return invocations
    record = load_event(COLD_EVENTS["notifier"])["Records"][0]
    sequence = 100000000000000000000
    for _ in range(count):
        records, steps = [], []
        for _ in range(100):
            order_id = str(uuid.uuid4())
            sequence += 1
            image = record["dynamodb"]["NewImage"] | {"orderId": {"S": order_id}}
            change = record["dynamodb"] | {
                "Keys": {"orderId": {"S": order_id}},
                "NewImage": image,
                "SequenceNumber": str(sequence),
            }
            records.append(record | {"eventID": uuid.uuid4().hex, "dynamodb": change})
            steps.append({"put": image})
        invocations.append({"event": {"Records": records}, "setup": steps})
    return invocations


@contextlib.contextmanager
def local_stack(python: str) -> Iterator[Bench]:
    overrides = prod_overrides()
    template = load_template(ROOT / "template.yaml", overrides=overrides, stack_name="orderpipe-bench")
    WORK.mkdir(parents=True, exist_ok=True)
    os.environ.update(DUMMY_CREDENTIALS, AWS_DEFAULT_REGION="us-east-1")
    os.environ.pop("AWS_PROFILE", None)
    with AwsEndpoint(log_path=WORK / "moto.log") as endpoint:
        stack = provision_stack(template, endpoint_url=endpoint.url)
        session = boto3.session.Session(
            aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1"
        )
        setup = session.client("dynamodb", endpoint_url=endpoint.url_for("dynamodb"))
        table = stack.ref("OrdersTable")
        yield Bench(python, stack, endpoint, runtime_boto3(python), table, setup, traced_functions())


def prod_overrides() -> dict[str, str]:
    config = tomllib.loads((ROOT / "samconfig.toml").read_text())
    return parse_parameter_overrides(config["prod"]["deploy"]["parameters"]["parameter_overrides"])


# --- cold init and warm CPU ------------------------------------------------------------------------


def measure_lambda(bench: Bench, runs: int, warm_count: int, warm_up: int) -> dict[str, dict[str, Any]]:
    results: dict[str, dict[str, Any]] = {}
    for function, function_id in FUNCTIONS.items():
        folder, swapped = runnable_copy(bench.python, function_id)
        handler = bench.stack.template.resources[function_id]["Properties"]["Handler"]
        event = load_event(COLD_EVENTS[function])
        setup = cold_setup(function, event)
        base = {"handler": handler, "timeout": bench.timeout(function), "table": bench.table, "warm_up": 0}
        cold: list[float] = []
        floor: list[float] = []
        cold_import: list[float] = []
        calls: list[Any] = []
        for _ in range(runs):
            bench.apply(setup)
            measured = bench.child("function", function, folder, base | {"cold_event": event, "warm": []})
            cold.append(measured["cold"]["init_seconds"])
            cold_import.append(measured["cold"]["import_seconds"])
            calls = measured["cold_calls"]
            bench.apply(setup)
            floored = bench.child("floor", function, folder, base | {"cold_calls": calls, "warm": []})
            floor.append(floored["cold"]["init_seconds"])
        invocations = warm_invocations(function, warm_count + warm_up)
        warm_plan = base | {"cold_event": event, "warm": invocations, "warm_up": warm_up}
        bench.apply(setup)
        measured = bench.child("function", function, folder, warm_plan)
        bench.apply(setup)
        floored = bench.child(
            "floor", function, folder, warm_plan | {"cold_calls": calls, "warm_calls": measured["warm_calls"]}
        )
        orders = {"ingest": 1, "writer": 10, "notifier": 100}[function]
        results[function] = {
            "swapped": swapped,
            "cold": statistics.median(cold),
            "cold_import": statistics.median(cold_import),
            "cold_floor": statistics.median(floor),
            "cold_calls": Counter(f"{service}:{operation}" for service, operation, _ in calls),
            "warm_calls": Counter(
                f"{service}:{operation}" for service, operation, _ in measured["warm_calls"][-1]
            ),
            "warm_cpu": statistics.median(item["cpu_seconds"] for item in measured["warm"]),
            "warm_wall": statistics.median(item["wall_seconds"] for item in measured["warm"]),
            "warm_floor_cpu": statistics.median(item["cpu_seconds"] for item in floored["warm"]),
            "warm_floor_wall": statistics.median(item["wall_seconds"] for item in floored["warm"]),
            "orders": orders,
        }
    return results


# --- billed calls through orderpipe local ----------------------------------------------------------


def item_size(item: dict[str, Any]) -> int:
    """DynamoDB's item size: attribute names plus values (strings in UTF-8, numbers about one byte
    per two digits plus one, maps and lists 3 bytes plus 1 per element)."""
    return sum(len(name.encode()) + _value_size(value) for name, value in item.items())


def _value_size(value: dict[str, Any]) -> int:
    kind, content = next(iter(value.items()))
    if kind == "S":
        return len(str(content).encode())
    if kind == "N":
        digits = str(content).lstrip("-").replace(".", "").strip("0") or "0"
        return math.ceil(len(digits) / 2) + 1
    if kind in ("BOOL", "NULL"):
        return 1
    if kind == "M":
        return 3 + sum(len(name.encode()) + 1 + _value_size(item) for name, item in content.items())
    if kind == "L":
        return 3 + sum(1 + _value_size(item) for item in content)
    return len(json.dumps(content))


@dataclass
class Billed:
    orders: int = 0
    api_requests: int = 0
    sqs_requests: int = 0
    sqs_empty_receives: int = 0
    write_units: float = 0.0
    read_units: float = 0.0
    sns_publishes: int = 0
    emails: int = 0
    email_bytes: int = 0
    log_bytes: int = 0
    invocations: Counter[str] = field(default_factory=Counter)
    log_bytes_by_service: Counter[str] = field(default_factory=Counter)
    operations: Counter[str] = field(default_factory=Counter)
    # Item writes that repeat an earlier one byte for byte: botocore resending a request whose
    # answer the loaded local endpoint did not give within the functions' 0.5 s read timeout.
    # DynamoDB answers well within it, so they are counted here and not billed.
    resent_writes: int = 0
    _seen_writes: set[str] = field(default_factory=set)


def count_billed_calls(orders: int, workers: int) -> Billed:
    """`orders` orders through `orderpipe local` with prod's batch settings, counted at the endpoint."""
    billed = Billed(orders=orders)
    overrides = prod_overrides()
    overrides.pop("Stage", None)  # the local stack stays dev's; prod's batch and email settings apply
    # Full batches are invoked at once whatever the window; a longer one would only make the run
    # wait for its last partial batch. The dollars use prod's window.
    window = min(float(overrides["NotifierBatchingWindowSeconds"]), 30.0)
    overrides["NotifierBatchingWindowSeconds"] = f"{window:g}"
    with tempfile.TemporaryDirectory(dir=WORK) as directory:
        folder = Path(directory)
        os.environ[CALL_LOG_VARIABLE] = str(folder / "calls")
        try:
            pipeline = start_pipeline(
                folder,
                "--parameter-overrides",
                *[f"{key}={value}" for key, value in overrides.items()],
                "--drain-timeout",
                "120",
            )
        finally:
            del os.environ[CALL_LOG_VARIABLE]
        try:
            bodies = order_bodies(orders, seed=13)
            order_ids: list[str] = []
            lock = threading.Lock()

            def post(chunk: list[bytes]) -> None:
                for body in chunk:
                    status, _, answer = http_request(pipeline.api_url + "/orders", "POST", body)
                    if status != 202:
                        raise RuntimeError(f"POST answered {status}: {answer}")
                    with lock:
                        order_ids.append(answer["orderId"])

            threads = [
                threading.Thread(target=post, args=(bodies[index::workers],)) for index in range(workers)
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            billed.api_requests = len(order_ids)
            wanted = set(order_ids)

            def all_mailed() -> bool:
                text = "".join(email.body for email in pipeline.emails())
                return all(order_id in text for order_id in wanted)

            wait_until(all_mailed, timeout=300, interval=2.0)
            table = pipeline.resource("OrdersTable")

            def all_notified() -> bool:
                scan = pipeline.dynamodb().scan(
                    TableName=table,
                    Select="COUNT",
                    FilterExpression="#s = :n",
                    ExpressionAttributeNames={"#s": "status"},
                    ExpressionAttributeValues={":n": {"S": "NOTIFIED"}},
                )
                return int(scan["Count"]) >= len(wanted)

            wait_until(all_notified, timeout=120, interval=1.0)
            emails = pipeline.emails()
            billed.emails = len(emails)
            billed.email_bytes = sum(len(email.body.encode()) for email in emails)
        finally:
            pipeline.stop(timeout=180)
        log_file = folder / "functions.log"
        _count_logs(billed, log_file)
        for path in sorted((folder / "calls").glob("calls-*.jsonl")):
            for line in path.read_text().splitlines():
                _bill(billed, json.loads(line))
    return billed


def _count_logs(billed: Billed, log_file: Path) -> None:
    for line in log_file.read_text(errors="replace").splitlines():
        size = len(line.encode()) + 1 + LOG_EVENT_OVERHEAD
        billed.log_bytes += size
        with contextlib.suppress(ValueError):
            record = json.loads(line)
            if isinstance(record, dict):
                service = str(record.get("service", "?"))
                billed.log_bytes_by_service[service] += size
                if "_aws" in record:  # one EMF blob per invocation
                    billed.invocations[service] += 1


_ITEMS: dict[str, int] = {}  # stored item sizes by order id, for the units of later updates


def _bill(billed: Billed, call: dict[str, Any]) -> None:
    service, operation = call["service"], call["operation"]
    billed.operations[f"{service}:{operation}"] += 1
    request = json.loads(call["request"]) if call.get("request", "").startswith("{") else {}
    if service == "sqs":
        if operation in ("SendMessage", "SendMessageBatch"):
            entries = request.get("Entries", [request])
            payload = sum(len(entry.get("MessageBody", "").encode()) for entry in entries)
            billed.sqs_requests += max(1, math.ceil(payload / 65536))
        elif operation == "ReceiveMessage":
            received = json.loads(call.get("answer") or "{}").get("Messages", [])
            if received:
                payload = sum(len(message.get("Body", "").encode()) for message in received)
                billed.sqs_requests += max(1, math.ceil(payload / 65536))
            else:
                billed.sqs_empty_receives += 1
        elif operation in (
            "DeleteMessage",
            "DeleteMessageBatch",
            "ChangeMessageVisibility",
            "ChangeMessageVisibilityBatch",
        ):
            billed.sqs_requests += 1
        return
    if service == "sns" and operation == "Publish":
        billed.sns_publishes += 1
        return
    if service != "dynamodb":  # without Idempotency-Key, every item call is on OrdersTable
        return
    if operation in ("PutItem", "UpdateItem"):
        if call["request"] in billed._seen_writes:
            billed.resent_writes += 1
            return
        billed._seen_writes.add(call["request"])
    if operation == "PutItem":
        size = item_size(request["Item"])
        _ITEMS[request["Item"]["orderId"]["S"]] = size
        billed.write_units += math.ceil(size / 1024)
    elif operation == "UpdateItem":
        billed.write_units += _update_units(request["Key"]["orderId"]["S"])
    elif operation == "TransactWriteItems":
        for action in request.get("TransactItems", []):
            update = action.get("Update") or action.get("Put") or {}
            billed.write_units += 2 * _update_units(update.get("Key", {}).get("orderId", {}).get("S", ""))
    elif operation == "BatchGetItem":
        for keys in request.get("RequestItems", {}).values():
            strong = keys.get("ConsistentRead", False)
            for key in keys["Keys"]:
                units = math.ceil(_ITEMS.get(key["orderId"]["S"], 1024) / 4096)
                billed.read_units += units if strong else units / 2
    elif operation == "GetItem":
        units = math.ceil(_ITEMS.get(request["Key"]["orderId"]["S"], 1024) / 4096)
        billed.read_units += units if request.get("ConsistentRead") else units / 2


def _update_units(order_id: str) -> int:
    """An update is billed on the larger item, before or after: with `notifiedAt` (about 40 bytes)."""
    return math.ceil((_ITEMS.get(order_id, 1024) + 40) / 1024)


# --- dollars ---------------------------------------------------------------------------------------


def dollars_per_million(
    billed: Billed,
    lambda_figures: dict[str, dict[str, Any]],
    memory: dict[str, int],
    scenario: str,
    batch: dict[str, tuple[int, float]],
) -> dict[str, float]:
    """Dollars for 1M orders.

    Per order, from the run: API requests, SendMessage requests, DynamoDB units, ingest's log
    bytes, email bytes; the writer's and notifier's log bytes per batch (a part per batch and
    the ids of its orders), scaled to the scenario's batches. Per batch, from the scenario's batch sizes:
    - flash sale: every batch full (BatchSize), orders at prod's API rate limit (2,000/s);
    - trickle: 1M orders evenly over 30 days; a batch opens with its first record and takes
      what arrives within the batching window: 1 + rate x window records (at most BatchSize),
      and the queue's idle long polls (5 pollers, 20 s each) are added.
    A writer batch of n messages costs ceil(n/10) receives and ceil(n/10) deletes.
    Emails per notifier batch: its orders' email bytes over SNS's 256 KB limit, rounded up.
    Duration: the measured warm wall time per order times the batch size (the local endpoint
    answers about as fast as AWS in-region), at least the CPU time scaled to the memory size
    (one vCPU at 1,769 MB), rounded up to the millisecond. X-Ray: each function's invocations
    under the default sampling rule (1 a second, then 5%) when its Tracing is Active."""
    million = 1_000_000
    n = billed.orders
    rate = million / (TRICKLE_SECONDS if scenario == "trickle" else million / FLASH_SALE_RATE)
    sizes = {"ingest": 1.0}
    for function, (size, window) in batch.items():
        sizes[function] = float(size) if scenario == "flash" else min(float(size), 1 + rate * window)
    invocations = {function: million / sizes[function] for function in FUNCTIONS}
    cost: dict[str, float] = {}
    cost["API Gateway"] = billed.api_requests / n * million * PRICES["http_api_request"]
    cost["Lambda requests"] = sum(invocations.values()) * PRICES["lambda_request"]
    gb_seconds = 0.0
    for function, count in invocations.items():
        figures = lambda_figures[function]
        wall = figures["warm_wall"] / figures["orders"] * sizes[function]
        cpu = figures["warm_cpu"] / figures["orders"] * sizes[function]
        seconds = math.ceil(max(wall, cpu * 1769 / memory[function]) * 1000) / 1000
        gb_seconds += count * seconds * memory[function] / 1024
    cost["Lambda duration"] = gb_seconds * PRICES["lambda_arm64_gb_second"]
    sends = billed.operations["sqs:SendMessage"] / n * million
    # Lambda's poller, not the local one (whose receives are printed as counted): a batch of n
    # messages takes ceil(n/10) receives and as many deletes.
    polling = invocations["writer"] * 2 * math.ceil(sizes["writer"] / 10)
    if scenario == "trickle":
        polling += SQS_IDLE_RECEIVES_PER_SECOND * TRICKLE_SECONDS
    cost["SQS"] = (sends + polling) * PRICES["sqs_request"]
    cost["DynamoDB writes"] = billed.write_units / n * million * PRICES["dynamodb_write_unit"]
    cost["DynamoDB reads"] = billed.read_units / n * million * PRICES["dynamodb_read_unit"]
    email_bytes = billed.email_bytes / n * sizes["notifier"]
    emails = invocations["notifier"] * max(1, math.ceil(email_bytes / (256 * 1024)))
    cost["SNS"] = emails * (PRICES["sns_email"] + PRICES["sns_publish"])
    log_bytes = million * billed.log_bytes_by_service["ingest"] / n
    # A batch's lines: a part of their own, and the ids of its orders (ID_LOG_BYTES each, in one
    # writer line, in two notifier lines: the email sent and the orders marked).
    for function, mentions in (("writer", 1), ("notifier", 2)):
        batches = max(1, billed.invocations[function])
        ids = ID_LOG_BYTES * mentions
        fixed = (billed.log_bytes_by_service[function] - ids * n) / batches
        log_bytes += invocations[function] * (max(0.0, fixed) + ids * sizes[function])
    platform_bytes = sum(len(line) + LOG_EVENT_OVERHEAD for line in PLATFORM_LINES)
    log_bytes += sum(invocations.values()) * platform_bytes
    log_bytes += million * (len(ACCESS_LOG_LINE) + LOG_EVENT_OVERHEAD)
    cost["CloudWatch Logs"] = log_bytes / GB * PRICES["log_gb_ingested"]
    seconds = million / rate
    traces = 0.0
    active = traced_functions()
    for function, count in invocations.items():
        if function in active:
            sampled = min(count, XRAY_RESERVOIR_PER_SECOND * seconds)
            traces += sampled + (count - sampled) * XRAY_RATE
    cost["X-Ray"] = traces * PRICES["xray_trace"]
    cost["total"] = sum(cost.values())
    return cost


def traced_functions() -> set[str]:
    """The functions whose Tracing is Active (their own setting, else the Globals')."""
    template = load_template(ROOT / "template.yaml")
    traced = set()
    for function, function_id in FUNCTIONS.items():
        if template.resources[function_id]["Properties"].get("TracingConfig", {}).get("Mode") == "Active":
            traced.add(function)
    return traced


# --- the report -------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--python", default="python3.13", help="the Lambda runtime's Python")
    parser.add_argument("--runs", type=int, default=10, help="cold starts of each function and floor")
    parser.add_argument("--warm", type=int, default=20, help="warm invocations measured")
    parser.add_argument("--warm-up", type=int, default=3)
    parser.add_argument("--orders", type=int, default=1000, help="orders through orderpipe local")
    parser.add_argument("--workers", type=int, default=4, help="threads posting the orders")
    parser.add_argument("--skip-billed", action="store_true", help="cold init and warm CPU only")
    args = parser.parse_args(argv)
    if not all((BUILD / function_id).is_dir() for function_id in FUNCTIONS.values()):
        print("no build in .aws-sam/build: run `make build` first", file=sys.stderr)
        return 2
    print(f"lambda bench {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {args.python}, {platform.machine()}")
    print("package size (unzipped / zipped):")
    for function, function_id in FUNCTIONS.items():
        unzipped, zipped = package_sizes(BUILD / function_id)
        print(f"  {function:<9} {unzipped / 1e6:6.1f} MB / {zipped / 1e6:5.1f} MB")
    with local_stack(args.python) as bench:
        figures = measure_lambda(bench, args.runs, args.warm, args.warm_up)
        memory = {
            function: int(bench.stack.template.resources[function_id]["Properties"].get("MemorySize", 512))
            for function, function_id in FUNCTIONS.items()
        }
        parameters = prod_overrides()
        batch = {
            "writer": (int(parameters["WriterBatchSize"]), float(parameters["WriterBatchingWindowSeconds"])),
            "notifier": (
                int(parameters["NotifierBatchSize"]),
                float(parameters["NotifierBatchingWindowSeconds"]),
            ),
        }
    print(f"cold init (median of {args.runs}, interleaved; import + first invocation, from process start):")
    for function, result in figures.items():
        swapped = (
            f"; native for {platform.machine()}: {', '.join(result['swapped'])}" if result["swapped"] else ""
        )
        print(
            f"  {function:<9} {result['cold'] * 1000:7.1f} ms (import {result['cold_import'] * 1000:.1f} ms)"
            f"  floor {result['cold_floor'] * 1000:6.1f} ms  x{result['cold'] / result['cold_floor']:.2f}"
            f"  calls {dict(result['cold_calls'])}{swapped}"
        )
    print(f"warm CPU (median of {args.warm} after {args.warm_up} warm-up; process CPU time):")
    for function, result in figures.items():
        orders = result["orders"]
        print(
            f"  {function:<9} {result['warm_cpu'] * 1000:7.2f} ms/invocation"
            f" {result['warm_cpu'] * 1000 / orders:6.3f} ms/order"
            f"  floor {result['warm_floor_cpu'] * 1000:7.2f} ms"
            f"  x{result['warm_cpu'] / result['warm_floor_cpu']:.2f}"
            f"  wall {result['warm_wall'] * 1000:.1f} ms (floor {result['warm_floor_wall'] * 1000:.1f})"
            f"  calls {dict(result['warm_calls'])}"
        )
    flash = trickle = float("nan")
    if not args.skip_billed:
        billed = count_billed_calls(args.orders, args.workers)
        n = billed.orders
        print(f"billed calls, {n} orders through orderpipe local with samconfig [prod]'s batch settings:")
        print(
            f"  per order: API {billed.api_requests / n:.3f}, SQS {billed.sqs_requests / n:.3f}"
            f" (+{billed.sqs_empty_receives} empty receives), DynamoDB WCU {billed.write_units / n:.3f}"
            f" RCU {billed.read_units / n:.3f}, SNS publishes {billed.sns_publishes / n:.4f}"
            f" emails {billed.emails / n:.4f}, function log bytes {billed.log_bytes / n:.0f}"
            f" ({billed.resent_writes} item writes resent after a local timeout, not billed)"
        )
        print(f"  invocations {dict(billed.invocations)}; calls {dict(sorted(billed.operations.items()))}")
        print(f"$ per 1M orders, us-east-1 list prices read {PRICES_READ}, memory {memory}:")
        totals = {}
        for scenario in ("flash", "trickle"):
            cost = dollars_per_million(billed, figures, memory, scenario, batch)
            totals[scenario] = cost["total"]
            print(f"  {scenario:<8} " + ", ".join(f"{name} {value:.3f}" for name, value in cost.items()))
        print(f"  traced (Tracing: Active): {sorted(traced_functions()) or 'none'}")
        flash, trickle = totals["flash"], totals["trickle"]
    ratio = {
        function: (result["cold"] / result["cold_floor"], result["warm_cpu"] / result["warm_floor_cpu"])
        for function, result in figures.items()
    }
    cold = ", ".join(f"{function} {ratio[function][0]:.2f}" for function in FUNCTIONS)
    warm = ", ".join(f"{function} {ratio[function][1]:.2f}" for function in FUNCTIONS)
    print(
        f"lambda bench: cold init x floor: {cold}; warm CPU x floor: {warm}; "
        f"$ per 1M orders: flash sale {flash:.2f}, trickle {trickle:.2f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
