"""The product's tests: the shared helpers come from the runner's testing plugin."""

import pytest

pytest_plugins = ["orderpipe_local.testing"]


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("orderpipe acceptance")
    group.addoption(
        "--stack-name",
        help="run tests/acceptance against this deployed stack (default: a local pipeline they start)",
    )
    group.addoption("--region", help="the deployed stack's region (default: the AWS CLI's)")
