"""Lambda event filtering (an event source mapping's `FilterCriteria`), played locally.

Lambda uses EventBridge's pattern syntax: a record passes when any one of the filters matches
it. Within a pattern every field named must match (AND); a list of rules for one field
matches when any rule does (OR). The rules supported: exact strings, numbers, booleans and
null; `prefix`, `suffix`, `equals-ignore-case`, `wildcard`; `anything-but` (a value, a list,
or a `prefix`/`suffix`/`equals-ignore-case`/`wildcard` rule); `numeric` (=, <, <=, >, >=,
ranges); `exists`; and `$or`. A pattern using anything else is rejected when the mapping is
created, as Lambda rejects it.

Where the event holds a list, a rule matches when it matches any element. `exists` only
looks at leaves, as in Lambda (an object-valued field does not "exist" for it). Exact numbers
compare by their JSON text, so 300 and 300.0 differ. `numeric` also accepts a string holding
a number, so DynamoDB's `{"N": "12.5"}` can be compared.

For SQS the `body` is parsed as JSON when the pattern gives `body` nested fields; a body that
is not JSON then never matches (and a JSON body never matches string rules on `body`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

_MISSING = object()
_NUMERIC_OPERATORS = {"=", "<", "<=", ">", ">="}
_STRING_RULES = {"prefix", "suffix", "equals-ignore-case", "wildcard"}


class FilterPatternError(ValueError):
    """A FilterCriteria pattern Lambda would refuse."""


class EventFilter:
    """The filters of one event source mapping; `matches(record)` decides a record's fate."""

    def __init__(self, patterns: Iterable[Mapping[str, Any]] = (), *, body_key: str | None = None) -> None:
        self.patterns = [dict(pattern) for pattern in patterns]
        self.body_key = body_key
        for pattern in self.patterns:
            _validate_object(pattern, path="")

    @classmethod
    def from_criteria(cls, criteria: Mapping[str, Any] | None, *, body_key: str | None = None) -> EventFilter:
        """From a mapping's `FilterCriteria` (`{"Filters": [{"Pattern": "<json>"}]}`)."""
        patterns = []
        for item in (criteria or {}).get("Filters") or []:
            text = item.get("Pattern") if isinstance(item, Mapping) else None
            if not isinstance(text, str):
                raise FilterPatternError(f"a filter needs a Pattern string, got {item!r}")
            try:
                pattern = json.loads(text)
            except json.JSONDecodeError as exc:
                raise FilterPatternError(f"filter pattern is not JSON: {text!r}") from exc
            if not isinstance(pattern, dict):
                raise FilterPatternError(f"filter pattern must be a JSON object: {text!r}")
            patterns.append(pattern)
        return cls(patterns, body_key=body_key)

    def __bool__(self) -> bool:
        return bool(self.patterns)

    def matches(self, record: Mapping[str, Any]) -> bool:
        """True when there are no filters or any filter matches the (Lambda-shaped) record."""
        if not self.patterns:
            return True
        return any(self._matches_pattern(pattern, record) for pattern in self.patterns)

    def _matches_pattern(self, pattern: Mapping[str, Any], record: Mapping[str, Any]) -> bool:
        key = self.body_key
        if key is None or key not in pattern or not isinstance(record.get(key), str):
            return _match_object(pattern, record)
        parsed = _json_object(record[key])
        if isinstance(pattern[key], dict):
            if parsed is None:
                return False  # a JSON pattern for the body never matches a plain-string body
            return _match_object(pattern, {**record, key: parsed})
        if parsed is not None:
            return False  # string rules for the body never match a JSON body
        return _match_object(pattern, record)


def _json_object(text: str) -> Any:
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict | list) else None


# --- validation ---------------------------------------------------------------------------


def _validate_object(pattern: Mapping[str, Any], path: str) -> None:
    if not pattern:
        raise FilterPatternError(f"empty object in filter pattern at {path or '<root>'}")
    for key, value in pattern.items():
        where = f"{path}.{key}" if path else key
        if key == "$or":
            if not isinstance(value, list) or len(value) < 2:
                raise FilterPatternError(f"$or needs a list of at least two patterns at {where}")
            for alternative in value:
                if not isinstance(alternative, dict):
                    raise FilterPatternError(f"$or alternatives must be objects at {where}")
                _validate_object(alternative, where)
        elif isinstance(value, dict):
            _validate_object(value, where)
        elif isinstance(value, list):
            if not value:
                raise FilterPatternError(f"empty rule list at {where}")
            for rule in value:
                _validate_rule(rule, where)
        else:
            raise FilterPatternError(f"rules must be in a list at {where}, got {value!r}")


def _validate_rule(rule: Any, where: str) -> None:
    if rule is None or isinstance(rule, str | int | float | bool):
        return
    if not isinstance(rule, dict) or len(rule) != 1:
        raise FilterPatternError(f"a rule is a value or a one-key object at {where}, got {rule!r}")
    ((operator, argument),) = rule.items()
    if operator in _STRING_RULES:
        _validate_string_rule(operator, argument, where)
    elif operator == "exists":
        if not isinstance(argument, bool):
            raise FilterPatternError(f"exists takes true or false at {where}")
    elif operator == "numeric":
        _numeric_conditions(argument, where)
    elif operator == "anything-but":
        if isinstance(argument, dict):
            if len(argument) != 1 or next(iter(argument)) not in _STRING_RULES:
                raise FilterPatternError(f"unsupported anything-but rule at {where}: {argument!r}")
            ((inner, inner_argument),) = argument.items()
            _validate_string_rule(inner, inner_argument, where)
        elif isinstance(argument, list):
            if not argument or not all(_is_scalar(value) for value in argument):
                raise FilterPatternError(f"anything-but takes a non-empty list of values at {where}")
        elif not _is_scalar(argument):
            raise FilterPatternError(f"unsupported anything-but rule at {where}: {argument!r}")
    else:
        raise FilterPatternError(f"unsupported filter rule {operator!r} at {where}")


def _validate_string_rule(operator: str, argument: Any, where: str) -> None:
    if operator == "equals-ignore-case" and isinstance(argument, list):
        if argument and all(isinstance(value, str) for value in argument):
            return
    elif operator in ("prefix", "suffix") and isinstance(argument, dict):
        if list(argument) == ["equals-ignore-case"] and isinstance(argument["equals-ignore-case"], str):
            return
    elif isinstance(argument, str):
        return
    raise FilterPatternError(f"{operator} takes a string at {where}, got {argument!r}")


def _is_scalar(value: Any) -> bool:
    return value is None or isinstance(value, str | int | float | bool)


def _numeric_conditions(argument: Any, where: str) -> list[tuple[str, Decimal]]:
    if not isinstance(argument, list) or len(argument) not in (2, 4):
        raise FilterPatternError(f"numeric takes [op, n] or [op, n, op, n] at {where}")
    conditions = []
    for operator, bound in zip(argument[::2], argument[1::2], strict=True):
        if (
            operator not in _NUMERIC_OPERATORS
            or isinstance(bound, bool)
            or not isinstance(bound, int | float)
        ):
            raise FilterPatternError(f"bad numeric condition {operator!r} {bound!r} at {where}")
        conditions.append((operator, Decimal(str(bound))))
    if len(conditions) == 2 and "=" in (conditions[0][0], conditions[1][0]):
        raise FilterPatternError(f"numeric '=' cannot be part of a range at {where}")
    return conditions


# --- matching -----------------------------------------------------------------------------


def _match_object(pattern: Mapping[str, Any], event: Any) -> bool:
    fields = event if isinstance(event, Mapping) else {}
    for key, rules in pattern.items():
        if key == "$or":
            if not any(_match_object(alternative, event) for alternative in rules):
                return False
            continue
        value = fields.get(key, _MISSING)
        if isinstance(rules, dict):
            candidates = value if isinstance(value, list) else [value]
            if not any(_match_object(rules, candidate) for candidate in candidates):
                return False
        elif not any(_match_rule(rule, value) for rule in rules):
            return False
    return True


def _leaves(value: Any) -> list[Any]:
    """The leaf values a rule is compared with; objects are not leaves."""
    if value is _MISSING:
        return []
    values = value if isinstance(value, list) else [value]
    return [item for item in values if not isinstance(item, dict | list)]


def _match_rule(rule: Any, value: Any) -> bool:
    if not isinstance(rule, dict):
        return any(_same_value(rule, leaf) for leaf in _leaves(value))
    ((operator, argument),) = rule.items()
    if operator == "exists":
        return bool(_leaves(value)) is argument
    leaves = _leaves(value)
    if operator == "numeric":
        conditions = _numeric_conditions(argument, "")
        return any(_numeric_match(conditions, leaf) for leaf in leaves)
    if operator == "anything-but":
        return any(not _anything_but_excludes(argument, leaf) for leaf in leaves)
    return any(_string_match(operator, argument, leaf) for leaf in leaves)


def _same_value(expected: Any, actual: Any) -> bool:
    if expected is None or isinstance(expected, bool):
        return actual is expected
    if isinstance(expected, str):
        return isinstance(actual, str) and expected == actual
    if isinstance(actual, bool) or not isinstance(actual, int | float):
        return False
    return json.dumps(expected) == json.dumps(actual)  # numbers compare as text, as in Lambda


def _string_match(operator: str, argument: Any, value: Any) -> bool:
    if not isinstance(value, str):
        return False
    if operator == "equals-ignore-case":
        options = argument if isinstance(argument, list) else [argument]
        return any(value.casefold() == option.casefold() for option in options)
    if isinstance(argument, dict):  # {"prefix": {"equals-ignore-case": "..."}}
        value, argument = value.casefold(), argument["equals-ignore-case"].casefold()
    if operator == "prefix":
        return bool(value.startswith(argument))
    if operator == "suffix":
        return bool(value.endswith(argument))
    return _wildcard(argument).fullmatch(value) is not None


def _wildcard(pattern: str) -> re.Pattern[str]:
    return re.compile(".*".join(re.escape(part) for part in pattern.split("*")), re.DOTALL)


def _anything_but_excludes(argument: Any, value: Any) -> bool:
    if isinstance(argument, dict):
        ((operator, inner),) = argument.items()
        return _string_match(operator, inner, value)
    excluded = argument if isinstance(argument, list) else [argument]
    return any(_same_value(item, value) for item in excluded)


def _numeric_match(conditions: list[tuple[str, Decimal]], value: Any) -> bool:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return False
    try:
        number = Decimal(str(value).strip())
    except InvalidOperation:
        return False
    if not number.is_finite():
        return False
    checks = {
        "=": number.__eq__,
        "<": number.__lt__,
        "<=": number.__le__,
        ">": number.__gt__,
        ">=": number.__ge__,
    }
    return all(checks[operator](bound) for operator, bound in conditions)
