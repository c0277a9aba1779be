"""OrdersTable's batch marking against the table made from the template."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from orderpipe.aws import clients
from orderpipe.models import Customer, LineItem, Order, OrderRequest
from orderpipe_local.stack.provision import Stack


def placed_orders(count: int) -> list[Order]:
    request = OrderRequest(
        customer=Customer(name="Ada Lovelace", email="ada@example.com"),
        items=[LineItem(sku="MOP-001", name="Microfiber mop", quantity=1, unit_price=Decimal("12.50"))],
    )
    orders = [Order.accept(request, now=datetime(2026, 11, 22, tzinfo=UTC)) for _ in range(count)]
    for order in orders:
        assert clients.orders_table().put_new_order(order)
    return orders


def test_marking_more_orders_than_one_transaction_holds_marks_them_all(stack: Stack) -> None:
    # Given 150 stored orders (two transactions' worth)
    orders = placed_orders(150)
    ids = [order.order_id for order in orders]

    # When
    result = clients.orders_table().mark_all_notified(ids)

    # Then
    assert sorted(result.marked) == sorted(ids)
    assert result.not_placed == result.failed == []
    assert clients.orders_table().notified_order_ids(ids) == set(ids)


def test_an_order_already_notified_is_reported_and_the_others_are_still_marked(stack: Stack) -> None:
    # Given three orders, one of them already NOTIFIED, and an id that was never stored
    first, second, third = (order.order_id for order in placed_orders(3))
    assert clients.orders_table().mark_notified(second)
    never_stored = "00000000-0000-4000-8000-000000000000"

    # When (the transaction is refused, so each order is marked on its own)
    result = clients.orders_table().mark_all_notified([first, second, third, never_stored])

    # Then
    assert result.marked == [first, third]
    assert result.not_placed == [second, never_stored]
    assert result.failed == []
    stored = clients.orders_table().get_order(second)
    assert stored is not None
    assert stored.notified_at is not None
