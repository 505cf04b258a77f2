"""Output-layer readout schemes, registered by name (``Recipe.output``): each class holds the
float SNN's rule and, next to it, its fixed-point half.

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
``graph.meta["output_threshold"]``; ``quantize`` copies the recipe into ``qnet.meta``.

Fixed-point half (per class): ``needs_spikes`` whether only a spiking quantization target (its
messages are spikes in threshold units and it ends in a Readout) can run the scheme,
``output_neuron`` the float neuron the quantizer gives the output block (None: the non-spiking
``qir.Readout``), ``fixed_scores(run)`` the integer class
scores of a fixed-point run (``fixed.decode.FixedRun``; ``fixed.decode.scores`` dispatches here).

* potential: the output block's own decode (``fixed.decode.FixedRun.potential``);
* spikes: the output block is a spiking population (SoftIF on if-soft, CUBA with reset to zero
  -- an approximation -- on cuba): scores = ``count * K + rank(final v)``;
* softmax: Loihi neurons cannot compete through a softmax (an exp per neuron and one random
  draw shared by the population), so it is a host-side decode: the output stays the Readout
  accumulator, the run records its potential per step and the same seeded draws are made here.

Layouts: ``z(t)`` and every state/score tensor are (N, K) -- or (N, K, H, W) for a
convolutional output -- with the class (channel) dim 1, PyTorch order; fixed-point arrays are
numpy, (N, K, ...) or per step (N, steps, K, ...).
"""
from __future__ import annotations

from typing import ClassVar, Protocol

import numpy as np
import torch

from loihi_conv.base.errors import LoihiConvError
from loihi_conv.base.registry import lookup, registrar
from loihi_conv.frontend import ir
from loihi_conv.snn.neurons import get_neuron_model

Tensor = torch.Tensor
State = dict[str, Tensor]

READOUTS: dict[str, type["ReadoutScheme"]] = {}
DEFAULT_READOUT = "potential"
THRESHOLD_PROBE = "/output-threshold"  # suffix of the ReLU ``convert`` observes the output through


class RecordedRun(Protocol):
    """What a fixed-point run offers a readout's integer decode (``fixed.decode.FixedRun``
    implements it; declared here so the float and fixed rules of a scheme stay side by side
    without this layer importing the fixed-point one)."""
    qnet: object  # the qir.QNetwork: its ``meta`` carries the recipe (seed) and output scale

    def potential(self) -> np.ndarray: ...
    def spike_counts(self) -> np.ndarray: ...
    def final_membrane(self) -> np.ndarray: ...
    def potentials(self) -> np.ndarray: ...


register_readout = registrar(READOUTS, "readout scheme (``Recipe.output``)")


def readout_class(name: str) -> type["ReadoutScheme"]:
    """The scheme registered as ``name``; a LoihiConvError lists the known names otherwise."""
    return lookup(READOUTS, name, "output readout")


def readout_name(graph: ir.Graph) -> str:
    """The readout the SNN ``graph`` (or a ``qir.QNetwork``: same ``meta``) was converted for
    (``meta["recipe"]["output"]``)."""
    return (graph.meta.get("recipe") or {}).get("output", DEFAULT_READOUT)


def make_readout(graph: ir.Graph) -> "ReadoutScheme":
    """The readout of ``graph``, configured from its meta (seed, output threshold)."""
    return readout_class(readout_name(graph))(graph)


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


def _int_scores(counts: np.ndarray, v: np.ndarray) -> np.ndarray:
    """``counts * K + rank(v)`` (int64, (N, K, ...)): the integer form of ``counts + _ranks(v)``
    -- the prediction is the largest count, ties broken by the larger ``v``."""
    k = v.shape[1]
    rank = np.argsort(np.argsort(v, axis=1, kind="stable"), axis=1, kind="stable")
    return np.asarray(counts, dtype=np.int64) * k + rank


class ReadoutScheme:
    """A readout scheme; one instance per ``simulate`` call, one state per batch.

    ``init_state(z)`` takes the first step's output value (for shape/dtype only), ``step``
    consumes ``z(t)`` for every step run, ``scores`` returns a fresh (N, K, ...) tensor.
    The fixed-point half is class-level (module doc): ``needs_spikes``, ``output_neuron``,
    ``fixed_scores``.
    """

    name: ClassVar[str] = ""
    needs_threshold: ClassVar[bool] = False  # convert observes the output to set one
    needs_spikes: ClassVar[bool] = False  # only spiking quantization targets run it

    def __init__(self, graph: ir.Graph):
        self.graph = graph

    def init_state(self, z: Tensor) -> State:
        return {"potential": torch.zeros_like(z)}

    def step(self, state: State, z: Tensor) -> None:
        state["potential"].add_(z)

    def scores(self, state: State) -> Tensor:
        raise NotImplementedError

    # ---- fixed-point half ------------------------------------------------------------------
    @classmethod
    def output_neuron(cls, graph: ir.Graph, shape: tuple[int, ...]) -> ir.Neuron | None:
        """The float neuron the quantizer gives the output block of ``shape`` (C, ...): None keeps
        the non-spiking Readout accumulator."""
        return None

    @classmethod
    def fixed_scores(cls, run: RecordedRun) -> np.ndarray:
        """Integer class scores (N, K, ...) of a fixed-point run; the argmax is the prediction."""
        raise NotImplementedError


@register_readout("potential")
class PotentialReadout(ReadoutScheme):
    """Non-spiking accumulator: scores = ``sum_t z(t)`` over the steps run (RetinaNet paper,
    potential encoding of the output; docs/architecture.md). Fixed point: the output block's own
    decode (Readout ``v = u + bias<<bias_exp``, Sigma's last sum, a spiking block's counts)."""

    def scores(self, state: State) -> Tensor:
        return state["potential"].clone()

    @classmethod
    def fixed_scores(cls, run: RecordedRun) -> np.ndarray:
        return run.potential()


@register_readout("spikes")
class SpikeCountReadout(ReadoutScheme):
    """The output layer as IF neurons with reset by subtraction (Rueckauer et al. 2016 eq. 4b)
    and threshold ``theta_out`` = the normalizer's value for the output (one for all classes, the
    max over classes when channel-wise: per-class thresholds would rescale the counts of the
    classes differently and change the argmax). Scores = spike count + rank of the accumulated
    potential / K, so the prediction is the class that spiked most, ties broken by potential
    (for equal counts the larger potential is the larger membrane: ``v = sum z - count theta``).

    Fixed point: the output block is an if-soft population with threshold ``theta_out`` (the
    quantizer maps it like a hidden layer: SoftIF with one vth = round(theta_out sigma) and the
    bias every step on if-soft; CUBA, reset to zero, flagged as an approximation on cuba).
    Scores = ``count * K + rank(final v)``: for equal counts the final membrane orders classes
    as the accumulated potential does (exactly with reset by subtraction).
    """

    needs_threshold = True
    needs_spikes = True

    def __init__(self, graph: ir.Graph):
        super().__init__(graph)
        self.theta = self._theta(graph)
        self.model = get_neuron_model("if-soft")

    @staticmethod
    def _theta(graph: ir.Graph) -> float:
        theta = graph.meta.get("output_threshold")
        if theta is None:
            raise LoihiConvError("output='spikes' needs an output threshold and the graph has none "
                                 "(graph.meta['output_threshold'])",
                                 "convert the ANN with Recipe(output='spikes'): convert sets it")
        return float(theta)

    @staticmethod
    def _neuron(shape: tuple[int, ...], theta: float, dtype: torch.dtype) -> ir.Neuron:
        return ir.Neuron("output", (), tuple(shape), model="if-soft",
                         threshold=torch.full((shape[0],), theta, dtype=dtype))

    def init_state(self, z: Tensor) -> State:
        node = self._neuron(tuple(z.shape[1:]), self.theta, z.dtype)
        return {**super().init_state(z), "counts": torch.zeros_like(z),
                "neuron": self.model.init_state(tuple(z.shape), node, z.dtype, z.device)}

    def step(self, state: State, z: Tensor) -> None:
        super().step(state, z)
        state["counts"].add_(self.model.step(state["neuron"], z))

    def scores(self, state: State) -> Tensor:
        return state["counts"] + _ranks(state["potential"])

    @classmethod
    def output_neuron(cls, graph: ir.Graph, shape: tuple[int, ...]) -> ir.Neuron:
        return cls._neuron(tuple(shape), cls._theta(graph), torch.float64)

    @classmethod
    def fixed_scores(cls, run: RecordedRun) -> np.ndarray:
        return _int_scores(run.spike_counts(), run.final_membrane())


@register_readout("softmax")
class SoftmaxReadout(ReadoutScheme):
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

    Fixed point: host-side (module doc). The run's per-step Readout potential gives ``V(t)`` in
    ANN units (``fixed.decode.FixedRun.potentials``); the draws are the float ones -- same seed, same
    ``batch`` chunks of samples, float32 as in the simulator -- so the same potentials give the
    same spikes. Scores = ``count * K + rank(V)``.
    """

    rate: ClassVar[float] = 1.0
    needs_spikes = True
    batch: ClassVar[int] = 500  # simulate()'s default batch_size: the generator's consumption order

    def __init__(self, graph: ir.Graph):
        super().__init__(graph)
        self.gen = self._generator(graph)

    @staticmethod
    def _generator(graph) -> torch.Generator:
        seed = int((graph.meta.get("recipe") or {}).get("seed", 0))
        return torch.Generator().manual_seed(seed)

    @classmethod
    def _draw(cls, gen: torch.Generator, v: Tensor) -> Tensor:
        """One competition per sample (and position): one-hot spikes shaped like ``v`` (N, K, ...),
        the winner drawn from ``softmax(v)`` over the class dim."""
        k = v.shape[1]
        p = torch.softmax(v, dim=1).movedim(1, -1).reshape(-1, k)        # (N * positions, K)
        winner = torch.multinomial(p, 1, generator=gen)                    # (N * positions, 1)
        fire = torch.ones_like(winner, dtype=v.dtype)
        if cls.rate < 1.0:
            fire = (torch.rand(winner.shape, generator=gen) < cls.rate).to(v.dtype)
        spikes = torch.zeros_like(p).scatter_(1, winner, fire)
        return spikes.reshape(v.movedim(1, -1).shape).movedim(-1, 1)

    def init_state(self, z: Tensor) -> State:
        return {**super().init_state(z), "counts": torch.zeros_like(z)}

    def step(self, state: State, z: Tensor) -> None:
        super().step(state, z)
        state["counts"].add_(self._draw(self.gen, state["potential"]))

    def scores(self, state: State) -> Tensor:
        return state["counts"] + _ranks(state["potential"])

    @classmethod
    def fixed_scores(cls, run: RecordedRun) -> np.ndarray:
        v = torch.from_numpy(run.potentials()).float()  # (N, steps, K, ...) ANN units
        gen = cls._generator(run.qnet)
        counts = torch.zeros((v.shape[0],) + tuple(v.shape[2:]), dtype=torch.float32)
        for lo in range(0, v.shape[0], cls.batch):
            chunk = counts[lo:lo + cls.batch]
            for t in range(v.shape[1]):
                chunk.add_(cls._draw(gen, v[lo:lo + cls.batch, t]))
        return _int_scores(counts.to(torch.int64).numpy(), v[:, -1].numpy())
