"""Fixed-point safety: what would overflow or be mangled is refused (with a per-layer reason)
unless forced, and what is accepted behaves like the float SNN within a derived bound.

The property test derives its bound from the integrate-and-fire dynamics instead of tuning a
tolerance. An if-soft neuron (spike when v >= theta, subtract theta) whose drive per step never
exceeds theta fires, after s steps, exactly

    N(s) = max(0, max_{r <= s} floor(g(r))),   g(r) = (v0 + sum of the drives of steps 1..r) / theta

(each spike leaves v < theta, and v >= theta only when g has passed one more integer). With
Lava timing the first hidden layer gets only its bias at step 1 and ``W x + b`` from step 2 on,
so g is linear in r >= 1 and max_r |g_q(r) - g_f(r)| = D is attained at r = 0, 1 or n. Hence
per neuron |N_q - N_f| <= floor(D) + 1, and D itself is bounded a priori by the rounding of
the integer mapping (docs/targets.md: W_int = round_2(W sigma / s_in), x_int = round(x s_in),
bias = round(b sigma), vth = round(theta sigma)).
"""
from __future__ import annotations

import shlex
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import netx_export
from loihi_conv.app.cli import main
from loihi_conv.convert import Recipe, convert
from loihi_conv.emulate import emulate
from loihi_conv.fixed.decode import encode
from loihi_conv.fixed.quantize import quantize
from loihi_conv.fixed.quantize.blocks import fold
from loihi_conv.snn.simulate import simulate

STATE_MAX = 2**23 - 1  # 24-bit signed neuron state

MODELS = '''\
import torch
import torch.nn as nn
import torch.nn.functional as F


class Digits(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.c = nn.Conv2d(1, 4, 3)
        self.f = nn.Linear(4 * 6 * 6, 10)

    def forward(self, x):
        return self.f(torch.flatten(F.relu(self.c(x)), 1))


class NoOutBias(Digits):
    def __init__(self):
        super().__init__()
        self.f = nn.Linear(4 * 6 * 6, 10, bias=False)


class OutBias(Digits):
    """A readout bias ~10^6 times its weights: no 13-bit bias and 8-bit weights hold both."""
    def __init__(self):
        super().__init__()
        with torch.no_grad():
            self.f.bias[0] = 1e6
'''


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("safety") / "models.py"
    path.write_text(MODELS)
    return path


def cli(args: str):
    return CliRunner(mix_stderr=False).invoke(main, shlex.split(args))


# ---- refusals through `loihi-conv convert` ----------------------------------------------------
def test_overflowing_network_is_refused_per_layer_and_forced_with_a_warning(models):
    """OutBias's readout bias only fits the 13-bit bias mantissa at a scale where every weight
    rounds to zero: convert refuses, naming the layer and why; --force writes it with a warning."""
    out = models.parent / "forced.net"
    args = f"convert --model {models}:OutBias --dataset digits --target if-soft -T 16 --calib-size 64 --no-search --out {out}"
    res = cli(args)
    assert res.exit_code == 2 and not out.exists()
    err = res.stderr
    assert err.startswith("error: readout 'f': its bias (|b| up to 1e+06, summed over 18 steps)"), err
    assert "bias_max=4095" in err and "every weight rounds to zero" in err
    assert "smaller output bias" in err and "pass --force to export anyway" in err
    assert "force=True" not in err  # the API's spelling is translated for the CLI

    res = cli(args + " --force")
    assert res.exit_code == 0, res.stderr
    assert "warning: force=True: readout 'f': its bias" in res.stderr
    assert "Warning:" not in res.stderr  # one clean line per warning, not Python's format
    qnet = netx_export.load(out)
    assert not np.asarray(qnet.output.synapses[0].weight).any()  # what the warning said
    assert np.abs(qnet.output.bias).max() <= 4095


def test_readout_that_would_wrap_at_the_requested_T_is_refused(models):
    res = cli(f"convert --model {models}:NoOutBias --dataset digits --target if-soft -T 1000000 --no-search "
              f"--calib-size 64 --out {models.parent / 'long.net'}")
    assert res.exit_code == 2
    assert "readout 'f': its accumulation over T=1000000 only fits the 24-bit state" in res.stderr
    assert "fix: lower timesteps" in res.stderr


def test_what_netx_would_mangle_is_refused_even_with_force(models):
    """Forced, the cuba OutBias readout is an all-zero dense matrix: lava-dl's loader raises
    OverflowError on it, so the writer refuses it whatever --force says; nothing is written."""
    out = models.parent / "cuba.net"
    res = cli(f"convert --model {models}:OutBias --dataset digits --target cuba -T 16 --calib-size 64 --no-search "
              f"--force --out {out}")
    assert res.exit_code == 2 and not out.exists()
    assert "warning: force=True" in res.stderr
    assert "netx would mangle these dense weights (weights span [0, 0])" in res.stderr
    assert "netx raises OverflowError on an all-zero dense matrix" in res.stderr
    assert not any(p.name.startswith(".cuba.net") for p in out.parent.iterdir())  # no temp file


# ---- accepted networks: emulator vs float SNN within the derived bound ------------------------
def _mlp(seed: int, n_in: int, n_h: int, n_out: int, gain: float, brel: float) -> nn.Module:
    """Linear-ReLU-Linear with He-like weights times ``gain`` (both signs in every layer, so
    NetX can load the dense matrices) and biases of ``brel`` times a unit normal."""
    g = torch.Generator().manual_seed(seed)
    model = nn.Sequential(nn.Linear(n_in, n_h), nn.ReLU(), nn.Linear(n_h, n_out))
    with torch.no_grad():
        for lin in (model[0], model[2]):
            lin.weight.copy_(torch.randn(lin.weight.shape, generator=g) * gain / lin.in_features ** 0.5)
            top = lin.weight.abs().max()
            lin.weight.view(-1)[0], lin.weight.view(-1)[-1] = top, -top
            lin.bias.copy_(torch.randn(lin.bias.shape, generator=g) * brel)
    return model.eval()


def _if_count(v0, first, later, vth, n):
    """max(0, max_{s<=n} floor((v0 + s*first + (s-1)^+ * later) / vth)) in exact integers."""
    s = np.arange(n + 1).reshape((-1,) + (1,) * np.ndim(later))
    return np.maximum(0, ((v0 + s * first + np.maximum(s - 1, 0) * later) // vth).max(0))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), n_in=st.integers(2, 10), n_h=st.integers(1, 10),
       n_out=st.integers(2, 5), gain=st.floats(0.3, 3), brel=st.floats(0, 1),
       v_init=st.sampled_from([0.0, 0.5]), T=st.integers(8, 64))
def test_emulated_if_soft_network_stays_within_the_derived_bound(tmp_path_factory, seed, n_in, n_h,
                                                                  n_out, gain, brel, v_init, T):
    x = torch.rand(24, n_in, generator=torch.Generator().manual_seed(seed + 1))
    snn = convert(_mlp(seed, n_in, n_h, n_out, gain, brel), x,
                  Recipe(normalizer="max", v_init=v_init, calib_size=24), input_shape=(n_in,))
    qnet = quantize(snn, "if-soft", T, calib=x)  # accepted without force ...
    netx_export.save(qnet, tmp_path_factory.mktemp("q") / "q.net")  # ... so the writer accepts it too
    _, hid, out = fold(snn)
    sim = simulate(snn, x, [T - 1, T], record="neuron")
    n = sim.steps(T)
    x_int = encode(qnet, x)
    res = emulate(qnet, x_int, n, record=[hid.name, out.name])

    # Integer side: the emulator's counts are the IF formula of its own integers.
    hq = qnet[hid.name]
    a = x_int @ np.asarray(hq.synapses[0].weight).T  # (N, n_h) drive per step from step 2
    bias = np.asarray(hq.bias) if hq.bias is not None else np.zeros(n_h, np.int64)
    vth = np.asarray(hq.neuron.vth)
    v0 = np.asarray(hq.neuron.v_init) if hq.neuron.v_init is not None else np.zeros(n_h, np.int64)
    n_q = res.spike_counts[hid.name]
    ok_q = (bias <= vth) & (a + bias <= vth)  # drive per step at most one threshold
    assert np.array_equal(n_q[ok_q], _if_count(v0, bias, a, vth, n)[ok_q])

    # Float side, and the bound between the two.
    w, theta = hid.synapses[0].weight.numpy(), hid.threshold.numpy()
    b = hid.bias.numpy() if hid.bias is not None else np.zeros(n_h)  # fold drops all-zero biases
    z = x.double().numpy() @ w.T
    ok = ok_q & (b <= theta) & (z + b <= theta)
    g_q = lambda s: (v0 + s * bias + max(s - 1, 0) * a) / vth  # noqa: E731
    g_f = lambda s: (v_init * theta + s * b + max(s - 1, 0) * z) / theta  # noqa: E731
    D = np.maximum.reduce([np.abs(g_q(s) - g_f(s)) for s in (0, 1, n)])
    n_f = sim.counts[T][hid.name].numpy()
    assert (np.abs(n_q - n_f)[ok] <= np.floor(D + 1e-6)[ok] + 1).all()

    # D a priori from the rounding of the mapping: |c_q - sigma c_f| <= sum|x_int| + sum|w~|/2 + 1/2
    # for the drive c = W x + b, and |vth - sigma theta| <= 1/2 (vth >= 1 clamps tiny thresholds).
    sigma, s_in = qnet.meta["layers"][hid.name]["scale"], qnet.input_scale
    w_exact = w * sigma / s_in
    assert np.abs(np.asarray(hq.synapses[0].weight) - w_exact).max() <= 1 + 1e-9  # even-int grid
    e_v = np.abs(vth - theta * sigma)
    assert (e_v[theta * sigma >= 0.5] <= 0.5 + 1e-9).all()
    e_c = np.abs(x_int).sum(1, keepdims=True) + 0.5 * np.abs(w_exact).sum(1) + 0.5
    per_step = e_c / vth + np.abs((z + b) / theta) * e_v / vth
    first = 0.5 / vth + np.abs(b / theta) * e_v / vth
    start = 0.5 / vth + v_init * e_v / vth
    assert (D[ok] <= (start + first + (n - 1) * per_step)[ok] + 1e-9).all()

    # Readout: v = u + bias<<6 is the sum of the integer weights times the spikes that arrived
    # (steps 1..n-1, one step of synaptic delay), so against the float SNN's summed output:
    # |out_q - out_f| <= sum |W_int/s - W theta| N'_q + sum |W theta| |N'_q - N'_f| + |bias/s - n b|.
    oq = qnet[out.name]
    s_out = qnet.output_scale / 64
    w_th = out.synapses[0].weight.numpy() * theta[None, :]
    b_out = out.bias.numpy() if out.bias is not None else np.zeros(n_out)
    bias_out = np.asarray(oq.bias) if oq.bias is not None else np.zeros(n_out)
    arrived_q = res.states[hid.name]["s"][:, : n - 1].astype(np.int64).sum(1)
    arrived_f = sim.counts[T - 1][hid.name].numpy()
    bound = (arrived_q @ np.abs(np.asarray(oq.synapses[0].weight) / s_out - w_th).T
             + np.abs(arrived_q - arrived_f) @ np.abs(w_th).T + np.abs(bias_out / s_out - n * b_out))
    out_q = res.states[out.name]["v"][:, -1] / qnet.output_scale
    out_f = sim.output[T].double().numpy()
    assert (np.abs(out_q - out_f) <= bound + 1e-4 * (1 + np.abs(out_f))).all()

    # Nothing wrapped: the readout stays inside 24 bits; hidden states never reach the top clip
    # (the quantizer sized one step of worst-case input below it).
    assert np.abs(res.states[out.name]["u"]).max() < STATE_MAX
    assert np.abs(res.states[out.name]["v"]).max() < STATE_MAX
    assert res.states[hid.name]["v"].max() < STATE_MAX
