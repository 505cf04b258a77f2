"""Synapses skip all-zero messages (engine._apply_nonzero): same values as computing every row."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from loihi_conv.emulate import emulate, engine, synapses
from loihi_conv.fixed import qir


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"_zero_rows_{name}", Path(__file__).with_name(f"{name}.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


_fused = _load("test_emulate_fused")  # its 5-block net: conv, pool-folded conv, two dense into one block
_ref = _load("test_emulate")  # the numpy Lava reference


def _with_delays(q: qir.QNetwork, rng) -> qir.QNetwork:
    """The same net with delays on the last dense synapse (the ring-buffer path of DenseRunner)."""
    syn = q.blocks[-1].synapses[0]
    syn.delay = rng.integers(0, 3, syn.weight.shape)
    return q


@pytest.mark.parametrize("kind", ["if-soft", "cuba", "sdnn", "sdnn-delays"])
def test_skipping_zero_rows_changes_no_value(one_thread, monkeypatch, kind):
    rng = np.random.default_rng(5)
    q = _fused._net(rng, kind.removesuffix("-delays"))
    if kind.endswith("delays"):
        q = _with_delays(q, rng)
    x = rng.integers(0, 40, (6, 2, 9, 9))
    x[::2] = 0  # half the samples send nothing: their rows are zero at every step

    calls = []
    real = engine._apply_nonzero

    def spy(syn, frames, max_abs):
        out = real(syn, frames, max_abs)
        calls.append(frames.shape[0])
        return out

    monkeypatch.setattr(engine, "_apply_nonzero", spy)
    monkeypatch.setattr(engine, "SKIP_ZERO_ROWS", 1.0)  # always the row-subset path
    subset = emulate(q, x, 16)
    assert calls, "the layer-major engine did not go through _apply_nonzero"
    monkeypatch.setattr(engine, "SKIP_ZERO_ROWS", -1.0)  # never skip: every row computed
    every = emulate(q, x, 16)
    _fused._same(subset, every)
    assert all(subset.spike_counts[k][1::2].sum() > 0 for k in ("a", "b", "c"))
    for n in range(len(x)):  # and both are Lava's arithmetic
        ref = _ref.reference(q, x[n][None], 16, "a_in")
        assert np.array_equal(subset.output[n], ref[q.output.name]["s"])


def test_zero_rows_are_skipped_not_computed(monkeypatch):
    """Only the non-zero rows reach the synapse's apply."""
    rng = np.random.default_rng(1)
    q = _fused._net(rng, "sdnn")
    x = rng.integers(0, 40, (4, 2, 9, 9))
    x[1:] = 0
    seen = []
    for cls in (synapses.ConvRunner, synapses.DenseRunner):
        orig = cls.apply

        def apply(self, s, max_abs, _orig=orig):
            seen.append(int(s.shape[0]))
            return _orig(self, s, max_abs)
        monkeypatch.setattr(cls, "apply", apply)
    emulate(q, x, 12)
    # sample 0 is the only one that ever sends; its deltas settle, so far fewer rows than
    # steps x batch reach any synapse
    assert seen and max(seen) < 12 * 4 / 2
