"""The AWS resources a function talks to, built once per cold start from its settings.

Every cached factory lives here so tests (and the local pipeline) can point them at another
endpoint with one `reset()`.
"""

from __future__ import annotations

from functools import cache

from orderpipe.orders_queue import OrdersQueue
from orderpipe.orders_table import OrdersTable
from orderpipe.settings import settings


@cache
def orders_table() -> OrdersTable:
    return OrdersTable(settings().orders_table_name)


@cache
def orders_queue() -> OrdersQueue:
    return OrdersQueue(settings().orders_queue_url)


def reset() -> None:
    """Forget cached settings and clients (after the environment changed)."""
    for factory in (settings, orders_table, orders_queue):
        factory.cache_clear()
