"""The import contracts of ``pyproject.toml`` hold, and each one fails when broken; no module imports another's
private names.

Every contract is broken once, on a copy of ``engine/`` and ``app/``, by one import that a careless change could
add; import-linter must report that contract BROKEN. A contract added to ``pyproject.toml`` without a case here
fails :func:`test_every_contract_has_a_breaking_case`. import-linter reads the code as text (grimp), so neither
the copy nor Qt is imported.
"""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from .conftest import ROOT

# contract id -> (file of the copy, an import appended to it that the contract forbids)
BREAKS = {
    "engine-no-app": ("engine/runs/files.py", "import app.state"),
    "engine-no-qt": ("engine/maps/overlays.py", "import PySide6.QtGui"),
    "engine-layers": ("engine/models/backbones.py", "import engine.training.loop"),  # a lower room reaching up
    "app-layers": ("app/compare/page.py", "import app.explore.page"),  # one workspace using another's code
    "jobs-without-qt": ("app/explore/compute.py", "from PySide6.QtGui import QImage"),
    "no-cycles": ("engine/errors.py", "import engine.device"),  # engine.device already imports engine.errors
}
# more ways to break the two layer contracts (rooms on one layer independent; the toolkit below the workspaces)
MORE_BREAKS = [
    ("engine-layers", "engine/export/files.py", "import engine.evaluation.metrics"),
    ("engine-layers", "engine/data/scan.py", "import engine.toybirds.dataset"),
    ("engine-layers", "engine/export/crops.py", "import engine.fieldmarks.separation"),
    ("app-layers", "app/common/lane.py", "import app.library.page"),
    ("app-layers", "app/library/page.py", "import app.workspaces"),
]


def lint_imports() -> str:
    found = shutil.which("lint-imports", path=os.pathsep.join([str(Path(sys.executable).parent),
                                                                os.environ.get("PATH", "")]))
    if found is None:
        pytest.skip("import-linter is not installed (pip install fieldmark[test])")
    return found


def lint(root: Path, contract: str | None = None) -> subprocess.CompletedProcess:
    """lint-imports on the tree at ``root`` (its own pyproject.toml), optionally on one contract."""
    args = [lint_imports(), "--no-cache", "--no-logo"] + ([f"--contract={contract}"] if contract else [])
    env = {**os.environ, "PYTHONPATH": str(root)}  # grimp finds the packages on sys.path: this tree's, not another
    return subprocess.run(args, cwd=root, env=env, capture_output=True, text=True, timeout=120)


def contract_ids() -> list[str]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    return [c.get("id", c["name"]) for c in config["tool"]["importlinter"]["contracts"]]


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    """A pristine copy of the packages and the contracts; each case copies it again before changing a file."""
    root = tmp_path_factory.mktemp("tree")
    for package in ("engine", "app"):
        shutil.copytree(ROOT / package, root / package, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    shutil.copy(ROOT / "pyproject.toml", root / "pyproject.toml")
    return root


def test_contracts_hold():
    out = lint(ROOT)
    assert out.returncode == 0, out.stdout + out.stderr


def test_every_contract_has_a_breaking_case():
    assert sorted(contract_ids()) == sorted(BREAKS)


@pytest.mark.parametrize("contract, path, line", [(c, *BREAKS[c]) for c in BREAKS] + MORE_BREAKS)
def test_contract_fails_when_broken(tree, tmp_path, contract, path, line):
    copy = tmp_path / "tree"
    shutil.copytree(tree, copy)
    assert lint(copy, contract).returncode == 0  # the pristine copy keeps it
    with open(copy / path, "a", encoding="utf-8") as fh:
        fh.write(f"\n{line}\n")
    out = lint(copy, contract)
    assert out.returncode != 0 and "BROKEN" in out.stdout, out.stdout + out.stderr


def private_imports(source: str) -> list[str]:
    """``from engine.x import _name`` / ``from .x import _name`` lines: another module's private names."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").split(".")[0] in ("engine", "app")):
            found += [f"line {node.lineno}: {a.name}" for a in node.names
                      if a.name.startswith("_") and not a.name.startswith("__")]
    return found


def test_no_module_imports_another_modules_private_names():
    assert private_imports("from engine.models.backbones import _TV\nfrom .lane import Lane, _guard\n") == [
        "line 1: _TV", "line 2: _guard"]
    offenders = {str(f.relative_to(ROOT)): found for package in ("engine", "app")
                 for f in sorted((ROOT / package).rglob("*.py"))
                 if (found := private_imports(f.read_text(encoding="utf-8")))}
    assert not offenders, offenders
