"""The functions' execution environments under `orderpipe local`, killed from outside: replaced
without a request failing, or, when none can be started, 503s and a stop that names the function.
Never an order accepted that is not stored."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from orderpipe_local.testing import (
    RunningPipeline,
    alive,
    child_pids,
    descendants,
    forkserver_pid,
    http_request,
    load_event,
    niceness,
    start_pipeline,
    wait_until,
)

pytestmark = pytest.mark.e2e

ORDER: dict[str, Any] = json.loads(load_event("ingest-post-order.json")["body"])
# Long enough for a request that waits for environments forked by a forkserver being restarted.
REQUEST_TIMEOUT_SECONDS = 60.0


@pytest.fixture
def pipeline(tmp_path: Path) -> Iterator[RunningPipeline]:
    running = start_pipeline(tmp_path, "--unavailable-timeout", "3")
    yield running
    running.stop()


def post_order(pipeline: RunningPipeline) -> tuple[int, dict[str, str], Any]:
    return http_request(pipeline.api_url + "/orders", "POST", ORDER, timeout=REQUEST_TIMEOUT_SECONDS)


def environments(pipeline: RunningPipeline) -> dict[int, int]:
    """The pipeline's function workers (the forkserver's children), with their niceness."""
    niceness_of = {}
    for pid in child_pids(forkserver_pid(pipeline.process.pid)):
        try:
            niceness_of[pid] = niceness(pid)
        except OSError:  # gone meanwhile
            continue
    return niceness_of


def ingest_environments(pipeline: RunningPipeline) -> set[int]:
    """The API's workers: those at the pipeline's own niceness (the others run 10 below it)."""
    base = niceness(pipeline.process.pid)
    return {pid for pid, nice in environments(pipeline).items() if nice == base}


def stored(pipeline: RunningPipeline, order_ids: list[str]) -> bool:
    """Every order stored (PLACED, or NOTIFIED once mailed)."""
    return all(pipeline.order_status(order_id) in ("PLACED", "NOTIFIED") for order_id in order_ids)


def status_lines(pipeline: RunningPipeline) -> list[str]:
    return [line for line in pipeline.console().splitlines() if line.startswith("accepted ")]


def test_an_environment_killed_while_idle_is_replaced_and_no_request_fails(pipeline: RunningPipeline) -> None:
    # Given the running pipeline, its four ingest environments idle
    first_order = post_order(pipeline)
    assert first_order[0] == 202
    killed = min(ingest_environments(pipeline))

    # When one of them is killed
    signal_kill(killed)

    # Then a new one takes its place before any request needs it, and every order is taken
    wait_until(lambda: any("ingest 4/4 (1 replaced)" in line for line in status_lines(pipeline)), timeout=30)
    assert not alive(killed)
    answers = [post_order(pipeline) for _ in range(12)]
    assert [status for status, _, _ in answers] == [202] * 12
    order_ids = [first_order[2]["orderId"], *(body["orderId"] for _, _, body in answers)]
    wait_until(lambda: stored(pipeline, order_ids), timeout=30)
    assert f"an idle execution environment (pid {killed}) ended" in pipeline.console()


def test_a_pools_processes_and_the_forkserver_killed_are_all_replaced_and_every_order_stored(
    pipeline: RunningPipeline,
) -> None:
    # Given the running pipeline, taking orders all along; a batch killed with its worker comes
    # back after the queue's visibility timeout, 2 s here
    pipeline.sqs().set_queue_attributes(
        QueueUrl=pipeline.resource("OrdersQueue"), Attributes={"VisibilityTimeout": "2"}
    )
    time.sleep(1.5)  # a receive already waiting applies the old one
    answers: list[tuple[int, Any]] = []
    posting = threading.Event()
    posting.set()

    def post_all_along() -> None:
        while posting.is_set():
            status, _, body = post_order(pipeline)
            answers.append((status, body))
            time.sleep(0.05)

    poster = threading.Thread(target=post_all_along)
    poster.start()
    wait_until(lambda: len(answers) >= 3)

    # When the forkserver is killed, and with it every worker of the writer and the notifier
    base = niceness(pipeline.process.pid)
    background = [pid for pid, nice in environments(pipeline).items() if nice == base + 10]
    assert len(background) == 7  # 4 writer workers, 1 notifier worker, 2 replay workers
    signal_kill(forkserver_pid(pipeline.process.pid), *background)
    wait_until(lambda: "writer 4/4 (4 replaced)" in status_lines(pipeline)[-1], timeout=60)
    taken = len(answers)
    wait_until(lambda: len(answers) >= taken + 10, timeout=60)
    posting.clear()
    poster.join(REQUEST_TIMEOUT_SECONDS)

    # Then every environment came back, forked by a new forkserver (the ingest ones retired when
    # theirs went away), no request failed, and every order accepted is stored and mailed
    assert [status for status, _ in answers] == [202] * len(answers)
    last = status_lines(pipeline)[-1]
    assert "functions ingest 4/4" in last, last
    assert "writer 4/4" in last, last
    assert "notifier 1/1" in last, last
    assert "replay 2/2" in last, last
    order_ids = [body["orderId"] for _, body in answers]
    wait_until(lambda: stored(pipeline, order_ids), timeout=60)
    wait_until(lambda: all(pipeline.order_status(order) == "NOTIFIED" for order in order_ids), timeout=60)
    assert pipeline.process.poll() is None
    assert not set(background) & set(environments(pipeline))


def test_a_function_no_environment_can_be_started_for_answers_503_then_stops_the_pipeline(
    pipeline: RunningPipeline,
) -> None:
    # Given the running pipeline, and something that kills every ingest environment as it starts
    killing = threading.Event()
    killing.set()

    def kill_ingest_environments() -> None:
        while killing.is_set() and pipeline.process.poll() is None:
            # (no forkserver at this instant, or the pipeline gone)
            with contextlib.suppress(AssertionError, OSError):
                signal_kill(*ingest_environments(pipeline))
            time.sleep(0.01)

    killer = threading.Thread(target=kill_ingest_environments)
    killer.start()
    try:
        # When orders are posted
        wait_until(
            lambda: any("ingest 0/4 unavailable" in line for line in status_lines(pipeline)), timeout=30
        )
        status, headers, body = post_order(pipeline)

        # Then they are refused with a 503 to retry later, not accepted
        assert (status, body) == (503, {"message": "Service Unavailable"})
        assert headers["Retry-After"] == "5"

        # And once the function stayed unavailable for --unavailable-timeout, the pipeline stops
        # with an error naming it, and exits 1
        assert pipeline.process.wait(60) == 1
    finally:
        killing.clear()
        killer.join(10)
    console = pipeline.console()
    assert "IngestFunction cannot run: none of its execution environments could be started" in console
    assert "IngestFunction is unavailable" in console
    assert "accepted 0 " in status_lines(pipeline)[-1]


def test_no_process_of_the_pipeline_outlives_it_when_it_is_killed(pipeline: RunningPipeline) -> None:
    # Given the running pipeline and all its processes: moto's, the forkserver and resource
    # tracker, the workers
    assert post_order(pipeline)[0] == 202
    processes = set(descendants(pipeline.process.pid))
    assert len(environments(pipeline)) == 11  # ingest 4, writer 4, notifier 1, replay 2

    # When it is killed, with no chance to stop anything
    pipeline.process.kill()
    pipeline.process.wait()

    # Then every one of them goes too: the workers see their pipes close, the forkserver and
    # moto theirs
    wait_until(lambda: not any(alive(pid) for pid in processes), timeout=30)


def signal_kill(*pids: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
