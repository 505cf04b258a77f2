"""device= on calibration (LCP, ACP potential + weights): "cpu" gives exactly the default run;
"cuda" without a GPU is the one clear error before any work (the CUDA path is unmeasured)."""
import pytest
import torch
from torch import nn

from loihi_conv.base.errors import LoihiConvError
from loihi_conv.convert import Recipe, convert
from loihi_conv.frontend import ir

pytestmark = pytest.mark.usefixtures("one_thread", "seeded")  # fixtures in conftest.py


def _model_and_data():
    torch.manual_seed(3)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2), nn.Flatten(),
                          nn.Linear(64, 8), nn.ReLU(), nn.Linear(8, 3)).eval()
    return model, torch.rand(48, 1, 8, 8)


RECIPE = Recipe(calib_size=48, calib_batch_size=48, calib_sim_size=48, calib_timesteps=6, lcp=True, acp=True,
                acp_weights=True, acp_iterations=5, acp_lr=3e-3)


def test_calibration_on_cpu_device_equals_the_default():
    model, x = _model_and_data()
    base = convert(model, x, RECIPE)
    on_cpu = convert(model, x, RECIPE, device="cpu")
    changed = 0
    plain = convert(model, x, Recipe(calib_size=48, calib_batch_size=48))
    for node in base:
        for field in ("weight", "bias", "threshold", "v_init"):
            a, b = getattr(node, field, None), getattr(on_cpu[node.name], field, None)
            if isinstance(a, torch.Tensor):
                assert b.device.type == "cpu" and torch.equal(a, b), (node.name, field)
                old = getattr(plain[node.name], field, None)
                changed += isinstance(old, torch.Tensor) and not torch.equal(a, old)
        if isinstance(node, ir.Neuron) and node.params.get("v0") is not None:
            assert torch.equal(node.params["v0"], on_cpu[node.name].params["v0"])
    assert changed > 0  # the calibrations did change the network


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU error")
def test_calibration_on_cuda_without_a_gpu_is_one_clear_error():
    model, x = _model_and_data()
    with pytest.raises(LoihiConvError, match="torch sees no CUDA GPU"):
        convert(model, x, RECIPE, device="cuda")
