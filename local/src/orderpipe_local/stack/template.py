"""`template.yaml` after the SAM transform, with its intrinsic functions resolved.

The local pipeline and the tests read queues, tables, topics, environment variables and
event source mappings from here, so they cannot drift from what `sam deploy` creates.
Parameter values are checked as CloudFormation checks them (constraints, then `Rules`), so a
configuration that `sam deploy` would refuse is refused locally too.
"""

from __future__ import annotations

import logging
import os
import re
import shlex
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from samtranslator.metrics.method_decorator import MetricsMethodWrapperSingleton
from samtranslator.translator.transform import transform
from samtranslator.yaml_helper import yaml_parse

ACCOUNT_ID = "123456789012"  # moto's default account
DEFAULT_REGION = "us-east-1"
_PLACEHOLDER_CODE_URI = "s3://orderpipe-local/{}.zip"
_LONG_FORM = re.compile(r"ParameterKey=(?P<key>[^,]+),ParameterValue=(?P<value>.*)", re.DOTALL)

# Every transform warns "Feature 'deployment_preference_condition_fix' not available in Feature
# Toggle Config": the translator asks its own default config for a feature that config lacks.
logging.getLogger("samtranslator.feature_toggle").setLevel(logging.ERROR)


class TemplateError(ValueError):
    """The template uses something this reader cannot resolve, or its parameters are invalid."""


def project_root() -> Path:
    """The folder holding `template.yaml`: ORDERPIPE_ROOT, else the current folder or a parent."""
    if root := os.environ.get("ORDERPIPE_ROOT"):
        return Path(root)
    here = Path.cwd()
    for folder in (here, *here.parents):
        if (folder / "template.yaml").is_file():
            return folder
    raise TemplateError("no template.yaml here or in any parent folder (set ORDERPIPE_ROOT)")


def samconfig_parameters(samconfig: Path, environment: str = "default") -> dict[str, str]:
    """`parameter_overrides` of one samconfig environment's deploy command (else its global one).

    Read as SAM CLI reads them: a string of `Key=Value` pairs, shell-quoted where a value holds
    spaces (`Note="two words"`, `SupportEmail=""`), or a list of such pairs; the long form
    `ParameterKey=Key,ParameterValue=Value` is accepted too.
    """
    if not samconfig.is_file():
        return {}
    config = tomllib.loads(samconfig.read_text())
    env = config.get(environment, {})
    overrides: Any = None
    for command in ("deploy", "global"):
        overrides = overrides or env.get(command, {}).get("parameters", {}).get("parameter_overrides")
    if not overrides:
        return {}
    try:
        return parse_parameter_overrides(overrides)
    except ValueError as error:
        raise TemplateError(f"{samconfig}: {error}") from error


def parse_parameter_overrides(overrides: str | list[str]) -> dict[str, str]:
    """`Key=Value` pairs as SAM CLI reads them (samconfig's `parameter_overrides`, or
    `--parameter-overrides`): shell-quoted where a value holds spaces (`Note="two words"`), in
    one string or a list of them; the long form `ParameterKey=Key,ParameterValue=Value` too.
    A ValueError names a pair that is neither."""
    items = overrides if isinstance(overrides, list) else [overrides]
    parameters: dict[str, str] = {}
    for pair in (token for item in items for token in shlex.split(item)):
        if match := _LONG_FORM.fullmatch(pair):
            parameters[match["key"]] = match["value"]
            continue
        key, separator, value = pair.partition("=")
        if not separator or not key:
            raise ValueError(f"parameter override {pair!r} is not Key=Value")
        parameters[key] = value
    return parameters


@dataclass
class Template:
    """The transformed CloudFormation template plus the values its parameters take."""

    resources: dict[str, dict[str, Any]]
    parameters: dict[str, str]
    conditions: dict[str, Any]
    outputs: dict[str, Any]
    region: str = DEFAULT_REGION
    stack_name: str = "orderpipe"
    source_code_uris: dict[str, str] = field(default_factory=dict)
    rules: dict[str, Any] = field(default_factory=dict)
    mappings: dict[str, Any] = field(default_factory=dict)

    def resources_of_type(self, resource_type: str) -> dict[str, dict[str, Any]]:
        return {
            logical_id: resource
            for logical_id, resource in self.resources.items()
            if resource["Type"] == resource_type and self.is_created(logical_id)
        }

    def invoked_function(self, logical_id: str) -> str:
        """The function a reference invokes: itself, or the function behind an alias (SAM's
        AutoPublishAlias points the API and the event sources at the alias)."""
        resource = self.resources.get(logical_id, {})
        if resource.get("Type") == "AWS::Lambda::Alias":
            target = resource.get("Properties", {}).get("FunctionName")
            if isinstance(target, dict) and isinstance(target.get("Ref"), str):
                return str(target["Ref"])
        return logical_id

    def is_created(self, logical_id: str) -> bool:
        condition = self.resources[logical_id].get("Condition")
        return condition is None or bool(self.evaluate_condition(condition))

    def evaluate_condition(self, name: str) -> bool:
        if name not in self.conditions:
            raise TemplateError(f"unknown condition {name}")
        return bool(Resolver(self, lambda *_: None).resolve(self.conditions[name]))

    def check_rules(self) -> None:
        """Raise TemplateError for the first `Rules` assertion the parameter values break."""
        resolver = Resolver(self, lambda *_: None)
        for name, rule in self.rules.items():
            if "RuleCondition" in rule and not resolver.resolve(rule["RuleCondition"]):
                continue
            for assertion in rule.get("Assertions", []):
                if not resolver.resolve(assertion["Assert"]):
                    reason = assertion.get("AssertDescription", "assertion failed")
                    raise TemplateError(f"template rule {name}: {reason}")

    def pseudo_parameters(self) -> dict[str, str]:
        return {
            "AWS::Region": self.region,
            "AWS::AccountId": ACCOUNT_ID,
            "AWS::Partition": "aws",
            "AWS::URLSuffix": "amazonaws.com",
            "AWS::StackName": self.stack_name,
            "AWS::StackId": f"arn:aws:cloudformation:{self.region}:{ACCOUNT_ID}:stack/{self.stack_name}/x",
            "AWS::NoValue": "",
        }


def transformed_template(path: Path | None = None, *, environment: str = "default") -> dict[str, Any]:
    """The whole CloudFormation template the SAM transform makes of `template.yaml` (parameters,
    mappings and outputs included), for linters; code locations are placeholders."""
    region = os.environ.get("AWS_DEFAULT_REGION") or DEFAULT_REGION
    return _transform(path, None, environment, region)[0]


def _transform(
    path: Path | None, overrides: Mapping[str, str] | None, environment: str, region: str
) -> tuple[dict[str, Any], dict[str, str], dict[str, str]]:
    path = path or project_root() / "template.yaml"
    sam_template = yaml_parse(path.read_text())

    code_uris: dict[str, str] = {}
    for logical_id, resource in sam_template.get("Resources", {}).items():
        if resource.get("Type") == "AWS::Serverless::Function":
            # The transform wants S3 code locations; the local pipeline runs the code in-process.
            properties = resource.setdefault("Properties", {})
            code_uris[logical_id] = str(properties.get("CodeUri", ""))
            properties["CodeUri"] = _PLACEHOLDER_CODE_URI.format(logical_id)

    declared: dict[str, dict[str, Any]] = sam_template.get("Parameters", {})
    from_samconfig = samconfig_parameters(path.parent / "samconfig.toml", environment)
    for source, values in (("samconfig.toml", from_samconfig), ("overrides", overrides or {})):
        if unknown := set(values) - set(declared):
            raise TemplateError(f"unknown template parameters in {source}: {', '.join(sorted(unknown))}")
    parameters = {name: str(spec["Default"]) for name, spec in declared.items() if "Default" in spec}
    parameters |= from_samconfig
    parameters |= {name: str(value) for name, value in (overrides or {}).items()}
    for name, spec in declared.items():
        if name not in parameters:
            raise TemplateError(f"parameter {name} has no default and no value")
        _check_parameter(name, spec, parameters[name])

    previous_region = os.environ.get("AWS_DEFAULT_REGION")
    os.environ["AWS_DEFAULT_REGION"] = region  # the SAM translator reads the region from boto
    try:
        transformed = transform(sam_template, dict(parameters), _NoManagedPolicies())
    finally:
        if previous_region is None:
            del os.environ["AWS_DEFAULT_REGION"]
        else:
            os.environ["AWS_DEFAULT_REGION"] = previous_region
        # The translator records timings for a publisher it never flushes; flush them to its
        # offline publisher so it does not warn "There are unpublished metrics" later.
        MetricsMethodWrapperSingleton.get_instance().publish()
    return transformed, parameters, code_uris


def load_template(
    path: Path | None = None,
    *,
    overrides: Mapping[str, str] | None = None,
    environment: str = "default",
    region: str | None = None,
    stack_name: str = "orderpipe",
) -> Template:
    """Parse and SAM-transform `template.yaml`.

    Parameter values: the template's defaults, then samconfig's `environment`, then `overrides`.
    """
    region = region or os.environ.get("AWS_DEFAULT_REGION") or DEFAULT_REGION
    transformed, parameters, code_uris = _transform(path, overrides, environment, region)

    template = Template(
        resources=transformed["Resources"],
        parameters=parameters,
        conditions=transformed.get("Conditions", {}),
        outputs=transformed.get("Outputs", {}),
        region=region,
        stack_name=stack_name,
        source_code_uris=code_uris,
        rules=transformed.get("Rules", {}),
        mappings=transformed.get("Mappings", {}),
    )
    template.check_rules()
    return template


def _check_parameter(name: str, spec: Mapping[str, Any], value: str) -> None:
    """The constraints CloudFormation checks on a parameter value before any change."""
    if "AllowedValues" in spec and value not in {str(allowed) for allowed in spec["AllowedValues"]}:
        raise TemplateError(f"parameter {name}={value!r} is not one of {spec['AllowedValues']}")
    if spec.get("Type") == "Number":
        try:
            number = float(value)
        except ValueError:
            raise TemplateError(f"parameter {name}={value!r} is not a number") from None
        if "MinValue" in spec and number < float(spec["MinValue"]):
            raise TemplateError(f"parameter {name}={value} is below its MinValue {spec['MinValue']}")
        if "MaxValue" in spec and number > float(spec["MaxValue"]):
            raise TemplateError(f"parameter {name}={value} is above its MaxValue {spec['MaxValue']}")
    if "MinLength" in spec and len(value) < int(spec["MinLength"]):
        raise TemplateError(f"parameter {name} is shorter than {spec['MinLength']} characters")
    if "MaxLength" in spec and len(value) > int(spec["MaxLength"]):
        raise TemplateError(f"parameter {name} is longer than {spec['MaxLength']} characters")
    if "AllowedPattern" in spec and not re.fullmatch(str(spec["AllowedPattern"]), value):
        raise TemplateError(f"parameter {name}={value!r} does not match {spec['AllowedPattern']}")


class _NoManagedPolicies:
    """The template names managed policies by ARN, so the translator needs no IAM lookup."""

    def load(self) -> dict[str, str]:
        return {}


ResourceLookup = Callable[[str, str | None], Any]
"""(logical id, attribute or None for Ref) -> value, or None if not created yet."""


class Unresolved(LookupError):
    """A Ref or GetAtt points at a resource that does not exist yet."""


class Resolver:
    """Evaluates the intrinsic functions the template uses against created resources."""

    def __init__(self, template: Template, lookup: ResourceLookup) -> None:
        self.template = template
        self.lookup = lookup

    def resolve(self, value: Any) -> Any:
        if isinstance(value, list):
            return [item for item in (self.resolve(v) for v in value) if item is not _NO_VALUE]
        if not isinstance(value, dict):
            return value
        if len(value) == 1:
            ((key, argument),) = value.items()
            if key == "Ref" or key.startswith("Fn::") or key == "Condition":
                return self._intrinsic(key, argument)
        resolved = {k: self.resolve(v) for k, v in value.items()}
        return {k: v for k, v in resolved.items() if v is not _NO_VALUE}

    def _intrinsic(self, name: str, argument: Any) -> Any:
        match name:
            case "Ref":
                return self._ref(argument)
            case "Fn::GetAtt":
                logical_id, attribute = argument if isinstance(argument, list) else argument.split(".", 1)
                return self._attribute(logical_id, attribute)
            case "Fn::Sub":
                return self._sub(argument)
            case "Fn::If":
                condition, if_true, if_false = argument
                return self.resolve(if_true if self.template.evaluate_condition(condition) else if_false)
            case "Fn::Equals":
                left, right = (self.resolve(v) for v in argument)
                return str(left) == str(right)
            case "Fn::Not":
                return not self.resolve(argument[0])
            case "Fn::And":
                return all(self.resolve(v) for v in argument)
            case "Fn::Or":
                return any(self.resolve(v) for v in argument)
            case "Fn::Contains":  # a rule function: is the string one of the list's?
                values, value = argument
                return str(self.resolve(value)) in {str(v) for v in self.resolve(values)}
            case "Condition":
                return self.template.evaluate_condition(argument)
            case "Fn::Join":
                separator, values = argument
                return separator.join(str(v) for v in self.resolve(values))
            case "Fn::FindInMap":
                mapping, top, second = (str(self.resolve(part)) for part in argument)
                try:
                    return self.template.mappings[mapping][top][second]
                except KeyError as exc:
                    raise TemplateError(f"Fn::FindInMap: no {mapping}.{top}.{second}") from exc
            case "Fn::Select":
                index, values = argument
                return self.resolve(values)[int(self.resolve(index))]
            case "Fn::Split":
                separator, source = argument
                return str(self.resolve(source)).split(separator)
            case _:
                raise TemplateError(f"intrinsic function {name} is not supported locally")

    def _ref(self, name: str) -> Any:
        if name == "AWS::NoValue":
            return _NO_VALUE
        pseudo = self.template.pseudo_parameters()
        if name in pseudo:
            return pseudo[name]
        if name in self.template.parameters:
            return self.template.parameters[name]
        return self._attribute(name, None)

    def _attribute(self, logical_id: str, attribute: str | None) -> Any:
        if logical_id not in self.template.resources:
            raise TemplateError(f"unknown resource {logical_id}")
        value = self.lookup(logical_id, attribute)
        if value is None:
            raise Unresolved(logical_id)
        return value

    def _sub(self, argument: Any) -> str:
        text, variables = (argument, {}) if isinstance(argument, str) else argument
        values = {name: self.resolve(v) for name, v in variables.items()}

        def replace(token: str) -> str:
            if token in values:
                return str(values[token])
            if "." in token:
                logical_id, attribute = token.split(".", 1)
                return str(self._attribute(logical_id, attribute))
            return str(self._ref(token))

        out, rest = [], text
        while "${" in rest:
            before, _, after = rest.partition("${")
            token, _, rest = after.partition("}")
            out.append(before)
            out.append("${" + token[1:] + "}" if token.startswith("!") else replace(token))
        out.append(rest)
        return "".join(out)


class _NoValue:
    pass


_NO_VALUE = _NoValue()
