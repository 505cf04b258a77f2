"""base.devices: cpu always resolves; cuda without a GPU and unknown names give one clear error."""
import pytest
import torch

from loihi_conv.base import devices
from loihi_conv.base.errors import LoihiConvError


def test_cpu_and_none_resolve_to_cpu():
    assert devices.resolve(None) == torch.device("cpu")
    assert devices.resolve("cpu") == torch.device("cpu")
    assert devices.resolve(torch.device("cpu")) == torch.device("cpu")


def test_unknown_device_names_the_choices():
    with pytest.raises(LoihiConvError, match="unknown device 'tpu'") as err:
        devices.resolve("tpu")
    assert "cpu, cuda" in str(err.value)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU error")
def test_cuda_without_a_gpu_is_one_clear_error():
    with pytest.raises(LoihiConvError, match="torch sees no CUDA GPU") as err:
        devices.resolve("cuda")
    assert "--device cpu" in str(err.value)
