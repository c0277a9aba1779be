"""The notifier reads SupportEmailDetail from its environment once, at cold start."""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest

from orderpipe.aws import clients
from orderpipe.notifier import check_notifier_settings
from orderpipe.settings import InvalidSetting
from orderpipe.support_email import SupportEmailDetail
from orderpipe_local.runtime.handlers import load_handler
from orderpipe_local.testing import ROOT

NOTIFIER_ALIAS = "notifier_cold_start_app"


@pytest.fixture(autouse=True)
def fresh_settings(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv("SUPPORT_EMAIL_DETAIL", raising=False)
    clients.reset()
    yield
    sys.modules.pop(NOTIFIER_ALIAS, None)
    clients.reset()


def cold_start_notifier() -> None:
    """Load functions/notifier/app.py anew, as Lambda's init does."""
    sys.modules.pop(NOTIFIER_ALIAS, None)
    load_handler(ROOT / "functions" / "notifier", "app.lambda_handler", NOTIFIER_ALIAS)


def test_a_bad_support_email_detail_fails_the_cold_start_with_a_clear_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given
    monkeypatch.setenv("SUPPORT_EMAIL_DETAIL", "partial")

    # When / Then the init fails, before any batch is taken, naming the variable and what it may be
    with pytest.raises(InvalidSetting) as failure:
        cold_start_notifier()
    assert str(failure.value) == (
        "invalid environment variable(s): SUPPORT_EMAIL_DETAIL='partial': Input should be 'full' or 'masked'"
    )


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("full", SupportEmailDetail.FULL),
        ("masked", SupportEmailDetail.MASKED),
        (None, SupportEmailDetail.MASKED),
    ],
)
def test_the_notifier_starts_with_each_allowed_value_and_masks_when_unset(
    monkeypatch: pytest.MonkeyPatch, value: str | None, expected: SupportEmailDetail
) -> None:
    # Given
    if value is not None:
        monkeypatch.setenv("SUPPORT_EMAIL_DETAIL", value)

    # When
    cold_start_notifier()

    # Then
    assert NOTIFIER_ALIAS in sys.modules
    assert check_notifier_settings() is expected
