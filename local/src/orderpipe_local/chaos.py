"""The chaos run (`make chaos`): orders through `orderpipe local` while AWS misbehaves, and a
count of what became of each one.

What goes wrong, drawn with one seed (`moto.faults`, the queue's duplicate deliveries):
- DynamoDB write throttles (PutItem, UpdateItem, TransactWriteItems: the idempotency records,
  the writer's conditional put, the notifier's marks);
- SNS Publish failures, and Publish stalls longer than the notifier's SNS timeout (the email
  goes out late, after the notifier gave up waiting for the answer);
- duplicate deliveries from OrdersQueue to the writer;
- poison messages (no order) put straight on OrdersQueue;
- one execution environment of the writer killed (SIGKILL) while orders flow.

Clients send every order with an Idempotency-Key and retry 503s, 409s and dropped connections
with it, after Retry-After or a backoff doubling from 1 s to 8 s, whichever is longer (a first
request stalled past the ingest's Timeout holds its key in progress for up to 10 s more).
OrdersQueue's visibility timeout is shortened for the run (the template's 210 s would hold the
poison messages' five receives, and the killed batch, for minutes); that is said in the output.

Once the pipeline has settled, with it still running: every order answered 202 must be stored
once (the table scanned; client orders are told apart by their customer's email), mailed in
exactly one email (the outbox), and OrdersDLQ must hold exactly the poison messages. Then the
pipeline is stopped (SIGTERM); what it keeps in its left-over file is counted too.
"""

from __future__ import annotations

import argparse
import contextlib
import heapq
import http.client
import json
import os
import random
import signal
import sys
import threading
import time
import urllib.parse
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orderpipe_local.leftovers import Leftovers, left_over_files, mailed_order_counts
from orderpipe_local.runtime.functions import environment_process_name
from orderpipe_local.testing import RunningPipeline, descendants, order_bodies, start_pipeline

_MAX_ATTEMPTS = 10
_REQUEST_TIMEOUT_SECONDS = 30.0
_RETRIED = {409, 429, 500, 502, 503, 504}


def _backoff(attempt: int) -> float:
    return float(min(2 ** (attempt - 1), 8))


@dataclass
class ChaosPlan:
    orders: int = 5000
    rate: float = 100.0  # orders a second
    write_throttles: float = 0.2
    publish_failures: float = 0.2
    publish_stalls: float = 0.05
    stall_seconds: float = 11.0  # past the notifier's SNS read timeout (5 s) and its 10 s budget
    duplicate_deliveries: float = 0.1
    poison: float = 0.01  # of the orders' count, put straight on the queue
    kill_writer: bool = True
    visibility_timeout: int = 10
    settle_timeout: float = 300.0
    seed: int = 1
    senders: int = 48

    @property
    def poison_count(self) -> int:
        return round(self.orders * self.poison)

    def pipeline_args(self) -> list[str]:
        throttle = "ProvisionedThroughputExceededException"
        return [
            *(
                f"--fault=dynamodb:{operation}={throttle}@{self.write_throttles:g}"
                for operation in ("PutItem", "UpdateItem", "TransactWriteItems")
                if self.write_throttles
            ),
            *(
                [f"--fault=sns:Publish=InternalError@{self.publish_failures:g}"]
                if self.publish_failures
                else []
            ),
            *(
                [f"--delay=sns:Publish={self.stall_seconds:g}@{self.publish_stalls:g}"]
                if self.publish_stalls
                else []
            ),
            f"--duplicate-deliveries={self.duplicate_deliveries:g}",
            f"--fault-seed={self.seed}",
            "--drain-timeout=300",
        ]


@dataclass
class Sent:
    """What the clients saw."""

    order_ids: dict[int, str] = field(default_factory=dict)  # client order -> the id of its 202
    gave_up: dict[int, str] = field(default_factory=dict)  # client order -> the last answer
    statuses: Counter[int] = field(default_factory=Counter)  # every answer, retries included
    dropped: int = 0  # connections that failed or timed out
    poison: set[str] = field(default_factory=set)  # the poison messages' bodies
    first_sent: float = 0.0
    last_first_attempt: float = 0.0
    killed: str = ""


@dataclass
class ChaosResult:
    sent: int
    accepted: int
    stored: int
    duplicate_items: int
    mailed_once: int
    mailed_twice: int
    never_mailed: int
    in_dlq: int
    poison_in_dlq: int
    poison_sent: int
    lost: int

    @property
    def clean(self) -> bool:
        dlq_is_the_poison = self.in_dlq == self.poison_in_dlq == self.poison_sent
        return (
            self.lost == 0
            and self.duplicate_items == 0
            and self.mailed_twice == 0
            and self.never_mailed == 0
            and dlq_is_the_poison
        )

    def line(self) -> str:
        return (
            f"chaos: {self.sent} sent, {self.accepted} accepted, {self.stored} stored, "
            f"{self.duplicate_items} duplicate items, {self.mailed_once} mailed once, "
            f"{self.mailed_twice} mailed twice, {self.never_mailed} never mailed, "
            f"{self.in_dlq} in OrdersDLQ, {self.lost} lost"
        )


class _Clients:
    """Threads that send the orders on schedule, and their retries when they are due."""

    def __init__(self, pipeline: RunningPipeline, plan: ChaosPlan, say: Any) -> None:
        self.pipeline, self.plan, self.say = pipeline, plan, say
        self.bodies = order_bodies(plan.orders, plan.seed)
        self.sent = Sent()
        self._due: list[tuple[float, int, int]] = []  # (when, client order or -1-poison, attempt)
        self._changed = threading.Condition()
        self._open = plan.orders + plan.poison_count
        self._local = threading.local()
        url = urllib.parse.urlsplit(pipeline.api_url)
        self._host, self._port = url.hostname or "127.0.0.1", url.port or 80
        self._sqs = pipeline.sqs()
        self._queue_url = pipeline.resource("OrdersQueue")

    def run(self) -> None:
        start = time.monotonic() + 0.5
        self.sent.first_sent = start
        poison_at = {
            round(i * self.plan.orders / max(1, self.plan.poison_count))
            for i in range(self.plan.poison_count)
        }
        with self._changed:
            for index in range(self.plan.orders):
                heapq.heappush(self._due, (start + index / self.plan.rate, index, 1))
            for number, index in enumerate(sorted(poison_at)):
                heapq.heappush(self._due, (start + index / self.plan.rate, -1 - number, 1))
        threads = [threading.Thread(target=self._send_due, daemon=True) for _ in range(self.plan.senders)]
        for thread in threads:
            thread.start()
        kill_at = start + 0.4 * self.plan.orders / self.plan.rate
        report_at = start + 5
        while any(thread.is_alive() for thread in threads):
            now = time.monotonic()
            if self.plan.kill_writer and not self.sent.killed and now >= kill_at:
                self.sent.killed = _kill_a_writer_environment(self.pipeline, random.Random(self.plan.seed))
                self.say(f"killed {self.sent.killed}")
            if now >= report_at:
                report_at += 5
                self.say(self._progress())
            time.sleep(0.1)
        self.say(self._progress())

    def _progress(self) -> str:
        statuses = ", ".join(f"{count} x {status}" for status, count in sorted(self.sent.statuses.items()))
        return f"  sent: {len(self.sent.order_ids)} accepted of {self.plan.orders}; answers {statuses}"

    def _send_due(self) -> None:
        while True:
            with self._changed:
                while True:
                    if self._open == 0:
                        self._changed.notify_all()
                        return
                    if self._due and self._due[0][0] <= time.monotonic():
                        _, index, attempt = heapq.heappop(self._due)
                        break
                    timeout = self._due[0][0] - time.monotonic() if self._due else None
                    self._changed.wait(timeout)
            retry_after = self._poison(-1 - index) if index < 0 else self._order(index, attempt)
            with self._changed:
                if retry_after is None or attempt >= _MAX_ATTEMPTS:
                    self._open -= 1
                else:
                    heapq.heappush(self._due, (time.monotonic() + retry_after, index, attempt + 1))
                self._changed.notify_all()

    def _order(self, index: int, attempt: int) -> float | None:
        """Send one order; the seconds to wait before trying again, or None when done."""
        if attempt == 1:
            self.sent.last_first_attempt = time.monotonic()
        headers = {"Content-Type": "application/json", "Idempotency-Key": f"chaos-{self.plan.seed}-{index}"}
        try:
            status, answer_headers, body = self._post(self.bodies[index], headers)
        except (OSError, http.client.HTTPException):
            self._local.connection = None
            with self._changed:
                self.sent.dropped += 1
            return _backoff(attempt)
        with self._changed:
            self.sent.statuses[status] += 1
        if status == 202:
            self.sent.order_ids[index] = json.loads(body)["orderId"]
            return None
        if status in _RETRIED:
            if attempt >= _MAX_ATTEMPTS:
                self.sent.gave_up[index] = f"{status} {body[:200]!r}"
            return max(float(answer_headers.get("retry-after", "1") or 1), _backoff(attempt))
        self.sent.gave_up[index] = f"{status} {body[:200]!r}"
        return None

    def _post(self, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        connection = getattr(self._local, "connection", None)
        if connection is None:
            connection = http.client.HTTPConnection(self._host, self._port, timeout=_REQUEST_TIMEOUT_SECONDS)
            self._local.connection = connection
        connection.request("POST", "/orders", body=body, headers=headers)
        response = connection.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()

    def _poison(self, number: int) -> float | None:
        body = f"chaos poison {self.plan.seed}-{number}: not an order"
        try:
            self._sqs.send_message(QueueUrl=self._queue_url, MessageBody=body)
        except Exception:
            return 1.0
        with self._changed:
            self.sent.poison.add(body)
        return None


def _kill_a_writer_environment(pipeline: RunningPipeline, rng: random.Random) -> str:
    name = environment_process_name("WriterFunction")
    writers = []
    for pid in descendants(pipeline.process.pid):
        try:
            if Path(f"/proc/{pid}/comm").read_text().strip() == name:
                writers.append(pid)
        except OSError:
            continue
    if not writers:
        return "no writer environment found to kill"
    pid = rng.choice(sorted(writers))
    signal_kill(pid)
    return f"a writer environment (pid {pid}, SIGKILL)"


def signal_kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def _scan(pipeline: RunningPipeline, table: str) -> list[dict[str, Any]]:
    dynamodb = pipeline.dynamodb()
    items: list[dict[str, Any]] = []
    request: dict[str, Any] = {"TableName": table}
    while True:
        page = dynamodb.scan(**request)
        items += page.get("Items", [])
        if "LastEvaluatedKey" not in page:
            return items
        request["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def _queue_depth(pipeline: RunningPipeline, logical_id: str) -> int:
    attributes = pipeline.sqs().get_queue_attributes(
        QueueUrl=pipeline.resource(logical_id),
        AttributeNames=[
            "ApproximateNumberOfMessages",
            "ApproximateNumberOfMessagesNotVisible",
            "ApproximateNumberOfMessagesDelayed",
        ],
    )["Attributes"]
    return sum(int(value) for value in attributes.values())


def _settle(pipeline: RunningPipeline, plan: ChaosPlan, sent: Sent, say: Any) -> None:
    """Until the queue is worked off, every accepted order is stored and mailed, and the outbox
    has been quiet for longer than a stalled publish takes (or `settle_timeout`)."""
    deadline = time.monotonic() + plan.settle_timeout
    quiet_for = plan.stall_seconds + 5
    accepted = set(sent.order_ids.values())
    last_mailed, quiet_since = -1, time.monotonic()
    while time.monotonic() < deadline:
        mailed = mailed_order_counts(pipeline.outbox)
        if len(mailed) != last_mailed:
            last_mailed, quiet_since = len(mailed), time.monotonic()
        queued = _queue_depth(pipeline, "OrdersQueue")
        unmailed = len(accepted - mailed.keys())
        if queued == 0 and unmailed == 0 and time.monotonic() - quiet_since >= quiet_for:
            return
        say(f"  settling: {queued} in OrdersQueue, {unmailed} accepted orders not mailed yet")
        time.sleep(5)
    say(f"  not settled within {plan.settle_timeout:.0f} s; counting as it stands")


def run_chaos(plan: ChaosPlan, workdir: Path, say: Any = print) -> ChaosResult:
    """Start a pipeline in `workdir`, run the plan against it, stop it; the counts."""
    pipeline = start_pipeline(workdir, *plan.pipeline_args())
    try:
        pipeline.sqs().set_queue_attributes(
            QueueUrl=pipeline.resource("OrdersQueue"),
            Attributes={"VisibilityTimeout": str(plan.visibility_timeout)},
        )
        # A receive takes the queue's timeout when it starts: what the poll under way (1 s long)
        # receives stays invisible for the template's 210 s, past the settle wait.
        time.sleep(2.0)
        say(
            f"chaos: {plan.orders} orders at {plan.rate:g}/s, seed {plan.seed}; "
            f"OrdersQueue's visibility timeout set to {plan.visibility_timeout} s for the run"
            " (template: 210 s)"
        )
        say("  " + " ".join(plan.pipeline_args()))
        clients = _Clients(pipeline, plan, say)
        clients.run()
        sent = clients.sent
        sending = max(1e-9, sent.last_first_attempt - sent.first_sent)
        held = plan.orders / sending if plan.orders > 1 else plan.rate
        say(
            f"  held {min(held, plan.rate):.1f} orders/s of the {plan.rate:g} asked"
            f" ({sending:.1f} s of sending)"
        )
        if sent.gave_up:
            say(
                f"  {len(sent.gave_up)} orders given up after {_MAX_ATTEMPTS} attempts,"
                f" e.g. {next(iter(sent.gave_up.values()))}"
            )
        _settle(pipeline, plan, sent, say)

        items = _scan(pipeline, pipeline.resource("OrdersTable"))
        mailed = mailed_order_counts(pipeline.outbox)
    finally:
        code = (
            pipeline.terminate(timeout=plan.settle_timeout + 120)
            if pipeline.process.poll() is None
            else pipeline.process.returncode
        )
        pipeline.stop()
    say(f"  stopped (exit {code}): " + " / ".join(_stop_lines(pipeline)))
    kept = [Leftovers.read(path) for path in left_over_files(workdir / "left-over")]
    dlq = [message["body"] for leftovers in kept for message in leftovers.messages.get("OrdersDLQ", [])]
    return _count(plan, sent, items, mailed, dlq)


def _stop_lines(pipeline: RunningPipeline) -> list[str]:
    lines = pipeline.console().splitlines()
    return [
        line.strip()
        for line in lines
        if line.startswith(("not finished", "  kept in", "orderpipe local: stopped"))
    ]


def _count(
    plan: ChaosPlan, sent: Sent, items: list[dict[str, Any]], mailed: Counter[str], dlq: list[str]
) -> ChaosResult:
    accepted = set(sent.order_ids.values())
    stored_ids = {item["orderId"]["S"] for item in items}
    by_customer = Counter(item["customer"]["M"]["email"]["S"] for item in items if "customer" in item)
    in_dlq_ids = {body_id for body in dlq if (body_id := _order_id_of(body))}
    poison_in_dlq = sum(1 for body in dlq if body in sent.poison)
    return ChaosResult(
        sent=plan.orders,
        accepted=len(accepted),
        stored=len(stored_ids),
        duplicate_items=sum(count - 1 for count in by_customer.values() if count > 1),
        mailed_once=sum(1 for order_id in accepted if mailed.get(order_id) == 1),
        mailed_twice=sum(1 for order_id in accepted if mailed.get(order_id, 0) >= 2),
        never_mailed=sum(1 for order_id in accepted & stored_ids if order_id not in mailed),
        in_dlq=len(dlq),
        poison_in_dlq=poison_in_dlq,
        poison_sent=len(sent.poison),
        lost=len(accepted - stored_ids - in_dlq_ids),
    )


def _order_id_of(body: str) -> str | None:
    try:
        content = json.loads(body)
    except ValueError:
        return None
    order_id = content.get("orderId") if isinstance(content, dict) else None
    return str(order_id) if order_id else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m orderpipe_local.chaos", description=__doc__.split("\n")[0]
    )
    defaults = ChaosPlan()
    parser.add_argument("--orders", type=int, default=defaults.orders)
    parser.add_argument("--rate", type=float, default=defaults.rate, help="orders a second")
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument(
        "--workdir", type=Path, help="where the pipeline's files go (default: a new temporary folder)"
    )
    args = parser.parse_args(argv)
    plan = ChaosPlan(orders=args.orders, rate=args.rate, seed=args.seed)
    import tempfile

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="orderpipe-chaos-"))
    workdir.mkdir(parents=True, exist_ok=True)
    result = run_chaos(plan, workdir, say=lambda line: print(line, flush=True))
    print(f"  files in {workdir}")
    print(result.line())
    return 0 if result.clean else 1


if __name__ == "__main__":
    sys.exit(main())
