"""Suite-wide setup.

Lava fixes multiprocessing's start method ('fork') when its runtime is first imported and
raises if anything else fixed it before (torch DataLoaders do); importing it first keeps every
later Lava import in the session working, whatever order the tests run in.
"""
import pytest
import torch

from loihi_conv.frontend import ir, ops
from netx_export.lava_env import prepare

prepare()
import lava.magma.runtime.message_infrastructure.multiprocessing  # noqa: E402,F401


@pytest.fixture(scope="module")
def one_thread():
    """Tiny tensors: intra-op threads only add spin-wait overhead (3-5x on a shared 2-core
    machine). Restored afterwards."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def seeded():
    """Tests draw random inputs; keep every run identical."""
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def fit():
    """``fit(model, x, y, steps)``: train a tiny test model in place (Adam, lr 1e-2, ``steps``
    minibatches of 100 cycling over x), enough for the tests that need a trained network."""
    import torch.nn.functional as F

    def run(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int) -> torch.nn.Module:
        opt = torch.optim.Adam(model.parameters(), 1e-2)
        n = x.shape[0]
        for i in range(steps):
            idx = slice((i * 100) % n, (i * 100) % n + 100)
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        return model

    return run


def _small_snn(model: str, params: dict, seed: int = 0) -> ir.Graph:
    """A float SNN IR of random weights: input 3x10x10 -> conv -> n1 (model, params) -> avgpool ->
    conv -> n2 -> flatten -> linear output."""
    g = torch.Generator().manual_seed(seed)

    def w(*shape, scale=0.3):
        return torch.randn(*shape, generator=g) * scale

    def neuron(name, inp, c):
        return ir.Neuron(name, (inp,), threshold=0.5 + torch.rand(c, generator=g),
                         v_init=torch.zeros(c), model=model, params=dict(params))

    nodes = [ir.Input("x", (), (3, 10, 10)),
             ir.Conv2d("c1", ("x",), weight=w(4, 3, 3, 3), bias=w(4, scale=0.1), padding=(1, 1)),
             neuron("n1", "c1", 4),
             ir.AvgPool2d("p1", ("n1",), kernel_size=(2, 2), stride=(2, 2)),
             ir.Conv2d("c2", ("p1",), weight=w(6, 4, 3, 3), bias=w(6, scale=0.1), padding=(1, 1)),
             neuron("n2", "c2", 6),
             ir.Flatten("f", ("n2",)),
             ir.Linear("fc", ("f",), weight=w(5, 150), bias=w(5, scale=0.1))]
    return ops.infer_shapes(ir.Graph({n.name: n for n in nodes}, "fc"))


@pytest.fixture(scope="session")
def small_snn():
    """The builder ``small_snn(model, params, seed=0)`` of a small random float SNN IR graph."""
    return _small_snn


def _template_digits(n: int, seed: int, noise: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """n images (N, 1, 8, 8) in [0, 1]: one of 10 fixed random 8x8 templates (the label) plus
    Gaussian noise of std ``noise``; heavy noise gives close logits, so a readout has to get the
    ranking right, not just a clear winner."""
    templates = torch.rand(10, 1, 8, 8, generator=torch.Generator().manual_seed(1234))
    gen = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 10, (n,), generator=gen)
    return (templates[y] + noise * torch.randn(n, 1, 8, 8, generator=gen)).clamp(0, 1), y


@pytest.fixture(scope="session")
def template_digits():
    """The builder ``template_digits(n, seed, noise=1.0)`` of a small labelled image set."""
    return _template_digits


@pytest.fixture
def follows_the_ann():
    """The end-to-end check the layer tests share: the float SNN at T=512 within 5 % of the ANN's
    largest output, and the if-soft network at T=64 (emulated) predicting as the float SNN on at
    least 90 % of ``x``. Returns the quantized network for further checks."""
    import numpy as np

    from loihi_conv import api

    def check(model, snn, x, calib):
        ann = model(x)
        sim = api.simulate(snn, x, [64, 512])
        assert (sim.mean_output(512) - ann).abs().max().item() < 0.05 * ann.abs().max().item()
        q = api.quantize(snn, "if-soft", timesteps=64, calib=calib)
        emu = api.emulate(q, api.encode(q, x), api.steps_for(q, 64))
        fixed = torch.as_tensor(np.asarray(api.scores(q, emu.output, emu.readout))).argmax(1)
        assert (fixed == sim.predictions(64)).float().mean().item() >= 0.9
        return q

    return check
