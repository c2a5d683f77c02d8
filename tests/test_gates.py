"""The gates stay wired: every dependency is pinned in the lock, and pre-commit runs ruff and mypy."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _name(requirement: str) -> str:
    """The normalized project name of a requirement string (PEP 503)."""
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    assert match, requirement
    return re.sub(r"[-_.]+", "-", match[1]).lower()


def test_every_dependency_is_pinned_in_the_lock():
    """A dependency added to pyproject.toml without `make lock` would install unpinned."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = {_name(r) for r in project["dependencies"]}
    for requirements in project["optional-dependencies"].values():
        wanted |= {_name(r) for r in requirements if _name(r) != _name(project["name"])}
    pinned = {
        _name(line.split("==")[0])
        for line in (ROOT / "requirements.lock").read_text().splitlines()
        if "==" in line and not line.startswith((" ", "#"))
    }
    missing = sorted(wanted - pinned)
    assert not missing, f"not in requirements.lock: {missing}; run `make lock` and commit the lock"


def test_pre_commit_runs_ruff_and_mypy():
    config = (ROOT / ".pre-commit-config.yaml").read_text()
    for hook in ("id: ruff-check", "id: ruff-format", "id: mypy"):
        assert hook in config
