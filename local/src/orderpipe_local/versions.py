"""The exact versions of the packages whose internals the runner touches.

`moto/patches.py` and `moto/endpoint.py` reach into moto's private modules,
`stack/template.py` into aws-sam-translator's and `apigw/server.py` into uvicorn's (it subclasses
its h11 protocol); another version may rename or change them and break the pipeline loudly or,
worse, silently. So the runner's own metadata pins each exactly (`local/pyproject.toml`, the
single place to change them) and refuses to start on any other.
"""

from __future__ import annotations

from importlib import metadata

from packaging.requirements import Requirement

# The distributions whose internals are touched; their exact pins come from the runner's metadata.
TOUCHED = ("moto", "aws-sam-translator", "uvicorn")


class VersionMismatch(RuntimeError):
    """An installed version differs from the one the runner's internals were written against."""


def pinned_versions() -> dict[str, str]:
    """{distribution: the version `orderpipe-local` pins it to}, for each touched distribution."""
    pins: dict[str, str] = {}
    for line in metadata.requires("orderpipe-local") or []:
        requirement = Requirement(line)
        if requirement.name in TOUCHED and requirement.marker is None:
            (specifier,) = requirement.specifier
            if specifier.operator != "==":
                raise VersionMismatch(f"orderpipe-local must pin {requirement.name} exactly, not {specifier}")
            pins[requirement.name] = specifier.version
    return pins


def check_pinned_versions() -> None:
    """Raise `VersionMismatch`, one line naming the version needed, unless each is installed as pinned."""
    for name, needed in pinned_versions().items():
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            installed = "none"
        if installed != needed:
            raise VersionMismatch(
                f"orderpipe local needs {name}=={needed} (installed: {installed}); "
                "install from the lock with `make dev`"
            )
