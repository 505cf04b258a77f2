"""NIR files written by other libraries' own exporters (tests/fixtures/nir/make_fixtures.py:
snnTorch 1.0.0, Norse 1.1.0, Sinabs 3.1.3): each imports, its float simulation is compared with the library's
own spike counts per layer, and it is quantized, written as NetX and run on Lava with 0
mismatches against the emulator."""
import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from loihi_conv.interop import load_nir, read
from loihi_conv.snn.simulate import simulate

HERE = Path(__file__).parent / "fixtures" / "nir"
FIXTURES = ("snntorch_conv", "snntorch_dense", "norse_dense", "sinabs_conv")
# Sinabs' IAF resets by subtraction (MembraneSubtract) but its NIR file cannot say so: the user chooses
IMPORT = {"sinabs_conv": {"reset": "subtract"}}
TARGET = {"sinabs_conv": "if-soft"}  # reset by subtraction runs on SoftIF; the others on standard CUBA

_spec = importlib.util.spec_from_file_location("nir_reference_fx", HERE / "reference.py")
reference = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(reference)


def _fixture(name, **kw):
    data = np.load(HERE / f"{name}.npz")
    graph = read(HERE / f"{name}.nir")
    return graph, data, load_nir(graph, dt=float(data["dt"]), **{**IMPORT.get(name, {}), **kw})


def _ours(snn, data):
    T = int(data["T"])
    res = simulate(snn, torch.as_tensor(data["x"]), [T], delay=0, record="neuron")
    return {k[len("counts_"):]: (data[k], res.counts[T][k[len("counts_"):]].numpy())
            for k in data.files if k.startswith("counts_")}


@pytest.mark.parametrize("name", ["snntorch_conv", "norse_dense", "sinabs_conv"])
def test_float_simulation_equals_the_library_spike_for_spike(name):
    graph, data, snn = _fixture(name)
    layers = _ours(snn, data)
    assert len(layers) == 2
    for layer, (lib, ours) in layers.items():
        assert lib.sum() > 10, layer  # the fixture is active
        np.testing.assert_array_equal(ours, lib, err_msg=f"{name} layer {layer}")


def test_sinabs_needs_reset_by_subtraction_chosen():
    _, data, snn = _fixture("sinabs_conv", reset="zero")  # what the file alone says (v_reset = 0)
    assert any(int(np.abs(lib - ours).sum()) > 10 for lib, ours in _ours(snn, data).values())


def test_snntorch_synaptic_differs_only_by_its_reset_rule():
    # snnTorch's Synaptic with reset_mechanism="zero" zeroes the membrane one step *after* the spike,
    # discarding that step's input; NIR (and Loihi) reset right away. Our simulation is NIR's
    # equations exactly; the reference with snnTorch's rule on the CubaLIF layer gives snnTorch's counts.
    graph, data, snn = _fixture("snntorch_dense")
    layers = _ours(snn, data)
    T, x = int(data["T"]), data["x"][:, None].repeat(int(data["T"]), 1)
    nir_ref = reference.simulate(graph, x, dt=float(data["dt"]))
    snntorch_rule = reference.simulate(graph, x, dt=float(data["dt"]), reset={"1": "zero-next-step"})
    for layer, (lib, ours) in layers.items():
        np.testing.assert_array_equal(ours, nir_ref[layer].sum(1))
        np.testing.assert_array_equal(lib, snntorch_rule[layer].sum(1))
    lib1, ours1 = layers["1"]
    assert ours1.sum() > lib1.sum()  # no input discarded after spikes
    assert T == 20


@pytest.mark.lava
@pytest.mark.parametrize("name", FIXTURES)
def test_fixture_quantizes_and_runs_on_lava_bit_exact(name, tmp_path):
    import netx_export
    from loihi_conv.app.verify import verify
    from loihi_conv.fixed.quantize import quantize

    graph, data, snn = _fixture(name)
    x = torch.as_tensor(data["x"])
    # snntorch_dense feeds its CubaLIF layer a bias, which Lava adds to v (steady state only): forced
    qnet = quantize(snn, TARGET.get(name, "cuba"), timesteps=8, calib=x, force=name == "snntorch_dense")
    path = netx_export.save(qnet, tmp_path / f"{name}.net")
    ver = verify(netx_export.load(path), x[:1], 8)
    assert ver.total_compared > 0
    assert ver.total_mismatches == 0, ver.table()


def test_a_bias_into_a_current_based_layer_is_flagged():
    from loihi_conv.base.errors import LoihiConvError
    from loihi_conv.fixed.quantize import quantize

    _, data, snn = _fixture("snntorch_dense")
    with pytest.raises(LoihiConvError, match="filtered by the synaptic current"):
        quantize(snn, "cuba", timesteps=8, calib=torch.as_tensor(data["x"]))
