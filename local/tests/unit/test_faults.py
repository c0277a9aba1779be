"""Fault specs, how often they hit, and the error bodies they answer, read back by botocore."""

from __future__ import annotations

from typing import Any

import botocore.session
import pytest
from botocore.parsers import create_parser

from orderpipe_local.moto.faults import Fault, FaultError, FaultList, error_response, parse_fault


def test_a_fault_spec_names_service_operation_error_and_rate() -> None:
    fault = parse_fault("dynamodb:PutItem=ProvisionedThroughputExceededException@0.2")

    assert fault == Fault("dynamodb", "PutItem", 0.2, error="ProvisionedThroughputExceededException")
    assert fault.status == 400
    assert fault.spec == "dynamodb:PutItem=ProvisionedThroughputExceededException@0.2"


def test_a_delay_spec_is_a_number_of_seconds() -> None:
    assert parse_fault("sns:Publish=45@0.5", kind="delay") == Fault("sns", "Publish", 0.5, delay=45.0)
    assert parse_fault("sqs:*=1.5s@1") == Fault("sqs", "*", 1.0, delay=1.5)


@pytest.mark.parametrize(
    ("spec", "kind", "says"),
    [
        ("sns:Publish", None, "is not SERVICE:Operation=ErrorCode@RATE"),
        ("sns:Publish=InternalError", None, "is not SERVICE:Operation=ErrorCode@RATE"),
        ("sns:Publish=InternalError@often", None, "is not a number from 0 to 1"),
        ("sns:Publish=InternalError@1.5", None, "more than 0 and at most 1"),
        ("sns:Publish=InternalError@0", None, "more than 0 and at most 1"),
        ("snss:Publish=InternalError@0.1", None, "no AWS service 'snss'"),
        ("sns:publish=InternalError@0.1", None, "did you mean Publish?"),
        ("sns:Publish=NoSuchThing@0.1", None, "sns answers no error NoSuchThing"),
        ("s3:PutObject=InternalError@0.1", None, "rest-xml protocol"),
        ("sns:Publish=5@0.1", "error", "stalls are given with --delay"),
        ("sns:Publish=InternalError@0.1", "delay", "a delay is a number of seconds"),
        ("sns:Publish=901@0.1", "delay", "at most 900 seconds"),
    ],
)
def test_a_bad_spec_is_refused_in_words(spec: str, kind: str | None, says: str) -> None:
    with pytest.raises(FaultError, match=says.replace("?", r"\?").replace("(", r"\(")):
        parse_fault(spec, kind=kind)


def test_the_same_seed_hits_the_same_calls_and_another_seed_others() -> None:
    fault = parse_fault("sqs:SendMessage=InternalError@0.3")

    def hits(seed: int) -> list[bool]:
        faults = FaultList(seed, [fault])
        return [faults.draw("sqs", "SendMessage")[1] is not None for _ in range(200)]

    assert hits(7) == hits(7)
    assert hits(7) != hits(8)
    assert 30 <= sum(hits(7)) <= 90  # about 60 of 200
    faults = FaultList(7, [fault])
    for _ in range(200):
        faults.draw("sqs", "SendMessage")
    assert faults.describe()["injected"] == {fault.spec: sum(hits(7))}


def test_a_fault_hits_only_its_operation_and_a_star_every_one() -> None:
    faults = FaultList(1, [parse_fault("sqs:SendMessage=InternalError@1"), parse_fault("sns:*=2@1")])

    assert faults.draw("sqs", "ReceiveMessage") == (0.0, None)
    assert faults.draw("sqs", "SendMessage")[1] == parse_fault("sqs:SendMessage=InternalError@1")
    assert faults.draw("sns", "Subscribe") == (2.0, None)


def test_a_stalled_call_goes_through_whatever_error_would_hit_it() -> None:
    stall, error = parse_fault("sns:Publish=8@1"), parse_fault("sns:Publish=InternalError@1")
    faults = FaultList(1, [error, stall])

    assert faults.draw("sns", "Publish") == (8.0, None)
    assert faults.describe()["injected"] == {error.spec: 0, stall.spec: 1}


def test_cleared_faults_hit_nothing_and_keep_their_counts() -> None:
    faults = FaultList(1, [parse_fault("sns:Publish=InternalError@1")])
    faults.draw("sns", "Publish")
    faults.clear()

    assert faults.draw("sns", "Publish") == (0.0, None)
    assert faults.describe() == {"seed": 1, "faults": [], "injected": {"sns:Publish=InternalError@1": 1}}


def parsed_by_botocore(fault: Fault, operation: str) -> dict[str, Any]:
    """What botocore makes of the injected answer: the error a handler's ClientError carries."""
    model = botocore.session.get_session().get_service_model(fault.service)
    status, headers, body = error_response(fault)
    output_shape = model.operation_model(operation).output_shape
    assert output_shape is not None
    parsed: dict[str, Any] = create_parser(model.protocol).parse(
        {"status_code": status, "headers": dict(headers), "body": body}, output_shape
    )
    return parsed


@pytest.mark.parametrize(
    ("spec", "operation", "status"),
    [
        ("dynamodb:PutItem=ProvisionedThroughputExceededException@1", "PutItem", 400),
        ("dynamodb:TransactWriteItems=InternalServerError@1", "TransactWriteItems", 500),
        ("dynamodb:UpdateItem=ThrottlingException@1", "UpdateItem", 400),
        ("sqs:SendMessage=InternalError@1", "SendMessage", 500),
        ("sqs:SendMessage=KmsThrottled@1", "SendMessage", 400),
        ("sns:Publish=InternalError@1", "Publish", 500),
        ("sns:Publish=Throttled@1", "Publish", 429),  # as botocore's model of SNS has it
    ],
)
def test_botocore_reads_the_injected_answer_as_the_aws_error(spec: str, operation: str, status: int) -> None:
    fault = parse_fault(spec)

    parsed = parsed_by_botocore(fault, operation)

    assert parsed["Error"]["Code"] == fault.error
    assert parsed["ResponseMetadata"]["HTTPStatusCode"] == status
    assert "injected by orderpipe local" in parsed["Error"]["Message"]
