"""The runner refuses to start on a moto, aws-sam-translator or uvicorn other than the one it pins."""

from __future__ import annotations

from importlib import metadata

import pytest

from orderpipe_local import cli, versions


def test_the_touched_packages_are_pinned_exactly_and_installed_as_pinned() -> None:
    pins = versions.pinned_versions()

    assert set(pins) == {"moto", "aws-sam-translator", "uvicorn"}
    assert pins == {name: metadata.version(name) for name in pins}
    versions.check_pinned_versions()  # what make dev installs passes


@pytest.mark.parametrize("command", ["local", "invoke"])
def test_another_moto_is_refused_with_one_line_naming_the_version_needed(
    command: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    installed = metadata.version
    needed = versions.pinned_versions()["moto"]
    monkeypatch.setattr(metadata, "version", lambda name: "5.0.0" if name == "moto" else installed(name))
    args = [command] if command == "local" else [command, "ingest", "-e", "events/ingest-post-order.json"]

    code = cli.main(args)

    error = capsys.readouterr().err
    assert code == 2
    assert error == (
        f"orderpipe {command}: orderpipe local needs moto=={needed} (installed: 5.0.0); "
        "install from the lock with `make dev`\n"
    )


def test_a_missing_translator_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    installed = metadata.version

    def version(name: str) -> str:
        if name == "aws-sam-translator":
            raise metadata.PackageNotFoundError(name)
        return installed(name)

    monkeypatch.setattr(metadata, "version", version)

    with pytest.raises(versions.VersionMismatch, match=r"aws-sam-translator==[\d.]+ \(installed: none\)"):
        versions.check_pinned_versions()
