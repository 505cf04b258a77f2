"""The spine's rules (docs/architecture.md), checked on the code itself: the import contracts,
the package layout, module names, and the one home of Loihi's numbers."""
from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from loihi_conv.fixed.softif_modes import SOFTIF_MODES
from loihi_conv.snn.neurons import NEURON_MODELS

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("loihi_conv", "netx_export")
LINT = Path(sys.executable).with_name("lint-imports")


def lint_imports(cwd: Path) -> subprocess.CompletedProcess:
    # grimp imports nothing, it reads the files found on sys.path; cwd first makes it read `cwd`'s.
    env = {"PATH": str(LINT.parent), "PYTHONPATH": str(cwd), "LANG": "C.UTF-8"}
    return subprocess.run([str(LINT), "--config", str(cwd / "pyproject.toml"), "--no-cache"], cwd=cwd,
                          capture_output=True, text=True, env=env, timeout=300)


def sources() -> list[Path]:
    return sorted(p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py"))


def test_import_contracts_are_kept():
    res = lint_imports(ROOT)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "Contracts: 3 kept, 0 broken." in res.stdout, res.stdout


def test_an_upward_import_breaks_the_contracts(tmp_path):
    """The check is live: base importing app (an upward import and a circle) is reported."""
    for pkg in PACKAGES:
        shutil.copytree(ROOT / pkg, tmp_path / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    errors = tmp_path / "loihi_conv" / "base" / "errors.py"
    errors.write_text(errors.read_text() + "\nfrom loihi_conv.app import zoo  # noqa\n")
    res = lint_imports(tmp_path)
    assert res.returncode != 0
    assert "loihi_conv.base is not allowed to import loihi_conv.app" in res.stdout, res.stdout
    assert "BROKEN" in res.stdout


def test_top_level_holds_packages_and_the_public_api_only():
    entries = {p.name for p in (ROOT / "loihi_conv").iterdir() if p.name != "__pycache__"}
    modules = {n for n in entries if n.endswith(".py")}
    assert modules == {"__init__.py", "api.py"}  # api: the public import path
    for name in entries - modules:
        assert (ROOT / "loihi_conv" / name / "__init__.py").is_file(), name


def test_module_names_are_unique_and_shadow_no_stdlib_module():
    """One name, one meaning. The one exception is a neuron model's two halves, which share its
    name: ``snn/neurons/<m>.py`` (float) and ``fixed/softif_modes/<m>.py`` (integer)."""
    halves = {ROOT / "loihi_conv" / "snn" / "neurons", ROOT / "loihi_conv" / "fixed" / "softif_modes"}
    names: dict[str, Path] = {}
    for path in sources():
        if path.name == "__init__.py":
            continue
        stem = path.stem
        assert stem not in sys.stdlib_module_names, f"{path} shadows the stdlib module {stem!r}"
        if stem in names:
            assert {path.parent, names[stem].parent} == halves, f"{path} and {names[stem]} share a name"
        names[stem] = path


# The Loihi 2 numbers (base/limits.py): vThMant bounds, 13-bit bias, 12-bit decay, 24-bit state,
# 8-bit mixed-sign weights. Literal anywhere in the code that handles fixed-point values (the
# quantizer, the emulator, NetX and Lava, inspect's resource table) means a second home.
LOIHI_NUMBERS = {131071, 131072, 4095, 4096, 8388607, 8388608, 254}
FIXED_POINT_CODE = [p for p in sources() if p.is_relative_to(ROOT / "loihi_conv" / "fixed")
                    or p.is_relative_to(ROOT / "loihi_conv" / "emulate") or p.is_relative_to(ROOT / "netx_export")
                    or p == ROOT / "loihi_conv" / "app" / "resources.py"]


@pytest.mark.parametrize("path", FIXED_POINT_CODE, ids=lambda p: str(p.relative_to(ROOT)))
def test_loihi_numbers_live_in_limits_only(path):
    if path == ROOT / "loihi_conv" / "base" / "limits.py":
        return
    found = [(n.lineno, n.value) for n in ast.walk(ast.parse(path.read_text()))
             if isinstance(n, ast.Constant) and type(n.value) is int and n.value in LOIHI_NUMBERS]
    found += [(n.lineno, f"2 ** {n.right.value}") for n in ast.walk(ast.parse(path.read_text()))
              if isinstance(n, ast.BinOp) and isinstance(n.op, ast.Pow) and isinstance(n.left, ast.Constant)
              and n.left.value == 2 and isinstance(n.right, ast.Constant) and n.right.value == 23]
    assert not found, f"{path.name}: import these from loihi_conv.base.limits: {found}"


def test_every_softif_mode_has_its_float_model():
    """A fixed-point mode is the integer half of the float model of the same name."""
    assert set(SOFTIF_MODES) <= set(NEURON_MODELS)
