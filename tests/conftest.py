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
