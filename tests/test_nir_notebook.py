"""notebooks/nir_to_lava.ipynb runs top to bottom: a NIR file from snnTorch to Lava, with the
float-vs-snnTorch agreement and 0 Lava-vs-emulator mismatches."""
import importlib.util
import json
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location("notebooks_helpers", Path(__file__).parent / "test_notebooks.py")
helpers = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(helpers)


@pytest.mark.lava
def test_nir_to_lava_runs(tmp_path, monkeypatch):
    nb, out = helpers.run_notebook("nir_to_lava.ipynb", tmp_path, monkeypatch)
    assert not helpers._errors(nb)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["library"].startswith("snntorch")
    assert summary["float_vs_library"] == {"1": 0, "5": 0}  # spike for spike
    assert summary["compared"] > 0 and summary["mismatches"] == 0
    assert "mismatches in" in helpers._text(nb)
