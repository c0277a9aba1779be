"""`orderpipe_local.stack.template`: parameter values, conditions, rules and the intrinsic resolver."""

from __future__ import annotations

import gc
import logging
import textwrap
from pathlib import Path
from typing import Any

import pytest

from orderpipe_local.stack.template import (
    ACCOUNT_ID,
    Resolver,
    Template,
    TemplateError,
    Unresolved,
    load_template,
    parse_parameter_overrides,
    samconfig_parameters,
)
from orderpipe_local.testing import ROOT

PHYSICAL = {
    ("OrdersQueue", None): "https://sqs.us-east-1.amazonaws.com/123456789012/orders",
    ("OrdersQueue", "Arn"): "arn:aws:sqs:us-east-1:123456789012:orders",
    ("OrdersQueue", "QueueName"): "orders",
    ("OrdersTable", None): "orders-table",
}


def lookup(logical_id: str, attribute: str | None) -> str | None:
    return PHYSICAL.get((logical_id, attribute))


@pytest.fixture
def template() -> Template:
    return Template(
        resources={
            "OrdersQueue": {"Type": "AWS::SQS::Queue"},
            "OrdersTable": {"Type": "AWS::DynamoDB::Table"},
            "OrdersTopic": {"Type": "AWS::SNS::Topic"},  # not created yet
            "Subscription": {"Type": "AWS::SNS::Subscription", "Condition": "HasEmail"},
        },
        parameters={"Stage": "dev", "Email": ""},
        conditions={
            "HasEmail": {"Fn::Not": [{"Fn::Equals": [{"Ref": "Email"}, ""]}]},
            "IsDev": {"Fn::Equals": [{"Ref": "Stage"}, "dev"]},
            "DevWithEmail": {"Fn::And": [{"Condition": "IsDev"}, {"Condition": "HasEmail"}]},
        },
        outputs={},
        region="eu-west-1",
        stack_name="shop",
    )


@pytest.fixture
def resolver(template: Template) -> Resolver:
    return Resolver(template, lookup)


# --- Resolver -----------------------------------------------------------------------------------


def test_ref_resolves_parameters_resources_and_pseudo_parameters(resolver: Resolver) -> None:
    assert resolver.resolve({"Ref": "Stage"}) == "dev"
    assert resolver.resolve({"Ref": "OrdersQueue"}) == PHYSICAL[("OrdersQueue", None)]
    assert resolver.resolve({"Ref": "AWS::Region"}) == "eu-west-1"
    assert resolver.resolve({"Ref": "AWS::AccountId"}) == ACCOUNT_ID
    assert resolver.resolve({"Ref": "AWS::StackName"}) == "shop"


def test_get_att_in_list_and_dotted_forms(resolver: Resolver) -> None:
    assert resolver.resolve({"Fn::GetAtt": ["OrdersQueue", "Arn"]}) == PHYSICAL[("OrdersQueue", "Arn")]
    assert resolver.resolve({"Fn::GetAtt": "OrdersQueue.QueueName"}) == "orders"


def test_sub_without_variables_reads_refs_attributes_and_keeps_escaped_literals(resolver: Resolver) -> None:
    text = "${OrdersQueue.Arn}/${Stage}/${AWS::Region}/${!NotAReference}"

    assert resolver.resolve({"Fn::Sub": text}) == (
        "arn:aws:sqs:us-east-1:123456789012:orders/dev/eu-west-1/${NotAReference}"
    )


def test_sub_with_variables_resolves_each_variable_first(resolver: Resolver) -> None:
    value = {
        "Fn::Sub": [
            "arn:${AWS::Partition}:sqs:${AWS::Region}:${AWS::AccountId}:${queueName}",
            {"queueName": {"Fn::GetAtt": ["OrdersQueue", "QueueName"]}},
        ]
    }

    assert resolver.resolve(value) == f"arn:aws:sqs:eu-west-1:{ACCOUNT_ID}:orders"


def test_conditions_if_equals_not_and(template: Template, resolver: Resolver) -> None:
    assert template.evaluate_condition("IsDev") is True
    assert template.evaluate_condition("HasEmail") is False
    assert template.evaluate_condition("DevWithEmail") is False
    assert resolver.resolve({"Fn::If": ["IsDev", "small", "large"]}) == "small"
    assert resolver.resolve({"Fn::If": ["HasEmail", "yes", "no"]}) == "no"


def test_no_value_removes_the_key_or_the_list_item(resolver: Resolver) -> None:
    value = {
        "Keep": 1,
        "Drop": {"Fn::If": ["HasEmail", "x", {"Ref": "AWS::NoValue"}]},
        "List": ["a", {"Ref": "AWS::NoValue"}, "b"],
    }

    assert resolver.resolve(value) == {"Keep": 1, "List": ["a", "b"]}


def test_join_select_split_and_contains(resolver: Resolver) -> None:
    assert resolver.resolve({"Fn::Join": ["-", [{"Ref": "Stage"}, "orders"]]}) == "dev-orders"
    assert resolver.resolve({"Fn::Select": [1, {"Fn::Split": [":", "a:b:c"]}]}) == "b"
    assert resolver.resolve({"Fn::Contains": [["dev", "prod"], {"Ref": "Stage"}]}) is True
    assert resolver.resolve({"Fn::Contains": [["prod"], {"Ref": "Stage"}]}) is False


def test_a_resource_not_created_yet_is_unresolved(resolver: Resolver) -> None:
    with pytest.raises(Unresolved):
        resolver.resolve({"Ref": "OrdersTopic"})


@pytest.mark.parametrize(
    "value",
    [
        {"Ref": "NoSuchResource"},
        {"Fn::GetAtt": ["NoSuchResource", "Arn"]},
        {"Fn::FindInMap": ["Map", "Key", "Value"]},
    ],
)
def test_unknown_resources_and_functions_are_template_errors(resolver: Resolver, value: Any) -> None:
    with pytest.raises(TemplateError):
        resolver.resolve(value)


def test_unknown_condition_is_a_template_error(template: Template) -> None:
    with pytest.raises(TemplateError, match="NoSuchCondition"):
        template.evaluate_condition("NoSuchCondition")


def test_conditional_resources_are_left_out(template: Template) -> None:
    assert not template.is_created("Subscription")
    assert template.resources_of_type("AWS::SNS::Subscription") == {}

    template.parameters["Email"] = "support@example.com"
    assert set(template.resources_of_type("AWS::SNS::Subscription")) == {"Subscription"}


# --- samconfig ----------------------------------------------------------------------------------


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text))
    return path


def test_samconfig_parameters_read_quoted_values(tmp_path: Path) -> None:
    samconfig = write(
        tmp_path / "samconfig.toml",
        """
        version = 0.1
        [default.deploy.parameters]
        parameter_overrides = 'Stage=dev Note="two words" Empty="" ParameterKey=Long,ParameterValue=form'
        """,
    )

    assert samconfig_parameters(samconfig) == {
        "Stage": "dev",
        "Note": "two words",
        "Empty": "",
        "Long": "form",
    }


def test_samconfig_parameters_as_a_list_from_the_chosen_environment(tmp_path: Path) -> None:
    samconfig = write(
        tmp_path / "samconfig.toml",
        """
        version = 0.1
        [default.deploy.parameters]
        parameter_overrides = "Stage=dev"
        [prod.global.parameters]
        parameter_overrides = ["Stage=prod", "Size=100"]
        """,
    )

    assert samconfig_parameters(samconfig, "prod") == {"Stage": "prod", "Size": "100"}
    assert samconfig_parameters(samconfig, "staging") == {}
    assert samconfig_parameters(tmp_path / "missing.toml") == {}


def test_project_samconfig_environments_are_valid_for_the_template() -> None:
    dev = load_template(ROOT / "template.yaml")
    prod = load_template(ROOT / "template.yaml", environment="prod")

    assert dev.parameters["Stage"] == "dev"
    assert prod.parameters["Stage"] == "prod"


# --- load_template ------------------------------------------------------------------------------

SMALL_TEMPLATE = """
AWSTemplateFormatVersion: "2010-09-09"
Transform: AWS::Serverless-2016-10-31
Parameters:
  Stage:
    Type: String
    Default: dev
    AllowedValues: [dev, staging, prod]
  BatchSize:
    Type: Number
    Default: 10
    MinValue: 1
    MaxValue: 10000
  Window:
    Type: Number
    Default: 0
  SupportEmail:
    Type: String
    Default: ""
Rules:
  WindowForLargeBatches:
    RuleCondition: !Not [!Contains [["1", "2", "3", "4", "5", "6", "7", "8", "9", "10"], !Ref BatchSize]]
    Assertions:
      - Assert: !Not [!Equals [!Ref Window, "0"]]
        AssertDescription: a batch above 10 needs a window
Conditions:
  HasSupportEmail: !Not [!Equals [!Ref SupportEmail, ""]]
Resources:
  Queue:
    Type: AWS::SQS::Queue
    Properties:
      QueueName: !Sub orders-${Stage}
  Topic:
    Type: AWS::SNS::Topic
  Subscription:
    Type: AWS::SNS::Subscription
    Condition: HasSupportEmail
    Properties:
      TopicArn: !Ref Topic
      Protocol: email
      Endpoint: !Ref SupportEmail
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    write(tmp_path / "template.yaml", SMALL_TEMPLATE)
    write(
        tmp_path / "samconfig.toml",
        """
        version = 0.1
        [default.deploy.parameters]
        parameter_overrides = "Stage=staging Window=1"
        [prod.deploy.parameters]
        parameter_overrides = "Stage=prod"
        """,
    )
    return tmp_path / "template.yaml"


def test_parameter_precedence_default_then_samconfig_then_overrides(project: Path) -> None:
    # Given a default (dev), samconfig [default] (staging) and an override (prod) for Stage
    defaults_only = load_template(project, environment="none")
    from_samconfig = load_template(project)
    overridden = load_template(project, overrides={"Stage": "prod"})

    # Then each later source wins, and parameters a source does not name keep the earlier value
    assert defaults_only.parameters == {"Stage": "dev", "BatchSize": "10", "Window": "0", "SupportEmail": ""}
    assert from_samconfig.parameters["Stage"] == "staging"
    assert from_samconfig.parameters["Window"] == "1"
    assert overridden.parameters["Stage"] == "prod"
    assert overridden.parameters["Window"] == "1"
    assert Resolver(overridden, lambda *_: "x").resolve(
        overridden.resources["Queue"]["Properties"]["QueueName"]
    ) == ("orders-prod")


def test_unknown_override_is_a_template_error(project: Path) -> None:
    with pytest.raises(TemplateError, match="NoSuchParameter"):
        load_template(project, overrides={"NoSuchParameter": "1"})


def test_unknown_samconfig_parameter_is_a_template_error(project: Path) -> None:
    write(
        project.parent / "samconfig.toml",
        """
        version = 0.1
        [default.deploy.parameters]
        parameter_overrides = "Stag=prod"
        """,
    )

    with pytest.raises(TemplateError, match="Stag"):
        load_template(project)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"Stage": "qa"}, "not one of"),
        ({"BatchSize": "0"}, "MinValue"),
        ({"BatchSize": "10001"}, "MaxValue"),
        ({"BatchSize": "many"}, "not a number"),
    ],
)
def test_parameter_constraints_are_checked_as_cloudformation_does(
    project: Path, overrides: dict[str, str], message: str
) -> None:
    with pytest.raises(TemplateError, match=message):
        load_template(project, overrides=overrides)


@pytest.mark.parametrize(
    ("batch_size", "window", "accepted"),
    [("10", "0", True), ("11", "1", True), ("11", "0", False), ("500", "0", False)],
)
def test_template_rules_are_checked(project: Path, batch_size: str, window: str, accepted: bool) -> None:
    overrides = {"BatchSize": batch_size, "Window": window}

    if accepted:
        load_template(project, overrides=overrides)
    else:
        with pytest.raises(TemplateError, match="a batch above 10 needs a window"):
            load_template(project, overrides=overrides)


def test_support_email_empty_means_no_subscription(project: Path) -> None:
    without = load_template(project)
    with_email = load_template(project, overrides={"SupportEmail": "support@example.com"})

    assert "Subscription" not in without.resources_of_type("AWS::SNS::Subscription")
    assert "Subscription" in with_email.resources_of_type("AWS::SNS::Subscription")


def test_project_template_rejects_a_large_writer_batch_without_a_window() -> None:
    with pytest.raises(TemplateError, match="WriterBatchingWindowSeconds"):
        load_template(
            ROOT / "template.yaml", overrides={"WriterBatchSize": "25", "WriterBatchingWindowSeconds": "0"}
        )


def test_code_uris_are_kept_for_the_local_pipeline() -> None:
    template = load_template(ROOT / "template.yaml")

    assert template.source_code_uris == {
        "IngestFunction": "functions/ingest/",
        "WriterFunction": "functions/writer/",
        "NotifierFunction": "functions/notifier/",
        "ReplayFunction": "functions/replay/",
    }


def test_loading_leaves_no_unpublished_translator_metrics(
    project: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given the translator's metrics singleton, replaced at each transform
    with caplog.at_level(logging.WARNING):
        load_template(project)
        load_template(project)
        gc.collect()

    # Then no "There are unpublished metrics" warning reaches the log or the console
    assert "unpublished metrics" not in caplog.text
    assert "unpublished metrics" not in capsys.readouterr().err


def test_parameter_overrides_read_as_sam_reads_them() -> None:
    assert parse_parameter_overrides("Stage=dev Note='two words' Empty=") == {
        "Stage": "dev",
        "Note": "two words",
        "Empty": "",
    }
    assert parse_parameter_overrides(["A=1", "ParameterKey=B,ParameterValue=x=y"]) == {"A": "1", "B": "x=y"}
    for bad in ("Stage", "=dev"):
        with pytest.raises(ValueError, match=f"parameter override '{bad}' is not Key=Value"):
            parse_parameter_overrides(bad)


def test_the_command_line_merges_its_overrides_and_refuses_a_bad_one(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from orderpipe_local.cli import build_parser

    parser = build_parser()
    args = parser.parse_args(
        ["local", "--parameter-overrides", "A=1 B='x y'", "--parameter-overrides", "A=2"]
    )
    assert [dict(pairs) for pairs in args.parameter_overrides] == [{"A": "1", "B": "x y"}, {"A": "2"}]

    with pytest.raises(SystemExit):
        parser.parse_args(["local", "--parameter-overrides", "Stage"])
    assert "parameter override 'Stage' is not Key=Value" in capsys.readouterr().err


def test_the_background_niceness_is_refused_below_the_apis(capsys: pytest.CaptureFixture[str]) -> None:
    from orderpipe_local.cli import build_parser

    parser = build_parser()
    assert parser.parse_args(["local", "--background-nice", "0"]).background_nice == 0
    with pytest.raises(SystemExit):
        parser.parse_args(["local", "--background-nice", "-5"])
    assert "-5 is not a niceness from 0" in capsys.readouterr().err
