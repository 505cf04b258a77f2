"""The time-blocked simulator engine (the default) is bit-identical to the per-step reference
(``engine="step"``, the simulator as it was before issue 18) on small random graphs covering
every node kind, neuron model, delay, input kind, record mode, max-pool scheme and readout."""
from __future__ import annotations

import itertools

import pytest
import torch

from loihi_conv.base.errors import LoihiConvError
from loihi_conv.frontend import ir, ops
from loihi_conv.snn import timeblocks
from loihi_conv.snn.simulate import simulate, to_device

pytestmark = pytest.mark.usefixtures("one_thread", "seeded")  # fixtures in conftest.py

MODELS = {"if-soft": {}, "if-zero": {}, "if-multibit": {"s_max": 2}, "if-burst": {"burst": 3},
          "if-buffered": {"s_max": 2}, "cuba-lif": {"du": 0.5, "dv": 0.125}, "spicalib": {"beta": 2}}
POOLS = ("mli", "rate-gate", "avg", "spike-max")
READOUTS = ("potential", "spikes", "softmax")
RECORDS = ("channel", "neuron", False)


def _conv(name, src, ci, co, gen, k=3, scale=0.6):
    w = torch.randn(co, ci, k, k, generator=gen) * scale / (ci * k)
    return ir.Conv2d(name, (src,), weight=w, bias=torch.rand(co, generator=gen) * 0.1, padding=(k // 2, k // 2))


def _neuron(name, src, c, model, gen, **params):
    return ir.Neuron(name, (src,), model=model, threshold=0.3 + torch.rand(c, generator=gen),
                     v_init=torch.rand(c, generator=gen) * 0.5, params={**MODELS[model], **params})


def random_graph(model: str, pool: str, readout: str, seed: int) -> ir.Graph:
    """x (2, 8, 8) -> conv -> neuron -> maxpool -> conv -> neuron -> conv + shortcut conv(avgpool x)
    (an Add of a spiking and a static branch) -> neuron (clamped 2 steps) -> concat with the
    maxpool -> avgpool -> flatten -> linear -> neuron -> linear."""
    g = torch.Generator().manual_seed(seed)
    nodes = [ir.Input("x", (), (2, 8, 8)),
             _conv("c1", "x", 2, 4, g, scale=3.0), _neuron("n1", "c1", 4, model, g),
             ir.MaxPool2d("m1", ("n1",), kernel_size=2, stride=2),
             _conv("c2", "m1", 4, 4, g, scale=2.0), _neuron("n2", "c2", 4, model, g),
             _conv("c3", "n2", 4, 4, g, scale=2.0),
             ir.AvgPool2d("p0", ("x",), kernel_size=2, stride=2), _conv("s", "p0", 2, 4, g, k=1),
             ir.Add("a", ("c3", "s")), _neuron("n3", "a", 4, model, g, clamp_steps=2),
             ir.Concat("cat", ("n3", "m1")), ir.AvgPool2d("p1", ("cat",), kernel_size=2, stride=2),
             ir.Flatten("f", ("p1",)),
             ir.Linear("l1", ("f",), weight=torch.randn(16, 32, generator=g) * 0.4, bias=torch.rand(16, generator=g) * 0.1),
             _neuron("n4", "l1", 16, model, g),
             ir.Linear("out", ("n4",), weight=torch.randn(5, 16, generator=g), bias=torch.zeros(5))]
    graph = ir.Graph({n.name: n for n in nodes}, "out",
                     {"recipe": {"max_pool": pool, "output": readout, "seed": seed}, "output_threshold": 0.7})
    return ops.infer_shapes(graph)


def _same(a, b) -> None:
    assert a.output.keys() == b.output.keys()
    for T in a.output:
        assert torch.equal(a.output[T], b.output[T]), T
        assert a.counts.get(T, {}).keys() == b.counts.get(T, {}).keys()
        for name in a.counts.get(T, {}):
            assert torch.equal(a.counts[T][name], b.counts[T][name]), (T, name)


CASES = [(model, delay, stream, POOLS[i % 4], READOUTS[i % 3], RECORDS[i % 3])
         for i, (model, delay, stream) in enumerate(itertools.product(MODELS, (0, 1), (False, True)))]


@pytest.mark.parametrize("model,delay,stream,pool,readout,record", CASES)
def test_block_engine_equals_step_engine(monkeypatch, model, delay, stream, pool, readout, record):
    monkeypatch.setattr(timeblocks, "MAX_BLOCK", 3)  # block boundaries inside the run (delay carry)
    monkeypatch.setattr(timeblocks, "TILE_BYTES", 3 * 4 * 64 * 4)  # neuron tiles of a few samples
    monkeypatch.setattr(timeblocks, "SHARD_SAMPLES", 16)
    graph = random_graph(model, pool, readout, seed=len(model) + 7 * delay)
    gen = torch.Generator().manual_seed(3)
    n = 40  # batches of 32 (two 16-sample shards) and 8
    x = torch.rand((n, 5, 2, 8, 8) if stream else (n, 2, 8, 8), generator=gen)
    ts = (4, 7, 11)  # snapshots inside and at the end of blocks
    ref = simulate(graph, x, ts, delay=delay, record=record, batch_size=32, engine="step")
    fast = simulate(graph, x, ts, delay=delay, record=record, batch_size=32)
    _same(ref, fast)
    if stream:  # shards side by side on two threads (half the cases: it is slow on a busy machine)
        _same(ref, simulate(graph, x, ts, delay=delay, record=record, batch_size=32, num_threads=2))
    if record:
        assert any(float(c.sum()) > 0 for c in fast.counts[11].values())  # the graph does spike


def test_block_engine_equals_step_engine_on_a_converted_cnn(monkeypatch):
    """A conv net as ``convert`` makes it (neuron-fed avgpools, flatten), default block sizes and
    one smaller, several T, one or two threads: identical outputs and per-neuron counts."""
    g = torch.Generator().manual_seed(5)
    nodes = [ir.Input("x", (), (1, 12, 12)), _conv("c1", "x", 1, 6, g, scale=4.0), _neuron("n1", "c1", 6, "if-soft", g),
             ir.AvgPool2d("p1", ("n1",), kernel_size=2, stride=2), _conv("c2", "p1", 6, 8, g, scale=3.0),
             _neuron("n2", "c2", 8, "if-soft", g), ir.AvgPool2d("p2", ("n2",), kernel_size=2, stride=2),
             ir.Flatten("f", ("p2",)), ir.Linear("out", ("f",), weight=torch.randn(10, 72, generator=g))]
    graph = ops.infer_shapes(ir.Graph({n.name: n for n in nodes}, "out", {}))
    x = torch.rand(40, 1, 12, 12, generator=g)
    clamped = graph.copy()  # the neuron-fed avgpools are pooled inside the neuron loop: clamped, no delay
    clamped.nodes["n1"].params["clamp_steps"] = 3
    ref0 = simulate(clamped, x, (5, 9), delay=0, engine="step")
    _same(ref0, simulate(clamped, x, (5, 9), delay=0))
    ref = simulate(graph, x, (8, 32), record="neuron", engine="step")
    _same(ref, simulate(graph, x, (8, 32), record="neuron"))
    monkeypatch.setattr(timeblocks, "MAX_BLOCK", 5)
    _same(ref, simulate(graph, x, (8, 32), record="neuron"))
    monkeypatch.setattr(timeblocks, "SHARD_SAMPLES", 16)
    assert timeblocks.shards_for(40, 2) == 2  # two shards of 20, side by side on two threads
    _same(ref, simulate(graph, x, (8, 32), record="neuron", num_threads=2))


@pytest.mark.parametrize("shape,k", [((3, 4, 8, 8), 2), ((2, 3, 7, 7), 2), ((2, 2, 9, 6), 3), ((40, 8, 28, 28), 2)])
def test_avg_pool_fast_path_is_bit_identical(shape, k):
    x = torch.rand(shape) * torch.rand(1, shape[1], 1, 1)
    node = ir.AvgPool2d("p", ("x",), kernel_size=k, stride=k)
    assert torch.equal(timeblocks._avg_pool(node, x), ops.apply(node, x))


def test_unknown_engine_is_one_clear_error():
    graph = random_graph("if-soft", "mli", "potential", 0)
    with pytest.raises(LoihiConvError, match="unknown simulator engine 'warp'"):
        simulate(graph, torch.rand(2, 2, 8, 8), (4,), engine="warp")


def test_device_cpu_runs_and_cuda_is_guarded():
    graph = random_graph("if-soft", "mli", "potential", 0)
    x = torch.rand(4, 2, 8, 8)
    _same(simulate(graph, x, (6,)), simulate(graph, x, (6,), device="cpu"))
    moved = to_device(graph, torch.device("cpu"))  # what a cuda run simulates: a copy, tensors moved
    assert moved is not graph and moved["c1"].weight is not None and moved["n1"].params == graph["n1"].params
    _same(simulate(graph, x, (6,)), simulate(moved, x, (6,)))
    if not torch.cuda.is_available():
        with pytest.raises(LoihiConvError, match="no CUDA GPU"):
            simulate(graph, x, (6,), device="cuda")
