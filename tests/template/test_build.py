"""What `sam build` packs is the product alone (DESIGN invariant 7): no module of the local
runner, nor the emulator and transform it runs on, in any built function.

`make test` builds before it runs pytest; run alone, these tests read the last `make build`.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from orderpipe_local.stack.template import Template, load_template
from orderpipe_local.testing import ROOT

BUILD = ROOT / ".aws-sam" / "build"

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
