"""The pinned environment is what Lava needs, and lava-dl's deps did not break the stdlib."""
import argparse
import sys
import sysconfig
from pathlib import Path


def test_python_is_310():
    assert sys.version_info[:2] == (3, 10)


def test_stdlib_argparse_is_not_shadowed():
    # The argparse backport (pulled by unittest2 via lava-dl's declared deps) would live in
    # site-packages; the real one lives in the interpreter's stdlib directory.
    stdlib = Path(sysconfig.get_paths()["stdlib"]).resolve()
    assert Path(argparse.__file__).resolve().parent == stdlib
    assert hasattr(argparse, "BooleanOptionalAction")  # 3.9+ only; the backport lacks it


def test_netx_imports_and_exposes_network():
    from lava.lib.dl import netx

    assert hasattr(netx.hdf5, "Network")


def test_pinned_versions():
    from importlib.metadata import version

    import numpy
    import torch

    assert version("lava-nc") == "0.10.0"
    assert version("lava-dl") == "0.6.0"
    assert torch.__version__.startswith("2.3.1")
    assert numpy.__version__.startswith("1.26")


def test_our_tests_are_not_lava_dls_tests_package():
    # lava-dl's wheel installs a top-level `tests` package; our suite must not resolve to it.
    assert Path(__file__).resolve().parent.name == "tests"
    assert "site-packages" not in str(Path(__file__).resolve())
