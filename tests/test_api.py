"""The one-import Python API runs the whole pipeline and agrees with the step modules."""
import numpy as np
import pytest
import torch

from loihi_conv import api


@pytest.mark.lava
def test_api_pipeline_digits_end_to_end(tmp_path):
    torch.set_num_threads(1)
    ref = api.load_model("digits_cnn", progress=False)
    recipe = api.Recipe(calib_size=256)
    calib = api.calibration_data(ref.dataset, recipe)
    snn = api.convert(ref.module, calib, recipe)
    x, y = api.test_data(ref.dataset, 3)
    qnet = api.quantize(snn, "if-soft", timesteps=16, calib=calib)
    path = api.save(qnet, tmp_path / "d.net")
    qnet = api.load(path)
    x_int = api.encode(qnet, x)
    steps = api.steps_for(qnet, 16)
    emu = api.emulate(qnet, x_int, steps)
    lava = api.run_lava(path, x_int, steps)
    assert np.array_equal(np.stack([r.output for r in lava]), emu.output)
    lava_scores = api.scores(qnet, np.stack([r.output for r in lava]), np.stack([r.readout for r in lava]))
    assert np.array_equal(lava_scores, api.scores(qnet, emu.output, emu.readout))
