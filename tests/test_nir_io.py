"""NIR export and round trip (ours -> NIR -> ours, bit for bit), what export refuses, and the
guarded reader on hostile files (one clear error each, no deep traceback)."""
import h5py
import nir
import numpy as np
import pytest
import torch

from loihi_conv.base.errors import LoihiConvError
from loihi_conv.frontend import ir
from loihi_conv.interop import NIRExportError, NIRFormatError, load_nir, read, to_nir, write_nir
from loihi_conv.snn.simulate import simulate


def _same_simulation(a, b, x, T=12):
    ra = simulate(a, x, [T], delay=1, record="neuron")
    rb = simulate(b, x, [T], delay=1, record="neuron")
    assert torch.equal(ra.output[T], rb.output[T])
    assert ra.counts[T].keys() == rb.counts[T].keys()
    for k in ra.counts[T]:
        assert torch.equal(ra.counts[T][k], rb.counts[T][k]), k
    return ra


@pytest.mark.parametrize("model,params", [("if-soft", {}), ("if-zero", {}),
                                          ("cuba-lif", {"du": 1.0, "dv": 0.1, "reset": "zero", "compare": "gt"}),
                                          ("cuba-lif", {"du": 0.3, "dv": 0.05, "reset": "zero", "compare": "gt"})])
def test_round_trip_is_bit_exact(small_snn, model, params, tmp_path):
    snn = small_snn(model, params)
    path = write_nir(snn, tmp_path / "net.nir")
    back = load_nir(path)
    assert nir.read(path) is not None  # plain nir.read, with its type check, loads it
    for name in ("n1", "n2"):
        assert back[name].model == snn[name].model
        assert torch.equal(back[name].threshold, snn[name].threshold)
    x = torch.rand(6, 3, 10, 10, generator=torch.Generator().manual_seed(0))
    res = _same_simulation(snn, back, x)
    assert res.counts[12]["n1"].sum() > 0


def test_export_carries_thresholds_as_arrays_and_the_reset_in_metadata(small_snn):
    g = to_nir(small_snn("if-soft", {}))
    node = g.nodes["n1"]
    assert isinstance(node, nir.IF) and node.v_threshold.shape == (4, 10, 10)
    assert node.metadata["reset"] == "subtract" and node.metadata["compare"] == "ge"
    assert isinstance(g.nodes["output_integrator"], nir.I)


def test_export_refuses_what_nir_cannot_carry(small_snn):
    with pytest.raises(NIRExportError, match="binary spikes"):
        to_nir(small_snn("if-burst", {"burst": 2}))
    snn = small_snn("if-soft", {})
    snn["n1"].v_init = torch.full((4,), 0.5)
    with pytest.raises(NIRExportError, match="initial state"):
        to_nir(snn)
    snn = small_snn("if-soft", {})
    snn.nodes["p1"] = ir.MaxPool2d("p1", ("n1",), kernel_size=(2, 2), stride=(2, 2))
    with pytest.raises(NIRExportError, match="max-pool"):
        to_nir(snn)
    snn = small_snn("if-soft", {})
    snn.meta["recipe"] = {"output": "spikes"}
    with pytest.raises(NIRExportError, match="readout"):
        to_nir(snn)


# ---- hostile files ------------------------------------------------------------------------------
def _valid(tmp_path):
    g = nir.NIRGraph(nodes={"input": nir.Input(input_type=np.array([3])),
                            "fc": nir.Affine(weight=np.eye(3), bias=np.zeros(3)),
                            "lif": nir.IF(r=np.ones(3), v_threshold=np.ones(3)),
                            "output": nir.Output(output_type=np.array([3]))},
                     edges=[("input", "fc"), ("fc", "lif"), ("lif", "output")])
    path = tmp_path / "ok.nir"
    nir.write(str(path), g)
    return path


def _expect(path, match):
    with pytest.raises(LoihiConvError, match=match) as e:
        load_nir(path)
    assert len(str(e.value).splitlines()) <= 3  # one problem line + its fix
    return e.value


def test_valid_file_loads(tmp_path):
    assert load_nir(_valid(tmp_path))["lif"].model == "cuba-lif"


def test_not_hdf5(tmp_path):
    p = tmp_path / "x.nir"
    p.write_text("import os; os.system('echo pwned')\n")
    assert isinstance(_expect(p, "not an HDF5 file"), NIRFormatError)


def test_missing_file(tmp_path):
    _expect(tmp_path / "nope.nir", "does not exist")


def test_shape_bomb_is_refused_before_reading(tmp_path):
    p = _valid(tmp_path)
    with h5py.File(p, "a") as f:
        del f["node/nodes/fc/weight"]
        f["node/nodes/fc"].create_dataset("weight", shape=(200_000, 200_000), dtype="f8", chunks=(1000, 1000),
                                          compression="gzip")  # declares 320 GB, stores nothing
    assert p.stat().st_size < 100_000
    _expect(p, "declares shape")


def test_missing_field(tmp_path):
    p = _valid(tmp_path)
    with h5py.File(p, "a") as f:
        del f["node/nodes/lif/v_threshold"]
    _expect(p, "not a valid NIR graph: missing field 'v_threshold'")


def test_wrong_type(tmp_path):
    p = _valid(tmp_path)
    with h5py.File(p, "a") as f:
        del f["node/nodes/fc/weight"]
        f["node/nodes/fc"].create_dataset("weight", data="a string, not a matrix")
    _expect(p, "weight")


def test_no_node_group(tmp_path):
    p = tmp_path / "empty.nir"
    with h5py.File(p, "w") as f:
        f.create_dataset("version", data="1.0")
    _expect(p, "no 'node' group")


def test_external_link_is_refused(tmp_path):
    p = _valid(tmp_path)
    with h5py.File(p, "a") as f:
        f["node/nodes/extra"] = h5py.ExternalLink("/etc/passwd", "/")
    _expect(p, "ExternalLink")


def test_unknown_node_type(tmp_path):
    p = _valid(tmp_path)
    with h5py.File(p, "a") as f:
        del f["node/nodes/lif/type"]
        f["node/nodes/lif"].create_dataset("type", data="Evil")
    _expect(p, "not a valid NIR graph")


def test_edge_to_unknown_node(tmp_path):
    g = nir.NIRGraph(nodes={"input": nir.Input(input_type=np.array([3])), "output": nir.Output(output_type=np.array([3]))},
                     edges=[("input", "output")], type_check=False)
    g.edges.append(("input", "ghost"))
    with pytest.raises(LoihiConvError, match="ghost"):
        load_nir(g)


def test_read_returns_a_graph(tmp_path):
    assert isinstance(read(_valid(tmp_path)), nir.NIRGraph)


def test_declared_sizes_are_bounded_before_anything_is_built():
    from loihi_conv.interop import NIRImportError

    huge = nir.NIRGraph(nodes={"input": nir.Input(input_type=np.array([1000, 100000, 100000])),
                               "output": nir.Output(output_type=np.array([3]))},
                        edges=[("input", "output")], type_check=False)
    with pytest.raises(NIRImportError, match="more than"):
        load_nir(huge)
    pad = nir.NIRGraph(nodes={"input": nir.Input(input_type=np.array([1, 4, 4])),
                              "conv": nir.Conv2d(input_shape=(4, 4), weight=np.ones((1, 1, 1, 1)), stride=1,
                                                 padding=10 ** 9, dilation=1, groups=1, bias=np.zeros(1)),
                              "output": nir.Output(output_type=np.array([1]))},
                       edges=[("input", "conv"), ("conv", "output")], type_check=False)
    with pytest.raises(NIRImportError, match="padding"):
        load_nir(pad)


@pytest.mark.parametrize("model,reset", [("if-zero", "value"), ("if-soft", "subtract")])
def test_exported_graph_runs_on_an_independent_nir_simulator(small_snn, model, reset):
    """The NIR-spec reference simulator (tests/fixtures/nir/reference.py) runs our exported graph
    and gets our float simulation's spikes (NIR timing, delay=0) and readout."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("nir_reference_io", Path(__file__).parent / "fixtures/nir/reference.py")
    reference = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(reference)
    snn = small_snn(model, {})
    x = torch.rand(3, 3, 10, 10, generator=torch.Generator().manual_seed(2))
    T = 10
    ours = simulate(snn, x, [T], delay=0, record="neuron")
    ref = reference.simulate(to_nir(snn), x.numpy()[:, None].repeat(T, 1).astype(np.float64), reset=reset)
    for name in ("n1", "n2"):
        assert ref[name].sum() > 0
        np.testing.assert_array_equal(ours.counts[T][name].numpy(), ref[name].sum(1), err_msg=name)
    np.testing.assert_allclose(ours.output[T].numpy(), ref["output_integrator"][:, -1], rtol=1e-4, atol=1e-4)
