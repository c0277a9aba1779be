"""NotifierFunction deployed with SupportEmailDetail=masked: what reaches support's mailbox."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from orderpipe.support_email import MASKED_NOTICE
from orderpipe_local.runtime.lambda_context import LocalLambdaContext
from orderpipe_local.stack.provision import Stack
from orderpipe_local.stack.template import Template, load_template
from orderpipe_local.testing import ROOT, load_event
from tests.integration.conftest import SUPPORT_EMAIL, Email, handler_of
from tests.integration.test_notifier import Handler, failed_ids, status_of, store_inserted_orders

ADA = "3f6c2a7e-1b9d-4c58-9e2f-7a1d0b4c8e51"
GRACE = "8d2e4f10-6a3b-4d7c-a5e9-2c1b0f9e8d73"
ZOE = "c41a9b27-5e8f-4a06-b3d2-91f7e6c5a048"


@pytest.fixture(scope="module")
def template() -> Template:
    """Dev's samconfig values (full), overridden as `sam deploy --parameter-overrides` would."""
    return load_template(
        ROOT / "template.yaml", overrides={"SupportEmail": SUPPORT_EMAIL, "SupportEmailDetail": "masked"}
    )


@pytest.fixture
def notifier(stack: Stack, template: Template) -> Handler:
    return handler_of(template, "NotifierFunction")


def test_a_masked_stack_mails_a_digest_without_names_addresses_or_notes(
    stack: Stack, notifier: Handler, inbox: Callable[[], list[Email]], lambda_context: LocalLambdaContext
) -> None:
    # Given
    event = load_event("notifier-stream-insert-batch.json")
    store_inserted_orders(stack, event)

    # When
    response = notifier(event, lambda_context)

    # Then
    assert failed_ids(response) == []
    ((subject, body),) = inbox()
    assert subject == "3 new orders: 65.93 USD, 32.60 EUR"
    assert MASKED_NOTICE in body
    for shown in (
        ADA,
        GRACE,
        ZOE,
        "Customer:      A. L.",
        "Email:         a***@example.com",
        "Customer:      G. H.",
        "Email:         g***@example.org",
        "Customer:      Z. M.",
        "Email:         z***@example.de",
        "Ship to:       Springfield, US",
        "Ship to:       Berlin, DE",
        "SKU MOP-001  qty 2  x 12.50 USD  = 25.00 USD",
    ):
        assert shown in body, shown
    for hidden in (
        "Ada",
        "Lovelace",
        "Grace",
        "Hopper",
        "Zoë",
        "Müller",
        "ada@",
        "grace@",
        "zoe.mueller@",
        "1 Main St",
        "12345",
        "Hauptstraße",
        "Hinterhaus",
        "10115",
        "back door",
        "Nachbarn",
        "Note",
    ):
        assert hidden not in body, hidden
        assert hidden not in subject, hidden
    for order_id in (ADA, GRACE, ZOE):
        assert status_of(stack, order_id) == "NOTIFIED"
