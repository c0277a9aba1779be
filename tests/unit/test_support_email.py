"""The support email: single order vs digest, every field, hostile customer text, subject rules, size."""

from __future__ import annotations

import itertools
import random
import re
import unicodedata
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from orderpipe.models import Order
from orderpipe.support_email import (
    BODY_BUDGET_BYTES,
    SEPARATOR,
    SNS_MESSAGE_LIMIT_BYTES,
    SupportEmail,
    SupportEmailDetail,
    as_text,
    render_support_emails,
)

FULL = SupportEmailDetail.FULL
PLACED = datetime(2024, 5, 1, 12, 0, 3, 125000, tzinfo=UTC)


def make_order(order_id: str = "3f6c2a7e-1b9d-4c58-9e2f-7a1d0b4c8e51", **fields: Any) -> Order:
    data: dict[str, Any] = {
        "orderId": order_id,
        "createdAt": PLACED,
        "customer": {"name": "Ada Lovelace", "email": "ada@example.com"},
        "items": [
            {"sku": "MOP-001", "name": "Microfiber mop", "quantity": 2, "unitPrice": "12.50"},
            {"sku": "BKT-010", "name": "Bucket with wringer", "quantity": 1, "unitPrice": "19.99"},
        ],
        "currency": "USD",
        "shippingAddress": {
            "line1": "1 Main St",
            "line2": "Apt 4",
            "city": "Springfield",
            "region": "IL",
            "postalCode": "12345",
            "country": "US",
        },
        "note": "Leave at the back door.\nThe dog is friendly.",
    }
    data.update(fields)
    return Order.model_validate(data)


def unvalidated(order: Order, *, name: str | None = None, note: str | None = None, **fields: Any) -> Order:
    """An order as a stream image could carry it, past the API's validation (defence in depth)."""
    update: dict[str, Any] = dict(fields)
    if name is not None:
        update["customer"] = order.customer.model_copy(update={"name": name})
    if note is not None:
        update["note"] = note
    return order.model_copy(update=update)


def order_id(number: int) -> str:
    return f"00000000-0000-4000-8000-{number:012d}"


SINGLE_SUBJECT = re.compile(r"^New order [A-Za-z0-9-]{1,36}: \d+\.\d{2} [A-Z]{3}$")
AMOUNT = r"\d+\.\d{2} [A-Z]{3}"
DIGEST_SUBJECT = re.compile(
    rf"^\d+ new orders?( \(part \d+ of \d+\))?(: {AMOUNT}(, {AMOUNT})*| in \d+ currencies)$"
)
# Lines of our own that start at the left margin; customer text never does.
OUR_MARGIN_LINES = re.compile(
    r"^(|=+|Order \d+ of \d+|Totals:|Orders:|Orders in this part:|Part \d+ of \d+: orders \d+ to \d+ of \d+\."
    r"|A new order was placed: \d+\.\d{2} [A-Z]{3}\."
    r"|\d+ new orders? in this batch, placed (at|from) [0-9: -]+UTC( to [0-9: -]+UTC)?\."
    r"|Customer text appears as sent; invisible or control characters are shown as <U\+XXXX>\."
    r"|Customer details are masked: initials, email, city and country only\.)$"
)
INVISIBLE = {"Cc", "Cf", "Cs", "Zl", "Zp"}


def assert_inert(email: SupportEmail) -> None:
    """Every left-margin line is ours; nothing invisible or line-breaking is left in the body."""
    for line in email.body.split("\n"):
        if not line.startswith(" "):
            assert OUR_MARGIN_LINES.match(line), f"unexpected line at the margin: {line!r}"
    leftovers = [c for c in email.body if c != "\n" and unicodedata.category(c) in INVISIBLE]
    assert leftovers == []
    email.body.encode("utf-8")  # no lone surrogates


def assert_subject_rules(subject: str) -> None:
    assert subject.isascii()
    assert all(" " <= c <= "~" for c in subject), subject
    assert len(subject) < 100
    assert SINGLE_SUBJECT.match(subject) or DIGEST_SUBJECT.match(subject), subject


# --- single order and digest ------------------------------------------------------------------


def test_one_order_gets_a_single_order_email_with_every_field() -> None:
    # Given
    order = make_order()

    # When
    emails = render_support_emails([order], detail=FULL)

    # Then
    assert len(emails) == 1
    email = emails[0]
    assert email.subject == "New order 3f6c2a7e-1b9d-4c58-9e2f-7a1d0b4c8e51: 44.99 USD"
    assert email.order_ids == (order.order_id,)
    body = email.body
    for expected in (
        "Order id:      3f6c2a7e-1b9d-4c58-9e2f-7a1d0b4c8e51",
        "Placed:        2024-05-01 12:00:03 UTC",
        "Customer:      Ada Lovelace",
        "Email:         ada@example.com",
        "Items (2):",
        "1. Microfiber mop",
        "SKU MOP-001  qty 2  x 12.50 USD  = 25.00 USD",
        "2. Bucket with wringer",
        "SKU BKT-010  qty 1  x 19.99 USD  = 19.99 USD",
        "Total:         44.99 USD",
        "Ship to:       1 Main St",
        "Apt 4",
        "12345 Springfield",
        "IL",
        "US",
        "| Leave at the back door.",
        "| The dog is friendly.",
    ):
        assert expected in body, expected
    assert SEPARATOR not in body
    assert_inert(email)


def test_time_is_shown_in_utc_whatever_the_offset_it_carries() -> None:
    # Given
    order = make_order(createdAt="2024-05-01T16:00:03.500+02:00")

    # When
    body = render_support_emails([order], detail=FULL)[0].body

    # Then
    assert "Placed:        2024-05-01 14:00:03 UTC" in body


def test_absent_address_and_note_leave_no_empty_fields() -> None:
    # Given
    order = make_order(shippingAddress=None, note=None)

    # When
    body = render_support_emails([order], detail=FULL)[0].body

    # Then
    assert "Ship to" not in body
    assert "Note" not in body
    assert "Total:         44.99 USD" in body


def test_several_orders_get_one_digest_listing_every_order_with_totals_per_currency() -> None:
    # Given
    orders = [
        make_order(order_id(1)),
        make_order(order_id(2), currency="EUR", note=None),
        make_order(
            order_id(3), items=[{"sku": "SPR-500", "name": "Spray", "quantity": 6, "unitPrice": "3.49"}]
        ),
    ]

    # When
    emails = render_support_emails(orders, detail=FULL)

    # Then
    assert len(emails) == 1
    digest = emails[0]
    assert digest.subject == "3 new orders: 65.93 USD, 44.99 EUR"
    assert digest.order_ids == tuple(order.order_id for order in orders)
    assert "3 new orders in this batch, placed at 2024-05-01 12:00:03 UTC." in digest.body
    assert "65.93 USD  (2 orders)" in digest.body
    assert "44.99 EUR  (1 order)" in digest.body
    for number, order in enumerate(orders, start=1):
        assert f"Order {number} of 3" in digest.body
        assert digest.body.count(order.order_id) == 2  # in the index and in its block
    assert digest.body.count("SKU SPR-500  qty 6  x 3.49 USD  = 20.94 USD") == 1
    assert sum(1 for line in digest.body.split("\n") if line == SEPARATOR) == 2 * len(orders)
    assert_inert(digest)


def test_no_orders_no_email() -> None:
    assert render_support_emails([], detail=FULL) == []


# --- hostile customer text --------------------------------------------------------------------

HOSTILE_NOTES = {
    "crlf and header lines": "ok\r\nSubject: You won\r\nBcc: all@example.com\r\n\r\nContent-Type: text/html",
    "fake separator and order": "fine\n"
    + "=" * 60
    + "\nOrder 2 of 2\n"
    + "=" * 60
    + "\n  Total:    0.01 USD",
    "lone carriage returns": "first\rTotal: 0.00 USD\rlast",
    "mime boundary": "--boundary42\nContent-Transfer-Encoding: base64",
    "html and script": "<script>alert('x')</script><b>bold</b> <a href='http://e.x'>pay</a>",
}


@pytest.mark.parametrize("note", HOSTILE_NOTES.values(), ids=HOSTILE_NOTES.keys())
def test_hostile_note_lines_are_quoted_and_shown_as_text(note: str) -> None:
    # Given
    order = make_order(note=note)

    # When
    email = render_support_emails([order, make_order(order_id(2))], detail=FULL)[0]

    # Then every line of the note is quoted, none starts at the margin
    note_lines = note.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    for line in note_lines:
        assert f"    | {line}".rstrip() in email.body.split("\n")
    assert sum(1 for line in email.body.split("\n") if line == SEPARATOR) == 4  # 2 orders, nothing forged
    assert_inert(email)


HOSTILE_NAMES = {
    "bidi override": "Ada \u202eecilA\u202c Lovelace",
    "bidi isolates": "\u2066Bob\u2069 \u2067Mallory\u2069 \u2068x\u2069",
    "zero width": "Ad\u200ba\u200c Lov\u200delace\ufeff\u2060",
    "crlf header": "Eve\r\nSubject: reset your password",
    "line separators": "Eve\u2028Total: 0.00 USD\u2029\x85",
    "escape sequences": "Eve\x1b[31mRED\x1b[0m\x07\t\x00",
    "tag characters": "Eve\U000e0041\U000e0042",
    "zalgo": "Z" + "\u0301" * 20 + "algo",
    "lone surrogate": "Eve\ud800",
}


@pytest.mark.parametrize("name", HOSTILE_NAMES.values(), ids=HOSTILE_NAMES.keys())
def test_hostile_customer_name_is_escaped_and_stays_on_its_line(name: str) -> None:
    # Given an image carrying characters the API would refuse or that are invisible
    order = unvalidated(make_order(), name=name)

    # When
    email = render_support_emails([order], detail=FULL)[0]

    # Then
    (customer_line,) = [line for line in email.body.split("\n") if line.startswith("  Customer:")]
    assert customer_line == "  Customer:      " + as_text(name)
    assert "<U+" in customer_line
    assert_inert(email)
    assert_subject_rules(email.subject)


def test_escaping_keeps_ordinary_unicode_and_html_as_they_are() -> None:
    # Given
    name = "Zoë Müller-Łukasiewicz 山田太郎 مريم <b>&amp;</b> 👩‍💻"[:200]

    # When
    shown = as_text(name)

    # Then letters of every script are kept; only the zero-width joiner of the emoji is shown
    assert shown == name.replace("\u200d", "<U+200D>")


def test_bidi_override_in_an_item_name_cannot_reorder_the_amounts() -> None:
    # Given
    order = unvalidated(
        make_order(),
        items=[
            make_order().items[0].model_copy(update={"name": "Mop \u202e0001 x 00.0\u202c"}),
        ],
    )

    # When
    body = render_support_emails([order], detail=FULL)[0].body

    # Then the override is visible and the amounts are on a line of their own
    assert "1. Mop <U+202E>0001 x 00.0<U+202C>" in body
    assert "SKU MOP-001  qty 2  x 12.50 USD  = 25.00 USD" in body


def test_longest_names_are_shown_whole_on_one_line() -> None:
    # Given the longest names the API accepts
    long_name = ("Wolfeschlegelsteinhausenbergerdorff " * 6)[:200].strip()
    order = make_order(
        customer={"name": long_name, "email": "w@example.com"},
        items=[{"sku": "X-1", "name": long_name, "quantity": 1, "unitPrice": "1.00"}],
    )

    # When
    email = render_support_emails([order], detail=FULL)[0]

    # Then
    lines = email.body.split("\n")
    assert "  Customer:      " + long_name in lines
    assert "      1. " + long_name in lines
    assert len(email.subject) < 100
    assert_inert(email)


def test_escaped_hostile_text_longer_than_a_line_continues_on_marked_lines() -> None:
    # Given a 200-character name that escapes to 1,600 characters
    order = unvalidated(make_order(), name="\u200b" * 200)

    # When
    lines = render_support_emails([order], detail=FULL)[0].body.split("\n")

    # Then
    start = next(i for i, line in enumerate(lines) if line.startswith("  Customer:"))
    continued = lines[start + 1 : start + 8]
    assert all(line.startswith(" " * 17 + "... <U+200B>") for line in continued)
    assert "".join(lines[start : start + 8]).count("<U+200B>") == 200


# --- subject rules ----------------------------------------------------------------------------

HOSTILE_TEXT = [
    *HOSTILE_NAMES.values(),
    *HOSTILE_NOTES.values(),
    "Re: [URGENT] =?utf-8?B?SGVsbG8=?= ",
    "ÄÖÜ ß € ☃ 💸",
    "x" * 200,
]


def random_text(rng: random.Random) -> str:
    if rng.random() < 0.5:
        return rng.choice(HOSTILE_TEXT)
    alphabet = [chr(rng.randrange(0x20, 0x3000)) for _ in range(20)] + ["\r", "\n", "\u202e", "\x00"]
    return "".join(rng.choice(alphabet) for _ in range(rng.randrange(1, 200)))


def random_order(rng: random.Random, number: int) -> Order:
    currency = rng.choice(
        ["USD", "EUR", "GBP", "JPY", "CHF", "".join(rng.choices("ABCDEFGHIJKLMNOPQRSTUVWXYZ", k=3))]
    )
    items = [
        {
            "sku": "SKU-1",
            "name": "item",
            "quantity": rng.randrange(1, 1001),
            "unitPrice": str(Decimal(rng.randrange(0, 100_000_001)) / 100),
        }
        for _ in range(rng.randrange(1, 6))
    ]
    order = make_order(order_id(number), currency=currency, items=items)
    hostile_items = [item.model_copy(update={"name": random_text(rng)}) for item in order.items]
    hostile = unvalidated(order, name=random_text(rng), note=random_text(rng), items=hostile_items)
    if rng.random() < 0.1:  # an id that is not a uuid: never trusted in a subject either
        hostile = hostile.model_copy(update={"order_id": random_text(rng)})
    return hostile


@pytest.mark.parametrize("detail", list(SupportEmailDetail))
def test_subject_rules_hold_for_many_random_and_hostile_batches(detail: SupportEmailDetail) -> None:
    # Given
    rng = random.Random(20240501)
    batches = [
        [random_order(rng, n * 100 + i) for i in range(rng.choice([1, 1, 2, 3, 7, 30]))] for n in range(150)
    ]

    for batch in batches:
        # When
        emails = render_support_emails(batch, detail=detail)

        # Then
        assert sum(len(email.order_ids) for email in emails) == len(batch)
        for email in emails:
            assert_subject_rules(email.subject)
            assert_inert(email)


def test_subject_with_many_currencies_falls_back_to_a_count() -> None:
    # Given
    currencies = ["USD", "EUR", "GBP", "JPY", "CHF", "SEK", "NOK", "DKK", "PLN", "CZK"]
    orders = [make_order(order_id(n), currency=currency) for n, currency in enumerate(currencies)]

    # When
    (email,) = render_support_emails(orders, detail=FULL)

    # Then
    assert email.subject == "10 new orders in 10 currencies"
    assert_subject_rules(email.subject)


def test_largest_possible_totals_still_fit_the_subject() -> None:
    # Given the biggest total the API allows: 100 items x 1000 x 1,000,000.00
    item = {"sku": "GOLD-1", "name": "Gold", "quantity": 1000, "unitPrice": "1000000.00"}
    order = make_order(items=[item] * 100)

    # When
    email = render_support_emails([order], detail=FULL)[0]

    # Then
    assert email.subject == f"New order {order.order_id}: 100000000000.00 USD"
    assert_subject_rules(email.subject)


# --- SNS's 256 KB limit -----------------------------------------------------------------------


def big_order(number: int, character: str = "\U0001f9f9", name: str | None = None) -> Order:
    """About 90 KB of UTF-8: 100 items whose 200-character names take 4 bytes a character."""
    items = [
        {"sku": f"SKU-{i}", "name": name or character * 200, "quantity": 1, "unitPrice": "1.00"}
        for i in range(100)
    ]
    return make_order(order_id(number), items=items)


@pytest.mark.parametrize("detail", list(SupportEmailDetail))
def test_a_digest_too_big_for_one_sns_message_is_split_into_parts(detail: SupportEmailDetail) -> None:
    # Given orders that take more than 256 KB together
    orders = [big_order(n) for n in range(7)]
    single_sizes = [len(render_support_emails([o], detail=detail)[0].body.encode()) for o in orders]
    assert sum(single_sizes) > SNS_MESSAGE_LIMIT_BYTES

    # When
    emails = render_support_emails(orders, detail=detail)

    # Then each part fits SNS with room to spare, counted in UTF-8 bytes
    assert len(emails) > 1
    for email in emails:
        assert len(email.body.encode("utf-8")) <= BODY_BUDGET_BYTES < SNS_MESSAGE_LIMIT_BYTES
        assert "truncated" not in email.body
    # every order in exactly one part, in order
    announced = [order_id for email in emails for order_id in email.order_ids]
    assert announced == [order.order_id for order in orders]
    for part, email in enumerate(emails, start=1):
        assert f"(part {part} of {len(emails)})" in email.subject
        assert f"Part {part} of {len(emails)}: orders " in email.body
        assert "7 new orders in this batch" in email.body
        assert_subject_rules(email.subject)
        assert_inert(email)
    # no more parts than the limit forces
    sizes = [len(email.body.encode()) for email in emails]
    assert all(a + b > BODY_BUDGET_BYTES for a, b in itertools.pairwise(sizes))


def test_a_digest_that_fits_is_not_split() -> None:
    # Given
    orders = [big_order(n) for n in range(2)]

    # When
    emails = render_support_emails(orders, detail=FULL)

    # Then
    assert len(emails) == 1
    assert "part" not in emails[0].subject


def test_the_biggest_single_order_fits_one_message_whole() -> None:
    # Given the largest order the API accepts, every character of it escaped (9 bytes each) but
    # the one visible character each name and address line must have
    tag = "\U000e0041"
    text = "x" + tag * 199
    order = unvalidated(big_order(1, name=text), name=text, note=(tag * 99 + "\n") * 10)
    address = order.shipping_address
    assert address is not None
    order = order.model_copy(
        update={
            "shipping_address": address.model_copy(
                update={"line1": text, "line2": text, "city": text, "region": text}
            )
        }
    )

    # When
    emails = render_support_emails([order], detail=FULL)

    # Then
    (email,) = emails
    assert len(email.body.encode("utf-8")) <= BODY_BUDGET_BYTES
    assert "truncated" not in email.body
    assert email.body.count("<U+E0041>") == 199 * 100 + 199 + 990 + 4 * 199
    assert_inert(email)
