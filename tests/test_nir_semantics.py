"""Each NIR mapping rule (docs/nir.md) against a reference simulation of the NIR equations
written from the NIR spec (tests/fixtures/nir/reference.py), not from our code."""
import importlib.util
from pathlib import Path

import nir
import numpy as np
import pytest
import torch

from loihi_conv.base.limits import DECAY_ONE
from loihi_conv.interop import NIRImportError, load_nir
from loihi_conv.snn.simulate import simulate

_spec = importlib.util.spec_from_file_location("nir_reference", Path(__file__).parent / "fixtures/nir/reference.py")
reference = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(reference)

T = 30


def _graph(nodes: dict, edges=None) -> nir.NIRGraph:
    names = list(nodes)
    edges = edges or list(zip(names[:-1], names[1:]))
    return nir.NIRGraph(nodes=nodes, edges=edges, type_check=False)


def _dense_net(neuron, n_in=5, n_out=4, seed=0, bias=0.0):
    rng = np.random.default_rng(seed)
    return _graph({"input": nir.Input(input_type=np.array([n_in])),
                   "fc": nir.Affine(weight=rng.normal(0.3, 0.5, (n_out, n_in)), bias=np.full(n_out, bias)),
                   "neuron": neuron,
                   "output": nir.Output(output_type=np.array([n_out]))})


def _compare(g, x, dt=1.0, reset=None):
    """Spike counts of every neuron: ours (delay=0, NIR's same-step timing) vs the reference."""
    ref = reference.simulate(g, x[:, None].repeat(T, 1), dt=dt, reset="subtract" if reset == "subtract" else "value")
    snn = load_nir(g, dt=dt, reset=reset)
    res = simulate(snn, torch.as_tensor(x, dtype=torch.float32), [T], delay=0, record="neuron")
    for name, counts in res.counts[T].items():
        np.testing.assert_array_equal(counts.numpy(), ref[name].sum(1), err_msg=name)
    return snn, res, ref


def _x(shape, seed=1, n=4):
    return np.random.default_rng(seed).uniform(0, 1, (n,) + shape)


def test_if_integrates_dt_r_and_fires_on_strictly_greater():
    # integer weights and inputs: v lands exactly on theta, where NIR's '>' and '>=' differ
    g = _graph({"input": nir.Input(input_type=np.array([2])),
                "fc": nir.Affine(weight=np.array([[1.0, 0.0], [0.0, 1.0]]), bias=np.zeros(2)),
                "if": nir.IF(r=np.array([1.0, 2.0]), v_threshold=np.array([3.0, 4.0])),
                "output": nir.Output(output_type=np.array([2]))})
    x = np.array([[1.0, 1.0]])
    snn, res, ref = _compare(g, x, dt=0.5)
    assert snn["if"].model == "cuba-lif" and snn["if"].params["compare"] == "gt"
    # v += dt R x: 0.5 per step vs theta 3 -> a spike every 7 steps ('>'), not every 6 ('>=')
    assert int(res.counts[T]["if"][0, 0]) == T // 7
    assert int(res.counts[T]["if"][0, 1]) == T // 5  # 1.0 per step vs 4


def test_lif_tau_r_v_leak_become_decay_gain_and_bias():
    tau, r, v_leak = np.full(4, 8.0), np.array([1.0, 2.0, 0.5, 3.0]), np.array([0.0, 0.3, -0.2, 0.1])
    g = _dense_net(nir.LIF(tau=tau, r=r, v_leak=v_leak, v_threshold=np.full(4, 0.5)))
    snn, res, _ = _compare(g, _x((5,)), dt=2.0)
    assert snn["neuron"].params["dv"] == 2.0 / 8.0
    assert res.counts[T]["neuron"].sum() > 10


def test_cuba_lif_tau_syn_w_in_and_tau_mem():
    n = 4
    g = _dense_net(nir.CubaLIF(tau_syn=np.full(n, 4.0), tau_mem=np.full(n, 5.0), r=np.full(n, 2.0),
                               v_leak=np.zeros(n), v_threshold=np.full(n, 0.4), w_in=np.array([1.0, 2.0, 0.5, 1.5])))
    snn, res, _ = _compare(g, _x((5,)))
    assert snn["neuron"].params["du"] == 0.25 and snn["neuron"].params["dv"] == 0.2
    assert res.counts[T]["neuron"].sum() > 10


def test_decays_quantize_to_1_4096_units():
    from loihi_conv.fixed.quantize import quantize

    n = 4
    g = _dense_net(nir.CubaLIF(tau_syn=np.full(n, 3.0), tau_mem=np.full(n, 7.0), r=np.ones(n), v_leak=np.zeros(n),
                               v_threshold=np.full(n, 0.4)))
    q = quantize(load_nir(g), "cuba", timesteps=8, calib=torch.rand(16, 5))
    assert (q["neuron"].neuron.i_decay, q["neuron"].neuron.v_decay) == (round(DECAY_ONE / 3), round(DECAY_ONE / 7))


def test_reset_to_value_must_be_zero_and_subtraction_is_chosen_explicitly():
    n = 4
    bad = _dense_net(nir.IF(r=np.ones(n), v_threshold=np.ones(n), v_reset=np.full(n, -0.5)))
    with pytest.raises(NIRImportError, match="v_reset"):
        load_nir(bad)
    g = _dense_net(nir.IF(r=np.ones(n), v_threshold=np.full(n, 0.7)))
    _, soft, _ = _compare(g, _x((5,)), reset="subtract")
    _, zero, _ = _compare(g, _x((5,)))
    assert soft.counts[T]["neuron"].sum() > zero.counts[T]["neuron"].sum()  # no charge lost at spikes
    meta = _dense_net(nir.IF(r=np.ones(n), v_threshold=np.full(n, 0.7), metadata={"reset": "subtract"}))
    assert load_nir(meta)["neuron"].params["reset"] == "subtract"


def test_per_channel_thresholds_and_per_neuron_dense_thresholds():
    rng = np.random.default_rng(3)
    th = np.broadcast_to(np.array([0.5, 1.0, 1.5]).reshape(3, 1, 1), (3, 4, 4)).copy()
    conv = _graph({"input": nir.Input(input_type=np.array([2, 4, 4])),
                   "conv": nir.Conv2d(input_shape=(4, 4), weight=rng.normal(0.2, 0.4, (3, 2, 3, 3)), stride=1,
                                      padding=1, dilation=1, groups=1, bias=np.zeros(3)),
                   "neuron": nir.IF(r=np.ones((3, 4, 4)), v_threshold=th),
                   "flat": nir.Flatten(input_type={"input": np.array([3, 4, 4])}, start_dim=0),
                   "fc": nir.Affine(weight=rng.normal(0, 0.3, (2, 48)), bias=np.zeros(2)),
                   "if2": nir.IF(r=np.ones(2), v_threshold=np.array([0.3, 0.6])),
                   "output": nir.Output(output_type=np.array([2]))})
    snn, _, _ = _compare(conv, _x((2, 4, 4)))
    assert snn["neuron"].threshold.tolist() == [0.5, 1.0, 1.5]
    th[0, 0, 0] = 0.9  # varies within channel 0 of a conv population
    conv.nodes["neuron"] = nir.IF(r=np.ones((3, 4, 4)), v_threshold=th)
    with pytest.raises(NIRImportError, match="varies within a channel"):
        load_nir(conv)
    dense = _dense_net(nir.IF(r=np.ones(4), v_threshold=np.array([0.2, 0.5, 0.9, 1.3])))
    assert load_nir(dense)["neuron"].threshold.tolist() == pytest.approx([0.2, 0.5, 0.9, 1.3])
    _compare(dense, _x((5,)))


def test_pools_scale_threshold_fan_in_and_integrator_readout():
    rng = np.random.default_rng(4)
    nodes = {"input": nir.Input(input_type=np.array([2, 4, 4])),
             "conv": nir.Conv2d(input_shape=(4, 4), weight=rng.normal(0.3, 0.4, (2, 2, 3, 3)), stride=1,
                                padding=1, dilation=1, groups=1, bias=np.zeros(2)),
             "lif": nir.LIF(tau=np.full((2, 4, 4), 3.0), r=np.full((2, 4, 4), 3.0), v_leak=np.zeros((2, 4, 4)),
                            v_threshold=np.full((2, 4, 4), 0.6)),
             "sum": nir.SumPool2d(kernel_size=np.array([2, 2]), stride=np.array([2, 2]), padding=np.array([0, 0])),
             "avg": nir.AvgPool2d(kernel_size=np.array([2, 2]), stride=np.array([2, 2]), padding=np.array([0, 0])),
             "flat_s": nir.Flatten(input_type={"input": np.array([2, 2, 2])}, start_dim=0),
             "flat_a": nir.Flatten(input_type={"input": np.array([2, 2, 2])}, start_dim=0),
             "scale": nir.Scale(scale=np.linspace(0.5, 2.0, 8)),
             "fc_s": nir.Affine(weight=rng.normal(0.1, 0.4, (3, 8)), bias=np.zeros(3)),
             "fc_a": nir.Linear(weight=rng.normal(0.1, 0.4, (3, 8))),
             "thr": nir.Threshold(threshold=np.full(3, 0.1)),
             "fc_o": nir.Affine(weight=rng.normal(0, 1.0, (2, 3)), bias=np.array([0.1, -0.1])),
             "integ": nir.I(r=np.array([2.0, 0.5])),
             "output": nir.Output(output_type=np.array([2]))}
    edges = [("input", "conv"), ("conv", "lif"), ("lif", "sum"), ("lif", "avg"), ("sum", "flat_s"),
             ("avg", "flat_a"), ("flat_s", "scale"), ("scale", "fc_s"), ("flat_a", "fc_a"), ("fc_s", "thr"),
             ("fc_a", "thr"), ("thr", "fc_o"), ("fc_o", "integ"), ("integ", "output")]
    g = _graph(nodes, edges)
    x = _x((2, 4, 4))
    dt = 0.5
    snn, res, ref = _compare(g, x, dt=dt)
    np.testing.assert_allclose(res.output[T].numpy(), ref["integ"][:, -1], rtol=1e-5, atol=1e-5)


def test_the_lava_delay_shifts_each_layer_by_one_step():
    # NIR nodes act within the step; on Lava (delay=1) a population h synapse hops from the input
    # sees it h steps later. Without biases, its spike train is NIR's shifted by h steps.
    rng = np.random.default_rng(5)
    g = _graph({"input": nir.Input(input_type=np.array([5])),
                "fc1": nir.Linear(weight=rng.normal(0.4, 0.4, (6, 5))),
                "if1": nir.IF(r=np.ones(6), v_threshold=np.full(6, 0.8)),
                "fc2": nir.Linear(weight=rng.normal(0.3, 0.4, (3, 6))),
                "if2": nir.IF(r=np.ones(3), v_threshold=np.full(3, 0.5)),
                "output": nir.Output(output_type=np.array([3]))})
    x = _x((5,))
    snn = load_nir(g)
    res = simulate(snn, torch.as_tensor(x, dtype=torch.float32), [T], delay=1, record="neuron")
    steps = res.steps(T)  # T + depth
    assert steps == T + 3  # fc1, fc2 and the counting readout synapse
    ref = reference.simulate(g, x[:, None].repeat(steps, 1))
    for name in ("if1", "if2"):
        h = res.levels[name]
        assert res.window(T, name) == steps - h
        np.testing.assert_array_equal(res.counts[T][name].numpy(), ref[name][:, :steps - h].sum(1), err_msg=name)


@pytest.mark.parametrize("kind", ["LI", "CubaLI", "Conv1d", "Delay"])
def test_refused_nodes_say_why(kind):
    n = 3
    node = {"LI": lambda: nir.LI(tau=np.ones(n), r=np.ones(n), v_leak=np.zeros(n)),
            "CubaLI": lambda: nir.CubaLI(tau_syn=np.ones(n), tau_mem=np.ones(n), r=np.ones(n), v_leak=np.zeros(n)),
            "Conv1d": lambda: nir.Conv1d(input_shape=None, weight=np.ones((3, 3, 1)), stride=1, padding=0,
                                         dilation=1, groups=1, bias=np.zeros(3)),
            "Delay": lambda: nir.Delay(delay=np.ones(n))}[kind]()
    g = _graph({"input": nir.Input(input_type=np.array([n])), "fc": nir.Linear(weight=np.eye(n)), "x": node,
                "output": nir.Output(output_type=np.array([n]))})
    with pytest.raises(NIRImportError) as e:
        load_nir(g)
    assert "'x'" in str(e.value) and len(e.value.problem) > 40


def test_recurrence_is_refused():
    n = 3
    g = _graph({"input": nir.Input(input_type=np.array([n])), "fc": nir.Linear(weight=np.eye(n)),
                "lif": nir.IF(r=np.ones(n), v_threshold=np.ones(n)), "rec": nir.Linear(weight=np.eye(n)),
                "output": nir.Output(output_type=np.array([n]))},
               [("input", "fc"), ("fc", "lif"), ("lif", "rec"), ("rec", "fc"), ("lif", "output")])
    with pytest.raises(NIRImportError, match="recurrent"):
        load_nir(g)
