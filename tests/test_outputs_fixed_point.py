"""The "spikes" and "softmax" output readouts on the fixed-point path (loihi_conv/snn/readouts.py
fixed-point halves, loihi_conv/fixed/decode.py decode, quantizer output block, emulator and Lava).

Layouts: analog inputs (N, C, H, W); integer runs (N, steps, K) per step, (N, K) final states
and scores, PyTorch order.
"""
import copy

import numpy as np
import pytest
import torch
from torch import nn

from loihi_conv.base.errors import LoihiConvError
from loihi_conv.convert import Recipe, convert
from loihi_conv.emulate import emulate, emulator_predictions
from loihi_conv.fixed import qir
from loihi_conv.fixed.decode import FixedRun, encode, scores, steps_for
from loihi_conv.fixed.quantize import quantize
from loihi_conv.frontend import ir
from loihi_conv.snn.simulate import simulate

pytestmark = pytest.mark.usefixtures("one_thread", "seeded")  # fixtures in conftest.py
T = 64


@pytest.fixture(scope="module")
def net(fit, template_digits):
    torch.manual_seed(0)
    x, y = template_digits(1000, seed=1, noise=0.6)
    m = fit(nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10)), x, y, 60)
    xt, yt = template_digits(400, seed=2, noise=0.6)
    return m, x, xt, yt.numpy()


def converted(net, output: str, target: str = "if-soft", timesteps: int = T):
    m, x, _, _ = net
    snn = convert(m, x, Recipe(output=output))
    return snn, quantize(snn, target, timesteps, calib=x[:256])


def float_predictions(snn, xt, timesteps: int = T) -> np.ndarray:
    return simulate(snn, xt, [timesteps], record=False).predictions(timesteps).numpy()


# ---- spikes -----------------------------------------------------------------------------------
def test_spikes_output_is_one_softif_population_with_the_output_threshold(net):
    snn, q = converted(net, "spikes")
    out = q.output
    assert isinstance(out.neuron, qir.SoftIF) and out.neuron.mode == "if-soft"
    sigma = q.meta["layers"][out.name]["scale"]
    theta = snn.meta["output_threshold"]
    assert out.neuron.vth.tolist() == [round(theta * sigma)] * 10  # one vth for every class
    # the bias enters every step like a hidden block's: round(b sigma), not scaled by the run
    b = snn[snn.output].bias.double()
    assert np.array_equal(out.bias, torch.round(b * sigma).long().numpy())
    assert q.meta["recipe"]["output"] == "spikes" and not q.meta["notes"]


def test_spikes_emulator_predictions_follow_the_float_snn(net):
    snn, q = converted(net, "spikes")
    _, _, xt, yt = net
    fp, ep = float_predictions(snn, xt), emulator_predictions(q, xt, T)
    assert (fp == ep).mean() >= 0.95
    assert abs((fp == yt).mean() - (ep == yt).mean()) <= 0.02
    assert (ep == yt).mean() > 0.5  # a working classifier, not agreement on noise


def integer_if(q: qir.QNetwork, src: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Spike counts (N, K) and final v of the output SoftIF recomputed from the spikes ``src``
    (N, steps, n_in) of the block feeding it: a(t) = W s(t-1) (one-step synapse delay),
    v += (a + bias) << 6, spike when v >= vth << 6, v -= vth << 6 (docs/architecture.md)."""
    out = q.output
    w = np.asarray(out.synapses[0].weight, np.int64)
    th = np.asarray(out.neuron.vth, np.int64) << 6
    v = np.zeros((src.shape[0], w.shape[0]), np.int64)
    counts = np.zeros_like(v)
    for t in range(src.shape[1]):
        a = src[:, t - 1].reshape(len(src), -1).astype(np.int64) @ w.T if t else 0
        v = v + ((a + out.bias) << 6)
        s = v >= th
        v, counts = v - s * th, counts + s
    return counts, v


def test_spike_counts_and_tie_break_state_are_the_integer_if_law(net):
    _, q = converted(net, "spikes")
    _, _, xt, _ = net
    src = q.output.synapses[0].source
    res = emulate(q, encode(q, xt[:64]), steps_for(q, T), record=[src])
    counts, v = integer_if(q, res.states[src]["s"])
    assert np.array_equal(res.spike_counts[q.output.name], counts)
    assert np.array_equal(res.output.sum(1), counts)
    assert np.array_equal(res.readout, v)  # the final membrane the decode breaks ties with
    assert counts.sum() > 0


def test_spike_count_ties_go_to_the_larger_final_membrane():
    q = qir.QNetwork([qir.Block("in", (1,)),
                      qir.Block("o", (3,), [qir.DenseSyn("in", np.ones((3, 1), np.int64))],
                                neuron=qir.SoftIF(vth=np.array([4, 4, 4])))],
                     meta={"recipe": {"output": "spikes"}})
    spikes = np.array([[[1, 1, 0], [0, 1, 1], [1, 0, 0]]])  # counts 2, 2, 1
    for v, winner in (([10, 30, 50], 1), ([30, 10, 50], 0)):
        s = scores(q, spikes, np.array([v]))
        assert int(s.argmax(1)[0]) == winner
    assert scores(q, spikes, np.array([[0, 0, 900]])).argmax(1)[0] != 2  # a count beats any v
    with pytest.raises(LoihiConvError, match="final v"):
        scores(q, spikes, None)


def test_spikes_on_cuba_is_a_flagged_reset_to_zero_approximation(net):
    snn, q = converted(net, "spikes", target="cuba")
    _, _, xt, yt = net
    assert isinstance(q.output.neuron, qir.Cuba)
    assert any(f"block '{q.output.name}'" in n and "reset-to-zero" in n for n in q.meta["notes"])
    assert "model-approx" in q.meta["layers"][q.output.name]["flags"]
    fp, ep = float_predictions(snn, xt), emulator_predictions(q, xt, T)
    assert (fp == ep).mean() >= 0.8 and (ep == yt).mean() > 0.5


def test_potential_output_block_is_unchanged(net):
    _, q = converted(net, "potential")
    assert isinstance(q.output.neuron, qir.Readout)
    assert q.output_scale == 64 * q.meta["layers"][q.output.name]["scale"]


# ---- softmax --------------------------------------------------------------------------------
def linear_graph(w: torch.Tensor, b: torch.Tensor, seed: int) -> ir.Graph:
    """x (1,) -> Linear(w, b) -> classes, softmax readout: the output sees z = w x + b."""
    g = ir.Graph({"x": ir.Input("x", (), (1,)),
                  "out": ir.Linear("out", ("x",), (w.shape[0],), weight=w, bias=b)}, "out")
    g.meta["recipe"] = Recipe(output="softmax", seed=seed).to_dict()
    return g


def test_softmax_decode_makes_the_float_draws_on_identical_potentials():
    # z = w x + b in multiples of 1/8, so V(t) = t z is exact in float32 on both sides; the
    # fixed side holds it as u(t) = 512 t w x (sigma 8, output_scale 64 * 8) and the bias
    # scaled for the whole run, bias_int = S b 8 (quantizer convention), S = T steps.
    steps, n = 12, 600  # more samples than one simulate batch: draws are consumed batch by batch
    w = torch.tensor([[0.25], [-0.5], [0.125], [0.375]])
    b = torch.tensor([0.0625, 0.25, -0.125, 0.5])
    x = torch.randint(-4, 5, (n, 1)).float()
    z = x @ w.T + b
    assert (z.sort(1).values.diff(1) > 0).all()  # no two classes tie on the potential
    ts = torch.arange(1, steps + 1).reshape(1, -1, 1)
    trace = (512 * ts * (x @ w.T).unsqueeze(1)).round().long().numpy()  # (N, steps, K)
    decoded = {}
    for seed in (0, 7):
        flt = simulate(linear_graph(w, b, seed), x, [steps], delay=0, record=False).output[steps]
        q = qir.QNetwork([qir.Block("x", (1,)),
                          qir.Block("out", (4,), [qir.DenseSyn("x", np.zeros((4, 1), np.int64))],
                                    bias=(steps * 8 * b).round().long().numpy(), neuron=qir.Readout())],
                         output_scale=512.0, meta={"recipe": {"output": "softmax", "seed": seed},
                                                   "steps_run": steps})
        run = FixedRun(q, np.zeros_like(trace), trace[:, -1], trace)
        assert np.array_equal(run.potentials(), (ts * z.unsqueeze(1)).double().numpy())
        fixed = decoded[seed] = scores(q, np.zeros_like(trace), trace[:, -1], trace)
        assert np.array_equal(fixed, torch.round(flt * 4).long().numpy())
        counts = fixed // 4
        assert (counts.sum(1) == steps).all() and ((counts > 0).sum(1) > 1).any()  # random draws
    assert not np.array_equal(decoded[0], decoded[7])  # the recipe's seed drives the draws


def test_softmax_emulator_accuracy_follows_the_float_snn(net):
    snn, q = converted(net, "softmax")
    _, _, xt, yt = net
    assert isinstance(q.output.neuron, qir.Readout)
    fp, ep = float_predictions(snn, xt), emulator_predictions(q, xt, T)
    assert abs((fp == yt).mean() - (ep == yt).mean()) <= 0.02
    assert (ep == yt).mean() > 0.5


def test_softmax_potential_per_step_carries_its_share_of_the_bias(net):
    """V(t) of the decode against the float SNN's potential over the first t steps: the bias,
    scaled by the quantizer for the whole run, contributes t/S of it by step t."""
    m, x, xt, _ = net
    m = copy.deepcopy(m)
    with torch.no_grad():
        m[3].bias += torch.linspace(-0.5, 0.5, 10)  # class-dependent: softmax is not shift-invariant
    q = quantize(convert(m, x, Recipe(output="softmax")), "if-soft", T, calib=x[:256])
    res = emulate(q, encode(q, xt), steps_for(q, T))
    run = FixedRun(q, res.output, res.readout, res.readout_trace)
    v, u = run.potentials(), res.readout_trace / q.output_scale
    windows = (T // 4, T // 2, T)
    ref = simulate(convert(m, x, Recipe()), xt, list(windows), record=False)
    for window in windows:
        i = steps_for(q, window) - 1
        want = ref.output[window].double().numpy()
        rel = lambda got: np.abs(got - want).mean() / np.abs(want).mean()  # noqa: E731
        assert rel(v[:, i]) < 0.05
        assert rel(u[:, i]) > 0.1  # without its bias V(t) would be off (the bias matters here)
    assert np.allclose(v[:, -1] * q.output_scale, run.potential(), rtol=1e-12, atol=1e-6)  # all the bias by S


# ---- capabilities and errors ----------------------------------------------------------------
@pytest.mark.parametrize("output", ["spikes", "softmax"])
def test_targets_that_cannot_run_a_readout_say_so(net, output):
    m, x, _, _ = net
    snn = convert(m, x, Recipe(output=output))
    with pytest.raises(LoihiConvError, match=f"output='{output}'.*'sdnn'") as e:
        quantize(snn, "sdnn", 16, calib=x[:64])
    assert "'if-soft'" in e.value.fix and "output='potential'" in e.value.fix


def test_softmax_decode_without_the_per_step_potential_is_a_clear_error(net):
    _, q = converted(net, "softmax", timesteps=8)
    _, _, xt, _ = net
    res = emulate(q, encode(q, xt[:4]), steps_for(q, 8))
    with pytest.raises(LoihiConvError, match="after every step") as e:
        scores(q, res.output, res.readout)
    assert "readout_trace" in e.value.fix
    _, qs = converted(net, "spikes", timesteps=8)
    with pytest.raises(LoihiConvError, match="Readout output"):  # a softmax decode of a spiking output
        scores(qir.QNetwork(qs.blocks, meta={"recipe": {"output": "softmax"}}), res.output, res.readout,
               res.readout_trace)


# ---- Lava ---------------------------------------------------------------------------------------
@pytest.mark.lava
def test_lava_runs_the_spiking_output_and_the_softmax_trace_like_the_emulator(net):
    from netx_export.runner import LavaRunner

    _, _, xt, _ = net
    for output in ("spikes", "softmax"):
        _, q = converted(net, output, timesteps=12)
        xi, steps = encode(q, xt[:2]), steps_for(q, 12)
        emu = emulate(q, xi, steps)
        with LavaRunner(q) as r:
            lava = [r.run(xi[i], steps) for i in range(len(xi))]
        out = np.stack([r.output for r in lava])
        final, trace = np.stack([r.readout for r in lava]), np.stack([r.readout_trace for r in lava])
        assert np.array_equal(out, emu.output) and np.array_equal(final, emu.readout)
        assert np.array_equal(trace, emu.readout_trace)
        assert np.array_equal(scores(q, out, final, trace), scores(q, emu.output, emu.readout, emu.readout_trace))
        assert trace.any()  # not a silent network: v of the SoftIF output, u of the Readout
