"""The whole pipeline under `orderpipe local`, driven over HTTP only: its API and its AWS endpoint."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from orderpipe_local.testing import (
    EVENTS,
    ROOT,
    RunningPipeline,
    child_pids,
    descendants,
    forkserver_pid,
    load_event,
    niceness,
    orderpipe_command,
    start_pipeline,
    wait_until,
)

if TYPE_CHECKING:
    pass

pytestmark = pytest.mark.e2e

ORDER: dict[str, Any] = json.loads(load_event("ingest-post-order.json")["body"])
MAIL_TIMEOUT_SECONDS = 20.0


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningPipeline]:
    """One pipeline for the tests of this module; each test only looks at its own orders."""
    running = start_pipeline(tmp_path_factory.mktemp("pipeline"))
    yield running
    if running.process.poll() is None:
        assert running.terminate() == 0, running.console()


def emails_naming(pipeline: RunningPipeline, order_id: str) -> list[Any]:
    return [mail for mail in pipeline.emails() if order_id in mail.body]


@pytest.mark.parametrize("found_by", ["state file", "endpoint URL"])
def test_orderpipe_invoke_runs_a_function_against_the_running_pipeline(
    pipeline: RunningPipeline, found_by: str
) -> None:
    # When the ingest function is invoked with a fixture, against the running pipeline: found
    # through its state file (as by default), or through its endpoint's URL
    where = (
        ["--state-file", str(pipeline.output.parent / "state.json")]
        if found_by == "state file"
        else ["--endpoint-url", pipeline.endpoint_url]
    )
    invoked = subprocess.run(
        [*orderpipe_command(), "invoke", "ingest", "-e", str(EVENTS / "ingest-post-order.json"), *where],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    # Then it prints the handler's response alone on stdout, as sam local invoke does
    assert invoked.returncode == 0, invoked.stderr
    response = json.loads(invoked.stdout)
    assert response["statusCode"] == 202
    order_id = json.loads(response["body"])["orderId"]
    expected = (
        "the running orderpipe local" if found_by == "state file" else f"against {pipeline.endpoint_url}"
    )
    assert expected in invoked.stderr

    # And the order it queued goes through the running pipeline: stored, then mailed
    wait_until(lambda: pipeline.order_status(order_id) == "NOTIFIED", MAIL_TIMEOUT_SECONDS)
    assert emails_naming(pipeline, order_id)


def test_each_function_logs_and_counts_under_its_own_service_name(pipeline: RunningPipeline) -> None:
    # Given an order that went all the way through
    status, _, body = pipeline.request("POST", "/orders", ORDER)
    assert status == 202, body
    wait_until(lambda: pipeline.order_status(body["orderId"]) == "NOTIFIED", MAIL_TIMEOUT_SECONDS)

    # Then each function's log lines and EMF metrics carry the service name the template gives
    # it, as in Lambda, though all of them run on this machine (ingest logs its order at DEBUG:
    # at INFO only its metrics show)
    log = pipeline.output.parent / "functions.log"
    services: dict[str, set[str]] = {}
    counted: set[str] = set()
    for line in log.read_text().splitlines():
        record = json.loads(line)
        if "function_name" in record:
            services.setdefault(record["function_name"], set()).add(record["service"])
        if "_aws" in record:
            counted.add(record["service"])
    own = {"IngestFunction": "ingest", "WriterFunction": "writer", "NotifierFunction": "notifier"}
    assert {"WriterFunction", "NotifierFunction"} <= set(services) <= set(own)
    assert all(names == {own[function]} for function, names in services.items()), services
    assert counted == {"ingest", "writer", "notifier"}


def test_what_works_off_the_queue_and_the_stream_runs_below_the_api(pipeline: RunningPipeline) -> None:
    # Given the running pipeline's processes: itself, moto and moto's DynamoDB, the forkserver
    # and resource tracker of its process machinery, and the function workers, the forkserver's
    processes = descendants(pipeline.process.pid)
    endpoints = {
        pid: command for pid, command in processes.items() if "orderpipe_local.moto.endpoint" in command
    }
    (dynamodb,) = [pid for pid, command in endpoints.items() if "--only-dynamodb" in command]
    (moto,) = [pid for pid in endpoints if pid != dynamodb]
    forkserver = forkserver_pid(pipeline.process.pid)
    workers = child_pids(forkserver)
    machinery = [pid for pid in processes if pid not in endpoints and pid not in workers]

    # Then the API's side (the pipeline, moto's SQS, the ingest workers) keeps the priority it was
    # started with, and the writer's, notifier's and replay's workers and moto's DynamoDB run 10 below it
    base = niceness(pipeline.process.pid)
    assert niceness(moto) == base
    assert niceness(dynamodb) == base + 10
    assert sorted(niceness(pid) for pid in machinery) == [base, base]  # forkserver, resource tracker
    # 4 ingest workers; 4 writer, 1 notifier and 2 replay workers
    by_niceness = sorted(niceness(pid) for pid in workers)
    assert by_niceness == [base] * 4 + [base + 10] * 7


def test_only_the_pipeline_holds_the_apis_port(pipeline: RunningPipeline) -> None:
    # Given the API's listening socket, as the kernel lists it
    port = int(pipeline.api_url.rsplit(":", 1)[1].split("/")[0])
    inode = listening_socket_inode(port)

    # Then the pipeline holds it and none of its workers or moto processes does: once the
    # pipeline closes it on SIGTERM, new connections are refused instead of left unanswered
    holders = [pid for pid in [pipeline.process.pid, *descendants(pipeline.process.pid)] if holds(pid, inode)]
    assert holders == [pipeline.process.pid]


def listening_socket_inode(port: int) -> str:
    # /proc/net/tcp: local address (hex ip:port) is field 2, state 0A is LISTEN, the inode field 10
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1].endswith(f":{port:04X}") and fields[3] == "0A":
            return fields[9]
    raise AssertionError(f"nothing listens on port {port}")


def holds(pid: int, inode: str) -> bool:
    """Whether the process has the socket open; its descriptors may come and go while read."""
    with contextlib.suppress(FileNotFoundError, ProcessLookupError):
        for descriptor in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(FileNotFoundError):
                if os.readlink(descriptor) == f"socket:[{inode}]":
                    return True
    return False
