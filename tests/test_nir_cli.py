"""`loihi-conv convert --model FILE.nir` (a NIR file from snnTorch onto NetX, then score and
verify on Lava) and `convert ... --nir OUT.nir` (our SNN out as NIR)."""
import shlex
from pathlib import Path

import nir
import numpy as np
import pytest
from click.testing import CliRunner

from loihi_conv.app.cli import main

FIXTURE = Path(__file__).parent / "fixtures" / "nir" / "snntorch_conv.nir"


def cli(args: str):
    return CliRunner(mix_stderr=False).invoke(main, shlex.split(args))


@pytest.fixture
def events_npz(tmp_path):
    """A labelled .npz dataset shaped like the fixture's input (2, 8, 8)."""
    rng = np.random.default_rng(0)
    path = tmp_path / "d.npz"
    np.savez(path, x_train=rng.uniform(size=(64, 2, 8, 8)).astype(np.float32), y_train=rng.integers(0, 5, 64),
             x_test=rng.uniform(size=(8, 2, 8, 8)).astype(np.float32), y_test=rng.integers(0, 5, 8))
    return path


def test_convert_a_nir_file_to_netx_and_score_it(events_npz, tmp_path):
    out = tmp_path / "n.net"
    res = cli(f"convert --model {FIXTURE} --dataset {events_npz} --nir-dt 1e-4 --target cuba -T 8 --out {out}")
    assert res.exit_code == 0, res.stderr
    assert out.exists() and "wrote" in res.stdout
    res = cli(f"score {out} --samples 8")
    assert res.exit_code == 0, res.stderr
    assert "%" in res.stdout


def test_nir_model_needs_a_dataset_and_reports_bad_files(tmp_path):
    res = cli(f"convert --model {FIXTURE} --target cuba -T 8 --out {tmp_path / 'x.net'}")
    assert res.exit_code == 2 and "--dataset is required" in res.stderr
    bad = tmp_path / "bad.nir"
    bad.write_text("not hdf5")
    res = cli(f"convert --model {bad} --dataset digits --target cuba -T 8 --out {tmp_path / 'x.net'}")
    assert res.exit_code == 3 and "not an HDF5 file" in res.stderr and "Traceback" not in res.stderr


def test_convert_writes_our_snn_as_nir(tmp_path):
    out, nir_out = tmp_path / "d.net", tmp_path / "d.nir"
    res = cli(f"convert --model digits_cnn --target if-soft -T 16 --calib-size 128 --no-search "
              f"--max-pool avg --out {out} --nir {nir_out}")
    assert res.exit_code == 0, res.stderr
    graph = nir.read(str(nir_out))
    assert any(isinstance(n, nir.IF) for n in graph.nodes.values())
    assert graph.nodes[[k for k, n in graph.nodes.items() if isinstance(n, nir.IF)][0]].metadata["reset"] in (
        b"subtract", "subtract")


def test_event_stream_dataset_through_convert_score_run_lava_and_verify(tmp_path):
    """An .npz of event streams (N, T, C, H, W): frames of spikes drive the NIR network step by step."""
    rng = np.random.default_rng(1)
    data = tmp_path / "events.npz"
    np.savez(data, x_train=(rng.uniform(size=(16, 8, 2, 8, 8)) < 0.3).astype(np.float32),
             y_train=rng.integers(0, 5, 16),
             x_test=(rng.uniform(size=(4, 8, 2, 8, 8)) < 0.3).astype(np.float32), y_test=rng.integers(0, 5, 4))
    out = tmp_path / "ev.net"
    res = cli(f"convert --model {FIXTURE} --dataset {data} --nir-dt 1e-4 --target cuba -T 8 --out {out}")
    assert res.exit_code == 0, res.stderr
    res = cli(f"score {out} --samples 4")
    assert res.exit_code == 0 and "/4) on" in res.stdout, res.stderr
    res = cli(f"verify {out} --samples 1")
    assert res.exit_code == 0, res.stderr + res.stdout  # exit 4 on any mismatch
    assert "\n0 mismatches in" in res.stdout
    res = cli(f"run-lava {out} --samples 1")
    assert res.exit_code == 0 and "accuracy" in res.stdout, res.stderr
