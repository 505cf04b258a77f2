"""Suite-wide setup.

Lava fixes multiprocessing's start method ('fork') when its runtime is first imported and
raises if anything else fixed it before (torch DataLoaders do); importing it first keeps every
later Lava import in the session working, whatever order the tests run in.
"""
import pytest
import torch

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
