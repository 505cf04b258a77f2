"""Property tests: random networks, parameters and inputs, including wrap and saturation corners
(weights +-255, biases that wrap int16, u near +-2^23, conv sums beyond 2^23 and 2^31, dense
sums beyond 2^31), emulator vs the numpy Lava reference in tests/test_emulate.py."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from loihi_conv.fixed import qir

# The reference lives in test_emulate.py (test files cannot import each other by package name).
_spec = importlib.util.spec_from_file_location("_emulate_reference",
                                               Path(__file__).with_name("test_emulate.py"))
_ref = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_ref)
assert_matches_reference = _ref.assert_matches_reference

SETTINGS = settings(max_examples=30, deadline=None)
DECAYS = st.one_of(st.sampled_from([0, 1, 2048, 4095, 4096]), st.integers(0, 4096))
MAGNITUDES = st.sampled_from([1, 100, 2 ** 12, 2 ** 20, 2 ** 31 - 1])  # |x| and |bias| scales


def int_array(rng, shape, bound, extreme):
    """Ints in [-bound, bound]; ``extreme`` pins every value to +-bound (the corners)."""
    if extreme:
        return bound * rng.choice([-1, 1], size=shape)
    return rng.integers(-bound, bound + 1, size=shape)


@st.composite
def conv_geometry(draw):
    """(input CHW, ConvSyn kwargs without weight, weight shape, output CHW) with output >= 1."""
    groups = draw(st.sampled_from([1, 2]))
    ci, co = groups * draw(st.integers(1, 2)), groups * draw(st.integers(1, 2))
    kh, kw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    sh, sw = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    ph, pw = draw(st.integers(0, 1)), draw(st.integers(0, 1))
    dh, dw = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    h = draw(st.integers(max(1, dh * (kh - 1) + 1 - 2 * ph), 5))
    w = draw(st.integers(max(1, dw * (kw - 1) + 1 - 2 * pw), 5))
    ho, wo = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1, (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    kwargs = dict(stride=(sh, sw), padding=(ph, pw), dilation=(dh, dw), groups=groups)
    return (ci, h, w), kwargs, (co, ci // groups, kh, kw), (co, ho, wo)


cuba = st.builds(qir.Cuba, vth=st.integers(0, 2 ** 17), i_decay=DECAYS, v_decay=DECAYS,
                 bias_exp=st.sampled_from([-3, 0, 6, 7, 12]))


@given(geom=conv_geometry(), seed=st.integers(0, 2 ** 32 - 1), x_mag=MAGNITUDES,
       bias_mag=MAGNITUDES, extreme=st.booleans(), n1=cuba, n2=cuba,
       hidden=st.sampled_from(["cuba", "softif", "readout"]), steps=st.integers(1, 9),
       t_in=st.integers(1, 3), delays=st.booleans())
@SETTINGS
def test_lif_networks_match_reference(geom, seed, x_mag, bias_mag, extreme, n1, n2, hidden,
                                      steps, t_in, delays):
    """input -> conv Cuba -> (dense from conv + dense from input) hidden -> dense Readout."""
    rng = np.random.default_rng(seed)
    in_shape, conv_kw, w_shape, out_shape = geom
    n_conv, n_in = int(np.prod(out_shape)), int(np.prod(in_shape))
    nh = int(rng.integers(1, 5))
    hidden_neuron = {"cuba": n2, "readout": qir.Readout(),
                     "softif": qir.SoftIF(vth=rng.integers(0, 2 ** 17, nh),
                                          v_init=rng.integers(-2 ** 17, 2 ** 17, nh))}[hidden]
    q = qir.QNetwork([
        qir.Block("in", in_shape),
        qir.Block("conv", out_shape, [qir.ConvSyn("in", int_array(rng, w_shape, 255, extreme),
                                                  **conv_kw)],
                  bias=int_array(rng, out_shape[:1], min(bias_mag, 2 ** 16), extreme), neuron=n1),
        qir.Block("hid", (nh,), [
            qir.DenseSyn("conv", int_array(rng, (nh, n_conv), 255, extreme),
                         delay=rng.integers(0, 5, (nh, n_conv)) if delays else None),
            qir.DenseSyn("in", int_array(rng, (nh, n_in), 255, extreme))],
            bias=int_array(rng, (nh,), min(bias_mag, 2 ** 16), False), neuron=hidden_neuron),
        qir.Block("out", (2,), [qir.DenseSyn("hid", int_array(rng, (2, nh), 255, extreme))],
                  neuron=qir.Readout()),
    ])
    x = int_array(rng, (2, t_in, *in_shape), x_mag, extreme and x_mag > 1)
    assert_matches_reference(q, x, steps)


@given(seed=st.integers(0, 2 ** 32 - 1), x_mag=MAGNITUDES, extreme=st.booleans(),
       vths=st.tuples(*[st.one_of(st.integers(0, 64), st.integers(0, 2 ** 20))] * 3),
       exps=st.tuples(*[st.integers(0, 8)] * 4), bias_mag=MAGNITUDES, steps=st.integers(1, 9))
@SETTINGS
def test_sdnn_networks_match_reference(seed, x_mag, extreme, vths, exps, bias_mag, steps):
    """Delta input -> conv SigmaDelta -> dense SigmaDelta -> dense Sigma, with int32 wraps."""
    rng = np.random.default_rng(seed)
    q = qir.QNetwork([
        qir.Block("in", (2, 3, 3), neuron=qir.Delta(vth=vths[0], spike_exp=exps[0],
                                                     state_exp=exps[1])),
        qir.Block("h1", (2, 3, 3), [qir.ConvSyn("in", int_array(rng, (2, 2, 3, 3), 255, extreme),
                                                padding=(1, 1))],
                  bias=int_array(rng, (2,), min(bias_mag, 2 ** 15), False),
                  neuron=qir.SigmaDelta(vth=vths[1], spike_exp=exps[2], state_exp=exps[3])),
        qir.Block("h2", (3,), [qir.DenseSyn("h1", int_array(rng, (3, 18), 255, extreme))],
                  bias=int_array(rng, (3,), min(bias_mag, 2 ** 15), False),
                  neuron=qir.SigmaDelta(vth=vths[2])),
        qir.Block("out", (2,), [qir.DenseSyn("h2", int_array(rng, (2, 3), 255, extreme))],
                  neuron=qir.Sigma()),
    ])
    x = int_array(rng, (2, 3, 2, 3, 3), x_mag, False)
    assert_matches_reference(q, x, steps)


@given(seed=st.integers(0, 2 ** 32 - 1), x_mag=MAGNITUDES, neuron=st.one_of(
    cuba, st.builds(qir.SoftIF, vth=st.just(np.array([5000, 40, 0])),
                    bias_exp=st.sampled_from([0, 6]))), steps=st.integers(1, 8))
@SETTINGS
def test_bias_injected_inputs_match_reference(seed, x_mag, neuron, steps):
    """An input neuron driven through its bias (beyond int16 for Cuba: Lava wraps it)."""
    rng = np.random.default_rng(seed)
    q = qir.QNetwork([
        qir.Block("in", (3,), neuron=neuron),
        qir.Block("out", (2,), [qir.DenseSyn("in", int_array(rng, (2, 3), 255, False))],
                  neuron=qir.Cuba(vth=int(rng.integers(0, 2 ** 10)))),
    ])
    x = int_array(rng, (3, 3), min(x_mag, 2 ** 20), False)
    assert_matches_reference(q, x, steps, inject="bias")
