"""What a stop keeps: not the replay's work, which points into a stream and table about to go."""

from __future__ import annotations

import json

import pytest

from orderpipe.aws.notifier_retry_queue import PendingOrders, UnmarkedOrders
from orderpipe_local.leftovers import is_replay_work
from orderpipe_local.testing import load_event


def test_a_stream_batch_failure_record_is_replay_work() -> None:
    body = load_event("replay-sqs-stream-batch-given-up.json")["Records"][0]["body"]

    assert is_replay_work(body)


def test_orders_handed_over_to_be_marked_or_announced_are_replay_work() -> None:
    order_ids = ["3f6c2a7e-1b9d-4c58-9e2f-7a1d0b4c8e51"]

    assert is_replay_work(UnmarkedOrders(order_ids=order_ids).to_message())
    assert is_replay_work(PendingOrders(order_ids=order_ids).to_message())


@pytest.mark.parametrize(
    "body",
    [
        json.loads(load_event("ingest-post-order.json")["body"]) | {"orderId": "x"},
        {"kind": "SomethingElse"},
        [1, 2],
        "not json at all",
    ],
)
def test_orders_and_anything_else_are_kept(body: object) -> None:
    text = body if isinstance(body, str) else json.dumps(body)

    assert not is_replay_work(text)
