"""A small chaos run (`make chaos` runs 5,000 orders): every order answered 202 is stored once and
mailed exactly once, and OrdersDLQ holds the poison messages and nothing else (invariants 1-3)."""

from __future__ import annotations

from pathlib import Path

import pytest

from orderpipe_local.chaos import ChaosPlan, run_chaos

pytestmark = pytest.mark.e2e


def test_a_chaos_run_loses_and_doubles_nothing(tmp_path: Path) -> None:
    # Given DynamoDB throttles, SNS failures and stalls, duplicate deliveries, poison messages and
    # a writer environment killed while 500 orders arrive at 50/s (as fast as this machine takes them)
    plan = ChaosPlan(orders=500, rate=50, poison=0.01, stall_seconds=8, settle_timeout=150, seed=5)
    lines: list[str] = []

    # When the run is over and the pipeline stopped
    result = run_chaos(plan, tmp_path, say=lines.append)

    # Then
    report = "\n".join([*lines, result.line()])
    assert result.accepted == result.sent == plan.orders, report
    assert result.stored == result.accepted, report
    assert result.mailed_once == result.accepted, report
    assert (result.duplicate_items, result.mailed_twice, result.never_mailed, result.lost) == (0, 0, 0, 0), (
        report
    )
    assert result.in_dlq == result.poison_in_dlq == result.poison_sent == 5, report
    assert result.clean, report
    assert any(line.startswith("killed a writer environment") for line in lines), report
