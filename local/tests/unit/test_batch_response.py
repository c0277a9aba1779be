"""How the local event sources read a ReportBatchItemFailures answer, as Lambda documents it."""

from __future__ import annotations

from typing import Any

import pytest

from orderpipe_local.sources.batch_response import reported_failures

IDS = ["m-1", "m-2", "m-3"]


@pytest.mark.parametrize(
    "response", [None, {}, {"batchItemFailures": None}, {"batchItemFailures": []}, {"statusCode": 200}]
)
def test_empty_answers_are_complete_successes(response: Any) -> None:
    assert reported_failures(response, IDS, source="test") == []


def test_reported_items_fail_alone() -> None:
    response = {
        "batchItemFailures": [{"itemIdentifier": "m-3"}, {"itemIdentifier": "m-1"}, {"itemIdentifier": "m-3"}]
    }
    assert reported_failures(response, IDS, source="test") == ["m-3", "m-1"]


@pytest.mark.parametrize(
    "response",
    [
        "ok",
        ["m-1"],
        {"batchItemFailures": "m-1"},
        {"batchItemFailures": [{"itemIdentifier": ""}]},
        {"batchItemFailures": [{"itemIdentifier": None}]},
        {"batchItemFailures": [{"itemIdentifier": 1}]},
        {"batchItemFailures": [{"id": "m-1"}]},
        {"batchItemFailures": ["m-1"]},
        {"batchItemFailures": [{"itemIdentifier": "m-9"}]},
    ],
)
def test_invalid_answers_fail_the_whole_batch(response: Any) -> None:
    assert reported_failures(response, IDS, source="test") is None
