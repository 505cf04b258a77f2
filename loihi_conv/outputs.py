"""Output-layer readout schemes of the float SNN, registered by name (``Recipe.output``).

The output node (a synapse with no ReLU) delivers its value ``z(t)`` -- in ANN units, class dim
1 -- at every step; a readout turns that stream into the class scores the prediction is the
argmax of (``simulate.SimResult.output[T]``):

* ``potential`` (default): a non-spiking accumulator, scores = ``sum_t z(t)`` (the RetinaNet
  paper's "potential encoding" of the output, docs/architecture.md);
* ``spikes``: IF neurons (reset by subtraction) with one output threshold from normalization;
  prediction = spike count, ties broken by the accumulated potential;
* ``softmax``: Rueckauer et al. 2016 §3.5 spiking softmax, a seeded random generator decides
  each step which neuron spikes, by a softmax competition of the accumulated potentials.

Which scheme a graph uses: ``graph.meta["recipe"]["output"]`` (``Recipe.output``), default
"potential"; ``convert`` stores the output threshold the "spikes" readout needs in
``graph.meta["output_threshold"]``. The fixed-point targets only have the potential readout
(the quantizer refuses the others, ``require_potential``).

Layouts: ``z(t)`` and every state/score tensor are (N, K) -- or (N, K, H, W) for a
convolutional output -- with the class (channel) dim 1, PyTorch order.
"""
from __future__ import annotations

from typing import ClassVar

import torch

from loihi_conv import ir
from loihi_conv.errors import LoihiConvError
from loihi_conv.registry import lookup, registrar
from loihi_conv.neurons import get_neuron_model

Tensor = torch.Tensor
State = dict[str, Tensor]

READOUTS: dict[str, type["Readout"]] = {}
DEFAULT_READOUT = "potential"
THRESHOLD_PROBE = "/output-threshold"  # suffix of the ReLU ``convert`` observes the output through


register_readout = registrar(READOUTS, "readout scheme (``Recipe.output``)")


def readout_class(name: str) -> type["Readout"]:
    """The scheme registered as ``name``; a LoihiConvError lists the known names otherwise."""
    return lookup(READOUTS, name, "output readout")


def readout_name(graph: ir.Graph) -> str:
    """The readout the SNN ``graph`` was converted for (``graph.meta["recipe"]["output"]``)."""
    return (graph.meta.get("recipe") or {}).get("output", DEFAULT_READOUT)


def make_readout(graph: ir.Graph) -> "Readout":
    """The readout of ``graph``, configured from its meta (seed, output threshold)."""
    return readout_class(readout_name(graph))(graph)


def require_potential(graph: ir.Graph, where: str) -> None:
    """Raise unless ``graph`` uses the potential readout: the only one ``where`` can run."""
    name = readout_name(graph)
    if name != DEFAULT_READOUT:
        raise LoihiConvError(f"{where}: the SNN was converted with output={name!r}, which only the float "
                             "simulator runs; the fixed-point targets read the output potential",
                             "convert with Recipe(output='potential') (the default) to quantize and export")


def with_threshold_probe(graph: ir.Graph) -> tuple[ir.Graph, str]:
    """A copy of the ANN ``graph`` with a ReLU on its output, and that ReLU's name: observing it
    gives the output layer a threshold from the same normalizer as every hidden layer (ReLU
    because only positive potential makes an IF neuron spike)."""
    probe = graph.copy()
    name = graph.output + THRESHOLD_PROBE
    probe.nodes[name] = ir.ReLU(name, (graph.output,), graph[graph.output].shape)
    probe.output = name
    return probe, name


def _ranks(v: Tensor) -> Tensor:
    """Rank of each class's value in its sample, scaled into [0, 1): added to integer spike
    counts it breaks their ties by ``v`` without ever changing their order."""
    return v.argsort(dim=1).argsort(dim=1).to(v.dtype) / v.shape[1]


class Readout:
    """A readout scheme; one instance per ``simulate`` call, one state per batch.

    ``init_state(z)`` takes the first step's output value (for shape/dtype only), ``step``
    consumes ``z(t)`` for every step run, ``scores`` returns a fresh (N, K, ...) tensor.
    """

    name: ClassVar[str] = ""
    needs_threshold: ClassVar[bool] = False  # convert observes the output to set one

    def __init__(self, graph: ir.Graph):
        self.graph = graph

    def init_state(self, z: Tensor) -> State:
        return {"potential": torch.zeros_like(z)}

    def step(self, state: State, z: Tensor) -> None:
        state["potential"].add_(z)

    def scores(self, state: State) -> Tensor:
        raise NotImplementedError


@register_readout("potential")
class PotentialReadout(Readout):
    """Non-spiking accumulator: scores = ``sum_t z(t)`` over the steps run (RetinaNet paper,
    potential encoding of the output; docs/architecture.md)."""

    def scores(self, state: State) -> Tensor:
        return state["potential"].clone()


@register_readout("spikes")
class SpikeCountReadout(Readout):
    """The output layer as IF neurons with reset by subtraction (Rueckauer et al. 2016 eq. 4b)
    and threshold ``theta_out`` = the normalizer's value for the output (one for all classes, the
    max over classes when channel-wise: per-class thresholds would rescale the counts of the
    classes differently and change the argmax). Scores = spike count + rank of the accumulated
    potential / K, so the prediction is the class that spiked most, ties broken by potential
    (for equal counts the larger potential is the larger membrane: ``v = sum z - count theta``).
    """

    needs_threshold = True

    def __init__(self, graph: ir.Graph):
        super().__init__(graph)
        theta = graph.meta.get("output_threshold")
        if theta is None:
            raise LoihiConvError("output='spikes' needs an output threshold and the graph has none "
                                 "(graph.meta['output_threshold'])",
                                 "convert the ANN with Recipe(output='spikes'): convert sets it")
        self.theta = float(theta)
        self.model = get_neuron_model("if-soft")

    def init_state(self, z: Tensor) -> State:
        node = ir.Neuron("output", (), tuple(z.shape[1:]), model="if-soft",
                         threshold=torch.full((z.shape[1],), self.theta, dtype=z.dtype))
        return {**super().init_state(z), "counts": torch.zeros_like(z),
                "neuron": self.model.init_state(tuple(z.shape), node, z.dtype, z.device)}

    def step(self, state: State, z: Tensor) -> None:
        super().step(state, z)
        state["counts"].add_(self.model.step(state["neuron"], z))

    def scores(self, state: State) -> Tensor:
        return state["counts"] + _ranks(state["potential"])


@register_readout("softmax")
class SoftmaxReadout(Readout):
    """Spiking softmax (Rueckauer et al. 2016 §3.5, after Nessler et al. 2009): the output
    neurons do not fire on their own but accumulate their input, ``V(t) = sum_{tau<=t} z(tau)``;
    an external generator fires with probability ``rate`` per step and sample, and when it does
    one neuron spikes, drawn with probability ``softmax(V(t))_k`` (the softmax competition).
    Scores = spike count + rank of V / K (ties broken by potential).

    Draws come from one ``torch.Generator`` seeded with the recipe's ``seed``, consumed batch
    after batch: a run is reproducible for the same inputs and ``batch_size``. ``rate`` = 1 (a
    competition every step; the paper leaves the generator's rate open).
    Deviation: no reset of V after a spike -- the paper says the neurons "simply accumulate
    their inputs" (the SNN Toolbox code resets the winner to zero).
    """

    rate: ClassVar[float] = 1.0

    def __init__(self, graph: ir.Graph):
        super().__init__(graph)
        seed = int((graph.meta.get("recipe") or {}).get("seed", 0))
        self.gen = torch.Generator().manual_seed(seed)

    def init_state(self, z: Tensor) -> State:
        return {**super().init_state(z), "counts": torch.zeros_like(z)}

    def step(self, state: State, z: Tensor) -> None:
        super().step(state, z)
        v, counts = state["potential"], state["counts"]
        k = v.shape[1]
        p = torch.softmax(v, dim=1).movedim(1, -1).reshape(-1, k)        # (N * positions, K)
        winner = torch.multinomial(p, 1, generator=self.gen)                # (N * positions, 1)
        fire = torch.ones_like(winner, dtype=v.dtype)
        if self.rate < 1.0:
            fire = (torch.rand(winner.shape, generator=self.gen) < self.rate).to(v.dtype)
        spikes = torch.zeros_like(p).scatter_(1, winner, fire)
        counts.add_(spikes.reshape(v.movedim(1, -1).shape).movedim(-1, 1))

    def scores(self, state: State) -> Tensor:
        return state["counts"] + _ranks(state["potential"])
