"""Lambda event filtering (FilterCriteria) as the local event sources apply it."""

from __future__ import annotations

import json
from typing import Any

import pytest

from orderpipe_local.sources.event_filter import EventFilter, FilterPatternError


def criteria(*patterns: dict[str, Any]) -> dict[str, Any]:
    return {"Filters": [{"Pattern": json.dumps(pattern)} for pattern in patterns]}


def matches(pattern: dict[str, Any], record: dict[str, Any]) -> bool:
    return EventFilter.from_criteria(criteria(pattern)).matches(record)


def stream_record(event_name: str = "INSERT", **new_image: dict[str, str]) -> dict[str, Any]:
    return {
        "eventID": "1",
        "eventName": event_name,
        "eventVersion": "1.1",
        "eventSource": "aws:dynamodb",
        "awsRegion": "us-east-1",
        "dynamodb": {
            "Keys": {"orderId": {"S": "o-1"}},
            "NewImage": {"orderId": {"S": "o-1"}, **new_image},
            "SequenceNumber": "111",
            "SizeBytes": 26,
            "StreamViewType": "NEW_IMAGE",
        },
    }


def test_the_template_filter_lets_inserts_through_only() -> None:
    # Given the notifier's filter from template.yaml
    event_filter = EventFilter.from_criteria({"Filters": [{"Pattern": '{"eventName": ["INSERT"]}'}]})

    # Then
    assert event_filter.matches(stream_record("INSERT"))
    assert not event_filter.matches(stream_record("MODIFY"))
    assert not event_filter.matches(stream_record("REMOVE"))
    assert not event_filter.matches({"dynamodb": {}})  # no eventName at all


def test_no_filters_let_everything_through() -> None:
    assert EventFilter.from_criteria(None).matches({"anything": 1})
    assert EventFilter.from_criteria({"Filters": []}).matches({})
    assert not EventFilter.from_criteria(None)


def test_any_filter_may_match() -> None:
    event_filter = EventFilter.from_criteria(criteria({"eventName": ["INSERT"]}, {"eventName": ["REMOVE"]}))
    assert event_filter.matches(stream_record("REMOVE"))
    assert not event_filter.matches(stream_record("MODIFY"))


def test_all_fields_of_a_pattern_must_match() -> None:
    pattern = {"eventName": ["INSERT"], "dynamodb": {"NewImage": {"status": {"S": ["PLACED"]}}}}
    assert matches(pattern, stream_record("INSERT", status={"S": "PLACED"}))
    assert not matches(pattern, stream_record("INSERT", status={"S": "NOTIFIED"}))
    assert not matches(pattern, stream_record("MODIFY", status={"S": "PLACED"}))
    assert not matches(pattern, stream_record("INSERT"))  # the field is missing


@pytest.mark.parametrize(
    ("rule", "value", "expected"),
    [
        ("PLACED", "PLACED", True),
        ("PLACED", "placed", False),
        ("", "", True),
        (None, None, True),
        (None, "x", False),
        (True, True, True),
        (True, 1, False),
        (300, 300, True),
        (300, 300.0, False),  # numbers compare as their JSON text, as in Lambda
        (300, "300", False),
        ({"prefix": "us-"}, "us-east-1", True),
        ({"prefix": "us-"}, "eu-west-1", False),
        ({"prefix": {"equals-ignore-case": "US-"}}, "us-east-1", True),
        ({"suffix": ".png"}, "a.png", True),
        ({"suffix": ".png"}, "a.jpg", False),
        ({"equals-ignore-case": "placed"}, "PLACED", True),
        ({"wildcard": "o-*-x"}, "o-123-x", True),
        ({"wildcard": "o-*-x"}, "o-123-y", False),
        ({"anything-but": "MODIFY"}, "INSERT", True),
        ({"anything-but": "MODIFY"}, "MODIFY", False),
        ({"anything-but": ["MODIFY", "REMOVE"]}, "REMOVE", False),
        ({"anything-but": {"prefix": "tmp-"}}, "tmp-1", False),
        ({"anything-but": {"prefix": "tmp-"}}, "o-1", True),
        ({"numeric": [">", 10, "<=", 20]}, 15, True),
        ({"numeric": [">", 10, "<=", 20]}, 20, True),
        ({"numeric": [">", 10, "<=", 20]}, 10, False),
        ({"numeric": ["=", 2.5]}, 2.5, True),
        ({"numeric": [">=", 100]}, "250.00", True),  # DynamoDB's N is a string
        ({"numeric": [">=", 100]}, "abc", False),
        ({"numeric": [">=", 100]}, True, False),
    ],
)
def test_rules(rule: Any, value: Any, expected: bool) -> None:
    assert matches({"field": [rule]}, {"field": value}) is expected


def test_a_rule_list_is_an_or() -> None:
    pattern = {"field": ["a", {"prefix": "b"}, {"numeric": ["<", 0]}]}
    assert matches(pattern, {"field": "a"})
    assert matches(pattern, {"field": "bee"})
    assert matches(pattern, {"field": -1})
    assert not matches(pattern, {"field": "c"})


def test_exists_looks_at_leaves_only() -> None:
    assert matches({"note": [{"exists": True}]}, {"note": "x"})
    assert not matches({"note": [{"exists": True}]}, {})
    assert matches({"note": [{"exists": False}]}, {})
    assert not matches({"note": [{"exists": False}]}, {"note": "x"})
    # As Lambda documents for DynamoDB: an object is not a leaf, so test its type key instead
    assert not matches(
        {"dynamodb": {"NewImage": {"note": [{"exists": True}]}}}, stream_record(note={"S": "x"})
    )
    assert matches(
        {"dynamodb": {"NewImage": {"note": {"S": [{"exists": True}]}}}}, stream_record(note={"S": "x"})
    )
    assert matches({"dynamodb": {"NewImage": {"note": {"S": [{"exists": False}]}}}}, stream_record())


def test_anything_but_needs_the_field() -> None:
    assert not matches({"field": [{"anything-but": "x"}]}, {})


def test_arrays_in_the_event_match_when_any_element_does() -> None:
    assert matches({"tags": ["vip"]}, {"tags": ["new", "vip"]})
    assert not matches({"tags": ["vip"]}, {"tags": ["new"]})
    assert matches({"items": {"sku": ["MOP-001"]}}, {"items": [{"sku": "X"}, {"sku": "MOP-001"}]})


def test_or_of_patterns() -> None:
    pattern = {"$or": [{"eventName": ["INSERT"]}, {"dynamodb": {"NewImage": {"status": {"S": ["PLACED"]}}}}]}
    assert matches(pattern, stream_record("INSERT"))
    assert matches(pattern, stream_record("MODIFY", status={"S": "PLACED"}))
    assert not matches(pattern, stream_record("MODIFY", status={"S": "NOTIFIED"}))


def test_sqs_bodies_are_parsed_when_the_pattern_looks_inside() -> None:
    event_filter = EventFilter.from_criteria(criteria({"body": {"kind": ["order"]}}), body_key="body")
    assert event_filter.matches({"body": '{"kind": "order"}'})
    assert not event_filter.matches({"body": '{"kind": "ping"}'})
    assert not event_filter.matches({"body": "kind order"})  # not JSON: dropped


def test_sqs_plain_bodies_match_string_rules_only_when_not_json() -> None:
    event_filter = EventFilter.from_criteria(criteria({"body": [{"prefix": "ORDER "}]}), body_key="body")
    assert event_filter.matches({"body": "ORDER 42"})
    assert not event_filter.matches({"body": '{"ORDER ": 1}'})


@pytest.mark.parametrize(
    "pattern",
    [
        "not json",
        "[]",
        '{"eventName": "INSERT"}',
        '{"eventName": []}',
        '{"eventName": [{"regex": "I.*"}]}',
        '{"eventName": [{"prefix": 1}]}',
        '{"n": [{"numeric": [">", "10"]}]}',
        '{"n": [{"numeric": ["!=", 1]}]}',
        '{"n": [{"numeric": ["=", 1, "<", 2]}]}',
        '{"n": [{"exists": "yes"}]}',
        '{"n": [{"anything-but": {"numeric": [">", 1]}}]}',
        '{"dynamodb": {}}',
        '{"$or": [{"a": ["x"]}]}',
    ],
)
def test_patterns_lambda_refuses_are_refused(pattern: str) -> None:
    with pytest.raises(FilterPatternError):
        EventFilter.from_criteria({"Filters": [{"Pattern": pattern}]})
