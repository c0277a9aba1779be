"""SupportEmailDetail: what a masked and a full support email show, read as support staff read them."""

from __future__ import annotations

import pytest

from orderpipe.support_email import (
    MASKED_NOTICE,
    SupportEmailDetail,
    initials,
    masked_email,
    render_support_emails,
)
from tests.unit.test_support_email import assert_inert, assert_subject_rules, make_order, order_id

FULL, MASKED = SupportEmailDetail.FULL, SupportEmailDetail.MASKED

# What the masked email must never show of make_order()'s customer, address and note.
HIDDEN = (
    "Ada",
    "Lovelace",
    "ada@",
    "1 Main St",
    "Apt 4",
    "12345",
    "IL",
    "Leave at the back door",
    "The dog is friendly",
    "Note",
)

# --- initials --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("Ada Lovelace", "A. L."),
        ("Ada King Lovelace", "A. K. L."),
        ("Jean-Luc Picard", "J.-L. P."),
        ("  Ada   Lovelace  ", "A. L."),
        ("Cher", "C."),
        ("ada lovelace", "a. l."),
        ("Zoë Łukasiewicz", "Z. Ł."),
        ("Élodie Ørsted", "É. Ø."),
        ("E\u0301lodie", "E\u0301."),  # a decomposed É keeps its accent
        ("山田太郎", "山."),
        ("مريم الخوري", "\u0645. \u0627."),
        ("Ольга Петрова", "\u041e. \u041f."),
        ("\u200bAda \u202eLovelace", "A. L."),  # invisible characters are not initials
        ("'Ada' (Lovelace)", "A. L."),
        ("Ada -", "A."),
        ("\u200b", "?"),
        ("", "?"),
    ],
)
def test_initials_take_the_first_visible_character_of_each_part_of_the_name(name: str, expected: str) -> None:
    assert initials(name) == expected


# --- masked email ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("ada@example.com", "a***@example.com"),
        ("ada.lovelace+orders@mail.example.co.uk", "a***@mail.example.co.uk"),
        ("abc@example.com", "a***@example.com"),
        ("ab@example.com", "***@example.com"),  # the first of two characters gives half away
        ("a@example.com", "***@example.com"),
        ("josé@exämple.com", "j***@exämple.com"),
        ("_ada@example.com", "a***@example.com"),
        ("not-an-address", "***"),
        ("", "***"),
    ],
)
def test_masked_email_keeps_the_first_character_and_the_domain(address: str, expected: str) -> None:
    assert masked_email(address) == expected


# --- the emails, as support staff read them -------------------------------------------------


def test_a_masked_single_order_email_shows_what_support_needs_and_nothing_personal() -> None:
    # Given
    order = make_order()

    # When
    (email,) = render_support_emails([order], detail=MASKED)

    # Then
    assert email.subject == "New order 3f6c2a7e-1b9d-4c58-9e2f-7a1d0b4c8e51: 44.99 USD"
    assert email.body == (
        "A new order was placed: 44.99 USD.\n"
        "Customer text appears as sent; invisible or control characters are shown as <U+XXXX>.\n"
        f"{MASKED_NOTICE}\n"
        "\n"
        "  Order id:      3f6c2a7e-1b9d-4c58-9e2f-7a1d0b4c8e51\n"
        "  Placed:        2024-05-01 12:00:03 UTC\n"
        "  Customer:      A. L.\n"
        "  Email:         a***@example.com\n"
        "  Items (2):\n"
        "      1. Microfiber mop\n"
        "         SKU MOP-001  qty 2  x 12.50 USD  = 25.00 USD\n"
        "      2. Bucket with wringer\n"
        "         SKU BKT-010  qty 1  x 19.99 USD  = 19.99 USD\n"
        "  Total:         44.99 USD\n"
        "  Ship to:       Springfield, US\n"
    )
    for hidden in HIDDEN:
        assert hidden not in email.body, hidden
        assert hidden not in email.subject, hidden
    assert_inert(email)


def test_a_full_single_order_email_shows_the_whole_order() -> None:
    # Given
    order = make_order()

    # When
    (email,) = render_support_emails([order], detail=FULL)

    # Then
    assert email.subject == "New order 3f6c2a7e-1b9d-4c58-9e2f-7a1d0b4c8e51: 44.99 USD"
    assert email.body == (
        "A new order was placed: 44.99 USD.\n"
        "Customer text appears as sent; invisible or control characters are shown as <U+XXXX>.\n"
        "\n"
        "  Order id:      3f6c2a7e-1b9d-4c58-9e2f-7a1d0b4c8e51\n"
        "  Placed:        2024-05-01 12:00:03 UTC\n"
        "  Customer:      Ada Lovelace\n"
        "  Email:         ada@example.com\n"
        "  Items (2):\n"
        "      1. Microfiber mop\n"
        "         SKU MOP-001  qty 2  x 12.50 USD  = 25.00 USD\n"
        "      2. Bucket with wringer\n"
        "         SKU BKT-010  qty 1  x 19.99 USD  = 19.99 USD\n"
        "  Total:         44.99 USD\n"
        "  Ship to:       1 Main St\n"
        "                 Apt 4\n"
        "                 12345 Springfield\n"
        "                 IL\n"
        "                 US\n"
        "  Note:\n"
        "    | Leave at the back door.\n"
        "    | The dog is friendly.\n"
    )
    assert MASKED_NOTICE not in email.body
    assert_inert(email)


def test_a_masked_digest_masks_every_order_and_keeps_ids_items_and_totals() -> None:
    # Given
    orders = [
        make_order(order_id(1)),
        make_order(
            order_id(2),
            currency="EUR",
            customer={"name": "Grace Brewster Hopper", "email": "gh@navy.example.mil"},
            shippingAddress={
                "line1": "7 Harbour Rd",
                "city": "Arlington",
                "postalCode": "22201",
                "country": "US",
            },
        ),
        make_order(order_id(3), shippingAddress=None, note=None),
    ]

    # When
    (digest,) = render_support_emails(orders, detail=MASKED)

    # Then
    assert digest.subject == "3 new orders: 89.98 USD, 44.99 EUR"
    assert digest.subject == render_support_emails(orders, detail=FULL)[0].subject
    body = digest.body
    assert body.count(MASKED_NOTICE) == 1
    for order in orders:
        assert body.count(order.order_id) == 2  # in the index and in its block
    assert body.count("Customer:      A. L.") == 2
    assert body.count("Email:         a***@example.com") == 2
    assert "Customer:      G. B. H." in body
    assert "Email:         ***@navy.example.mil" in body
    assert body.count("Ship to:       Springfield, US") == 1  # the third order has no address
    assert "Ship to:       Arlington, US" in body
    assert body.count("SKU MOP-001  qty 2  x 12.50 EUR  = 25.00 EUR") == 1
    assert "89.98 USD  (2 orders)" in body
    for hidden in (*HIDDEN, "Grace", "Hopper", "gh@", "7 Harbour Rd", "22201"):
        assert hidden not in body, hidden
    assert_inert(digest)
    assert_subject_rules(digest.subject)


def test_a_masked_email_escapes_hostile_city_and_initials() -> None:
    # Given an image past the API's validation: a name and a city that try to forge lines
    order = make_order()
    address = order.shipping_address
    assert address is not None
    hostile = order.model_copy(
        update={
            "customer": order.customer.model_copy(update={"name": "\u202eEve\r\nSubject: x"}),
            "shipping_address": address.model_copy(update={"city": "Springfield\r\nTotal: 0.00 USD"}),
        }
    )

    # When
    (email,) = render_support_emails([hostile], detail=MASKED)

    # Then
    assert "  Customer:      E. S. x." in email.body
    assert "  Ship to:       Springfield<U+000D><U+000A>Total: 0.00 USD, US" in email.body
    assert_inert(email)
