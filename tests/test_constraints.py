"""constraints.txt pins every package the Makefile installs (the project's dependencies,
its extras, and what they pull in), so that a fresh machine builds the environment the
tests passed with, not whatever versions the index offers that day."""

from __future__ import annotations

import re
import tomllib
from importlib import metadata

from tests.conftest import ROOT


def _name(requirement: str) -> str:
    """A requirement's project name, normalised as PEP 503 says."""
    match = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", requirement.strip())
    assert match, requirement
    return re.sub(r"[-_.]+", "-", match.group(0)).lower()


def _pins() -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, sep, version = line.partition("==")
            assert sep and version, f"constraints.txt: {line!r} is not NAME==VERSION"
            pins[_name(name)] = version
    return pins


def test_every_dependency_and_extra_is_pinned() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        wanted += extra
    pins = _pins()
    missing = sorted({_name(r) for r in wanted} - set(pins))
    assert not missing, f"add to constraints.txt (NAME==VERSION): {missing}"


def test_the_environment_is_the_pinned_one() -> None:
    """The running environment was built from constraints.txt (after `make env`; a pin
    changed without rebuilding shows here)."""
    pins = _pins()
    differ: dict[str, tuple[str, str | None]] = {}
    for name, version in pins.items():
        try:
            have = metadata.version(name)
        except metadata.PackageNotFoundError:
            differ[name] = (version, None)
            continue
        if have.split("+")[0] != version:
            differ[name] = (version, have)
    assert not differ, f"constraints.txt against installed: {differ}"
