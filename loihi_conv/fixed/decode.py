"""From analog images to integer inputs, and from a fixed-point run back to class scores.

Shared by the emulator evaluation, the Lava runner and ``verify`` so that every backend
encodes and decodes exactly the same way.

Decoding: the readout scheme the network was converted for (``qnet.meta["recipe"]["output"]``,
``outputs.READOUTS``; "potential" without a recipe) turns a ``FixedRun`` -- what a backend
recorded of the output block -- into class scores (``snn.readouts.ReadoutScheme.fixed_scores``, next to each
scheme's float rule). The "potential" scheme is the output neuron's own decode (``_scores``,
dispatched on the neuron type).

Layouts: numpy, PyTorch order, batch first: ``output`` and ``trace`` (N, steps, *out_shape),
``readout`` and scores (N, *out_shape), classes on axis 1.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import singledispatch

import numpy as np
import torch

from loihi_conv.base.errors import LoihiConvError
from loihi_conv.fixed import qir
from loihi_conv.snn.readouts import readout_class, readout_name

# The output block's state a decode reads: its final value is a backend's ``readout``, its value
# after every step the ``readout_trace`` (u: the Readout's accumulated a<<6; v: the membrane of a
# spiking output, which breaks spike-count ties). Emulator and Lava runner record exactly this.
READOUT_STATE = {qir.Readout: "u", qir.Cuba: "v", qir.SoftIF: "v"}
SPIKING = (qir.Cuba, qir.SoftIF)  # output neurons whose out-port messages are spikes


def readout_state(neuron) -> str | None:
    """Name of the state of an output block with ``neuron`` the decoders read, or None."""
    return READOUT_STATE.get(type(neuron))


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
    if readout is None:
        raise LoihiConvError(f"the Readout output '{qnet.output.name}' is decoded from its final u, and "
                             "none was given", "pass the backend's readout (EmulationResult/LavaResult.readout)")
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


@dataclass
class FixedRun:
    """What a fixed-point backend recorded of ``qnet``'s output block (module layouts):
    ``output`` its out-port per step, ``readout`` the final ``READOUT_STATE``, ``trace`` that
    state after every step (None when the backend did not record it)."""
    qnet: qir.QNetwork
    output: np.ndarray
    readout: np.ndarray | None
    trace: np.ndarray | None = None

    @property
    def scheme(self) -> str:
        return readout_name(self.qnet)

    def potential(self) -> np.ndarray:
        """The output neuron's own decode (N, *out) int64 ("potential" readout)."""
        return np.asarray(_scores(self.qnet.output.neuron, self.qnet, self.output, self.readout))

    def spike_counts(self) -> np.ndarray:
        """Spikes sent by a spiking output block (N, *out) int64."""
        self._require(isinstance(self.qnet.output.neuron, SPIKING), "a spiking output block (SoftIF or CUBA)")
        return (np.asarray(self.output) != 0).sum(axis=1).astype(np.int64)

    def final_membrane(self) -> np.ndarray:
        """The final membrane v of a spiking output block (N, *out) int64."""
        self.spike_counts()  # same requirement
        self._require(self.readout is not None, "the output block's final v (the backend's 'readout')")
        return np.asarray(self.readout, dtype=np.int64)

    def potentials(self) -> np.ndarray:
        """``V(t)`` (N, steps, *out) float64 in ANN units after every step of a Readout output:
        ``(u(t) + t/S (bias << bias_exp)) / output_scale`` -- the quantizer scaled the bias for the
        S = ``meta["steps_run"]`` steps of the whole run (``v = u + bias<<bias_exp`` at the end),
        so step t has added t/S of it."""
        neuron = self.qnet.output.neuron
        self._require(isinstance(neuron, qir.Readout), "a non-spiking Readout output block")
        self._require(self.trace is not None, "the output potential after every step (the backend's "
                                              "'readout_trace')")
        u = np.asarray(self.trace, dtype=np.float64)
        bias = self.qnet.output.bias
        if bias is not None:
            steps = u.shape[1]
            total = int(self.qnet.meta.get("steps_run", steps))
            full = np.asarray(bias, dtype=np.int64) << neuron.bias_exp  # (C,) or (*out)
            full = full.reshape(full.shape + (1,) * (u.ndim - 2 - full.ndim))
            share = np.arange(1, steps + 1, dtype=np.float64).reshape((1, steps) + (1,) * (u.ndim - 2)) / total
            u = u + share * full[None, None]
        return u / float(self.qnet.output_scale)

    def _require(self, ok: bool, what: str) -> None:
        if not ok:
            raise LoihiConvError(f"the output={self.scheme!r} decode needs {what}, and this run has none "
                                 f"(output block '{self.qnet.output.name}': "
                                 f"{type(self.qnet.output.neuron).__name__})",
                                 "quantize the SNN with its own recipe (quantize builds the output block the "
                                 "readout needs) and pass the backend's readout and readout_trace to scores()")


def scores(qnet: qir.QNetwork, output: np.ndarray, readout: np.ndarray | None,
           trace: np.ndarray | None = None) -> np.ndarray:
    """Class scores (N, classes) in integer units from a batched run, by the readout scheme
    ``qnet`` was converted for: ``output`` is the out-port per step (N, steps, classes),
    ``readout`` the final readout state (``READOUT_STATE``: u of a Readout, v of a spiking output)
    (N, classes) or None, ``trace`` that state per step (N, steps, classes) -- only the
    "softmax" readout needs it (``EmulationResult.readout_trace``, ``LavaResult.readout_trace``)."""
    run = FixedRun(qnet, np.asarray(output), readout, trace)
    return np.asarray(readout_class(run.scheme).fixed_scores(run))


def predictions(qnet: qir.QNetwork, result) -> np.ndarray:
    """Predicted classes from a backend's result: an ``EmulationResult`` (batched: (N,)) or one
    sample's ``netx_export.runner.LavaResult`` (unbatched: (1,)); each carries what every readout
    scheme decodes (out-port per step, final readout state, its per-step trace)."""
    batched = result.output.ndim == 2 + len(qnet.output.shape)
    add = (lambda a: a) if batched else (lambda a: None if a is None else a[None])
    return scores(qnet, add(result.output), add(result.readout), add(result.readout_trace)).argmax(axis=1)
