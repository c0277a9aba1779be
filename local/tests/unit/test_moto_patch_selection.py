"""Which moto patches an endpoint applies: every fix, and the speed patches the variable selects."""

from __future__ import annotations

import pytest

from orderpipe_local.moto.patches import (
    FIXES,
    PATCHES,
    SPEED_PATCHES,
    SPEED_PATCHES_VARIABLE,
    selected_patches,
)


def test_by_default_every_patch_is_applied() -> None:
    assert selected_patches({}) == FIXES + SPEED_PATCHES
    assert set(FIXES + SPEED_PATCHES) == set(PATCHES)


@pytest.mark.parametrize("setting", ["off", "OFF", "none", ""])
def test_off_keeps_the_fixes_alone(setting: str) -> None:
    assert selected_patches({SPEED_PATCHES_VARIABLE: setting}) == FIXES


def test_a_list_names_the_speed_patches_to_apply() -> None:
    # Given two speed patches named, in another order than the registry's
    setting = "dynamodb-transaction-sets, sqs-depth"

    # When the selection is read
    selected = selected_patches({SPEED_PATCHES_VARIABLE: setting})

    # Then the fixes come with those two, in the registry's order
    assert selected == (*FIXES, "sqs-depth", "dynamodb-transaction-sets")


@pytest.mark.parametrize(
    ("setting", "refusal"),
    [("sqs-dept", "no moto patch named sqs-dept"), ("sqs-queue-lock", "sqs-queue-lock is a fix")],
)
def test_an_unknown_name_or_a_fix_is_refused_in_words(setting: str, refusal: str) -> None:
    with pytest.raises(ValueError, match=refusal):
        selected_patches({SPEED_PATCHES_VARIABLE: setting})


def test_each_patch_names_the_moto_behaviour_in_one_line() -> None:
    for patch in PATCHES.values():
        assert patch.behaviour.startswith("moto 5.2.5: "), patch.name
        assert "\n" not in patch.behaviour
