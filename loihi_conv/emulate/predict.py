"""Predicted classes of analog inputs, straight from the emulator (encode -> emulate -> decode)."""
from __future__ import annotations

import numpy as np

from loihi_conv.emulate.engine import emulate
from loihi_conv.fixed import qir
from loihi_conv.fixed.decode import encode, predictions, steps_for


def emulator_predictions(qnet: qir.QNetwork, x, timesteps: int, batch_size: int = 256,
                         device=None) -> np.ndarray:
    """Emulate the analog inputs ``x`` (N, *input shape) and return the predicted classes (N,);
    ``device`` as in ``emulate``."""
    res = emulate(qnet, encode(qnet, x), steps_for(qnet, timesteps), batch_size=batch_size, device=device)
    return predictions(qnet, res)
