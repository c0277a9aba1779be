"""`orderpipe local` takes SupportEmailDetail like any template parameter: samconfig's [default]
(full), or `--parameter-overrides`; the outbox holds the email as support staff would get it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from orderpipe_local.testing import Email, RunningPipeline, load_event, start_pipeline, wait_until

pytestmark = pytest.mark.e2e

ORDER: dict[str, Any] = json.loads(load_event("ingest-post-order.json")["body"])
MAIL_TIMEOUT_SECONDS = 20.0

SHOWN_IN_BOTH = (
    "Items (2):",
    "1. Microfiber mop",
    "SKU MOP-001  qty 2  x 12.50 USD  = 25.00 USD",
    "Total:         49.99 USD",
)
CUSTOMER_DATA = ("Ada Lovelace", "ada@example.com", "1 Main St", "12345", "Leave at the back door")


def mailed(pipeline: RunningPipeline, order_id: str) -> Email:
    emails: list[Email] = wait_until(
        lambda: [mail for mail in pipeline.emails() if order_id in mail.body], timeout=MAIL_TIMEOUT_SECONDS
    )
    (email,) = emails
    return email


@pytest.mark.parametrize(
    ("arguments", "detail", "shown", "hidden"),
    [
        (
            ("--parameter-overrides", "SupportEmailDetail=masked"),
            "masked",
            ("Customer:      A. L.", "Email:         a***@example.com", "Ship to:       Springfield, US"),
            (*CUSTOMER_DATA, "Ada", "Lovelace", "Note:"),
        ),
        ((), "full", (*CUSTOMER_DATA, "Note:"), ("Customer details are masked", "***")),
    ],
    ids=["override masked", "samconfig default full"],
)
def test_the_outbox_email_shows_what_support_email_detail_allows(
    tmp_path: Path, arguments: tuple[str, ...], detail: str, shown: tuple[str, ...], hidden: tuple[str, ...]
) -> None:
    # Given a pipeline with samconfig's [default] parameters, or an override of SupportEmailDetail
    pipeline = start_pipeline(tmp_path, *arguments)
    try:
        # When an order is placed
        status, _, body = pipeline.request("POST", "/orders", ORDER)
        assert status == 202, body
        email = mailed(pipeline, body["orderId"])

        # Then the .eml in the outbox shows what the level allows, the subject no more than the body
        assert f"SupportEmailDetail={detail}" in pipeline.console()
        assert email.subject == f"New order {body['orderId']}: 49.99 USD"
        for text in (*SHOWN_IN_BOTH, *shown):
            assert text in email.body, text
        for text in hidden:
            assert text not in email.body, text
        assert pipeline.terminate() == 0, pipeline.console()
    finally:
        pipeline.stop()
