"""Test helpers shared by the product's tests, the runner's and the benchmarks: the `events/`
fixtures, a Lambda context, an environment that cannot reach real AWS (loaded as a pytest plugin
by both suites), and `orderpipe local` started as a subprocess and reached over HTTP only."""

from __future__ import annotations

import email
import email.policy
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3
import pytest

from orderpipe.aws import clients
from orderpipe_local.runtime.lambda_context import LocalLambdaContext
from orderpipe_local.stack.template import project_root

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_sqs import SQSClient

ROOT = project_root()
EVENTS = ROOT / "events"

# Powertools' Metrics takes its namespace, and orderpipe its stage dimension, from the environment
# when `orderpipe.observability` is first imported, and test modules import it while they are
# collected, before any fixture runs.
os.environ.setdefault("POWERTOOLS_METRICS_NAMESPACE", "Orderpipe")
os.environ["STAGE"] = "dev"  # what the tests expect in the metrics, whatever the shell exports


def load_event(name: str) -> dict[str, Any]:
    """One of the `sam local invoke -e` fixtures in `events/`."""
    event: dict[str, Any] = json.loads((EVENTS / name).read_text())
    return event


@pytest.fixture(autouse=True)
def offline_aws(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No test may reach real AWS: dummy credentials, one region, no X-Ray, no endpoint.

    Only the acceptance tests, given `--stack-name`, reach AWS, with the caller's credentials.
    """
    if request.config.getoption("stack_name", default=None) and request.node.get_closest_marker("acceptance"):
        yield
        return
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.setenv("POWERTOOLS_TRACE_DISABLED", "1")
    monkeypatch.setenv("POWERTOOLS_METRICS_NAMESPACE", "Orderpipe")
    clients.reset()
    yield
    clients.reset()


@pytest.fixture
def lambda_context() -> LocalLambdaContext:
    return LocalLambdaContext(function_name="orderpipe-test")


START_TIMEOUT_SECONDS = 60.0


def wait_until(condition: Callable[[], Any], timeout: float = 30.0, interval: float = 0.1) -> Any:
    """Poll until `condition()` is truthy and return it; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"still not true after {timeout} s: {condition.__doc__ or condition}")
        time.sleep(interval)


@dataclass(frozen=True)
class Email:
    path: Path
    to: str
    subject: str
    body: str


def orderpipe_command() -> list[str]:
    """The installed console script, as `make run` starts it."""
    script = Path(sys.executable).parent / "orderpipe"
    return [str(script)] if script.exists() else [sys.executable, "-m", "orderpipe_local.cli"]


def http_request(
    url: str, method: str, body: Any = None, headers: dict[str, str] | None = None, timeout: float = 10
) -> tuple[int, dict[str, str], Any]:
    """One JSON request: (status, headers, JSON body or text); a body not bytes is sent as JSON."""
    data = json.dumps(body).encode() if body is not None and not isinstance(body, bytes) else body
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("Content-Type", "application/json")
    for name, value in (headers or {}).items():
        request.add_header(name, value)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status, response_headers, raw = response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        status, response_headers, raw = error.code, dict(error.headers), error.read()
    try:
        return status, response_headers, json.loads(raw)
    except ValueError:
        return status, response_headers, raw.decode(errors="replace")


@dataclass
class RunningPipeline:
    process: subprocess.Popen[bytes]
    api_url: str
    endpoint_url: str
    outbox: Path
    state: dict[str, Any]
    output: Path

    # how long an accepted order may take to be mailed (the acceptance tests' OrdersTarget)
    mail_timeout: float = 20.0
    replay_timeout: float = 60.0

    def request(
        self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], Any]:
        """One HTTP request to the local API: (status, headers, JSON body or text)."""
        return http_request(self.api_url + path, method, body, headers, timeout=10)

    def _session(self) -> boto3.session.Session:
        return boto3.session.Session(
            aws_access_key_id="testing", aws_secret_access_key="testing", region_name=self.state["region"]
        )

    def sqs(self) -> SQSClient:
        """An SQS client of the pipeline's AWS endpoint."""
        return self._session().client("sqs", endpoint_url=self.endpoint_url)

    def dynamodb(self) -> DynamoDBClient:
        """A DynamoDB client of the pipeline's AWS endpoint."""
        return self._session().client("dynamodb", endpoint_url=self.endpoint_url)

    def resource(self, logical_id: str) -> str:
        """The physical name, URL or ARN of one of the template's resources."""
        ref: str = self.state["resources"][logical_id]["ref"]
        return ref

    def emails(self) -> list[Email]:
        """The outbox, oldest first."""
        emails = []
        for path in sorted(self.outbox.glob("*.eml")):
            message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
            body = message.get_body(preferencelist=("plain",))
            text = body.get_content() if body is not None else ""
            emails.append(Email(path, str(message["To"]), str(message["Subject"]), text))
        return emails

    def order_status(self, order_id: str) -> str | int:
        """The order's status, or the HTTP status when there is none (404)."""
        status, _, body = self.request("GET", f"/orders/{order_id}")
        return str(body["status"]) if status == 200 else status

    def terminate(self, timeout: float = 90.0) -> int:
        """SIGTERM, then the exit code."""
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)

    def stop(self, timeout: float = 60.0) -> None:
        """After a test: SIGTERM if it still runs, SIGKILL if it has not exited within `timeout`."""
        if self.process.poll() is not None:
            return
        try:
            self.terminate(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def console(self) -> str:
        return self.output.read_text(errors="replace")

    def function_logs(self) -> str:
        """What the functions logged (start_pipeline's --log-file, beside the console's output)."""
        path = self.output.parent / "functions.log"
        return path.read_text(errors="replace") if path.exists() else ""


def start_pipeline(tmp_path: Path, *extra_args: str) -> RunningPipeline:
    state_file = tmp_path / "state.json"
    outbox = tmp_path / "outbox"
    output = tmp_path / "console.txt"
    command = [
        *orderpipe_command(),
        "local",
        "--port",
        "0",  # it picks a free port and writes its URL to the state file
        "--aws-port",
        "0",
        "--outbox",
        str(outbox),
        "--log-file",
        str(tmp_path / "functions.log"),
        "--state-file",
        str(state_file),
        *extra_args,
    ]
    with output.open("wb") as console:
        process = subprocess.Popen(
            command,
            cwd=ROOT,
            stdout=console,
            stderr=subprocess.STDOUT,
            env=dict(os.environ, PYTHONUNBUFFERED="1"),
        )
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while not state_file.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            process.wait()
            raise AssertionError(f"orderpipe local did not start:\n{output.read_text(errors='replace')}")
        time.sleep(0.1)
    state = json.loads(state_file.read_text())
    return RunningPipeline(process, state["api_url"], state["endpoint_url"], outbox, state, output)


def template_without_notifier_retry_queue(folder: Path) -> Path:
    """template.yaml as a stack deployed before the automatic replay had it: the notifier's
    mapping fails straight into NotifierDLQ."""
    text = (ROOT / "template.yaml").read_text()
    replaced = text.replace(
        "Destination: !GetAtt NotifierRetryQueue.Arn", "Destination: !GetAtt NotifierDLQ.Arn"
    )
    assert replaced != text, "template.yaml's notifier no longer fails into NotifierRetryQueue"
    (folder / "template.yaml").write_text(replaced)
    shutil.copy(ROOT / "samconfig.toml", folder / "samconfig.toml")
    return folder / "template.yaml"


# --- the processes of a running pipeline (Linux /proc) -----------------------------------------


def descendants(pid: int) -> dict[int, str]:
    """Every process under `pid`, with its command line."""
    found: dict[int, str] = {}
    pending = [pid]
    while pending:
        parent = pending.pop()
        for child in child_pids(parent):
            try:
                found[child] = Path(f"/proc/{child}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:  # gone meanwhile
                continue
            pending.append(child)
    return found


def child_pids(pid: int) -> list[int]:
    children: list[int] = []
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            children += map(int, (task / "children").read_text().split())
    except OSError:
        pass
    return children


def forkserver_pid(pid: int) -> int:
    """The forkserver of process `pid` (the standard library's; it forks the function workers)."""
    for child, command in descendants(pid).items():
        if "multiprocessing.forkserver" in command and child in child_pids(pid):
            return child
    raise AssertionError(f"process {pid} has no forkserver")


def niceness(pid: int) -> int:
    # /proc/PID/stat: the command (in parentheses) is field 2; niceness is field 19
    return int(Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[16])


def alive(pid: int) -> bool:
    """Whether the process runs (a zombie has exited, whoever reaps it)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state != "Z"


# --- orders a load or chaos run sends ---------------------------------------------------

_NAMES = (
    "Ada Lovelace",
    "Grace Hopper",
    "Alan Turing",
    "Émilie du Châtelet",
    "Søren Kierkegaard",
    "Zoë O'Brien",
    "José Núñez",
    "李小龍",
    "Mary-Jane Watson",
    "Nikola Tesla",
    "Hedy Lamarr",
    "Ryōko Hirosue",
)
_CATALOG = (
    ("MOP-001", "Microfiber mop", "12.50"),
    ("BKT-010", "Bucket, 10 l", "7.99"),
    ("SPR-250", "All-purpose spray 250 ml", "3.49"),
    ("GLV-M", "Rubber gloves, size M", "2.10"),
    ("SPG-6PK", "Sponges (6-pack)", "4.00"),
    ("VAC.X2", "Cordless vacuum X2", "189.00"),
    ("BRS_TLT", "Toilet brush", "5.25"),
    ("CLTH-12", "Cleaning cloths, 12", "9.90"),
    ("DTG-1L", "Laundry detergent 1 l", "6.75"),
    ("FLR-WAX", "Floor wax", "14.30"),
)
_CITIES = (("Springfield", "US"), ("Lyon", "FR"), ("Kraków", "PL"), ("Osaka", "JP"), ("Leeds", "GB"))
_NOTES = ("Leave at the back door", "Ring twice, please.", "Gift — no invoice in the box", "Fragile!\nThanks")


def order_bodies(count: int, seed: int) -> list[bytes]:
    """`count` valid orders, varied in customer, items, currency, address and note."""
    rng = random.Random(seed)
    bodies = []
    for index in range(count):
        name = rng.choice(_NAMES)
        order: dict[str, Any] = {
            "customer": {"name": name, "email": f"customer{index}@example.com"},
            "items": [
                {"sku": sku, "name": item_name, "quantity": rng.randint(1, 5), "unitPrice": price}
                for sku, item_name, price in rng.sample(_CATALOG, rng.randint(1, 5))
            ],
            "currency": rng.choice(("USD", "USD", "EUR", "GBP")),
        }
        if rng.random() < 0.6:
            city, country = rng.choice(_CITIES)
            order["shippingAddress"] = {
                "line1": f"{rng.randint(1, 999)} Main St",
                "city": city,
                "postalCode": f"{rng.randint(10000, 99999)}",
                "country": country,
            }
        if rng.random() < 0.25:
            order["note"] = rng.choice(_NOTES)
        bodies.append(json.dumps(order, ensure_ascii=False).encode())
    return bodies
