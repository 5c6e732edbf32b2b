"""Release metadata: one version number (pyproject.toml), read back by the package and the CLI."""

import importlib.metadata
from pathlib import Path

import yaml

import overparam

try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib


ROOT = Path(__file__).resolve().parents[1]


def test_version_comes_from_pyproject():
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert importlib.metadata.version("overparam") == declared
    assert overparam.__version__ == declared


def test_cli_version(overparam):
    result = overparam("--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"overparam {importlib.metadata.version('overparam')}\n"


def test_citation_and_licence_match_the_metadata():
    citation = yaml.safe_load((ROOT / "CITATION.cff").read_text(encoding="utf-8"))
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert citation["license"] == project["license"] == "MIT"
    assert (ROOT / "LICENSE").read_text().startswith("MIT License")
    assert "version" not in citation  # the one version number is pyproject's
