"""Faults injected into a running `orderpipe local`: the pipeline rides them out, each accepted
order stored and mailed exactly once, and `orderpipe faults` changes them while it runs."""

from __future__ import annotations

import json
import re
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from orderpipe_local.testing import RunningPipeline, load_event, orderpipe_command, start_pipeline, wait_until

pytestmark = pytest.mark.e2e

ORDER: dict[str, Any] = json.loads(load_event("ingest-post-order.json")["body"])


def faults(tmp_path: Path, *arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*orderpipe_command(), "faults", *arguments, "--state-file", str(tmp_path / "state.json")],
        capture_output=True,
        text=True,
        timeout=30,
    )


def place_orders(pipeline: RunningPipeline, count: int) -> list[str]:
    order_ids = []
    for _ in range(count):
        status, _, body = pipeline.request("POST", "/orders", ORDER)
        assert status == 202, body
        order_ids.append(body["orderId"])
    return order_ids


def mail_counts(pipeline: RunningPipeline) -> Counter[str]:
    return Counter(
        found for mail in pipeline.emails() for found in set(re.findall(r"Order id:\s+(\S+)", mail.body))
    )


def injected(tmp_path: Path, spec: str) -> int:
    listed = faults(tmp_path, "list")
    assert listed.returncode == 0, listed.stderr
    found = re.search(rf"{re.escape(spec)}\D*(\d+) injected", listed.stdout)
    return int(found.group(1)) if found else 0


def test_sns_failing_half_its_publishes_then_cleared_each_order_is_mailed_once(tmp_path: Path) -> None:
    # Given a running pipeline whose SNS is made to fail half its publishes. Seed 10 draws no more
    # than 4 failures in a row in 200 calls: a stream batch (6 attempts) is never given up, which
    # is issue 11's replay to handle.
    pipeline = start_pipeline(tmp_path, "--fault-seed", "10")
    try:
        spec = "sns:Publish=InternalError@0.5"
        added = faults(tmp_path, "add", spec)
        assert added.returncode == 0, added.stderr
        assert f"{spec}  (0 injected)" in added.stdout

        # When orders arrive while the notifier's publishes fail, then SNS is cleared, then more come
        order_ids = place_orders(pipeline, 10)
        wait_until(lambda: set(order_ids) <= set(mail_counts(pipeline)), timeout=90, interval=0.5)
        assert injected(tmp_path, spec) >= 1
        cleared = faults(tmp_path, "clear")
        assert cleared.returncode == 0, cleared.stderr
        assert "no faults" in cleared.stdout
        assert f"cleared: {spec}" in cleared.stdout
        order_ids += place_orders(pipeline, 3)

        # Then each order is mailed exactly once and marked NOTIFIED
        wait_until(lambda: set(order_ids) <= set(mail_counts(pipeline)), timeout=60, interval=0.5)
        wait_until(lambda: all(pipeline.order_status(order_id) == "NOTIFIED" for order_id in order_ids))
        counts = mail_counts(pipeline)
        assert {order_id: counts[order_id] for order_id in order_ids} == dict.fromkeys(order_ids, 1)
    finally:
        exit_code = pipeline.terminate(timeout=120)
    assert exit_code == 0, pipeline.console()
    assert "NotifierDLQ 0" in pipeline.console().splitlines()[-2]


def test_orders_mailed_but_not_marked_are_marked_by_the_replay_and_never_mailed_again(tmp_path: Path) -> None:
    # Given a pipeline whose table refuses the notifier's marking (UpdateItem, TransactWriteItems)
    # from the start; the writer's PutItem and unkeyed POSTs do not use either
    pipeline = start_pipeline(
        tmp_path,
        "--parameter-overrides",
        "NotifierReplayBackoffSeconds=1",
        "--fault",
        "dynamodb:UpdateItem=InternalServerError@1",
        "--fault",
        "dynamodb:TransactWriteItems=InternalServerError@1",
    )
    try:
        # When orders are placed and mailed, and stay PLACED while the table refuses
        order_ids = place_orders(pipeline, 3)
        wait_until(lambda: set(order_ids) <= set(mail_counts(pipeline)), timeout=60, interval=0.5)
        assert {pipeline.order_status(order_id) for order_id in order_ids} == {"PLACED"}

        # And the table takes writes again, with no command typed about the orders
        cleared = faults(tmp_path, "clear")
        assert cleared.returncode == 0, cleared.stderr

        # Then the replay function marks them NOTIFIED, and none is mailed a second time
        wait_until(
            lambda: {pipeline.order_status(order_id) for order_id in order_ids} == {"NOTIFIED"},
            timeout=60,
            interval=0.5,
        )
        counts = mail_counts(pipeline)
        assert {order_id: counts[order_id] for order_id in order_ids} == dict.fromkeys(order_ids, 1)
    finally:
        exit_code = pipeline.terminate(timeout=120)

    # And nothing is left over
    console = pipeline.console()
    assert exit_code == 0, console
    assert not list((tmp_path / "left-over").glob("*.json")), console


def test_a_stream_batch_given_up_while_sns_fails_is_announced_once_sns_is_back(tmp_path: Path) -> None:
    # Given a running pipeline whose SNS refuses every publish, with a short replay backoff
    pipeline = start_pipeline(tmp_path, "--parameter-overrides", "NotifierReplayBackoffSeconds=2")
    try:
        spec = "sns:Publish=InternalError@1.0"
        assert faults(tmp_path, "add", spec).returncode == 0

        # When orders arrive, and their stream batch is given up (its retries spent) and handed to
        # the replay function, whose first tries fail too
        order_ids = place_orders(pipeline, 5)
        wait_until(lambda: "Replay not finished" in pipeline.function_logs(), timeout=60, interval=0.5)
        assert mail_counts(pipeline) == Counter()

        # And SNS is back: `orderpipe faults clear`, no other command
        assert faults(tmp_path, "clear").returncode == 0

        # Then each order is announced in exactly one email, and NOTIFIED
        wait_until(lambda: set(order_ids) <= set(mail_counts(pipeline)), timeout=60, interval=0.5)
        wait_until(lambda: all(pipeline.order_status(order_id) == "NOTIFIED" for order_id in order_ids))
        counts = mail_counts(pipeline)
        assert {order_id: counts[order_id] for order_id in order_ids} == dict.fromkeys(order_ids, 1)
    finally:
        exit_code = pipeline.terminate(timeout=120)
    last = pipeline.console().splitlines()[-2]
    assert exit_code == 0, pipeline.console()
    assert "NotifierDLQ 0" in last
    assert "queued 0" in last


def test_a_bad_fault_spec_is_refused_before_anything_starts(tmp_path: Path) -> None:
    started = subprocess.run(
        [
            *orderpipe_command(),
            "local",
            "--fault",
            "sns:Publish=Nope@0.5",
            "--state-file",
            str(tmp_path / "s"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert started.returncode == 2
    assert "sns answers no error Nope" in started.stderr
    assert not (tmp_path / "s").exists()
