"""From analog images to integer inputs, and from a fixed-point run back to class scores.

Shared by the emulator evaluation, the Lava runner and ``verify`` so that every backend
encodes and decodes exactly the same way.
"""
from __future__ import annotations

from functools import singledispatch

import numpy as np
import torch

from loihi_conv import qir
from loihi_conv.errors import LoihiConvError


def encode(qnet: qir.QNetwork, x: torch.Tensor | np.ndarray) -> np.ndarray:
    """Analog input (N, *input shape), PyTorch order -> int64 graded input round(x*input_scale)."""
    x = torch.as_tensor(np.asarray(x) if not torch.is_tensor(x) else x).double()
    return torch.round(x * qnet.input_scale).to(torch.int64).numpy()


def steps_for(qnet: qir.QNetwork, timesteps: int) -> int:
    """Steps to run for a readout window T: the input needs ``depth`` steps to reach the output."""
    return int(timesteps) + qnet.depth


@singledispatch
def _scores(neuron, qnet: qir.QNetwork, output: np.ndarray, readout: np.ndarray | None) -> np.ndarray:
    raise LoihiConvError(f"the output layer has a {type(neuron).__name__} neuron, which has no class-score "
                         "readout rule", "end the network with a dense layer whose neuron is a Readout "
                         "(NetX: no neuron group), Sigma, CUBA or SoftIF")


@_scores.register(qir.Readout)
def _(neuron, qnet, output, readout):
    # The prediction is v = u + (bias << bias_exp): u accumulates a<<6 over the run, the bias
    # enters once (the quantizer scaled it for the whole run).
    bias = qnet.output.bias
    if bias is None:
        return readout
    return readout + (np.asarray(bias, dtype=np.int64) << neuron.bias_exp)


@_scores.register(qir.Sigma)
def _(neuron, qnet, output, readout):
    # Sigma sends its running sum (the last step is the network output); it takes no bias, so
    # the quantizer keeps the output bias in meta and it is added here in output units.
    bias = qnet.meta.get("output_bias")
    last = output[:, -1].astype(np.int64)
    if bias is None:
        return last
    return last + np.round(np.asarray(bias, dtype=np.float64) * qnet.output_scale).astype(np.int64)


@_scores.register(qir.Cuba)
@_scores.register(qir.SoftIF)
def _(neuron, qnet, output, readout):
    return output.sum(axis=1)  # a spiking output layer: spike counts


def scores(qnet: qir.QNetwork, output: np.ndarray, readout: np.ndarray | None) -> np.ndarray:
    """Class scores (N, classes) in integer units from a batched run: ``output`` is the out-port
    per step (N, steps, classes), ``readout`` the final accumulator state u (N, classes) or None."""
    return np.asarray(_scores(qnet.output.neuron, qnet, output, readout))


def emulator_predictions(qnet: qir.QNetwork, x, timesteps: int, batch_size: int = 256) -> np.ndarray:
    """Emulate the analog inputs ``x`` (N, *input shape) and return the predicted classes (N,)."""
    from loihi_conv.emulate import emulate

    res = emulate(qnet, encode(qnet, x), steps_for(qnet, timesteps), batch_size=batch_size)
    return scores(qnet, res.output, res.readout).argmax(axis=1)
