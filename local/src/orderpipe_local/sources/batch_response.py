"""What Lambda makes of a batch function's answer (`FunctionResponseTypes: [ReportBatchItemFailures]`).

Shared by the SQS and DynamoDB-stream event sources.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from typing import Any

log = logging.getLogger(__name__)


def reported_failures(response: Any, known_ids: Collection[str], *, source: str) -> list[str] | None:
    """The item identifiers the function reported as failed, or None if the whole batch failed.

    As Lambda documents it: no response, an empty response, or a null or empty
    `batchItemFailures` mean complete success; an itemIdentifier that is missing, empty, null,
    not a string or names no record of the batch makes the whole batch a failure, and so does
    an answer that is not a JSON object.
    """
    if response is None:
        return []
    if not isinstance(response, dict):
        log.warning("%s: the function answered %r, not an object: the whole batch failed", source, response)
        return None
    failures = response.get("batchItemFailures")
    if failures is None:
        return []
    if not isinstance(failures, list):
        log.warning("%s: batchItemFailures is not a list: the whole batch failed", source)
        return None
    identifiers: list[str] = []
    for failure in failures:
        identifier = failure.get("itemIdentifier") if isinstance(failure, dict) else None
        if not isinstance(identifier, str) or not identifier or identifier not in known_ids:
            log.warning("%s: invalid batch item failure %r: the whole batch failed", source, failure)
            return None
        if identifier not in identifiers:
            identifiers.append(identifier)
    return identifiers
