"""The board-ready targets' accuracy techniques (issue 14): data-aware weight rounding (GPTQ) and
the reset-to-zero weights calibration for cuba -- what they compute, that the recipe carries
them into the quantizer, and that the files they make stay standard NetX, bit-exact on Lava."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from loihi_conv.base.errors import LoihiConvError
from loihi_conv.convert import Recipe, convert
from loihi_conv.fixed.quantize import quantize
from loihi_conv.fixed.quantize.blocks import FDense
from loihi_conv.fixed.quantize.rounding import block_hessians, gptq_round, hessian

pytestmark = pytest.mark.usefixtures("one_thread")


def _correlated(n: int, k: int, seed: int = 0) -> torch.Tensor:
    """Inputs whose columns come in near-copies (what an average pool folded into a weight gives)."""
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(n, k // 2, generator=g, dtype=torch.float64)
    return torch.cat([base, base + 0.05 * torch.rand(n, k // 2, generator=g, dtype=torch.float64)], 1)


def test_gptq_is_round_to_nearest_for_uncorrelated_inputs():
    g = torch.Generator().manual_seed(1)
    w = 40 * torch.randn(6, 10, generator=g, dtype=torch.float64)
    h = torch.diag(torch.rand(10, generator=g, dtype=torch.float64) + 0.5)
    q = gptq_round(w, h, 2.0, 254.0)
    assert torch.equal(q, (torch.round(w / 2) * 2).clamp(-254, 254))


def test_gptq_lowers_the_output_error_on_the_grid_and_within_limits():
    x = _correlated(500, 40)
    g = torch.Generator().manual_seed(2)
    w = 3 * torch.randn(8, 40, generator=g, dtype=torch.float64)  # a few grid steps: coarse
    w[0, 0] = 300.0  # beyond the limit: clipped, like round-to-nearest clips
    near = (torch.round(w / 2) * 2).clamp(-254, 254)
    q = gptq_round(w, x.T @ x, 2.0, 254.0)
    assert torch.equal(q, torch.round(q / 2) * 2) and float(q.abs().max()) <= 254
    err_near = float(((near - w) @ x.T).pow(2).sum())
    err_gptq = float(((q - w) @ x.T).pow(2).sum())
    assert err_gptq < 0.5 * err_near, (err_gptq, err_near)


def test_hessian_sums_over_chunks_and_matches_the_dense_inputs():
    m = torch.rand(150, 3, 4, 4, dtype=torch.float64)
    syn = FDense("src", torch.zeros(5, 48, dtype=torch.float64))
    x = m.flatten(1)
    torch.testing.assert_close(hessian(syn, m), x.T @ x)


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 6, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2),
                         nn.Conv2d(6, 8, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2), nn.Flatten(),
                         nn.Linear(8 * 2 * 2, 10)).eval()


def _x(n: int = 256) -> torch.Tensor:
    return torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(3))


def test_the_recipe_chooses_the_rounding_and_the_file_remembers_it():
    x = _x()
    gptq = quantize(convert(_net(), x, Recipe(weight_rounding="gptq")), "sdnn", 8, calib=x)
    # the scales are chosen with the rounding the file gets: fix them to compare the roundings
    scales = {n: v["scale"] for n, v in gptq.meta["layers"].items()}
    nearest = quantize(convert(_net(), x, Recipe()), "sdnn", 8, calib=x, input_scale=gptq.input_scale, scales=scales)
    assert gptq.meta["recipe"]["weight_rounding"] == "gptq"
    assert nearest.meta["recipe"]["weight_rounding"] == "nearest"
    # same scales, other integers, same grid and limits
    assert gptq.output_scale == nearest.output_scale
    changed = 0
    for a, b in zip(nearest.blocks[1:], gptq.blocks[1:]):
        for sa, sb in zip(a.synapses, b.synapses):
            assert (sb.weight % 2 == 0).all() and abs(sb.weight).max() <= 254
            changed += int((sa.weight != sb.weight).sum())
    assert changed > 0
    explicit = quantize(convert(_net(), x, Recipe()), "sdnn", 8, calib=x, weight_rounding="gptq")
    assert all((s.weight == t.weight).all() for a, b in zip(explicit.blocks[1:], gptq.blocks[1:])
               for s, t in zip(a.synapses, b.synapses))


def test_gptq_brings_the_sdnn_network_closer_to_its_ann():
    """What the rounding is for: the emulated sdnn network's output (it settles to the ANN's,
    up to quantization) is closer to the ANN's logits on held-out inputs."""
    from loihi_conv.emulate import emulate
    from loihi_conv.fixed.decode import encode, scores, steps_for

    x = _x()
    test = torch.rand(200, 1, 8, 8, generator=torch.Generator().manual_seed(9))
    ann = _net()(test).detach().double()
    errs = {}
    for rounding in ("nearest", "gptq"):
        qnet = quantize(convert(_net(), x, Recipe(weight_rounding=rounding)), "sdnn", 8, calib=x)
        steps = steps_for(qnet, 8)
        run = emulate(qnet, encode(qnet, test), steps)
        out = torch.as_tensor(scores(qnet, run.output, run.readout), dtype=torch.float64) / qnet.output_scale
        errs[rounding] = float((out - ann).pow(2).mean())
    assert errs["gptq"] < errs["nearest"], errs


def test_an_unknown_rounding_is_one_clear_error():
    x = _x(64)
    with pytest.raises(LoihiConvError, match="weight rounding") as err:
        quantize(convert(_net(), x, Recipe(weight_rounding="stochastic", calib_size=64)), "sdnn", 8, calib=x)
    assert "gptq" in err.value.fix


def test_cuba_search_space_offers_the_reset_to_zero_calibration():
    from loihi_conv.app.recipe_search import _start_points, space
    from loihi_conv.convert import as_graph

    knobs = space(as_graph(_net(), (1, 8, 8)), "cuba", {})
    names = [k for k, _, _ in knobs]
    assert "acp_weights" in names and "acp" not in names  # cuba has no v(0)
    first = _start_points(knobs, "cuba")[0]
    assert first["neuron_model"] == "if-zero" and first["acp_weights"] is True
    assert Recipe(**first).neuron_model == "if-zero"  # a valid recipe on its own
    assert "weight_rounding" in [k for k, _, _ in space(as_graph(_net(), (1, 8, 8)), "sdnn", {})]
    assert _start_points(space(as_graph(_net(), (1, 8, 8)), "sdnn", {}), "sdnn")[0]["weight_rounding"] == "gptq"


@pytest.mark.lava
def test_cuba_with_reset_to_zero_weights_calibration_is_standard_netx_and_bit_exact(tmp_path):
    """The new cuba recipe changes only float weights and biases before quantization: the file is
    a standard NetX file (format 0), unmodified lava-dl's netx loads it, and Lava matches the
    emulator on every state of every step."""
    from loihi_conv import api
    from loihi_conv.app import models
    from loihi_conv.app.verify import verify
    from netx_export.reader import load, read_info
    from netx_export.runner import LavaRunner
    from netx_export.writer import save

    ref = models.resolve("digits_cnn", progress=False)
    recipe = Recipe(neuron_model="if-zero", normalizer="mmse", mmse_rounding="zero", clip_round=True, lcp=True,
                    acp_weights=True, acp_iterations=50, calib_timesteps=8, calib_size=512)
    calib = api.calibration_data(ref.dataset, recipe)
    snn = api.convert(ref.module, calib, recipe, input_shape=ref.input_shape)
    path = save(api.quantize(snn, "cuba", timesteps=8, calib=calib), tmp_path / "cuba.net")
    assert read_info(path)["format"] == 0
    qnet = load(path)
    x, _ = api.test_data(ref.dataset, 2)
    with LavaRunner(path) as runner:
        ver = verify(qnet, x, 8, runner=runner)
        assert runner._c.net.engine == "netx"  # unmodified lava-dl netx.hdf5.Network
    assert ver.total_compared > 10_000 and ver.total_mismatches == 0
    assert ver.lava_predictions == ver.emulator_predictions


def test_block_hessians_are_the_diagonal_blocks_of_the_whole_hessian():
    m = torch.rand(300, 3, 4, 4, dtype=torch.float64)
    syn = FDense("src", torch.zeros(5, 48, dtype=torch.float64))
    full = hessian(syn, m)
    blocks = block_hessians(syn, m, 20)
    assert [(c.start, c.stop) for c, _ in blocks] == [(0, 20), (20, 40), (40, 48)]
    for cols, h in blocks:
        torch.testing.assert_close(h, full[cols, cols])


def test_sdnn_schedule_error_is_the_emulated_networks_and_the_least_of_its_starts():
    """The sdnn scales are chosen on ``output_error``: the settled network's output against the
    float network's. That number must be what the exported network really computes (emulated,
    bit-exact with Lava), and the chosen schedule the best of the input-octave starts."""
    from loihi_conv.emulate import emulate
    from loihi_conv.fixed.decode import encode, scores, steps_for
    from loihi_conv.fixed.quantize import _samples, fold, sdnn
    from loihi_conv.fixed.quantize.blocks import hops
    from loihi_conv.fixed.quantize.common import Context, Options

    x = _x()
    snn = convert(_net(), x, Recipe(weight_rounding="gptq"))
    qnet = quantize(snn, "sdnn", 8, calib=x)
    opts = Options.build({"weight_rounding": "gptq"})
    blocks = fold(snn)
    xs, synthetic, lo, hi = _samples(blocks[0].shape, x, opts)
    ctx = Context(blocks, 8, hops(blocks), opts, xs, synthetic, lo, hi)
    stats = sdnn._trajectory_stats(ctx)
    sched = sdnn._Schedule(ctx, stats, stats.pop("__final__"))
    u = sched.solve()
    assert u[blocks[0].name] == qnet.input_scale
    grids = {b.name: sched.grid(b) for b in blocks}
    starts = [sched.descend({**grids, sched.in_name: [v]}) for v in grids[sched.in_name][::sdnn.INPUT_STRIDE]]
    assert len(starts) > 1 and sched.output_error(u) == min(map(sched.output_error, starts))
    xe = xs[:sdnn.E2E_SAMPLES]
    run = emulate(qnet, encode(qnet, xe), steps_for(qnet, 8))
    out = torch.as_tensor(scores(qnet, run.output, run.readout), dtype=torch.float64) / qnet.output_scale
    ann = _net()(xe.float()).detach().double()
    emulated = float((out - ann).norm() / ann.norm())
    assert emulated == pytest.approx(sched.output_error(u), rel=0.1, abs=2e-3), (emulated, sched.output_error(u))
