"""The email support staff read: one per stream batch, a single-order email or a digest.

Customer text is shown as text, never interpreted: characters that could forge lines or
reorder what a reader sees are written out as `<U+XXXX>`, and customer text never starts a
line, so it cannot imitate a header, a separator or another order. The subject is built
from server-side values only (order id or order count, totals with currency codes).
"""

from __future__ import annotations

import itertools
import re
import textwrap
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from enum import StrEnum

from orderpipe.models import Order, format_money, is_order_id

# SNS takes at most 256 KiB (UTF-8 bytes) per message; the email subscription adds its own
# footer, so a part is cut well below the limit.
SNS_MESSAGE_LIMIT_BYTES = 256 * 1024
BODY_BUDGET_BYTES = SNS_MESSAGE_LIMIT_BYTES - 16 * 1024
SUBJECT_MAX_CHARACTERS = 99  # SNS: "must be less than 100 characters"

SEPARATOR = "=" * 72
_WRAP_WIDTH = 76
_LONGEST_LINE = 200  # characters of customer text on one line (names are at most 200)
_LABEL_WIDTH = 15
# Format characters (bidi overrides and isolates, zero-width characters, BOM, tag characters),
# controls (CR, LF, TAB, ESC, NEL...), line and paragraph separators, lone surrogates.
_ESCAPED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
_MAX_STACKED_MARKS = 4  # combining marks in a row; more ("zalgo") spill over neighbouring lines
MASKED_NOTICE = "Customer details are masked: initials, email, city and country only."
_TRUNCATED = "\n[... truncated to fit one email; the full order is in OrdersTable]\n"


class SupportEmailDetail(StrEnum):
    """What the support email shows of the customer (the template's `SupportEmailDetail`)."""

    FULL = "full"
    MASKED = "masked"


@dataclass(frozen=True)
class SupportEmail:
    """One SNS message: `subject` for the email subject line, `body` as plain text."""

    subject: str
    body: str
    order_ids: tuple[str, ...] = ()


def render_support_emails(orders: Sequence[Order], *, detail: SupportEmailDetail) -> list[SupportEmail]:
    """One email for the whole batch, split into parts only where SNS's size limit forces it."""
    if not orders:
        return []
    if len(orders) == 1:
        return [_single_order_email(orders[0], detail)]
    return _digest_emails(orders, detail)


# --- customer text ---------------------------------------------------------------------------


def as_text(value: str) -> str:
    """Customer text made inert: one line, nothing invisible, nothing that reorders the line."""
    out: list[str] = []
    stacked = 0
    for character in value:
        category = unicodedata.category(character)
        stacked = stacked + 1 if category in ("Mn", "Me") else 0
        if category in _ESCAPED_CATEGORIES or stacked > _MAX_STACKED_MARKS:
            out.append(f"<U+{ord(character):04X}>")
        else:
            out.append(character)
    return "".join(out)


_UNIT = re.compile(r"<U\+[0-9A-F]{4,6}>|.", re.DOTALL)


def _pieces(text: str, width: int) -> list[str]:
    """`text` cut into pieces of at most `width` characters, never inside a `<U+XXXX>`."""
    pieces: list[str] = []
    current = ""
    for unit in _UNIT.findall(text):
        if current and len(current) + len(unit) > width:
            pieces.append(current)
            current = ""
        current += unit
    return [*pieces, current]


def _one_line(prefix: str, customer_text: str) -> list[str]:
    """Customer text after a prefix of ours, on one line so that every line starts with our text.

    Only escaped hostile text gets longer than a line; it continues on lines marked `...`.
    """
    follow = " " * len(prefix) + "... "
    pieces = _pieces(as_text(customer_text), _LONGEST_LINE)
    return [(prefix if index == 0 else follow) + piece for index, piece in enumerate(pieces)]


def _field(label: str, *customer_text: str | None, indent: str = "  ") -> list[str]:
    """`Label:  value`, each further value under the first one."""
    prefix = f"{indent}{label + ':':<{_LABEL_WIDTH}}"
    lines: list[str] = []
    for value in customer_text:
        if value:
            lines += _one_line(" " * len(prefix) if lines else prefix, value)
    return lines


def _note(note: str, indent: str = "  ") -> list[str]:
    """Every note line is quoted with `| `, so a line of the note can never pass for ours."""
    quote = f"{indent}  | "
    lines = [f"{indent}Note:"]
    for line in note.replace("\r\n", "\n").replace("\r", "\n").split("\n"):
        width = _WRAP_WIDTH - len(quote)
        wrapped = textwrap.wrap(as_text(line), width=width, break_long_words=False, break_on_hyphens=False)
        pieces = [piece for long_line in wrapped for piece in _pieces(long_line, width)]
        lines += [quote + piece for piece in pieces] or [quote.rstrip()]
    return lines


# --- masking ---------------------------------------------------------------------------------

_HYPHENS = re.compile("[-\u2010\u2011]")
_MASK = "***"
_SHORTEST_LOCAL_PART_SHOWN = 3  # a shorter local part would be given away by its first character


def initials(name: str) -> str:
    """`Ada Lovelace` -> `A. L.`, `Jean-Luc Picard` -> `J.-L. P.`: the first visible character of
    each part of the name (with its combining marks), as written; `?` if no part has one."""
    words = []
    for word in name.split():
        shown = "-".join(f"{initial}." for part in _HYPHENS.split(word) if (initial := _first_visible(part)))
        if shown:
            words.append(shown)
    return " ".join(words) or "?"


def _first_visible(text: str) -> str:
    """The first letter, digit or symbol of `text`, with the combining marks that follow it."""
    for position, character in enumerate(text):
        if unicodedata.category(character)[0] in "LNS":
            following = text[position + 1 : position + 1 + _MAX_STACKED_MARKS]
            marks = itertools.takewhile(lambda mark: unicodedata.category(mark) in ("Mn", "Me"), following)
            return character + "".join(marks)
    return ""


def masked_email(address: str) -> str:
    """`ada@example.com` -> `a***@example.com`; a local part under 3 characters shows none."""
    local, at, domain = address.rpartition("@")
    if not at:
        return _MASK
    shown = _first_visible(local) if len(local) >= _SHORTEST_LOCAL_PART_SHOWN else ""
    return f"{shown}{_MASK}@{domain}"


# --- server-side values ----------------------------------------------------------------------


def _safe_order_id(order_id: str) -> str:
    if is_order_id(order_id):
        return order_id
    return "".join(c for c in order_id if c.isascii() and (c.isalnum() or c == "-"))[:36] or "unknown"


def _money(amount: Decimal, currency: str) -> str:
    return f"{format_money(amount)} {currency}"


def _utc(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def totals_by_currency(orders: Iterable[Order]) -> dict[str, tuple[Decimal, int]]:
    """currency -> (sum of order totals, number of orders), in order of first appearance."""
    totals: dict[str, tuple[Decimal, int]] = {}
    for order in orders:
        amount, count = totals.get(order.currency, (Decimal("0"), 0))
        totals[order.currency] = (amount + order.total, count + 1)
    return totals


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


# --- subjects --------------------------------------------------------------------------------


def clean_subject(subject: str) -> str:
    """SNS's rules: printable ASCII, no line breaks or control characters, < 100 characters."""
    printable = "".join(c if " " <= c <= "~" else "?" for c in subject)
    return " ".join(printable.split())[:SUBJECT_MAX_CHARACTERS]


def _single_subject(order: Order) -> str:
    return clean_subject(f"New order {_safe_order_id(order.order_id)}: {_money(order.total, order.currency)}")


def _digest_subject(orders: Sequence[Order], part: int, parts: int) -> str:
    head = _plural(len(orders), "new order") + (f" (part {part} of {parts})" if parts > 1 else "")
    totals = totals_by_currency(orders)
    listed = ", ".join(_money(amount, currency) for currency, (amount, _) in totals.items())
    subject = f"{head}: {listed}"
    if len(subject) > SUBJECT_MAX_CHARACTERS:
        subject = f"{head} in {len(totals)} currencies"
    return clean_subject(subject)


# --- bodies ----------------------------------------------------------------------------------


def _order_lines(order: Order, detail: SupportEmailDetail, indent: str = "  ") -> list[str]:
    label = f"{indent}{{:<{_LABEL_WIDTH}}}"
    masked = detail == SupportEmailDetail.MASKED
    name, email = order.customer.name, str(order.customer.email)
    lines = [
        label.format("Order id:") + _safe_order_id(order.order_id),
        label.format("Placed:") + _utc(order.created_at),
        *_field("Customer", initials(name) if masked else name, indent=indent),
        *_field("Email", masked_email(email) if masked else email, indent=indent),
        f"{indent}Items ({len(order.items)}):",
    ]
    for number, item in enumerate(order.items, start=1):
        lines += _one_line(f"{indent}  {number:>3}. ", item.name)
        lines.append(
            f"{indent}       SKU {as_text(item.sku)}  qty {item.quantity}"
            f"  x {_money(item.unit_price, order.currency)}"
            f"  = {_money(item.line_total, order.currency)}"
        )
    lines.append(label.format("Total:") + _money(order.total, order.currency))
    if masked:
        if address := order.shipping_address:
            lines += _field("Ship to", f"{address.city}, {address.country}", indent=indent)
        return lines
    if address := order.shipping_address:
        place = f"{address.postal_code} {address.city}"
        lines += _field(
            "Ship to", address.line1, address.line2, place, address.region, address.country, indent=indent
        )
    if order.note:
        lines.extend(_note(order.note, indent))
    return lines


def _join(lines: Iterable[str]) -> str:
    return "\n".join(lines) + "\n"


def _fit(text: str, budget: int) -> str:
    """Bounds keep an order far below the budget; this only guards against a bound changing."""
    encoded = text.encode("utf-8", errors="replace")
    if len(encoded) <= budget:
        return text
    room = budget - len(_TRUNCATED.encode())
    return encoded[:room].decode("utf-8", errors="ignore") + _TRUNCATED


def _preamble(detail: SupportEmailDetail) -> list[str]:
    lines = ["Customer text appears as sent; invisible or control characters are shown as <U+XXXX>."]
    if detail == SupportEmailDetail.MASKED:
        lines.append(MASKED_NOTICE)
    return lines


def _single_order_email(order: Order, detail: SupportEmailDetail) -> SupportEmail:
    body = _join(
        [
            f"A new order was placed: {_money(order.total, order.currency)}.",
            *_preamble(detail),
            "",
            *_order_lines(order, detail),
        ]
    )
    return SupportEmail(_single_subject(order), _fit(body, BODY_BUDGET_BYTES), (order.order_id,))


def _order_block(order: Order, detail: SupportEmailDetail, number: int, count: int) -> str:
    return _join(["", SEPARATOR, f"Order {number} of {count}", SEPARATOR, *_order_lines(order, detail)])


def _index_line(order: Order, number: int) -> str:
    return f"  {number:>5}. {_safe_order_id(order.order_id)}  {_money(order.total, order.currency)}\n"


def _digest_header(
    orders: Sequence[Order], detail: SupportEmailDetail, numbers: range, parts: int, part: int
) -> str:
    batch_totals = totals_by_currency(orders)
    first, last = min(order.created_at for order in orders), max(order.created_at for order in orders)
    placed = f"at {_utc(first)}" if first == last else f"from {_utc(first)} to {_utc(last)}"
    lines = [
        f"{_plural(len(orders), 'new order')} in this batch, placed {placed}.",
        *_preamble(detail),
        "",
        "Totals:",
        *(
            f"  {_money(amount, currency):>24}  ({_plural(count, 'order')})"
            for currency, (amount, count) in batch_totals.items()
        ),
    ]
    if parts > 1:
        lines += [
            "",
            f"Part {part} of {parts}: orders {numbers.start + 1} to {numbers.stop} of {len(orders)}.",
        ]
    lines += ["", "Orders:" if parts == 1 else "Orders in this part:"]
    return _join(lines)


def _digest_emails(orders: Sequence[Order], detail: SupportEmailDetail) -> list[SupportEmail]:
    count = len(orders)
    # The header of a part is the batch header plus one line naming the part.
    header_allowance = len(_digest_header(orders, detail, range(count), 2, 1).encode()) + 64
    index = [_index_line(order, n) for n, order in enumerate(orders, 1)]
    blocks = [
        _fit(_order_block(order, detail, n, count), BODY_BUDGET_BYTES - header_allowance - len(index[n - 1]))
        for n, order in enumerate(orders, 1)
    ]
    sizes = [len(block.encode()) + len(line.encode()) for block, line in zip(blocks, index, strict=True)]

    spans: list[range] = []
    start, used = 0, header_allowance
    for position, size in enumerate(sizes):
        if position > start and used + size > BODY_BUDGET_BYTES:
            spans.append(range(start, position))
            start, used = position, header_allowance
        used += size
    spans.append(range(start, count))

    emails = []
    for part, span in enumerate(spans, start=1):
        part_orders = orders[span.start : span.stop]
        body = (
            _digest_header(orders, detail, span, len(spans), part)
            + "".join(index[span.start : span.stop])
            + "".join(blocks[span.start : span.stop])
        )
        emails.append(
            SupportEmail(
                _digest_subject(part_orders, part, len(spans)),
                body,
                tuple(order.order_id for order in part_orders),
            )
        )
    return emails
