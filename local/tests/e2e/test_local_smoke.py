"""`orderpipe local` comes up, takes an order over HTTP, and stops cleanly on SIGTERM."""

from __future__ import annotations

import json

import pytest

from orderpipe_local.testing import RunningPipeline, load_event

pytestmark = pytest.mark.e2e

ORDER = json.loads(load_event("ingest-post-order.json")["body"])


def test_an_order_is_accepted_and_sigterm_exits_zero(pipeline: RunningPipeline) -> None:
    # Given a running pipeline (fixture)

    # When an order is posted and an unknown route asked for
    status, headers, body = pipeline.request("POST", "/orders", ORDER)
    missing = pipeline.request("GET", "/nowhere")

    # Then the order is accepted with its id and location, the unknown route is API Gateway's 404
    assert status == 202, body
    assert body["status"] == "ACCEPTED"
    assert headers["Location"] == f"/orders/{body['orderId']}"
    assert missing[0] == 404
    assert missing[2] == {"message": "Not Found"}

    # And SIGTERM stops it with exit code 0, its state file removed
    assert pipeline.terminate() == 0, pipeline.console()
    assert "orderpipe local: stopped" in pipeline.console()
    assert not (pipeline.output.parent / "state.json").exists()
