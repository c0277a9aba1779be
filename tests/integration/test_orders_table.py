"""OrdersTable's batch marking against the table made from the template."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
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


def test_marking_many_orders_marks_each_with_one_conditional_update(stack: Stack) -> None:
    # Given 150 stored orders (more than MARK_CONCURRENCY), and every call to the table recorded
    orders = placed_orders(150)
    ids = [order.order_id for order in orders]
    table = clients.orders_table()
    calls: list[str] = []
    table.client.meta.events.register(
        "before-call.dynamodb", lambda model, **_: calls.append(model.name), unique_id="record-calls"
    )

    # When
    result = table.mark_all_notified(ids)

    # Then all are marked, each by one UpdateItem (a write unit; a transaction would bill two)
    assert sorted(result.marked) == sorted(ids)
    assert result.not_placed == result.failed == []
    assert calls == ["UpdateItem"] * len(ids)
    assert table.notified_order_ids(ids) == set(ids)


def test_marking_starts_no_request_once_none_fits_in_the_time_left(stack: Stack) -> None:
    # Given 3 stored orders, and time for the first request only
    ids = [order.order_id for order in placed_orders(3)]
    time_left = iter([True, False, False])

    # When
    result = clients.orders_table().mark_all_notified(ids, time_for_a_request=lambda: next(time_left))

    # Then one is marked, the others are failed and still PLACED
    assert len(result.marked) == 1
    assert sorted(result.failed) == sorted(set(ids) - set(result.marked))
    assert clients.orders_table().notified_order_ids(ids) == set(result.marked)


def test_a_marking_retried_after_its_first_attempt_landed_counts_as_marked(stack: Stack) -> None:
    # Given an order marked by a request whose answer was lost (a read timeout): botocore sends
    # the same request again, and its condition fails on our own write
    (order,) = placed_orders(1)
    at = datetime(2026, 12, 4, 12, 0, 0, 123000, tzinfo=UTC)
    assert clients.orders_table().mark_notified(order.order_id, at)

    # Then the same request again is ours, marked; a marking at another moment is not
    assert clients.orders_table().mark_notified(order.order_id, at)
    assert not clients.orders_table().mark_notified(order.order_id, at + timedelta(milliseconds=1))


def test_an_order_already_notified_is_reported_and_the_others_are_still_marked(stack: Stack) -> None:
    # Given three orders, one of them already NOTIFIED, and an id that was never stored
    first, second, third = (order.order_id for order in placed_orders(3))
    assert clients.orders_table().mark_notified(second)
    never_stored = "00000000-0000-4000-8000-000000000000"

    # When
    result = clients.orders_table().mark_all_notified([first, second, third, never_stored])

    # Then
    assert result.marked == [first, third]
    assert result.not_placed == [second, never_stored]
    assert result.failed == []
    stored = clients.orders_table().get_order(second)
    assert stored is not None
    assert stored.notified_at is not None
