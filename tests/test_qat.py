"""QReLU quantization-aware training (HPC eqs. 9-11, 16) and its exact conversion.

The defining property: with thresholds from the trained lambda, the converted first layer's spike
counts equal the QReLU ANN's quantized levels exactly. Weights, inputs and lambda are dyadic
(multiples of 1/16, powers of two) so every float32 sum in both the ANN and the IF neuron is
exact and the comparison can be torch.equal.
"""
from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from torch import nn

from loihi_conv.app import qat, qat_checkpoint, zoo
from loihi_conv.app.cli import main
from loihi_conv.base.errors import LoihiConvError
from loihi_conv.convert import Recipe, convert
from loihi_conv.convert.normalize import to_snn
from loihi_conv.frontend import ir, ops
from loihi_conv.frontend.prepare import prepare
from loihi_conv.snn.simulate import simulate

ROOT = Path(__file__).resolve().parents[1]


class Tiny(nn.Module):
    """conv-ReLU(module)-avgpool-conv-relu(functional)-linear, on (1, 8, 8) inputs."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(1, 4, 3, padding=1)
        self.a1 = nn.ReLU()
        self.pool = nn.AvgPool2d(2)
        self.c2 = nn.Conv2d(4, 8, 3)
        self.fc = nn.Linear(8 * 2 * 2, 10)

    def forward(self, x):
        x = self.pool(self.a1(self.c1(x)))
        return self.fc(F.relu(self.c2(x)).flatten(1))


def _dyadic_tiny() -> nn.Module:
    net = Tiny()
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randint(-8, 9, p.shape) / 16)
    return net


def _dyadic_input(n: int = 64) -> torch.Tensor:
    return torch.randint(0, 17, (n, 1, 8, 8)) / 16


# ---- (a) zero coding error ---------------------------------------------------------------------
@pytest.mark.parametrize("s_max, rounding", [(1, "floor"), (2, "floor"), (1, "round"), (2, "round")])
def test_first_layer_spike_counts_equal_qrelu_levels(one_thread, seeded, s_max, rounding):
    T = 8
    q = qat.qrelu_model(_dyadic_tiny(), T, s_max, rounding=rounding, clip=1.0)
    x = _dyadic_input()
    snn = convert(q, x, qat_checkpoint.qat_recipe(T, s_max, rounding).replace(delay=0))
    first = snn.of_type(ir.Neuron)[0]
    assert torch.equal(first.threshold, torch.full((4,), 1.0 / s_max))  # theta = lambda / S_max (eq. 16)

    counts = simulate(snn, x, [T], delay=0, record="neuron").counts[T][first.name]
    a1, z = q.a1, q.c1(x)
    levels = a1.quantize(z)
    P = T * s_max
    assert bool(((levels > 0) & (levels < P)).any()) and bool((levels == P).any()) and bool((levels == 0).any())
    assert torch.equal(counts, levels.float())
    with torch.no_grad():
        assert torch.equal(a1(z) * P / a1.clip, counts)
    # the float IR of the QReLU network computes the QReLU network itself
    with torch.no_grad():
        assert torch.equal(ops.forward(prepare(q, (1, 8, 8)), x), q(x))


@pytest.mark.parametrize("rounding, wrong_v_init", [("floor", 0.5), ("round", 0.0)])
def test_exactness_needs_the_v_init_of_the_rounding(one_thread, seeded, rounding, wrong_v_init):
    """Control: the same network from the other initial potential no longer matches."""
    T = 8
    q = qat.qrelu_model(_dyadic_tiny(), T, 1, rounding=rounding, clip=1.0)
    x = _dyadic_input()
    graph = prepare(q, (1, 8, 8))
    snn = to_snn(graph, {r.name: r.clip for r in graph.of_type(ir.ReLU)}, "if-soft", v_init=wrong_v_init)
    counts = simulate(snn, x, [T], delay=0, record="neuron").counts[T][snn.of_type(ir.Neuron)[0].name]
    assert not torch.equal(counts, q.a1.quantize(q.c1(x)).float())


# ---- (b) eqs. 9-11 --------------------------------------------------------------------------------
@pytest.mark.parametrize("rounding, shift", [("floor", 0.0), ("round", 0.5)])
def test_qrelu_forward_is_eq16_and_gradients_are_eqs10_11(seeded, rounding, shift):
    T, s_max, lam = 4, 2, 1.5
    m = qat.QReLU(T, s_max, clip=lam, rounding=rounding)
    P = T * s_max
    x = (torch.randn(1000) * 2).requires_grad_()
    y = m(x)
    xd = x.detach()
    expected = torch.where(xd <= 0, torch.zeros_like(xd),
                           torch.where(xd >= lam, torch.full_like(xd, lam),
                                       lam / P * torch.clamp(torch.floor(P * xd / lam + shift), max=P)))
    assert torch.allclose(y.detach(), expected, rtol=1e-6, atol=0)
    assert len(torch.unique(y.detach())) == P + 1  # 0, lam/P, ..., lam

    g = torch.randn(1000)
    y.backward(g)
    assert torch.equal(x.grad, g * ((xd > 0) & (xd < lam)))          # eq. 11 (straight-through)
    assert torch.allclose(m.clip.grad, (g * (xd >= lam)).sum())      # eq. 10 (PACT)
    assert float(m.clip.grad) != 0.0


def test_qrelu_model_replaces_module_and_functional_relus_and_initialises_lambda(seeded):
    net = Tiny()
    x = torch.rand(200, 1, 8, 8)
    q = qat.qrelu_model(net, 8, 1, calib=x, percentile=99.0)
    names = [n for n, _ in qat.qrelu_modules(q)]
    assert names == ["a1", "qrelu0"]
    assert not qat.qrelu_modules(net) and isinstance(net.a1, nn.ReLU)  # the input model is unchanged
    with torch.no_grad():
        a = F.relu(net.c1(x))
    ref = torch.quantile(a[a > 0].double(), 0.99).float()  # nonzero values, numpy "linear" percentile
    assert torch.allclose(q.a1.clip.detach(), ref, rtol=1e-5)


# ---- (c) fine-tuning ------------------------------------------------------------------------------
class TinyBN(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.AvgPool2d(4),
                                  nn.Flatten(), nn.Linear(8 * 4 * 4, 10))

    def forward(self, x):
        return self.body(x)


def _blobs(n: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """Learnable synthetic data: class c has a bright 4x4 patch at one of 10 places."""
    gen = torch.Generator().manual_seed(1)
    y = torch.randint(0, 10, (n,), generator=gen)
    x = torch.rand(n, 1, 16, 16, generator=gen) * 0.3
    for i, c in enumerate(y.tolist()):
        r, col = divmod(c, 4)
        x[i, 0, 4 * r:4 * r + 4, 4 * col:4 * col + 4] += 0.7
    return x, y


def test_finetune_reduces_training_loss_and_is_deterministic(one_thread):
    torch.manual_seed(0)
    model = TinyBN()
    x, y = _blobs()
    kw = dict(epochs=3, lr=3e-2, batch_size=32, augment="none", calib_size=len(x), progress=False)
    before = qat.qrelu_model(model, 4, 1, calib=x)  # finetune's start: the same lambda (whole set)
    tuned = qat.finetune(model, (x, y), 4, 1, **kw)
    again = qat.finetune(model, (x, y), 4, 1, **kw)
    with torch.no_grad():
        loss0, loss1 = F.cross_entropy(before(x), y), F.cross_entropy(tuned(x), y)
    assert float(loss1) < 0.5 * float(loss0)
    assert float(tuned.body[2].clip) != float(before.body[2].clip)  # lambda was trained
    assert not tuned.training
    assert all(torch.equal(a, b) for a, b in zip(tuned.state_dict().values(), again.state_dict().values()))
    assert isinstance(model.body[2], nn.ReLU)  # the float model is untouched


def test_cli_finetune_then_evaluate_round_trip(one_thread, tmp_path):
    """finetune-qrelu writes a model that the existing `evaluate` and `convert` load (--model
    f.py:QReLUModel --weights f.pt --recipe f.toml); evaluate's float-IR ANN accuracy is the QReLU
    network's own."""
    src = tmp_path / "net.py"
    src.write_text("import torch.nn as nn\nimport torch.nn.functional as F\n\n\n"
                   "class Net(nn.Module):\n"
                   "    def __init__(self):\n"
                   "        super().__init__()\n"
                   "        self.conv = nn.Conv2d(1, 4, 5, stride=3)\n"
                   "        self.fc = nn.Linear(4 * 8 * 8, 10)\n\n"
                   "    def forward(self, x):\n"
                   "        return self.fc(F.relu(self.conv(x)).flatten(1))\n")
    out = tmp_path / "q.pt"
    runner = CliRunner(mix_stderr=False)
    res = runner.invoke(main, shlex.split(f"-q finetune-qrelu --model {src}:Net --dataset fashion-mnist -T 4 "
                                          f"--max-batches 3 --out {out}"))
    assert res.exit_code == 0, res.stderr
    meta = json.loads(out.with_suffix(".json").read_text())
    loaded = zoo.load_user_model(f"{out.with_suffix('.py')}:QReLUModel", str(out))
    assert [float(m.clip) for _, m in qat.qrelu_modules(loaded)] == list(meta["clips"].values())
    assert Recipe.from_toml(out.with_suffix(".toml")).normalizer == "qrelu"

    ev = tmp_path / "ev.json"
    res = runner.invoke(main, shlex.split(f"-q evaluate --model {out.with_suffix('.py')}:QReLUModel --weights {out} "
                                          f"--dataset fashion-mnist --recipe {out.with_suffix('.toml')} -T 4 "
                                          f"--samples 50 --json {ev}"))
    assert res.exit_code == 0, res.stderr
    result = json.loads(ev.read_text())
    from loihi_conv.app.data import load_dataset
    from loihi_conv.app.train import evaluate

    xt, yt = load_dataset("fashion-mnist", "test")
    assert result["ann_accuracy"] == pytest.approx(evaluate(loaded, xt[:50], yt[:50]))
    assert result["recipe"]["normalizer"] == "qrelu"

    net = tmp_path / "q.net"
    res = runner.invoke(main, shlex.split(f"-q convert --model {out.with_suffix('.py')}:QReLUModel --weights {out} "
                                          f"--dataset fashion-mnist --recipe {out.with_suffix('.toml')} "
                                          f"--target if-soft -T 4 --out {net}"))
    assert res.exit_code == 0 and net.is_file(), res.stderr


def test_recipe_with_qrelu_normalizer_validates_in_a_fresh_interpreter():
    code = "from loihi_conv.convert.recipe import Recipe; print(Recipe(normalizer='qrelu').normalizer)"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert res.returncode == 0 and res.stdout.strip() == "qrelu", res.stderr


# ---- (d) bad input ----------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, words", [
    (dict(timesteps=0), "timesteps=0"),
    (dict(timesteps=8, s_max=3), "power of two"),
    (dict(timesteps=8, rounding="nearest"), "rounding"),
    (dict(timesteps=8, clip=-1.0), "clip=-1.0"),
])
def test_bad_qrelu_arguments(kwargs, words):
    with pytest.raises(LoihiConvError, match=words):
        qat.QReLU(**kwargs)


def test_bad_model_and_training_arguments(seeded):
    with pytest.raises(LoihiConvError, match="no ReLU"):
        qat.qrelu_model(nn.Sequential(nn.Flatten(), nn.Linear(4, 2)), 8)
    q = qat.qrelu_model(Tiny(), 8)
    with pytest.raises(LoihiConvError, match="already has QReLU"):
        qat.qrelu_model(q, 8)
    x, y = _blobs(16)
    for kw, words in [(dict(epochs=0), "epochs=0"), (dict(lr=-1.0), "lr=-1.0"), (dict(augment="rotate"), "augment"),
                      (dict(max_batches=0), "max_batches")]:
        with pytest.raises(LoihiConvError, match=words):
            qat.finetune(TinyBN(), (x, y), 4, **kw)
    with pytest.raises(LoihiConvError, match="dataset name or a pair"):
        qat.finetune(TinyBN(), x, 4)
    with pytest.raises(LoihiConvError, match="T=8"):
        qat.finetune(q, (x, y), 4)  # a QReLU model made for another T
    with pytest.raises(LoihiConvError, match=r"must end in \.pt"):
        qat_checkpoint.save_finetuned(q, "x", "/tmp/q.weights", "digits")


def test_qrelu_normalizer_refuses_inconsistent_recipes(seeded):
    x = _dyadic_input(32)
    with pytest.raises(LoihiConvError, match="plain ReLU"):
        convert(_dyadic_tiny(), x, Recipe(normalizer="qrelu"))
    q2 = qat.qrelu_model(_dyadic_tiny(), 8, s_max=2)
    with pytest.raises(LoihiConvError, match="S_max=2") as e:
        convert(q2, x, Recipe(normalizer="qrelu"))  # if-soft sends one unit per step
    assert "if-multibit" in str(e.value)
    q1 = qat.qrelu_model(_dyadic_tiny(), 8)
    with pytest.raises(LoihiConvError, match="v_init=0.5"):
        convert(q1, x, Recipe(normalizer="qrelu", v_init=0.5))


@pytest.mark.parametrize("args, words", [
    ("-T 4 --s-max 3", "power of two"),
    ("-T 0", "positive integer"),
    ("-T 4 --epochs 0", "epochs=0"),
    ("-T 4 --lr -1", "lr=-1.0"),
])
def test_cli_bad_arguments_exit_2(tmp_path, args, words):
    res = CliRunner(mix_stderr=False).invoke(
        main, shlex.split(f"finetune-qrelu --model digits_cnn --out {tmp_path / 'q.pt'} {args}"))
    assert res.exit_code == 2 and words in res.stderr and "fix:" in res.stderr, res.stderr
    assert not list(tmp_path.iterdir())


def test_cli_out_must_be_pt(tmp_path):
    res = CliRunner(mix_stderr=False).invoke(
        main, shlex.split(f"finetune-qrelu --model digits_cnn -T 4 --out {tmp_path / 'q.bin'}"))
    assert res.exit_code == 2 and "must end in .pt" in res.stderr
    assert not list(tmp_path.iterdir())
