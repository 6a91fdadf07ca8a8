"""The import arrows of DESIGN.md, checked by import-linter against the real code."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_import_contracts_hold():
    lint = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    assert lint, "import-linter is a dev dependency; reinstall with .[dev]"
    result = subprocess.run([lint], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_what_the_tests_lean_on_is_pinned_to_a_tested_range():
    """Ray Serve's internals (HAProxy template, deployment actors), MLflow's store errors,
    schemathesis' API and the OpenAPI document FastAPI and pydantic generate change between
    minor releases: each requirement has an upper bound, and the installed release lies
    inside it."""
    import tomllib
    from importlib import metadata

    from packaging.requirements import Requirement

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = [Requirement(r) for r in [*project["dependencies"],
                                             *project["optional-dependencies"]["dev"]]]
    for name in ("ray", "mlflow", "schemathesis", "torch", "fastapi", "pydantic",
                 "pydantic-settings"):
        (requirement,) = [r for r in requirements if r.name == name]
        bounds = {spec.operator for spec in requirement.specifier}
        assert bounds & {"<", "<=", "=="}, f"{requirement} has no upper bound"
        assert metadata.version(name).split("+")[0] in requirement.specifier, (
            f"installed {name} {metadata.version(name)} is outside {requirement.specifier}")
