"""Function environments run locally, and the `sam local --env-vars` file format they share with SAM."""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from moto import mock_aws

from orderpipe_local.console import Console
from orderpipe_local.environment import (
    EnvFileError,
    EnvVarsFile,
    apply_environment,
    aws_environment,
    endpoint_variable,
    function_environment,
    shared_environment,
)
from orderpipe_local.invoke import UnknownFunction, resolve_function_id
from orderpipe_local.runtime.functions import FunctionHealth, FunctionState
from orderpipe_local.stack.provision import Stack, provision_stack
from orderpipe_local.stack.template import load_template
from orderpipe_local.status import PipelineStatus
from orderpipe_local.testing import ROOT


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    template = load_template(ROOT / "template.yaml", stack_name="orderpipe-local")
    with mock_aws():
        yield provision_stack(template)


def test_parameters_apply_to_every_function_and_a_function_section_wins(stack: Stack) -> None:
    # Given a file with values for all functions and one for the writer
    env_file = EnvVarsFile.parse(
        {
            "Parameters": {"POWERTOOLS_LOG_LEVEL": "WARNING", "STAGE": "local"},
            "WriterFunction": {"STAGE": "writer-only", "NOT_DECLARED": "x"},
        }
    )

    # When the functions' environments are computed
    ingest = function_environment(stack, "IngestFunction", env_file)
    writer = function_environment(stack, "WriterFunction", env_file)

    # Then declared variables take the file's values, undeclared ones are ignored (as sam does)
    assert ingest["POWERTOOLS_LOG_LEVEL"] == writer["POWERTOOLS_LOG_LEVEL"] == "WARNING"
    assert ingest["STAGE"] == "local"
    assert writer["STAGE"] == "writer-only"
    assert "NOT_DECLARED" not in writer
    assert ingest["ORDERS_QUEUE_URL"] == stack.ref("OrdersQueue")


def test_the_endpoint_variable_is_never_taken_from_the_template_or_the_file(stack: Stack) -> None:
    env_file = EnvVarsFile.parse({"Parameters": {"AWS_ENDPOINT_URL": "http://host.docker.internal:4566"}})

    assert "AWS_ENDPOINT_URL" not in function_environment(stack, "IngestFunction", env_file)


def test_the_functions_variables_keep_the_endpoints_service_urls(stack: Stack) -> None:
    saved = dict(os.environ)
    try:
        # Given a foreign endpoint for SQS in the environment
        os.environ["AWS_ENDPOINT_URL_SQS"] = "https://sqs.example.com"

        # When the local endpoint's variables are applied, then the functions'
        apply_environment(
            aws_environment("http://127.0.0.1:4566", "us-east-1", {"dynamodb": "http://127.0.0.1:5000"})
        )
        apply_environment(shared_environment(stack, stack.functions()))

        # Then DynamoDB's URL of its own stays, and the foreign one is gone
        assert os.environ["AWS_ENDPOINT_URL"] == "http://127.0.0.1:4566"
        assert os.environ["AWS_ENDPOINT_URL_DYNAMODB"] == "http://127.0.0.1:5000"
        assert "AWS_ENDPOINT_URL_SQS" not in os.environ
        assert os.environ["ORDERS_TABLE_NAME"] == "orderpipe-local-OrdersTable"
    finally:
        os.environ.clear()
        os.environ.update(saved)


def test_one_process_shares_one_environment(stack: Stack) -> None:
    # When the three functions' variables are merged for one process
    shared = shared_environment(stack, stack.functions())

    # Then each resource variable is there once and the service name is the pipeline's
    assert shared["ORDERS_TABLE_NAME"] == "orderpipe-local-OrdersTable"
    assert shared["ORDERS_TOPIC_ARN"] == stack.ref("OrdersTopic")
    assert shared["POWERTOOLS_SERVICE_NAME"] == "orderpipe"


def test_a_variable_that_differs_between_functions_cannot_be_shared(stack: Stack) -> None:
    env_file = EnvVarsFile.parse({"WriterFunction": {"STAGE": "a"}, "NotifierFunction": {"STAGE": "b"}})

    with pytest.raises(EnvFileError, match="share one environment"):
        shared_environment(stack, stack.functions(), env_file)


@pytest.mark.parametrize("content", ["[]", '{"Parameters": ["A=1"]}', "not json"])
def test_a_file_not_in_sams_format_is_refused(tmp_path: Path, content: str) -> None:
    path = tmp_path / "env.json"
    path.write_text(content)

    with pytest.raises(EnvFileError):
        EnvVarsFile.read(path)


def test_values_are_stringified_as_sam_does() -> None:
    env_file = EnvVarsFile.parse({"Parameters": {"A": True, "B": 3, "C": None, "D": {"x": 1}}})

    assert env_file.parameters == {"A": "true", "B": "3", "C": "", "D": ""}


@pytest.mark.parametrize(
    ("name", "function_id"),
    [("ingest", "IngestFunction"), ("IngestFunction", "IngestFunction"), ("WRITER", "WriterFunction")],
)
def test_a_function_is_named_by_logical_id_or_short_name(stack: Stack, name: str, function_id: str) -> None:
    assert resolve_function_id(stack.template, name) == function_id


def test_an_unknown_function_names_the_known_ones(stack: Stack) -> None:
    with pytest.raises(UnknownFunction, match="IngestFunction, WriterFunction, NotifierFunction"):
        resolve_function_id(stack.template, "payments")


def test_the_status_line_is_redrawn_on_a_terminal_and_printed_when_changed_elsewhere() -> None:
    terminal, log = io.StringIO(), io.StringIO()
    for console in (Console(terminal, live=True), Console(log, live=False)):
        console.status("accepted 1")
        console.status("accepted 1")
        console.line("email  order 1")
        console.status("accepted 2")
        console.end_status()

    assert terminal.getvalue() == (
        "\r\x1b[2Kaccepted 1\r\x1b[2Kemail  order 1\naccepted 1\r\x1b[2Kaccepted 2\n"
    )
    assert log.getvalue() == "accepted 1\nemail  order 1\naccepted 2\n"


def test_the_status_line_shows_each_functions_execution_environments() -> None:
    # Given an ingest at full strength, a writer replacing one of its environments, and a
    # notifier none of whose environments can be started
    status = PipelineStatus(
        accepted=7,
        stored=5,
        dead_letters={"OrdersDLQ": 0},
        functions=[
            FunctionHealth("IngestFunction", FunctionState.OK, alive=4, environments=4),
            FunctionHealth("WriterFunction", FunctionState.DEGRADED, alive=3, environments=4, replaced=2),
            FunctionHealth("NotifierFunction", FunctionState.UNAVAILABLE, alive=0, environments=1),
        ],
    )

    # Then the line names each by its service name, with what is not ok
    assert status.line() == (
        "accepted 7 | queued 0 | stored 5 | notified 0 | emails 0 | OrdersDLQ 0"
        " | functions ingest 4/4, writer 3/4 degraded (2 replaced), notifier 0/1 unavailable"
    )


def test_a_services_endpoint_variable_is_botocores() -> None:
    assert endpoint_variable("dynamodb") == "AWS_ENDPOINT_URL_DYNAMODB"
    assert endpoint_variable("dynamodbstreams") == "AWS_ENDPOINT_URL_DYNAMODB_STREAMS"
