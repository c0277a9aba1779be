"""What `sam build` packs is the product alone (DESIGN invariant 7): no module of the local
runner, nor the emulator and transform it runs on, in any built function; and its dependencies
at the versions requirements/dev.lock pins, the ones the tests run with.

`make test` builds before it runs pytest; run alone, these tests read the last `make build`.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from packaging.utils import canonicalize_name

from orderpipe_local.stack.template import Template, load_template
from orderpipe_local.testing import ROOT

BUILD = ROOT / ".aws-sam" / "build"
DEV_LOCK = ROOT / "requirements" / "dev.lock"
LAMBDA_REQUIREMENTS = ROOT / "requirements" / "lambda.txt"

# Top-level names that only the runner and its test harness use.
RUNNER_ONLY = ("orderpipe_local", "moto", "samtranslator")


def runner_modules(function_dir: Path) -> list[str]:
    """The runner's modules and packages found in a built function folder, as relative paths."""
    found = [
        path.relative_to(function_dir).as_posix()
        for name in RUNNER_ONLY
        for path in (function_dir / name, function_dir / f"{name}.py")
        if path.exists()
    ]
    found += [
        path.relative_to(function_dir).as_posix()
        for path in sorted(function_dir.glob("*.dist-info"))
        if path.name.split("-")[0].lower().replace("_", "-")
        in ("orderpipe-local", "moto", "aws-sam-translator")
    ]
    product = function_dir / "orderpipe"
    found += [
        path.relative_to(function_dir).as_posix()
        for path in sorted(product.rglob("*.py"))
        if not (ROOT / "src" / path.relative_to(function_dir)).is_file()
    ]
    return found


@pytest.fixture(scope="module")
def template() -> Template:
    return load_template(ROOT / "template.yaml")


def built_function_dirs(template: Template) -> list[Path]:
    return [BUILD / function_id for function_id in sorted(template.source_code_uris)]


def test_every_function_is_built_with_the_product_package(template: Template) -> None:
    for function_dir in built_function_dirs(template):
        if not function_dir.is_dir():
            pytest.skip(f"{function_dir} is missing: run `make build` (make test does)")
        # The same files with the same bytes: a build that lost a file, or reused the library
        # of an earlier build (SAM's build cache does not see src/), fails here.
        assert python_sources(function_dir / "orderpipe") == python_sources(ROOT / "src" / "orderpipe"), (
            function_dir.name
        )


def python_sources(package: Path) -> dict[str, bytes]:
    return {path.relative_to(package).as_posix(): path.read_bytes() for path in sorted(package.rglob("*.py"))}


def test_no_build_configuration_uses_sams_build_cache() -> None:
    samconfig = tomllib.loads((ROOT / "samconfig.toml").read_text())
    cached = {
        environment: settings["build"]["parameters"].get("cached")
        for environment, settings in samconfig.items()
        if isinstance(settings, dict) and "build" in settings
    }
    assert cached == dict.fromkeys(cached, None)
    assert "default" in cached


def test_no_built_function_holds_a_runner_module(template: Template) -> None:
    dirs = built_function_dirs(template)
    if not all(function_dir.is_dir() for function_dir in dirs):
        pytest.skip("run `make build` first (make test does)")

    assert {function_dir.name: runner_modules(function_dir) for function_dir in dirs} == {
        function_dir.name: [] for function_dir in dirs
    }


def test_the_check_finds_a_runner_module_packed_by_mistake(tmp_path: Path) -> None:
    (tmp_path / "orderpipe_local" / "moto").mkdir(parents=True)
    (tmp_path / "moto-5.2.5.dist-info").mkdir()
    (tmp_path / "samtranslator.py").touch()
    (tmp_path / "orderpipe" / "stack").mkdir(parents=True)
    (tmp_path / "orderpipe" / "stack" / "provision.py").touch()
    (tmp_path / "orderpipe" / "models.py").touch()

    assert runner_modules(tmp_path) == [
        "orderpipe_local",
        "samtranslator.py",
        "moto-5.2.5.dist-info",
        "orderpipe/stack/provision.py",
    ]


def pinned_versions(requirements: Path) -> dict[str, str]:
    pins = re.findall(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)", requirements.read_text(), re.MULTILINE)
    return {canonicalize_name(name): version for name, version in pins}


def built_versions(function_dir: Path) -> dict[str, str]:
    """Each distribution installed in a built function folder, by its dist-info's name."""
    names = (path.name.removesuffix(".dist-info").split("-", 1) for path in function_dir.glob("*.dist-info"))
    return {canonicalize_name(name): version for name, version in names}


def test_the_functions_requirements_are_the_locks_pins(template: Template) -> None:
    lambda_pins = pinned_versions(LAMBDA_REQUIREMENTS)
    dev_pins = pinned_versions(DEV_LOCK)

    assert {"pydantic", "aws-lambda-powertools"} <= lambda_pins.keys()
    assert lambda_pins == {name: dev_pins.get(name) for name in lambda_pins}, "run `make lock`"
    for function_id, code_uri in template.source_code_uris.items():
        requirements = (ROOT / code_uri / "requirements.txt").read_text().splitlines()
        assert "-r ../../requirements/lambda.txt" in requirements, function_id


def test_every_built_distribution_is_the_locked_version(template: Template) -> None:
    dirs = built_function_dirs(template)
    if not all(function_dir.is_dir() for function_dir in dirs):
        pytest.skip("run `make build` first (make test does)")
    dev_pins = pinned_versions(DEV_LOCK)

    for function_dir in dirs:
        built = built_versions(function_dir)
        built.pop("orderpipe")
        assert "pydantic-core" in built, function_dir.name
        assert built == {name: dev_pins.get(name) for name in built}, function_dir.name


def test_the_version_check_reads_dist_info_names(tmp_path: Path) -> None:
    (tmp_path / "pydantic_core-2.46.5.dist-info").mkdir()
    (tmp_path / "aws_lambda_powertools-3.37.0.dist-info").mkdir()
    (tmp_path / "orderpipe").mkdir()

    assert built_versions(tmp_path) == {"pydantic-core": "2.46.5", "aws-lambda-powertools": "3.37.0"}
